//! Weekly time schedules, holiday calendars and the local time they are evaluated in.
//!
//! A schedule has up to [`MAX_PERIODS`] periods. Each period is a set of day types
//! (Monday..Sunday, and Holiday) with a start and an end time of day in the site's zone.
//! A period whose end is before its start crosses midnight: it opens on its start day and
//! closes the next day. On a date in the site's holiday calendar only the periods that carry
//! the Holiday day type apply; the weekday ones do not.
//!
//! A schedule may also carry a date range: outside it (on local dates, both ends
//! included) the schedule is closed.
//!
//! Semantics worth knowing:
//! - **Date range and midnight.** The range is checked against the local date of the
//!   moment, not the day a period opened on. The after-midnight tail of a night that
//!   opens on the range's last day falls on the next date, outside the range: closed.
//!   On the range's first day, the tail of a night that opened the day before (outside
//!   the range) is open, if that day's type carries the period.
//! - **Daylight saving.** Everything is on the site's wall clock. In a gap (spring
//!   forward) the skipped local minutes never happen: a period lying entirely in the gap
//!   does not open that day, and one that straddles it opens at the first minute after
//!   the gap. In a repeated hour (fall back) both passes have the same local minutes,
//!   so a period covering them is open during both, for two real hours.
//! - **Holidays.** On a holiday only periods carrying [`DaySet::HOLIDAY`] apply; a period
//!   crossing midnight follows the day type of the day it opened on, so the tail of the
//!   holiday's night is governed by the holiday, and the tail of the night before it by
//!   the day before.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use std::fmt;

/// The most periods a schedule may have, as on the panels users know.
pub const MAX_PERIODS: usize = 8;

/// Minutes in a day; a period may end at 24:00.
pub const MINUTES_PER_DAY: u16 = 1440;

/// A set of day types: the seven weekdays and "holiday".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DaySet(u8);

impl DaySet {
    /// No day at all.
    pub const EMPTY: DaySet = DaySet(0);
    /// Monday to Friday.
    pub const WORKDAYS: DaySet = DaySet(0b0001_1111);
    /// Saturday and Sunday.
    pub const WEEKEND: DaySet = DaySet(0b0110_0000);
    /// Every weekday, but not holidays.
    pub const EVERY_DAY: DaySet = DaySet(0b0111_1111);
    /// The holiday day type alone.
    pub const HOLIDAY: DaySet = DaySet(0b1000_0000);

    /// A set from its bits: bit 0 is Monday, bit 6 Sunday, bit 7 Holiday.
    #[must_use]
    pub const fn from_bits(bits: u8) -> DaySet {
        DaySet(bits)
    }

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set holding one weekday.
    #[must_use]
    pub fn weekday(day: Weekday) -> DaySet {
        DaySet(1 << day.to_monday_zero_offset())
    }

    /// This set plus `other`.
    #[must_use]
    pub const fn with(self, other: DaySet) -> DaySet {
        DaySet(self.0 | other.0)
    }

    /// Whether the set holds every day type of `other`.
    #[must_use]
    pub const fn contains(self, other: DaySet) -> bool {
        other.0 != 0 && self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A time of day in minutes since local midnight, `0..=1440`.
pub type MinuteOfDay = u16;

/// One period of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    /// The day types on which the period opens.
    pub days: DaySet,
    /// Opening time, minutes since local midnight.
    pub start: MinuteOfDay,
    /// Closing time, minutes since local midnight (exclusive). Before `start` means the
    /// period crosses midnight and closes on the next day.
    pub end: MinuteOfDay,
}

impl Period {
    /// A period from `HH:MM` pairs: `Period::hm(DaySet::WORKDAYS, (8, 0), (18, 0))`.
    #[must_use]
    pub fn hm(days: DaySet, start: (u16, u16), end: (u16, u16)) -> Period {
        Period {
            days,
            start: start.0.saturating_mul(60).saturating_add(start.1),
            end: end.0.saturating_mul(60).saturating_add(end.1),
        }
    }

    fn crosses_midnight(self) -> bool {
        self.end < self.start
    }
}

/// An inclusive range of local dates, checked against the local date of the moment
/// (see the module doc for periods crossing midnight at either end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateRange {
    /// The first day on which the schedule applies.
    pub first: Date,
    /// The last day on which the schedule applies.
    pub last: Date,
}

