//! Bad input. Requests with any bytes, any door and any instant are denied with a reason
//! (the reference's), never a panic. Malformed records are refused by `build` with their
//! specific error; refused changes leave the snapshot, and the published cell, as they were.

use crate::fixture::{
    GUARD, STAFF, battery, calendar, credential, door, group, iq, next, office, office_records, person, schedule, site,
    tag, ts, zone,
};
use crate::reference::Model;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use keyway_core::{
    CalendarRecord, Change, CredentialId, CredentialKind, DaySet, DoorId, DoorMode, DoorRecord, GroupId,
    HolidayCalendar, IqId, MAX_ID, ModelError, Period, PersonId, Presented, Record, Revision, ScheduleId, SiteId,
    SiteRecord, Snapshot, SnapshotCell, decide,
};
use proptest::prelude::*;

/// The office fixture with site 1 in `zone_name`, its calendar holding the first and the
/// last date there are, and schedules that cross midnight.
fn office_in(zone_name: &str) -> Vec<Record> {
    office_records()
        .into_iter()
        .map(|r| match r {
            Record::Site(s) if s.id == SiteId(1) => Record::Site(SiteRecord {
                time_zone: zone(zone_name),
                ..s
            }),
            Record::Calendar(c) => Record::Calendar(CalendarRecord {
                id: c.id,
                calendar: HolidayCalendar::new(vec![Date::MIN, Date::MAX, crate::fixture::day("2026-12-25")]),
            }),
            Record::Schedule(s) if s.id == ScheduleId(2) => Record::Schedule(schedule(
                2,
                1,
                vec![
                    Period::hm(DaySet::HOLIDAY, (22, 0), (2, 0)),
                    Period::hm(DaySet::EVERY_DAY, (23, 0), (1, 0)),
                ],
                None,
            )),
            other => other,
        })
        .collect()
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Madrid",
    "America/New_York",
    "Pacific/Kiritimati",
    "Pacific/Niue",
];

/// The core and the reference on the same request, on every zone variant of the fixture.
#[track_caller]
fn check_against_reference(fixtures: &[(Snapshot, Model)], door: u32, presented: Presented<'_>, at: Timestamp) {
    for (snapshot, model) in fixtures {
        let d = decide(snapshot, DoorId(door), presented, at);
        let expected = model.decide(DoorId(door), presented.kind, presented.secret, at);
        assert_eq!(
            (d.reason, d.credential, d.person),
            (expected.reason, expected.credential, expected.person),
            "door:{door} {:?} {:02x?} at {at}",
            presented.kind,
            presented.secret
        );
        assert_eq!(d.effect, d.reason.effect());
        assert_eq!(d.revision, snapshot.revision());
    }
}

fn fixtures() -> Vec<(Snapshot, Model)> {
    ZONES
        .iter()
        .map(|z| {
            let records = office_in(z);
            let snapshot = Snapshot::build(Revision(1), records.clone()).unwrap_or_else(|e| panic!("{e}"));
            let model = Model::build(1, &records).unwrap_or_else(|e| panic!("{e:?}"));
            (snapshot, model)
        })
        .collect()
}

fn any_instant() -> impl Strategy<Value = Timestamp> {
    let whole_range = (
        Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        0..1_000_000_000i32,
    )
        .prop_map(|(s, ns)| {
            Timestamp::new(s, ns).unwrap_or_else(|_| Timestamp::from_second(s).unwrap_or(Timestamp::MAX))
        });
    let near =
        (-10 * 86_400i64..10 * 86_400).prop_map(|s| ts("2026-12-24T00:00:00Z") + jiff::SignedDuration::from_secs(s));
    prop_oneof![
        1 => Just(Timestamp::MIN),
        1 => Just(Timestamp::MAX),
        4 => whole_range,
        4 => near,
    ]
}

