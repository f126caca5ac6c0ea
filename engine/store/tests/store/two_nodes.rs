//! Two nodes on one PostgreSQL: propagation within a second, catching up after a cut.

use crate::support::*;
use keyway_core::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_on_a_denies_on_b_within_a_second() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let a = db.open("node-a").await;
    let b = db.open("node-b").await;
    let ids = model(&a).await;
    assert!(b.wait_for(a.status().applied, Duration::from_secs(2)).await);
    assert_eq!(decide_tag(&b, ids.door, &TAG).effect, Effect::Allow);

    let rev = a.model().write(ACTOR, Change::BlockPerson(ids.person)).await.unwrap();
    let committed = Instant::now();
    // The writing node denies at once (read-your-writes).
    let on_a = decide_tag(&a, ids.door, &TAG);
    assert_eq!((on_a.reason, on_a.revision), (Reason::PersonBlocked, rev));
    // The other node denies within a second.
    loop {
        let d = decide_tag(&b, ids.door, &TAG);
        if d.effect == Effect::Deny {
            assert_eq!((d.reason, d.revision), (Reason::PersonBlocked, rev));
            break;
        }
        assert!(
            committed.elapsed() < Duration::from_secs(1),
            "node B still allows after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!("block reached node B in {:?}", committed.elapsed());
    assert_eq!(b.status().lag, 0);
    a.close().await;
    b.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_node_catches_up_without_skipping() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let a = db.open("node-a").await;
    let b = db.open("node-b").await;
    let ids = model(&a).await;
    assert!(b.wait_for(a.status().applied, Duration::from_secs(2)).await);

    // Cut B off repeatedly while A keeps writing.
    let mut last = Revision(0);
    for i in 0..30u32 {
        if i % 5 == 0 {
            // B reconnects on its own schedule; cut it only once it is back, so every
            // cut is real.
            let mut ended = 0;
            for _ in 0..60 {
                ended = db.terminate("node-b").await;
                if ended > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(ended > 0, "node B had connections to end");
        }
        let person = PersonRecord {
            id: PersonId(500 + i),
            site: ids.site,
            role: RoleId(1),
            blocked: i % 2 == 0,
        };
        last = a.model().write(ACTOR, Change::PutPerson(person)).await.unwrap();
    }
    // B reconnects by itself and applies every revision in order.
    assert!(
        b.wait_for(last, Duration::from_secs(10)).await,
        "node B caught up: {:?}",
        b.status()
    );
    let status = b.status();
    assert_eq!((status.applied, status.lag), (last, 0), "{status:?}");
    let key = |r: &Record| format!("{r:?}");
    let mut on_a = a.snapshot().load().records();
    let mut on_b = b.snapshot().load().records();
    on_a.sort_by_key(key);
    on_b.sort_by_key(key);
    assert_eq!(on_a, on_b, "both nodes hold the same model");
    assert_eq!(
        b.model().revisions().await.unwrap(),
        (1..=last.0).map(Revision).collect::<Vec<_>>(),
        "no revision skipped"
    );
    a.close().await;
    b.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_nodes_interleave_in_order() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let a = db.open("node-a").await;
    let b = db.open("node-b").await;
    let ids = model(&a).await;
    let mut tasks = Vec::new();
    for (n, node) in [a.clone(), b.clone()].into_iter().enumerate() {
        for w in 0..4u32 {
            let node = node.clone();
            let site = ids.site;
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..10u32 {
                    let id = PersonId(2000 + (n as u32) * 1000 + w * 100 + i);
                    let rev = node
                        .model()
                        .write(
                            ACTOR,
                            Change::PutPerson(PersonRecord {
                                id,
                                site,
                                role: RoleId(1),
                                blocked: false,
                            }),
                        )
                        .await
                        .unwrap();
                    assert!(node.snapshot().load().has_person(id));
                    revs.push(rev);
                }
                revs
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let head = *all.last().unwrap();
    assert_eq!(all.len(), 80);
    assert_eq!(
        all,
        ((head.0 - 79)..=head.0).map(Revision).collect::<Vec<_>>(),
        "contiguous"
    );
    assert!(a.wait_for(head, Duration::from_secs(5)).await);
    assert!(b.wait_for(head, Duration::from_secs(5)).await);
    let key = |r: &Record| format!("{r:?}");
    let mut on_a = a.snapshot().load().records();
    let mut on_b = b.snapshot().load().records();
    on_a.sort_by_key(key);
    on_b.sort_by_key(key);
    assert_eq!(on_a, on_b);
    a.close().await;
    b.close().await;
    db.cleanup().await;
}
