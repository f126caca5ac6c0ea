//! What an IQ holds to decide alone (PROTOCOL.md 6.3 and 6.4): its offline list, kept up
//! to date by revocations, deltas and door commands, and the offline decision rule.
//!
//! `keyway iq-sim` and the tests use it as the IQ's side of offline operation. Schedules
//! are evaluated with the core's own [`Schedule::verdict`] on the site's wall clock, so
//! periods crossing midnight, holidays and DST mean what they mean to the node.

use crate::client::ReceivedOfflineList;
use crate::message::{
    DoorCommand, DoorCommandKind, OfflineDelta, OfflineEntry, OfflineListBegin, OfflineSchedule, Revocation,
    RevocationWhat,
};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use keyway_core::{
    CredentialKind, DateRange, DaySet, Effect, HolidayCalendar, LocalMoment, Period, Schedule, ScheduleError,
    ScheduleVerdict,
};
use std::collections::{HashMap, HashSet};
use thiserror::Error;

/// Why an offline list cannot be used.
#[derive(Debug, Error)]
pub enum OfflineError {
    /// An unknown time zone.
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    /// A `yyyymmdd` that is not a date.
    #[error("invalid date {0}")]
    Date(u32),
    /// A schedule the core refuses.
    #[error("schedule {id}: {source}")]
    Schedule {
        /// The schedule's id.
        id: u32,
        /// Why.
        source: ScheduleError,
    },
}

/// An offline decision: the effect and the reason code (the node's codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineDecision {
    /// Open or not.
    pub effect: Effect,
    /// The reason code.
    pub reason: &'static str,
    /// The credential of the list that matched, if any.
    pub credential: Option<u32>,
}

/// What applying a delta did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Applied; the list is at the delta's `to_revision`.
    Applied,
    /// Already covered by the list's revision; nothing changed.
    Ignored,
    /// The delta starts after the list's revision: something was missed, a full list must
    /// be fetched.
    NeedsFullList,
}

#[derive(Clone, Copy, Debug, Default)]
struct DoorState {
    office: bool,
    lockdown: bool,
}

/// An IQ's offline list, ready to decide from.
#[derive(Debug)]
pub struct OfflineStore {
    revision: u64,
    zone: TimeZone,
    schedules: HashMap<u32, Schedule>,
    holidays: HolidayCalendar,
    entries: HashMap<u32, OfflineEntry>,
    by_secret: HashMap<(CredentialKind, Vec<u8>), u32>,
    revoked: HashSet<u32>,
    blocked: HashSet<u32>,
    blocked_at_door: HashSet<(u32, u32)>,
    deny_all: bool,
    doors: HashMap<u32, DoorState>,
}

fn date(yyyymmdd: u32) -> Result<Date, OfflineError> {
    let year = i16::try_from(yyyymmdd / 10_000).map_err(|_| OfflineError::Date(yyyymmdd))?;
    let month = i8::try_from(yyyymmdd / 100 % 100).map_err(|_| OfflineError::Date(yyyymmdd))?;
    let day = i8::try_from(yyyymmdd % 100).map_err(|_| OfflineError::Date(yyyymmdd))?;
    Date::new(year, month, day).map_err(|_| OfflineError::Date(yyyymmdd))
}

fn schedule(s: &OfflineSchedule) -> Result<Schedule, OfflineError> {
    let periods = s
        .periods
        .iter()
        .map(|p| Period {
            days: DaySet::from_bits(p.days),
            start: p.start,
            end: p.end,
        })
        .collect();
    let range = match (s.from, s.until) {
        (None, None) => None,
        (from, until) => Some(DateRange {
            first: from.map(date).transpose()?.unwrap_or(Date::MIN),
            last: until.map(date).transpose()?.unwrap_or(Date::MAX),
        }),
    };
    Schedule::new(periods, range).map_err(|source| OfflineError::Schedule { id: s.id, source })
}

impl Default for OfflineStore {
    fn default() -> Self {
        OfflineStore::empty()
    }
}

impl OfflineStore {
    /// No list yet (revision 0): every decision is a deny.
    #[must_use]
    pub fn empty() -> OfflineStore {
        OfflineStore {
            revision: 0,
            zone: TimeZone::UTC,
            schedules: HashMap::new(),
            holidays: HolidayCalendar::default(),
            entries: HashMap::new(),
            by_secret: HashMap::new(),
            revoked: HashSet::new(),
            blocked: HashSet::new(),
            blocked_at_door: HashSet::new(),
            deny_all: false,
            doors: HashMap::new(),
        }
    }

    /// A store from a full list, replacing everything (door modes set by commands are
    /// kept: they are not part of the list).
    pub fn from_list(list: &ReceivedOfflineList) -> Result<OfflineStore, OfflineError> {
        Self::build(&list.begin, &list.entries)
    }

    fn build(begin: &OfflineListBegin, entries: &[OfflineEntry]) -> Result<OfflineStore, OfflineError> {
        let zone = TimeZone::get(&begin.time_zone).map_err(|_| OfflineError::TimeZone(begin.time_zone.clone()))?;
        let schedules = begin
            .schedules
            .iter()
            .map(|s| Ok((s.id, schedule(s)?)))
            .collect::<Result<HashMap<_, _>, OfflineError>>()?;
        let holidays = HolidayCalendar::new(begin.holidays.iter().map(|d| date(*d)).collect::<Result<_, _>>()?);
        let mut store = OfflineStore {
            revision: begin.revision,
            zone,
            schedules,
            holidays,
            ..OfflineStore::empty()
        };
        for entry in entries {
            store.upsert(entry.clone());
        }
        Ok(store)
    }

