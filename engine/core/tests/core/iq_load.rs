//! `iq_load`: the tags and the remote (digital key) users that reach an IQ's doors.

use crate::fixture::{credential, door, group, iq, next, person, site, tag};
use jiff::tz::TimeZone;
use keyway_core::{
    Change, CredentialId, CredentialKind, CredentialRecord, DoorRecord, GroupId, IQ_MAX_REMOTE_USERS, IQ_MAX_TAGS,
    IqId, IqLoad, ModelError, PersonId, Record, Revision, Snapshot,
};

/// IQ 1 serves doors 1 and 2, IQ 2 door 3, IQ 3 nothing; door 4 has no IQ.
/// Groups: 1 = door 1 for people 1, 2; 2 = door 2 for people 2, 3; 3 = door 3 for
/// person 4; 4 = door 4 for person 5.
/// Credentials: tags 1, 2 (person 1), 3 (person 2), 4 (person 2, revoked), 8 (person 4),
/// 9 (nobody), 11 (person 5); digital keys 5, 6 (person 3), 7 (person 2); PIN 10 (person 1).
fn gateways() -> Snapshot {
    let with_iq = |id, iq| {
        Record::Door(DoorRecord {
            iq: Some(IqId(iq)),
            ..door(id, 1)
        })
    };
    let key = |id, secret: &[u8], owner| {
        Record::Credential(credential(id, 1, CredentialKind::DigitalKey, secret, Some(owner)))
    };
    let records = vec![
        Record::Site(site(1, TimeZone::UTC, None)),
        Record::Iq(iq(1, 1)),
        Record::Iq(iq(2, 1)),
        Record::Iq(iq(3, 1)),
        with_iq(1, 1),
        with_iq(2, 1),
        with_iq(3, 2),
        Record::Door(door(4, 1)),
        Record::Person(person(1, 1, 0)),
        Record::Person(person(2, 1, 0)),
        Record::Person(person(3, 1, 0)),
        Record::Person(person(4, 1, 0)),
        Record::Person(person(5, 1, 0)),
        Record::Group(group(1, 1, &[1], None, &[1, 2])),
        Record::Group(group(2, 1, &[2], None, &[2, 3])),
        Record::Group(group(3, 1, &[3], None, &[4])),
        Record::Group(group(4, 1, &[4], None, &[5])),
        Record::Credential(tag(1, 1, &[1, 1, 1, 1], Some(1))),
        Record::Credential(tag(2, 1, &[2, 2, 2, 2], Some(1))),
        Record::Credential(tag(3, 1, &[3, 3, 3, 3], Some(2))),
        Record::Credential(CredentialRecord {
            revoked: true,
            ..tag(4, 1, &[4, 4, 4, 4], Some(2))
        }),
        key(5, &[5], 3),
        key(6, &[6], 3),
        key(7, &[7], 2),
        Record::Credential(tag(8, 1, &[8, 8, 8, 8], Some(4))),
        Record::Credential(tag(9, 1, &[9, 9, 9, 9], None)),
        Record::Credential(credential(10, 1, CredentialKind::Pin, b"1010", Some(1))),
        Record::Credential(tag(11, 1, &[1, 1, 1, 2], Some(5))),
    ];
    Snapshot::build(Revision(1), records).unwrap_or_else(|e| panic!("{e}"))
}

/// Tags and remote users.
type Load = (u32, u32);

fn load(snapshot: &Snapshot, id: u32) -> Load {
    let l = snapshot.iq_load(IqId(id)).unwrap_or_else(|e| panic!("{e}"));
    (l.tags, l.remote_users)
}

#[test]
fn counts_tags_and_remote_users() {
    let snapshot = gateways();
    // IQ 1: people 1, 2, 3. Tags 1, 2, 3 (4 is revoked, 9 has nobody, 10 is a PIN);
    // remote users 2 and 3 (person 3 has two keys, counted once).
    assert_eq!(load(&snapshot, 1), (3, 2));
    assert_eq!(load(&snapshot, 2), (1, 0));
    assert_eq!(load(&snapshot, 3), (0, 0));
    assert_eq!(load(&snapshot.compact().unwrap(), 1), (3, 2));
    assert_eq!(
        snapshot.iq_load(IqId(9)),
        Err(ModelError::NotFound { entity: "iq:9".into() })
    );
}

#[test]
fn follows_changes() {
    // Each row: a change, then the loads of IQs 1 and 2.
    let rows: Vec<(Change, Load, Load)> = vec![
        (
            Change::Grant {
                person: PersonId(1),
                group: GroupId(3),
            },
            (3, 2),
            (3, 0),
        ),
        (Change::RevokeCredential(CredentialId(1)), (2, 2), (2, 0)),
        (Change::RestoreCredential(CredentialId(4)), (3, 2), (2, 0)),
        // Person 2 still reaches IQ 1 through group 2.
        (
            Change::Ungrant {
                person: PersonId(2),
                group: GroupId(1),
            },
            (3, 2),
            (2, 0),
        ),
        (Change::RemovePerson(PersonId(3)), (3, 1), (2, 0)),
        (
            Change::PutCredential(tag(12, 1, &[1, 2, 1, 2], Some(2))),
            (4, 1),
            (2, 0),
        ),
        (Change::RemoveCredential(CredentialId(7)), (4, 0), (2, 0)),
        (
            Change::PutCredential(credential(13, 1, CredentialKind::DigitalKey, &[13], Some(1))),
            (4, 1),
            (2, 1),
        ),
        (Change::RemoveGroup(GroupId(2)), (1, 1), (2, 1)),
        // Door 4 moves to IQ 2, bringing person 5's tag.
        (
            Change::PutDoor(DoorRecord {
                iq: Some(IqId(2)),
                ..door(4, 1)
            }),
            (1, 1),
            (3, 1),
        ),
        (Change::PutGroup(group(3, 1, &[3], None, &[])), (1, 1), (1, 0)),
    ];
    let mut snapshot = gateways();
    for (change, iq1, iq2) in rows {
        snapshot = snapshot
            .apply(next(&snapshot), &change)
            .unwrap_or_else(|e| panic!("{change:?}: {e}"));
        assert_eq!((load(&snapshot, 1), load(&snapshot, 2)), (iq1, iq2), "after {change:?}");
        let compacted = snapshot.compact().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (load(&compacted, 1), load(&compacted, 2)),
            (iq1, iq2),
            "compacted, after {change:?}"
        );
    }
}

