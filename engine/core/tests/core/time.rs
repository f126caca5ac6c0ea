//! Schedules on a site's wall clock. Each table gives local times (converted to UTC
//! instants with jiff) and what the schedule says: `open` (granted), `closed` (outside
//! the schedule) or `holiday`.

use crate::fixture::{calendar, day, door, group, local, person, render, schedule, site, tag, ts, zone};
use jiff::Timestamp;
use keyway_core::{DateRange, DaySet, DoorId, Period, Presented, Reason, Record, Revision, Snapshot, decide};

const MADRID: &str = "Europe/Madrid";
const NEW_YORK: &str = "America/New_York";
const UTC: &str = "UTC";

fn monday() -> DaySet {
    DaySet::weekday(jiff::civil::Weekday::Monday)
}

fn tuesday() -> DaySet {
    DaySet::weekday(jiff::civil::Weekday::Tuesday)
}

fn sunday() -> DaySet {
    DaySet::weekday(jiff::civil::Weekday::Sunday)
}

/// One site in `zone_name` with `holidays`, one door, one person with one tag, one group
/// with the schedule made of `periods` and `range`.
fn site_with(zone_name: &str, holidays: &[&str], periods: Vec<Period>, range: Option<DateRange>) -> Snapshot {
    let records = vec![
        Record::Calendar(calendar(1, holidays)),
        Record::Site(site(1, zone(zone_name), Some(1))),
        Record::Door(door(1, 1)),
        Record::Person(person(1, 1, 1)),
        Record::Credential(tag(1, 1, &[1, 2, 3, 4], Some(1))),
        Record::Schedule(schedule(1, 1, periods, range)),
        Record::Group(group(1, 1, &[1], Some(1), &[1])),
    ];
    Snapshot::build(Revision(1), records).unwrap_or_else(|e| panic!("{e}"))
}

fn verdict(snapshot: &Snapshot, at: Timestamp) -> String {
    let d = decide(snapshot, DoorId(1), Presented::tag(&[1, 2, 3, 4]), at);
    match d.reason {
        Reason::Granted { .. } => "open".to_owned(),
        Reason::OutsideSchedule => "closed".to_owned(),
        Reason::Holiday => "holiday".to_owned(),
        _ => render(&d),
    }
}

/// Each row: a local time on the site's wall clock (`2026-03-29T07:59`) and the verdict.
#[track_caller]
fn check(zone_name: &str, holidays: &[&str], periods: Vec<Period>, range: Option<DateRange>, rows: &[(&str, &str)]) {
    let snapshot = site_with(zone_name, holidays, periods, range);
    for &(civil, expect) in rows {
        let at = local(zone_name, civil);
        assert_eq!(verdict(&snapshot, at), expect, "{civil} in {zone_name} ({at})");
    }
}

#[test]
fn local_times_become_the_expected_utc_instants() {
    // The conversions the DST tables rely on.
    let rows = [
        (MADRID, "2026-03-28T08:00", "2026-03-28T07:00:00Z"),
        (MADRID, "2026-03-29T01:59", "2026-03-29T00:59:00Z"),
        (MADRID, "2026-03-29T03:00", "2026-03-29T01:00:00Z"),
        (MADRID, "2026-03-29T07:59", "2026-03-29T05:59:00Z"),
        (MADRID, "2026-03-29T08:00", "2026-03-29T06:00:00Z"),
        (MADRID, "2026-10-25T07:59", "2026-10-25T06:59:00Z"),
        (MADRID, "2026-10-25T18:00", "2026-10-25T17:00:00Z"),
        (MADRID, "2026-10-24T18:00", "2026-10-24T16:00:00Z"),
        (NEW_YORK, "2026-03-08T08:00", "2026-03-08T12:00:00Z"),
        (NEW_YORK, "2026-03-07T08:00", "2026-03-07T13:00:00Z"),
    ];
    for (zone_name, civil, utc) in rows {
        assert_eq!(local(zone_name, civil), ts(utc), "{civil} in {zone_name}");
    }
}

