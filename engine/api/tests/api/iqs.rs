//! IQs over HTTP: their rows of the authorisation matrix, the requests the matrix and the
//! bad-input tests make of them, and their stories (registration and enrolment codes,
//! pairing doors, the state list, reset and removal closing sessions, activation PINs,
//! firmware assignment, offline access).

use crate::support::*;
use keyway_core::*;
use keyway_node::{BoxFuture, CommandOutcome, DoorCommand, DoorCommands, FirmwareOffer, IqState, OfflineListSize};
use serde_json::{Value, json};
use std::sync::Mutex;

const U: u16 = 401;
const F: u16 = 403;
const N: u16 = 404;

/// Rows of the authorisation matrix (callers in the order of `matrix::MATRIX`).
#[rustfmt::skip]
pub const ROWS: &[(&str, [u16; 10])] = &[
    ("POST /v1/sites/{site}/iqs",                                [U, F, F, 201, 201, N, N, F, F, 201]),
    ("GET /v1/sites/{site}/iqs",                                 [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("GET /v1/sites/{site}/iqs/{iq}",                            [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PATCH /v1/sites/{site}/iqs/{iq}",                          [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/iqs/{iq}",                         [U, F, F, F, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/iqs/{iq}/enrolment-code",            [U, F, F, 201, 201, N, N, F, F, 201]),
    ("POST /v1/sites/{site}/iqs/{iq}/reset",                     [U, F, F, F, 200, N, N, F, F, 200]),
    ("PUT /v1/sites/{site}/doors/{door}/iq",                     [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/iqs/{iq}/activations",                [U, F, F, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/iqs/{iq}/activation",                 [U, 200, 200, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/iqs/{iq}/activations/{person}",    [U, F, F, 204, 204, N, N, F, F, 204]),
    ("PUT /v1/sites/{site}/iqs/{iq}/firmware",                   [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/firmware",                                         [U, 200, 200, 200, 200, 200, 200, 200, F, 200]),
    // Only an IQ's download token opens it: sessions and API tokens are refused.
    ("GET /v1/firmware/download",                                [U, U, U, U, U, U, U, U, U, U]),
    ("PUT /v1/sites/{site}/credentials/{credential}/offline-access", [U, F, F, 200, 200, N, N, F, F, 200]),
];

/// A fresh IQ of `site` with a unique serial, model `IQ2`.
pub async fn iq(w: &World, site: SiteId) -> IqId {
    let store = w.h.node.store();
    let id = IqId(
        store
            .model()
            .create("test", Record::Iq(IqRecord { id: IqId(0), site }))
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    store
        .devices()
        .set_details("test", id, "IQ2", &format!("SN-T{}", unique()), jiff::Timestamp::now())
        .await
        .unwrap();
    id
}

/// The body of `route` (and its path filled in) for the matrix and the bad-input tests;
/// `None` for routes that are not this module's or take no body.
pub async fn body_for(w: &World, route: &str, who: Who, path: &mut String) -> Option<Value> {
    let site = w.site;
    let store = w.h.node.store();
    match route {
        "POST /v1/sites/{site}/iqs" => {
            Some(json!({"name": "Front IQ", "model": "IQ2", "serial": format!("SN-M{}", unique())}))
        }
        "GET /v1/sites/{site}/iqs/{iq}"
        | "DELETE /v1/sites/{site}/iqs/{iq}"
        | "POST /v1/sites/{site}/iqs/{iq}/enrolment-code"
        | "POST /v1/sites/{site}/iqs/{iq}/reset"
        | "GET /v1/sites/{site}/iqs/{iq}/activations" => {
            *path = path.replace("{iq}", &iq(w, site).await.0.to_string());
            None
        }
        "PATCH /v1/sites/{site}/iqs/{iq}" => {
            *path = path.replace("{iq}", &iq(w, site).await.0.to_string());
            Some(json!({"name": "Renamed IQ"}))
        }
        "PUT /v1/sites/{site}/doors/{door}/iq" => {
            let door = w.h.door(site).await;
            *path = path.replace("{door}", &door.0.to_string());
            Some(json!({"iq": iq(w, site).await.0}))
        }
        "PUT /v1/sites/{site}/iqs/{iq}/activation" => {
            // The caller's own person: link one to their membership first (tokens act for
            // the owner).
            let account = w.account(who);
            if let Some(m) = store
                .memberships()
                .get(site, keyway_store::AccountId(account))
                .await
                .unwrap()
                && m.person.is_none()
            {
                let person = w.h.person(site).await;
                store
                    .memberships()
                    .put(
                        "test",
                        site,
                        keyway_store::AccountId(account),
                        m.role,
                        Some(person),
                        jiff::Timestamp::now(),
                    )
                    .await
                    .unwrap();
            }
            *path = path.replace("{iq}", &iq(w, site).await.0.to_string());
            Some(json!({"pin": "4821"}))
        }
        "DELETE /v1/sites/{site}/iqs/{iq}/activations/{person}" => {
            let iq = iq(w, site).await;
            let person = w.h.person(site).await;
            store
                .devices()
                .set_pin("test", iq, person, "1234", jiff::Timestamp::now())
                .await
                .unwrap();
            *path = path
                .replace("{iq}", &iq.0.to_string())
                .replace("{person}", &person.0.to_string());
            None
        }
        "PUT /v1/sites/{site}/iqs/{iq}/firmware" => {
            let file = store
                .devices()
                .upload_firmware(
                    "test",
                    "IQ2",
                    &format!("9.{}", unique()),
                    b"image",
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
            *path = path.replace("{iq}", &iq(w, site).await.0.to_string());
            Some(json!({"firmware": file.id}))
        }
        "PUT /v1/sites/{site}/credentials/{credential}/offline-access" => {
            let c =
                w.h.credential(site, (0x4000_0000u32 + unique()).to_be_bytes().to_vec(), None)
                    .await;
            *path = path.replace("{credential}", &c.0.to_string());
            Some(json!({"enabled": true}))
        }
        _ => None,
    }
}

/// Door commands of a fake link: IQ states set by the test, sessions counted.
#[derive(Debug, Default)]
struct FakeLink {
    states: Mutex<Vec<(IqId, IqState)>>,
    sessions: Mutex<Vec<IqId>>,
    offers: Mutex<Vec<(IqId, FirmwareOffer)>>,
}

impl DoorCommands for FakeLink {
    fn send(&self, _iq: IqId, _door: DoorId, _command: DoorCommand) -> BoxFuture<'_, CommandOutcome> {
        Box::pin(async { CommandOutcome::Delivered })
    }

    fn state(&self, iq: IqId) -> IqState {
        let states = self.states.lock().unwrap();
        states
            .iter()
            .find(|(i, _)| *i == iq)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    fn close_sessions(&self, iq: IqId) -> usize {
        let mut sessions = self.sessions.lock().unwrap();
        let before = sessions.len();
        sessions.retain(|i| *i != iq);
        before - sessions.len()
    }

    fn offer_firmware(&self, iq: IqId, offer: &FirmwareOffer) -> bool {
        let online = self.sessions.lock().unwrap().contains(&iq);
        if online {
            self.offers.lock().unwrap().push((iq, offer.clone()));
        }
        online
    }
}

async fn register(w: &World, bearer: &str, serial: &str) -> Value {
    let (s, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{}/iqs", w.site.0),
            Some(bearer),
            Some(json!({"name": "Lobby IQ", "model": "IQ2", "serial": serial})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_an_iq_gives_a_code_the_link_redeems_once() {
    let w = World::new().await;
    let admin = w.bearer(Who::Admin).await.unwrap();
    let v = register(&w, &admin, "SN-0001").await;
    let id = IqId(v["iq"]["id"].as_u64().unwrap() as u32);
    assert_eq!(v["iq"]["name"], "Lobby IQ");
    assert_eq!(v["iq"]["model"], "IQ2");
    assert_eq!(v["iq"]["serial"], "SN-0001");
    assert_eq!(v["iq"]["enrolled"], false);
    assert_eq!(v["iq"]["online"], false);
    assert!(v["revision"].as_u64().unwrap() > 0);
    let code = v["enrolment"]["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), keyway_store::enrolment_code::CODE_LEN);
    // No link runs in this test, so there is nothing to dial.
    assert!(v["enrolment"]["link"].is_null(), "{v}");
    // The code is stored hashed, and redeems once, for this IQ.
    let store = w.h.node.store();
    let hash = keyway_store::enrolment_code::hash_code(&code);
    let now = jiff::Timestamp::now().as_second();
    assert_eq!(
        store
            .devices()
            .redeem_enrolment_code(&hash, crate::t(now))
            .await
            .unwrap(),
        Some((w.site, id))
    );
    assert_eq!(
        store
            .devices()
            .redeem_enrolment_code(&hash, crate::t(now))
            .await
            .unwrap(),
        None
    );
    // Nothing in the audit log carries the code.
    let audit = serde_json::to_string(
        &store
            .model()
            .audit(None)
            .await
            .unwrap()
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!audit.contains(&code), "the enrolment code leaked into the audit log");
    // Once a certificate is recorded the IQ is enrolled, and a new code needs a reset.
    store
        .devices()
        .record_certificate("test", id, "0abc", crate::t(now + 3600), jiff::Timestamp::now())
        .await
        .unwrap();
    let path = format!("/v1/sites/{}/iqs/{}", w.site.0, id.0);
    let (_, v) = w.h.call("GET", &path, Some(&admin), None).await;
    assert_eq!(v["enrolled"], true, "{v}");
    let (s, v) =
        w.h.call("POST", &format!("{path}/enrolment-code"), Some(&admin), None)
            .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (409, Some("enrolled")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refusals_leave_nothing_behind() {
    let w = World::new().await;
    let admin = w.bearer(Who::Admin).await.unwrap();
    register(&w, &admin, "SN-DUP").await;
    let iqs = format!("/v1/sites/{}/iqs", w.site.0);
    let before = w.h.node.store().devices().of_site(w.site).await.unwrap().len();
    // (body, status, code)
    let cases = [
        (
            json!({"name": "B", "model": "IQ2", "serial": "SN-DUP"}),
            409,
            "duplicate",
        ),
        (json!({"name": "B", "model": "IQ 2", "serial": "SN-X1"}), 422, "invalid"),
        (json!({"name": "B", "model": "IQ2", "serial": ""}), 422, "invalid"),
        (
            json!({"name": "B", "model": "IQ2", "serial": "S".repeat(65)}),
            422,
            "invalid",
        ),
        (
            json!({"name": "B", "model": "IQ2", "serial": "SN\u{0}1"}),
            422,
            "invalid",
        ),
        (json!({"name": "", "model": "IQ2", "serial": "SN-X2"}), 422, "invalid"),
        (json!({"name": "B", "model": "IQ2"}), 422, "invalid_body"),
        (
            json!({"name": "B", "model": "IQ2", "serial": "SN-X3", "pin": "1"}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v) = w.h.call("POST", &iqs, Some(&admin), Some(body.clone())).await;
        assert_eq!(
            (s.as_u16(), v["code"].as_str().unwrap_or("")),
            (status, code),
            "{body}: {v}"
        );
    }
    assert_eq!(w.h.node.store().devices().of_site(w.site).await.unwrap().len(), before);
    let snapshot = w.h.node.snapshot().load_full();
    let in_model = snapshot
        .records()
        .into_iter()
        .filter(|r| matches!(r, Record::Iq(i) if i.site == w.site))
        .count();
    assert_eq!(
        in_model, before,
        "a refused registration left an IQ in the decision model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doors_pair_and_the_list_shows_state_as_the_link_knows_it() {
    let w = World::new().await;
    let link = std::sync::Arc::new(FakeLink::default());
    w.h.node.set_door_commands(link.clone());
    let admin = w.bearer(Who::Admin).await.unwrap();
    let site = w.site.0;
    let a = IqId(register(&w, &admin, "SN-A").await["iq"]["id"].as_u64().unwrap() as u32);
    let b = IqId(register(&w, &admin, "SN-B").await["iq"]["id"].as_u64().unwrap() as u32);
    let foreign = iq(&w, w.other_site).await;
    link.states.lock().unwrap().push((
        a,
        IqState {
            online: true,
            last_seen: Some(1_700_000_000),
            firmware: Some("2.4.1".into()),
            offline_list: Some(OfflineListSize {
                revision: 7,
                tags: 10_000,
                remote_users: 12,
                tags_left_out: 3,
                remote_users_left_out: 0,
            }),
        },
    ));
    let pair = |door: DoorId, iq: Option<u32>| {
        let admin = admin.clone();
        let w = &w;
        async move {
            w.h.call(
                "PUT",
                &format!("/v1/sites/{site}/doors/{}/iq", door.0),
                Some(&admin),
                Some(json!({ "iq": iq })),
            )
            .await
        }
    };
    let (s, v) = pair(w.door, Some(a.0)).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(w.h.node.snapshot().load().door_record(w.door).unwrap().iq, Some(a));
    // Another site's IQ and an IQ that does not exist are refused; the pairing holds.
    for bad in [foreign.0, 999_999] {
        let (s, v) = pair(w.door, Some(bad)).await;
        assert_eq!(s.as_u16(), 422, "{v}");
    }
    assert_eq!(w.h.node.snapshot().load().door_record(w.door).unwrap().iq, Some(a));

    let (s, v) =
        w.h.call("GET", &format!("/v1/sites/{site}/iqs"), Some(&admin), None)
            .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    let first = &items[0];
    assert_eq!(first["id"], a.0);
    assert_eq!(first["doors"], json!([w.door.0]));
    assert_eq!(first["online"], true);
    assert_eq!(first["firmware_reported"], "2.4.1");
    assert_eq!(
        first["offline_list"],
        json!({"revision": 7, "tags": 10_000, "remote_users": 12, "tags_capacity": 10_000,
               "remote_users_capacity": 10_000, "tags_left_out": 3, "remote_users_left_out": 0})
    );
    assert_eq!(items[1]["id"], b.0);
    assert_eq!(items[1]["online"], false);
    assert!(items[1]["offline_list"].is_null());
    // Pagination: one at a time.
    let (_, p1) =
        w.h.call("GET", &format!("/v1/sites/{site}/iqs?limit=1"), Some(&admin), None)
            .await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) =
        w.h.call(
            "GET",
            &format!("/v1/sites/{site}/iqs?limit=1&cursor={cursor}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(p2["items"][0]["id"], b.0);
    assert!(p2["next_cursor"].is_null());

    // An IQ with doors is not removed; once they move, it is, and its sessions close.
    link.sessions.lock().unwrap().extend([a, a, b]);
    let owner = w.bearer(Who::Owner).await.unwrap();
    let (s, v) =
        w.h.call("DELETE", &format!("/v1/sites/{site}/iqs/{}", a.0), Some(&owner), None)
            .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (409, Some("in_use")), "{v}");
    assert_eq!(
        link.sessions.lock().unwrap().len(),
        3,
        "a refused removal closed sessions"
    );
    let (s, v) = pair(w.door, Some(b.0)).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let (s, v) =
        w.h.call("DELETE", &format!("/v1/sites/{site}/iqs/{}", a.0), Some(&owner), None)
            .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(*link.sessions.lock().unwrap(), vec![b]);
    assert!(w.h.node.store().devices().iq(a).await.unwrap().is_none());
    assert!(w.h.node.snapshot().load().iq_record(a).is_none());
    let (s, _) =
        w.h.call("GET", &format!("/v1/sites/{site}/iqs/{}", a.0), Some(&admin), None)
            .await;
    assert_eq!(s.as_u16(), 404);
    // Unpairing.
    let (s, v) = pair(w.door, None).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(w.h.node.snapshot().load().door_record(w.door).unwrap().iq, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_activate_reset_per_person_and_per_iq() {
    let w = World::new().await;
    let link = std::sync::Arc::new(FakeLink::default());
    w.h.node.set_door_commands(link.clone());
    let store = w.h.node.store();
    let site = w.site;
    let admin = w.bearer(Who::Admin).await.unwrap();
    let owner = w.bearer(Who::Owner).await.unwrap();
    let basic = w.bearer(Who::Basic).await.unwrap();
    let iq = iq(&w, site).await;
    let base = format!("/v1/sites/{}/iqs/{}", site.0, iq.0);

    // A member without a person record has nothing to activate.
    let (s, v) =
        w.h.call(
            "PUT",
            &format!("{base}/activation"),
            Some(&basic),
            Some(json!({"pin": "4821"})),
        )
        .await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (409, Some("no_person")), "{v}");
    let person = w.h.person(site).await;
    store
        .memberships()
        .put(
            "test",
            site,
            keyway_store::AccountId(w.account(Who::Basic)),
            RoleId(3),
            Some(person),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    for (pin, status) in [
        ("12", 422),
        ("123456789", 422),
        ("12a4", 422),
        ("４８２１", 422),
        ("4821", 200),
    ] {
        let (s, v) =
            w.h.call(
                "PUT",
                &format!("{base}/activation"),
                Some(&basic),
                Some(json!({"pin": pin})),
            )
            .await;
        assert_eq!(s.as_u16(), status, "{pin}: {v}");
    }
    let now = jiff::Timestamp::now().as_second();
    assert_eq!(
        store
            .devices()
            .check_pin(iq, person, "4821", crate::t(now))
            .await
            .unwrap(),
        keyway_store::PinCheck::Accepted
    );

    // The admin sees it, and resets it: the person activates again.
    let (s, v) =
        w.h.call("GET", &format!("{base}/activations"), Some(&admin), None)
            .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["items"][0]["person"], person.0);
    assert!(v["items"][0]["activated_at"].is_i64(), "{v}");
    assert!(!v.to_string().contains("4821"));
    let (s, v) =
        w.h.call(
            "DELETE",
            &format!("{base}/activations/{}", person.0),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 204, "{v}");
    assert_eq!(
        store
            .devices()
            .check_pin(iq, person, "4821", crate::t(now))
            .await
            .unwrap(),
        keyway_store::PinCheck::NotSet
    );
    let (s, _) =
        w.h.call(
            "DELETE",
            &format!("{base}/activations/{}", person.0),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 404);

    // The owner's reset: every activation goes, the certificate is revoked, sessions
    // close, and a new code is handed out.
    let (s, _) =
        w.h.call(
            "PUT",
            &format!("{base}/activation"),
            Some(&basic),
            Some(json!({"pin": "5555"})),
        )
        .await;
    assert_eq!(s.as_u16(), 200);
    let other = w.h.person(site).await;
    store
        .devices()
        .set_pin("test", iq, other, "7777", jiff::Timestamp::now())
        .await
        .unwrap();
    store
        .devices()
        .record_certificate("test", iq, "0abc", crate::t(now + 3600), jiff::Timestamp::now())
        .await
        .unwrap();
    link.sessions.lock().unwrap().push(iq);
    let (s, v) = w.h.call("POST", &format!("{base}/reset"), Some(&admin), None).await;
    assert_eq!(s.as_u16(), 403, "a site admin may not reset an IQ: {v}");
    let (s, v) = w.h.call("POST", &format!("{base}/reset"), Some(&owner), None).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["activations_removed"], 2);
    assert_eq!(v["sessions_closed"], 1);
    // The reset's mark in the change log, which closes sessions on other nodes.
    assert_eq!(v["revision"].as_u64(), Some(w.h.node.snapshot().load().revision().0));
    assert_eq!(v["iq"]["enrolled"], false);
    assert_eq!(v["enrolment"]["code"].as_str().unwrap().len(), 20);
    assert!(store.devices().certificate(iq).await.unwrap().is_none());
    assert!(store.devices().activations(iq).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_is_assigned_only_for_the_iq_model_and_offered_to_it() {
    let w = World::new().await;
    let link = std::sync::Arc::new(FakeLink::default());
    w.h.node.set_door_commands(link.clone());
    let store = w.h.node.store();
    let admin = w.bearer(Who::Admin).await.unwrap();
    let iq = iq(&w, w.site).await;
    let right = store
        .devices()
        .upload_firmware("test", "IQ2", "3.0.0", b"new image", jiff::Timestamp::now())
        .await
        .unwrap();
    let wrong = store
        .devices()
        .upload_firmware("test", "IQ1", "3.0.0", b"old model", jiff::Timestamp::now())
        .await
        .unwrap();
    let path = format!("/v1/sites/{}/iqs/{}/firmware", w.site.0, iq.0);
    // (firmware, status)
    for (firmware, status) in [
        (json!(wrong.id), 422),
        (json!(987_654), 422),
        (json!("x"), 422),
        (json!(right.id), 200),
    ] {
        let (s, v) =
            w.h.call("PUT", &path, Some(&admin), Some(json!({ "firmware": firmware })))
                .await;
        assert_eq!(s.as_u16(), status, "{firmware}: {v}");
    }
    assert_eq!(store.devices().iq(iq).await.unwrap().unwrap().firmware, Some(right.id));
    // Offline: not offered now. Online: offered, with the file's digest.
    assert!(link.offers.lock().unwrap().is_empty());
    link.sessions.lock().unwrap().push(iq);
    let (s, v) =
        w.h.call("PUT", &path, Some(&admin), Some(json!({"firmware": right.id})))
            .await;
    assert_eq!((s.as_u16(), v["offered"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["iq"]["firmware_assigned"], right.id.get());
    let offers = link.offers.lock().unwrap().clone();
    assert_eq!(offers.len(), 1);
    let (offered_to, offer) = &offers[0];
    assert_eq!(*offered_to, iq);
    assert_eq!(
        (offer.version.as_str(), offer.size, offer.sha256.as_str()),
        ("3.0.0", 9, right.sha256.as_str())
    );
    assert!(
        offer.download_token.as_deref().is_some_and(|t| t.starts_with("kwf_")),
        "the offer carries an HTTP download token"
    );
    let (_, v) = w.h.call("GET", "/v1/firmware?model=IQ2", Some(&admin), None).await;
    let ids: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert!(ids.contains(&right.id.get()) && !ids.contains(&wrong.id.get()), "{v}");
    // Unassigning.
    let (s, v) =
        w.h.call("PUT", &path, Some(&admin), Some(json!({"firmware": null})))
            .await;
    assert_eq!((s.as_u16(), v["offered"].as_bool()), (200, Some(false)), "{v}");
    assert!(v["iq"]["firmware_assigned"].is_null());
    // A deleted file is unassigned with it.
    w.h.call("PUT", &path, Some(&admin), Some(json!({"firmware": right.id})))
        .await;
    store
        .devices()
        .delete_firmware("test", right.id, jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!(store.devices().iq(iq).await.unwrap().unwrap().firmware, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_access_toggles_with_a_revision() {
    let w = World::new().await;
    let admin = w.bearer(Who::Admin).await.unwrap();
    let c = w.h.credential(w.site, vec![0x0a, 0x0b, 0x0c, 0x0d], None).await;
    let path = format!("/v1/sites/{}/credentials/{}/offline-access", w.site.0, c.0);
    for enabled in [true, false, true] {
        let (s, v) =
            w.h.call("PUT", &path, Some(&admin), Some(json!({ "enabled": enabled })))
                .await;
        assert_eq!(s.as_u16(), 200, "{v}");
        assert!(v["revision"].as_u64().unwrap() > 0);
        assert_eq!(
            w.h.node.snapshot().load().credential_record(c).unwrap().offline_access,
            enabled
        );
    }
    for bad in [json!({"enabled": "yes"}), json!({}), json!({"enabled": true, "x": 1})] {
        let (s, v) = w.h.call("PUT", &path, Some(&admin), Some(bad.clone())).await;
        assert_eq!(s.as_u16(), 422, "{bad}: {v}");
    }
    assert!(w.h.node.snapshot().load().credential_record(c).unwrap().offline_access);
}

/// A site whose IQ is reached by 10,001 tags (one more than it holds): the answers of the
/// writes that change which keys fit name the keys they push out, and the core's plan
/// agrees with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_pushes_keys_out_of_an_offline_list_says_so() {
    let w = World::new().await;
    let admin = w.bearer(Who::Admin).await.unwrap();
    let site = w.site.0;
    let store = w.h.node.store();
    let gateway = iq(&w, w.site).await;
    let (s, v) =
        w.h.call(
            "PUT",
            &format!("/v1/sites/{site}/doors/{}/iq", w.door.0),
            Some(&admin),
            Some(json!({"iq": gateway.0})),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert!(v.get("pushed_out").is_none(), "nothing reaches the IQ yet: {v}");
    let person = w.h.person(w.site).await;
    let blocked = w.h.person(w.site).await;
    // Ids far above what the site holds, so the tags come in a known order.
    let tags = IQ_MAX_TAGS + 1;
    let first = 100_000u32;
    let records: Vec<Record> = (0..tags)
        .map(|i| {
            Record::Credential(CredentialRecord {
                id: CredentialId(first + i),
                site: w.site,
                kind: CredentialKind::Tag,
                secret: (first + i).to_be_bytes().to_vec(),
                owner: Some(person),
                valid_from: None,
                valid_until: None,
                offline_access: false,
                revoked: false,
            })
        })
        .collect();
    store.model().import("test", records).await.unwrap();
    let last = first + tags - 1;
    let group = json!({"name": "All", "doors": [w.door.0], "members": [person.0, blocked.0]});
    let (s, v) =
        w.h.call("POST", &format!("/v1/sites/{site}/groups"), Some(&admin), Some(group))
            .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    assert_eq!(
        v["pushed_out"],
        json!([{"iq": gateway.0, "count": 1, "credentials": [last], "left_out": 1}]),
        "the group brought 10,001 tags to the IQ: the last by id does not fit"
    );

    let cases: Vec<(&str, &str, String, Option<Value>, Value)> = vec![
        (
            "a new key with offline access goes first and pushes the next-to-last out",
            "POST",
            format!("/v1/sites/{site}/credentials"),
            Some(json!({"kind": "tag", "value": "0a0b0c0d", "person": person.0, "offline_access": true})),
            json!([{"iq": gateway.0, "count": 1, "credentials": [last - 1], "left_out": 2}]),
        ),
        (
            "offline access for a key left out brings it in and pushes another out",
            "PUT",
            format!("/v1/sites/{site}/credentials/{last}/offline-access"),
            Some(json!({"enabled": true})),
            json!([{"iq": gateway.0, "count": 1, "credentials": [last - 2], "left_out": 2}]),
        ),
        (
            "revoking a key frees a place: nothing pushed out",
            "DELETE",
            format!("/v1/sites/{site}/credentials/{first}"),
            None,
            Value::Null,
        ),
    ];
    for (what, method, path, body, want) in cases {
        let (s, v) = w.h.call(method, &path, Some(&admin), body).await;
        assert!(s.is_success(), "{what}: {s} {v}");
        assert_eq!(v["pushed_out"], want, "{what}: {v}");
    }
    // A blocked person's key with offline access takes no place; unblocking them does.
    let (s, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{site}/people/{}/block", blocked.0),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let (s, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{site}/credentials"),
            Some(&admin),
            Some(json!({"kind": "tag", "value": "0e0f1011", "person": blocked.0, "offline_access": true})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    assert!(
        v.get("pushed_out").is_none(),
        "a blocked person's key is not listed: {v}"
    );
    let (s, v) =
        w.h.call(
            "POST",
            &format!("/v1/sites/{site}/people/{}/unblock", blocked.0),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let pushed = v["pushed_out"][0]["credentials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pushed.len(), 1, "unblocking brings one key with offline access in: {v}");
    // The answers agree with the plan the link sends from.
    let plan = w.h.node.snapshot().load().offline_plan(gateway).unwrap();
    assert_eq!(plan.tags, IQ_MAX_TAGS);
    assert_eq!(plan.left_out, [CredentialId(last - 2), CredentialId(last - 1)]);
    assert_eq!(pushed[0], json!(last - 2));
}

/// An IQ downloads its assigned firmware over HTTP with the token of its offer: whole,
/// resumed with a range, and refused once the token no longer fits (another file
/// assigned, a wrong or missing token, a range past the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iq_downloads_its_firmware_over_http_with_its_token() {
    let w = World::new().await;
    let store = w.h.node.store();
    let gateway = iq(&w, w.site).await;
    let image: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let file = store
        .devices()
        .upload_firmware("test", "IQ2", "4.0.0", &image, jiff::Timestamp::now())
        .await
        .unwrap();
    store
        .devices()
        .assign_firmware("test", gateway, Some(file.id), jiff::Timestamp::now())
        .await
        .unwrap();
    let offer = w.h.node.firmware_offer(gateway, file.clone()).await;
    let token = offer.download_token.clone().expect("a download token");
    assert!(token.starts_with("kwf_"));

    let get = |token: Option<String>, range: Option<&'static str>| {
        let w = &w;
        async move {
            let mut b = axum::http::Request::builder().uri("/v1/firmware/download");
            if let Some(t) = token {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            if let Some(r) = range {
                b = b.header("range", r);
            }
            let response = tower::ServiceExt::oneshot(w.h.app.clone(), b.body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, headers, body.to_vec())
        }
    };
    let (s, h, body) = get(Some(token.clone()), None).await;
    assert_eq!(s, 200);
    assert_eq!(body, image);
    assert_eq!(h["etag"], format!("\"{}\"", file.sha256).as_str());
    assert_eq!(h["content-type"], "application/octet-stream");

    // (range, status, the bytes expected, content-range)
    let cases: [(&'static str, u16, std::ops::Range<usize>, Option<&str>); 5] = [
        ("bytes=4000-", 206, 4000..10_000, Some("bytes 4000-9999/10000")),
        ("bytes=0-99", 206, 0..100, Some("bytes 0-99/10000")),
        ("bytes=-10", 206, 9990..10_000, Some("bytes 9990-9999/10000")),
        ("bytes=9999-20000", 206, 9999..10_000, Some("bytes 9999-9999/10000")),
        ("bytes=0-1,5-6", 200, 0..10_000, None),
    ];
    for (range, status, want, content_range) in cases {
        let (s, h, body) = get(Some(token.clone()), Some(range)).await;
        assert_eq!(s, status, "{range}");
        assert_eq!(body, image[want].to_vec(), "{range}");
        assert_eq!(
            h.get("content-range").and_then(|v| v.to_str().ok()),
            content_range,
            "{range}"
        );
    }
    let (s, h, body) = get(Some(token.clone()), Some("bytes=10000-")).await;
    assert_eq!(s, 416);
    assert_eq!(h["content-range"], "bytes */10000");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "range_not_satisfiable"
    );

    // Refused: no token, a session, a made-up token; then the real one once another file
    // is assigned.
    let session = w.bearer(Who::Owner).await.unwrap();
    for bad in [None, Some(session), Some(format!("kwf_{}", "0".repeat(64)))] {
        let (s, _, body) = get(bad.clone(), None).await;
        assert_eq!(s, 401, "{bad:?}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["code"],
            "unauthenticated"
        );
    }
    let newer = store
        .devices()
        .upload_firmware("test", "IQ2", "4.0.1", b"newer", jiff::Timestamp::now())
        .await
        .unwrap();
    store
        .devices()
        .assign_firmware("test", gateway, Some(newer.id), jiff::Timestamp::now())
        .await
        .unwrap();
    let (s, _, _) = get(Some(token), None).await;
    assert_eq!(s, 401, "the token was for the file assigned before");
    let fresh = w.h.node.firmware_offer(gateway, newer).await.download_token.unwrap();
    let (s, _, body) = get(Some(fresh), None).await;
    assert_eq!((s, body), (200, b"newer".to_vec()));
    // An IQ with nothing assigned gets no token.
    let bare = iq(&w, w.site).await;
    assert!(w.h.node.firmware_offer(bare, file).await.download_token.is_none());
}
