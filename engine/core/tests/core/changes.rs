//! Every change is visible to the next decision, on the plain snapshot and after
//! compaction; `compact()` and a `records()` round-trip through `build` decide alike.

use crate::fixture::{
    GUARD, STAFF, WED_0900, WED_1900, XMAS_0900, battery, calendar, check, door, group, iq, next, office,
    office_records, person, roles, schedule, site, tag, ts, zone,
};
use keyway_core::{
    Change, CredentialId, CredentialKind, CredentialRecord, DaySet, DoorId, DoorMode, DoorRecord, GroupId, IqId,
    ModelError, Period, PersonId, PersonRecord, Presented, Record, Revision, ScheduleId, SiteId, SiteRecord, Snapshot,
};

/// A probe: door, what is presented, when, the decision before the last change and after it.
type Probe = (u32, Presented<'static>, &'static str, &'static str, &'static str);

const C1: Presented<'static> = Presented::tag(&[1, 2, 3, 4]);
const C2: Presented<'static> = Presented::tag(&[2, 2, 2, 2]);
const C3: Presented<'static> = Presented::tag(&[3, 3, 3, 3]);
const C4: Presented<'static> = Presented::tag(&[4, 4, 4, 4]);
const C7: Presented<'static> = Presented::pin(b"1234");
const C8: Presented<'static> = Presented::digital_key(&[8]);
const C20: Presented<'static> = Presented::tag(&[1, 2, 3, 4]);

const GRANTED_1: &str = "allow granted by `group:1` within `schedule:1` credential:1 person:1";

/// Apply `changes` to the office fixture in order; probe before and after the last one,
/// on the plain snapshot and on its compaction.
#[track_caller]
fn check_change(changes: &[Change], probes: &[Probe]) {
    let mut snapshot = office();
    let Some((last, setup)) = changes.split_last() else {
        panic!("no change to check")
    };
    for change in setup {
        snapshot = snapshot
            .apply(next(&snapshot), change)
            .unwrap_or_else(|e| panic!("setup {change:?}: {e}"));
    }
    for &(door, presented, at, before, _) in probes {
        check(&snapshot, door, presented, ts(at), before);
    }
    let after = snapshot
        .apply(next(&snapshot), last)
        .unwrap_or_else(|e| panic!("{last:?}: {e}"));
    assert_eq!(after.revision(), next(&snapshot));
    let compacted = after.compact().unwrap_or_else(|e| panic!("compact: {e}"));
    for &(door, presented, at, _, expect) in probes {
        check(&after, door, presented, ts(at), expect);
        check(&compacted, door, presented, ts(at), expect);
    }
    // The snapshot the change was applied to is untouched.
    for &(door, presented, at, before, _) in probes {
        check(&snapshot, door, presented, ts(at), before);
    }
}

fn credential_1() -> CredentialRecord {
    tag(1, 1, &[1, 2, 3, 4], Some(1))
}

#[test]
fn block_and_unblock() {
    check_change(
        &[Change::BlockPerson(PersonId(1))],
        &[
            (1, C1, WED_0900, GRANTED_1, "deny person_blocked credential:1 person:1"),
            (
                2,
                C1,
                WED_0900,
                "allow office_mode credential:1 person:1",
                "deny person_blocked credential:1 person:1",
            ),
        ],
    );
    check_change(
        &[Change::UnblockPerson(PersonId(2))],
        &[(
            1,
            C2,
            WED_0900,
            "deny person_blocked credential:2 person:2",
            "allow granted by `group:1` within `schedule:1` credential:2 person:2",
        )],
    );
    // Blocking twice, or unblocking someone not blocked, is harmless.
    check_change(
        &[Change::BlockPerson(PersonId(2))],
        &[(
            1,
            C2,
            WED_0900,
            "deny person_blocked credential:2 person:2",
            "deny person_blocked credential:2 person:2",
        )],
    );
    check_change(
        &[Change::UnblockPerson(PersonId(1))],
        &[(1, C1, WED_0900, GRANTED_1, GRANTED_1)],
    );
}