#[test]
fn office_hours_across_madrid_dst_switches() {
    let office_hours = || vec![Period::hm(DaySet::EVERY_DAY, (8, 0), (18, 0))];
    let rows = [
        // Spring forward (Sunday 29 March, 02:00 CET -> 03:00 CEST).
        ("2026-03-28T07:59", "closed"),
        ("2026-03-28T08:00", "open"),
        ("2026-03-29T07:59", "closed"),
        ("2026-03-29T08:00", "open"),
        ("2026-03-29T17:59", "open"),
        ("2026-03-29T18:00", "closed"),
        ("2026-03-30T07:59", "closed"),
        ("2026-03-30T08:00", "open"),
        // Fall back (Sunday 25 October, 03:00 CEST -> 02:00 CET).
        ("2026-10-24T17:59", "open"),
        ("2026-10-24T18:00", "closed"),
        ("2026-10-25T07:59", "closed"),
        ("2026-10-25T08:00", "open"),
        ("2026-10-25T17:59", "open"),
        ("2026-10-25T18:00", "closed"),
        ("2026-10-26T08:00", "open"),
        ("2026-10-26T18:00", "closed"),
    ];
    check(MADRID, &[], office_hours(), None, &rows);

    // The same UTC instant falls on either side of 08:00 depending on the offset of the day.
    let snapshot = site_with(MADRID, &[], office_hours(), None);
    let rows = [
        ("2026-03-28T06:59:00Z", "closed"), // 07:59 CET
        ("2026-03-29T06:59:00Z", "open"),   // 08:59 CEST
        ("2026-03-29T05:59:59Z", "closed"), // 07:59:59 CEST
        ("2026-03-29T06:00:00Z", "open"),   // 08:00 CEST
        ("2026-10-25T06:59:59Z", "closed"), // 07:59:59 CET
        ("2026-10-25T07:00:00Z", "open"),   // 08:00 CET
        ("2026-10-25T16:59:59Z", "open"),   // 17:59:59 CET
        ("2026-10-25T17:00:00Z", "closed"), // 18:00 CET
        ("2026-10-24T16:00:00Z", "closed"), // 18:00 CEST
    ];
    for (utc, expect) in rows {
        assert_eq!(verdict(&snapshot, ts(utc)), expect, "{utc}");
    }
}

#[test]
fn wall_clock_hours_that_are_skipped_or_repeated() {
    // 02:00-03:00 local. On 29 March that hour does not exist; on 25 October it happens
    // twice, and both are open.
    let snapshot = site_with(MADRID, &[], vec![Period::hm(DaySet::EVERY_DAY, (2, 0), (3, 0))], None);
    let rows = [
        ("2026-03-29T00:59:59Z", "closed"), // 01:59:59 CET
        ("2026-03-29T01:00:00Z", "closed"), // 03:00 CEST
        ("2026-03-28T01:30:00Z", "open"),   // 02:30 CET the day before
        ("2026-10-25T00:30:00Z", "open"),   // 02:30 CEST
        ("2026-10-25T01:30:00Z", "open"),   // 02:30 CET
        ("2026-10-25T02:00:00Z", "closed"), // 03:00 CET
    ];
    for (utc, expect) in rows {
        assert_eq!(verdict(&snapshot, ts(utc)), expect, "{utc}");
    }
}

#[test]
fn new_york_dst() {
    let office_hours = vec![Period::hm(DaySet::EVERY_DAY, (8, 0), (18, 0))];
    let rows = [
        ("2026-03-08T07:59", "closed"),
        ("2026-03-08T08:00", "open"),
        ("2026-03-08T17:59", "open"),
        ("2026-03-08T18:00", "closed"),
        ("2026-11-01T07:59", "closed"),
        ("2026-11-01T08:00", "open"),
        ("2026-11-01T18:00", "closed"),
    ];
    check(NEW_YORK, &[], office_hours, None, &rows);
}

