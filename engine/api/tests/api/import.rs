//! Bulk import over HTTP (`POST /v1/sites/{site}/import`): each row judged on its own,
//! what is accepted written once, a dry run writing nothing, a re-run changing nothing,
//! roles and the voucher applied as for people made by hand.

use crate::support::*;
use serde_json::{Value, json};

fn row(external_id: &str, name: &str, role: Option<&str>, tags: &[&str], groups: &[&str]) -> Value {
    json!({"external_id": external_id, "name": name, "role": role, "tags": tags, "groups": groups})
}

/// (outcome, detail) of every row of a report.
fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_judged_one_by_one_and_imported_once() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let post = |path: String, body: Value| {
        let owner = owner.clone();
        let h = &w.h;
        async move {
            let (status, v) = h.call("POST", &path, Some(&owner), Some(body)).await;
            assert!(status.is_success(), "{path}: {status} {v}");
            v
        }
    };
    post(
        format!("/v1/sites/{s}/groups"),
        json!({"name": "Staff", "doors": [w.door.0]}),
    )
    .await;
    post(format!("/v1/sites/{s}/groups"), json!({"name": "Lab", "doors": []})).await;
    for _ in 0..2 {
        post(format!("/v1/sites/{s}/groups"), json!({"name": "Twin", "doors": []})).await;
    }
    // An unassigned tag, and a tag of someone else.
    post(
        format!("/v1/sites/{s}/credentials"),
        json!({"kind": "tag", "value": "0a0b0c0d"}),
    )
    .await;
    let zed = post(format!("/v1/sites/{s}/people"), json!({"name": "Zed"})).await["person"]["id"].clone();
    post(
        format!("/v1/sites/{s}/credentials"),
        json!({"kind": "tag", "value": "0e0e0e0e", "person": zed}),
    )
    .await;

    let rows = json!([
        row(
            "E-1",
            "Ada Lovelace",
            Some("site_admin"),
            &["04a2197c"],
            &["Staff", "Lab"]
        ),
        row("E-2", "Bob", None, &["0a0b0c0d"], &[]),
        row("E-3", "Cy", None, &["0e0e0e0e"], &[]),
        row("E-1", "Ada again", None, &[], &[]),
        row("E-4", "Dee", Some("owner"), &[], &[]),
        row("E-5", "Eve", None, &[], &["Nope"]),
        row("E-6", "Fay", None, &[], &["Twin"]),
        row("E-7", "Gus", None, &["zz"], &[]),
        row("E-8", "Hal", None, &["04a2197c"], &[]),
        row("", "Ida", None, &[], &[]),
        row("E-9", " ", None, &[], &[]),
        row("E-10", "Jo", Some("janitor"), &[], &[]),
        row("E-11", "Kim", None, &["0102030405060708090a0b"], &[]),
    ]);
    let expected: Vec<(&str, &str)> = vec![
        ("created", "new person with 1 tag(s) and 2 group(s)"),
        ("created", "new person with 1 tag(s) and 0 group(s)"),
        ("refused", "tag `0e0e0e0e` belongs to another person"),
        ("refused", "external id `E-1` is on row 1 already"),
        ("refused", "your role `owner` may not grant `owner`"),
        ("refused", "the site has no group named `Nope`"),
        ("refused", "2 groups are named `Twin`; rename all but one"),
        ("refused", "tag `zz` is not a UID of 4 to 10 bytes in hex"),
        ("refused", "tag `04a2197c` is on row 1 already"),
        (
            "refused",
            "an external id has 1 to 128 characters, no control characters and no surrounding spaces",
        ),
        ("refused", "a name has 1 to 200 characters and no control characters"),
        ("refused", "the bundle in force has no role `janitor`"),
        (
            "refused",
            "tag `0102030405060708090a0b` is not a UID of 4 to 10 bytes in hex",
        ),
    ];
    let path = format!("/v1/sites/{s}/import");

    // A dry run reports the same and writes nothing.
    let before = w.h.fingerprint().await;
    let dry = post(path.clone(), json!({"dry_run": true, "rows": rows})).await;
    let got = outcomes(&dry);
    let got: Vec<(&str, &str)> = got.iter().map(|(o, d)| (o.as_str(), d.as_str())).collect();
    assert_eq!(got, expected);
    assert_eq!((dry["created"].clone(), dry["refused"].clone()), (json!(2), json!(11)));
    assert_eq!(
        (dry["dry_run"].clone(), dry["revision"].clone()),
        (json!(true), Value::Null)
    );
    assert_eq!(dry["rows"][0]["person"], Value::Null, "{dry}");
    assert_eq!(w.h.fingerprint().await, before, "a dry run wrote something");

    // For real.
    let done = post(path.clone(), json!({"rows": rows})).await;
    let got = outcomes(&done);
    let got: Vec<(&str, &str)> = got.iter().map(|(o, d)| (o.as_str(), d.as_str())).collect();
    assert_eq!(got, expected);
    assert!(done["revision"].as_u64().is_some(), "{done}");
    let ada = done["rows"][0]["person"].as_u64().unwrap();
    let bob = done["rows"][1]["person"].as_u64().unwrap();
    let people =
        w.h.call("GET", &format!("/v1/sites/{s}/people?limit=100"), Some(&owner), None)
            .await
            .1;
    let named: Vec<(u64, String)> = people["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["name"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert!(named.contains(&(ada, "Ada Lovelace".to_owned())), "{people}");
    assert!(named.contains(&(bob, "Bob".to_owned())), "{people}");
    // Ada's new tag opens the door of her group; Bob got the unassigned tag.
    let decide = |tag: &str| json!({"site": s, "door": w.door.0, "credential": {"kind": "tag", "value": tag}});
    let v = post("/v1/decide".to_owned(), decide("04a2197c")).await;
    assert_eq!(v["effect"], "allow", "{v}");
    let snapshot = w.h.node.snapshot().load_full();
    let tag = snapshot
        .credential_by_secret(w.site, keyway_core::CredentialKind::Tag, &[0x0a, 0x0b, 0x0c, 0x0d])
        .unwrap();
    assert_eq!(tag.owner.map(|p| u64::from(p.0)), Some(bob));

    // The same rows again: nothing to do, nothing written.
    let before = w.h.fingerprint().await;
    let again = post(path.clone(), json!({"rows": rows})).await;
    assert_eq!(
        (
            again["created"].clone(),
            again["skipped"].clone(),
            again["refused"].clone()
        ),
        (json!(0), json!(2), json!(11)),
        "{again}"
    );
    assert_eq!(again["rows"][0]["person"].as_u64(), Some(ada));
    assert_eq!(again["revision"], Value::Null);
    assert_eq!(w.h.fingerprint().await, before, "a re-run wrote something");

    // A new tag for someone imported before updates them; name and role stay.
    let update = post(
        path,
        json!({"rows": [row("E-1", "Renamed", Some("basic_user"), &["04a2197c", "05050505"], &["Staff"])]}),
    )
    .await;
    assert_eq!(
        outcomes(&update),
        [("updated".to_owned(), "added 1 tag(s) and 0 group(s)".to_owned())]
    );
    let people =
        w.h.call("GET", &format!("/v1/sites/{s}/people?limit=100"), Some(&owner), None)
            .await
            .1;
    assert!(
        people["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"].as_u64() == Some(ada) && p["name"] == "Ada Lovelace"),
        "{people}"
    );
    let audit =
        w.h.call("GET", &format!("/v1/sites/{s}/audit?limit=200"), Some(&owner), None)
            .await
            .1;
    assert!(
        audit.to_string().contains("\"import\""),
        "no import in the audit log: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voucher_caps_new_people_in_row_order() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let (status, v) =
        w.h.call(
            "POST",
            "/v1/sites",
            Some(&owner),
            Some(json!({"name": "Small", "time_zone": "UTC"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let site = keyway_core::SiteId(v["site"]["id"].as_u64().unwrap() as u32);
    let store = w.h.node.store();
    store
        .memberships()
        .create_voucher("test", "SMALL-3", 3, 1, None, None, jiff::Timestamp::now())
        .await
        .unwrap();
    store
        .memberships()
        .redeem_voucher("test", "SMALL-3", site, crate::t(0))
        .await
        .unwrap();
    let rows: Vec<Value> = (1..=5)
        .map(|i| row(&format!("S-{i}"), &format!("P{i}"), None, &[], &[]))
        .collect();
    let (status, report) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{}/import", site.0),
            Some(&owner),
            Some(json!({"rows": rows})),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let got = outcomes(&report);
    let refusal = "the site is full: voucher `SMALL-3` allows 3 users (`max_users`) and the site has 0; \
                   remove some or redeem a larger voucher";
    assert_eq!(
        got.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(),
        ["created", "created", "created", "refused", "refused"]
    );
    assert_eq!(got[3].1, refusal);
    assert_eq!(w.h.node.snapshot().load().voucher_counts(site).people, 3);
    // 3 of 3 is past 90%: the crossing is queued once, with the import.
    let due = store
        .notifications()
        .claim(crate::t(253_402_207_000), crate::t(253_402_207_100), 100)
        .await
        .unwrap();
    let near: Vec<_> = due
        .iter()
        .filter(|i| i.target == "voucher.near_cap" && i.site == site)
        .collect();
    assert_eq!(near.len(), 1, "{due:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_unauthorised_imports_are_refused_whole() {
    let w = World::new().await;
    let s = w.site.0;
    let path = format!("/v1/sites/{s}/import");
    let before = w.h.fingerprint().await;
    // Small rows, so that the count is what is over a limit, not the body.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"external_id": i.to_string(), "name": "X"}))
        .collect();
    let owner = w.bearer(Who::Owner).await.unwrap();
    let (status, v) = w.h.call("POST", &path, Some(&owner), Some(json!({"rows": many}))).await;
    assert_eq!(
        (status.as_u16(), v["code"].as_str()),
        (422, Some("too_many_rows")),
        "{v}"
    );
    // (caller, body, status, code)
    let cases = [
        (
            Who::Owner,
            json!({"rows": [{"external_id": "A", "name": "A", "colour": 1}]}),
            422,
            "invalid_body",
        ),
        (
            Who::Owner,
            json!({"rows": [{"external_id": 7, "name": "A"}]}),
            422,
            "invalid_body",
        ),
        (Who::Owner, json!({"rows": "all of them"}), 422, "invalid_body"),
        (
            Who::Super,
            json!({"rows": [row("A", "A", None, &[], &[])]}),
            403,
            "forbidden",
        ),
        (
            Who::Other,
            json!({"rows": [row("A", "A", None, &[], &[])]}),
            404,
            "not_found",
        ),
    ];
    for (who, body, want, code) in cases {
        let token = w.bearer(who).await.unwrap();
        let (status, v) = w.h.call("POST", &path, Some(&token), Some(body.clone())).await;
        assert_eq!(
            (status.as_u16(), v["code"].as_str()),
            (want, Some(code)),
            "{who:?} {body}: {v}"
        );
    }
    assert_eq!(w.h.fingerprint().await, before, "refusals changed nothing");
}
