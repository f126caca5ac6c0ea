//! One table per reason a decision can give, on the `office` fixture (see
//! `fixture::office_records` for who is who). Each row: the door, what is presented,
//! when, and the rendered decision.

use crate::fixture::{WED_0900, WED_1900, XMAS_0900, check, office, ts};
use keyway_core::Presented;

type Row<'a> = (u32, Presented<'a>, &'a str, &'a str);

#[track_caller]
fn check_rows(rows: &[Row<'_>]) {
    let snapshot = office();
    for &(door, presented, at, expect) in rows {
        check(&snapshot, door, presented, ts(at), expect);
    }
}

const C1: &[u8] = &[1, 2, 3, 4];
const C2: &[u8] = &[2, 2, 2, 2];
const C3: &[u8] = &[3, 3, 3, 3];
const C4: &[u8] = &[4, 4, 4, 4];
const C5: &[u8] = &[5, 5, 5, 5];
const C6: &[u8] = &[6, 6, 6, 6];
const C9: &[u8] = &[9, 9, 9, 9];
const C10: &[u8] = &[1, 0, 1, 0];
const C11: &[u8] = &[1, 1, 1, 1];
const C12: &[u8] = &[1, 2, 2, 1];

#[test]
#[rustfmt::skip]
fn granted() {
    check_rows(&[
        // Names the group and its schedule.
        (1, Presented::tag(C1), WED_0900, "allow granted by `group:1` within `schedule:1` credential:1 person:1"),
        (1, Presented::tag(C1), "2026-11-25T17:59:59Z", "allow granted by `group:1` within `schedule:1` credential:1 person:1"),
        // A group without a schedule is open at any time.
        (6, Presented::pin(b"1234"), WED_1900, "allow granted by `group:3` at any time credential:7 person:3"),
        // Several groups open: the lowest id wins.
        (1, Presented::pin(b"1234"), WED_0900, "allow granted by `group:1` within `schedule:1` credential:7 person:3"),
        // The first group is closed: the next open one names itself.
        (1, Presented::pin(b"1234"), WED_1900, "allow granted by `group:3` at any time credential:7 person:3"),
        // On a holiday the weekday schedule is closed but the holiday one is open.
        (1, Presented::pin(b"1234"), "2026-12-25T11:00:00Z", "allow granted by `group:2` within `schedule:2` credential:7 person:3"),
        // Lockdown-exempt roles pass a locked-down door...
        (4, Presented::pin(b"1234"), WED_0900, "allow granted by `group:1` within `schedule:1` credential:7 person:3"),
        (5, Presented::pin(b"1234"), WED_0900, "allow granted by `group:1` within `schedule:1` credential:7 person:3"),
        // ...and a site in lockdown.
        (20, Presented::pin(b"4321"), WED_1900, "allow granted by `group:20` within `schedule:20` credential:21 person:21"),
        // Validity bounds: from is inclusive, until exclusive, both in whole seconds.
        (1, Presented::tag(C5), WED_0900, "allow granted by `group:1` within `schedule:1` credential:5 person:1"),
        (1, Presented::tag(C6), "2026-11-25T16:59:59.999Z", "allow granted by `group:1` within `schedule:1` credential:6 person:1"),
        (1, Presented::tag(C11), "2026-11-25T09:00:00.1Z", "allow granted by `group:1` within `schedule:1` credential:11 person:1"),
        (1, Presented::tag(C12), "2026-11-25T08:59:59.9Z", "allow granted by `group:1` within `schedule:1` credential:12 person:1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn office_mode() {
    check_rows(&[
        (2, Presented::tag(C1), WED_0900, "allow office_mode credential:1 person:1"),
        // Anyone valid, rights or not, at any time.
        (2, Presented::digital_key(&[8]), WED_1900, "allow office_mode credential:8 person:4"),
        (2, Presented::tag(C1), XMAS_0900, "allow office_mode credential:1 person:1"),
        // Office mode by schedule: while schedule 1 is open.
        (3, Presented::digital_key(&[8]), WED_0900, "allow office_mode credential:8 person:4"),
        (3, Presented::digital_key(&[8]), "2026-11-25T17:59:00Z", "allow office_mode credential:8 person:4"),
        // Outside it, or on a holiday, the door is a normal door again.
        (3, Presented::digital_key(&[8]), "2026-11-25T18:00:00Z", "deny no_right credential:8 person:4"),
        (3, Presented::digital_key(&[8]), XMAS_0900, "deny no_right credential:8 person:4"),
        (3, Presented::tag(C1), WED_1900, "deny outside_schedule credential:1 person:1"),
        // A lockdown-exempt role at a locked-down office door gets no office mode: it
        // needs a right of its own.
        (5, Presented::pin(b"1234"), WED_1900, "deny outside_schedule credential:7 person:3"),
    ]);
}

#[test]
#[rustfmt::skip]
fn unknown_door() {
    check_rows(&[
        (99, Presented::tag(C1), WED_0900, "deny unknown_door"),
        (0, Presented::tag(C1), WED_0900, "deny unknown_door"),
        (u32::MAX, Presented::tag(C1), WED_0900, "deny unknown_door"),
        (keyway_core::MAX_ID + 1, Presented::pin(b"1234"), WED_0900, "deny unknown_door"),
        // The door is checked first: even garbage is reported as an unknown door.
        (99, Presented::tag(&[]), WED_0900, "deny unknown_door"),
    ]);
}

#[test]
#[rustfmt::skip]
fn unknown_credential() {
    check_rows(&[
        (1, Presented::tag(&[7, 7, 7, 7]), WED_0900, "deny unknown_credential"),
        // Malformed for its kind.
        (1, Presented::tag(&[]), WED_0900, "deny unknown_credential"),
        (1, Presented::tag(&[1, 2, 3]), WED_0900, "deny unknown_credential"),
        (1, Presented::tag(&[1; 11]), WED_0900, "deny unknown_credential"),
        (1, Presented::digital_key(&[]), WED_0900, "deny unknown_credential"),
        (1, Presented::digital_key(&[8; 17]), WED_0900, "deny unknown_credential"),
        (1, Presented::pin(b"123"), WED_0900, "deny unknown_credential"),
        (1, Presented::pin(b"123456789"), WED_0900, "deny unknown_credential"),
        (1, Presented::pin(b"12a4"), WED_0900, "deny unknown_credential"),
        // A longer secret that starts with a known one.
        (1, Presented::tag(&[1, 2, 3, 4, 0]), WED_0900, "deny unknown_credential"),
        (1, Presented::pin(b"12345"), WED_0900, "deny unknown_credential"),
        // The kind is part of the key: credential 1's bytes as a digital key.
        (1, Presented::digital_key(C1), WED_0900, "deny unknown_credential"),
        // The site is part of the key: credential 21 (site 2) at a door of site 1.
        (1, Presented::pin(b"4321"), WED_0900, "deny unknown_credential"),
        // Same bytes on two sites: each door sees its own site's credential.
        (20, Presented::tag(C1), WED_0900, "deny lockdown credential:20 person:20"),
    ]);
}

#[test]
#[rustfmt::skip]
fn unassigned_credential() {
    check_rows(&[
        (1, Presented::tag(C4), WED_0900, "deny unassigned_credential credential:4"),
        // Before door modes: an unassigned tag is denied at an office door too.
        (2, Presented::tag(C4), WED_0900, "deny unassigned_credential credential:4"),
    ]);
}

#[test]
#[rustfmt::skip]
fn person_blocked() {
    check_rows(&[
        (1, Presented::tag(C2), WED_0900, "deny person_blocked credential:2 person:2"),
        // Before validity, lockdown and office mode.
        (1, Presented::tag(C10), WED_0900, "deny person_blocked credential:10 person:2"),
        (2, Presented::tag(C2), WED_0900, "deny person_blocked credential:2 person:2"),
        (4, Presented::tag(C2), WED_0900, "deny person_blocked credential:2 person:2"),
    ]);
}

#[test]
#[rustfmt::skip]
fn credential_revoked() {
    check_rows(&[
        // The owner is still named, so the entry reaches their history.
        (1, Presented::tag(C3), WED_0900, "deny credential_revoked credential:3 person:1"),
        // Revoked wins over blocked.
        (1, Presented::tag(C9), WED_0900, "deny credential_revoked credential:9 person:2"),
        (2, Presented::tag(C3), WED_0900, "deny credential_revoked credential:3 person:1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn not_yet_valid() {
    check_rows(&[
        (1, Presented::tag(C5), "2026-11-25T08:59:59Z", "deny not_yet_valid credential:5 person:1"),
        (1, Presented::tag(C5), "2026-11-25T08:59:59.999Z", "deny not_yet_valid credential:5 person:1"),
        (1, Presented::tag(C5), "2020-01-01T00:00:00Z", "deny not_yet_valid credential:5 person:1"),
        // Before door modes.
        (2, Presented::tag(C5), "2026-11-25T08:00:00Z", "deny not_yet_valid credential:5 person:1"),
        // Whole seconds: the second before `09:00:00.7` is still before it.
        (1, Presented::tag(C11), "2026-11-25T08:59:59.9Z", "deny not_yet_valid credential:11 person:1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn expired() {
    check_rows(&[
        (1, Presented::tag(C6), "2026-11-25T17:00:00Z", "deny expired credential:6 person:1"),
        (1, Presented::tag(C6), "2027-06-01T10:00:00Z", "deny expired credential:6 person:1"),
        // Before door modes.
        (2, Presented::tag(C6), "2026-11-25T17:30:00Z", "deny expired credential:6 person:1"),
        // Whole seconds: `09:00:00.3` ends the second that starts at 09:00:00.
        (1, Presented::tag(C12), "2026-11-25T09:00:00Z", "deny expired credential:12 person:1"),
        (1, Presented::tag(C12), "2026-11-25T09:00:00.2Z", "deny expired credential:12 person:1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn no_right() {
    check_rows(&[
        // Person 4 is in no group.
        (1, Presented::digital_key(&[8]), WED_0900, "deny no_right credential:8 person:4"),
        // Group 3 opens door 6, but person 1 is not in it.
        (6, Presented::tag(C1), WED_0900, "deny no_right credential:1 person:1"),
        // No group opens door 7.
        (7, Presented::pin(b"1234"), WED_0900, "deny no_right credential:7 person:3"),
    ]);
}

#[test]
#[rustfmt::skip]
fn outside_schedule() {
    check_rows(&[
        (1, Presented::tag(C1), WED_1900, "deny outside_schedule credential:1 person:1"),
        (1, Presented::tag(C1), "2026-11-25T07:59:59Z", "deny outside_schedule credential:1 person:1"),
        (1, Presented::tag(C1), "2026-11-25T18:00:00Z", "deny outside_schedule credential:1 person:1"),
        // Saturday.
        (1, Presented::tag(C1), "2026-11-28T09:00:00Z", "deny outside_schedule credential:1 person:1"),
        // On a holiday but at an hour when the weekday schedule is closed anyway.
        (1, Presented::tag(C1), "2026-12-25T19:00:00Z", "deny outside_schedule credential:1 person:1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn holiday() {
    check_rows(&[
        (1, Presented::tag(C1), XMAS_0900, "deny holiday credential:1 person:1"),
        (1, Presented::tag(C1), "2026-12-25T17:59:00Z", "deny holiday credential:1 person:1"),
        // The day after, the weekday schedule is back.
        (1, Presented::tag(C1), "2026-12-28T09:00:00Z", "allow granted by `group:1` within `schedule:1` credential:1 person:1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn lockdown() {
    check_rows(&[
        (4, Presented::tag(C1), WED_0900, "deny lockdown credential:1 person:1"),
        // Before rights: a person with no right still hears "lockdown".
        (4, Presented::digital_key(&[8]), WED_0900, "deny lockdown credential:8 person:4"),
        // Lockdown overrides office mode.
        (5, Presented::tag(C1), WED_0900, "deny lockdown credential:1 person:1"),
        (5, Presented::digital_key(&[8]), WED_0900, "deny lockdown credential:8 person:4"),
        // Site-wide lockdown: every door of site 2, office mode included.
        (20, Presented::tag(C1), WED_0900, "deny lockdown credential:20 person:20"),
        (21, Presented::tag(C1), WED_0900, "deny lockdown credential:20 person:20"),
        // Exempt roles still need an open schedule.
        (4, Presented::pin(b"1234"), WED_1900, "deny outside_schedule credential:7 person:3"),
    ]);
}