#[test]
fn periods_crossing_midnight() {
    // Monday 22:00 to Tuesday 06:00, Monday only.
    let rows = [
        ("2026-11-23T21:59", "closed"),
        ("2026-11-23T22:00", "open"),
        ("2026-11-23T23:00", "open"),
        ("2026-11-24T00:00", "open"),
        ("2026-11-24T05:59", "open"),
        ("2026-11-24T06:00", "closed"),
        // Tuesday's own night is not set.
        ("2026-11-24T22:00", "closed"),
        ("2026-11-24T23:00", "closed"),
        ("2026-11-25T03:00", "closed"),
        // Nor is Sunday's: Monday early morning is closed.
        ("2026-11-23T03:00", "closed"),
    ];
    check(UTC, &[], vec![Period::hm(monday(), (22, 0), (6, 0))], None, &rows);
    check(MADRID, &[], vec![Period::hm(monday(), (22, 0), (6, 0))], None, &rows);

    // Sunday 22:00 to Monday 06:00: the week wraps.
    let rows = [
        ("2026-11-22T21:59", "closed"),
        ("2026-11-22T23:00", "open"),
        ("2026-11-23T05:59", "open"),
        ("2026-11-23T06:00", "closed"),
        ("2026-11-21T23:00", "closed"),
        ("2026-11-22T03:00", "closed"),
    ];
    check(NEW_YORK, &[], vec![Period::hm(sunday(), (22, 0), (6, 0))], None, &rows);

    // A night shift that ends at midnight (24:00) does not cross it.
    let rows = [("2026-11-23T23:59", "open"), ("2026-11-24T00:00", "closed")];
    check(UTC, &[], vec![Period::hm(monday(), (22, 0), (24, 0))], None, &rows);
}

#[test]
fn midnight_crossing_on_dst_nights() {
    // Saturday 22:00 to Sunday 06:00 in Madrid, the nights the clocks change.
    let saturday = DaySet::weekday(jiff::civil::Weekday::Saturday);
    let rows = [
        ("2026-03-28T22:00", "open"),
        ("2026-03-29T01:59", "open"),
        ("2026-03-29T03:00", "open"),
        ("2026-03-29T05:59", "open"),
        ("2026-03-29T06:00", "closed"),
        ("2026-10-24T22:00", "open"),
        ("2026-10-25T05:59", "open"),
        ("2026-10-25T06:00", "closed"),
    ];
    check(MADRID, &[], vec![Period::hm(saturday, (22, 0), (6, 0))], None, &rows);
}

#[test]
fn date_range_first_and_last_day_are_included() {
    let range = Some(DateRange {
        first: day("2026-12-01"),
        last: day("2026-12-03"),
    });
    let all_day = || vec![Period::hm(DaySet::EVERY_DAY, (0, 0), (24, 0))];
    let rows = [
        ("2026-11-30T23:59", "closed"),
        ("2026-12-01T00:00", "open"),
        ("2026-12-02T12:00", "open"),
        ("2026-12-03T23:59", "open"),
        ("2026-12-04T00:00", "closed"),
    ];
    check(MADRID, &[], all_day(), range, &rows);
    check(NEW_YORK, &[], all_day(), range, &rows);

    // Local dates, not UTC ones: at 23:30 UTC on 30 November it is already 1 December in
    // Madrid, and still 3 December in New York at 02:00 UTC on the 4th.
    let snapshot = site_with(MADRID, &[], all_day(), range);
    assert_eq!(verdict(&snapshot, ts("2026-11-30T23:30:00Z")), "open");
    assert_eq!(verdict(&snapshot, ts("2026-12-03T23:30:00Z")), "closed");
    let snapshot = site_with(NEW_YORK, &[], all_day(), range);
    assert_eq!(verdict(&snapshot, ts("2026-12-04T02:00:00Z")), "open");
    assert_eq!(verdict(&snapshot, ts("2026-12-01T02:00:00Z")), "closed");

    // A one-day range.
    let one_day = Some(DateRange {
        first: day("2026-12-02"),
        last: day("2026-12-02"),
    });
    let rows = [
        ("2026-12-01T23:59", "closed"),
        ("2026-12-02T00:00", "open"),
        ("2026-12-02T23:59", "open"),
        ("2026-12-03T00:00", "closed"),
    ];
    check(UTC, &[], all_day(), one_day, &rows);

    // The range is on the local date of the moment: the tail of a night that starts on
    // the last day falls outside it.
    let rows = [("2026-12-03T23:00", "open"), ("2026-12-04T03:00", "closed")];
    check(
        UTC,
        &[],
        vec![Period::hm(DaySet::EVERY_DAY, (22, 0), (6, 0))],
        range,
        &rows,
    );
}

