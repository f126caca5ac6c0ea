//! The conformance suite: the same checks on SQLite and on PostgreSQL.

use crate::support::*;
use jiff::tz::TimeZone;
use keyway_core::*;
use keyway_store::{ErrorKind, Store, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A snapshot revision and the people it held.
type Observation = (Revision, BTreeSet<PersonId>);

/// The snapshot and the tables hold the same model at the same revision.
async fn assert_snapshot_matches_tables(store: &Store) {
    let (rev, mut records) = store.model().records().await.unwrap();
    let snapshot = store.snapshot().load_full();
    assert_eq!(snapshot.revision(), rev, "snapshot revision vs tables");
    let mut held = snapshot.records();
    let key = |r: &Record| format!("{r:?}");
    records.sort_by_key(key);
    held.sort_by_key(key);
    assert_eq!(held, records);
}

/// One CRUD step: a change, the entity it touches, and what the entity must be after.
struct Step {
    change: Change,
    target: Target,
    expect: Option<Record>,
}

fn step(change: Change, target: Target, expect: Option<Record>) -> Step {
    Step { change, target, expect }
}

async fn check_steps(store: &Store, steps: Vec<Step>) {
    for Step { change, target, expect } in steps {
        let before = store.status().applied;
        let rev = store
            .model()
            .write(ACTOR, change.clone())
            .await
            .unwrap_or_else(|e| panic!("{change:?}: {e}"));
        assert_eq!(rev, Revision(before.0 + 1), "{change:?}");
        assert!(store.snapshot().load().revision() >= rev, "read-your-writes");
        let got = store.model().record(target).await.unwrap();
        let normalise = |r: Option<Record>| match r {
            Some(Record::Group(mut g)) => {
                g.doors.sort();
                g.members.sort();
                Some(Record::Group(g))
            }
            other => other,
        };
        assert_eq!(normalise(got), normalise(expect), "{change:?}");
        let audit = store.model().audit(Some(&target.to_string())).await.unwrap();
        let last = audit.last().unwrap();
        assert_eq!((last.revision, last.actor.as_str()), (Some(rev), ACTOR));
        assert_snapshot_matches_tables(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_every_entity() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        assert_eq!(store.status().applied, Revision(8));
        assert_eq!(decide_tag(&store, ids.door, &TAG).effect, Effect::Allow);
        let site = ids.site;
        let madrid = TimeZone::get("Europe/Madrid").unwrap();
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let person = |blocked, role| PersonRecord {
            id: ids.person,
            site,
            role: RoleId(role),
            blocked,
        };
        let door = |mode, lockdown| DoorRecord {
            id: ids.door,
            site,
            iq: Some(ids.iq),
            mode,
            lockdown,
        };
        let cred = |revoked| CredentialRecord {
            id: ids.credential,
            revoked,
            ..tag(site, Some(ids.person), &TAG)
        };
        let group = |members: Vec<PersonId>, schedule| GroupRecord {
            id: ids.group,
            site,
            doors: vec![ids.door],
            schedule,
            members,
        };
        let office_hours = Schedule::new(vec![Period::hm(DaySet::EVERY_DAY, (7, 0), (22, 0))], None).unwrap();
        let second_tag = CredentialRecord {
            id: CredentialId(77),
            ..tag(site, None, &[1, 2, 3, 4, 5])
        };
        check_steps(
            &store,
            vec![
                // Sites and calendars: read back, update.
                step(
                    Change::PutSite(SiteRecord {
                        id: site,
                        time_zone: tokyo.clone(),
                        holiday_calendar: None,
                        lockdown: false,
                    }),
                    Target::Site(site),
                    Some(Record::Site(SiteRecord {
                        id: site,
                        time_zone: tokyo,
                        holiday_calendar: None,
                        lockdown: false,
                    })),
                ),
                step(
                    Change::SetSiteLockdown { site, on: true },
                    Target::Site(site),
                    Some(Record::Site(SiteRecord {
                        id: site,
                        time_zone: TimeZone::get("Asia/Tokyo").unwrap(),
                        holiday_calendar: None,
                        lockdown: true,
                    })),
                ),
                step(
                    Change::PutSite(SiteRecord {
                        id: site,
                        time_zone: madrid.clone(),
                        holiday_calendar: Some(ids.calendar),
                        lockdown: false,
                    }),
                    Target::Site(site),
                    Some(Record::Site(SiteRecord {
                        id: site,
                        time_zone: madrid,
                        holiday_calendar: Some(ids.calendar),
                        lockdown: false,
                    })),
                ),
                step(
                    Change::PutCalendar(CalendarRecord {
                        id: ids.calendar,
                        calendar: HolidayCalendar::new(vec!["2026-01-01".parse().unwrap()]),
                    }),
                    Target::Calendar(ids.calendar),
                    Some(Record::Calendar(CalendarRecord {
                        id: ids.calendar,
                        calendar: HolidayCalendar::new(vec!["2026-01-01".parse().unwrap()]),
                    })),
                ),
                // People.
                step(
                    Change::BlockPerson(ids.person),
                    Target::Person(ids.person),
                    Some(Record::Person(person(true, 3))),
                ),
                step(
                    Change::UnblockPerson(ids.person),
                    Target::Person(ids.person),
                    Some(Record::Person(person(false, 3))),
                ),
                step(
                    Change::PutPerson(person(false, 5)),
                    Target::Person(ids.person),
                    Some(Record::Person(person(false, 5))),
                ),
                // Credentials.
                step(
                    Change::RevokeCredential(ids.credential),
                    Target::Credential(ids.credential),
                    Some(Record::Credential(cred(true))),
                ),
                step(
                    Change::RestoreCredential(ids.credential),
                    Target::Credential(ids.credential),
                    Some(Record::Credential(cred(false))),
                ),
                step(
                    Change::PutCredential(second_tag.clone()),
                    Target::Credential(CredentialId(77)),
                    Some(Record::Credential(second_tag)),
                ),
                step(
                    Change::RemoveCredential(CredentialId(77)),
                    Target::Credential(CredentialId(77)),
                    None,
                ),
                // Doors.
                step(
                    Change::SetDoorMode {
                        door: ids.door,
                        mode: DoorMode::OfficeScheduled(ids.schedule),
                    },
                    Target::Door(ids.door),
                    Some(Record::Door(door(DoorMode::OfficeScheduled(ids.schedule), false))),
                ),
                step(
                    Change::SetDoorLockdown {
                        door: ids.door,
                        on: true,
                    },
                    Target::Door(ids.door),
                    Some(Record::Door(door(DoorMode::OfficeScheduled(ids.schedule), true))),
                ),
                step(
                    Change::PutDoor(door(DoorMode::Office, false)),
                    Target::Door(ids.door),
                    Some(Record::Door(door(DoorMode::Office, false))),
                ),
                // Schedules.
                step(
                    Change::PutSchedule(ScheduleRecord {
                        id: ids.schedule,
                        site,
                        schedule: office_hours.clone(),
                    }),
                    Target::Schedule(ids.schedule),
                    Some(Record::Schedule(ScheduleRecord {
                        id: ids.schedule,
                        site,
                        schedule: office_hours,
                    })),
                ),
                // Groups and grants.
                step(
                    Change::Ungrant {
                        person: ids.person,
                        group: ids.group,
                    },
                    Target::Group(ids.group),
                    Some(Record::Group(group(vec![], Some(ids.schedule)))),
                ),
                step(
                    Change::Grant {
                        person: ids.person,
                        group: ids.group,
                    },
                    Target::Group(ids.group),
                    Some(Record::Group(group(vec![ids.person], Some(ids.schedule)))),
                ),
                step(
                    Change::PutGroup(group(vec![ids.person], None)),
                    Target::Group(ids.group),
                    Some(Record::Group(group(vec![ids.person], None))),
                ),
                step(
                    Change::SetRoles(RoleFlags {
                        lockdown_exempt: vec![RoleId(1), RoleId(2)],
                    }),
                    Target::Roles,
                    Some(Record::Roles(RoleFlags {
                        lockdown_exempt: vec![RoleId(1), RoleId(2)],
                    })),
                ),
                // Deletes, in dependency order.
                step(Change::RemoveGroup(ids.group), Target::Group(ids.group), None),
                step(
                    Change::RemoveSchedule(ids.schedule),
                    Target::Schedule(ids.schedule),
                    None,
                ),
                step(Change::RemovePerson(ids.person), Target::Person(ids.person), None),
                step(Change::RemoveDoor(ids.door), Target::Door(ids.door), None),
                step(Change::RemoveIq(ids.iq), Target::Iq(ids.iq), None),
            ],
        )
        .await;
        // Removing the person kept their credential, unassigned.
        let cred = store.model().record(Target::Credential(ids.credential)).await.unwrap();
        assert!(matches!(cred, Some(Record::Credential(c)) if c.owner.is_none()));
        // A reopened node loads the same model at the same revision.
        let head = store.status().applied;
        store.close().await;
        let reopened = db.open("a").await;
        assert_eq!(reopened.status().applied, head);
        assert_snapshot_matches_tables(&reopened).await;
        reopened.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_write_nothing() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let site = ids.site;
        let other_site = SiteId(
            store
                .model()
                .create(
                    ACTOR,
                    Record::Site(SiteRecord {
                        id: SiteId(0),
                        time_zone: TimeZone::UTC,
                        holiday_calendar: None,
                        lockdown: false,
                    }),
                )
                .await
                .unwrap()
                .id
                .unwrap(),
        );
        let cases: Vec<(&str, Change, ErrorKind)> = vec![
            (
                "duplicate tag uid",
                Change::PutCredential(CredentialRecord {
                    id: CredentialId(50),
                    ..tag(site, None, &TAG)
                }),
                ErrorKind::Duplicate,
            ),
            (
                "unknown person",
                Change::BlockPerson(PersonId(999)),
                ErrorKind::NotFound,
            ),
            (
                "unknown credential",
                Change::RevokeCredential(CredentialId(999)),
                ErrorKind::NotFound,
            ),
            (
                "unknown group",
                Change::Grant {
                    person: ids.person,
                    group: GroupId(999),
                },
                ErrorKind::NotFound,
            ),
            (
                "unknown door",
                Change::SetDoorLockdown {
                    door: DoorId(999),
                    on: true,
                },
                ErrorKind::NotFound,
            ),
            (
                "door on unknown site",
                Change::PutDoor(DoorRecord {
                    id: DoorId(60),
                    site: SiteId(999),
                    iq: None,
                    mode: DoorMode::Normal,
                    lockdown: false,
                }),
                ErrorKind::ForeignKey,
            ),
            (
                "credential of unknown person",
                Change::PutCredential(CredentialRecord {
                    id: CredentialId(61),
                    ..tag(site, Some(PersonId(999)), &[9, 9, 9, 9])
                }),
                ErrorKind::ForeignKey,
            ),
            (
                "group with unknown door",
                Change::PutGroup(GroupRecord {
                    id: GroupId(62),
                    site,
                    doors: vec![DoorId(999)],
                    schedule: None,
                    members: vec![],
                }),
                ErrorKind::ForeignKey,
            ),
            ("door still in a group", Change::RemoveDoor(ids.door), ErrorKind::InUse),
            (
                "schedule still used",
                Change::RemoveSchedule(ids.schedule),
                ErrorKind::InUse,
            ),
            (
                "malformed tag",
                Change::PutCredential(CredentialRecord {
                    id: CredentialId(63),
                    ..tag(site, None, &[1, 2])
                }),
                ErrorKind::Invalid,
            ),
            (
                "cross-site owner",
                Change::PutCredential(CredentialRecord {
                    id: CredentialId(64),
                    ..tag(other_site, Some(ids.person), &[7, 7, 7, 7])
                }),
                ErrorKind::Invalid,
            ),
            (
                "person moved to another site",
                Change::PutPerson(PersonRecord {
                    id: ids.person,
                    site: other_site,
                    role: RoleId(1),
                    blocked: false,
                }),
                ErrorKind::Invalid,
            ),
        ];
        for (name, change, kind) in cases {
            let before = store.status().applied;
            let audit_before = store.model().audit(None).await.unwrap().len();
            let err = store.model().write(ACTOR, change).await.unwrap_err();
            assert_eq!(err.kind(), kind, "{name}: {err}");
            assert!(kind.is_client_error(), "{name}");
            assert!(!err.to_string().is_empty());
            assert_eq!(store.status().applied, before, "{name}: no revision taken");
            assert_eq!(
                store.model().audit(None).await.unwrap().len(),
                audit_before,
                "{name}: no audit row"
            );
        }
        // Nothing was written, and the revisions stayed contiguous.
        let revs = store.model().revisions().await.unwrap();
        assert_eq!(revs, (1..=9).map(Revision).collect::<Vec<_>>());
        assert_snapshot_matches_tables(&store).await;
        // The next good write takes the next revision.
        assert_eq!(
            store
                .model()
                .write(ACTOR, Change::BlockPerson(ids.person))
                .await
                .unwrap(),
            Revision(10)
        );
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_read_their_writes() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        let base = store.status().applied;
        // 16 writers, 8 writes each; each checks its write is in the snapshot it returns to.
        let created: Arc<std::sync::Mutex<BTreeMap<PersonId, Revision>>> = Default::default();
        let observations: Arc<std::sync::Mutex<Vec<Observation>>> = Default::default();
        let mut tasks = Vec::new();
        for w in 0..16u32 {
            let store = store.clone();
            let created = created.clone();
            let observations = observations.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..8u32 {
                    let person = PersonId(1000 + w * 100 + i);
                    let rev = store
                        .model()
                        .write(
                            ACTOR,
                            Change::PutPerson(PersonRecord {
                                id: person,
                                site: ids.site,
                                role: RoleId(1),
                                blocked: false,
                            }),
                        )
                        .await
                        .unwrap();
                    let snapshot = store.snapshot().load_full();
                    assert!(snapshot.revision() >= rev);
                    assert!(snapshot.has_person(person), "write visible at its own revision");
                    created.lock().unwrap().insert(person, rev);
                    let present = (0..16u32)
                        .flat_map(|w| (0..8u32).map(move |i| PersonId(1000 + w * 100 + i)))
                        .filter(|p| snapshot.has_person(*p))
                        .collect();
                    observations.lock().unwrap().push((snapshot.revision(), present));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let created = created.lock().unwrap().clone();
        // Revisions: one each, contiguous, in the change log too.
        let revs: BTreeSet<Revision> = created.values().copied().collect();
        assert_eq!(revs.len(), 128);
        assert_eq!(revs.first(), Some(&Revision(base.0 + 1)));
        assert_eq!(revs.last(), Some(&Revision(base.0 + 128)));
        assert_eq!(
            store.model().revisions().await.unwrap(),
            (1..=base.0 + 128).map(Revision).collect::<Vec<_>>()
        );
        // No snapshot shows a write later than its revision, nor misses an earlier one.
        for (seen_at, present) in observations.lock().unwrap().iter() {
            for (person, rev) in &created {
                assert_eq!(
                    present.contains(person),
                    rev <= seen_at,
                    "{person} (at {rev}) in snapshot {seen_at}"
                );
            }
        }
        assert_snapshot_matches_tables(&store).await;
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log_replays_to_the_same_model() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        store
            .model()
            .write(ACTOR, Change::BlockPerson(ids.person))
            .await
            .unwrap();
        store
            .model()
            .write(
                ACTOR,
                Change::SetDoorLockdown {
                    door: ids.door,
                    on: true,
                },
            )
            .await
            .unwrap();
        // A node started from scratch applies the log and agrees with the tables.
        let (_, records) = store.model().records().await.unwrap();
        let replayed = {
            let mut s = Snapshot::build(Revision(0), vec![]).unwrap();
            for rev in store.model().revisions().await.unwrap() {
                let text = change_text(&db, rev).await;
                match keyway_store::decode_change(&text).unwrap() {
                    keyway_store::Logged::Change(c) => s = s.apply(rev, &c).unwrap(),
                    keyway_store::Logged::Reload => panic!("no import here"),
                    keyway_store::Logged::Policy(_) => {}
                }
            }
            s
        };
        let key = |r: &Record| format!("{r:?}");
        let mut a = replayed.records();
        let mut b = records;
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a, b);
        assert_eq!(
            decide(&replayed, ids.door, Presented::tag(&TAG), at_nine()).effect,
            Effect::Deny
        );
        store.close().await;
    });
}

async fn change_text(db: &TestDb, rev: Revision) -> String {
    let sql = "SELECT change FROM change_log WHERE revision = $1";
    let rev = i64::try_from(rev.0).unwrap();
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let t = sqlx::query_scalar(sql).bind(rev).fetch_one(&pool).await.unwrap();
            pool.close().await;
            t
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let t = sqlx::query_scalar(sql).bind(rev).fetch_one(&pool).await.unwrap();
            pool.close().await;
            t
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_then_follow() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let population = keyway_sim::Population::generate(keyway_sim::PopulationSpec::scaled_down(1000));
        let count = population.records.len();
        let rev = store.model().import(ACTOR, population.records.clone()).await.unwrap();
        assert_eq!(rev, Revision(1));
        assert_eq!(store.snapshot().load().credential_count(), 1000);
        let (_, records) = store.model().records().await.unwrap();
        assert_eq!(records.len(), count);
        // Importing the same ids again clashes and writes nothing.
        let err = store.model().import(ACTOR, population.records).await.unwrap_err();
        assert!(err.kind().is_client_error(), "{err}");
        assert_eq!(store.model().revisions().await.unwrap(), vec![Revision(1)]);
        store.close().await;
    });
}