#[test]
fn revoke_and_restore() {
    check_change(
        &[Change::RevokeCredential(CredentialId(1))],
        &[(
            1,
            C1,
            WED_0900,
            GRANTED_1,
            "deny credential_revoked credential:1 person:1",
        )],
    );
    check_change(
        &[Change::RestoreCredential(CredentialId(3))],
        &[(
            1,
            C3,
            WED_0900,
            "deny credential_revoked credential:3 person:1",
            "allow granted by `group:1` within `schedule:1` credential:3 person:1",
        )],
    );
    // Revoking one credential leaves the same bytes on another site alone.
    check_change(
        &[Change::RevokeCredential(CredentialId(1))],
        &[(
            20,
            C20,
            WED_0900,
            "deny lockdown credential:20 person:20",
            "deny lockdown credential:20 person:20",
        )],
    );
    // A revocation survives re-putting other credentials and compaction.
    check_change(
        &[
            Change::RevokeCredential(CredentialId(1)),
            Change::PutCredential(tag(30, 1, &[7, 7, 7, 7], Some(1))),
        ],
        &[(
            1,
            C1,
            WED_0900,
            "deny credential_revoked credential:1 person:1",
            "deny credential_revoked credential:1 person:1",
        )],
    );
}

#[test]
fn put_and_remove_credential() {
    let new_tag = Presented::tag(&[7, 7, 7, 7]);
    check_change(
        &[Change::PutCredential(tag(30, 1, &[7, 7, 7, 7], Some(1)))],
        &[(
            1,
            new_tag,
            WED_0900,
            "deny unknown_credential",
            "allow granted by `group:1` within `schedule:1` credential:30 person:1",
        )],
    );
    // Replacing a credential's secret frees the old one.
    check_change(
        &[Change::PutCredential(CredentialRecord {
            secret: vec![7, 7, 7, 7],
            ..credential_1()
        })],
        &[
            (1, C1, WED_0900, GRANTED_1, "deny unknown_credential"),
            (1, new_tag, WED_0900, "deny unknown_credential", GRANTED_1),
        ],
    );
    // Giving an unassigned tag an owner; changing its kind.
    check_change(
        &[Change::PutCredential(tag(4, 1, &[4, 4, 4, 4], Some(4)))],
        &[(
            1,
            C4,
            WED_0900,
            "deny unassigned_credential credential:4",
            "deny no_right credential:4 person:4",
        )],
    );
    check_change(
        &[Change::PutCredential(CredentialRecord {
            kind: CredentialKind::DigitalKey,
            ..credential_1()
        })],
        &[
            (1, C1, WED_0900, GRANTED_1, "deny unknown_credential"),
            (
                1,
                Presented::digital_key(&[1, 2, 3, 4]),
                WED_0900,
                "deny unknown_credential",
                GRANTED_1,
            ),
        ],
    );
    // Validity and revocation come from the record.
    check_change(
        &[Change::PutCredential(CredentialRecord {
            valid_until: Some(ts(WED_0900)),
            ..credential_1()
        })],
        &[(1, C1, WED_0900, GRANTED_1, "deny expired credential:1 person:1")],
    );
    check_change(
        &[Change::PutCredential(CredentialRecord {
            valid_from: Some(ts("2026-11-25T09:00:01Z")),
            ..credential_1()
        })],
        &[(1, C1, WED_0900, GRANTED_1, "deny not_yet_valid credential:1 person:1")],
    );
    check_change(
        &[Change::PutCredential(CredentialRecord {
            revoked: true,
            ..credential_1()
        })],
        &[(
            1,
            C1,
            WED_0900,
            GRANTED_1,
            "deny credential_revoked credential:1 person:1",
        )],
    );
    check_change(
        &[Change::PutCredential(tag(3, 1, &[3, 3, 3, 3], Some(1)))],
        &[(
            1,
            C3,
            WED_0900,
            "deny credential_revoked credential:3 person:1",
            "allow granted by `group:1` within `schedule:1` credential:3 person:1",
        )],
    );
    // A credential stays on its site, as every record does.
    let snapshot = office();
    let moved = snapshot
        .apply(
            next(&snapshot),
            &Change::PutCredential(tag(1, 2, &[7, 7, 7, 7], Some(21))),
        )
        .unwrap_err();
    assert_eq!(
        moved,
        ModelError::SiteChange {
            entity: "credential:1".into()
        }
    );
    check_change(
        &[Change::RemoveCredential(CredentialId(1))],
        &[(1, C1, WED_0900, GRANTED_1, "deny unknown_credential")],
    );
    // A removed credential's secret can be claimed again, by a new id.
    check_change(
        &[
            Change::RemoveCredential(CredentialId(1)),
            Change::PutCredential(tag(31, 1, &[1, 2, 3, 4], Some(3))),
        ],
        &[(
            1,
            C1,
            WED_0900,
            "deny unknown_credential",
            "allow granted by `group:1` within `schedule:1` credential:31 person:3",
        )],
    );
    // A removed revoked credential comes back unrevoked unless its record says otherwise.
    check_change(
        &[
            Change::RemoveCredential(CredentialId(3)),
            Change::PutCredential(tag(3, 1, &[3, 3, 3, 3], Some(1))),
        ],
        &[(
            1,
            C3,
            WED_0900,
            "deny unknown_credential",
            "allow granted by `group:1` within `schedule:1` credential:3 person:1",
        )],
    );
}