#[test]
fn holiday_on_a_weekday() {
    // Tuesday 8 December is a holiday.
    let holidays = &["2026-12-08"];
    let weekdays = || Period::hm(DaySet::WORKDAYS, (8, 0), (18, 0));
    let rows = [
        ("2026-12-07T09:00", "open"),
        ("2026-12-08T07:00", "closed"),
        ("2026-12-08T09:00", "holiday"),
        ("2026-12-08T17:59", "holiday"),
        ("2026-12-08T18:00", "closed"),
        ("2026-12-09T09:00", "open"),
    ];
    check(MADRID, holidays, vec![weekdays()], None, &rows);

    // A period flagged Holiday opens on it, and only on it.
    let rows = [
        ("2026-12-08T09:59", "holiday"),
        ("2026-12-08T10:00", "open"),
        ("2026-12-08T13:59", "open"),
        ("2026-12-08T14:00", "holiday"),
        ("2026-12-08T19:00", "closed"),
        ("2026-12-13T10:00", "closed"), // a Sunday, not a holiday
        ("2026-12-09T09:00", "open"),
    ];
    let holiday_hours = Period::hm(DaySet::HOLIDAY, (10, 0), (14, 0));
    check(MADRID, holidays, vec![weekdays(), holiday_hours], None, &rows);

    // Holiday periods alone: a holiday outside them is plainly closed.
    let rows = [("2026-12-08T10:00", "open"), ("2026-12-08T09:00", "closed")];
    check(UTC, holidays, vec![holiday_hours], None, &rows);

    // Without a calendar the same date is an ordinary Tuesday.
    check(MADRID, &[], vec![weekdays()], None, &[("2026-12-08T09:00", "open")]);
}

#[test]
fn holiday_the_day_before_governs_the_tail_of_a_night() {
    let holidays = &["2026-12-08"];
    // Tuesday 22:00 to Wednesday 06:00, weekday only: on the holiday the night never
    // opens, so its tail on Wednesday is closed for the holiday.
    let rows = [
        ("2026-12-08T23:00", "holiday"),
        ("2026-12-09T03:00", "holiday"),
        ("2026-12-09T06:00", "closed"),
        ("2026-12-01T23:00", "open"),
        ("2026-12-02T03:00", "open"),
    ];
    check(
        MADRID,
        holidays,
        vec![Period::hm(tuesday(), (22, 0), (6, 0))],
        None,
        &rows,
    );

    // The same night flagged Holiday: it opens on the holiday and runs into Wednesday.
    let rows = [
        ("2026-12-08T23:00", "open"),
        ("2026-12-09T05:59", "open"),
        ("2026-12-09T06:00", "closed"),
        ("2026-12-01T23:00", "closed"),
        ("2026-12-02T03:00", "closed"),
    ];
    check(
        MADRID,
        holidays,
        vec![Period::hm(DaySet::HOLIDAY, (22, 0), (6, 0))],
        None,
        &rows,
    );

    // Monday's night runs into the holiday: the tail belongs to Monday and stays open,
    // while the holiday's own weekday hours are closed.
    let rows = [
        ("2026-12-07T23:00", "open"),
        ("2026-12-08T05:59", "open"),
        ("2026-12-08T06:00", "closed"),
    ];
    check(UTC, holidays, vec![Period::hm(monday(), (22, 0), (6, 0))], None, &rows);
}
