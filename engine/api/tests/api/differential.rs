//! The HTTP API against the core: random sequences of admin calls over HTTP, and after
//! each one, every door and credential of the site decided through `POST /v1/decide`
//! (single) and `POST /v1/decide/batch`, compared with the core's `decide` on a snapshot
//! built afresh from the node's records at that moment. It checks the whole path at
//! once: request parsing, authorisation, the node's pipeline, reason codes and revisions,
//! and that the node's incrementally maintained snapshot decides as a full build does.

use crate::support::*;
use axum::http::StatusCode;
use keyway_core::{CredentialKind, DoorId, Effect, Presented, Reason, Revision, SiteId, Snapshot, decide};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Reasons compared over the whole run, so the test cannot pass on sequences that never
/// reach the interesting answers.
static SEEN: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// One admin call; indexes pick among what earlier calls made (modulo their number).
#[derive(Clone, Debug)]
enum Op {
    Door,
    Person,
    Tag {
        person: Option<usize>,
        offline: bool,
        window: Option<(i64, i64)>,
    },
    Schedule {
        days: Vec<&'static str>,
        start: u16,
        end: u16,
    },
    Group {
        doors: Vec<usize>,
        members: Vec<usize>,
        schedule: Option<usize>,
    },
    ReplaceGroup {
        group: usize,
        doors: Vec<usize>,
        members: Vec<usize>,
        schedule: Option<usize>,
    },
    Block(usize),
    Unblock(usize),
    RemovePerson(usize),
    Revoke(usize),
    Restore(usize),
    Mode {
        door: usize,
        mode: u8,
        schedule: usize,
    },
    DoorLockdown(usize, bool),
    SiteLockdown(bool),
    RemoveDoor(usize),
    RemoveGroup(usize),
}

/// Instants the decisions are asked at: inside and outside typical periods, a weekend,
/// and around the guest windows below.
const TIMES: [&str; 4] = [
    "2026-12-07T08:30:00Z", // Monday 09:30 in Madrid
    "2026-12-07T21:00:00Z", // Monday 22:00
    "2026-12-12T11:00:00Z", // Saturday 12:00
    "2027-03-01T08:30:00Z", // after the guest windows
];
const WINDOW_EDGES: [i64; 3] = [1_765_000_000, 1_765_100_000, 1_790_000_000];

fn op() -> impl Strategy<Value = Op> {
    let idx = || 0usize..8;
    let some = || proptest::collection::vec(0usize..8, 0..4);
    let day = prop::sample::select(vec!["mon", "tue", "sat", "sun"]);
    prop_oneof![
        2 => Just(Op::Door),
        2 => Just(Op::Person),
        3 => (
            prop_oneof![4 => idx().prop_map(Some), 1 => Just(None)],
            any::<bool>(),
            prop_oneof![4 => Just(None), 1 => (0usize..3, 0usize..3).prop_map(Some)],
        )
            .prop_map(|(person, offline, w)| Op::Tag {
                person,
                offline,
                window: w.and_then(|(a, b)| (a < b).then(|| (WINDOW_EDGES[a], WINDOW_EDGES[b]))),
            }),
        1 => (proptest::collection::vec(day, 1..3), 0u16..24, 1u16..25)
            .prop_map(|(days, a, b)| Op::Schedule { days, start: a.min(b) * 60, end: a.max(b).max(1) * 60 }),
        3 => (some(), some(), proptest::option::of(idx()))
            .prop_map(|(doors, members, schedule)| Op::Group { doors, members, schedule }),
        1 => (idx(), some(), some(), proptest::option::of(idx()))
            .prop_map(|(group, doors, members, schedule)| Op::ReplaceGroup { group, doors, members, schedule }),
        1 => idx().prop_map(Op::Block),
        1 => idx().prop_map(Op::Unblock),
        1 => idx().prop_map(Op::RemovePerson),
        1 => idx().prop_map(Op::Revoke),
        1 => idx().prop_map(Op::Restore),
        1 => (idx(), 0u8..3, idx()).prop_map(|(door, mode, schedule)| Op::Mode { door, mode, schedule }),
        1 => (idx(), any::<bool>()).prop_map(|(d, on)| Op::DoorLockdown(d, on)),
        1 => any::<bool>().prop_map(Op::SiteLockdown),
        1 => idx().prop_map(Op::RemoveDoor),
        1 => idx().prop_map(Op::RemoveGroup),
    ]
}

