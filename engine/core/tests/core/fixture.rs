//! Builders for records, the `office` fixture most tables run on, and the one way a
//! decision is rendered for comparison.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use keyway_core::{
    CalendarId, CalendarRecord, CredentialId, CredentialKind, CredentialRecord, DateRange, DaySet, Decision, DoorId,
    DoorMode, DoorRecord, Effect, GroupId, GroupRecord, HolidayCalendar, IqId, IqRecord, Period, PersonId,
    PersonRecord, Presented, Record, Revision, RoleFlags, RoleId, Schedule, ScheduleId, ScheduleRecord, SiteId,
    SiteRecord, Snapshot,
};

/// An instant from RFC 3339 text.
pub(crate) fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("bad timestamp `{text}`: {e}"))
}

/// A local date.
pub(crate) fn day(text: &str) -> Date {
    text.parse().unwrap_or_else(|e| panic!("bad date `{text}`: {e}"))
}

/// A time zone of the bundled database.
pub(crate) fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|e| panic!("unknown zone `{name}`: {e}"))
}

/// The instant at which the wall clock of `zone_name` shows `civil` (`2026-03-29T07:59`).
/// Times in a gap or a fold resolve as jiff's "compatible" strategy does.
pub(crate) fn local(zone_name: &str, civil: &str) -> Timestamp {
    let dt: DateTime = civil
        .parse()
        .unwrap_or_else(|e| panic!("bad civil datetime `{civil}`: {e}"));
    dt.to_zoned_datetime(zone(zone_name))
        .unwrap_or_else(|e| panic!("`{civil}` has no instant in `{zone_name}`: {e}"))
        .timestamp()
}

pub(crate) fn site(id: u32, time_zone: TimeZone, holiday_calendar: Option<u32>) -> SiteRecord {
    SiteRecord {
        id: SiteId(id),
        time_zone,
        holiday_calendar: holiday_calendar.map(CalendarId),
        lockdown: false,
    }
}

pub(crate) fn calendar(id: u32, dates: &[&str]) -> CalendarRecord {
    CalendarRecord {
        id: CalendarId(id),
        calendar: HolidayCalendar::new(dates.iter().map(|d| day(d)).collect()),
    }
}

pub(crate) fn iq(id: u32, site: u32) -> IqRecord {
    IqRecord {
        id: IqId(id),
        site: SiteId(site),
    }
}

pub(crate) fn door(id: u32, site: u32) -> DoorRecord {
    DoorRecord {
        id: DoorId(id),
        site: SiteId(site),
        iq: None,
        mode: DoorMode::Normal,
        lockdown: false,
    }
}

pub(crate) fn person(id: u32, site: u32, role: u16) -> PersonRecord {
    PersonRecord {
        id: PersonId(id),
        site: SiteId(site),
        role: RoleId(role),
        blocked: false,
    }
}

pub(crate) fn credential(
    id: u32,
    site: u32,
    kind: CredentialKind,
    secret: &[u8],
    owner: Option<u32>,
) -> CredentialRecord {
    CredentialRecord {
        id: CredentialId(id),
        site: SiteId(site),
        kind,
        secret: secret.to_vec(),
        owner: owner.map(PersonId),
        valid_from: None,
        valid_until: None,
        offline_access: false,
        revoked: false,
    }
}

pub(crate) fn tag(id: u32, site: u32, secret: &[u8], owner: Option<u32>) -> CredentialRecord {
    credential(id, site, CredentialKind::Tag, secret, owner)
}

pub(crate) fn group(id: u32, site: u32, doors: &[u32], schedule: Option<u32>, members: &[u32]) -> GroupRecord {
    GroupRecord {
        id: GroupId(id),
        site: SiteId(site),
        doors: doors.iter().copied().map(DoorId).collect(),
        schedule: schedule.map(ScheduleId),
        members: members.iter().copied().map(PersonId).collect(),
    }
}

pub(crate) fn schedule(id: u32, site: u32, periods: Vec<Period>, date_range: Option<DateRange>) -> ScheduleRecord {
    ScheduleRecord {
        id: ScheduleId(id),
        site: SiteId(site),
        schedule: Schedule::new(periods, date_range).unwrap_or_else(|e| panic!("bad schedule: {e}")),
    }
}

pub(crate) fn roles(exempt: &[u16]) -> RoleFlags {
    RoleFlags {
        lockdown_exempt: exempt.iter().copied().map(RoleId).collect(),
    }
}

/// The role of ordinary staff.
pub(crate) const STAFF: u16 = 1;
/// The role of security guards: exempt from lockdown.
pub(crate) const GUARD: u16 = 9;

/// A working day in the office fixture (Wednesday), 09:00 UTC.
pub(crate) const WED_0900: &str = "2026-11-25T09:00:00Z";
/// The same Wednesday after hours.
pub(crate) const WED_1900: &str = "2026-11-25T19:00:00Z";
/// A holiday of the office fixture (Friday 25 December), 09:00 UTC.
pub(crate) const XMAS_0900: &str = "2026-12-25T09:00:00Z";