#[test]
fn grant_and_ungrant() {
    check_change(
        &[Change::Grant {
            person: PersonId(4),
            group: GroupId(1),
        }],
        &[(
            1,
            C8,
            WED_0900,
            "deny no_right credential:8 person:4",
            "allow granted by `group:1` within `schedule:1` credential:8 person:4",
        )],
    );
    check_change(
        &[Change::Ungrant {
            person: PersonId(1),
            group: GroupId(1),
        }],
        &[(1, C1, WED_0900, GRANTED_1, "deny no_right credential:1 person:1")],
    );
    // Ungranting one of several groups: the next one answers.
    check_change(
        &[Change::Ungrant {
            person: PersonId(3),
            group: GroupId(1),
        }],
        &[(
            1,
            C7,
            WED_0900,
            "allow granted by `group:1` within `schedule:1` credential:7 person:3",
            "allow granted by `group:3` at any time credential:7 person:3",
        )],
    );
}

#[test]
fn put_and_remove_person() {
    check_change(
        &[Change::PutPerson(PersonRecord {
            blocked: true,
            ..person(1, 1, STAFF)
        })],
        &[(1, C1, WED_0900, GRANTED_1, "deny person_blocked credential:1 person:1")],
    );
    // Re-putting a blocked person unblocked lifts the block; memberships stay.
    check_change(
        &[Change::PutPerson(person(2, 1, STAFF))],
        &[(
            1,
            C2,
            WED_0900,
            "deny person_blocked credential:2 person:2",
            "allow granted by `group:1` within `schedule:1` credential:2 person:2",
        )],
    );
    // A new role: the guard is no longer exempt from lockdown.
    check_change(
        &[Change::PutPerson(person(3, 1, STAFF))],
        &[(
            4,
            C7,
            WED_0900,
            "allow granted by `group:1` within `schedule:1` credential:7 person:3",
            "deny lockdown credential:7 person:3",
        )],
    );
    // Removing a person leaves their credentials unassigned.
    check_change(
        &[Change::RemovePerson(PersonId(1))],
        &[
            (1, C1, WED_0900, GRANTED_1, "deny unassigned_credential credential:1"),
            (
                2,
                C1,
                WED_0900,
                "allow office_mode credential:1 person:1",
                "deny unassigned_credential credential:1",
            ),
            (
                1,
                C3,
                WED_0900,
                "deny credential_revoked credential:3 person:1",
                "deny credential_revoked credential:3",
            ),
        ],
    );
    check_change(
        &[Change::RemovePerson(PersonId(2))],
        &[(
            1,
            C2,
            WED_0900,
            "deny person_blocked credential:2 person:2",
            "deny unassigned_credential credential:2",
        )],
    );
    // A new person with the old id does not inherit the credentials, the groups or the
    // block of the one removed.
    check_change(
        &[
            Change::RemovePerson(PersonId(2)),
            Change::PutPerson(person(2, 1, STAFF)),
        ],
        &[(
            1,
            C2,
            WED_0900,
            "deny unassigned_credential credential:2",
            "deny unassigned_credential credential:2",
        )],
    );
    check_change(
        &[
            Change::RemovePerson(PersonId(2)),
            Change::PutPerson(person(2, 1, STAFF)),
            Change::PutCredential(tag(2, 1, &[2, 2, 2, 2], Some(2))),
        ],
        &[(
            1,
            C2,
            WED_0900,
            "deny unassigned_credential credential:2",
            "deny no_right credential:2 person:2",
        )],
    );
}

