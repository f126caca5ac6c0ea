//! The IQ's offline store: decisions from a list (one table), revocations, deltas and door
//! commands, and a list fetched over the link decided from.

use jiff::Timestamp;
use keyway_core::{CredentialKind, Effect};
use keyway_link::ReceivedOfflineList;
use keyway_link::message::*;
use keyway_link::offline::{DeltaOutcome, OfflineStore};

const WORKDAYS_8_TO_18: u32 = 1;
const NIGHTS_22_TO_6: u32 = 2;

fn entry(credential: u32, person: Option<u32>, grants: &[(u32, Option<u32>)]) -> OfflineEntry {
    OfflineEntry {
        credential,
        kind: CredentialKind::Tag,
        secret: vec![0xA0, 0, 0, credential as u8],
        person,
        offline_access: true,
        valid_from: None,
        valid_until: None,
        grants: grants
            .iter()
            .map(|&(door, schedule)| OfflineGrant { door, schedule })
            .collect(),
    }
}

fn list() -> ReceivedOfflineList {
    let mut expiring = entry(4, Some(40), &[(10, None)]);
    expiring.valid_from = Some(ms("2026-11-01T00:00:00Z"));
    expiring.valid_until = Some(ms("2026-12-01T00:00:00Z"));
    ReceivedOfflineList {
        begin: OfflineListBegin {
            revision: 100,
            tags: 5,
            remote_users: 0,
            chunks: 1,
            time_zone: "Europe/Madrid".into(),
            schedules: vec![
                OfflineSchedule {
                    id: WORKDAYS_8_TO_18,
                    periods: vec![OfflinePeriod {
                        days: 0b0001_1111,
                        start: 480,
                        end: 1080,
                    }],
                    from: None,
                    until: None,
                },
                OfflineSchedule {
                    id: NIGHTS_22_TO_6,
                    periods: vec![OfflinePeriod {
                        days: 0b0111_1111,
                        start: 1320,
                        end: 360,
                    }],
                    from: None,
                    until: Some(20261231),
                },
            ],
            holidays: vec![20261225],
        },
        entries: vec![
            entry(1, Some(10), &[(10, Some(WORKDAYS_8_TO_18)), (11, None)]),
            entry(2, Some(20), &[(10, Some(NIGHTS_22_TO_6))]),
            entry(3, None, &[(10, None)]),
            expiring,
            entry(5, Some(50), &[(11, None)]),
        ],
    }
}

fn ms(at: &str) -> i64 {
    at.parse::<Timestamp>().unwrap().as_millisecond()
}

fn tag(credential: u8) -> Vec<u8> {
    vec![0xA0, 0, 0, credential]
}

/// One row per reason: (credential, door, instant, expected reason).
#[test]
fn offline_decisions_follow_the_core_rule() {
    let store = OfflineStore::from_list(&list()).unwrap();
    let rows: &[(u8, u32, &str, &str)] = &[
        (1, 10, "2026-11-30T09:00:00Z", "granted"),          // Monday 10:00 in Madrid
        (1, 10, "2026-11-30T06:59:00Z", "outside_schedule"), // 07:59 local
        (1, 10, "2026-11-30T17:00:00Z", "outside_schedule"), // 18:00 local, end exclusive
        (1, 10, "2026-12-25T09:00:00Z", "holiday"),          // a Friday, but Christmas
        (1, 10, "2026-11-28T10:00:00Z", "outside_schedule"), // Saturday
        (1, 11, "2026-11-28T03:00:00Z", "granted"),          // no schedule: any time
        (1, 12, "2026-11-30T09:00:00Z", "no_right"),
        (2, 10, "2026-11-30T22:30:00Z", "granted"),          // 23:30 local
        (2, 10, "2026-12-01T04:00:00Z", "granted"),          // 05:00 local, after midnight
        (2, 10, "2026-12-01T05:30:00Z", "outside_schedule"), // 06:30 local
        (2, 10, "2027-01-01T03:00:00Z", "outside_schedule"), // after the schedule's last day
        (3, 10, "2026-11-30T09:00:00Z", "unassigned_credential"),
        (4, 10, "2026-10-31T22:59:59Z", "not_yet_valid"),
        (4, 10, "2026-11-15T10:00:00Z", "granted"),
        (4, 10, "2026-12-01T00:00:00Z", "expired"),
        (9, 10, "2026-11-30T09:00:00Z", "unknown_credential"),
    ];
    for &(credential, door, at, want) in rows {
        let got = store.decide(door, CredentialKind::Tag, &tag(credential), at.parse().unwrap());
        assert_eq!(got.reason, want, "credential {credential} door {door} at {at}");
        assert_eq!(
            got.effect == Effect::Allow,
            want == "granted",
            "credential {credential} at {at}"
        );
    }
    // The kind is part of the key.
    assert_eq!(
        store
            .decide(
                10,
                CredentialKind::DigitalKey,
                &tag(1),
                "2026-11-30T09:00:00Z".parse().unwrap()
            )
            .reason,
        "unknown_credential"
    );
}

