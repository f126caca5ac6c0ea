//! A naive reference model of the decision core, written for clarity from the
//! specification rather than from the core's code.
//!
//! Plain `BTreeMap`s and `Vec`s, linear scans, no bitmaps, no FST. It reads the core's
//! public record and change types as input and answers with the core's `Reason`, but it
//! calls nothing of the core's evaluation: not `decide`, not `Snapshot`, not
//! `Schedule::verdict`, `LocalMoment`, `DaySet::contains`, `DateRange::contains`,
//! `HolidayCalendar::contains` or `CredentialKind::accepts`. Time zones go through jiff.
//!
//! The specification of `decide(door, presented, at)`, first failure wins:
//! 1. unknown door: `UnknownDoor`;
//! 2. the secret must fit its kind and name a live credential of that kind on the door's
//!    site, else `UnknownCredential`; from here the decision names the credential, and
//!    its owner when it has one that exists (whatever the outcome, revoked included);
//! 3. revoked: `CredentialRevoked`;
//! 4. no owner (or the owner is gone): `UnassignedCredential`;
//! 5. owner blocked: `PersonBlocked`;
//! 6. whole seconds: before `valid_from`: `NotYetValid`; at or after `valid_until`: `Expired`;
//! 7. door or site in lockdown: `Lockdown` unless the owner's role is exempt, and then
//!    office mode is skipped;
//! 8. otherwise office mode (by hand, or while its schedule is open): `OfficeMode`;
//! 9. the groups opening the door, by ascending id, that the owner is in: the first with
//!    no schedule or an open one grants; else `Holiday` if one was closed for a holiday,
//!    `OutsideSchedule` if any right, `NoRight` if none.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use keyway_core::{
    CalendarId, CalendarRecord, Change, CredentialId, CredentialKind, CredentialRecord, DateRange, DaySet, DoorId,
    DoorMode, DoorRecord, GroupId, GroupRecord, HolidayCalendar, IqId, IqRecord, ModelError, Period, PersonId,
    PersonRecord, Reason, Record, RoleFlags, RoleId, Schedule, ScheduleId, ScheduleRecord, SiteId, SiteRecord,
};
use std::collections::BTreeMap;

/// The largest id accepted, restated from the specification: every `u32` but
/// `u32::MAX`, which is reserved.
pub(crate) const MAX_ID: u32 = u32::MAX - 1;

/// The holiday day type, bit 7 of a day set; bits 0..=6 are Monday..Sunday.
const HOLIDAY_BIT: u8 = 1 << 7;

/// Why the reference refused records or a change. The core's `NotFound` and
/// `UnknownReference` are one class here: both say a named entity does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    DuplicateId,
    IdTooLarge,
    Missing,
    CrossSite,
    SiteChange,
    MalformedSecret,
    DuplicateSecret,
    InUse,
    StaleRevision,
}

impl Refusal {
    /// The class of a core error.
    pub(crate) fn of(error: &ModelError) -> Option<Refusal> {
        Some(match error {
            ModelError::DuplicateId { .. } => Refusal::DuplicateId,
            ModelError::IdTooLarge { .. } => Refusal::IdTooLarge,
            ModelError::UnknownReference { .. } | ModelError::NotFound { .. } => Refusal::Missing,
            ModelError::CrossSite { .. } => Refusal::CrossSite,
            ModelError::SiteChange { .. } => Refusal::SiteChange,
            ModelError::MalformedSecret { .. } => Refusal::MalformedSecret,
            ModelError::DuplicateSecret { .. } => Refusal::DuplicateSecret,
            ModelError::InUse { .. } => Refusal::InUse,
            ModelError::StaleRevision { .. } => Refusal::StaleRevision,
            ModelError::Index { .. } => return None,
        })
    }
}

/// What the reference decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) reason: Reason,
    pub(crate) credential: Option<CredentialId>,
    pub(crate) person: Option<PersonId>,
}

#[derive(Clone, Debug)]
struct Site {
    zone: TimeZone,
    calendar: Option<u32>,
    lockdown: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    Office,
    OfficeScheduled(u32),
}

#[derive(Clone, Debug)]
struct Door {
    site: u32,
    iq: Option<u32>,
    mode: Mode,
    lockdown: bool,
}