    /// Replaces the list with a new full one, keeping the door modes.
    pub fn replace(&mut self, list: &ReceivedOfflineList) -> Result<(), OfflineError> {
        let doors = std::mem::take(&mut self.doors);
        *self = Self::from_list(list)?;
        self.doors = doors;
        Ok(())
    }

    /// The revision of the list held (0 for none).
    #[must_use]
    pub const fn revision(&self) -> u64 {
        self.revision
    }

    /// How many entries are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn upsert(&mut self, entry: OfflineEntry) {
        self.remove(entry.credential);
        // A newer state of a credential supersedes earlier revocations of it and of its
        // owner (PROTOCOL.md 6.3, OFFLINE_DELTA).
        self.revoked.remove(&entry.credential);
        if let Some(person) = entry.person {
            self.blocked.remove(&person);
            self.blocked_at_door.retain(|(p, _)| *p != person);
        }
        self.by_secret
            .insert((entry.kind, entry.secret.clone()), entry.credential);
        self.entries.insert(entry.credential, entry);
    }

    fn remove(&mut self, credential: u32) {
        if let Some(old) = self.entries.remove(&credential) {
            self.by_secret.remove(&(old.kind, old.secret));
        }
    }

    /// Applies a revocation at once.
    pub fn apply_revocation(&mut self, revocation: &Revocation) {
        for item in &revocation.items {
            match (item.what, item.door) {
                (RevocationWhat::Credential, _) => {
                    self.revoked.insert(item.id);
                }
                (RevocationWhat::Person, _) => {
                    self.blocked.insert(item.id);
                }
                (RevocationWhat::PersonAtDoor, Some(door)) => {
                    self.blocked_at_door.insert((item.id, door));
                }
                // A person-at-door item without a door, `Everything`, and kinds this
                // version does not know: deny everything until the next full list.
                (RevocationWhat::PersonAtDoor, None) | (RevocationWhat::Everything | RevocationWhat::Other(_), _) => {
                    self.deny_all = true;
                }
            }
        }
    }

    /// Applies a delta by the rule of PROTOCOL.md: only when `from <= revision < to`.
    pub fn apply_delta(&mut self, delta: &OfflineDelta) -> DeltaOutcome {
        if delta.to_revision <= self.revision {
            return DeltaOutcome::Ignored;
        }
        if delta.from_revision > self.revision {
            return DeltaOutcome::NeedsFullList;
        }
        for credential in &delta.removals {
            self.remove(*credential);
        }
        for entry in &delta.upserts {
            self.upsert(entry.clone());
        }
        self.revision = delta.to_revision;
        DeltaOutcome::Applied
    }

    /// Applies a door command; returns whether it changed a door mode (a remote open is
    /// the lock's business, not the list's).
    pub fn apply_door_command(&mut self, command: &DoorCommand) -> bool {
        let door = self.doors.entry(command.door).or_default();
        match command.command {
            DoorCommandKind::OfficeModeOn => door.office = true,
            DoorCommandKind::OfficeModeOff => door.office = false,
            DoorCommandKind::LockdownOn => door.lockdown = true,
            DoorCommandKind::LockdownOff => door.lockdown = false,
            DoorCommandKind::RemoteOpen | DoorCommandKind::Other(_) => return false,
        }
        true
    }

    /// Decides alone, in the core's order: credential known and not revoked, assigned,
    /// owner not blocked, within its validity, then lockdown (roles are not known offline,
    /// so a lockdown stops everyone), office mode, and the grants of the door.
    #[must_use]
    pub fn decide(&self, door: u32, kind: CredentialKind, secret: &[u8], at: Timestamp) -> OfflineDecision {
        let deny = |reason, credential| OfflineDecision {
            effect: Effect::Deny,
            reason,
            credential,
        };
        let Some(&credential) = self.by_secret.get(&(kind, secret.to_vec())) else {
            return deny("unknown_credential", None);
        };
        let Some(entry) = self.entries.get(&credential) else {
            return deny("unknown_credential", None);
        };
        let id = Some(credential);
        if self.deny_all || self.revoked.contains(&credential) {
            return deny("credential_revoked", id);
        }
        let Some(person) = entry.person else {
            return deny("unassigned_credential", id);
        };
        if self.blocked.contains(&person) {
            return deny("person_blocked", id);
        }
        let ms = at.as_millisecond();
        if entry.valid_from.is_some_and(|from| ms < from) {
            return deny("not_yet_valid", id);
        }
        if entry.valid_until.is_some_and(|until| ms >= until) {
            return deny("expired", id);
        }
        let mode = self.doors.get(&door).copied().unwrap_or_default();
        if mode.lockdown {
            return deny("lockdown", id);
        }
        if mode.office {
            return OfflineDecision {
                effect: Effect::Allow,
                reason: "office_mode",
                credential: id,
            };
        }
        if self.blocked_at_door.contains(&(person, door)) {
            return deny("no_right", id);
        }
        let mut holiday = false;
        let mut any = false;
        let local = LocalMoment::new(at, &self.zone, Some(&self.holidays));
        for grant in entry.grants.iter().filter(|g| g.door == door) {
            any = true;
            let verdict = match grant.schedule {
                None => ScheduleVerdict::Open,
                Some(id) => self
                    .schedules
                    .get(&id)
                    .map_or(ScheduleVerdict::Closed, |s| s.verdict(&local)),
            };
            match verdict {
                ScheduleVerdict::Open => {
                    return OfflineDecision {
                        effect: Effect::Allow,
                        reason: "granted",
                        credential: id,
                    };
                }
                ScheduleVerdict::ClosedForHoliday => holiday = true,
                ScheduleVerdict::Closed => {}
            }
        }
        match (any, holiday) {
            (false, _) => deny("no_right", id),
            (true, true) => deny("holiday", id),
            (true, false) => deny("outside_schedule", id),
        }
    }
}