#[test]
fn doors() {
    check_change(
        &[Change::PutDoor(DoorRecord {
            lockdown: true,
            ..door(1, 1)
        })],
        &[(1, C1, WED_0900, GRANTED_1, "deny lockdown credential:1 person:1")],
    );
    // Replacing a door keeps the groups that open it.
    check_change(
        &[Change::PutDoor(DoorRecord {
            mode: DoorMode::Office,
            ..door(1, 1)
        })],
        &[
            (
                1,
                C8,
                WED_1900,
                "deny no_right credential:8 person:4",
                "allow office_mode credential:8 person:4",
            ),
            (1, C1, WED_0900, GRANTED_1, "allow office_mode credential:1 person:1"),
        ],
    );
    check_change(
        &[Change::PutDoor(door(4, 1))],
        &[(4, C1, WED_0900, "deny lockdown credential:1 person:1", GRANTED_1)],
    );
    check_change(
        &[Change::PutDoor(door(8, 1))],
        &[(
            8,
            C1,
            WED_0900,
            "deny unknown_door",
            "deny no_right credential:1 person:1",
        )],
    );
    check_change(
        &[Change::RemoveDoor(DoorId(7))],
        &[(
            7,
            C1,
            WED_0900,
            "deny no_right credential:1 person:1",
            "deny unknown_door",
        )],
    );
    check_change(
        &[Change::SetDoorMode {
            door: DoorId(1),
            mode: DoorMode::Office,
        }],
        &[(
            1,
            C8,
            WED_0900,
            "deny no_right credential:8 person:4",
            "allow office_mode credential:8 person:4",
        )],
    );
    check_change(
        &[Change::SetDoorMode {
            door: DoorId(2),
            mode: DoorMode::Normal,
        }],
        &[(
            2,
            C8,
            WED_0900,
            "allow office_mode credential:8 person:4",
            "deny no_right credential:8 person:4",
        )],
    );
    check_change(
        &[Change::SetDoorMode {
            door: DoorId(7),
            mode: DoorMode::OfficeScheduled(ScheduleId(2)),
        }],
        &[
            (
                7,
                C8,
                "2026-12-25T11:00:00Z",
                "deny no_right credential:8 person:4",
                "allow office_mode credential:8 person:4",
            ),
            (
                7,
                C8,
                WED_0900,
                "deny no_right credential:8 person:4",
                "deny no_right credential:8 person:4",
            ),
        ],
    );
    check_change(
        &[Change::SetDoorLockdown {
            door: DoorId(1),
            on: true,
        }],
        &[(1, C1, WED_0900, GRANTED_1, "deny lockdown credential:1 person:1")],
    );
    check_change(
        &[Change::SetDoorLockdown {
            door: DoorId(5),
            on: false,
        }],
        &[(
            5,
            C8,
            WED_0900,
            "deny lockdown credential:8 person:4",
            "allow office_mode credential:8 person:4",
        )],
    );
}

#[test]
fn site_lockdown() {
    check_change(
        &[Change::SetSiteLockdown {
            site: SiteId(1),
            on: true,
        }],
        &[
            (1, C1, WED_0900, GRANTED_1, "deny lockdown credential:1 person:1"),
            (
                2,
                C8,
                WED_0900,
                "allow office_mode credential:8 person:4",
                "deny lockdown credential:8 person:4",
            ),
            (
                1,
                C7,
                WED_0900,
                "allow granted by `group:1` within `schedule:1` credential:7 person:3",
                "allow granted by `group:1` within `schedule:1` credential:7 person:3",
            ),
        ],
    );
    check_change(
        &[Change::SetSiteLockdown {
            site: SiteId(2),
            on: false,
        }],
        &[
            (
                20,
                C20,
                WED_0900,
                "deny lockdown credential:20 person:20",
                "allow granted by `group:20` within `schedule:20` credential:20 person:20",
            ),
            (
                21,
                C20,
                WED_0900,
                "deny lockdown credential:20 person:20",
                "allow office_mode credential:20 person:20",
            ),
        ],
    );
    // A door's own lockdown outlives the site's.
    check_change(
        &[
            Change::SetSiteLockdown {
                site: SiteId(1),
                on: true,
            },
            Change::SetSiteLockdown {
                site: SiteId(1),
                on: false,
            },
        ],
        &[(
            4,
            C1,
            WED_0900,
            "deny lockdown credential:1 person:1",
            "deny lockdown credential:1 person:1",
        )],
    );
}