fn any_door() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => proptest::sample::select(vec![1u32, 2, 3, 4, 5, 6, 7, 20, 21]),
        1 => any::<u32>(),
    ]
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..=1000),
        2 => proptest::collection::vec(any::<u8>(), 0..=20),
        2 => proptest::collection::vec(b'0'..=b'9', 0..=10),
        // Known secrets of the fixture, so that some requests go all the way.
        2 => proptest::sample::select(vec![
            vec![1u8, 2, 3, 4],
            vec![5, 5, 5, 5],
            vec![6, 6, 6, 6],
            b"1234".to_vec(),
            b"4321".to_vec(),
            vec![8],
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn any_request_is_decided_with_a_reason(
        kind in proptest::sample::select(CredentialKind::ALL.to_vec()),
        secret in any_bytes(),
        door in any_door(),
        at in any_instant(),
    ) {
        thread_local! {
            static FIXTURES: Vec<(Snapshot, Model)> = fixtures();
        }
        FIXTURES.with(|f| check_against_reference(f, door, Presented { kind, secret: &secret }, at));
        // Garbage never opens a door.
        let d = decide(&office(), DoorId(door), Presented { kind, secret: &secret }, at);
        if d.credential.is_none() {
            prop_assert_eq!(d.effect, keyway_core::Effect::Deny);
        }
    }
}

#[test]
fn ends_of_time() {
    let fixtures = fixtures();
    let instants = [
        Timestamp::MIN,
        Timestamp::MAX,
        Timestamp::MIN + jiff::SignedDuration::from_hours(30),
        Timestamp::MAX - jiff::SignedDuration::from_hours(30),
        Timestamp::UNIX_EPOCH,
        Timestamp::new(-1, -1).unwrap(),
    ];
    for at in instants {
        for door in [1, 2, 3, 4, 5, 6, 20, 21, 99] {
            for presented in crate::fixture::OFFICE_PRESENTED {
                check_against_reference(&fixtures, door, *presented, at);
            }
        }
    }
    // What they must say, whatever the zone.
    let snapshot = office();
    let reason = |secret: &[u8], at| decide(&snapshot, DoorId(1), Presented::tag(secret), at).reason.code();
    assert_eq!(reason(&[5, 5, 5, 5], Timestamp::MIN), "not_yet_valid");
    assert_eq!(reason(&[6, 6, 6, 6], Timestamp::MAX), "expired");
    assert_eq!(reason(&[1, 2, 3, 4], Timestamp::MAX), "outside_schedule");
    // Thursday 30 December 9999, 22:00 UTC: after office hours.
    assert_eq!(Timestamp::MAX.as_second(), ts("9999-12-30T22:00:00Z").as_second());
}

/// Each row: what to add to (or replace in) the office records, and the error.
#[track_caller]
fn check_build(extra: Vec<Record>, expect: &ModelError) {
    let mut records = office_records();
    records.extend(extra);
    assert_eq!(
        Snapshot::build(Revision(1), records.clone()).map(|_| ()).as_ref(),
        Err(expect)
    );
    // The reference refuses them too, for the same kind of reason.
    assert_eq!(
        Model::build(1, &records).map(|_| ()).err(),
        crate::reference::Refusal::of(expect),
        "reference on {expect:?}"
    );
}

fn err_duplicate(entity: &str) -> ModelError {
    ModelError::DuplicateId { entity: entity.into() }
}

fn err_too_large(entity: &str) -> ModelError {
    ModelError::IdTooLarge { entity: entity.into() }
}

fn err_unknown(from: &str, to: &str) -> ModelError {
    ModelError::UnknownReference {
        from: from.into(),
        to: to.into(),
    }
}

fn err_cross(from: &str, to: &str) -> ModelError {
    ModelError::CrossSite {
        from: from.into(),
        to: to.into(),
    }
}

fn err_malformed(entity: &str, expected: &'static str) -> ModelError {
    ModelError::MalformedSecret {
        entity: entity.into(),
        expected,
    }
}

fn err_not_found(entity: &str) -> ModelError {
    ModelError::NotFound { entity: entity.into() }
}

fn err_in_use(entity: &str, used_by: &str) -> ModelError {
    ModelError::InUse {
        entity: entity.into(),
        used_by: used_by.into(),
    }
}

fn err_site_change(entity: &str) -> ModelError {
    ModelError::SiteChange { entity: entity.into() }
}

fn err_duplicate_secret(existing: &str, claimed_by: &str) -> ModelError {
    ModelError::DuplicateSecret {
        existing: existing.into(),
        claimed_by: claimed_by.into(),
    }
}

fn unowned_tag(id: u32, site: u32, secret: &[u8]) -> Record {
    Record::Credential(tag(id, site, secret, None))
}

#[test]
fn build_refuses_duplicate_ids() {
    check_build(
        vec![Record::Site(site(1, TimeZone::UTC, None))],
        &err_duplicate("site:1"),
    );
    check_build(vec![Record::Calendar(calendar(1, &[]))], &err_duplicate("calendar:1"));
    check_build(vec![Record::Iq(iq(1, 1)), Record::Iq(iq(1, 1))], &err_duplicate("iq:1"));
    check_build(vec![Record::Door(door(1, 1))], &err_duplicate("door:1"));
    check_build(vec![Record::Person(person(1, 1, STAFF))], &err_duplicate("person:1"));
    check_build(
        vec![Record::Schedule(schedule(1, 1, vec![], None))],
        &err_duplicate("schedule:1"),
    );
    check_build(
        vec![Record::Group(group(1, 1, &[], None, &[]))],
        &err_duplicate("group:1"),
    );
    check_build(vec![unowned_tag(1, 1, &[7, 7, 7, 7])], &err_duplicate("credential:1"));
}

#[test]
fn build_refuses_ids_too_large() {
    let big = MAX_ID + 1;
    check_build(
        vec![Record::Site(site(big, TimeZone::UTC, None))],
        &err_too_large("site:4294967295"),
    );
    check_build(
        vec![Record::Calendar(calendar(u32::MAX, &[]))],
        &err_too_large("calendar:4294967295"),
    );
    check_build(vec![Record::Iq(iq(big, 1))], &err_too_large("iq:4294967295"));
    check_build(vec![Record::Door(door(big, 1))], &err_too_large("door:4294967295"));
    check_build(
        vec![Record::Person(person(big, 1, STAFF))],
        &err_too_large("person:4294967295"),
    );
    check_build(
        vec![Record::Schedule(schedule(big, 1, vec![], None))],
        &err_too_large("schedule:4294967295"),
    );
    check_build(
        vec![Record::Group(group(big, 1, &[], None, &[]))],
        &err_too_large("group:4294967295"),
    );
    check_build(
        vec![unowned_tag(u32::MAX, 1, &[7, 7, 7, 7])],
        &err_too_large("credential:4294967295"),
    );
}

#[test]
fn build_refuses_unknown_references() {
    check_build(
        vec![Record::Site(site(3, TimeZone::UTC, Some(9)))],
        &err_unknown("site:3", "calendar:9"),
    );
    check_build(vec![Record::Iq(iq(1, 9))], &err_unknown("iq:1", "site:9"));
    check_build(
        vec![Record::Schedule(schedule(9, 9, vec![], None))],
        &err_unknown("schedule:9", "site:9"),
    );
    check_build(vec![Record::Door(door(8, 9))], &err_unknown("door:8", "site:9"));
    check_build(
        vec![Record::Door(DoorRecord {
            iq: Some(IqId(5)),
            ..door(8, 1)
        })],
        &err_unknown("door:8", "iq:5"),
    );
    check_build(
        vec![Record::Door(DoorRecord {
            mode: DoorMode::OfficeScheduled(ScheduleId(9)),
            ..door(8, 1)
        })],
        &err_unknown("door:8", "schedule:9"),
    );
    check_build(
        vec![Record::Person(person(9, 9, STAFF))],
        &err_unknown("person:9", "site:9"),
    );
    check_build(
        vec![unowned_tag(40, 9, &[7, 7, 7, 7])],
        &err_unknown("credential:40", "site:9"),
    );
    check_build(
        vec![Record::Credential(tag(40, 1, &[7, 7, 7, 7], Some(99)))],
        &err_unknown("credential:40", "person:99"),
    );
    check_build(
        vec![Record::Group(group(9, 9, &[], None, &[]))],
        &err_unknown("group:9", "site:9"),
    );
    check_build(
        vec![Record::Group(group(9, 1, &[99], None, &[]))],
        &err_unknown("group:9", "door:99"),
    );
    check_build(
        vec![Record::Group(group(9, 1, &[1], None, &[99]))],
        &err_unknown("group:9", "person:99"),
    );
    check_build(
        vec![Record::Group(group(9, 1, &[1], Some(99), &[1]))],
        &err_unknown("group:9", "schedule:99"),
    );
}

#[test]
fn build_refuses_references_across_sites() {
    check_build(
        vec![
            Record::Iq(iq(2, 2)),
            Record::Door(DoorRecord {
                iq: Some(IqId(2)),
                ..door(8, 1)
            }),
        ],
        &err_cross("door:8", "iq:2"),
    );
    check_build(
        vec![Record::Door(DoorRecord {
            mode: DoorMode::OfficeScheduled(ScheduleId(20)),
            ..door(8, 1)
        })],
        &err_cross("door:8", "schedule:20"),
    );
    check_build(
        vec![Record::Credential(tag(40, 1, &[7, 7, 7, 7], Some(20)))],
        &err_cross("credential:40", "person:20"),
    );
    check_build(
        vec![Record::Group(group(9, 1, &[20], None, &[]))],
        &err_cross("group:9", "door:20"),
    );
    check_build(
        vec![Record::Group(group(9, 1, &[1], None, &[20]))],
        &err_cross("group:9", "person:20"),
    );
    check_build(
        vec![Record::Group(group(9, 1, &[1], Some(20), &[]))],
        &err_cross("group:9", "schedule:20"),
    );
}

#[test]
fn build_refuses_malformed_secrets() {
    let rows: &[(CredentialKind, &[u8], &'static str)] = &[
        (CredentialKind::Tag, &[], "a tag uid of 4 to 10 bytes"),
        (CredentialKind::Tag, &[1, 2, 3], "a tag uid of 4 to 10 bytes"),
        (CredentialKind::Tag, &[1; 11], "a tag uid of 4 to 10 bytes"),
        (CredentialKind::DigitalKey, &[], "a key id of 1 to 16 bytes"),
        (CredentialKind::DigitalKey, &[1; 17], "a key id of 1 to 16 bytes"),
        (CredentialKind::Pin, b"123", "4 to 8 ascii digits"),
        (CredentialKind::Pin, b"123456789", "4 to 8 ascii digits"),
        (CredentialKind::Pin, b"12a4", "4 to 8 ascii digits"),
        (CredentialKind::Pin, &[0x31, 0x32, 0x33, 0xb3], "4 to 8 ascii digits"),
    ];
    for &(kind, secret, expected) in rows {
        check_build(
            vec![Record::Credential(credential(40, 1, kind, secret, None))],
            &err_malformed("credential:40", expected),
        );
    }
    // The bounds themselves are accepted.
    let fine: &[(CredentialKind, &[u8])] = &[
        (CredentialKind::Tag, &[7; 4]),
        (CredentialKind::Tag, &[7; 10]),
        (CredentialKind::DigitalKey, &[7]),
        (CredentialKind::DigitalKey, &[7; 16]),
        (CredentialKind::Pin, b"0000"),
        (CredentialKind::Pin, b"99999999"),
    ];
    for &(kind, secret) in fine {
        let mut records = office_records();
        records.push(Record::Credential(credential(40, 1, kind, secret, Some(4))));
        let snapshot = Snapshot::build(Revision(1), records).unwrap_or_else(|e| panic!("{kind:?} {secret:?}: {e}"));
        let d = decide(
            &snapshot,
            DoorId(2),
            Presented { kind, secret },
            ts(crate::fixture::WED_0900),
        );
        assert_eq!(crate::fixture::render(&d), "allow office_mode credential:40 person:4");
    }
}

#[test]
fn build_refuses_duplicate_secrets() {
    // Which of the two is called `existing` is not specified for build: both are named.
    let rows: &[(Record, [&str; 2])] = &[
        (unowned_tag(40, 1, &[1, 2, 3, 4]), ["credential:1", "credential:40"]),
        // A revoked credential still holds its secret.
        (unowned_tag(40, 1, &[3, 3, 3, 3]), ["credential:3", "credential:40"]),
        (
            Record::Credential(credential(40, 1, CredentialKind::Pin, b"1234", None)),
            ["credential:40", "credential:7"],
        ),
    ];
    for (record, expected) in rows {
        let mut records = office_records();
        records.push(record.clone());
        match Snapshot::build(Revision(1), records.clone()) {
            Err(ModelError::DuplicateSecret { existing, claimed_by }) => {
                let mut named = [existing, claimed_by];
                named.sort();
                assert_eq!(named, *expected);
            }
            other => panic!("{record:?}: {other:?}"),
        }
        assert_eq!(
            Model::build(1, &records).err(),
            Some(crate::reference::Refusal::DuplicateSecret)
        );
    }
    // The same bytes under another kind, or on another site, are another credential.
    for record in [
        Record::Credential(credential(40, 1, CredentialKind::DigitalKey, &[1, 2, 3, 4], None)),
        unowned_tag(40, 2, &[2, 2, 2, 2]),
    ] {
        let mut records = office_records();
        records.push(record);
        assert!(Snapshot::build(Revision(1), records).is_ok());
    }
}

#[test]
fn errors_read_well() {
    let rows = [
        (err_duplicate("door:1"), "`door:1` appears twice"),
        (err_unknown("door:8", "site:9"), "`door:8` names unknown `site:9`"),
        (
            err_cross("group:9", "door:20"),
            "`group:9` names `door:20` of another site",
        ),
        (
            err_malformed("credential:40", "4 to 8 ascii digits"),
            "the secret of `credential:40` is malformed: expected 4 to 8 ascii digits",
        ),
        (
            err_duplicate_secret("credential:1", "credential:40"),
            "`credential:40` has the same secret as `credential:1`",
        ),
        (err_in_use("door:1", "group:1"), "`door:1` is still used by `group:1`"),
        (
            ModelError::StaleRevision {
                current: Revision(3),
                given: Revision(2),
            },
            "revision `r2` is not newer than the snapshot's `r3`",
        ),
        (
            err_too_large("person:4294967295"),
            "the id of `person:4294967295` is past the largest accepted (4294967294)",
        ),
    ];
    for (error, text) in rows {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn errors_have_codes() {
    let rows = [
        (err_duplicate("door:1"), "duplicate_id"),
        (err_too_large("door:4294967295"), "id_too_large"),
        (err_unknown("door:8", "site:9"), "unknown_reference"),
        (err_not_found("door:8"), "not_found"),
        (err_cross("group:9", "door:20"), "cross_site"),
        (err_site_change("door:1"), "site_change"),
        (
            err_malformed("credential:40", "4 to 8 ascii digits"),
            "malformed_secret",
        ),
        (
            err_duplicate_secret("credential:1", "credential:40"),
            "duplicate_secret",
        ),
        (err_in_use("door:1", "group:1"), "in_use"),
        (
            ModelError::StaleRevision {
                current: Revision(3),
                given: Revision(2),
            },
            "stale_revision",
        ),
        (ModelError::Index { message: "x".into() }, "index"),
    ];
    for (error, code) in rows {
        assert_eq!(error.code(), code, "{error}");
    }
    let schedule_rows = [
        (
            keyway_core::ScheduleError::TooManyPeriods { given: 9 },
            "too_many_periods",
        ),
        (
            keyway_core::ScheduleError::TimeOutOfRange { minute: 1441 },
            "time_out_of_range",
        ),
        (keyway_core::ScheduleError::EmptyPeriod { index: 0 }, "empty_period"),
        (keyway_core::ScheduleError::NoDays { index: 0 }, "no_days"),
        (keyway_core::ScheduleError::InvertedDateRange, "inverted_date_range"),
    ];
    for (error, code) in schedule_rows {
        assert_eq!(error.code(), code, "{error}");
    }
}

/// Apply `setup`, then `change`, which must be refused with `expect`, and leave the
/// snapshot and a cell publishing it exactly as they were.
#[track_caller]
fn check_refused(setup: &[Change], change: Change, expect: &ModelError) {
    let mut snapshot = office();
    for c in setup {
        snapshot = snapshot
            .apply(next(&snapshot), c)
            .unwrap_or_else(|e| panic!("setup {c:?}: {e}"));
    }
    let before = battery(&snapshot);
    let records = snapshot.records();
    assert_eq!(
        snapshot.apply(next(&snapshot), &change).map(|_| ()).as_ref(),
        Err(expect),
        "{change:?}"
    );
    assert_eq!(battery(&snapshot), before);
    assert_eq!(snapshot.records(), records);

    let cell = SnapshotCell::new(snapshot.clone());
    assert_eq!(cell.apply(next(&snapshot), change.clone()).as_ref(), Err(expect));
    let published = cell.load_full();
    assert_eq!(published.revision(), snapshot.revision());
    assert_eq!(battery(&published), before);
    // The refused change did not use up its revision.
    assert_eq!(
        cell.apply(next(&snapshot), Change::SetRoles(crate::fixture::roles(&[GUARD]))),
        Ok(next(&snapshot))
    );

    // The reference refuses it too.
    let mut model = Model::build(snapshot.revision().get(), &records).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        model.apply(next(&snapshot).get(), &change).err(),
        crate::reference::Refusal::of(expect),
        "reference on {change:?}"
    );
}

#[test]
fn refused_changes_leave_nothing_behind() {
    let new_schedule = || schedule(5, 1, vec![Period::hm(DaySet::WEEKEND, (9, 0), (12, 0))], None);
    let big = MAX_ID + 1;
    let rows: Vec<(Vec<Change>, Change, ModelError)> = vec![
        (vec![], Change::BlockPerson(PersonId(99)), err_not_found("person:99")),
        (vec![], Change::UnblockPerson(PersonId(99)), err_not_found("person:99")),
        (
            vec![],
            Change::RevokeCredential(CredentialId(99)),
            err_not_found("credential:99"),
        ),
        (
            vec![],
            Change::RestoreCredential(CredentialId(99)),
            err_not_found("credential:99"),
        ),
        (
            vec![],
            Change::RemoveCredential(CredentialId(99)),
            err_not_found("credential:99"),
        ),
        (
            vec![Change::RemoveCredential(CredentialId(1))],
            Change::RevokeCredential(CredentialId(1)),
            err_not_found("credential:1"),
        ),
        (
            vec![],
            Change::PutCredential(tag(40, 1, &[1, 2, 3, 4], None)),
            err_duplicate_secret("credential:1", "credential:40"),
        ),
        (
            vec![],
            Change::PutCredential(tag(40, 1, &[3, 3, 3, 3], None)),
            err_duplicate_secret("credential:3", "credential:40"),
        ),
        (
            vec![],
            Change::PutCredential(tag(4, 1, &[1, 2, 3, 4], None)),
            err_duplicate_secret("credential:1", "credential:4"),
        ),
        (
            vec![Change::PutCredential(tag(40, 1, &[7, 7, 7, 7], None))],
            Change::PutCredential(tag(41, 1, &[7, 7, 7, 7], None)),
            err_duplicate_secret("credential:40", "credential:41"),
        ),
        (
            vec![],
            Change::PutCredential(tag(40, 1, &[1, 2, 3], None)),
            err_malformed("credential:40", "a tag uid of 4 to 10 bytes"),
        ),
        (
            vec![],
            Change::PutCredential(tag(40, 1, &[7, 7, 7, 7], Some(20))),
            err_cross("credential:40", "person:20"),
        ),
        (
            vec![],
            Change::PutCredential(tag(40, 1, &[7, 7, 7, 7], Some(99))),
            err_unknown("credential:40", "person:99"),
        ),
        (
            vec![],
            Change::PutCredential(tag(40, 9, &[7, 7, 7, 7], None)),
            err_unknown("credential:40", "site:9"),
        ),
        (
            vec![],
            Change::PutCredential(tag(big, 1, &[7, 7, 7, 7], None)),
            err_too_large("credential:4294967295"),
        ),
        (
            vec![],
            Change::Grant {
                person: PersonId(20),
                group: GroupId(1),
            },
            err_cross("group:1", "person:20"),
        ),
        (
            vec![],
            Change::Ungrant {
                person: PersonId(20),
                group: GroupId(1),
            },
            err_cross("group:1", "person:20"),
        ),
        (
            vec![],
            Change::Grant {
                person: PersonId(99),
                group: GroupId(1),
            },
            err_not_found("person:99"),
        ),
        (
            vec![],
            Change::Grant {
                person: PersonId(1),
                group: GroupId(99),
            },
            err_not_found("group:99"),
        ),
        (
            vec![],
            Change::PutPerson(person(1, 2, STAFF)),
            err_site_change("person:1"),
        ),
        // A record naming an unknown site; `build` would call this an unknown reference.
        (
            vec![],
            Change::PutPerson(person(40, 9, STAFF)),
            err_unknown("person:40", "site:9"),
        ),
        (
            vec![],
            Change::PutPerson(person(big, 1, STAFF)),
            err_too_large("person:4294967295"),
        ),
        (vec![], Change::RemovePerson(PersonId(99)), err_not_found("person:99")),
        (vec![], Change::PutDoor(door(1, 2)), err_site_change("door:1")),
        (
            vec![],
            Change::PutCredential(tag(1, 2, &[9, 9, 9, 9], None)),
            err_site_change("credential:1"),
        ),
        (vec![], Change::PutDoor(door(8, 9)), err_unknown("door:8", "site:9")),
        (
            vec![],
            Change::PutDoor(DoorRecord {
                iq: Some(IqId(5)),
                ..door(8, 1)
            }),
            err_unknown("door:8", "iq:5"),
        ),
        (
            vec![Change::PutIq(iq(2, 2))],
            Change::PutDoor(DoorRecord {
                iq: Some(IqId(2)),
                ..door(8, 1)
            }),
            err_cross("door:8", "iq:2"),
        ),
        (
            vec![],
            Change::PutDoor(DoorRecord {
                mode: DoorMode::OfficeScheduled(ScheduleId(20)),
                ..door(8, 1)
            }),
            err_cross("door:8", "schedule:20"),
        ),
        (vec![], Change::PutDoor(door(big, 1)), err_too_large("door:4294967295")),
        (vec![], Change::RemoveDoor(DoorId(1)), err_in_use("door:1", "group:1")),
        (vec![], Change::RemoveDoor(DoorId(99)), err_not_found("door:99")),
        (
            vec![],
            Change::SetDoorMode {
                door: DoorId(1),
                mode: DoorMode::OfficeScheduled(ScheduleId(99)),
            },
            err_unknown("door:1", "schedule:99"),
        ),
        (
            vec![],
            Change::SetDoorMode {
                door: DoorId(1),
                mode: DoorMode::OfficeScheduled(ScheduleId(20)),
            },
            err_cross("door:1", "schedule:20"),
        ),
        (
            vec![],
            Change::SetDoorMode {
                door: DoorId(99),
                mode: DoorMode::Office,
            },
            err_not_found("door:99"),
        ),
        (
            vec![],
            Change::SetDoorLockdown {
                door: DoorId(99),
                on: true,
            },
            err_not_found("door:99"),
        ),
        (
            vec![],
            Change::SetSiteLockdown {
                site: SiteId(9),
                on: true,
            },
            err_not_found("site:9"),
        ),
        (
            vec![],
            Change::PutGroup(group(1, 2, &[20], None, &[])),
            err_site_change("group:1"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 9, &[], None, &[])),
            err_unknown("group:9", "site:9"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 1, &[99], None, &[])),
            err_unknown("group:9", "door:99"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 1, &[20], None, &[])),
            err_cross("group:9", "door:20"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 1, &[1], None, &[99])),
            err_unknown("group:9", "person:99"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 1, &[1], None, &[20])),
            err_cross("group:9", "person:20"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 1, &[1], Some(99), &[])),
            err_unknown("group:9", "schedule:99"),
        ),
        (
            vec![],
            Change::PutGroup(group(9, 1, &[1], Some(20), &[])),
            err_cross("group:9", "schedule:20"),
        ),
        (
            vec![],
            Change::PutGroup(group(big, 1, &[], None, &[])),
            err_too_large("group:4294967295"),
        ),
        (vec![], Change::RemoveGroup(GroupId(99)), err_not_found("group:99")),
        (
            vec![],
            Change::PutSchedule(schedule(1, 2, vec![], None)),
            err_site_change("schedule:1"),
        ),
        (
            vec![],
            Change::PutSchedule(schedule(9, 9, vec![], None)),
            err_unknown("schedule:9", "site:9"),
        ),
        (
            vec![],
            Change::PutSchedule(schedule(big, 1, vec![], None)),
            err_too_large("schedule:4294967295"),
        ),
        (
            vec![],
            Change::RemoveSchedule(ScheduleId(1)),
            err_in_use("schedule:1", "group:1"),
        ),
        (
            vec![
                Change::PutSchedule(new_schedule()),
                Change::SetDoorMode {
                    door: DoorId(7),
                    mode: DoorMode::OfficeScheduled(ScheduleId(5)),
                },
            ],
            Change::RemoveSchedule(ScheduleId(5)),
            err_in_use("schedule:5", "door:7"),
        ),
        (
            vec![],
            Change::RemoveSchedule(ScheduleId(99)),
            err_not_found("schedule:99"),
        ),
        (
            vec![Change::PutIq(iq(1, 1))],
            Change::PutIq(iq(1, 2)),
            err_site_change("iq:1"),
        ),
        (vec![], Change::PutIq(iq(1, 9)), err_unknown("iq:1", "site:9")),
        (vec![], Change::PutIq(iq(big, 1)), err_too_large("iq:4294967295")),
        (
            vec![
                Change::PutIq(iq(1, 1)),
                Change::PutDoor(DoorRecord {
                    iq: Some(IqId(1)),
                    ..door(1, 1)
                }),
            ],
            Change::RemoveIq(IqId(1)),
            err_in_use("iq:1", "door:1"),
        ),
        (vec![], Change::RemoveIq(IqId(99)), err_not_found("iq:99")),
        (
            vec![],
            Change::PutSite(site(1, TimeZone::UTC, Some(9))),
            err_unknown("site:1", "calendar:9"),
        ),
        (
            vec![],
            Change::PutSite(site(big, TimeZone::UTC, None)),
            err_too_large("site:4294967295"),
        ),
        (
            vec![],
            Change::PutCalendar(calendar(big, &[])),
            err_too_large("calendar:4294967295"),
        ),
    ];
    for (setup, change, expect) in rows {
        check_refused(&setup, change, &expect);
    }
}

