//! What the peers need to evaluate schedules: a site's wall clock and holidays, computed
//! outside the peer engine (Cedar has no time zones and casbin no calendar), and a
//! generic evaluation of a Keyway [`Schedule`] on it.
//!
//! The semantics are Keyway's (see `engine/core/src/schedule.rs`): on a holiday only the
//! periods carrying the holiday day type apply, and a period crossing midnight is governed
//! by the day it opened on.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{HolidayCalendar, Record, Schedule};

/// Day index of a holiday (Monday is 0, Sunday 6).
pub const HOLIDAY: i64 = 7;

/// A site's clock: its zone and holiday calendar.
#[derive(Debug, Clone)]
pub struct SiteClock {
    zone: TimeZone,
    holidays: Option<HolidayCalendar>,
}

/// One instant on a site's wall clock, as plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Local {
    /// Unix seconds.
    pub now: i64,
    /// Today's day type: 0..=6 for Monday..Sunday, [`HOLIDAY`] on a holiday.
    pub today: i64,
    /// Yesterday's day type.
    pub yesterday: i64,
    /// Minutes since local midnight.
    pub minute: i64,
    /// The local date as `yyyymmdd`.
    pub date: i64,
}

impl SiteClock {
    /// The local view of `at`.
    pub fn local(&self, at: Timestamp) -> Local {
        let dt = self.zone.to_datetime(at);
        let date = dt.date();
        let weekday = i64::from(date.weekday().to_monday_zero_offset());
        let holiday = |d| self.holidays.as_ref().is_some_and(|c| c.contains(d));
        let today = if holiday(date) { HOLIDAY } else { weekday };
        let yesterday = if date.yesterday().is_ok_and(holiday) {
            HOLIDAY
        } else {
            (weekday + 6) % 7
        };
        Local {
            now: at.as_second(),
            today,
            yesterday,
            minute: i64::from(dt.hour()) * 60 + i64::from(dt.minute()),
            date: i64::from(date.year()) * 10_000 + i64::from(date.month()) * 100 + i64::from(date.day()),
        }
    }
}

/// Every site's clock, indexed by site id.
pub fn site_clocks(records: &[Record]) -> Vec<Option<SiteClock>> {
    let mut calendars: Vec<Option<HolidayCalendar>> = Vec::new();
    for r in records {
        if let Record::Calendar(c) = r {
            let i = c.id.0 as usize;
            if calendars.len() <= i {
                calendars.resize(i + 1, None);
            }
            calendars[i] = Some(c.calendar.clone());
        }
    }
    let mut clocks = Vec::new();
    for r in records {
        if let Record::Site(s) = r {
            let i = s.id.0 as usize;
            if clocks.len() <= i {
                clocks.resize(i + 1, None);
            }
            clocks[i] = Some(SiteClock {
                zone: s.time_zone.clone(),
                holidays: s.holiday_calendar.and_then(|c| calendars[c.0 as usize].clone()),
            });
        }
    }
    clocks
}

/// The day indexes (0..=7) of a day set.
pub fn day_indexes(bits: u8) -> Vec<i64> {
    (0..8).filter(|i| bits & (1 << i) != 0).collect()
}

fn date_number(d: jiff::civil::Date) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

/// Whether `schedule` is open at `local`.
pub fn schedule_open(schedule: &Schedule, local: &Local) -> bool {
    if let Some(range) = schedule.date_range()
        && !(date_number(range.first) <= local.date && local.date <= date_number(range.last))
    {
        return false;
    }
    let has = |bits: u8, day: i64| bits & (1u8 << day) != 0;
    schedule.periods().iter().any(|p| {
        let (start, end, bits) = (i64::from(p.start), i64::from(p.end), p.days.bits());
        if end < start {
            (has(bits, local.today) && local.minute >= start) || (has(bits, local.yesterday) && local.minute < end)
        } else {
            has(bits, local.today) && start <= local.minute && local.minute < end
        }
    })
}

/// The Cedar condition for `schedule` being open, over `context.today`,
/// `context.yesterday`, `context.minute` and `context.date`.
pub fn cedar_condition(schedule: &Schedule) -> String {
    let list = |bits: u8| {
        let items: Vec<String> = day_indexes(bits).iter().map(ToString::to_string).collect();
        format!("[{}]", items.join(", "))
    };
    let alternatives: Vec<String> = schedule
        .periods()
        .iter()
        .map(|p| {
            let days = list(p.days.bits());
            if p.end < p.start {
                format!(
                    "({days}.contains(context.today) && context.minute >= {}) || ({days}.contains(context.yesterday) && context.minute < {})",
                    p.start, p.end
                )
            } else {
                format!(
                    "({days}.contains(context.today) && context.minute >= {} && context.minute < {})",
                    p.start, p.end
                )
            }
        })
        .collect();
    let open = if alternatives.is_empty() {
        "false".to_owned()
    } else {
        alternatives.join(" || ")
    };
    match schedule.date_range() {
        Some(r) => format!(
            "(context.date >= {} && context.date <= {} && ({open}))",
            date_number(r.first),
            date_number(r.last)
        ),
        None => format!("({open})"),
    }
}

/// The index key a peer's adapter uses to find a credential: kind, site, secret.
pub fn credential_key(kind: keyway_core::CredentialKind, site: u32, secret: &[u8]) -> Vec<u8> {
    let tag = match kind {
        keyway_core::CredentialKind::Tag => 1,
        keyway_core::CredentialKind::DigitalKey => 2,
        keyway_core::CredentialKind::Pin => 3,
    };
    let mut key = Vec::with_capacity(5 + secret.len());
    key.push(tag);
    key.extend_from_slice(&site.to_be_bytes());
    key.extend_from_slice(secret);
    key
}
