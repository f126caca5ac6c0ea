//! Policy state across two nodes on one PostgreSQL database: a rule attached, opening
//! hours set, or a bundle activated on one node decides the same way on the other.

use super::support::*;
use keyway_core::*;
use keyway_node::{DecisionRequest, Direction, Node, Source};
use keyway_plugin_host::FailMode;
use keyway_store::ChainedRule;
use std::time::Duration;

/// The decision of `a`, the node that took the last write (it answered only once its own
/// plugin host had the change), once `b` agrees with it.
async fn same_decision(a: &Node, b: &Node, door: DoorId, hour: i8) -> (Effect, &'static str) {
    let request = DecisionRequest {
        door,
        presented: Presented::tag(&TAG),
        at: monday(hour),
        direction: Direction::Entry,
        source: Source::DryRun,
    };
    let on_a = a.decide(&request).await;
    // Node B follows the change log; give it a moment, as an IQ on B would.
    let mut tries = 0;
    loop {
        let on_b = b.decide(&request).await;
        if (on_b.effect(), on_b.reason_code()) == (on_a.effect(), on_a.reason_code()) {
            return (on_a.effect(), on_a.reason_code());
        }
        tries += 1;
        assert!(
            tries < 100,
            "node B still decides {:?} where A decides {:?}",
            on_b.ruled,
            on_a.ruled
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_agree_after_every_policy_change() {
    let Some(db) = PgDb::fresh().await else { return };
    let a = Node::open(config(db.url.clone())).await.unwrap();
    let b = Node::open(config(db.url.clone())).await.unwrap();
    let s = seed(&a).await;
    assert_eq!(same_decision(&a, &b, s.door, 22).await, (Effect::Allow, "granted"));

    a.attach_door_rule(ACTOR, s.door, "business-hours", false)
        .await
        .unwrap();
    assert_eq!(same_decision(&a, &b, s.door, 22).await, (Effect::Deny, "rule_denied"));
    assert_eq!(same_decision(&a, &b, s.door, 9).await, (Effect::Allow, "granted"));

    // Opening hours set on B, closed all day on Mondays: A follows.
    let closed = Schedule::new(vec![Period::hm(DaySet::WEEKEND, (0, 0), (23, 59))], None).unwrap();
    b.set_opening_hours(ACTOR, s.site, Some(&closed)).await.unwrap();
    assert_eq!(same_decision(&b, &a, s.door, 9).await, (Effect::Deny, "rule_denied"));

    b.detach_door_rule(ACTOR, s.door).await.unwrap();
    assert_eq!(same_decision(&b, &a, s.door, 9).await, (Effect::Allow, "granted"));

    // A chain, with a door's own settings for its second rule, set on A: B runs the same
    // chain with the same settings. A refused setting changes nothing on either.
    let mut escort = ChainedRule::new("two-person", false);
    escort.config = serde_json::from_str(r#"{"window_s": 10, "escort_groups": [9]}"#).unwrap();
    let chain = vec![ChainedRule::new("anti-passback", true), escort];
    a.set_door_rules(ACTOR, s.door, chain.clone()).await.unwrap();
    let mut links = Vec::new();
    for _ in 0..100 {
        links = b.policy().door_rules().links(s.door);
        if !links.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(links, a.policy().door_rules().links(s.door));
    let names: Vec<(&str, bool)> = links
        .iter()
        .map(|l| (l.rule.as_str(), l.fail == FailMode::Safe))
        .collect();
    assert_eq!(names, [("anti-passback", true), ("two-person", false)]);
    assert_eq!(links[1].config.int("window_s"), Ok(Some(10)));
    assert_eq!(
        a.store()
            .policy_records()
            .door_rule_chain(s.door)
            .await
            .unwrap()
            .unwrap()
            .rules,
        chain
    );
    let mut bad = ChainedRule::new("two-person", false);
    bad.config = serde_json::from_str(r#"{"window_s": 0}"#).unwrap();
    let err = b.set_door_rules(ACTOR, s.door, vec![bad]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the configuration of rule `two-person` for door"),
        "{err}"
    );
    assert_eq!(
        a.store()
            .policy_records()
            .door_rule_chain(s.door)
            .await
            .unwrap()
            .unwrap()
            .rules,
        chain
    );
    assert_eq!(same_decision(&b, &a, s.door, 9).await, (Effect::Deny, "rule_denied"));

    a.close().await;
    b.close().await;
    db.drop().await;
}
