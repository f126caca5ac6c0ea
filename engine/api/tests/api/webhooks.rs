//! Notifications end to end inside the API: an incident becomes an e-mail written by the
//! notify plugin and a signed delivery to a real HTTP receiver, a failing receiver is
//! retried later with the failure in the history, a rotated secret signs the retry; a
//! refused badge mails whoever listens for denials.
//! And the webhook routes' rows of the authorisation matrix and their bad input.

use crate::support::*;
use axum::http::HeaderMap;
use keyway_api::ApiConfig;
use keyway_core::SiteId;
use keyway_store::{IncidentKind, NewIncident};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

const U: u16 = 401;
const F: u16 = 403;
const N: u16 = 404;

#[rustfmt::skip]
pub const ROWS: &[(&str, [u16; 10])] = &[
    ("POST /v1/sites/{site}/webhooks",                              [U, F, F, F, 201, N, N, F, F, 201]),
    ("GET /v1/sites/{site}/webhooks",                               [U, F, F, F, 200, N, N, 200, F, 200]),
    ("GET /v1/sites/{site}/webhooks/{webhook}",                     [U, F, F, F, 200, N, N, 200, F, 200]),
    ("DELETE /v1/sites/{site}/webhooks/{webhook}",                  [U, F, F, F, 204, N, N, F, F, 204]),
    ("POST /v1/sites/{site}/webhooks/{webhook}/resume",             [U, F, F, F, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/webhooks/{webhook}/secret",             [U, F, F, F, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/webhooks/{webhook}/deliveries",          [U, F, F, F, 200, N, N, 200, F, 200]),
    ("POST /v1/sites/{site}/webhooks/{webhook}/test",               [U, F, F, F, 202, N, N, F, F, 202]),
];

async fn endpoint(w: &World, site: SiteId) -> i64 {
    let (hook, _) =
        w.h.node
            .store()
            .notifications()
            .create_webhook(
                "test",
                site,
                "https://hooks.example.com/keyway",
                &["*".to_owned()],
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
    hook.id.get()
}

/// The path and body of a webhook route of the matrix.
pub async fn body_for(w: &World, route: &str, path: &mut String) -> Option<Value> {
    // The matrix makes many; a site keeps at most 20.
    let store = w.h.node.store();
    for hook in store.notifications().webhooks(w.site).await.unwrap() {
        store
            .notifications()
            .delete_webhook("test", w.site, hook.id, jiff::Timestamp::now())
            .await
            .unwrap();
    }
    if route.contains("{webhook}") {
        *path = path.replace("{webhook}", &endpoint(w, w.site).await.to_string());
    }
    match route {
        "POST /v1/sites/{site}/webhooks" => {
            Some(json!({"url": format!("https://hooks.example.com/{}", unique()), "events": ["incident.*"]}))
        }
        _ => None,
    }
}

/// What a receiver saw: each request's headers and body.
type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// An HTTP receiver on 127.0.0.1 answering `status` to every POST.
async fn receiver(status: Arc<AtomicU16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = Arc::clone(&record);
            let status = Arc::clone(&status);
            async move {
                record.lock().unwrap().push((headers, body));
                axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

/// Runs the notification worker until it finds nothing due.
async fn drain(w: &World) {
    for _ in 0..10 {
        if w.h.state.deliver_due_notifications().await.unwrap() == 0 {
            return;
        }
    }
    panic!("the notification worker never ran dry");
}

/// Checks the signature of a delivery as a receiver would; answers the body as JSON.
fn verified(headers: &HeaderMap, body: &str, secret: &str) -> Value {
    let header = headers[keyway_api::SIGNATURE_HEADER].to_str().unwrap();
    let t: i64 = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((jiff::Timestamp::now().as_second() - t).abs() < 60, "a fresh timestamp");
    assert_eq!(header, keyway_api::signature(secret, t, body), "the signature verifies");
    serde_json::from_str(body).unwrap()
}

fn door_forced(w: &World) -> NewIncident {
    NewIncident {
        site: w.site,
        kind: IncidentKind::DoorForced,
        door: Some(w.door),
        iq: None,
        iq_seq: None,
        at: crate::t(jiff::Timestamp::now().as_second()),
        detail: "contact open without a grant".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_reach_the_owner_by_mail_and_signed_webhooks() {
    let w = World::with(|c| ApiConfig {
        webhook_allow_private: true,
        ..c
    })
    .await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let status = Arc::new(AtomicU16::new(204));
    let (url, seen) = receiver(Arc::clone(&status)).await;

    let (code, created) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/webhooks"),
            Some(&owner),
            Some(json!({"url": url, "events": ["incident.*"]})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let hook = created["webhook"]["id"].as_i64().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["webhook"]["status"], "active");
    let (_, listed) =
        w.h.call("GET", &format!("/v1/sites/{s}/webhooks"), Some(&owner), None)
            .await;
    assert!(listed.to_string().find(&secret).is_none(), "the secret is shown once");
    let (code, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/notifications"),
            Some(&owner),
            Some(json!({"event_kind": "incident.door_forced", "channel": "email", "target": "owner@example.com"})),
        )
        .await;
    assert_eq!(code, 201, "{v}");

    // A forced door: the notify plugin writes the owner's mail, the receiver gets the event.
    let incident = w.h.node.raise_incident("test", door_forced(&w)).await.unwrap();
    drain(&w).await;
    let mail = std::fs::read_to_string(&w.h.mail).unwrap();
    assert!(mail.contains("To: owner@example.com"), "{mail}");
    assert!(
        mail.contains("Subject: HQ: door forced open at "),
        "the plugin's subject: {mail}"
    );
    assert!(mail.contains("contact open without a grant"), "{mail}");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    let event = verified(headers, body, &secret);
    assert_eq!(event["type"], "incident.door_forced", "{event}");
    assert_eq!(event["site"], s);
    assert_eq!(event["data"]["id"], incident.id.get());
    assert_eq!(event["data"]["door"], w.door.0);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
    let first_delivery: i64 = headers[keyway_api::DELIVERY_HEADER].to_str().unwrap().parse().unwrap();
    let (_, history) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{s}/webhooks/{hook}/deliveries"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(history["items"][0]["succeeded"], true, "{history}");
    assert_eq!(history["items"][0]["status"], 204, "{history}");
    assert_eq!(history["items"][0]["delivery"], first_delivery, "{history}");

    // A failing receiver: the attempt is history, the delivery waits with a backoff.
    status.store(503, Ordering::SeqCst);
    w.h.node.raise_incident("test", door_forced(&w)).await.unwrap();
    drain(&w).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
    let (_, history) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{s}/webhooks/{hook}/deliveries"),
            Some(&owner),
            None,
        )
        .await;
    let failed = &history["items"][0];
    assert_eq!(
        (failed["succeeded"].clone(), failed["status"].clone()),
        (json!(false), json!(503)),
        "{history}"
    );
    assert!(failed["error"].as_str().unwrap().contains("503"), "{history}");
    let (_, view) =
        w.h.call("GET", &format!("/v1/sites/{s}/webhooks/{hook}"), Some(&owner), None)
            .await;
    assert_eq!(
        (view["failures"].clone(), view["status"].clone()),
        (json!(1), json!("active")),
        "{view}"
    );
    let pending =
        w.h.node
            .store()
            .notifications()
            .outbox_item(keyway_store::OutboxId(failed["delivery"].as_i64().unwrap()))
            .await
            .unwrap()
            .unwrap();
    let wait = pending.next_attempt_at.as_second() - jiff::Timestamp::now().as_second();
    assert!(
        (10..=31).contains(&wait),
        "the first retry comes 15 to 30 s later: {wait}"
    );
    assert_eq!(pending.attempts, 1);
    let mut metrics = String::new();
    w.h.state.render_metrics(&mut metrics);
    assert!(
        metrics.lines().any(|l| l == "keyway_notification_outbox_depth 1"),
        "the retry waits in the outbox:\n{metrics}"
    );

    // A new secret signs from now on; resuming sends what waits, at once.
    let (code, rotated) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/webhooks/{hook}/secret"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(code, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    status.store(200, Ordering::SeqCst);
    let (code, resumed) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/webhooks/{hook}/resume"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        (code.as_u16(), resumed["failures"].clone()),
        (200, json!(0)),
        "{resumed}"
    );
    drain(&w).await;
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    let (headers, body) = &requests[2];
    verified(headers, body, &new_secret);
    assert_eq!(
        headers[keyway_api::DELIVERY_HEADER],
        requests[1].0[keyway_api::DELIVERY_HEADER],
        "a retry carries the same idempotency id"
    );

    // A refused badge at a site that listens for denials: the entry, then the mail.
    let (code, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/notifications"),
            Some(&owner),
            Some(json!({"event_kind": "entry.denied", "channel": "email", "target": "guard@example.com"})),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let (code, v) =
        w.h.call("POST", "/v1/decide", Some(&owner), Some(crate::matrix::decide_body(&w)))
            .await;
    assert_eq!((code.as_u16(), v["effect"].as_str()), (200, Some("deny")), "{v}");
    w.h.node.store().entries().flush().await.unwrap();
    drain(&w).await;
    let mail = std::fs::read_to_string(&w.h.mail).unwrap();
    assert!(mail.contains("To: guard@example.com"), "{mail}");
    assert!(
        mail.contains("Subject: HQ: entry denied at "),
        "the plugin's subject: {mail}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "the endpoint did not subscribe to entries"
    );

    // The worker's counters: two deliveries taken, one refused, three mails, nothing left
    // waiting.
    let mut metrics = String::new();
    w.h.state.render_metrics(&mut metrics);
    for line in [
        "keyway_notification_outbox_depth 0",
        "keyway_notifications_sent_total{channel=\"webhook\"} 2",
        "keyway_notification_failures_total{channel=\"webhook\"} 1",
        "keyway_notifications_sent_total{channel=\"email\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    }

    // A test event reaches this endpoint, signed, and joins the history.
    let (code, queued) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/webhooks/{hook}/test"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(code, 202, "{queued}");
    drain(&w).await;
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    let (headers, body) = &requests[3];
    let event = verified(headers, body, &new_secret);
    assert_eq!(event["type"], "webhook.test", "{event}");
    assert_eq!(
        headers[keyway_api::DELIVERY_HEADER].to_str().unwrap(),
        queued["delivery"].to_string()
    );
    let (_, history) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{s}/webhooks/{hook}/deliveries"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(history["items"][0]["delivery"], queued["delivery"], "{history}");

    // Removed: its history goes with it.
    let (code, _) =
        w.h.call("DELETE", &format!("/v1/sites/{s}/webhooks/{hook}"), Some(&owner), None)
            .await;
    assert_eq!(code, 204);
    let (code, v) =
        w.h.call("GET", &format!("/v1/sites/{s}/webhooks/{hook}"), Some(&owner), None)
            .await;
    assert_eq!((code.as_u16(), v["code"].clone()), (404, json!("not_found")));
}

/// Bad webhook input: each refusal specific, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bad_input() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let theirs = endpoint(&w, w.other_site).await;
    let before = w.h.fingerprint().await;
    let create = format!("/v1/sites/{s}/webhooks");
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            create.clone(),
            Some(json!({"url": "http://127.0.0.1:9/x", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "http://169.254.169.254/latest", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "http://localhost/", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "http://[::1]/", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "https://u:p@example.com/", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "gopher://example.com/", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "https://example.com/", "events": []})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "https://example.com/", "events": ["Door Forced"]})),
            422,
            "invalid",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "https://example.com/", "events": "*"})),
            422,
            "invalid_body",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "https://example.com/", "events": ["*"], "secret": "mine"})),
            422,
            "invalid_body",
        ),
        (
            "POST",
            create.clone(),
            Some(json!({"url": "https://ex\u{202e}ample.com/", "events": ["*"]})),
            422,
            "invalid",
        ),
        (
            "GET",
            format!("/v1/sites/{s}/webhooks/{theirs}"),
            None,
            404,
            "not_found",
        ),
        (
            "DELETE",
            format!("/v1/sites/{s}/webhooks/{theirs}"),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/v1/sites/{s}/webhooks/{theirs}/resume"),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/v1/sites/{s}/webhooks/{theirs}/secret"),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/v1/sites/{s}/webhooks/{theirs}/deliveries"),
            None,
            404,
            "not_found",
        ),
        ("GET", format!("/v1/sites/{s}/webhooks/999999"), None, 404, "not_found"),
        ("GET", format!("/v1/sites/{s}/webhooks/x"), None, 400, "bad_path"),
        ("GET", format!("/v1/sites/{s}/webhooks?limit=0"), None, 400, "bad_query"),
        (
            "GET",
            format!("/v1/sites/{s}/webhooks?cursor=zz"),
            None,
            400,
            "bad_cursor",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, want, code) in cases {
        let (status, answer) = w.h.call(method, &path, Some(&owner), body.clone()).await;
        if status.as_u16() != want || answer["code"] != code {
            failures.push(format!(
                "{method} {path} {body:?}: got {status} {answer}, want {want} {code}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(w.h.fingerprint().await, before, "nothing was stored");
    assert!(
        w.h.node
            .store()
            .notifications()
            .webhooks(w.site)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A voucher at 90% of its cap queues `voucher.near_cap` once, as the count crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voucher_near_its_cap_is_an_event_once() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let (status, v) =
        w.h.call(
            "POST",
            "/v1/sites",
            Some(&owner),
            Some(json!({"name": "Annex", "time_zone": "UTC"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let site = SiteId(u32::try_from(v["site"]["id"].as_u64().unwrap()).unwrap());
    let store = w.h.node.store();
    store
        .memberships()
        .create_voucher("test", "TEN-1", 10, 10, None, None, jiff::Timestamp::now())
        .await
        .unwrap();
    store
        .memberships()
        .redeem_voucher("test", "TEN-1", site, crate::t(0))
        .await
        .unwrap();
    for n in 0..10 {
        let (status, v) =
            w.h.call(
                "POST",
                &format!("/v1/sites/{}/people", site.0),
                Some(&owner),
                Some(json!({"name": format!("P{n}")})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    let queued = store
        .notifications()
        .claim(crate::t(253_402_207_000), crate::t(253_402_207_100), 100)
        .await
        .unwrap();
    let near: Vec<_> = queued.iter().filter(|i| i.target == "voucher.near_cap").collect();
    assert_eq!(near.len(), 1, "{queued:?}");
    assert_eq!(near[0].site, site);
    let event: Value = serde_json::from_str(&near[0].payload).unwrap();
    assert_eq!(
        (event["data"]["count"].clone(), event["data"]["max"].clone()),
        (json!(9), json!(10)),
        "{event}"
    );
}

/// A block reaches whoever listens for it through the notify plugin, as the ABI's
/// administrative change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_mailed_through_the_notify_plugin() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let (code, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/notifications"),
            Some(&owner),
            Some(json!({"event_kind": "person.*", "channel": "email", "target": "guard@example.com"})),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let person = w.h.person(w.site).await;
    let (code, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{s}/people/{}/block", person.0),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    drain(&w).await;
    let mail = std::fs::read_to_string(&w.h.mail).unwrap();
    assert!(mail.contains("To: guard@example.com"), "{mail}");
    assert!(
        mail.contains("Subject: HQ: administrative change"),
        "the plugin's subject: {mail}"
    );
    assert!(mail.contains("person.blocked"), "{mail}");
}