#[derive(Clone, Debug)]
struct Person {
    site: u32,
    role: u16,
    blocked: bool,
}

#[derive(Clone, Debug)]
struct Credential {
    site: u32,
    kind: CredentialKind,
    secret: Vec<u8>,
    owner: Option<u32>,
    /// Whole seconds since the epoch, as the specification compares them.
    valid_from: Option<i64>,
    valid_until: Option<i64>,
    offline_access: bool,
    revoked: bool,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    days: u8,
    start: u16,
    end: u16,
}

#[derive(Clone, Debug)]
struct Sched {
    site: u32,
    spans: Vec<Span>,
    range: Option<(Date, Date)>,
}

#[derive(Clone, Debug)]
struct Group {
    site: u32,
    /// Sorted, without duplicates.
    doors: Vec<u32>,
    schedule: Option<u32>,
    /// Sorted, without duplicates.
    members: Vec<u32>,
}

/// The whole model at one revision.
#[derive(Clone, Debug, Default)]
pub(crate) struct Model {
    pub(crate) revision: u64,
    sites: BTreeMap<u32, Site>,
    /// Holiday dates, sorted.
    calendars: BTreeMap<u32, Vec<Date>>,
    iqs: BTreeMap<u32, u32>,
    doors: BTreeMap<u32, Door>,
    people: BTreeMap<u32, Person>,
    credentials: BTreeMap<u32, Credential>,
    schedules: BTreeMap<u32, Sched>,
    groups: BTreeMap<u32, Group>,
    exempt: Vec<u16>,
}

/// Whether `secret` fits `kind`: tags 4 to 10 bytes, digital keys 1 to 16, PINs 4 to 8
/// ASCII digits.
pub(crate) fn secret_fits(kind: CredentialKind, secret: &[u8]) -> bool {
    let n = secret.len();
    match kind {
        CredentialKind::Tag => (4..=10).contains(&n),
        CredentialKind::DigitalKey => (1..=16).contains(&n),
        CredentialKind::Pin => (4..=8).contains(&n) && secret.iter().all(u8::is_ascii_digit),
    }
}

fn weekday_bit(day: Weekday) -> u8 {
    let index = match day {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    };
    1 << index
}

