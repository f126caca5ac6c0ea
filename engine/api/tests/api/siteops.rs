//! Doors in operation, keys, incidents and the entries log beyond a page: their rows of
//! the authorisation matrix, the requests the matrix and the bad-input tests make of
//! them, and their stories (office mode, lockdown, remote open, unassigned tags and
//! invitations with a tag, incidents, CSV export, retention, the live stream, explained
//! decisions).

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keyway_core::*;
use keyway_node::{BoxFuture, CommandOutcome, DoorCommand, DoorCommands, IqState};
use keyway_store::{IncidentKind, NewIncident};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;
use tower::ServiceExt;

const U: u16 = 401;
const F: u16 = 403;
const N: u16 = 404;

/// Rows of the authorisation matrix (callers in the order of `matrix::MATRIX`).
#[rustfmt::skip]
pub const ROWS: &[(&str, [u16; 10])] = &[
    ("GET /v1/sites/{site}/doors/{door}",                        [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/doors/{door}/mode",                   [U, F, F, 200, 200, N, N, F, F, 200]),
    ("PUT /v1/sites/{site}/doors/{door}/lockdown",               [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/doors/{door}/lockdown",            [U, F, F, 200, 200, N, N, F, F, 200]),
    ("PUT /v1/sites/{site}/lockdown",                            [U, F, F, 200, 200, N, N, F, F, 200]),
    ("DELETE /v1/sites/{site}/lockdown",                         [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/doors/{door}/remote-open",           [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/credentials/unassigned",              [U, F, F, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/credentials/{credential}/person",     [U, F, F, 200, 200, N, N, F, F, 200]),
    ("POST /v1/sites/{site}/credentials/{credential}/restore",   [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/entries/export",                      [U, 200, 200, 200, 200, N, N, 200, F, 200]),
    ("GET /v1/sites/{site}/entries/retention",                   [U, F, 200, 200, 200, N, N, 200, F, 200]),
    ("PUT /v1/sites/{site}/entries/retention",                   [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/incidents",                           [U, F, 200, 200, 200, N, N, 200, F, 200]),
    ("POST /v1/sites/{site}/incidents/{incident}/acknowledge",   [U, F, F, 200, 200, N, N, F, F, 200]),
    ("GET /v1/sites/{site}/events",                              [U, 200, 200, 200, 200, N, N, 200, F, 200]),
];

fn fresh_tag() -> Vec<u8> {
    (0x3000_0000u32 + unique()).to_be_bytes().to_vec()
}

/// The body of `route` (and its path filled in) for the matrix and the bad-input tests;
/// `None` for routes that are not this module's or take no body.
pub async fn body_for(w: &World, route: &str, path: &mut String) -> Option<Value> {
    let site = w.site;
    let node = &w.h.node;
    match route {
        "GET /v1/sites/{site}/doors/{door}"
        | "PUT /v1/sites/{site}/doors/{door}/lockdown"
        | "DELETE /v1/sites/{site}/doors/{door}/lockdown"
        | "POST /v1/sites/{site}/doors/{door}/remote-open" => {
            *path = path.replace("{door}", &w.door.0.to_string());
            None
        }
        "PUT /v1/sites/{site}/doors/{door}/mode" => {
            *path = path.replace("{door}", &w.door.0.to_string());
            Some(json!({"mode": "office"}))
        }
        "PUT /v1/sites/{site}/credentials/{credential}/person" => {
            let c = w.h.credential(site, fresh_tag(), None).await;
            *path = path.replace("{credential}", &c.0.to_string());
            Some(json!({"person": w.h.person(site).await.0}))
        }
        "POST /v1/sites/{site}/credentials/{credential}/restore" => {
            let c = w.h.credential(site, fresh_tag(), None).await;
            node.store()
                .model()
                .write("test", Change::RevokeCredential(c))
                .await
                .unwrap();
            *path = path.replace("{credential}", &c.0.to_string());
            None
        }
        "PUT /v1/sites/{site}/entries/retention" => Some(json!({"days": 30})),
        "POST /v1/sites/{site}/incidents/{incident}/acknowledge" => {
            let i = node
                .raise_incident("test", new_incident(site, IncidentKind::Tamper, Some(w.door)))
                .await
                .unwrap();
            *path = path.replace("{incident}", &i.id.get().to_string());
            None
        }
        "GET /v1/sites/{site}/events" => {
            path.push_str("?follow=false");
            None
        }
        _ => None,
    }
}

fn new_incident(site: SiteId, kind: IncidentKind, door: Option<DoorId>) -> NewIncident {
    NewIncident {
        site,
        kind,
        door,
        iq: None,
        iq_seq: None,
        at: crate::t(jiff::Timestamp::now().as_second()),
        detail: "seen by a test".into(),
    }
}

/// Door commands that a fake IQ acknowledges, remembering what it was sent.
#[derive(Debug, Default)]
struct FakeIq {
    sent: Mutex<Vec<(IqId, DoorId, DoorCommand)>>,
}

impl DoorCommands for FakeIq {
    fn send(&self, iq: IqId, door: DoorId, command: DoorCommand) -> BoxFuture<'_, CommandOutcome> {
        self.sent.lock().unwrap().push((iq, door, command));
        Box::pin(async { CommandOutcome::Delivered })
    }

    fn state(&self, _iq: IqId) -> IqState {
        IqState::default()
    }

    fn close_sessions(&self, _iq: IqId) -> usize {
        0
    }

    fn offer_firmware(&self, _iq: IqId, _offer: &keyway_node::FirmwareOffer) -> bool {
        false
    }
}

struct Scene {
    w: World,
    owner: String,
    door: DoorId,
    /// A basic user's person (linked to the basic account), with tag `PERSON_TAG`.
    person: PersonId,
    /// A site admin's person (linked to the admin account), with tag `ADMIN_TAG`.
    admin_person: PersonId,
    group: GroupId,
}

const PERSON_TAG: &str = "0badc0de";
const ADMIN_TAG: &str = "0adadada";
const OTHER_TAG: &str = "0cccdddd";
const MONDAY_NINE: &str = "2026-11-23T09:00:00+01:00";
const SUNDAY_NINE: &str = "2026-11-22T09:00:00+01:00";

impl Scene {
    async fn new() -> Scene {
        let w = World::new().await;
        let owner = w.bearer(Who::Owner).await.unwrap();
        let store = w.h.node.store();
        let site = w.site;
        let door = w.door;
        let person = w.h.person(site).await;
        let admin_person = PersonId(
            store
                .model()
                .create(
                    "test",
                    Record::Person(PersonRecord {
                        id: PersonId(0),
                        site,
                        role: RoleId(1),
                        blocked: false,
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        );
        w.h.credential(site, hex::decode(PERSON_TAG).unwrap(), Some(person))
            .await;
        w.h.credential(site, hex::decode(ADMIN_TAG).unwrap(), Some(admin_person))
            .await;
        let other = w.h.person(site).await;
        w.h.credential(site, hex::decode(OTHER_TAG).unwrap(), Some(other)).await;
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
        store
            .memberships()
            .put(
                "test",
                site,
                keyway_store::AccountId(w.account(Who::Admin)),
                RoleId(1),
                Some(admin_person),
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        // Only the site admin's person has a right on the door.
        let group = GroupId(
            store
                .model()
                .create(
                    "test",
                    Record::Group(GroupRecord {
                        id: GroupId(0),
                        site,
                        doors: vec![door],
                        schedule: None,
                        members: vec![admin_person],
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        );
        Scene {
            w,
            owner,
            door,
            person,
            admin_person,
            group,
        }
    }

    fn site(&self) -> u32 {
        self.w.site.0
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.w.h.call(method, path, Some(&self.owner), body).await
    }

    /// The reason of a decision for `tag` at this scene's door at `at`.
    async fn reason(&self, tag: &str, at: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/v1/decide",
                Some(json!({
                    "site": self.site(), "door": self.door.0,
                    "credential": {"kind": "tag", "value": tag}, "at": at,
                })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["reason"].as_str().unwrap().to_owned()
    }

    /// GET `path` with `headers`, the status and the body as text.
    async fn get_text(&self, bearer: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut b = Request::builder()
            .method("GET")
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let response = self
            .w
            .h
            .app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }
}

/// The (event, id, data) of each event of an SSE body.
fn sse_events(text: &str) -> Vec<(String, String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            Some((event?, id?, data?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_mode_and_lockdown() {
    let sc = Scene::new().await;
    let s = sc.site();
    let d = sc.door.0;
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "no_right");
    assert_eq!(sc.reason(ADMIN_TAG, MONDAY_NINE).await, "granted");

    // Office mode by hand: every valid credential opens it; not delivered without a link.
    let (status, v) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/doors/{d}/mode"),
            Some(json!({"mode": "office"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["door"]["mode"], "office");
    assert!(v["revision"].as_u64().unwrap() > 0);
    assert_eq!(v["delivery"]["delivered"], false);
    assert!(v["delivery"]["reason"].as_str().unwrap().contains("IQ"), "{v}");
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "office_mode");

    // Scheduled: open to all while the schedule is open, normal otherwise.
    let (status, v) = sc
        .call(
            "POST",
            &format!("/v1/sites/{s}/schedules"),
            Some(json!({"periods": [{"days": ["workdays"], "start": "08:00", "end": "18:00"}]})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let schedule = v["id"].as_u64().unwrap();
    let (status, v) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/doors/{d}/mode"),
            Some(json!({"mode": "scheduled", "schedule": schedule})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["door"]["schedule"], schedule);
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "office_mode");
    assert_eq!(sc.reason(PERSON_TAG, SUNDAY_NINE).await, "no_right");

    // Refusals change nothing.
    let their_schedule = sc.w.h.schedule(sc.w.other_site).await;
    let before = sc.w.h.fingerprint().await;
    for (body, want, code) in [
        (json!({"mode": "scheduled"}), 422, "invalid"),
        (json!({"mode": "office", "schedule": schedule}), 422, "invalid"),
        (
            json!({"mode": "scheduled", "schedule": their_schedule.0}),
            404,
            "not_found",
        ),
        (json!({"mode": "scheduled", "schedule": 999_999}), 404, "not_found"),
        (json!({"mode": "open"}), 422, "invalid_body"),
    ] {
        let (status, v) = sc
            .call("PUT", &format!("/v1/sites/{s}/doors/{d}/mode"), Some(body.clone()))
            .await;
        assert_eq!(
            (status.as_u16(), v["code"].as_str().unwrap()),
            (want, code),
            "{body}: {v}"
        );
    }
    assert_eq!(sc.w.h.fingerprint().await, before);

    // Door lockdown overrides office mode; the exempt roles still pass on their rights.
    sc.call(
        "PUT",
        &format!("/v1/sites/{s}/doors/{d}/mode"),
        Some(json!({"mode": "office"})),
    )
    .await;
    let (status, v) = sc.call("PUT", &format!("/v1/sites/{s}/doors/{d}/lockdown"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["door"]["lockdown"], true);
    let exempt: Vec<&str> = v["door"]["lockdown_exempt_roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(exempt, ["owner", "site_admin"], "from the roles plugin");
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "lockdown");
    assert_eq!(sc.reason(ADMIN_TAG, MONDAY_NINE).await, "granted");
    // Lifting is one call.
    let (status, v) = sc
        .call("DELETE", &format!("/v1/sites/{s}/doors/{d}/lockdown"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["door"]["lockdown"], false);
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "office_mode");

    // Site lockdown: every door, one call each way, a delivery per door.
    let (status, v) = sc.call("PUT", &format!("/v1/sites/{s}/lockdown"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["lockdown"], true);
    let deliveries = v["deliveries"].as_array().unwrap();
    assert!(
        deliveries.iter().any(|x| x["door"] == d && x["delivered"] == false),
        "{v}"
    );
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "lockdown");
    let (_, state) = sc.call("GET", &format!("/v1/sites/{s}/doors/{d}"), None).await;
    assert_eq!(state["site_lockdown"], true, "{state}");
    let (status, v) = sc.call("DELETE", &format!("/v1/sites/{s}/lockdown"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "office_mode");

    // With an IQ that acknowledges, the refresh is delivered.
    let fake = std::sync::Arc::new(FakeIq::default());
    sc.w.h.node.set_door_commands(fake.clone());
    let store = sc.w.h.node.store();
    let iq = IqId(
        store
            .model()
            .create(
                "test",
                Record::Iq(IqRecord {
                    id: IqId(0),
                    site: sc.w.site,
                }),
            )
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    let Some(Record::Door(door)) = store.model().record(keyway_store::Target::Door(sc.door)).await.unwrap() else {
        panic!("no door")
    };
    store
        .model()
        .write("test", Change::PutDoor(DoorRecord { iq: Some(iq), ..door }))
        .await
        .unwrap();
    let (_, v) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/doors/{d}/mode"),
            Some(json!({"mode": "normal"})),
        )
        .await;
    assert_eq!(v["delivery"]["delivered"], true, "{v}");
    assert_eq!(v["door"]["iq"], iq.0);
    assert_eq!(*fake.sent.lock().unwrap(), [(iq, sc.door, DoorCommand::Refresh)]);
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "no_right");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_open_is_logged_audited_and_reports_delivery() {
    let sc = Scene::new().await;
    let s = sc.site();
    let d = sc.door.0;
    let admin = sc.w.bearer(Who::Admin).await.unwrap();

    // No link on this node: recorded, and reported as not delivered.
    let (status, v) =
        sc.w.h
            .call(
                "POST",
                &format!("/v1/sites/{s}/doors/{d}/remote-open"),
                Some(&admin),
                None,
            )
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], false);
    assert_eq!(v["person"], sc.admin_person.0);
    assert!(v["reason"].is_string(), "{v}");

    // Delivered through an IQ that acknowledges.
    let fake = std::sync::Arc::new(FakeIq::default());
    sc.w.h.node.set_door_commands(fake.clone());
    let store = sc.w.h.node.store();
    let iq = IqId(
        store
            .model()
            .create(
                "test",
                Record::Iq(IqRecord {
                    id: IqId(0),
                    site: sc.w.site,
                }),
            )
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    let Some(Record::Door(door)) = store.model().record(keyway_store::Target::Door(sc.door)).await.unwrap() else {
        panic!("no door")
    };
    store
        .model()
        .write("test", Change::PutDoor(DoorRecord { iq: Some(iq), ..door }))
        .await
        .unwrap();
    let (status, v) =
        sc.w.h
            .call(
                "POST",
                &format!("/v1/sites/{s}/doors/{d}/remote-open"),
                Some(&admin),
                None,
            )
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(*fake.sent.lock().unwrap(), [(iq, sc.door, DoorCommand::RemoteOpen)]);

    // Both are in the entries log as remote openings by that person, and audited.
    let (_, page) = sc.call("GET", &format!("/v1/sites/{s}/entries?door={d}"), None).await;
    let remote: Vec<(bool, &str)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "remote")
        .inspect(|e| assert_eq!(e["person"], sc.admin_person.0, "{e}"))
        .map(|e| (e["allowed"].as_bool().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        remote,
        [(true, "remote_open"), (false, "remote_open_not_delivered")],
        "newest first"
    );
    let audit = store.model().audit(Some(&sc.door.to_string())).await.unwrap();
    assert_eq!(
        audit.iter().filter(|a| a.action == "remote_open").count(),
        2,
        "{audit:?}"
    );

    // A basic user may not; a door of another site is not found.
    let basic = sc.w.bearer(Who::Basic).await.unwrap();
    let (status, _) =
        sc.w.h
            .call(
                "POST",
                &format!("/v1/sites/{s}/doors/{d}/remote-open"),
                Some(&basic),
                None,
            )
            .await;
    assert_eq!(status, 403);
    let theirs = sc.w.h.door(sc.w.other_site).await;
    let (status, _) = sc
        .call("POST", &format!("/v1/sites/{s}/doors/{}/remote-open", theirs.0), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassigned_tags_restore_and_invitations_with_a_tag() {
    let sc = Scene::new().await;
    let s = sc.site();
    let store = sc.w.h.node.store();

    // Removing a person leaves their tag, unassigned; it opens nothing.
    let (status, _) = sc
        .call("DELETE", &format!("/v1/sites/{s}/people/{}", sc.person.0), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "unassigned_credential");
    let (status, v) = sc
        .call("GET", &format!("/v1/sites/{s}/credentials/unassigned"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["person"], Value::Null);
    assert!(items[0]["hint"].as_str().unwrap().ends_with("c0de"), "{v}");
    let tag = items[0]["id"].as_u64().unwrap();

    // Pages follow a cursor.
    for _ in 0..2 {
        sc.w.h.credential(sc.w.site, fresh_tag(), None).await;
    }
    let (_, first) = sc
        .call("GET", &format!("/v1/sites/{s}/credentials/unassigned?limit=2"), None)
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = sc
        .call(
            "GET",
            &format!("/v1/sites/{s}/credentials/unassigned?limit=2&kind=tag&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["next_cursor"], Value::Null);

    // Assigned to a new person, it opens for them again (their group gives the right).
    let newcomer = sc.w.h.person(sc.w.site).await;
    let (status, v) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/credentials/{tag}/person"),
            Some(json!({"person": newcomer.0})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["credential"]["person"], newcomer.0);
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "no_right");
    // Not to someone else while it belongs to the newcomer.
    let (status, v) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/credentials/{tag}/person"),
            Some(json!({"person": sc.admin_person.0})),
        )
        .await;
    assert_eq!((status.as_u16(), v["code"].as_str().unwrap()), (409, "assigned"));
    let their_person = sc.w.h.person(sc.w.other_site).await;
    let (status, _) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/credentials/{tag}/person"),
            Some(json!({"person": their_person.0})),
        )
        .await;
    assert_eq!(status, 404);

    // Revoke and restore.
    let (status, v) = sc
        .call("DELETE", &format!("/v1/sites/{s}/credentials/{tag}"), None)
        .await;
    assert_eq!((status.as_u16(), &v["credential"]["revoked"]), (200, &json!(true)));
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "credential_revoked");
    let (status, v) = sc
        .call("POST", &format!("/v1/sites/{s}/credentials/{tag}/restore"), None)
        .await;
    assert_eq!((status.as_u16(), &v["credential"]["revoked"]), (200, &json!(false)));
    assert_eq!(sc.reason(PERSON_TAG, MONDAY_NINE).await, "no_right");

    // A guest key: valid from / until.
    let monday = jiff::Timestamp::from_second(1_763_884_800).unwrap(); // 2025-11-23T08:00Z
    let (status, v) = sc
        .call(
            "POST",
            &format!("/v1/sites/{s}/credentials"),
            Some(json!({"kind": "tag", "value": "0a0b0c0d", "person": sc.admin_person.0,
                "valid_from": monday.as_second(), "valid_until": monday.as_second() + 3600})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(sc.reason("0a0b0c0d", "2025-11-23T07:59:59Z").await, "not_yet_valid");
    assert_eq!(sc.reason("0a0b0c0d", "2025-11-23T08:30:00Z").await, "granted");
    assert_eq!(sc.reason("0a0b0c0d", "2025-11-23T09:00:00Z").await, "expired");

    // Invite someone with a tag's number: accepting assigns it to their new person.
    let (_, v) = sc
        .call(
            "POST",
            &format!("/v1/sites/{s}/credentials"),
            Some(json!({"kind": "tag", "value": "0e0e0e0e"})),
        )
        .await;
    let loose = CredentialId(v["credential"]["id"].as_u64().unwrap() as u32);
    for (tag, want, code) in [
        ("0badc0de", 409, "assigned"),
        ("01010101", 404, "not_found"),
        ("zz", 422, "invalid"),
    ] {
        let (status, v) = sc
            .call(
                "POST",
                &format!("/v1/sites/{s}/invitations"),
                Some(json!({"email": "guest@example.com", "role": "basic_user", "tag": tag})),
            )
            .await;
        assert_eq!(
            (status.as_u16(), v["code"].as_str().unwrap()),
            (want, code),
            "{tag}: {v}"
        );
    }
    let (status, v) = sc
        .call(
            "POST",
            &format!("/v1/sites/{s}/invitations"),
            Some(json!({"email": "guest@example.com", "role": "basic_user", "tag": "0E0E0E0E"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["credential"], loose.0);
    let token = sc.w.h.link_token("guest@example.com").await;
    let (guest, guest_t) = sc.w.h.account("guest@example.com").await;
    let (status, v) =
        sc.w.h
            .call(
                "POST",
                "/v1/invitations/accept",
                Some(&guest_t),
                Some(json!({"token": token})),
            )
            .await;
    assert_eq!(status, 200, "{v}");
    let m = store
        .memberships()
        .get(sc.w.site, keyway_store::AccountId(guest))
        .await
        .unwrap()
        .unwrap();
    let person = m.person.unwrap();
    let record = sc.w.h.node.snapshot().load().credential_record(loose).unwrap();
    assert_eq!(record.owner, Some(person));
    assert_eq!(
        store
            .names()
            .get(keyway_store::Named::Person, person.0)
            .await
            .unwrap()
            .as_deref(),
        Some("guest@example.com")
    );
    let (_, page) = sc
        .call("GET", &format!("/v1/sites/{s}/credentials/unassigned?kind=tag"), None)
        .await;
    assert!(
        page["items"].as_array().unwrap().iter().all(|c| c["id"] != loose.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_listed_filtered_and_acknowledged() {
    let sc = Scene::new().await;
    let s = sc.site();
    let node = &sc.w.h.node;
    let (status, _) = sc
        .call(
            "POST",
            &format!("/v1/sites/{s}/notifications"),
            Some(json!({"event_kind": "incident.door_forced", "channel": "email", "target": "owner@example.com"})),
        )
        .await;
    assert_eq!(status, 201);
    let forced = node
        .raise_incident("test", new_incident(sc.w.site, IncidentKind::DoorForced, Some(sc.door)))
        .await
        .unwrap();
    let battery = node
        .raise_incident("test", new_incident(sc.w.site, IncidentKind::BatteryLow, None))
        .await
        .unwrap();
    // A door of another site is refused before anything is stored.
    let theirs = sc.w.h.door(sc.w.other_site).await;
    assert!(
        node.raise_incident("test", new_incident(sc.w.site, IncidentKind::Tamper, Some(theirs)))
            .await
            .is_err()
    );
    // The worker mails the forced door to the one matching setting; the battery has none.
    while sc.w.h.state.deliver_due_notifications().await.unwrap() > 0 {}
    let mail = std::fs::read_to_string(&sc.w.h.mail).unwrap();
    assert_eq!(mail.matches("To: owner@example.com").count(), 1, "{mail}");
    assert!(mail.contains("door forced open"), "{mail}");
    assert!(!mail.contains("battery"), "{mail}");

    let (status, v) = sc.call("GET", &format!("/v1/sites/{s}/incidents"), None).await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [battery.id.get(), forced.id.get()]);
    let (_, v) = sc
        .call(
            "GET",
            &format!("/v1/sites/{s}/incidents?kind=door_forced&door={}", sc.door.0),
            None,
        )
        .await;
    assert_eq!(v["items"][0]["id"], forced.id.get(), "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = sc.call("GET", &format!("/v1/sites/{s}/incidents?limit=1"), None).await;
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let (_, v) = sc
        .call("GET", &format!("/v1/sites/{s}/incidents?limit=1&cursor={cursor}"), None)
        .await;
    assert_eq!(v["items"][0]["id"], forced.id.get(), "{v}");
    for (query, want) in [
        ("kind=fire", 422),
        ("cursor=x", 400),
        ("limit=0", 400),
        ("colour=red", 400),
    ] {
        let (status, v) = sc.call("GET", &format!("/v1/sites/{s}/incidents?{query}"), None).await;
        assert_eq!(status.as_u16(), want, "{query}: {v}");
    }

    let path = format!("/v1/sites/{s}/incidents/{}/acknowledge", forced.id.get());
    let (status, v) = sc.call("POST", &path, None).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["acknowledged_at"].is_string());
    let (status, again) = sc.call("POST", &path, None).await;
    assert_eq!((status.as_u16(), &again), (200, &v), "acknowledged once");
    let (_, open) = sc
        .call("GET", &format!("/v1/sites/{s}/incidents?acknowledged=false"), None)
        .await;
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
    for missing in [battery.id.get() + 1000, -1] {
        let (status, _) = sc
            .call("POST", &format!("/v1/sites/{s}/incidents/{missing}/acknowledge"), None)
            .await;
        assert_eq!(status, 404);
    }
    // Another site's incident is not found from this site.
    let their = node
        .raise_incident("test", new_incident(sc.w.other_site, IncidentKind::Tamper, None))
        .await
        .unwrap();
    let (status, _) = sc
        .call(
            "POST",
            &format!("/v1/sites/{s}/incidents/{}/acknowledge", their.id.get()),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_export_retention_and_live_stream() {
    let sc = Scene::new().await;
    let s = sc.site();
    for tag in [PERSON_TAG, ADMIN_TAG, OTHER_TAG, PERSON_TAG] {
        sc.reason(tag, MONDAY_NINE).await;
    }
    let node = &sc.w.h.node;
    node.store().entries().flush().await.unwrap();
    let basic = sc.w.bearer(Who::Basic).await.unwrap();

    // CSV: a header and a line per entry; the basic user gets only their own.
    let (status, csv) = sc
        .get_text(&sc.owner, &format!("/v1/sites/{s}/entries/export"), &[])
        .await;
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], keyway_store::ENTRIES_CSV_HEADER.trim_end());
    assert_eq!(lines.len(), 5, "{csv}");
    let (_, mine) = sc.get_text(&basic, &format!("/v1/sites/{s}/entries/export"), &[]).await;
    let mine: Vec<&str> = mine.lines().skip(1).collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(
        mine.iter()
            .all(|l| l.split(',').nth(4) == Some(&sc.person.0.to_string())),
        "{mine:?}"
    );
    let (_, filtered) = sc
        .get_text(&sc.owner, &format!("/v1/sites/{s}/entries/export?allowed=true"), &[])
        .await;
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    let (status, _) = sc
        .get_text(&sc.owner, &format!("/v1/sites/{s}/entries/export?limit=10"), &[])
        .await;
    assert_eq!(status, 400);

    // Retention.
    let (status, v) = sc.call("GET", &format!("/v1/sites/{s}/entries/retention"), None).await;
    assert_eq!((status.as_u16(), &v["days"]), (200, &json!(90)));
    let (status, v) = sc
        .call(
            "PUT",
            &format!("/v1/sites/{s}/entries/retention"),
            Some(json!({"days": 30})),
        )
        .await;
    assert_eq!((status.as_u16(), &v["days"]), (200, &json!(30)));
    for days in [0, 3651] {
        let (status, _) = sc
            .call(
                "PUT",
                &format!("/v1/sites/{s}/entries/retention"),
                Some(json!({"days": days})),
            )
            .await;
        assert_eq!(status, 422, "{days}");
    }
    let (_, v) = sc.call("GET", &format!("/v1/sites/{s}/entries/retention"), None).await;
    assert_eq!(v["days"], 30);
    // The pruning follows the setting: 31 days on, today's entries are gone.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(31 * 24);
    assert_eq!(node.store().entries().purge(later).await.unwrap(), 4);

    // The live stream: backlog after an id, scoped as the entries list.
    for tag in [PERSON_TAG, OTHER_TAG] {
        sc.reason(tag, MONDAY_NINE).await;
    }
    node.raise_incident("test", new_incident(sc.w.site, IncidentKind::Tamper, Some(sc.door)))
        .await
        .unwrap();
    node.store().entries().flush().await.unwrap();
    let events_path = format!("/v1/sites/{s}/events?follow=false");
    let (status, text) = sc.get_text(&sc.owner, &events_path, &[("last-event-id", "0.0")]).await;
    assert_eq!(status, 200, "{text}");
    let all = sse_events(&text);
    let kinds: Vec<&str> = all.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(kinds, ["entry", "entry", "incident"], "{text}");
    assert_eq!(all[2].2["kind"], "tamper");
    let (_, text) = sc.get_text(&basic, &events_path, &[("last-event-id", "0.0")]).await;
    let own = sse_events(&text);
    assert_eq!(own.len(), 1, "the basic user's one entry, no incident: {text}");
    assert_eq!(own[0].2["person"], sc.person.0);
    // Resuming after the first event gives the rest, nothing twice.
    let (_, text) = sc
        .get_text(&sc.owner, &events_path, &[("last-event-id", &all[0].1)])
        .await;
    let rest = sse_events(&text);
    assert_eq!(rest.iter().map(|e| &e.1).collect::<Vec<_>>(), [&all[1].1, &all[2].1]);
    // Without an id, it starts now.
    let (_, text) = sc.get_text(&sc.owner, &events_path, &[]).await;
    assert!(sse_events(&text).is_empty(), "{text}");
    let (status, _) = sc.get_text(&sc.owner, &events_path, &[("last-event-id", "nope")]).await;
    assert_eq!(status, 400);

    // Following: a new entry arrives on an open stream.
    let request = Request::builder()
        .uri(format!("/v1/sites/{s}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {}", sc.owner))
        .body(Body::empty())
        .unwrap();
    let response = sc.w.h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body();
    sc.reason(ADMIN_TAG, MONDAY_NINE).await;
    node.store().entries().flush().await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: entry") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no entry event within 10 s: {seen}"))
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let live = sse_events(&seen);
    assert_eq!(live[0].2["person"], sc.admin_person.0, "{seen}");
    assert_eq!(live[0].2["reason"], "granted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_explained_check_by_check() {
    let sc = Scene::new().await;
    let s = sc.site();
    let node = &sc.w.h.node;
    node.store().entries().flush().await.unwrap();
    let logged_before = node.store().entries().count().await.unwrap();
    let explain = |tag: &'static str| {
        let sc = &sc;
        async move {
            let (status, v) = sc
                .call(
                    "POST",
                    "/v1/decide?explain=true",
                    Some(json!({
                        "site": s, "door": sc.door.0,
                        "credential": {"kind": "tag", "value": tag}, "at": MONDAY_NINE,
                    })),
                )
                .await;
            assert_eq!(status, 200, "{v}");
            v
        }
    };
    let names = [
        "door",
        "credential",
        "revoked",
        "owner",
        "blocked",
        "validity",
        "lockdown",
        "office_mode",
        "rights",
        "door_rule",
    ];
    // Each row: the tag, then the outcome of every check in order.
    let cases: [(&str, [&str; 10]); 3] = [
        (
            ADMIN_TAG,
            [
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "not_applicable",
                "opened",
                "not_applicable",
            ],
        ),
        (
            PERSON_TAG,
            [
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "not_applicable",
                "failed",
                "not_applicable",
            ],
        ),
        (
            "0f0f0f0f",
            [
                "passed",
                "failed",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_applicable",
            ],
        ),
    ];
    for (tag, outcomes) in cases {
        let v = explain(tag).await;
        let checks = v["checks"].as_array().unwrap();
        let got: Vec<(&str, &str)> = checks
            .iter()
            .map(|c| (c["check"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
            .collect();
        let want: Vec<(&str, &str)> = names.iter().copied().zip(outcomes).collect();
        assert_eq!(got, want, "{tag}: {v}");
        // The explanation comes to the decision's own reason.
        assert_eq!(
            v["reason"].as_str().unwrap(),
            sc.reason(tag, MONDAY_NINE).await,
            "{tag}"
        );
    }
    let v = explain(ADMIN_TAG).await;
    assert_eq!(v["group"], sc.group.0);
    assert!(
        v["checks"][8]["detail"]
            .as_str()
            .unwrap()
            .contains(&sc.group.to_string()),
        "{v}"
    );
    // Explained decisions are dry runs; the plain ones above were logged.
    node.store().entries().flush().await.unwrap();
    assert_eq!(node.store().entries().count().await.unwrap(), logged_before + 3);
    // Without explain, no checks.
    let (_, plain) = sc
        .call(
            "POST",
            "/v1/decide",
            Some(json!({"site": s, "door": sc.door.0, "credential": {"kind": "tag", "value": ADMIN_TAG}})),
        )
        .await;
    assert!(plain.get("checks").is_none(), "{plain}");
    let (status, _) = sc
        .call(
            "POST",
            "/v1/decide?explain=maybe",
            Some(json!({"site": s, "door": sc.door.0, "credential": {"kind": "tag", "value": ADMIN_TAG}})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_another_site_or_of_nothing_on_site_operations() {
    let w = World::new().await;
    let owner = w.bearer(Who::Owner).await.unwrap();
    let s = w.site.0;
    let their_door = w.h.door(w.other_site).await;
    let their_tag = w.h.credential(w.other_site, vec![7, 7, 7, 7], None).await;
    let person = w.h.person(w.site).await;
    let before = w.h.fingerprint().await;
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/sites/{s}/doors/{}", their_door.0), None),
        (
            "PUT",
            format!("/v1/sites/{s}/doors/{}/mode", their_door.0),
            Some(json!({"mode": "office"})),
        ),
        (
            "PUT",
            format!("/v1/sites/{s}/doors/999999/mode"),
            Some(json!({"mode": "office"})),
        ),
        ("PUT", format!("/v1/sites/{s}/doors/{}/lockdown", their_door.0), None),
        ("DELETE", format!("/v1/sites/{s}/doors/999999/lockdown"), None),
        (
            "POST",
            format!("/v1/sites/{s}/doors/{}/remote-open", their_door.0),
            None,
        ),
        ("POST", format!("/v1/sites/{s}/doors/999999/remote-open"), None),
        (
            "PUT",
            format!("/v1/sites/{s}/credentials/{}/person", their_tag.0),
            Some(json!({"person": person.0})),
        ),
        (
            "PUT",
            format!("/v1/sites/{s}/credentials/999999/person"),
            Some(json!({"person": person.0})),
        ),
        (
            "POST",
            format!("/v1/sites/{s}/credentials/{}/restore", their_tag.0),
            None,
        ),
        ("POST", format!("/v1/sites/{s}/credentials/999999/restore"), None),
        ("POST", format!("/v1/sites/{s}/incidents/999999/acknowledge"), None),
        ("PUT", "/v1/sites/999999/lockdown".to_owned(), None),
        ("GET", "/v1/sites/999999/events?follow=false".to_owned(), None),
        ("GET", "/v1/sites/999999/entries/export".to_owned(), None),
    ];
    let mut failures = Vec::new();
    for (method, path, body) in cases {
        let (status, v) = w.h.call(method, &path, Some(&owner), body).await;
        if status != 404 || v["code"] != "not_found" {
            failures.push(format!("{method} {path}: {status} {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(w.h.fingerprint().await, before, "nothing changed");
    // Oversized and malformed ids in paths.
    for path in [
        format!("/v1/sites/{s}/doors/abc/mode"),
        format!("/v1/sites/{s}/doors/99999999999/lockdown"),
        format!("/v1/sites/{s}/incidents/x/acknowledge"),
    ] {
        let (status, _) =
            w.h.call("PUT", &path, Some(&owner), Some(json!({"mode": "office"})))
                .await;
        assert!(status == 400 || status == 405, "{path}: {status}");
    }
}