/// What the calls made on one site.
#[derive(Default)]
struct Made {
    doors: Vec<u32>,
    people: Vec<u32>,
    tags: Vec<(u32, String)>,
    schedules: Vec<u32>,
    groups: Vec<u32>,
}

fn pick(list: &[u32], i: usize) -> Option<u32> {
    (!list.is_empty()).then(|| list[i % list.len()])
}

fn picks(list: &[u32], is: &[usize]) -> Vec<u32> {
    let mut out: Vec<u32> = is.iter().filter_map(|i| pick(list, *i)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Run `op` over HTTP; the status, which must be a success or a 4xx refusal.
async fn run(h: &H, t: &str, site: u32, made: &mut Made, op: &Op) -> StatusCode {
    let base = format!("/v1/sites/{site}");
    let post = |path: String, body: Value| async move { h.call("POST", &path, Some(t), Some(body)).await };
    let (status, v) = match op {
        Op::Door => {
            let (s, v) = post(
                format!("{base}/doors"),
                json!({"name": format!("door {}", made.doors.len())}),
            )
            .await;
            if s.is_success() {
                made.doors.push(v["door"]["id"].as_u64().unwrap() as u32);
            }
            (s, v)
        }
        Op::Person => {
            let (s, v) = post(
                format!("{base}/people"),
                json!({"name": format!("p{}", made.people.len())}),
            )
            .await;
            if s.is_success() {
                made.people.push(v["person"]["id"].as_u64().unwrap() as u32);
            }
            (s, v)
        }
        Op::Tag {
            person,
            offline,
            window,
        } => {
            let value = format!("{:08x}", 0x1000_0000 + made.tags.len());
            let mut body = json!({"kind": "tag", "value": value, "offline_access": offline});
            if let Some(p) = person.and_then(|i| pick(&made.people, i)) {
                body["person"] = json!(p);
            }
            if let Some((from, until)) = window {
                body["valid_from"] = json!(from);
                body["valid_until"] = json!(until);
            }
            let (s, v) = post(format!("{base}/credentials"), body).await;
            if s.is_success() {
                made.tags.push((v["credential"]["id"].as_u64().unwrap() as u32, value));
            }
            (s, v)
        }
        Op::Schedule { days, start, end } => {
            let hm = |m: u16| format!("{:02}:{:02}", (m / 60).min(24), m % 60);
            let body = json!({"periods": [{"days": days, "start": hm(*start), "end": hm(*end)}]});
            let (s, v) = post(format!("{base}/schedules"), body).await;
            if s.is_success() {
                made.schedules.push(v["id"].as_u64().unwrap() as u32);
            }
            (s, v)
        }
        Op::Group {
            doors,
            members,
            schedule,
        } => {
            let body = json!({
                "name": format!("g{}", made.groups.len()),
                "doors": picks(&made.doors, doors),
                "members": picks(&made.people, members),
                "schedule": schedule.and_then(|i| pick(&made.schedules, i)),
            });
            let (s, v) = post(format!("{base}/groups"), body).await;
            if s.is_success() {
                made.groups.push(v["group"]["id"].as_u64().unwrap() as u32);
            }
            (s, v)
        }
        Op::ReplaceGroup {
            group,
            doors,
            members,
            schedule,
        } => {
            let Some(g) = pick(&made.groups, *group) else {
                return StatusCode::OK;
            };
            let body = json!({
                "name": format!("g{g}"),
                "doors": picks(&made.doors, doors),
                "members": picks(&made.people, members),
                "schedule": schedule.and_then(|i| pick(&made.schedules, i)),
            });
            h.call("PUT", &format!("{base}/groups/{g}"), Some(t), Some(body)).await
        }
        Op::Block(i) | Op::Unblock(i) | Op::RemovePerson(i) => {
            let Some(p) = pick(&made.people, *i) else {
                return StatusCode::OK;
            };
            match op {
                Op::Block(_) => h.call("POST", &format!("{base}/people/{p}/block"), Some(t), None).await,
                Op::Unblock(_) => {
                    h.call("POST", &format!("{base}/people/{p}/unblock"), Some(t), None)
                        .await
                }
                _ => h.call("DELETE", &format!("{base}/people/{p}"), Some(t), None).await,
            }
        }
        Op::Revoke(i) | Op::Restore(i) => {
            let ids: Vec<u32> = made.tags.iter().map(|(id, _)| *id).collect();
            let Some(c) = pick(&ids, *i) else {
                return StatusCode::OK;
            };
            if matches!(op, Op::Revoke(_)) {
                h.call("DELETE", &format!("{base}/credentials/{c}"), Some(t), None)
                    .await
            } else {
                h.call("POST", &format!("{base}/credentials/{c}/restore"), Some(t), None)
                    .await
            }
        }
        Op::Mode { door, mode, schedule } => {
            let Some(d) = pick(&made.doors, *door) else {
                return StatusCode::OK;
            };
            let body = match mode {
                0 => json!({"mode": "normal"}),
                1 => json!({"mode": "office"}),
                _ => json!({"mode": "scheduled", "schedule": pick(&made.schedules, *schedule)}),
            };
            h.call("PUT", &format!("{base}/doors/{d}/mode"), Some(t), Some(body))
                .await
        }
        Op::DoorLockdown(i, on) => {
            let Some(d) = pick(&made.doors, *i) else {
                return StatusCode::OK;
            };
            let method = if *on { "PUT" } else { "DELETE" };
            h.call(method, &format!("{base}/doors/{d}/lockdown"), Some(t), None)
                .await
        }
        Op::SiteLockdown(on) => {
            let method = if *on { "PUT" } else { "DELETE" };
            h.call(method, &format!("{base}/lockdown"), Some(t), None).await
        }
        Op::RemoveDoor(i) => {
            let Some(d) = pick(&made.doors, *i) else {
                return StatusCode::OK;
            };
            h.call("DELETE", &format!("{base}/doors/{d}"), Some(t), None).await
        }
        Op::RemoveGroup(i) => {
            let Some(g) = pick(&made.groups, *i) else {
                return StatusCode::OK;
            };
            h.call("DELETE", &format!("{base}/groups/{g}"), Some(t), None).await
        }
    };
    assert!(
        status.is_success() || status.is_client_error(),
        "{op:?} answered {status}: {v}"
    );
    status
}

/// The core's answer as the API words it: effect, reason, group, schedule, revision.
fn core_view(snapshot: &Snapshot, door: u32, secret: &[u8], at: jiff::Timestamp) -> Value {
    let d = decide(
        snapshot,
        DoorId(door),
        Presented {
            kind: CredentialKind::Tag,
            secret,
        },
        at,
    );
    let (group, schedule) = match d.reason {
        Reason::Granted { group, schedule } => (Some(group.0), schedule.map(|s| s.0)),
        _ => (None, None),
    };
    json!({
        "effect": if d.effect == Effect::Allow { "allow" } else { "deny" },
        "reason": d.reason.code(),
        "group": group,
        "schedule": schedule,
        "revision": d.revision.0,
    })
}

fn http_view(v: &Value) -> Value {
    json!({
        "effect": v["effect"], "reason": v["reason"], "group": v["group"],
        "schedule": v["schedule"], "revision": v["revision"],
    })
}

/// Every door and tag of the site (and one unknown tag) at every instant, over HTTP and
/// in the core, compared.
async fn agree(h: &H, t: &str, site: u32, made: &Made, step: usize, op: &Op) {
    let now = h.node.snapshot().load_full();
    let fresh = Snapshot::build(Revision(now.revision().0), now.records()).unwrap();
    let mut secrets: Vec<String> = made.tags.iter().map(|(_, s)| s.clone()).collect();
    secrets.push("ffffffff".to_owned());
    let live: Vec<u32> = made
        .doors
        .iter()
        .copied()
        .filter(|d| fresh.door_site(DoorId(*d)) == Some(SiteId(site)))
        .collect();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for door in &live {
        for secret in &secrets {
            for at in TIMES {
                requests.push(
                    json!({"site": site, "door": door, "credential": {"kind": "tag", "value": secret}, "at": at}),
                );
                let bytes = hex::decode(secret).unwrap();
                expected.push(core_view(&fresh, *door, &bytes, at.parse().unwrap()));
            }
        }
    }
    if !requests.is_empty() {
        let (s, v) = h
            .call("POST", "/v1/decide/batch", Some(t), Some(json!({"requests": requests})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let got: Vec<Value> = v["decisions"].as_array().unwrap().iter().map(http_view).collect();
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "step {step} ({op:?}), batch request {}", requests[i]);
            let reason = want["reason"].as_str().unwrap().to_owned();
            *SEEN.lock().unwrap().entry(reason).or_default() += 1;
        }
        assert_eq!(got.len(), expected.len());
        // One of them again through the single route.
        let i = step % requests.len();
        let (s, v) = h.call("POST", "/v1/decide", Some(t), Some(requests[i].clone())).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            http_view(&v),
            expected[i],
            "step {step} ({op:?}), single {}",
            requests[i]
        );
    }
    // A removed door is unknown to both.
    for door in made.doors.iter().filter(|d| !live.contains(d)) {
        let body = json!({"site": site, "door": door, "credential": {"kind": "tag", "value": "ffffffff"}});
        let (s, v) = h.call("POST", "/v1/decide", Some(t), Some(body)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "removed door {door}: {v}");
        assert_eq!(fresh.door_site(DoorId(*door)), None);
    }
}

#[test]
fn decisions_over_http_agree_with_the_core_after_any_admin_calls() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (h, owner) = rt.block_on(async {
        let h = H::new().await;
        let (_, owner) = h.account("owner@example.com").await;
        (h, owner)
    });
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..32))| {
        rt.block_on(async {
            let (s, v) = h
                .call("POST", "/v1/sites", Some(&owner), Some(json!({"name": "Prop", "time_zone": "Europe/Madrid"})))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            let site = v["site"]["id"].as_u64().unwrap() as u32;
            let code = format!("PROP-{}", unique());
            let store = h.node.store();
            store.memberships().create_voucher("test", &code, 1000, 1000, None, None, jiff::Timestamp::now()).await.unwrap();
            store.memberships().redeem_voucher("test", &code, SiteId(site), crate::t(0)).await.unwrap();
            let mut made = Made::default();
            // A small site to start from, so random calls change something that decides.
            let prologue = [
                Op::Door,
                Op::Door,
                Op::Person,
                Op::Person,
                Op::Tag { person: Some(0), offline: false, window: None },
                Op::Tag { person: Some(1), offline: true, window: None },
                Op::Schedule { days: vec!["mon", "tue"], start: 8 * 60, end: 18 * 60 },
                Op::Group { doors: vec![0], members: vec![0, 1], schedule: None },
                Op::Group { doors: vec![1], members: vec![1], schedule: Some(0) },
            ];
            for op in &prologue {
                assert!(run(&h, &owner, site, &mut made, op).await.is_success(), "prologue {op:?}");
            }
            for (step, op) in ops.iter().enumerate() {
                run(&h, &owner, site, &mut made, op).await;
                agree(&h, &owner, site, &made, step, op).await;
            }
        });
    });
    let seen = SEEN.lock().unwrap().clone();
    eprintln!("decisions compared, by reason: {seen:?}");
    for reason in [
        "granted",
        "office_mode",
        "unknown_credential",
        "unassigned_credential",
        "person_blocked",
        "credential_revoked",
        "no_right",
        "outside_schedule",
        "lockdown",
    ] {
        assert!(
            seen.get(reason).is_some_and(|n| *n > 0),
            "no decision was `{reason}`: {seen:?}"
        );
    }
}
