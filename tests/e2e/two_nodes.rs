//! Two `keyway serve` processes on one PostgreSQL database: a door rule attached over
//! HTTP on node A decides on node B at the revision A answered, and detaching it on A
//! frees the door on B. A bundle rolled back on A swaps on B too. PostgreSQL comes from
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
    fn make() -> Option<FreshDatabase> {
        let admin = admin_url();
        let name = format!("keyway_e2e_{}", std::process::id());
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
    let Some(db) = FreshDatabase::make() else { return };
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

    // Detached on A: B opens again.
    let detached = ana_on_a.ok("DELETE", &format!("/v1/sites/{site}/doors/{door}/rule"), None);
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