#[test]
fn groups() {
    check_change(
        &[Change::PutGroup(group(1, 1, &[1, 3, 4, 5, 7], Some(1), &[1, 2, 3]))],
        &[(
            7,
            C1,
            WED_0900,
            "deny no_right credential:1 person:1",
            "allow granted by `group:1` within `schedule:1` credential:1 person:1",
        )],
    );
    check_change(
        &[Change::PutGroup(group(1, 1, &[3, 4, 5], Some(1), &[1, 2, 3]))],
        &[(1, C1, WED_0900, GRANTED_1, "deny no_right credential:1 person:1")],
    );
    check_change(
        &[Change::PutGroup(group(1, 1, &[1, 3, 4, 5], None, &[1, 2, 3]))],
        &[(
            1,
            C1,
            WED_1900,
            "deny outside_schedule credential:1 person:1",
            "allow granted by `group:1` at any time credential:1 person:1",
        )],
    );
    check_change(
        &[Change::PutGroup(group(1, 1, &[1, 3, 4, 5], Some(1), &[2, 3]))],
        &[(1, C1, WED_0900, GRANTED_1, "deny no_right credential:1 person:1")],
    );
    check_change(
        &[Change::PutGroup(group(4, 1, &[7], None, &[4]))],
        &[(
            7,
            C8,
            WED_0900,
            "deny no_right credential:8 person:4",
            "allow granted by `group:4` at any time credential:8 person:4",
        )],
    );
    // A new group with a lower id than the one granting wins.
    check_change(
        &[Change::PutGroup(group(0, 1, &[1], None, &[1]))],
        &[(
            1,
            C1,
            WED_0900,
            GRANTED_1,
            "allow granted by `group:0` at any time credential:1 person:1",
        )],
    );
    check_change(
        &[Change::RemoveGroup(GroupId(1))],
        &[(1, C1, WED_0900, GRANTED_1, "deny no_right credential:1 person:1")],
    );
    // Once no group opens door 7, it can be removed.
    check_change(
        &[
            Change::PutGroup(group(4, 1, &[7], None, &[4])),
            Change::RemoveGroup(GroupId(4)),
            Change::RemoveDoor(DoorId(7)),
        ],
        &[(
            7,
            C8,
            WED_0900,
            "deny no_right credential:8 person:4",
            "deny unknown_door",
        )],
    );
}

#[test]
fn schedules() {
    check_change(
        &[Change::PutSchedule(schedule(
            1,
            1,
            vec![Period::hm(DaySet::EVERY_DAY, (0, 0), (24, 0))],
            None,
        ))],
        &[
            (
                1,
                C1,
                WED_1900,
                "deny outside_schedule credential:1 person:1",
                "allow granted by `group:1` within `schedule:1` credential:1 person:1",
            ),
            (
                1,
                C1,
                XMAS_0900,
                "deny holiday credential:1 person:1",
                "deny holiday credential:1 person:1",
            ),
            // Door 3 is in office mode while schedule 1 is open.
            (
                3,
                C8,
                WED_1900,
                "deny no_right credential:8 person:4",
                "allow office_mode credential:8 person:4",
            ),
        ],
    );
    // Once nothing uses a schedule it can be removed, and then nothing can name it.
    let mut snapshot = office();
    for change in [
        Change::PutSchedule(schedule(5, 1, vec![Period::hm(DaySet::WEEKEND, (9, 0), (12, 0))], None)),
        Change::SetDoorMode {
            door: DoorId(7),
            mode: DoorMode::OfficeScheduled(ScheduleId(5)),
        },
        Change::SetDoorMode {
            door: DoorId(7),
            mode: DoorMode::Normal,
        },
        Change::RemoveSchedule(ScheduleId(5)),
    ] {
        snapshot = snapshot
            .apply(next(&snapshot), &change)
            .unwrap_or_else(|e| panic!("{change:?}: {e}"));
    }
    let refused = snapshot.apply(
        next(&snapshot),
        &Change::SetDoorMode {
            door: DoorId(7),
            mode: DoorMode::OfficeScheduled(ScheduleId(5)),
        },
    );
    assert_eq!(
        refused.map(|_| ()),
        Err(ModelError::UnknownReference {
            from: "door:7".into(),
            to: "schedule:5".into(),
        })
    );
    assert!(
        !snapshot
            .records()
            .iter()
            .any(|r| matches!(r, Record::Schedule(s) if s.id == ScheduleId(5)))
    );
}

