//! The change feed: order, no gaps, resume, policy changes in line, and a subscriber that
//! falls behind is told.

use super::support::*;
use keyway_core::*;
use keyway_node::Node;
use keyway_store::{FeedError, Logged};
use std::time::Duration;

async fn block_toggles(node: &Node, person: PersonId, n: usize) {
    for i in 0..n {
        let change = if i % 2 == 0 {
            Change::BlockPerson(person)
        } else {
            Change::UnblockPerson(person)
        };
        node.store().model().write(ACTOR, change).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_without_gaps_and_resumable() {
    let t = sqlite_node().await;
    let node = &t.node;
    let start = node.store().status().applied;
    let mut live = node.subscribe(start).await.unwrap();
    let s = seed(node).await;
    block_toggles(node, s.person, 20).await;
    node.set_opening_hours(ACTOR, s.site, None).await.unwrap();
    let head = node.store().status().applied;
    let mut seen = Vec::new();
    while seen.last().copied() != Some(head.0) {
        let item = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .unwrap()
            .unwrap();
        seen.push(item.revision.0);
    }
    let expected: Vec<u64> = (start.0 + 1..=head.0).collect();
    assert_eq!(seen, expected, "live subscriber: every revision, in order");

    // Resuming from the middle replays from the change log, then goes on live.
    let middle = Revision(start.0 + 3);
    let mut resumed = node.subscribe(middle).await.unwrap();
    let mut replayed = Vec::new();
    let mut last_entry = None;
    while replayed.last().copied() != Some(head.0) {
        let item = resumed.next().await.unwrap();
        replayed.push(item.revision.0);
        last_entry = Some(item.entry);
    }
    assert_eq!(replayed, (middle.0 + 1..=head.0).collect::<Vec<_>>());
    assert!(
        matches!(last_entry.as_deref(), Some(Logged::Policy(_))),
        "the policy change is in line"
    );
    block_toggles(node, s.person, 1).await;
    let next = tokio::time::timeout(Duration::from_secs(5), resumed.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.revision.0, head.0 + 1);
    t.node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(format!("sqlite://{}", dir.path().join("keyway.db").display()));
    config.store.feed_capacity = 16;
    let node = Node::open(config).await.unwrap();
    let s = seed(&node).await;
    let at = node.store().status().applied;
    let mut slow = node.subscribe(at).await.unwrap();
    // Writers never wait for the slow subscriber.
    block_toggles(&node, s.person, 40).await;
    let mut result = Ok(());
    for _ in 0..40 {
        match slow.next().await {
            Ok(_) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    assert!(matches!(result, Err(FeedError::Behind { .. })), "{result:?}");
    node.close().await;
}