impl DateRange {
    /// Whether `date` is within the range.
    #[must_use]
    pub fn contains(self, date: Date) -> bool {
        self.first <= date && date <= self.last
    }
}

/// A validated weekly schedule.
///
/// Its periods are held inline (no heap), so evaluating a schedule reads one row of the
/// snapshot's schedule table and nothing behind a pointer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// The first `len` are the periods; the rest are `UNUSED`.
    periods: [Period; MAX_PERIODS],
    len: u8,
    date_range: Option<DateRange>,
}

const UNUSED: Period = Period {
    days: DaySet::EMPTY,
    start: 0,
    end: 0,
};

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("periods", &self.periods())
            .field("date_range", &self.date_range)
            .finish()
    }
}

/// Why a schedule was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// More periods than a schedule may hold.
    TooManyPeriods {
        /// How many were given.
        given: usize,
    },
    /// A time of day past 24:00.
    TimeOutOfRange {
        /// The offending value, in minutes.
        minute: u16,
    },
    /// A period that opens and closes at the same minute.
    EmptyPeriod {
        /// Its index in the schedule.
        index: usize,
    },
    /// A period with no day type.
    NoDays {
        /// Its index in the schedule.
        index: usize,
    },
    /// A date range whose last day is before its first.
    InvertedDateRange,
}

impl ScheduleError {
    /// A stable snake_case code, for wire formats and for mapping an error to an answer
    /// without parsing its text. Every variant is invalid input.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            ScheduleError::TooManyPeriods { .. } => "too_many_periods",
            ScheduleError::TimeOutOfRange { .. } => "time_out_of_range",
            ScheduleError::EmptyPeriod { .. } => "empty_period",
            ScheduleError::NoDays { .. } => "no_days",
            ScheduleError::InvertedDateRange => "inverted_date_range",
        }
    }
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::TooManyPeriods { given } => {
                write!(f, "a schedule holds at most {MAX_PERIODS} periods, got `{given}`")
            }
            ScheduleError::TimeOutOfRange { minute } => {
                write!(f, "time of day `{minute}` is past 24:00 (1440 minutes)")
            }
            ScheduleError::EmptyPeriod { index } => {
                write!(f, "period `{index}` opens and closes at the same minute")
            }
            ScheduleError::NoDays { index } => write!(f, "period `{index}` has no day type"),
            ScheduleError::InvertedDateRange => {
                write!(f, "the date range ends before it starts")
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

impl Schedule {
    /// A schedule from its periods and optional date range, validated.
    ///
    /// # Errors
    /// See [`ScheduleError`].
    pub fn new(periods: Vec<Period>, date_range: Option<DateRange>) -> Result<Self, ScheduleError> {
        if periods.len() > MAX_PERIODS {
            return Err(ScheduleError::TooManyPeriods { given: periods.len() });
        }
        for (index, p) in periods.iter().enumerate() {
            for minute in [p.start, p.end] {
                if minute > MINUTES_PER_DAY {
                    return Err(ScheduleError::TimeOutOfRange { minute });
                }
            }
            if p.start == p.end {
                return Err(ScheduleError::EmptyPeriod { index });
            }
            if p.days.is_empty() {
                return Err(ScheduleError::NoDays { index });
            }
        }
        if let Some(range) = date_range
            && range.last < range.first
        {
            return Err(ScheduleError::InvertedDateRange);
        }
        let mut inline = [UNUSED; MAX_PERIODS];
        for (slot, period) in inline.iter_mut().zip(&periods) {
            *slot = *period;
        }
        Ok(Schedule {
            periods: inline,
            len: u8::try_from(periods.len()).unwrap_or(0),
            date_range,
        })
    }

    /// Open all day, every day including holidays, with no date range.
    #[must_use]
    pub fn always() -> Self {
        let mut periods = [UNUSED; MAX_PERIODS];
        let [first, ..] = &mut periods;
        *first = Period {
            days: DaySet::EVERY_DAY.with(DaySet::HOLIDAY),
            start: 0,
            end: MINUTES_PER_DAY,
        };
        Schedule {
            periods,
            len: 1,
            date_range: None,
        }
    }

    /// The periods.
    #[must_use]
    pub fn periods(&self) -> &[Period] {
        self.periods.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The date range, if any.
    #[must_use]
    pub fn date_range(&self) -> Option<DateRange> {
        self.date_range
    }

    /// Whether the schedule is open at `local`, and if not, whether a holiday is the cause.
    #[must_use]
    pub fn verdict(&self, local: &LocalMoment) -> ScheduleVerdict {
        if let Some(range) = self.date_range
            && !range.contains(local.date)
        {
            return ScheduleVerdict::Closed;
        }
        if self.open_on(local, local.today_kind(), local.yesterday_kind()) {
            return ScheduleVerdict::Open;
        }
        let touched_by_holiday = local.today_is_holiday || local.yesterday_is_holiday;
        if touched_by_holiday
            && self.open_on(
                local,
                DaySet::weekday(local.weekday),
                DaySet::weekday(local.weekday.previous()),
            )
        {
            return ScheduleVerdict::ClosedForHoliday;
        }
        ScheduleVerdict::Closed
    }

    fn open_on(&self, local: &LocalMoment, today: DaySet, yesterday: DaySet) -> bool {
        let minute = local.minute;
        self.periods().iter().any(|p| {
            if p.crosses_midnight() {
                (p.days.contains(today) && minute >= p.start) || (p.days.contains(yesterday) && minute < p.end)
            } else {
                p.days.contains(today) && p.start <= minute && minute < p.end
            }
        })
    }
}

/// The outcome of evaluating a schedule at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleVerdict {
    /// The schedule admits the moment.
    Open,
    /// The schedule does not admit the moment.
    Closed,
    /// The schedule would admit the moment on an ordinary day, but today (or, for a
    /// period crossing midnight, yesterday) is a holiday.
    ClosedForHoliday,
}

/// A holiday calendar: a sorted set of local dates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HolidayCalendar {
    dates: Vec<Date>,
}