#[test]
fn iqs() {
    let mut snapshot = office();
    let apply = |snapshot: &mut Snapshot, change: Change| -> Result<(), ModelError> {
        *snapshot = snapshot.apply(next(snapshot), &change)?;
        Ok(())
    };
    apply(&mut snapshot, Change::PutIq(iq(1, 1))).unwrap();
    apply(
        &mut snapshot,
        Change::PutDoor(DoorRecord {
            iq: Some(IqId(1)),
            ..door(1, 1)
        }),
    )
    .unwrap();
    assert!(snapshot.records().contains(&Record::Iq(iq(1, 1))));
    // Tags of people in groups 1-3 (door 1), unrevoked: credentials 1, 2, 5, 6, 10, 11, 12.
    assert_eq!(snapshot.iq_load(IqId(1)).map(|l| l.tags), Ok(7));
    assert_eq!(
        apply(&mut snapshot, Change::RemoveIq(IqId(1))),
        Err(ModelError::InUse {
            entity: "iq:1".into(),
            used_by: "door:1".into(),
        })
    );
    apply(&mut snapshot, Change::PutDoor(door(1, 1))).unwrap();
    apply(&mut snapshot, Change::RemoveIq(IqId(1))).unwrap();
    assert_eq!(
        snapshot.iq_load(IqId(1)),
        Err(ModelError::NotFound { entity: "iq:1".into() })
    );
    assert_eq!(
        apply(
            &mut snapshot,
            Change::PutDoor(DoorRecord {
                iq: Some(IqId(1)),
                ..door(1, 1)
            })
        ),
        Err(ModelError::UnknownReference {
            from: "door:1".into(),
            to: "iq:1".into(),
        })
    );
    // Decisions do not depend on the IQ.
    check(&snapshot, 1, C1, ts(WED_0900), GRANTED_1);
}

#[test]
fn sites_and_calendars() {
    // The site moves to New York: 09:00 UTC is 04:00 there.
    check_change(
        &[Change::PutSite(site(1, zone("America/New_York"), Some(1)))],
        &[
            (
                1,
                C1,
                WED_0900,
                GRANTED_1,
                "deny outside_schedule credential:1 person:1",
            ),
            (
                1,
                C1,
                "2026-11-25T13:00:00Z",
                "allow granted by `group:1` within `schedule:1` credential:1 person:1",
                GRANTED_1,
            ),
            (
                1,
                C1,
                "2026-11-25T22:30:00Z",
                "deny outside_schedule credential:1 person:1",
                GRANTED_1,
            ),
        ],
    );
    // The site drops its holiday calendar.
    check_change(
        &[Change::PutSite(site(1, jiff::tz::TimeZone::UTC, None))],
        &[(1, C1, XMAS_0900, "deny holiday credential:1 person:1", GRANTED_1)],
    );
    check_change(
        &[Change::PutSite(SiteRecord {
            lockdown: true,
            ..site(1, jiff::tz::TimeZone::UTC, Some(1))
        })],
        &[(1, C1, WED_0900, GRANTED_1, "deny lockdown credential:1 person:1")],
    );
    // A new site takes doors, people and credentials.
    check_change(
        &[
            Change::PutSite(site(3, zone("Europe/Madrid"), None)),
            Change::PutDoor(door(30, 3)),
            Change::PutPerson(person(30, 3, STAFF)),
            Change::PutCredential(tag(30, 3, &[1, 2, 3, 4], Some(30))),
            Change::PutGroup(group(30, 3, &[30], None, &[30])),
        ],
        &[(
            30,
            C1,
            WED_0900,
            "deny no_right credential:30 person:30",
            "allow granted by `group:30` at any time credential:30 person:30",
        )],
    );
    // The calendar changes: Wednesday becomes a holiday, Christmas does not.
    check_change(
        &[Change::PutCalendar(calendar(1, &["2026-11-25"]))],
        &[
            (1, C1, WED_0900, GRANTED_1, "deny holiday credential:1 person:1"),
            (1, C1, XMAS_0900, "deny holiday credential:1 person:1", GRANTED_1),
        ],
    );
    // A new calendar, then a site that uses it.
    check_change(
        &[
            Change::PutCalendar(calendar(2, &["2026-11-25"])),
            Change::PutSite(site(1, jiff::tz::TimeZone::UTC, Some(2))),
        ],
        &[(1, C1, WED_0900, GRANTED_1, "deny holiday credential:1 person:1")],
    );
}