fn previous_weekday(day: Weekday) -> Weekday {
    match day {
        Weekday::Monday => Weekday::Sunday,
        Weekday::Tuesday => Weekday::Monday,
        Weekday::Wednesday => Weekday::Tuesday,
        Weekday::Thursday => Weekday::Wednesday,
        Weekday::Friday => Weekday::Thursday,
        Weekday::Saturday => Weekday::Friday,
        Weekday::Sunday => Weekday::Saturday,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Open,
    Closed,
    ClosedForHoliday,
}

impl Sched {
    fn from_schedule(site: u32, schedule: &Schedule) -> Sched {
        Sched {
            site,
            spans: schedule
                .periods()
                .iter()
                .map(|p| Span {
                    days: p.days.bits(),
                    start: p.start,
                    end: p.end,
                })
                .collect(),
            range: schedule.date_range().map(|r| (r.first, r.last)),
        }
    }

    fn to_schedule(&self) -> Schedule {
        let periods = self
            .spans
            .iter()
            .map(|s| Period {
                days: DaySet::from_bits(s.days),
                start: s.start,
                end: s.end,
            })
            .collect();
        let range = self.range.map(|(first, last)| DateRange { first, last });
        Schedule::new(periods, range).unwrap_or_else(|e| panic!("a stored schedule no longer validates: {e}"))
    }

    /// Whether any span is open at `minute` when today is of day type `today` and
    /// yesterday of day type `yesterday` (each a single bit).
    fn open_with(&self, minute: u16, today: u8, yesterday: u8) -> bool {
        self.spans.iter().any(|s| {
            if s.start < s.end {
                s.days & today != 0 && s.start <= minute && minute < s.end
            } else {
                // Crosses midnight: the evening of a day of the set, or the morning after.
                (s.days & today != 0 && minute >= s.start) || (s.days & yesterday != 0 && minute < s.end)
            }
        })
    }
}

impl Model {
    /// An empty model at revision 0.
    pub(crate) fn empty() -> Model {
        Model::default()
    }

    /// The model of `records` at `revision`, validated as the specification of `build` says.
    pub(crate) fn build(revision: u64, records: &[Record]) -> Result<Model, Refusal> {
        let mut m = Model {
            revision,
            ..Model::default()
        };
        let of_kind = |k: u8| records.iter().filter(move |r| kind_rank(r) == k);
        for r in of_kind(0) {
            if let Record::Calendar(c) = r {
                check_id(c.id.get())?;
                if m.calendars.contains_key(&c.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.calendars.insert(c.id.get(), sorted_dates(&c.calendar));
            }
        }
        for r in of_kind(1) {
            if let Record::Site(s) = r {
                if let Some(cal) = s.holiday_calendar
                    && !m.calendars.contains_key(&cal.get())
                {
                    return Err(Refusal::Missing);
                }
                check_id(s.id.get())?;
                if m.sites.contains_key(&s.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.sites.insert(s.id.get(), site_of(s));
            }
        }
        for r in of_kind(2) {
            if let Record::Iq(q) = r {
                m.require_site(q.site.get())?;
                check_id(q.id.get())?;
                if m.iqs.contains_key(&q.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.iqs.insert(q.id.get(), q.site.get());
            }
        }
        for r in of_kind(3) {
            if let Record::Schedule(s) = r {
                m.require_site(s.site.get())?;
                check_id(s.id.get())?;
                if m.schedules.contains_key(&s.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.schedules
                    .insert(s.id.get(), Sched::from_schedule(s.site.get(), &s.schedule));
            }
        }
        for r in of_kind(4) {
            if let Record::Door(d) = r {
                m.check_door(d)?;
                check_id(d.id.get())?;
                if m.doors.contains_key(&d.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.doors.insert(d.id.get(), door_of(d));
            }
        }
        for r in of_kind(5) {
            if let Record::Person(p) = r {
                m.require_site(p.site.get())?;
                check_id(p.id.get())?;
                if m.people.contains_key(&p.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.people.insert(p.id.get(), person_of(p));
            }
        }
        for r in of_kind(6) {
            if let Record::Group(g) = r {
                let group = m.check_group(g)?;
                check_id(g.id.get())?;
                if m.groups.contains_key(&g.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.groups.insert(g.id.get(), group);
            }
        }
        for r in of_kind(7) {
            if let Record::Credential(c) = r {
                check_id(c.id.get())?;
                if m.credentials.contains_key(&c.id.get()) {
                    return Err(Refusal::DuplicateId);
                }
                m.check_credential(c)?;
                m.credentials.insert(c.id.get(), credential_of(c));
            }
        }
        // Secrets are unique per kind and site, checked once every credential is in.
        let mut keys: Vec<(CredentialKind, u32, &[u8])> = m
            .credentials
            .values()
            .map(|c| (c.kind, c.site, c.secret.as_slice()))
            .collect();
        keys.sort();
        if keys.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(Refusal::DuplicateSecret);
        }
        for r in of_kind(8) {
            if let Record::Roles(flags) = r {
                m.exempt = exempt_of(flags);
            }
        }
        Ok(m)
    }

    /// Apply `change` as `revision`; a refused change leaves the model as it was.
    pub(crate) fn apply(&mut self, revision: u64, change: &Change) -> Result<(), Refusal> {
        if revision <= self.revision {
            return Err(Refusal::StaleRevision);
        }
        let mut next = self.clone();
        next.change(change)?;
        next.revision = revision;
        *self = next;
        Ok(())
    }

    fn change(&mut self, change: &Change) -> Result<(), Refusal> {
        match change {
            Change::BlockPerson(p) | Change::UnblockPerson(p) => {
                let blocked = matches!(change, Change::BlockPerson(_));
                self.people.get_mut(&p.get()).ok_or(Refusal::Missing)?.blocked = blocked;
            }
            Change::RevokeCredential(c) | Change::RestoreCredential(c) => {
                let revoked = matches!(change, Change::RevokeCredential(_));
                self.credentials.get_mut(&c.get()).ok_or(Refusal::Missing)?.revoked = revoked;
            }
            Change::PutCredential(c) => {
                check_id(c.id.get())?;
                self.check_credential(c)?;
                if self
                    .credentials
                    .get(&c.id.get())
                    .is_some_and(|old| old.site != c.site.get())
                {
                    return Err(Refusal::SiteChange);
                }
                let taken = self.credentials.iter().any(|(&id, other)| {
                    id != c.id.get() && other.kind == c.kind && other.site == c.site.get() && other.secret == c.secret
                });
                if taken {
                    return Err(Refusal::DuplicateSecret);
                }
                self.credentials.insert(c.id.get(), credential_of(c));
            }
            Change::RemoveCredential(c) => {
                self.credentials.remove(&c.get()).ok_or(Refusal::Missing)?;
            }
            Change::Grant { person, group } | Change::Ungrant { person, group } => {
                let person_site = self.people.get(&person.get()).ok_or(Refusal::Missing)?.site;
                let g = self.groups.get_mut(&group.get()).ok_or(Refusal::Missing)?;
                if g.site != person_site {
                    return Err(Refusal::CrossSite);
                }
                g.members.retain(|m| *m != person.get());
                if matches!(change, Change::Grant { .. }) {
                    g.members.push(person.get());
                    g.members.sort_unstable();
                }
            }
            Change::PutPerson(p) => {
                self.require_site(p.site.get())?;
                if self.people.get(&p.id.get()).is_some_and(|old| old.site != p.site.get()) {
                    return Err(Refusal::SiteChange);
                }
                check_id(p.id.get())?;
                self.people.insert(p.id.get(), person_of(p));
            }
            Change::RemovePerson(p) => {
                self.people.remove(&p.get()).ok_or(Refusal::Missing)?;
                for c in self.credentials.values_mut() {
                    if c.owner == Some(p.get()) {
                        c.owner = None;
                    }
                }
                for g in self.groups.values_mut() {
                    g.members.retain(|m| *m != p.get());
                }
            }
            Change::PutDoor(d) => {
                self.check_door(d)?;
                check_id(d.id.get())?;
                if self.doors.get(&d.id.get()).is_some_and(|old| old.site != d.site.get()) {
                    return Err(Refusal::SiteChange);
                }
                self.doors.insert(d.id.get(), door_of(d));
            }
            Change::RemoveDoor(d) => {
                if !self.doors.contains_key(&d.get()) {
                    return Err(Refusal::Missing);
                }
                if self.groups.values().any(|g| g.doors.contains(&d.get())) {
                    return Err(Refusal::InUse);
                }
                self.doors.remove(&d.get());
            }
            Change::SetDoorMode { door, mode } => {
                let old = self.doors.get(&door.get()).ok_or(Refusal::Missing)?;
                let record = DoorRecord {
                    id: *door,
                    site: SiteId(old.site),
                    iq: old.iq.map(IqId),
                    mode: *mode,
                    lockdown: old.lockdown,
                };
                self.check_door(&record)?;
                if let Some(d) = self.doors.get_mut(&door.get()) {
                    d.mode = mode_of(*mode);
                }
            }
            Change::SetDoorLockdown { door, on } => {
                self.doors.get_mut(&door.get()).ok_or(Refusal::Missing)?.lockdown = *on;
            }
            Change::SetSiteLockdown { site, on } => {
                self.sites.get_mut(&site.get()).ok_or(Refusal::Missing)?.lockdown = *on;
            }
            Change::PutGroup(g) => {
                check_id(g.id.get())?;
                let group = self.check_group(g)?;
                if self.groups.get(&g.id.get()).is_some_and(|old| old.site != g.site.get()) {
                    return Err(Refusal::SiteChange);
                }
                self.groups.insert(g.id.get(), group);
            }
            Change::RemoveGroup(g) => {
                self.groups.remove(&g.get()).ok_or(Refusal::Missing)?;
            }
            Change::PutSchedule(s) => {
                self.require_site(s.site.get())?;
                if self
                    .schedules
                    .get(&s.id.get())
                    .is_some_and(|old| old.site != s.site.get())
                {
                    return Err(Refusal::SiteChange);
                }
                check_id(s.id.get())?;
                self.schedules
                    .insert(s.id.get(), Sched::from_schedule(s.site.get(), &s.schedule));
            }
            Change::RemoveSchedule(s) => {
                if !self.schedules.contains_key(&s.get()) {
                    return Err(Refusal::Missing);
                }
                let by_group = self.groups.values().any(|g| g.schedule == Some(s.get()));
                let by_door = self.doors.values().any(|d| d.mode == Mode::OfficeScheduled(s.get()));
                if by_group || by_door {
                    return Err(Refusal::InUse);
                }
                self.schedules.remove(&s.get());
            }
            Change::PutIq(q) => {
                self.require_site(q.site.get())?;
                if self.iqs.get(&q.id.get()).is_some_and(|site| *site != q.site.get()) {
                    return Err(Refusal::SiteChange);
                }
                check_id(q.id.get())?;
                self.iqs.insert(q.id.get(), q.site.get());
            }
            Change::RemoveIq(q) => {
                if !self.iqs.contains_key(&q.get()) {
                    return Err(Refusal::Missing);
                }
                if self.doors.values().any(|d| d.iq == Some(q.get())) {
                    return Err(Refusal::InUse);
                }
                self.iqs.remove(&q.get());
            }
            Change::PutSite(s) => {
                if let Some(cal) = s.holiday_calendar
                    && !self.calendars.contains_key(&cal.get())
                {
                    return Err(Refusal::Missing);
                }
                check_id(s.id.get())?;
                self.sites.insert(s.id.get(), site_of(s));
            }
            Change::PutCalendar(c) => {
                check_id(c.id.get())?;
                self.calendars.insert(c.id.get(), sorted_dates(&c.calendar));
            }
            Change::SetRoles(flags) => self.exempt = exempt_of(flags),
        }
        Ok(())
    }

    fn require_site(&self, site: u32) -> Result<(), Refusal> {
        if self.sites.contains_key(&site) {
            Ok(())
        } else {
            Err(Refusal::Missing)
        }
    }

    /// A reference from an entity of `site` to a schedule.
    fn require_schedule(&self, schedule: u32, site: u32) -> Result<(), Refusal> {
        match self.schedules.get(&schedule) {
            None => Err(Refusal::Missing),
            Some(s) if s.site != site => Err(Refusal::CrossSite),
            Some(_) => Ok(()),
        }
    }

    fn check_door(&self, d: &DoorRecord) -> Result<(), Refusal> {
        self.require_site(d.site.get())?;
        if let Some(iq) = d.iq {
            match self.iqs.get(&iq.get()) {
                None => return Err(Refusal::Missing),
                Some(site) if *site != d.site.get() => return Err(Refusal::CrossSite),
                Some(_) => {}
            }
        }
        if let DoorMode::OfficeScheduled(s) = d.mode {
            self.require_schedule(s.get(), d.site.get())?;
        }
        Ok(())
    }

    fn check_group(&self, g: &GroupRecord) -> Result<Group, Refusal> {
        let site = g.site.get();
        self.require_site(site)?;
        if let Some(s) = g.schedule {
            self.require_schedule(s.get(), site)?;
        }
        let mut doors: Vec<u32> = g.doors.iter().map(|d| d.get()).collect();
        doors.sort_unstable();
        doors.dedup();
        for d in &doors {
            match self.doors.get(d) {
                None => return Err(Refusal::Missing),
                Some(door) if door.site != site => return Err(Refusal::CrossSite),
                Some(_) => {}
            }
        }
        for p in &g.members {
            match self.people.get(&p.get()) {
                None => return Err(Refusal::Missing),
                Some(person) if person.site != site => return Err(Refusal::CrossSite),
                Some(_) => {}
            }
        }
        let mut members: Vec<u32> = g.members.iter().map(|p| p.get()).collect();
        members.sort_unstable();
        members.dedup();
        Ok(Group {
            site,
            doors,
            schedule: g.schedule.map(|s| s.get()),
            members,
        })
    }

    fn check_credential(&self, c: &CredentialRecord) -> Result<(), Refusal> {
        self.require_site(c.site.get())?;
        if let Some(owner) = c.owner {
            match self.people.get(&owner.get()) {
                None => return Err(Refusal::Missing),
                Some(p) if p.site != c.site.get() => return Err(Refusal::CrossSite),
                Some(_) => {}
            }
        }
        if !secret_fits(c.kind, &c.secret) {
            return Err(Refusal::MalformedSecret);
        }
        Ok(())
    }

    /// The decision of the specification.
    pub(crate) fn decide(&self, door: DoorId, kind: CredentialKind, secret: &[u8], at: Timestamp) -> Outcome {
        let mut out = Outcome {
            reason: Reason::UnknownDoor,
            credential: None,
            person: None,
        };
        out.reason = self.reason(door.get(), kind, secret, at, &mut out);
        out
    }

    fn reason(&self, door_id: u32, kind: CredentialKind, secret: &[u8], at: Timestamp, out: &mut Outcome) -> Reason {
        let Some(door) = self.doors.get(&door_id) else {
            return Reason::UnknownDoor;
        };
        if !secret_fits(kind, secret) {
            return Reason::UnknownCredential;
        }
        let found = self
            .credentials
            .iter()
            .find(|(_, c)| c.kind == kind && c.site == door.site && c.secret == secret);
        let Some((&credential_id, credential)) = found else {
            return Reason::UnknownCredential;
        };
        out.credential = Some(CredentialId(credential_id));
        // The owner is named whatever the outcome, a revoked credential's included.
        let owner = credential
            .owner
            .and_then(|id| self.people.get(&id).map(|person| (id, person)));
        out.person = owner.map(|(id, _)| PersonId(id));
        if credential.revoked {
            return Reason::CredentialRevoked;
        }
        let Some((owner_id, owner)) = owner else {
            return Reason::UnassignedCredential;
        };
        if owner.blocked {
            return Reason::PersonBlocked;
        }
        let now = whole_second(at);
        if credential.valid_from.is_some_and(|from| now < from) {
            return Reason::NotYetValid;
        }
        if credential.valid_until.is_some_and(|until| now >= until) {
            return Reason::Expired;
        }
        let Some(site) = self.sites.get(&door.site) else {
            return Reason::UnknownDoor;
        };
        let lockdown = door.lockdown || site.lockdown;
        if lockdown && !self.exempt.contains(&owner.role) {
            return Reason::Lockdown;
        }
        if !lockdown {
            match door.mode {
                Mode::Normal => {}
                Mode::Office => return Reason::OfficeMode,
                Mode::OfficeScheduled(s) => {
                    if self.verdict(s, site, at) == Verdict::Open {
                        return Reason::OfficeMode;
                    }
                }
            }
        }
        let mut has_right = false;
        let mut holiday = false;
        // BTreeMap iteration is by ascending group id.
        for (&group_id, group) in &self.groups {
            if !group.doors.contains(&door_id) || !group.members.contains(&owner_id) {
                continue;
            }
            has_right = true;
            let Some(s) = group.schedule else {
                return Reason::Granted {
                    group: GroupId(group_id),
                    schedule: None,
                };
            };
            match self.verdict(s, site, at) {
                Verdict::Open => {
                    return Reason::Granted {
                        group: GroupId(group_id),
                        schedule: Some(ScheduleId(s)),
                    };
                }
                Verdict::ClosedForHoliday => holiday = true,
                Verdict::Closed => {}
            }
        }
        if !has_right {
            Reason::NoRight
        } else if holiday {
            Reason::Holiday
        } else {
            Reason::OutsideSchedule
        }
    }

    /// Schedule `id` at `at` on `site`'s wall clock.
    fn verdict(&self, id: u32, site: &Site, at: Timestamp) -> Verdict {
        let Some(sched) = self.schedules.get(&id) else {
            return Verdict::Closed;
        };
        let local = site.zone.to_datetime(at);
        let date = local.date();
        let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
            .unwrap_or_else(|_| panic!("a wall clock past the day at {at}"));
        if let Some((first, last)) = sched.range
            && (date < first || date > last)
        {
            return Verdict::Closed;
        }
        let holidays: &[Date] = site
            .calendar
            .and_then(|c| self.calendars.get(&c))
            .map_or(&[], Vec::as_slice);
        let today_is_holiday = holidays.contains(&date);
        let yesterday_is_holiday = date.yesterday().is_ok_and(|d| holidays.contains(&d));
        let today_weekday = weekday_bit(date.weekday());
        let yesterday_weekday = weekday_bit(previous_weekday(date.weekday()));
        let today_kind = if today_is_holiday { HOLIDAY_BIT } else { today_weekday };
        let yesterday_kind = if yesterday_is_holiday {
            HOLIDAY_BIT
        } else {
            yesterday_weekday
        };
        if sched.open_with(minute, today_kind, yesterday_kind) {
            Verdict::Open
        } else if (today_is_holiday || yesterday_is_holiday)
            && sched.open_with(minute, today_weekday, yesterday_weekday)
        {
            Verdict::ClosedForHoliday
        } else {
            Verdict::Closed
        }
    }

    /// Live credentials by ascending id: (id, kind, secret, site).
    pub(crate) fn credentials(&self) -> impl Iterator<Item = (u32, CredentialKind, &[u8], u32)> {
        self.credentials
            .iter()
            .map(|(&id, c)| (id, c.kind, c.secret.as_slice(), c.site))
    }

    /// The owner of a live credential.
    pub(crate) fn owner(&self, credential: u32) -> Option<u32> {
        self.credentials.get(&credential).and_then(|c| c.owner)
    }

    /// Doors by ascending id: (id, site).
    pub(crate) fn doors(&self) -> impl Iterator<Item = (u32, u32)> {
        self.doors.iter().map(|(&id, d)| (id, d.site))
    }

    /// The doors some group of `person` opens, by ascending id.
    pub(crate) fn doors_of(&self, person: u32) -> Vec<u32> {
        let mut doors: Vec<u32> = self
            .groups
            .values()
            .filter(|g| g.members.contains(&person))
            .flat_map(|g| g.doors.iter().copied())
            .collect();
        doors.sort_unstable();
        doors.dedup();
        doors
    }

    /// The model as records, in the order and form `Snapshot::records` gives them:
    /// by kind then id, validity in whole seconds, roles last.
    pub(crate) fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (&id, dates) in &self.calendars {
            out.push(Record::Calendar(CalendarRecord {
                id: CalendarId(id),
                calendar: HolidayCalendar::new(dates.clone()),
            }));
        }
        for (&id, s) in &self.sites {
            out.push(Record::Site(SiteRecord {
                id: SiteId(id),
                time_zone: s.zone.clone(),
                holiday_calendar: s.calendar.map(CalendarId),
                lockdown: s.lockdown,
            }));
        }
        for (&id, &site) in &self.iqs {
            out.push(Record::Iq(IqRecord {
                id: IqId(id),
                site: SiteId(site),
            }));
        }
        for (&id, s) in &self.schedules {
            out.push(Record::Schedule(ScheduleRecord {
                id: ScheduleId(id),
                site: SiteId(s.site),
                schedule: s.to_schedule(),
            }));
        }
        for (&id, d) in &self.doors {
            out.push(Record::Door(DoorRecord {
                id: DoorId(id),
                site: SiteId(d.site),
                iq: d.iq.map(IqId),
                mode: match d.mode {
                    Mode::Normal => DoorMode::Normal,
                    Mode::Office => DoorMode::Office,
                    Mode::OfficeScheduled(s) => DoorMode::OfficeScheduled(ScheduleId(s)),
                },
                lockdown: d.lockdown,
            }));
        }
        for (&id, p) in &self.people {
            out.push(Record::Person(PersonRecord {
                id: PersonId(id),
                site: SiteId(p.site),
                role: RoleId(p.role),
                blocked: p.blocked,
            }));
        }
        let second = |s: Option<i64>| s.map(|s| Timestamp::from_second(s).unwrap_or_else(|e| panic!("{e}")));
        for (&id, c) in &self.credentials {
            out.push(Record::Credential(CredentialRecord {
                id: CredentialId(id),
                site: SiteId(c.site),
                kind: c.kind,
                secret: c.secret.clone(),
                owner: c.owner.map(PersonId),
                valid_from: second(c.valid_from),
                valid_until: second(c.valid_until),
                offline_access: c.offline_access,
                revoked: c.revoked,
            }));
        }
        for (&id, g) in &self.groups {
            out.push(Record::Group(GroupRecord {
                id: GroupId(id),
                site: SiteId(g.site),
                doors: g.doors.iter().copied().map(DoorId).collect(),
                schedule: g.schedule.map(ScheduleId),
                members: g.members.iter().copied().map(PersonId).collect(),
            }));
        }
        let mut exempt = self.exempt.clone();
        exempt.sort_unstable();
        exempt.dedup();
        out.push(Record::Roles(RoleFlags {
            lockdown_exempt: exempt.into_iter().map(RoleId).collect(),
        }));
        out
    }

    /// A valid model made from whichever of `records` it can take: each is put as a
    /// change, in dependency order, and the refused ones are dropped.
    pub(crate) fn salvage(records: &[Record]) -> Model {
        let mut m = Model::empty();
        let mut sorted: Vec<&Record> = records.iter().collect();
        sorted.sort_by_key(|r| kind_rank(r));
        for r in sorted {
            let change = match r {
                Record::Calendar(c) => Change::PutCalendar(c.clone()),
                Record::Site(s) => Change::PutSite(s.clone()),
                Record::Iq(q) => Change::PutIq(q.clone()),
                Record::Schedule(s) => Change::PutSchedule(s.clone()),
                Record::Door(d) => Change::PutDoor(d.clone()),
                Record::Person(p) => Change::PutPerson(p.clone()),
                Record::Group(g) => Change::PutGroup(g.clone()),
                Record::Credential(c) => Change::PutCredential(c.clone()),
                Record::Roles(f) => Change::SetRoles(f.clone()),
            };
            // Refused records are simply left out.
            let _refused = m.change(&change);
        }
        m
    }
}

/// The order `build` validates record kinds in.
fn kind_rank(r: &Record) -> u8 {
    match r {
        Record::Calendar(_) => 0,
        Record::Site(_) => 1,
        Record::Iq(_) => 2,
        Record::Schedule(_) => 3,
        Record::Door(_) => 4,
        Record::Person(_) => 5,
        Record::Group(_) => 6,
        Record::Credential(_) => 7,
        Record::Roles(_) => 8,
    }
}

fn check_id(id: u32) -> Result<(), Refusal> {
    if id > MAX_ID { Err(Refusal::IdTooLarge) } else { Ok(()) }
}

fn sorted_dates(calendar: &HolidayCalendar) -> Vec<Date> {
    let mut dates = calendar.dates().to_vec();
    dates.sort_unstable();
    dates.dedup();
    dates
}

fn site_of(s: &SiteRecord) -> Site {
    Site {
        zone: s.time_zone.clone(),
        calendar: s.holiday_calendar.map(|c| c.get()),
        lockdown: s.lockdown,
    }
}

fn mode_of(mode: DoorMode) -> Mode {
    match mode {
        DoorMode::Normal => Mode::Normal,
        DoorMode::Office => Mode::Office,
        DoorMode::OfficeScheduled(s) => Mode::OfficeScheduled(s.get()),
    }
}

fn door_of(d: &DoorRecord) -> Door {
    Door {
        site: d.site.get(),
        iq: d.iq.map(|q| q.get()),
        mode: mode_of(d.mode),
        lockdown: d.lockdown,
    }
}

fn person_of(p: &PersonRecord) -> Person {
    Person {
        site: p.site.get(),
        role: p.role.get(),
        blocked: p.blocked,
    }
}

fn credential_of(c: &CredentialRecord) -> Credential {
    Credential {
        site: c.site.get(),
        kind: c.kind,
        secret: c.secret.clone(),
        owner: c.owner.map(|p| p.get()),
        valid_from: c.valid_from.map(whole_second),
        valid_until: c.valid_until.map(whole_second),
        offline_access: c.offline_access,
        revoked: c.revoked,
    }
}

fn exempt_of(flags: &RoleFlags) -> Vec<u16> {
    flags.lockdown_exempt.iter().map(|r| r.get()).collect()
}

/// The whole second an instant falls in, rounding down (also before 1970).
fn whole_second(at: Timestamp) -> i64 {
    let second = at.as_second();
    if at.subsec_nanosecond() < 0 { second - 1 } else { second }
}
