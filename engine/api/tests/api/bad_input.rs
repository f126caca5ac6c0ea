//! Bad input on every route with a body, ids of another site and ids that do not exist,
//! unicode edge cases: each gets a specific 4xx in the problem shape, and the stored
//! data is unchanged afterwards.

use crate::matrix::request_for;
use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

async fn raw(
    w: &World,
    method: &str,
    path: &str,
    bearer: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let (s, _, v) = w.h.send(request).await;
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_on_every_route() {
    let w = World::new().await;
    let routes = crate::matrix::documented_routes();
    let mut failures = Vec::new();
    for route in &routes {
        let (method, path, body) = request_for(&w, route, Who::Owner).await;
        let Some(valid) = body else { continue };
        let bearer = w.bearer(Who::Owner).await.unwrap();
        let before = w.h.fingerprint().await;
        let mut unknown = valid.clone();
        unknown.as_object_mut().unwrap().insert("bogus".into(), json!(1));
        let mut wrong_type = valid.clone();
        for v in wrong_type.as_object_mut().unwrap().values_mut() {
            *v = json!({"nested": [true]});
        }
        let cases: [(&str, &str, Vec<u8>, u16, &str); 6] = [
            ("malformed", "application/json", b"{,}".to_vec(), 400, "malformed_json"),
            (
                "content type",
                "text/plain",
                serde_json::to_vec(&valid).unwrap(),
                415,
                "unsupported_media_type",
            ),
            (
                "oversized",
                "application/json",
                vec![b' '; 70 * 1024],
                413,
                "payload_too_large",
            ),
            (
                "unknown field",
                "application/json",
                serde_json::to_vec(&unknown).unwrap(),
                422,
                "invalid_body",
            ),
            (
                "wrong types",
                "application/json",
                serde_json::to_vec(&wrong_type).unwrap(),
                422,
                "invalid_body",
            ),
            (
                "not an object",
                "application/json",
                b"\"text\"".to_vec(),
                422,
                "invalid_body",
            ),
        ];
        for (what, ct, bytes, want, code) in cases {
            let (status, answer) = raw(&w, &method, &path, &bearer, ct, bytes).await;
            if status.as_u16() != want || answer["code"] != code {
                failures.push(format!("{route} {what}: got {status} {answer}, want {want} {code}"));
            }
        }
        if w.h.fingerprint().await != before {
            failures.push(format!("{route}: bad input changed stored data"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_another_site_or_of_nothing() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let other = w.other_site;
    let their_door = w.h.door(other).await;
    let their_person = w.h.person(other).await;
    let their_tag = w.h.credential(other, vec![9, 9, 9, 9], None).await;
    let their_iq = crate::iqs::iq(&w, other).await;
    let s = w.site.0;
    let before = w.h.fingerprint().await;
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "PATCH",
            format!("/v1/sites/{s}/doors/{}", their_door.0),
            Some(json!({"name": "x"})),
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/doors/{}", their_door.0),
            None,
            404,
            "not_found",
        ),
        ("DELETE", format!("/v1/sites/{s}/doors/999999"), None, 404, "not_found"),
        (
            "POST",
            format!("/v1/sites/{s}/people/{}/block", their_person.0),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/people/{}", their_person.0),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/credentials/{}", their_tag.0),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/credentials/77777"),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/v1/sites/{s}/credentials"),
            Some(json!({"kind": "tag", "value": "0a0b0c0d", "person": their_person.0})),
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/v1/sites/{s}/iqs/{}", their_iq.0),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/iqs/{}", their_iq.0),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/v1/sites/{s}/iqs/{}/reset", their_iq.0),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/v1/sites/{s}/iqs/{}/enrolment-code", their_iq.0),
            None,
            404,
            "not_found",
        ),
        (
            "PATCH",
            format!("/v1/sites/{s}/iqs/{}", their_iq.0),
            Some(json!({"name": "x"})),
            404,
            "not_found",
        ),
        (
            "PUT",
            format!("/v1/sites/{s}/doors/{}/iq", w.door.0),
            Some(json!({"iq": their_iq.0})),
            422,
            "invalid",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/iqs/{}/activations/{}", their_iq.0, their_person.0),
            None,
            404,
            "not_found",
        ),
        ("GET", format!("/v1/sites/{s}/iqs/4000000000"), None, 404, "not_found"),
        ("GET", format!("/v1/sites/{s}/iqs/-1"), None, 400, "bad_path"),
        (
            "PUT",
            format!("/v1/sites/{s}/credentials/{}/offline-access", their_tag.0),
            Some(json!({"enabled": true})),
            404,
            "not_found",
        ),
        ("GET", format!("/v1/sites/{}", other.0), None, 404, "not_found"),
        ("GET", "/v1/sites/4000000".to_owned(), None, 404, "not_found"),
        ("GET", "/v1/sites/abc".to_owned(), None, 400, "bad_path"),
        ("GET", "/v1/sites/99999999999".to_owned(), None, 400, "bad_path"),
        ("GET", format!("/v1/sites/{s}/doors?limit=0"), None, 400, "bad_query"),
        ("GET", format!("/v1/sites/{s}/doors?cursor=zz"), None, 400, "bad_cursor"),
        ("GET", format!("/v1/sites/{s}/doors?colour=red"), None, 400, "bad_query"),
        (
            "DELETE",
            format!("/v1/sites/{s}/members/424242"),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/invitations/424242"),
            None,
            404,
            "not_found",
        ),
        ("DELETE", "/v1/tokens/424242".to_owned(), None, 404, "not_found"),
        ("GET", "/v1/nothing-here".to_owned(), None, 404, "not_found"),
        ("PUT", "/v1/sites".to_owned(), None, 405, "method_not_allowed"),
        (
            "POST",
            "/v1/decide".to_owned(),
            Some(json!({"site": s, "door": their_door.0, "credential": {"kind": "tag", "value": "04a2197c"}})),
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/decide".to_owned(),
            Some(
                json!({"site": s, "door": w.door.0, "credential": {"kind": "tag", "value": "04a2197c"}, "at": "yesterday"}),
            ),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/decide".to_owned(),
            Some(
                json!({"site": s, "door": w.door.0, "credential": {"kind": "tag", "value": "04a2197c"}, "at_least_revision": 1_000_000}),
            ),
            503,
            "revision_not_reached",
        ),
        (
            "POST",
            "/v1/decide/batch".to_owned(),
            Some(json!({"requests": []})),
            422,
            "invalid",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, want, code) in cases {
        let (status, answer) = w.h.call(method, &path, Some(&owner), body).await;
        if status.as_u16() != want || answer["code"] != code {
            failures.push(format!("{method} {path}: got {status} {answer}, want {want} {code}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Decisions log entries, but change nothing in the model or the audit log.
    assert_eq!(w.h.fingerprint().await, before);
}

/// A door rule's state: a rule the bundle lacks (or that is no door rule), a person or
/// door of another site or of nothing, both scopes at once, unknown or malformed query
/// parameters. Nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_state_bad_input() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let their_door = w.h.door(w.other_site).await;
    let their_person = w.h.person(w.other_site).await;
    let base = format!("/v1/sites/{}/rules", w.site.0);
    let long = "r".repeat(300);
    let before = w.h.fingerprint().await;
    // (method, path, status, code)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", format!("{base}/no-such-rule/state"), 404, "not_found"),
        ("DELETE", format!("{base}/roles-standard/state"), 404, "not_found"),
        ("DELETE", format!("{base}/{long}/state"), 404, "not_found"),
        (
            "GET",
            format!("{base}/two-person/state?person={}", their_person.0),
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("{base}/two-person/state?door={}", their_door.0),
            404,
            "not_found",
        ),
        ("GET", format!("{base}/two-person/state?door=999999"), 404, "not_found"),
        (
            "GET",
            format!("{base}/two-person/state?person=1&door={}", w.door.0),
            400,
            "bad_query",
        ),
        (
            "DELETE",
            format!("{base}/two-person/state?colour=red"),
            400,
            "bad_query",
        ),
        ("GET", format!("{base}/two-person/state?door=abc"), 400, "bad_query"),
        (
            "GET",
            format!("{base}/two-person/state?door=99999999999"),
            400,
            "bad_query",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, want, code) in cases {
        let (status, answer) = w.h.call(method, &path, Some(&owner), None).await;
        if status.as_u16() != want || answer["code"] != code {
            failures.push(format!("{method} {path}: got {status} {answer}, want {want} {code}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(w.h.fingerprint().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_edge_cases() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let before = w.h.fingerprint().await;
    let refused: Vec<(&str, Value)> = vec![
        ("/v1/sites", json!({"name": "a\u{0000}b", "time_zone": "UTC"})),
        ("/v1/sites", json!({"name": "   ", "time_zone": "UTC"})),
        ("/v1/sites", json!({"name": "x".repeat(201), "time_zone": "UTC"})),
        ("/v1/sites", json!({"name": "ok", "time_zone": "Mars/Olympus"})),
        (
            "/v1/sites",
            json!({"name": "ok", "time_zone": "UTC", "holidays": ["2026-02-30"]}),
        ),
        ("/v1/sites/{s}/doors", json!({"name": "line\nbreak"})),
        ("/v1/sites/{s}/credentials", json!({"kind": "pin", "value": "١٢٣٤"})),
        ("/v1/sites/{s}/credentials", json!({"kind": "pin", "value": "12"})),
        ("/v1/sites/{s}/credentials", json!({"kind": "tag", "value": "zz"})),
        ("/v1/sites/{s}/credentials", json!({"kind": "tag", "value": "00"})),
        ("/v1/accounts", json!({"email": "not-an-email", "password": PASSWORD})),
        (
            "/v1/accounts",
            json!({"email": "a@example.com", "password": "ÄÖÜäöü12"}),
        ),
    ];
    for (path, body) in refused {
        let path = path.replace("{s}", &s.to_string());
        let (status, answer) = w.h.call("POST", &path, Some(&owner), Some(body.clone())).await;
        assert_eq!(status, 422, "{path} {body}: {answer}");
    }
    assert_eq!(w.h.fingerprint().await, before, "refusals changed nothing");
    // Non-ASCII that is fine is kept as sent.
    let (status, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/doors"),
            Some(&owner),
            Some(json!({"name": "Puerta 🚪 ñ"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["door"]["name"], "Puerta 🚪 ñ");
    let (status, v) =
        w.h.call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"email": "Zoë@Example.com", "password": "Pässwörd-1"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["email"], "zoë@example.com");
    w.h.login("zoë@example.com", "Pässwörd-1").await;
}

/// A person is made with a role the caller may grant (the roles plugin says which): nobody
/// makes an owner this way, a role the bundle lacks is refused, and refusals store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_get_only_roles_their_maker_may_grant() {
    let w = World::new().await;
    let path = format!("/v1/sites/{}/people", w.site.0);
    let before = w.h.fingerprint().await;
    // (caller, role, status, code)
    let refused = [
        (Who::Owner, "owner", 403, "forbidden"),
        (Who::Admin, "owner", 403, "forbidden"),
        (Who::Owner, "janitor", 422, "invalid"),
    ];
    for (who, role, status, code) in refused {
        let token = w.bearer(who).await.unwrap();
        let (got, v) =
            w.h.call("POST", &path, Some(&token), Some(json!({"name": "Eve", "role": role})))
                .await;
        assert_eq!(
            (got.as_u16(), v["code"].as_str()),
            (status, Some(code)),
            "{who:?} {role}: {v}"
        );
    }
    assert_eq!(w.h.fingerprint().await, before, "refusals changed nothing");
    let admin = w.bearer(Who::Admin).await.unwrap();
    let (got, v) =
        w.h.call(
            "POST",
            &path,
            Some(&admin),
            Some(json!({"name": "Sam", "role": "super_user"})),
        )
        .await;
    assert_eq!(got, 201, "{v}");
}