#[test]
fn role_flags() {
    check_change(
        &[Change::SetRoles(roles(&[]))],
        &[(
            4,
            C7,
            WED_0900,
            "allow granted by `group:1` within `schedule:1` credential:7 person:3",
            "deny lockdown credential:7 person:3",
        )],
    );
    check_change(
        &[Change::SetRoles(roles(&[STAFF, GUARD]))],
        &[
            (4, C1, WED_0900, "deny lockdown credential:1 person:1", GRANTED_1),
            (
                20,
                C20,
                WED_0900,
                "deny lockdown credential:20 person:20",
                "allow granted by `group:20` within `schedule:20` credential:20 person:20",
            ),
        ],
    );
    // Role ids are u16: the largest works too.
    check_change(
        &[
            Change::PutPerson(person(1, 1, u16::MAX)),
            Change::SetRoles(roles(&[u16::MAX])),
        ],
        &[(4, C1, WED_0900, "deny lockdown credential:1 person:1", GRANTED_1)],
    );
}

/// A long run of changes touching every table, applied to the office fixture.
fn churn() -> Vec<Change> {
    vec![
        Change::BlockPerson(PersonId(1)),
        Change::UnblockPerson(PersonId(2)),
        Change::RevokeCredential(CredentialId(7)),
        Change::RestoreCredential(CredentialId(3)),
        Change::PutCredential(tag(30, 1, &[7, 7, 7, 7], Some(4))),
        Change::PutCredential(tag(1, 1, &[1, 2, 3, 5], Some(1))),
        Change::PutCredential(tag(31, 1, &[1, 2, 3, 4], Some(3))),
        Change::RemoveCredential(CredentialId(6)),
        Change::Grant {
            person: PersonId(4),
            group: GroupId(1),
        },
        Change::Ungrant {
            person: PersonId(3),
            group: GroupId(3),
        },
        Change::PutPerson(person(5, 1, GUARD)),
        Change::PutCredential(CredentialRecord {
            valid_until: Some(ts("2026-11-25T12:00:00.5Z")),
            ..crate::fixture::credential(32, 1, CredentialKind::Pin, b"0000", Some(5))
        }),
        Change::RemovePerson(PersonId(2)),
        Change::PutDoor(door(8, 1)),
        Change::SetDoorMode {
            door: DoorId(6),
            mode: DoorMode::OfficeScheduled(ScheduleId(2)),
        },
        Change::SetDoorLockdown {
            door: DoorId(4),
            on: false,
        },
        Change::SetSiteLockdown {
            site: SiteId(2),
            on: false,
        },
        Change::PutGroup(group(4, 1, &[8, 7, 2], Some(1), &[5, 1, 4])),
        Change::PutSchedule(schedule(
            6,
            1,
            vec![Period::hm(DaySet::EVERY_DAY, (20, 0), (7, 0))],
            None,
        )),
        Change::PutGroup(group(5, 1, &[1, 8], Some(6), &[5])),
        Change::RemoveGroup(GroupId(2)),
        Change::PutIq(iq(1, 1)),
        Change::PutDoor(DoorRecord {
            iq: Some(IqId(1)),
            ..door(7, 1)
        }),
        Change::PutCalendar(calendar(1, &["2026-11-25", "2026-12-25"])),
        Change::PutSite(site(2, zone("Europe/Madrid"), Some(1))),
        Change::SetRoles(roles(&[STAFF])),
        Change::RemoveCredential(CredentialId(30)),
        Change::PutCredential(tag(33, 1, &[7, 7, 7, 7], Some(1))),
    ]
}

fn churned() -> Snapshot {
    let mut snapshot = office();
    for change in churn() {
        snapshot = snapshot
            .apply(next(&snapshot), &change)
            .unwrap_or_else(|e| panic!("{change:?}: {e}"));
    }
    snapshot
}

