//! Door rules' states over HTTP: a site's door administrators read what a rule keeps for
//! a person, a door or the site, and reset it; a reset is audited, carries its revision,
//! and the rule starts afresh for that scope only.

use crate::support::*;
use jiff::Timestamp;
use keyway_plugin_host::{Direction, Passage};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_state_is_read_and_reset() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let person = w.h.person(w.site).await;
    let front = w.h.door(w.site).await;
    for (door, rule) in [(w.door, "occupancy"), (front, "anti-passback")] {
        let (status, answer) =
            w.h.call(
                "PUT",
                &format!("/v1/sites/{s}/doors/{}/rule", door.0),
                Some(&owner),
                Some(json!({"rule": rule})),
            )
            .await;
        assert_eq!(status.as_u16(), 200, "{answer}");
    }
    // The IQs report that the person went in through both doors.
    for door in [w.door, front] {
        let passage = Passage {
            door,
            site: w.site,
            person: Some(person),
            at: Timestamp::now(),
            direction: Direction::Entry,
            opened: true,
        };
        assert!(w.h.node.policy().passage(&passage).is_empty());
    }
    let get = |query: String| {
        let h = &w.h;
        let owner = owner.clone();
        async move {
            let (status, answer) = h
                .call("GET", &format!("/v1/sites/{s}/rules/{query}"), Some(&owner), None)
                .await;
            assert_eq!(status.as_u16(), 200, "{answer}");
            answer
        }
    };
    // (query, what the node keeps)
    let kept = [
        (
            "occupancy/state".to_owned(),
            json!({"rule": "occupancy", "scope": "site", "id": s, "state": "01000000", "bytes": 4}),
        ),
        (
            format!("anti-passback/state?person={}", person.0),
            json!({"rule": "anti-passback", "scope": "person", "id": person.0, "state": "01", "bytes": 1}),
        ),
        (
            format!("anti-passback/state?door={}", front.0),
            json!({"rule": "anti-passback", "scope": "door", "id": front.0, "state": null, "bytes": 0}),
        ),
    ];
    for (query, expected) in &kept {
        assert_eq!(&get(query.clone()).await, expected, "{query}");
    }
    let (status, answer) =
        w.h.call(
            "DELETE",
            &format!("/v1/sites/{s}/rules/occupancy/state"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let revision = answer["revision"].as_u64().unwrap();
    assert_eq!(w.h.node.store().status().applied.0, revision);
    assert_eq!(
        get("occupancy/state".to_owned()).await,
        json!({"rule": "occupancy", "scope": "site", "id": s, "state": null, "bytes": 0})
    );
    // Only that scope was reset.
    assert_eq!(get(kept[1].0.clone()).await, kept[1].1);
    // The audit log of the site names the reset.
    let (status, audit) =
        w.h.call("GET", &format!("/v1/sites/{s}/audit"), Some(&owner), None)
            .await;
    assert_eq!(status.as_u16(), 200, "{audit}");
    let newest = &audit["items"][0];
    assert_eq!(
        (&newest["action"], &newest["entity"], &newest["before"]),
        (
            &json!("reset_rule_state"),
            &json!("rule_state:occupancy"),
            &json!({"rule": "occupancy", "site": s, "scope": "site", "id": s})
        ),
        "{audit}"
    );
}