/// The records of the `office` fixture: two sites on UTC.
///
/// Site 1 (holiday calendar 1: 2026-12-25):
/// - schedules: 1 = workdays 08:00-18:00; 2 = holidays 10:00-12:00;
/// - doors: 1 normal; 2 office; 3 office while schedule 1 is open; 4 lockdown;
///   5 lockdown + office; 6 normal, opened by group 3 only; 7 normal, no group;
/// - people: 1 staff; 2 staff, blocked; 3 guard (lockdown-exempt); 4 staff in no group;
/// - groups: 1 = doors 1,3,4,5 in schedule 1 for people 1,2,3; 2 = doors 1,4 in
///   schedule 2 for person 3; 3 = doors 1,6 at any time for person 3;
/// - credentials: 1 tag 01020304 (person 1); 2 tag 02020202 (person 2, blocked);
///   3 tag 03030303 (person 1, revoked); 4 tag 04040404 (nobody);
///   5 tag 05050505 (person 1, valid from Wed 09:00); 6 tag 06060606 (person 1, valid
///   until Wed 17:00); 7 pin 1234 (person 3); 8 digital key 08 (person 4);
///   9 tag 09090909 (person 2, revoked); 10 tag 01000100 (person 2, expired);
///   11 tag 01010101 (person 1, valid from Wed 09:00:00.700);
///   12 tag 01020201 (person 1, valid until Wed 09:00:00.300).
///
/// Site 2 (in lockdown): schedule 20 = every day, all day; doors 20 normal, 21 office;
/// people 20 staff, 21 guard; group 20 = doors 20,21 in schedule 20 for both;
/// credentials 20 tag 01020304 (person 20, same bytes as credential 1), 21 pin 4321
/// (person 21).
pub(crate) fn office_records() -> Vec<Record> {
    let workdays = vec![Period::hm(DaySet::WORKDAYS, (8, 0), (18, 0))];
    let holidays = vec![Period::hm(DaySet::HOLIDAY, (10, 0), (12, 0))];
    let all_day = vec![Period::hm(DaySet::EVERY_DAY.with(DaySet::HOLIDAY), (0, 0), (24, 0))];
    let valid_from = |mut c: CredentialRecord, at: &str| {
        c.valid_from = Some(ts(at));
        c
    };
    let valid_until = |mut c: CredentialRecord, at: &str| {
        c.valid_until = Some(ts(at));
        c
    };
    let revoked = |mut c: CredentialRecord| {
        c.revoked = true;
        c
    };
    vec![
        Record::Calendar(calendar(1, &["2026-12-25"])),
        Record::Site(site(1, TimeZone::UTC, Some(1))),
        Record::Site(SiteRecord {
            lockdown: true,
            ..site(2, TimeZone::UTC, None)
        }),
        Record::Roles(roles(&[GUARD])),
        Record::Schedule(schedule(1, 1, workdays, None)),
        Record::Schedule(schedule(2, 1, holidays, None)),
        Record::Schedule(schedule(20, 2, all_day, None)),
        Record::Door(door(1, 1)),
        Record::Door(DoorRecord {
            mode: DoorMode::Office,
            ..door(2, 1)
        }),
        Record::Door(DoorRecord {
            mode: DoorMode::OfficeScheduled(ScheduleId(1)),
            ..door(3, 1)
        }),
        Record::Door(DoorRecord {
            lockdown: true,
            ..door(4, 1)
        }),
        Record::Door(DoorRecord {
            lockdown: true,
            mode: DoorMode::Office,
            ..door(5, 1)
        }),
        Record::Door(door(6, 1)),
        Record::Door(door(7, 1)),
        Record::Door(door(20, 2)),
        Record::Door(DoorRecord {
            mode: DoorMode::Office,
            ..door(21, 2)
        }),
        Record::Person(person(1, 1, STAFF)),
        Record::Person(PersonRecord {
            blocked: true,
            ..person(2, 1, STAFF)
        }),
        Record::Person(person(3, 1, GUARD)),
        Record::Person(person(4, 1, STAFF)),
        Record::Person(person(20, 2, STAFF)),
        Record::Person(person(21, 2, GUARD)),
        Record::Group(group(1, 1, &[1, 3, 4, 5], Some(1), &[1, 2, 3])),
        Record::Group(group(2, 1, &[1, 4], Some(2), &[3])),
        Record::Group(group(3, 1, &[1, 6], None, &[3])),
        Record::Group(group(20, 2, &[20, 21], Some(20), &[20, 21])),
        Record::Credential(tag(1, 1, &[1, 2, 3, 4], Some(1))),
        Record::Credential(tag(2, 1, &[2, 2, 2, 2], Some(2))),
        Record::Credential(revoked(tag(3, 1, &[3, 3, 3, 3], Some(1)))),
        Record::Credential(tag(4, 1, &[4, 4, 4, 4], None)),
        Record::Credential(valid_from(tag(5, 1, &[5, 5, 5, 5], Some(1)), WED_0900)),
        Record::Credential(valid_until(tag(6, 1, &[6, 6, 6, 6], Some(1)), "2026-11-25T17:00:00Z")),
        Record::Credential(credential(7, 1, CredentialKind::Pin, b"1234", Some(3))),
        Record::Credential(credential(8, 1, CredentialKind::DigitalKey, &[8], Some(4))),
        Record::Credential(revoked(tag(9, 1, &[9, 9, 9, 9], Some(2)))),
        Record::Credential(valid_until(tag(10, 1, &[1, 0, 1, 0], Some(2)), "2026-01-01T00:00:00Z")),
        Record::Credential(valid_from(tag(11, 1, &[1, 1, 1, 1], Some(1)), "2026-11-25T09:00:00.7Z")),
        Record::Credential(valid_until(
            tag(12, 1, &[1, 2, 2, 1], Some(1)),
            "2026-11-25T09:00:00.3Z",
        )),
        Record::Credential(tag(20, 2, &[1, 2, 3, 4], Some(20))),
        Record::Credential(credential(21, 2, CredentialKind::Pin, b"4321", Some(21))),
    ]
}