#[test]
fn compaction_keeps_every_decision() {
    for snapshot in [office(), churned()] {
        let compacted = snapshot.compact().unwrap();
        assert_eq!(compacted.revision(), snapshot.revision());
        assert_eq!(compacted.overlay_len(), 0);
        assert_eq!(compacted.credential_count(), snapshot.credential_count());
        assert_eq!(battery(&compacted), battery(&snapshot));
        assert_eq!(compacted.records(), snapshot.records());
    }
    // The churn went through the overlays, which compaction empties.
    assert!(churned().overlay_len() > 0);
}

#[test]
fn records_round_trip_through_build() {
    // The fixture's own records come back, in the canonical order.
    let snapshot = office();
    let records = snapshot.records();
    let mut expected = office_records();
    expected.sort_by_key(canonical_order);
    let mut got = records.clone();
    got.sort_by_key(canonical_order);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        match (g, e) {
            // Validity is kept in whole seconds.
            (Record::Credential(g), Record::Credential(e)) => {
                assert_eq!(g.valid_from.map(|t| t.as_second()), e.valid_from.map(|t| t.as_second()));
                assert_eq!(
                    g.valid_until.map(|t| t.as_second()),
                    e.valid_until.map(|t| t.as_second())
                );
                assert_eq!(
                    CredentialRecord {
                        valid_from: None,
                        valid_until: None,
                        ..g.clone()
                    },
                    CredentialRecord {
                        valid_from: None,
                        valid_until: None,
                        ..e.clone()
                    }
                );
            }
            _ => assert_eq!(g, e),
        }
    }

    for snapshot in [office(), churned()] {
        let rebuilt = Snapshot::build(snapshot.revision(), snapshot.records()).unwrap();
        assert_eq!(rebuilt.records(), snapshot.records());
        assert_eq!(battery(&rebuilt), battery(&snapshot));
        assert!(snapshot.has_person(PersonId(1)) && rebuilt.has_person(PersonId(1)));
        assert_eq!(rebuilt.has_door(DoorId(8)), snapshot.has_door(DoorId(8)));
    }
    // What the churn did is in the records.
    let records = churned().records();
    assert!(records.contains(&Record::Person(PersonRecord {
        blocked: true,
        ..person(1, 1, STAFF)
    })));
    assert!(
        !records
            .iter()
            .any(|r| matches!(r, Record::Person(p) if p.id == PersonId(2)))
    );
    assert!(records.contains(&Record::Credential(tag(2, 1, &[2, 2, 2, 2], None))));
    assert!(records.contains(&Record::Group(group(4, 1, &[2, 7, 8], Some(1), &[1, 4, 5]))));
    assert!(records.contains(&Record::Roles(roles(&[STAFF]))));
    assert!(records.contains(&Record::Site(site(2, zone("Europe/Madrid"), Some(1)))));
    assert!(records.contains(&Record::Calendar(calendar(1, &["2026-12-25", "2026-11-25"]))));
}

fn canonical_order(record: &Record) -> (u8, u64) {
    match record {
        Record::Calendar(r) => (0, r.id.get().into()),
        Record::Site(r) => (1, r.id.get().into()),
        Record::Iq(r) => (2, r.id.get().into()),
        Record::Schedule(r) => (3, r.id.get().into()),
        Record::Door(r) => (4, r.id.get().into()),
        Record::Person(r) => (5, r.id.get().into()),
        Record::Credential(r) => (6, r.id.get().into()),
        Record::Group(r) => (7, r.id.get().into()),
        Record::Roles(_) => (8, 0),
    }
}

#[test]
fn revisions_advance_with_each_change() {
    let snapshot = office();
    let later = snapshot.apply(Revision(10), &Change::BlockPerson(PersonId(1))).unwrap();
    assert_eq!(later.revision(), Revision(10));
    let decision = keyway_core::decide(&later, DoorId(1), C1, ts(WED_0900));
    assert_eq!(decision.revision, Revision(10));
    // Revisions may skip, but never repeat or go back.
    assert_eq!(
        later
            .apply(Revision(10), &Change::UnblockPerson(PersonId(1)))
            .map(|_| ()),
        Err(ModelError::StaleRevision {
            current: Revision(10),
            given: Revision(10),
        })
    );
    assert!(
        later
            .apply(Revision(u64::MAX), &Change::UnblockPerson(PersonId(1)))
            .is_ok()
    );
}
