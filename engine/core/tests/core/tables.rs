//! Tables follow the live entities, not the largest id: the office fixture with every id
//! moved far apart (up to `MAX_ID`, one below `u32::MAX`) decides exactly as the
//! original, through changes and compaction, in memory that does not grow with the ids;
//! and the per-entity reads give back what was put in.

use crate::fixture::{
    OFFICE_DOORS, OFFICE_PRESENTED, OFFICE_TIMES, WED_0900, door, next, office, office_records, person, tag, ts,
};
use keyway_core::{
    CalendarId, Change, CredentialId, CredentialKind, Decision, DoorId, DoorMode, GroupId, IqId, MAX_ID, PersonId,
    Presented, Reason, Record, Revision, ScheduleId, SiteId, Snapshot, decide,
};

/// An id far from its neighbours: small ids are spread over the whole `u32` range, and
/// the largest the fixture uses lands on `MAX_ID` itself.
fn far(id: u32) -> u32 {
    if id >= 99 {
        return MAX_ID.wrapping_sub(99 - id.min(99));
    }
    MAX_ID - 99 * 43_000_000 + id * 43_000_000
}

fn far_records(records: Vec<Record>) -> Vec<Record> {
    let site = |s: SiteId| SiteId(far(s.0));
    let sched = |s: ScheduleId| ScheduleId(far(s.0));
    records
        .into_iter()
        .map(|record| match record {
            Record::Site(mut r) => {
                r.id = site(r.id);
                r.holiday_calendar = r.holiday_calendar.map(|c| CalendarId(far(c.0)));
                Record::Site(r)
            }
            Record::Calendar(mut r) => {
                r.id = CalendarId(far(r.id.0));
                Record::Calendar(r)
            }
            Record::Iq(mut r) => {
                r.id = IqId(far(r.id.0));
                r.site = site(r.site);
                Record::Iq(r)
            }
            Record::Door(mut r) => {
                r.id = DoorId(far(r.id.0));
                r.site = site(r.site);
                r.iq = r.iq.map(|i| IqId(far(i.0)));
                if let DoorMode::OfficeScheduled(s) = r.mode {
                    r.mode = DoorMode::OfficeScheduled(sched(s));
                }
                Record::Door(r)
            }
            Record::Person(mut r) => {
                r.id = PersonId(far(r.id.0));
                r.site = site(r.site);
                Record::Person(r)
            }
            Record::Credential(mut r) => {
                r.id = CredentialId(far(r.id.0));
                r.site = site(r.site);
                r.owner = r.owner.map(|p| PersonId(far(p.0)));
                Record::Credential(r)
            }
            Record::Schedule(mut r) => {
                r.id = sched(r.id);
                r.site = site(r.site);
                Record::Schedule(r)
            }
            Record::Group(mut r) => {
                r.id = GroupId(far(r.id.0));
                r.site = site(r.site);
                r.schedule = r.schedule.map(sched);
                r.doors = r.doors.into_iter().map(|d| DoorId(far(d.0))).collect();
                r.members = r.members.into_iter().map(|p| PersonId(far(p.0))).collect();
                Record::Group(r)
            }
            Record::Roles(r) => Record::Roles(r),
        })
        .collect()
}

/// A decision of the original fixture as the far one must give it.
fn moved(d: Decision) -> Decision {
    Decision {
        reason: match d.reason {
            Reason::Granted { group, schedule } => Reason::Granted {
                group: GroupId(far(group.0)),
                schedule: schedule.map(|s| ScheduleId(far(s.0))),
            },
            other => other,
        },
        credential: d.credential.map(|c| CredentialId(far(c.0))),
        person: d.person.map(|p| PersonId(far(p.0))),
        ..d
    }
}

#[track_caller]
fn same_decisions(near: &Snapshot, far_snapshot: &Snapshot) {
    for &door in OFFICE_DOORS {
        for &presented in OFFICE_PRESENTED {
            for at in OFFICE_TIMES {
                let expected = moved(decide(near, DoorId(door), presented, ts(at)));
                let got = decide(far_snapshot, DoorId(far(door)), presented, ts(at));
                assert_eq!(got, expected, "door:{door} {presented:?} at {at}");
            }
        }
    }
}