#[test]
fn stale_revisions_are_refused() {
    let snapshot = office().apply(Revision(5), &Change::BlockPerson(PersonId(1))).unwrap();
    for given in [Revision(0), Revision(4), Revision(5)] {
        assert_eq!(
            snapshot.apply(given, &Change::UnblockPerson(PersonId(1))).map(|_| ()),
            Err(ModelError::StaleRevision {
                current: Revision(5),
                given,
            })
        );
    }
    // Stale is checked first, even for a change that is refused anyway.
    assert_eq!(
        snapshot.apply(Revision(5), &Change::RemoveDoor(DoorId(99))).map(|_| ()),
        Err(ModelError::StaleRevision {
            current: Revision(5),
            given: Revision(5),
        })
    );

    let cell = SnapshotCell::new(snapshot.clone());
    assert_eq!(
        cell.apply(Revision(5), Change::UnblockPerson(PersonId(1))),
        Err(ModelError::StaleRevision {
            current: Revision(5),
            given: Revision(5),
        })
    );
    assert_eq!(cell.load().revision(), Revision(5));
    assert_eq!(battery(&cell.load_full()), battery(&snapshot));
    // A full rebuild may not go back either.
    assert_eq!(
        cell.replace(office()),
        Err(ModelError::StaleRevision {
            current: Revision(5),
            given: Revision(1),
        })
    );
    assert_eq!(battery(&cell.load_full()), battery(&snapshot));
    assert_eq!(
        cell.apply(Revision(6), Change::UnblockPerson(PersonId(1))),
        Ok(Revision(6))
    );
}
