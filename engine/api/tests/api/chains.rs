//! A door's chain of rules over HTTP: set in order with each rule's fail mode and the
//! door's own settings, read back, run on decisions; every malformed or refused chain
//! gets a specific error and leaves the door's chain as it was.

use crate::support::*;
use keyway_core::{GroupId, GroupRecord, Record};
use serde_json::{Value, json};

async fn chain_of(w: &World, bearer: &str) -> Value {
    let (status, chain) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{}/doors/{}/rules", w.site.0, w.door.0),
            Some(bearer),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{chain}");
    chain
}

/// A person of `site` in a new group that opens `door`, with a tag `secret`; answers
/// the group.
async fn member(w: &World, secret: [u8; 4]) -> GroupId {
    let person = w.h.person(w.site).await;
    let store = w.h.node.store();
    let group = GroupRecord {
        id: GroupId(0),
        site: w.site,
        doors: vec![w.door],
        schedule: None,
        members: vec![person],
    };
    let group = GroupId(
        store
            .model()
            .create("test", Record::Group(group))
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    w.h.credential(w.site, secret.to_vec(), Some(person)).await;
    group
}

async fn decide(w: &World, bearer: &str, secret: &str, at: &str) -> Value {
    let body = json!({
        "site": w.site.0, "door": w.door.0,
        "credential": {"kind": "tag", "value": secret},
        "at": at,
    });
    let (status, decided) = w.h.call("POST", "/v1/decide", Some(bearer), Some(body)).await;
    assert_eq!(status.as_u16(), 200, "{decided}");
    decided
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_runs_its_chain_with_its_own_settings() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let _visitors = member(&w, [1, 2, 3, 4]).await;
    let escorts = member(&w, [5, 6, 7, 8]).await;
    let _more_visitors = member(&w, [9, 9, 9, 9]).await;
    let rules = format!("/v1/sites/{s}/doors/{}/rules", w.door.0);
    assert_eq!(chain_of(&w, &owner).await, json!({"rules": []}));
    let chain = json!({"rules": [
        {"rule": "business-hours", "fail_safe": true, "config": {}},
        {"rule": "two-person", "fail_safe": false, "config": {"window_s": 10, "escort_groups": [escorts.0]}},
    ]});
    let (status, answer) = w.h.call("PUT", &rules, Some(&owner), Some(chain.clone())).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert!(answer["revision"].as_u64().is_some(), "{answer}");
    // Any member reads it back, in order, as set.
    let basic = w.bearer(Who::Basic).await.unwrap();
    assert_eq!(chain_of(&w, &basic).await, chain);
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    let door_rules: Vec<(u64, &str)> = policy["door_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["position"].as_u64().unwrap(), r["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(door_rules, [(0, "business-hours"), (1, "two-person")], "{policy}");
    assert_eq!(policy["door_rules"][1]["config"]["window_s"], 10, "{policy}");
    // The chain decides: business hours let 09:00 through, then two-person waits for a
    // second person, one of them an escort (the door's own settings, and the person's
    // groups, reached the rule).
    // (tag, time, effect, reason)
    let badges = [
        ("01020304", "2026-11-23T09:00:00+01:00", "deny", "rule_denied"),
        ("05060708", "2026-11-23T09:00:05+01:00", "allow", "granted"),
        ("01020304", "2026-11-23T09:01:00+01:00", "deny", "rule_denied"),
        ("09090909", "2026-11-23T09:01:02+01:00", "deny", "rule_denied"), // two visitors
    ];
    for (tag, at, effect, reason) in badges {
        let decided = decide(&w, &owner, tag, at).await;
        assert_eq!(
            (decided["effect"].as_str(), decided["reason"].as_str()),
            (Some(effect), Some(reason)),
            "{tag} at {at}: {decided}"
        );
        assert_eq!(decided["rule"]["name"], "two-person", "{decided}");
    }
    // Explained, the same denial names each rule of the chain and what it said.
    let body = json!({
        "site": s, "door": w.door.0,
        "credential": {"kind": "tag", "value": "01020304"},
        "at": "2026-11-23T09:30:00+01:00",
    });
    let (status, explained) =
        w.h.call("POST", "/v1/decide?explain=true", Some(&owner), Some(body))
            .await;
    assert_eq!(status.as_u16(), 200, "{explained}");
    assert_eq!(explained["reason"], "rule_denied", "{explained}");
    let rule_checks: Vec<(&str, &str)> = explained["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "door_rule")
        .map(|c| (c["outcome"].as_str().unwrap(), c["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rule_checks,
        [
            ("passed", "`business-hours` allowed"),
            (
                "failed",
                "`two-person` denied: two-person rule: waiting for a second person, one of them an escort"
            ),
        ],
        "{explained}"
    );
    // `PUT .../rule` does not wipe a chain it cannot show; `.../rules` replaces it, and
    // then `PUT .../rule` replaces a door's one rule.
    let one_rule = format!("/v1/sites/{s}/doors/{}/rule", w.door.0);
    let (status, answer) =
        w.h.call("PUT", &one_rule, Some(&owner), Some(json!({"rule": "anti-passback"})))
            .await;
    assert_eq!(
        (status.as_u16(), answer["code"].as_str()),
        (409, Some("door_has_a_chain")),
        "{answer}"
    );
    assert_eq!(chain_of(&w, &owner).await, chain);
    let (status, _) =
        w.h.call(
            "PUT",
            &rules,
            Some(&owner),
            Some(json!({"rules": [{"rule": "business-hours"}]})),
        )
        .await;
    assert_eq!(status.as_u16(), 200);
    let (status, _) =
        w.h.call("PUT", &one_rule, Some(&owner), Some(json!({"rule": "anti-passback"})))
            .await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(
        chain_of(&w, &owner).await,
        json!({"rules": [{"rule": "anti-passback", "fail_safe": false, "config": {}}]})
    );
    let (status, _) = w.h.call("DELETE", &rules, Some(&owner), None).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(chain_of(&w, &owner).await, json!({"rules": []}));
    let (status, answer) = w.h.call("DELETE", &rules, Some(&owner), None).await;
    assert_eq!(
        (status.as_u16(), answer["code"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_chain_bad_input() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let rules = format!("/v1/sites/{}/doors/{}/rules", w.site.0, w.door.0);
    let kept = json!({"rules": [{"rule": "two-person", "fail_safe": false, "config": {"window_s": 20}}]});
    let (status, answer) = w.h.call("PUT", &rules, Some(&owner), Some(kept.clone())).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let nine: Vec<Value> = (0..9).map(|i| json!({"rule": format!("r{i}")})).collect();
    // (body, status, code, words the message must hold)
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"rules": []}), 422, "invalid", "at least one rule"),
        (json!({"rules": nine}), 422, "invalid", "over the limit of 8"),
        (
            json!({"rules": [{"rule": "two-person"}, {"rule": "two-person"}]}),
            422,
            "invalid",
            "appears twice",
        ),
        (
            json!({"rules": [{"rule": "no-such"}]}),
            422,
            "invalid_policy",
            "is not in bundle",
        ),
        (
            json!({"rules": [{"rule": "bad name!"}]}),
            422,
            "invalid",
            "a rule name has",
        ),
        (
            json!({"rules": [{"rule": "two-person", "config": {"window_s": 0}}]}),
            422,
            "invalid_policy",
            "`window_s` must be 1 to 3600 seconds, found 0",
        ),
        (
            json!({"rules": [{"rule": "two-person", "config": {"window_s": null}}]}),
            422,
            "invalid_policy",
            "`null` is not a configuration value",
        ),
        (
            json!({"rules": [{"rule": "two-person", "config": {"window_s": 18446744073709551615u64}}]}),
            422,
            "invalid_policy",
            "larger than a configuration integer",
        ),
        (
            json!({"rules": [{"rule": "anti-passback", "config": {"x": 1}}]}),
            422,
            "invalid_policy",
            "takes no per-door configuration",
        ),
        (
            json!({"rules": [{"rule": "two-person", "config": {"note": "x".repeat(5000)}}]}),
            422,
            "invalid",
            "over the limit of 4096",
        ),
        (
            json!({"rules": [{"rule": "two-person", "config": [1]}]}),
            422,
            "invalid_body",
            "config",
        ),
        (
            json!({"rules": [{"rule": "two-person", "colour": 1}]}),
            422,
            "invalid_body",
            "colour",
        ),
        (json!({"rule": "two-person"}), 422, "invalid_body", "rules"),
        (json!([]), 422, "invalid_body", ""),
    ];
    for (body, status, code, words) in cases {
        let (got, answer) = w.h.call("PUT", &rules, Some(&owner), Some(body.clone())).await;
        assert_eq!(
            (got.as_u16(), answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["message"].as_str().unwrap_or_default().contains(words),
            "{body}: {answer}"
        );
        assert_eq!(chain_of(&w, &owner).await, kept, "{body} changed the chain");
    }
    // A door of another site, or of nothing.
    let other = w.h.bare_site().await;
    let door = w.h.door(other).await;
    for path in [
        format!("/v1/sites/{}/doors/{}/rules", w.site.0, door.0),
        format!("/v1/sites/{}/doors/999999/rules", w.site.0),
    ] {
        let (got, answer) = w.h.call("PUT", &path, Some(&owner), Some(kept.clone())).await;
        assert_eq!(
            (got.as_u16(), answer["code"].as_str()),
            (404, Some("not_found")),
            "{answer}"
        );
        let (got, _) = w.h.call("GET", &path, Some(&owner), None).await;
        assert_eq!(got.as_u16(), 404);
    }
}

/// A bundle whose `two-person` is a version 1 rule takes no per-door settings: while a
/// door gives the rule settings, activating it is refused (409) and the bundle in force
/// stays; without them it goes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_that_would_break_a_doors_settings_is_refused() {
    let w = World::new().await;
    let op = w.bearer(Who::Operator).await.unwrap();
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let store = w.h.node.store();
    let (default, _) = w.h.node.adopt_bundle_dir("test", &bundle_dir()).await.unwrap();
    // Allow, state kept: `Ok((Allow, Keep))`, 3 bytes at 32.
    let old_rule = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (data (i32.const 16) "\00") (data (i32.const 32) "\00\00\00")
            (func (export "keyway_abi_version") (result i32) (i32.const 1))
            (func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "keyway_dealloc") (param i32 i32))
            (func (export "keyway_configure") (param i32 i32) (result i64)
              (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))
            (func (export "keyway_door_rule") (param i32 i32) (result i64)
              (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 3))))"#,
    )
    .unwrap();
    let uploaded = store
        .policy_records()
        .upload_plugin("test", "two-person", "v1", &old_rule, jiff::Timestamp::now())
        .await
        .unwrap();
    let manifest = std::fs::read_to_string(bundle_dir().join("bundle.toml")).unwrap();
    let pinned = default_pin(&manifest, "two-person.wasm");
    let manifest = manifest
        .replace(&pinned, &uploaded.sha256)
        .replace(r#"hooks = ["door_rule", "door_config"]"#, r#"hooks = ["door_rule"]"#);
    let plugins = store.policy_records().plugins().await.unwrap();
    let mut ids: Vec<keyway_store::PluginId> = default
        .plugins
        .iter()
        .copied()
        .filter(|id| plugins.iter().any(|p| p.id == *id && p.sha256 != pinned))
        .chain([uploaded.id])
        .collect();
    ids.sort_unstable();
    let older = store
        .policy_records()
        .upload_bundle(
            "test",
            None,
            "default",
            "older-two-person",
            &manifest,
            &ids,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let rules = format!("/v1/sites/{s}/doors/{}/rules", w.door.0);
    let with_settings = json!({"rules": [{"rule": "two-person", "config": {"window_s": 10}}]});
    let (status, answer) = w.h.call("PUT", &rules, Some(&owner), Some(with_settings)).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let activate = format!("/v1/bundles/{}/activate", older.id.get());
    let (status, answer) = w.h.call("POST", &activate, Some(&op), None).await;
    assert_eq!(
        (status.as_u16(), answer["code"].as_str()),
        (409, Some("door_config_refused")),
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "the configuration of rule `two-person` for door {} is refused",
            w.door.0
        )) && message.contains("ABI version 1"),
        "{answer}"
    );
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    assert_eq!(policy["id"], default.id.get(), "{policy}");
    // Without the door's settings, the same activation goes in.
    let (status, _) =
        w.h.call(
            "PUT",
            &rules,
            Some(&owner),
            Some(json!({"rules": [{"rule": "two-person"}]})),
        )
        .await;
    assert_eq!(status.as_u16(), 200);
    let (status, answer) = w.h.call("POST", &activate, Some(&op), None).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    assert_eq!(policy["id"], older.id.get(), "{policy}");
}

/// The sha256 the manifest pins for `file`.
fn default_pin(manifest: &str, file: &str) -> String {
    let after = &manifest[manifest.find(&format!("file = \"{file}\"")).unwrap()..];
    let line = after.lines().find(|l| l.starts_with("sha256")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}