/// The `office` fixture at revision 1.
pub(crate) fn office() -> Snapshot {
    Snapshot::build(Revision(1), office_records()).unwrap_or_else(|e| panic!("office fixture refused: {e}"))
}

/// A decision as one line: effect, reason, then the credential and person it names.
pub(crate) fn render(d: &Decision) -> String {
    let effect = match d.effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    };
    let credential = d.credential.map(|c| format!(" {c}")).unwrap_or_default();
    let person = d.person.map(|p| format!(" {p}")).unwrap_or_default();
    format!("{effect} {}{credential}{person}", d.reason)
}

/// Decide and compare the rendered decision with `expect`. Also checks what holds for
/// every decision: the effect follows from the reason, and the revision is the snapshot's.
#[track_caller]
pub(crate) fn check(snapshot: &Snapshot, door: u32, presented: Presented<'_>, at: Timestamp, expect: &str) {
    let decision = keyway_core::decide(snapshot, DoorId(door), presented, at);
    let mut batch = Vec::new();
    let request = keyway_core::DecisionRequest {
        door: DoorId(door),
        presented,
        at,
    };
    keyway_core::decide_batch(snapshot, &[request; 11], &mut batch);
    assert_eq!(batch, vec![decision; 11], "decide_batch differs from decide");
    assert_eq!(
        decision.effect,
        decision.reason.effect(),
        "effect does not follow the reason"
    );
    assert_eq!(
        decision.revision,
        snapshot.revision(),
        "decision names another revision"
    );
    assert_eq!(
        render(&decision),
        expect,
        "door:{door}, {:?} {:02x?}, at {at}",
        presented.kind,
        presented.secret
    );
}

/// Every door of the office fixture, plus ones that do not exist.
pub(crate) const OFFICE_DOORS: &[u32] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 99];

/// Everything a reader might present in the office fixture, known or not.
pub(crate) const OFFICE_PRESENTED: &[Presented<'static>] = &[
    Presented::tag(&[1, 2, 3, 4]),
    Presented::tag(&[2, 2, 2, 2]),
    Presented::tag(&[3, 3, 3, 3]),
    Presented::tag(&[4, 4, 4, 4]),
    Presented::tag(&[5, 5, 5, 5]),
    Presented::tag(&[6, 6, 6, 6]),
    Presented::tag(&[7, 7, 7, 7]),
    Presented::tag(&[9, 9, 9, 9]),
    Presented::tag(&[1, 0, 1, 0]),
    Presented::tag(&[1, 1, 1, 1]),
    Presented::tag(&[1, 2, 2, 1]),
    Presented::tag(&[1, 2, 3]),
    Presented::pin(b"1234"),
    Presented::pin(b"4321"),
    Presented::pin(b"0000"),
    Presented::digital_key(&[8]),
    Presented::digital_key(&[1, 2, 3, 4]),
];

/// Moments that exercise the office fixture's schedules.
pub(crate) const OFFICE_TIMES: &[&str] = &[
    WED_0900,
    WED_1900,
    XMAS_0900,
    "2026-12-25T11:00:00Z",
    "2026-11-28T10:00:00Z",
    "2026-11-25T08:59:59.5Z",
    "2026-11-25T17:00:00Z",
];

/// Every decision of the office battery (doors x presented x times), rendered.
pub(crate) fn battery(snapshot: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for &door in OFFICE_DOORS {
        for &presented in OFFICE_PRESENTED {
            for &at in OFFICE_TIMES {
                let d = keyway_core::decide(snapshot, DoorId(door), presented, ts(at));
                assert_eq!(d.revision, snapshot.revision());
                out.push(format!(
                    "door:{door} {:?} {:?} {at}: {}",
                    presented.kind,
                    presented.secret,
                    render(&d)
                ));
            }
        }
    }
    out
}

/// The next revision after `snapshot`'s.
pub(crate) fn next(snapshot: &Snapshot) -> Revision {
    Revision(snapshot.revision().get() + 1)
}
