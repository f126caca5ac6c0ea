//! Policy administration over HTTP: the operator uploads modules and a bundle, an
//! activation that would leave a door's rule dangling is refused and changes nothing, a
//! good one swaps the bundle for every site, and a rollback puts the earlier one back.
//! And the rows of these routes in the authorisation matrix, with their bad input.

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};

const U: u16 = 401;
const F: u16 = 403;
const N: u16 = 404;

#[rustfmt::skip]
pub const ROWS: &[(&str, [u16; 10])] = &[
    ("POST /v1/plugins",                         [U, F, F, F, F, F, 201, F, F, F]),
    ("GET /v1/plugins",                          [U, F, F, F, F, F, 200, F, F, F]),
    ("POST /v1/bundles",                         [U, F, F, F, F, F, 201, F, F, F]),
    ("GET /v1/bundles",                          [U, F, F, F, F, F, 200, F, F, F]),
    ("POST /v1/bundles/{bundle}/activate",       [U, F, F, F, F, F, 200, F, F, F]),
    ("POST /v1/bundles/rollback",                [U, F, F, F, F, F, 200, F, F, F]),
    ("GET /v1/sites/{site}/policy",              [U, 200, 200, 200, 200, N, N, 200, F, 200]),
];

fn default_manifest() -> String {
    std::fs::read_to_string(bundle_dir().join("bundle.toml")).unwrap()
}

/// The default manifest without the two-person rule.
fn without_two_person() -> String {
    let text = default_manifest();
    let start = text.find("[plugins.two-person]").unwrap();
    let end = text.find("[plugins.occupancy]").unwrap();
    format!("{}{}", &text[..start], &text[end..])
}

/// The default bundle stored and in force, and a second stored bundle of the same
/// modules (another version); answers the second's id.
async fn two_bundles(w: &World) -> i64 {
    let (stored, _) = w.h.node.adopt_bundle_dir("test", &bundle_dir()).await.unwrap();
    let other =
        w.h.node
            .store()
            .policy_records()
            .upload_bundle(
                "test",
                None,
                "default",
                &format!("again-{}", unique()),
                &default_manifest(),
                &stored.plugins,
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
    other.id.get()
}

/// The path and body of a policy-administration route of the matrix.
pub async fn body_for(w: &World, route: &str, path: &mut String) -> Option<Value> {
    match route {
        "POST /v1/plugins" => {
            // The matrix sends a module (`wasm_request`); its JSON body is none.
            *path = format!("/v1/plugins?name=p{}&version=1", unique());
            None
        }
        "POST /v1/bundles" => {
            let (stored, _) = w.h.node.adopt_bundle_dir("test", &bundle_dir()).await.unwrap();
            Some(json!({
                "name": "default", "version": format!("m{}", unique()),
                "manifest": default_manifest(), "plugins": stored.plugins,
            }))
        }
        "POST /v1/bundles/{bundle}/activate" => {
            *path = path.replace("{bundle}", &two_bundles(w).await.to_string());
            None
        }
        "POST /v1/bundles/rollback" => {
            let second = two_bundles(w).await;
            w.h.node
                .activate_bundle("test", keyway_store::BundleId(second))
                .await
                .unwrap();
            None
        }
        _ => None,
    }
}

/// A module upload: raw bytes with a content type.
pub fn wasm_request(path: &str, bearer: Option<&str>, content_type: &str, bytes: Vec<u8>) -> Request<Body> {
    let mut b = Request::builder().method("POST").uri(path);
    if let Some(bearer) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    b.header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes))
        .unwrap()
}

