//! Keyway's decision core.
//!
//! It answers one question, fast and with a reason: may this credential open this door
//! now? It holds the model (sites, IQs, doors, people, credentials, access groups,
//! schedules, holiday calendars), indexes one revision of it into a [`Snapshot`], and
//! decides on that snapshot with [`decide`], or many requests at once with
//! [`decide_batch`] (same answers, overlapped memory reads). Callers read single
//! entities back with the `Snapshot::*_record` methods, and map errors to answers with
//! [`ModelError::code`] and [`ScheduleError::code`].
//!
//! The core does no IO, has no async, and never reads the clock: time is a parameter.
//! It never panics; malformed input is a deny with a reason.
//!
//! ```
//! use keyway_core::*;
//! use jiff::{Timestamp, tz::TimeZone};
//!
//! let site = SiteId(1);
//! let records = vec![
//!     Record::Site(SiteRecord { id: site, time_zone: TimeZone::UTC, holiday_calendar: None, lockdown: false }),
//!     Record::Door(DoorRecord { id: DoorId(1), site, iq: None, mode: DoorMode::Normal, lockdown: false }),
//!     Record::Person(PersonRecord { id: PersonId(1), site, role: RoleId(3), blocked: false }),
//!     Record::Credential(CredentialRecord {
//!         id: CredentialId(1), site, kind: CredentialKind::Tag, secret: vec![0xde, 0xad, 0xbe, 0xef],
//!         owner: Some(PersonId(1)), valid_from: None, valid_until: None, offline_access: false, revoked: false,
//!     }),
//!     Record::Group(GroupRecord { id: GroupId(1), site, doors: vec![DoorId(1)], schedule: None, members: vec![PersonId(1)] }),
//! ];
//! let snapshot = Snapshot::build(Revision(1), records)?;
//! let at: Timestamp = "2026-11-25T09:00:00Z".parse()?;
//! let decision = decide(&snapshot, DoorId(1), Presented::tag(&[0xde, 0xad, 0xbe, 0xef]), at);
//! assert_eq!(decision.effect, Effect::Allow);
//! assert_eq!(decision.reason, Reason::Granted { group: GroupId(1), schedule: None });
//!
//! let blocked = snapshot.apply(Revision(2), &Change::BlockPerson(PersonId(1)))?;
//! let decision = decide(&blocked, DoorId(1), Presented::tag(&[0xde, 0xad, 0xbe, 0xef]), at);
//! assert_eq!((decision.reason, decision.revision), (Reason::PersonBlocked, Revision(2)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::indexing_slicing)]

mod change;
mod clock;
mod decide;
mod error;
mod explain;
mod group_list;
mod ids;
mod model;
mod publish;
mod schedule;
mod snapshot;
mod table;

pub use change::Change;
pub use decide::{Decision, DecisionRequest, Effect, Presented, Reason, decide, decide_batch};
pub use error::ModelError;
pub use explain::{CHECKS, Check, CheckOutcome, Explanation, explain};
pub use ids::{CalendarId, CredentialId, DoorId, GroupId, IqId, PersonId, Revision, RoleId, ScheduleId, SiteId};
pub use model::{
    CalendarRecord, CredentialKind, CredentialRecord, DoorMode, DoorRecord, GroupRecord, IQ_MAX_REMOTE_USERS,
    IQ_MAX_TAGS, IqRecord, PersonRecord, Record, RoleFlags, ScheduleRecord, SiteRecord,
};
pub use publish::{DEFAULT_COMPACTION_THRESHOLD, SnapshotCell};
pub use schedule::{
    DateRange, DaySet, HolidayCalendar, LocalMoment, MAX_PERIODS, MINUTES_PER_DAY, MinuteOfDay, Period, Schedule,
    ScheduleError, ScheduleVerdict,
};
pub use snapshot::{IqLoad, MAX_ID, OfflinePlan, Snapshot, VoucherCounts};

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