#[test]
fn sparse_ids_decide_like_dense_ones() {
    let near = office();
    let far_snapshot = Snapshot::build(Revision(1), far_records(office_records())).unwrap();
    same_decisions(&near, &far_snapshot);
    same_decisions(&near, &far_snapshot.compact().unwrap());
    // Memory follows the entities: a few dozen rows, whatever their ids.
    assert!(
        far_snapshot.heap_bytes() < 64 << 10,
        "{} bytes",
        far_snapshot.heap_bytes()
    );
    // The same changes on both keep them alike.
    let changes = [
        (
            Change::RevokeCredential(CredentialId(1)),
            Change::RevokeCredential(CredentialId(far(1))),
        ),
        (
            Change::RemovePerson(PersonId(2)),
            Change::RemovePerson(PersonId(far(2))),
        ),
        (
            Change::Grant {
                person: PersonId(4),
                group: GroupId(3),
            },
            Change::Grant {
                person: PersonId(far(4)),
                group: GroupId(far(3)),
            },
        ),
        (
            Change::PutCredential(tag(40, 1, &[4, 0, 4, 0], Some(4))),
            Change::PutCredential(tag(far(40), far(1), &[4, 0, 4, 0], Some(far(4)))),
        ),
        (
            Change::RemoveCredential(CredentialId(6)),
            Change::RemoveCredential(CredentialId(far(6))),
        ),
        (
            Change::SetDoorMode {
                door: DoorId(6),
                mode: DoorMode::Office,
            },
            Change::SetDoorMode {
                door: DoorId(far(6)),
                mode: DoorMode::Office,
            },
        ),
        (Change::RemoveGroup(GroupId(2)), Change::RemoveGroup(GroupId(far(2)))),
        (
            Change::RemoveSchedule(ScheduleId(2)),
            Change::RemoveSchedule(ScheduleId(far(2))),
        ),
    ];
    let (mut near, mut far_snapshot) = (near, far_snapshot);
    for (a, b) in &changes {
        near = near.apply(next(&near), a).unwrap();
        far_snapshot = far_snapshot.apply(next(&far_snapshot), b).unwrap();
        same_decisions(&near, &far_snapshot);
    }
    same_decisions(&near, &far_snapshot.compact().unwrap());
}

#[test]
fn one_entity_at_the_largest_id_costs_one_row() {
    let base = office();
    let before = base.heap_bytes();
    let mut snapshot = base;
    let changes = [
        Change::PutDoor(door(MAX_ID, 1)),
        Change::PutPerson(person(MAX_ID, 1, 1)),
        Change::PutCredential(tag(MAX_ID, 1, &[0xff; 4], Some(MAX_ID))),
        Change::PutGroup(crate::fixture::group(MAX_ID, 1, &[MAX_ID], None, &[MAX_ID])),
    ];
    for change in &changes {
        snapshot = snapshot.apply(next(&snapshot), change).unwrap();
    }
    for s in [&snapshot, &snapshot.compact().unwrap()] {
        assert!(
            s.heap_bytes() < before + (16 << 10),
            "{} bytes, {before} before",
            s.heap_bytes()
        );
        let d = decide(s, DoorId(MAX_ID), Presented::tag(&[0xff; 4]), ts(WED_0900));
        assert_eq!(
            d.reason,
            Reason::Granted {
                group: GroupId(MAX_ID),
                schedule: None
            }
        );
        assert_eq!(
            (d.credential, d.person),
            (Some(CredentialId(MAX_ID)), Some(PersonId(MAX_ID)))
        );
    }
}

#[test]
fn per_entity_reads() {
    let snapshot = office();
    // `records()`, not the fixture's records: validity comes back floored to seconds.
    let records = snapshot.records();
    assert_eq!(records.len(), office_records().len());
    for record in &records {
        let found = match record {
            Record::Site(r) => snapshot.site_record(r.id).map(Record::Site),
            Record::Calendar(r) => snapshot.calendar_record(r.id).map(Record::Calendar),
            Record::Iq(r) => snapshot.iq_record(r.id).map(Record::Iq),
            Record::Door(r) => snapshot.door_record(r.id).map(Record::Door),
            Record::Person(r) => snapshot.person_record(r.id).map(Record::Person),
            Record::Credential(r) => snapshot.credential_record(r.id).map(Record::Credential),
            Record::Schedule(r) => snapshot.schedule_record(r.id).map(Record::Schedule),
            Record::Group(r) => snapshot.group_record(r.id).map(Record::Group),
            Record::Roles(_) => continue,
        };
        assert_eq!(found.as_ref(), Some(record));
        if let Record::Credential(r) = record {
            assert_eq!(
                snapshot.credential_by_secret(r.site, r.kind, &r.secret).as_ref(),
                Some(r)
            );
        }
    }
    // Unknown ids, secrets of the wrong kind or site, malformed secrets.
    assert_eq!(snapshot.door_record(DoorId(99)), None);
    assert_eq!(snapshot.credential_record(CredentialId(99)), None);
    assert_eq!(
        snapshot.credential_by_secret(SiteId(2), CredentialKind::Tag, &[2, 2, 2, 2]),
        None
    );
    assert_eq!(
        snapshot.credential_by_secret(SiteId(1), CredentialKind::Pin, &[2, 2, 2, 2]),
        None
    );
    assert_eq!(
        snapshot.credential_by_secret(SiteId(1), CredentialKind::Tag, &[1]),
        None
    );
    assert_eq!(
        snapshot.door_groups(DoorId(1)),
        Some(&[GroupId(1), GroupId(2), GroupId(3)][..])
    );
    assert_eq!(
        snapshot.person_groups(PersonId(3)),
        Some(&[GroupId(1), GroupId(2), GroupId(3)][..])
    );
    // A removed credential is gone from both reads.
    let removed = snapshot
        .apply(next(&snapshot), &Change::RemoveCredential(CredentialId(1)))
        .unwrap();
    assert_eq!(removed.credential_record(CredentialId(1)), None);
    assert_eq!(
        removed.credential_by_secret(SiteId(1), CredentialKind::Tag, &[1, 2, 3, 4]),
        None
    );
}