/// The smallest WebAssembly module.
pub const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_uploaded_refused_activated_and_rolled_back() {
    let w = World::with(|c| keyway_api::ApiConfig {
        max_body_bytes: 1 << 20,
        ..c
    })
    .await;
    let op = w.bearer(Who::Operator).await.unwrap();
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let (default, _) = w.h.node.adopt_bundle_dir("test", &bundle_dir()).await.unwrap();
    assert!(default.active);
    let (again, _) = w.h.node.adopt_bundle_dir("test", &bundle_dir()).await.unwrap();
    assert_eq!(again.id, default.id, "adopting the same directory stores nothing new");

    // Modules: refused unless WebAssembly of the right media type; a version once.
    let wasm = std::fs::read(bundle_dir().join("business-hours.wasm")).unwrap();
    let upload = "/v1/plugins?name=business-hours&version=9.9";
    let (status, _, v) =
        w.h.send(wasm_request(upload, Some(&op), "application/wasm", wasm.clone()))
            .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["sha256"], keyway_plugin_host::Sha256::of(&wasm).to_string());
    for (content_type, bytes, want, code) in [
        ("application/wasm", wasm.clone(), 409, "duplicate"),
        ("application/octet-stream", wasm.clone(), 415, "unsupported_media_type"),
        ("application/wasm", b"MZ\x90\0not wasm".to_vec(), 422, "invalid"),
        ("application/wasm", Vec::new(), 422, "invalid"),
    ] {
        let (status, _, v) = w.h.send(wasm_request(upload, Some(&op), content_type, bytes)).await;
        assert_eq!(
            (status.as_u16(), v["code"].as_str()),
            (want, Some(code)),
            "{content_type}: {v}"
        );
    }
    let (status, _, v) =
        w.h.send(wasm_request(
            "/v1/plugins?name=x",
            Some(&op),
            "application/wasm",
            wasm.clone(),
        ))
        .await;
    assert_eq!((status.as_u16(), v["code"].as_str()), (400, Some("bad_query")), "{v}");

    // A bundle without the two-person rule, while a door uses it: refused, nothing moves.
    let (status, v) =
        w.h.call(
            "PUT",
            &format!("/v1/sites/{s}/doors/{}/rule", w.door.0),
            Some(&owner),
            Some(json!({"rule": "two-person"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let plugins = w.h.node.store().policy_records().plugins().await.unwrap();
    let two_person = plugins.iter().find(|p| p.name == "two-person").unwrap().id;
    let ids: Vec<keyway_store::PluginId> = default.plugins.iter().copied().filter(|id| *id != two_person).collect();
    let (status, slim) =
        w.h.call(
            "POST",
            "/v1/bundles",
            Some(&op),
            Some(json!({"name": "slim", "version": "1", "manifest": without_two_person(), "plugins": ids})),
        )
        .await;
    assert_eq!(status, 201, "{slim}");
    let slim_id = slim["id"].as_i64().unwrap();
    let activate = format!("/v1/bundles/{slim_id}/activate");
    let (status, v) = w.h.call("POST", &activate, Some(&op), None).await;
    assert_eq!(
        (status.as_u16(), v["code"].as_str()),
        (409, Some("rule_would_dangle")),
        "{v}"
    );
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    assert_eq!(policy["id"], default.id.get(), "{policy}");
    assert_eq!(policy["door_rules"][0]["rule"], "two-person", "{policy}");

    // Without the attachment it goes in; the rule is gone for every site.
    let (status, _) =
        w.h.call(
            "DELETE",
            &format!("/v1/sites/{s}/doors/{}/rule", w.door.0),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = w.h.call("POST", &activate, Some(&op), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["bundle"]["active"], true);
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    assert_eq!(
        (policy["id"].clone(), policy["bundle"].clone()),
        (json!(slim_id), json!("default")),
        "{policy}"
    );
    assert!(
        !policy["rules"].as_array().unwrap().contains(&json!("two-person")),
        "{policy}"
    );
    let (status, v) =
        w.h.call(
            "PUT",
            &format!("/v1/sites/{s}/doors/{}/rule", w.door.0),
            Some(&owner),
            Some(json!({"rule": "two-person"})),
        )
        .await;
    assert_eq!(status, 422, "the bundle in force has no such rule: {v}");

    // Rollback: the default is back, and with it the rule.
    let (status, v) = w.h.call("POST", "/v1/bundles/rollback", Some(&op), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["bundle"]["id"], default.id.get(), "{v}");
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    assert!(
        policy["rules"].as_array().unwrap().contains(&json!("two-person")),
        "{policy}"
    );
    let (_, listed) = w.h.call("GET", "/v1/bundles", Some(&op), None).await;
    let active: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["active"] == true)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], default.id.get());

    // Bad bundles: each refused with its reason, none stored.
    let before = w.h.node.store().policy_records().bundles(None).await.unwrap().len();
    for (body, want, code) in [
        (
            json!({"name": "x", "version": "1", "manifest": "[bundle", "plugins": []}),
            422,
            "invalid",
        ),
        (
            json!({"name": "x", "version": "1", "manifest": "", "plugins": []}),
            422,
            "invalid",
        ),
        (
            json!({"name": "x", "version": "1", "manifest": default_manifest(), "plugins": [999_999]}),
            422,
            "unknown_reference",
        ),
        (
            json!({"name": "", "version": "1", "manifest": default_manifest(), "plugins": []}),
            422,
            "invalid",
        ),
        (
            json!({"name": "slim", "version": "1", "manifest": default_manifest(), "plugins": []}),
            409,
            "duplicate",
        ),
        (
            json!({"name": "x", "version": "1", "manifest": default_manifest()}),
            422,
            "invalid_body",
        ),
    ] {
        let (status, v) = w.h.call("POST", "/v1/bundles", Some(&op), Some(body.clone())).await;
        assert_eq!((status.as_u16(), v["code"].as_str()), (want, Some(code)), "{body}: {v}");
    }
    assert_eq!(
        w.h.node.store().policy_records().bundles(None).await.unwrap().len(),
        before
    );
    // A bundle that pins a module it was not uploaded with does not load: refused.
    let (_, broken) =
        w.h.call(
            "POST",
            "/v1/bundles",
            Some(&op),
            Some(json!({"name": "broken", "version": "1", "manifest": default_manifest(), "plugins": [two_person]})),
        )
        .await;
    let (status, v) =
        w.h.call(
            "POST",
            &format!("/v1/bundles/{}/activate", broken["id"]),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = w.h.call("POST", "/v1/bundles/999999/activate", Some(&op), None).await;
    assert_eq!((status.as_u16(), v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (_, policy) =
        w.h.call("GET", &format!("/v1/sites/{s}/policy"), Some(&owner), None)
            .await;
    assert_eq!(
        policy["id"],
        default.id.get(),
        "the refusals left the bundle in force: {policy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_needs_an_earlier_bundle_and_modules_fit_the_body_limit() {
    let w = World::new().await;
    let op = w.bearer(Who::Operator).await.unwrap();
    // The test server takes bodies of 64 KiB; this module is larger.
    let wasm = std::fs::read(bundle_dir().join("business-hours.wasm")).unwrap();
    assert!(wasm.len() > 64 * 1024);
    let (status, _, v) =
        w.h.send(wasm_request(
            "/v1/plugins?name=big&version=1",
            Some(&op),
            "application/wasm",
            wasm,
        ))
        .await;
    assert_eq!(
        (status.as_u16(), v["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    assert!(w.h.node.store().policy_records().plugins().await.unwrap().is_empty());
    w.h.node.adopt_bundle_dir("test", &bundle_dir()).await.unwrap();
    let (status, v) = w.h.call("POST", "/v1/bundles/rollback", Some(&op), None).await;
    assert_eq!(
        (status.as_u16(), v["code"].as_str()),
        (409, Some("no_previous_bundle")),
        "{v}"
    );
}