#[test]
fn revocations_apply_at_once_and_newer_state_supersedes_them() {
    let mut store = OfflineStore::from_list(&list()).unwrap();
    let monday = "2026-11-30T09:00:00Z".parse().unwrap();
    let revoke = |what, id, door| Revocation {
        revision: 101,
        items: vec![RevocationItem { what, id, door }],
    };
    store.apply_revocation(&revoke(RevocationWhat::Credential, 1, None));
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(1), monday).reason,
        "credential_revoked"
    );
    store.apply_revocation(&revoke(RevocationWhat::Person, 50, None));
    assert_eq!(
        store.decide(11, CredentialKind::Tag, &tag(5), monday).reason,
        "person_blocked"
    );
    store.apply_revocation(&revoke(RevocationWhat::PersonAtDoor, 40, Some(10)));
    assert_eq!(
        store
            .decide(
                10,
                CredentialKind::Tag,
                &tag(4),
                "2026-11-15T10:00:00Z".parse().unwrap()
            )
            .reason,
        "no_right"
    );
    // Deltas: applied only when from <= revision < to.
    let delta = |from, to, upserts| OfflineDelta {
        from_revision: from,
        to_revision: to,
        upserts,
        removals: vec![2],
    };
    assert_eq!(store.apply_delta(&delta(100, 100, vec![])), DeltaOutcome::Ignored);
    assert_eq!(store.apply_delta(&delta(101, 102, vec![])), DeltaOutcome::NeedsFullList);
    assert_eq!(
        store.apply_delta(&delta(90, 101, vec![entry(1, Some(10), &[(10, None)])])),
        DeltaOutcome::Applied
    );
    assert_eq!(store.revision(), 101);
    // The restored credential opens again; the removed one is unknown.
    assert_eq!(store.decide(10, CredentialKind::Tag, &tag(1), monday).reason, "granted");
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(2), monday).reason,
        "unknown_credential"
    );
    // Everything: nothing opens until the next full list.
    store.apply_revocation(&revoke(RevocationWhat::Everything, 0, None));
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(1), monday).effect,
        Effect::Deny
    );
    store.replace(&list()).unwrap();
    assert_eq!(store.decide(11, CredentialKind::Tag, &tag(1), monday).reason, "granted");
}

#[test]
fn door_modes_come_from_door_commands() {
    let mut store = OfflineStore::from_list(&list()).unwrap();
    let saturday = "2026-11-28T10:00:00Z".parse().unwrap();
    let command = |command| DoorCommand {
        command_id: 1,
        door: 10,
        command,
        duration_s: 0,
    };
    assert!(store.apply_door_command(&command(DoorCommandKind::OfficeModeOn)));
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(1), saturday).reason,
        "office_mode"
    );
    // Credential checks still come first.
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(3), saturday).reason,
        "unassigned_credential"
    );
    assert!(store.apply_door_command(&command(DoorCommandKind::LockdownOn)));
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(1), saturday).reason,
        "lockdown"
    );
    assert!(!store.apply_door_command(&command(DoorCommandKind::RemoteOpen)));
    store.replace(&list()).unwrap();
    assert_eq!(
        store.decide(10, CredentialKind::Tag, &tag(1), saturday).reason,
        "lockdown",
        "a new list keeps door modes"
    );
}

#[test]
fn an_empty_store_denies_and_bad_lists_are_refused() {
    let store = OfflineStore::empty();
    assert_eq!(
        store
            .decide(10, CredentialKind::Tag, &tag(1), Timestamp::UNIX_EPOCH)
            .reason,
        "unknown_credential"
    );
    let mut bad = list();
    bad.begin.time_zone = "Mars/Olympus".into();
    assert!(OfflineStore::from_list(&bad).is_err());
    let mut bad = list();
    bad.begin.holidays = vec![20261332];
    assert!(OfflineStore::from_list(&bad).is_err());
}
