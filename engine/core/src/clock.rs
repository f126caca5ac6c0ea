//! A site's wall clock, computed once per offset window instead of once per decision.
//!
//! A zone's UTC offset only changes at its transitions (DST switches, rule changes).
//! [`ZoneClock`] lists them from 1900 to 2200 once, when a site is indexed; a decision
//! then finds its offset by a binary search over a few hundred instants, adds it, and
//! derives the local date, weekday and minute with integer arithmetic. Outside that span
//! it asks `jiff`, as before. The answer is the same as `jiff`'s `TimeZone::to_datetime`
//! (tested against it across both DST switches and at random instants).

use crate::schedule::{HolidayCalendar, LocalMoment};
use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// 1900-01-01T00:00:00Z.
const FIRST: i64 = -2_208_988_800;
/// 2200-01-01T00:00:00Z.
const LAST: i64 = 7_258_118_400;
const DAY: i64 = 86_400;

/// The offset windows of one time zone between 1900 and 2200.
#[derive(Debug)]
pub(crate) struct ZoneClock {
    /// The window the last lookup fell in: checked first, since consecutive decisions
    /// almost always fall in the same one. A relaxed atomic: a stale hint only costs the
    /// binary search it would have saved.
    hint: AtomicUsize,
    zone: TimeZone,
    /// Instants (UTC seconds) at which the offset changes, ascending; the first is
    /// [`FIRST`].
    starts: Box<[i64]>,
    /// The offset in seconds from each start on.
    offsets: Box<[i32]>,
}

impl ZoneClock {
    /// The windows of `zone`.
    pub(crate) fn new(zone: &TimeZone) -> Arc<ZoneClock> {
        let mut starts = Vec::new();
        let mut offsets = Vec::new();
        if let Ok(first) = Timestamp::from_second(FIRST) {
            starts.push(FIRST);
            offsets.push(zone.to_offset(first).seconds());
            for transition in zone.following(first) {
                let at = transition.timestamp().as_second();
                if at >= LAST {
                    break;
                }
                let offset = transition.offset().seconds();
                if offsets.last() != Some(&offset) {
                    starts.push(at);
                    offsets.push(offset);
                }
            }
        }
        Arc::new(ZoneClock {
            hint: AtomicUsize::new(0),
            zone: zone.clone(),
            starts: starts.into_boxed_slice(),
            offsets: offsets.into_boxed_slice(),
        })
    }

    /// The zone.
    pub(crate) fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// Bytes held on the heap (the zone itself is shared with jiff's database).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.starts.len() * size_of::<i64>() + self.offsets.len() * size_of::<i32>()
    }

    /// The UTC offset at `second`, if within the precomputed span.
    #[inline]
    fn offset(&self, second: i64) -> Option<i32> {
        if !(FIRST..LAST).contains(&second) {
            return None;
        }
        let hint = self.hint.load(Ordering::Relaxed);
        if let Some(&start) = self.starts.get(hint)
            && start <= second
            && self.starts.get(hint + 1).is_none_or(|next| second < *next)
        {
            return self.offsets.get(hint).copied();
        }
        let window = self.starts.partition_point(|start| *start <= second).checked_sub(1)?;
        self.hint.store(window, Ordering::Relaxed);
        self.offsets.get(window).copied()
    }

    /// The wall-clock view of `at`, with holidays from `calendar`.
    #[inline]
    pub(crate) fn local(&self, at: Timestamp, calendar: Option<&HolidayCalendar>) -> LocalMoment {
        let second = crate::snapshot::whole_second(at);
        let Some(offset) = self.offset(second) else {
            return LocalMoment::new(at, &self.zone, calendar);
        };
        let local = second + i64::from(offset);
        let days = local.div_euclid(DAY);
        let of_day = local.rem_euclid(DAY);
        let Some(date) = civil_from_days(days) else {
            return LocalMoment::new(at, &self.zone, calendar);
        };
        // One binary search for both days: yesterday's holiday, if any, is the one just
        // before where today's would be.
        let (today_is_holiday, yesterday_is_holiday) = match calendar {
            Some(cal) => {
                let dates = cal.dates();
                let i = dates.partition_point(|d| *d < date);
                let today = dates.get(i) == Some(&date);
                let yesterday = i
                    .checked_sub(1)
                    .and_then(|j| dates.get(j))
                    .is_some_and(|prev| date.yesterday().is_ok_and(|y| y == *prev));
                (today, yesterday)
            }
            None => (false, false),
        };
        LocalMoment {
            date,
            weekday: weekday_from_days(days),
            minute: u16::try_from(of_day / 60).unwrap_or(0),
            today_is_holiday,
            yesterday_is_holiday,
        }
    }
}

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> Option<Date> {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    )
    .ok()
}

/// The weekday of the date `days` after 1970-01-01, a Thursday.
fn weekday_from_days(days: i64) -> Weekday {
    match (days + 3).rem_euclid(7) {
        0 => Weekday::Monday,
        1 => Weekday::Tuesday,
        2 => Weekday::Wednesday,
        3 => Weekday::Thursday,
        4 => Weekday::Friday,
        5 => Weekday::Saturday,
        _ => Weekday::Sunday,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_jiff() {
        let zones = [
            "Europe/Madrid",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
            "UTC",
            "America/Sao_Paulo",
            "Pacific/Chatham",
        ];
        let instants = [
            "1900-01-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z",
            "2026-10-25T00:59:59Z",
            "2026-10-25T01:00:00Z",
            "2026-11-25T09:00:00Z",
            "2199-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "1850-06-01T12:00:00Z",
        ];
        for name in zones {
            let zone = TimeZone::get(name).unwrap();
            let clock = ZoneClock::new(&zone);
            let calendar = HolidayCalendar::new(
                ["2026-03-28", "2026-03-29", "2026-10-24", "2026-11-25", "2199-12-31"]
                    .iter()
                    .map(|d| d.parse().unwrap())
                    .collect(),
            );
            for at in instants {
                let at: Timestamp = at.parse().unwrap();
                assert_eq!(clock.local(at, None), LocalMoment::new(at, &zone, None), "{name} {at}");
                for cal in [&calendar, &HolidayCalendar::default()] {
                    assert_eq!(
                        clock.local(at, Some(cal)),
                        LocalMoment::new(at, &zone, Some(cal)),
                        "{name} {at}"
                    );
                }
            }
            let mut second = FIRST;
            while second < LAST {
                let at = Timestamp::from_second(second).unwrap();
                assert_eq!(clock.local(at, None), LocalMoment::new(at, &zone, None), "{name} {at}");
                second += 3_600 * 7 + 1_337;
            }
        }
    }
}
