//! Two `keyway serve` processes on one PostgreSQL database: a door rule attached over
//! HTTP on node A decides on node B at the revision A answered, and detaching it on A
//! frees the door on B. A bundle rolled back on A swaps on B too. A person blocked over
//! HTTP on A is revoked on an IQ connected to B's link, pushed within the FAQ's 5 s. PostgreSQL comes from
//! `KEYWAY_TEST_POSTGRES_URL` (a fresh database made with `psql`); without it the test
//! says SKIPPED, except under `CI`, where it fails.

use super::support::*;
use serde_json::{Value, json};
use std::process::Command;

fn admin_url() -> String {
    std::env::var("KEYWAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database, dropped when this is.
struct FreshDatabase {
    url: String,
    name: String,
}

impl FreshDatabase {
    /// A database named after the process and `test`, so tests running side by side
    /// each have their own.
    fn make(test: &str) -> Option<FreshDatabase> {
        let admin = admin_url();
        let name = format!("keyway_e2e_{}_{test}", std::process::id());
        let made = Command::new("psql")
            .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
            .output();
        match made {
            Ok(out) if out.status.success() => {
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Some(FreshDatabase {
                    url: format!("{base}/{name}"),
                    name,
                })
            }
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(std::env::var_os("CI").is_none(), "PostgreSQL is required in CI: {why}");
                eprintln!(
                    "SKIPPED: the two-node end-to-end test needs PostgreSQL ({})",
                    why.trim()
                );
                None
            }
        }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                admin_url().as_str(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

#[test]
fn a_rule_attached_on_one_node_decides_on_the_other() {
    let Some(db) = FreshDatabase::make("rule") else { return };
    let a = Server::start(&["--database-url", &db.url, "--node-name", "a"]);
    let b = Server::start(&["--database-url", &db.url, "--node-name", "b"]);
    let (ana_on_a, site) = owner_with_voucher_on(&a, 10, &["--database-url", &db.url]);
    let ana_on_b = Admin {
        url: b.url.clone(),
        http: client(),
        token: ana_on_a.token.clone(),
    };

    // A door, Carol with a tag and a group without a schedule, all made on A.
    let door =
        ana_on_a.ok("POST", &format!("/v1/sites/{site}/doors"), Some(json!({"name": "Lab"})))["door"]["id"].clone();
    let carol = ana_on_a.ok(
        "POST",
        &format!("/v1/sites/{site}/people"),
        Some(json!({"name": "Carol"})),
    )["person"]["id"]
        .clone();
    ana_on_a.ok(
        "POST",
        &format!("/v1/sites/{site}/credentials"),
        Some(json!({"kind": "tag", "value": "04a2197c", "person": carol})),
    );
    let group = ana_on_a.ok(
        "POST",
        &format!("/v1/sites/{site}/groups"),
        Some(json!({"name": "Lab staff", "doors": [door], "members": [carol]})),
    );
    // A Saturday morning: the core grants (no schedule); business hours would not.
    let tap = |revision: &Value| {
        json!({
            "site": site, "door": door, "credential": {"kind": "tag", "value": "04a2197c"},
            "at": "2026-11-28T10:00:00Z", "at_least_revision": revision,
        })
    };
    let v = ana_on_b.ok("POST", "/v1/decide", Some(tap(&group["revision"])));
    assert_eq!(
        (v["effect"].as_str(), v["rule"].clone()),
        (Some("allow"), Value::Null),
        "B before: {v}"
    );

    // Attached on A: B denies at A's revision, naming the rule.
    let attached = ana_on_a.ok(
        "PUT",
        &format!("/v1/sites/{site}/doors/{door}/rule"),
        Some(json!({"rule": "business-hours"})),
    );
    let v = ana_on_b.ok("POST", "/v1/decide", Some(tap(&attached["revision"])));
    assert_eq!(v["effect"], "deny", "B after the attach on A: {v}");
    assert_eq!(v["rule"]["name"], "business-hours", "{v}");
    let policy = ana_on_b.ok("GET", &format!("/v1/sites/{site}/policy"), None);
    assert_eq!(policy["door_rules"][0]["rule"], "business-hours", "{policy}");

    // A chain set on A, its second rule with the door's own settings: B runs it.
    let chain = json!({"rules": [
        {"rule": "anti-passback", "fail_safe": true, "config": {}},
        {"rule": "two-person", "fail_safe": false, "config": {"window_s": 5, "escort_groups": [group["group"]["id"]]}},
    ]});
    let rules = format!("/v1/sites/{site}/doors/{door}/rules");
    let set = ana_on_a.ok("PUT", &rules, Some(chain.clone()));
    let v = ana_on_b.ok("POST", "/v1/decide", Some(tap(&set["revision"])));
    assert_eq!(
        (v["effect"].as_str(), v["rule"]["name"].as_str()),
        (Some("deny"), Some("two-person")),
        "B after the chain set on A: {v}"
    );
    assert_eq!(ana_on_b.ok("GET", &rules, None), chain);

    // Detached on A: B opens again.
    let detached = ana_on_a.ok("DELETE", &rules, None);
    let v = ana_on_b.ok("POST", "/v1/decide", Some(tap(&detached["revision"])));
    assert_eq!(v["effect"], "allow", "B after the detach on A: {v}");

    // Both nodes stored one bundle between them (the second found the first's).
    let op = Admin {
        url: b.url.clone(),
        http: client(),
        token: operator_token(&b),
    };
    let bundles = op.ok("GET", "/v1/bundles", None);
    assert_eq!(bundles["items"].as_array().unwrap().len(), 1, "{bundles}");
}

#[test]
fn a_block_on_one_node_is_pushed_to_an_iq_on_the_other() {
    let Some(db) = FreshDatabase::make("push") else { return };
    let a = Server::start(&["--database-url", &db.url, "--node-name", "a"]);
    let b = Server::start(&["--database-url", &db.url, "--node-name", "b"]);
    let (ana_on_a, site) = owner_with_voucher_on(&a, 10, &["--database-url", &db.url]);
    let ana_on_b = Admin {
        url: b.url.clone(),
        http: client(),
        token: ana_on_a.token.clone(),
    };
    let path = |tail: &str| format!("/v1/sites/{site}/{tail}");
    let door = ana_on_a.ok("POST", &path("doors"), Some(json!({"name": "Lab"})))["door"]["id"]
        .as_u64()
        .unwrap();
    let carol = ana_on_a.ok("POST", &path("people"), Some(json!({"name": "Carol"})))["person"]["id"]
        .as_u64()
        .unwrap();
    let tag = "04a2197c";
    let credential = ana_on_a.ok(
        "POST",
        &path("credentials"),
        Some(json!({"kind": "tag", "value": tag, "person": carol})),
    )["credential"]["id"]
        .as_u64()
        .unwrap();
    ana_on_a.ok(
        "POST",
        &path("groups"),
        Some(json!({"name": "Lab staff", "doors": [door], "members": [carol]})),
    );
    // Registered through B, so that its enrolment answer names B's link.
    let registered = ana_on_b.ok(
        "POST",
        &path("iqs"),
        Some(json!({"name": "Lab IQ", "model": "IQ2", "serial": "SN-TWO-NODES"})),
    );
    let iq = registered["iq"]["id"].as_u64().unwrap();
    ana_on_a.ok("PUT", &path(&format!("doors/{door}/iq")), Some(json!({ "iq": iq })));
    let installer = super::iqs::installer(&registered["enrolment"]);
    let door = u32::try_from(door).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut iq_on_b = runtime.block_on(async {
        let credentials = installer.enrol().await.expect("B enrols the IQ");
        let client = installer.connect(credentials).await.expect("the IQ connects to B");
        let decisions = client.decide(vec![super::iqs::tap(door, tag)]).await.unwrap();
        assert_eq!(decisions.items[0].effect, keyway_core::Effect::Allow, "{decisions:?}");
        client
    });

    // Blocked on A: the revocation reaches the IQ on B's link, unasked.
    let blocked_at = std::time::Instant::now();
    let blocked = ana_on_a.ok("POST", &path(&format!("people/{carol}/block")), None);
    let revision = blocked["revision"].as_u64().unwrap();
    let revocation = runtime.block_on(async {
        loop {
            match iq_on_b.next_event_within(std::time::Duration::from_secs(5)).await {
                Some(keyway_link::ClientEvent::Push {
                    message: keyway_link::Message::Revocation(r),
                    ..
                }) => break r,
                Some(_) => {}
                None => panic!("no revocation reached the IQ on B within 5 s of the block on A"),
            }
        }
    });
    let took = blocked_at.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(revocation.revision, revision, "{revocation:?}");
    let ids: Vec<u32> = revocation.items.iter().map(|i| i.id).collect();
    assert!(
        ids.contains(&u32::try_from(carol).unwrap()) || ids.contains(&u32::try_from(credential).unwrap()),
        "the revocation names neither Carol nor her tag: {revocation:?}"
    );
    // And B decides accordingly, asked by the IQ.
    runtime.block_on(async {
        let decisions = iq_on_b.decide(vec![super::iqs::tap(door, tag)]).await.unwrap();
        assert_eq!(decisions.items[0].effect, keyway_core::Effect::Deny, "{decisions:?}");
        iq_on_b.close().await;
    });
    eprintln!("block on A to revocation on B's IQ: {took:?}");
}