#[test]
fn limits() {
    let at = |tags, remote_users| IqLoad { tags, remote_users }.within_limits();
    assert!(at(0, 0));
    assert!(at(IQ_MAX_TAGS, IQ_MAX_REMOTE_USERS));
    assert!(!at(IQ_MAX_TAGS + 1, 0));
    assert!(!at(0, IQ_MAX_REMOTE_USERS + 1));
    assert!(gateways().iq_load(IqId(1)).unwrap().within_limits());
}

/// The accessors a caller uses to build a door rule's context from a decision.
#[test]
fn context_accessors() {
    use keyway_core::{DoorId, RoleId, SiteId};
    let madrid = TimeZone::get("Europe/Madrid").unwrap();
    let records = vec![
        Record::Site(site(1, madrid.clone(), None)),
        Record::Door(door(4, 1)),
        Record::Person(person(5, 1, 2)),
    ];
    let snapshot = Snapshot::build(Revision(1), records).unwrap();
    assert_eq!(snapshot.person_role(PersonId(5)), Some(RoleId(2)));
    assert_eq!(snapshot.person_role(PersonId(6)), None);
    assert_eq!(snapshot.door_site(DoorId(4)), Some(SiteId(1)));
    assert_eq!(snapshot.door_site(DoorId(5)), None);
    assert_eq!(
        snapshot.site_time_zone(SiteId(1)).and_then(|z| z.iana_name()),
        Some("Europe/Madrid")
    );
    assert!(snapshot.site_time_zone(SiteId(2)).is_none());
}

/// `offline_plan` counts what the IQ link lists: every credential (PINs and each digital
/// key included) of an unblocked owner who may open one of the IQ's doors, not revoked.
#[test]
fn offline_plans_list_what_the_link_sends() {
    let snapshot = gateways();
    let cases: [(&str, Snapshot, u32, (u32, u32)); 4] = [
        // IQ 1: tags 1, 2, 3; keys 5, 6, 7 and PIN 10 are remote entries.
        ("as built", snapshot.clone(), 1, (3, 4)),
        ("IQ 2", snapshot.clone(), 2, (1, 0)),
        (
            "person 2 blocked: tag 3 and key 7 leave",
            snapshot.apply(Revision(2), &Change::BlockPerson(PersonId(2))).unwrap(),
            1,
            (2, 3),
        ),
        (
            "tag 1 revoked",
            snapshot
                .apply(Revision(2), &Change::RevokeCredential(CredentialId(1)))
                .unwrap(),
            1,
            (2, 4),
        ),
    ];
    for (what, s, id, want) in cases {
        let plan = s.offline_plan(IqId(id)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((plan.tags, plan.remote_users), want, "{what}");
        assert!(plan.left_out.is_empty(), "{what}");
    }
    assert_eq!(snapshot.site_iqs(keyway_core::SiteId(1)), [IqId(1), IqId(2), IqId(3)]);
    assert!(snapshot.offline_plan(IqId(9)).is_err());
}

/// `site_records` takes one site out of a snapshot of several: the records of each site,
/// with the role flags, are exactly `records()`, and each site's calendar goes with it.
#[test]
fn site_records_split_records_by_site() {
    let mut records = gateways().records();
    records.extend([
        Record::Calendar(keyway_core::CalendarRecord {
            id: keyway_core::CalendarId(7),
            calendar: keyway_core::HolidayCalendar::new(vec![jiff::civil::date(2026, 12, 25)]),
        }),
        Record::Site(site(2, TimeZone::UTC, Some(7))),
        Record::Iq(iq(20, 2)),
        Record::Door(door(20, 2)),
        Record::Person(person(20, 2, 3)),
        Record::Credential(tag(20, 2, &[9, 9, 9, 9], Some(20))),
        Record::Group(group(20, 2, &[20], None, &[20])),
    ]);
    let snapshot = Snapshot::build(Revision(1), records).unwrap();
    let first = snapshot.site_records(keyway_core::SiteId(1));
    let second = snapshot.site_records(keyway_core::SiteId(2));
    assert_eq!(
        second.len(),
        7,
        "the calendar, site, IQ, door, person, tag and group: {second:?}"
    );
    assert!(
        !first.iter().any(|r| matches!(r, Record::Calendar(_))),
        "site 1 has no calendar"
    );
    let mut split: Vec<Record> = first.into_iter().chain(second).collect();
    split.extend(snapshot.records().into_iter().filter(|r| matches!(r, Record::Roles(_))));
    let mut all = snapshot.records();
    let key = |r: &Record| format!("{r:?}");
    split.sort_by_key(key);
    all.sort_by_key(key);
    assert_eq!(split, all);
    assert!(snapshot.site_records(keyway_core::SiteId(3)).is_empty());
}
