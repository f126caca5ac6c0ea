//! The authorisation matrix: every route of the OpenAPI document x every kind of caller,
//! with the exact status. A route without a row fails the test.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

// Callers, in order: anonymous, basic user, super user, site admin, owner, member of
// another site, operator, read token, decide token, admin token (the owner's tokens,
// limited to the site).
const U: u16 = 401;
const F: u16 = 403;
const N: u16 = 404;

#[rustfmt::skip]
const MATRIX: &[(&str, [u16; 10])] = &[
    ("POST /v1/accounts",                                  [201, 201, 201, 201, 201, 201, 201, 201, 201, 201]),
    ("POST /v1/sessions",                                  [201, 201, 201, 201, 201, 201, 201, 201, 201, 201]),
    ("DELETE /v1/sessions",                                [U, 204, 204, 204, 204, 204, 204, F, F, F]),
    ("DELETE /v1/sessions/current",                        [U, 204, 204, 204, 204, 204, 204, F, F, F]),
    ("GET /v1/me",                                         [U, 200, 200, 200, 200, 200, 200, 200, F, 200]),
    // With a wrong password: the row checks who may ask; stories delete for real.
    ("DELETE /v1/me",                                      [U, 401, 401, 401, 401, 401, 401, F, F, F]),
    ("POST /v1/accounts/{account}/disable",                [U, F, F, F, F, F, 200, F, F, F]),
    ("POST /v1/accounts/{account}/enable",                 [U, F, F, F, F, F, 200, F, F, F]),
    ("POST /v1/password-resets",                           [202, 202, 202, 202, 202, 202, 202, 202, 202, 202]),
    ("POST /v1/password-resets/confirm",                   [422, 422, 422, 422, 422, 422, 422, 422, 422, 422]),
    ("POST /v1/tokens",                                    [U, 201, 201, 201, 201, 201, 201, F, F, F]),
    ("GET /v1/tokens",                                     [U, 200, 200, 200, 200, 200, 200, F, F, F]),
    ("DELETE /v1/tokens/{token}",                          [U, 200, 200, 200, 200, 200, 200, F, F, F]),
    ("POST /v1/sites",                                     [U, 201, 201, 201, 201, 201, 201, F, F, F]),
    ("GET /v1/sites",                                      [U, 200, 200, 200, 200, 200, 200, 200, F, 200]),
    ("GET /v1/sites/{site}",                               [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PATCH /v1/sites/{site}",                             [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/members",                       [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/members/{account}/role",        [U, F, 200, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/members/{account}",          [U, F, 204, 204, 204, N, N, F, F, 204]),
    ("POST /v1/sites/{site}/transfer",                     [U, F, F, F, 422, N, N, F, F, 422]),
    ("POST /v1/sites/{site}/invitations",                  [U, F, F, 201, 201, N, N, F, F, 201]),
    ("GET /v1/sites/{site}/invitations",                   [U, F, F, 200, 200, N, N, 200, F, 200]),
    ("DELETE /v1/sites/{site}/invitations/{invitation}",   [U, F, F, 204, 204, N, N, F, F, 204]),
    ("POST /v1/invitations/accept",                        [U, 200, 200, 200, 200, 200, 200, F, F, F]),
    ("POST /v1/vouchers",                                  [U, F, F, F, F, F, 201, F, F, F]),
    ("GET /v1/vouchers",                                   [U, F, F, F, F, F, 200, F, F, F]),
    ("POST /v1/sites/{site}/voucher",                      [U, F, F, F, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/voucher",                       [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("POST /v1/sites/{site}/doors",                        [U, F, F, 201, 201, N, N, F, F, 201]),
    ("GET /v1/sites/{site}/doors",                         [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PATCH /v1/sites/{site}/doors/{door}",                [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/doors/{door}",               [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/people",                       [U, F, F, 201, 201, N, N, F, F, 201]),
    ("GET /v1/sites/{site}/people",                        [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("POST /v1/sites/{site}/import",                       [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/people/{person}/block",        [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/people/{person}/unblock",      [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/people/{person}",            [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/credentials",                  [U, F, F, 201, 201, N, N, F, F, 201]),
    ("DELETE /v1/sites/{site}/credentials/{credential}",   [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/schedules",                    [U, F, 201, 201, 201, N, N, F, F, 201]),
    ("DELETE /v1/sites/{site}/schedules/{schedule}",       [U, F, 200, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/groups",                       [U, F, 201, 201, 201, N, N, F, F, 201]),
    ("GET /v1/sites/{site}/groups",                        [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/groups/{group}",                [U, F, 200, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/groups/{group}",             [U, F, 200, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/entries",                       [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("GET /v1/sites/{site}/notifications",                 [U, F, F, F, 200, N, N, 200, F, 200]),
    ("POST /v1/sites/{site}/notifications",                [U, F, F, F, 201, N, N, F, F, 201]),
    ("DELETE /v1/sites/{site}/notifications/{setting}",    [U, F, F, F, 204, N, N, F, F, 204]),
    ("GET /v1/sites/{site}/audit",                         [U, F, F, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/doors/{door}/rule",             [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/doors/{door}/rule",          [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/doors/{door}/rules",            [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/doors/{door}/rules",            [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/doors/{door}/rules",         [U, F, F, 200, 200, N, N, F, F, 200]),
    ("PUT /v1/sites/{site}/opening-hours",                 [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/opening-hours",              [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/rules/{rule}/state",            [U, F, F, 200, 200, N, N, 200, F, 200]),
    ("DELETE /v1/sites/{site}/rules/{rule}/state",         [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/decide",                                    [U, F, 200, 200, 200, N, N, F, 200, 200]),
    ("POST /v1/decide/batch",                              [U, F, 200, 200, 200, N, N, F, 200, 200]),
];

/// The rows of this file and of the modules that keep their own.
fn all_rows() -> impl Iterator<Item = &'static (&'static str, [u16; 10])> {
    MATRIX
        .iter()
        .chain(crate::siteops::ROWS)
        .chain(crate::iqs::ROWS)
        .chain(crate::webhooks::ROWS)
        .chain(crate::bundles::ROWS)
}

/// Every `METHOD /path` of the OpenAPI document.
pub fn documented_routes() -> BTreeSet<String> {
    let doc = serde_json::to_value(keyway_api::openapi()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

/// A fresh member of the site with the basic role.
async fn fresh_member(w: &World) -> i64 {
    let store = w.h.node.store();
    let a = store
        .accounts()
        .create(
            "test",
            &format!("m{}@example.com", unique()),
            PASSWORD,
            "",
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    store
        .memberships()
        .put(
            "test",
            w.site,
            a.id,
            keyway_core::RoleId(3),
            None,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    a.id.get()
}

/// The concrete path and body of `route` for `who`, with fresh entities where the call
/// would use one up.
pub async fn request_for(w: &World, route: &str, who: Who) -> (String, String, Option<Value>) {
    let (method, template) = route.split_once(' ').unwrap();
    let store = w.h.node.store();
    let far = jiff::Timestamp::now().as_second() + 3600;
    let n = unique();
    let site = w.site;
    let mut path = template.replace("{site}", &site.0.to_string());
    let body = match route {
        "POST /v1/accounts" => Some(json!({"email": format!("new{n}@example.com"), "password": PASSWORD})),
        "POST /v1/sessions" => Some(json!({"email": "basic@example.com", "password": PASSWORD})),
        "DELETE /v1/me" => Some(json!({"password": "Not-The-Password-9"})),
        "POST /v1/accounts/{account}/disable" | "POST /v1/accounts/{account}/enable" => {
            let account = store
                .accounts()
                .create(
                    "test",
                    &format!("d{n}@example.com"),
                    PASSWORD,
                    "",
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            path = path.replace("{account}", &account.id.get().to_string());
            None
        }
        "POST /v1/password-resets" => Some(json!({"email": "basic@example.com"})),
        "POST /v1/password-resets/confirm" => Some(json!({"token": "nope", "password": PASSWORD})),
        "POST /v1/tokens" => Some(json!({"name": "ci", "scopes": ["read"]})),
        "DELETE /v1/tokens/{token}" => {
            let (t, _) = store
                .accounts()
                .create_token(
                    "test",
                    keyway_store::AccountId(w.account(who)),
                    None,
                    "x",
                    &[],
                    None,
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            path = path.replace("{token}", &t.id.get().to_string());
            None
        }
        "POST /v1/sites" => Some(json!({"name": format!("Site {n}"), "time_zone": "UTC"})),
        "PATCH /v1/sites/{site}" => Some(json!({"name": "HQ"})),
        "PUT /v1/sites/{site}/members/{account}/role" => {
            path = path.replace("{account}", &fresh_member(w).await.to_string());
            Some(json!({"role": "super_user"}))
        }
        "DELETE /v1/sites/{site}/members/{account}" => {
            path = path.replace("{account}", &fresh_member(w).await.to_string());
            None
        }
        "POST /v1/sites/{site}/transfer" => Some(json!({"account": fresh_member(w).await})),
        "POST /v1/sites/{site}/invitations" => {
            Some(json!({"email": format!("inv{n}@example.com"), "role": "basic_user"}))
        }
        "DELETE /v1/sites/{site}/invitations/{invitation}" => {
            let (i, _) = store
                .memberships()
                .create_invitation(
                    "test",
                    site,
                    &format!("i{n}@example.com"),
                    keyway_core::RoleId(3),
                    None,
                    None,
                    crate::t(far),
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            path = path.replace("{invitation}", &i.id.get().to_string());
            None
        }
        "POST /v1/invitations/accept" => {
            let fresh = w.h.bare_site().await;
            let (_, issued) = store
                .memberships()
                .create_invitation(
                    "test",
                    fresh,
                    &format!("a{n}@example.com"),
                    keyway_core::RoleId(3),
                    None,
                    None,
                    crate::t(far),
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            Some(json!({"token": issued.secret}))
        }
        "POST /v1/vouchers" => Some(json!({"code": format!("V-{n}"), "max_users": 10, "max_app_users": 5})),
        "POST /v1/sites/{site}/voucher" => {
            let code = format!("R-{n}");
            store
                .memberships()
                .create_voucher("test", &code, 100_000, 100_000, None, None, jiff::Timestamp::now())
                .await
                .unwrap();
            Some(json!({"code": code}))
        }
        "POST /v1/sites/{site}/doors" => Some(json!({"name": format!("Door {n}")})),
        "PATCH /v1/sites/{site}/doors/{door}" => {
            path = path.replace("{door}", &w.h.door(site).await.0.to_string());
            Some(json!({"name": "Renamed"}))
        }
        "DELETE /v1/sites/{site}/doors/{door}" => {
            path = path.replace("{door}", &w.h.door(site).await.0.to_string());
            None
        }
        "POST /v1/sites/{site}/people" => Some(json!({"name": format!("Person {n}")})),
        "POST /v1/sites/{site}/import" => Some(json!({
            "rows": [{"external_id": format!("M-{n}"), "name": format!("Imported {n}"),
                      "tags": [format!("{:08x}", 0x3000_0000 + n)]}],
        })),
        "POST /v1/sites/{site}/people/{person}/block"
        | "POST /v1/sites/{site}/people/{person}/unblock"
        | "DELETE /v1/sites/{site}/people/{person}" => {
            path = path.replace("{person}", &w.h.person(site).await.0.to_string());
            None
        }
        "POST /v1/sites/{site}/credentials" => {
            Some(json!({"kind": "tag", "value": format!("{:08x}", 0x1000_0000 + n)}))
        }
        "DELETE /v1/sites/{site}/credentials/{credential}" => {
            let c =
                w.h.credential(site, (0x2000_0000u32 + n).to_be_bytes().to_vec(), None)
                    .await;
            path = path.replace("{credential}", &c.0.to_string());
            None
        }
        "POST /v1/sites/{site}/schedules" => {
            Some(json!({"periods": [{"days": ["workdays"], "start": "08:00", "end": "18:00"}]}))
        }
        "DELETE /v1/sites/{site}/schedules/{schedule}" => {
            path = path.replace("{schedule}", &w.h.schedule(site).await.0.to_string());
            None
        }
        "POST /v1/sites/{site}/groups" => Some(json!({"name": format!("G{n}"), "doors": [w.door.0]})),
        "PUT /v1/sites/{site}/groups/{group}" => {
            path = path.replace("{group}", &w.h.group(site).await.0.to_string());
            Some(json!({"name": "Renamed", "doors": [w.door.0]}))
        }
        "DELETE /v1/sites/{site}/groups/{group}" => {
            path = path.replace("{group}", &w.h.group(site).await.0.to_string());
            None
        }
        "POST /v1/sites/{site}/notifications" => {
            Some(json!({"event_kind": "entry.denied", "channel": "email", "target": "owner@example.com"}))
        }
        "DELETE /v1/sites/{site}/notifications/{setting}" => {
            let setting = keyway_store::NotificationSetting {
                id: keyway_store::SettingId(0),
                site,
                account: None,
                event_kind: "entry.denied".into(),
                channel: "email".into(),
                target: format!("n{n}@example.com"),
                config: "{}".into(),
                enabled: true,
            };
            let stored = store
                .notifications()
                .put_setting("test", &setting, jiff::Timestamp::now())
                .await
                .unwrap();
            path = path.replace("{setting}", &stored.id.get().to_string());
            None
        }
        "PUT /v1/sites/{site}/doors/{door}/rule" => {
            path = path.replace("{door}", &w.h.door(site).await.0.to_string());
            Some(json!({"rule": "business-hours"}))
        }
        "GET /v1/sites/{site}/doors/{door}/rules" => {
            path = path.replace("{door}", &w.door.0.to_string());
            None
        }
        "PUT /v1/sites/{site}/doors/{door}/rules" => {
            path = path.replace("{door}", &w.h.door(site).await.0.to_string());
            Some(json!({"rules": [
                {"rule": "business-hours"},
                {"rule": "two-person", "fail_safe": true, "config": {"window_s": 10}},
            ]}))
        }
        "DELETE /v1/sites/{site}/doors/{door}/rule" | "DELETE /v1/sites/{site}/doors/{door}/rules" => {
            let door = w.h.door(site).await;
            w.h.node
                .attach_door_rule("test", door, "business-hours", false)
                .await
                .unwrap();
            path = path.replace("{door}", &door.0.to_string());
            None
        }
        "PUT /v1/sites/{site}/opening-hours" => {
            Some(json!({"periods": [{"days": ["workdays"], "start": "07:00", "end": "19:00"}]}))
        }
        "GET /v1/sites/{site}/rules/{rule}/state" | "DELETE /v1/sites/{site}/rules/{rule}/state" => {
            path = format!("{}?door={}", path.replace("{rule}", "two-person"), w.door.0);
            None
        }
        "POST /v1/decide" => Some(decide_body(w)),
        "POST /v1/decide/batch" => Some(json!({"requests": [decide_body(w), decide_body(w)]})),
        _ if route.contains("/plugins") || route.contains("/bundles") || route.ends_with("/policy") => {
            crate::bundles::body_for(w, route, &mut path).await
        }
        _ if route.contains("/webhooks") => crate::webhooks::body_for(w, route, &mut path).await,
        _ if route.contains("/iqs")
            || route.ends_with("/iq")
            || route.contains("firmware")
            || route.ends_with("/offline-access") =>
        {
            crate::iqs::body_for(w, route, who, &mut path).await
        }
        _ => crate::siteops::body_for(w, route, &mut path).await,
    };
    (method.to_owned(), path, body)
}

pub fn decide_body(w: &World) -> Value {
    json!({
        "site": w.site.0, "door": w.door.0,
        "credential": {"kind": "tag", "value": "04a2197c"},
        "at": "2026-11-23T09:00:00+01:00",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_has_a_row() {
    let documented = documented_routes();
    let rows: BTreeSet<String> = all_rows().map(|(r, _)| (*r).to_owned()).collect();
    let missing: Vec<_> = documented.difference(&rows).collect();
    let stale: Vec<_> = rows.difference(&documented).collect();
    assert!(missing.is_empty(), "routes without a row in the matrix: {missing:?}");
    assert!(stale.is_empty(), "rows for routes that do not exist: {stale:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_matrix() {
    let w = World::new().await;
    let mut failures = Vec::new();
    for (route, expected) in all_rows() {
        for (who, want) in EVERYONE.iter().zip(expected) {
            let (method, path, body) = request_for(&w, route, *who).await;
            let bearer = w.bearer(*who).await;
            let (status, answer) = if *route == "POST /v1/plugins" {
                let upload = crate::bundles::wasm_request(
                    &path,
                    bearer.as_deref(),
                    "application/wasm",
                    crate::bundles::EMPTY_MODULE.to_vec(),
                );
                let (status, _, answer) = w.h.send(upload).await;
                (status, answer)
            } else {
                w.h.call(&method, &path, bearer.as_deref(), body).await
            };
            if status.as_u16() != *want {
                failures.push(format!("{route} as {who:?}: got {status}, want {want}: {answer}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