impl HolidayCalendar {
    /// A calendar from any list of dates; duplicates are dropped.
    #[must_use]
    pub fn new(mut dates: Vec<Date>) -> Self {
        dates.sort_unstable();
        dates.dedup();
        HolidayCalendar { dates }
    }

    /// Whether `date` is a holiday.
    #[must_use]
    pub fn contains(&self, date: Date) -> bool {
        self.dates.binary_search(&date).is_ok()
    }

    /// The dates, sorted.
    #[must_use]
    pub fn dates(&self) -> &[Date] {
        &self.dates
    }
}

/// An instant seen on a site's wall clock: what schedules are evaluated against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalMoment {
    /// The local date.
    pub date: Date,
    /// The local weekday.
    pub weekday: Weekday,
    /// Minutes since local midnight.
    pub minute: MinuteOfDay,
    /// Whether the local date is a holiday.
    pub today_is_holiday: bool,
    /// Whether the day before is a holiday (it governs periods crossing midnight).
    pub yesterday_is_holiday: bool,
}

impl LocalMoment {
    /// The wall-clock view of `at` in `zone`, with holidays from `calendar`.
    #[must_use]
    pub fn new(at: Timestamp, zone: &TimeZone, calendar: Option<&HolidayCalendar>) -> Self {
        let local = zone.to_datetime(at);
        let date = local.date();
        let minute = u16::from(local.hour().unsigned_abs())
            .saturating_mul(60)
            .saturating_add(u16::from(local.minute().unsigned_abs()));
        let (today_is_holiday, yesterday_is_holiday) = match calendar {
            Some(cal) => (cal.contains(date), date.yesterday().is_ok_and(|d| cal.contains(d))),
            None => (false, false),
        };
        LocalMoment {
            date,
            weekday: date.weekday(),
            minute,
            today_is_holiday,
            yesterday_is_holiday,
        }
    }

    fn today_kind(&self) -> DaySet {
        if self.today_is_holiday {
            DaySet::HOLIDAY
        } else {
            DaySet::weekday(self.weekday)
        }
    }

    fn yesterday_kind(&self) -> DaySet {
        if self.yesterday_is_holiday {
            DaySet::HOLIDAY
        } else {
            DaySet::weekday(self.weekday.previous())
        }
    }
}
