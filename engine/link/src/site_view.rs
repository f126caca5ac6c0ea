//! [`SiteView`]: what the link knows of one site to build its IQs' offline lists and to
//! turn each committed change into the pushes of every IQ of the site at once; and
//! [`Missed`], what an IQ missed while away, replayed against the view when it comes
//! back.
//!
//! One view serves every IQ of its site: a change is applied once per site, not once per
//! session ([`crate::hub`]), and full lists of many IQs at one revision share one view.
//!
//! The lists it describes are capped ([`IQ_MAX_TAGS`], [`IQ_MAX_REMOTE_USERS`]) in the
//! documented order. The view counts what each IQ's list would hold uncapped, so a change
//! to the list of an IQ that is over a cap, before or after the change, is sent as
//! `RESYNC` rather than as a delta: a delta of the touched keys alone could grow the IQ's
//! list past its cap or leave out a key that the change let in.

use crate::backend::{BackendError, OfflineList, PushEvent};
use crate::message::{
    DoorCommand as WireDoorCommand, DoorCommandKind, MAX_CHUNK_ENTRIES, MAX_REVOCATION_ITEMS, OfflineDelta,
    OfflineEntry, OfflineGrant, OfflinePeriod, OfflineSchedule, RevocationItem, RevocationWhat,
};
use jiff::Timestamp;
use keyway_core::{
    CalendarId, Change, CredentialId, CredentialKind, CredentialRecord, DoorId, DoorMode, GroupId, GroupRecord,
    IQ_MAX_REMOTE_USERS, IQ_MAX_TAGS, IqId, PersonId, Record, Revision, Schedule, ScheduleId, SiteId,
};
use keyway_node::Node;
use keyway_store::Logged;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// How many entries of each category an IQ's list would hold without its caps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ListCount {
    /// Tag entries.
    pub(crate) tags: u32,
    /// Digital-key and PIN entries.
    pub(crate) remote: u32,
}

impl ListCount {
    /// Whether the capped list leaves something out.
    pub(crate) fn over_cap(self) -> bool {
        self.tags > IQ_MAX_TAGS || self.remote > IQ_MAX_REMOTE_USERS
    }

    fn add(&mut self, kind: CredentialKind) {
        let held = if kind == CredentialKind::Tag {
            &mut self.tags
        } else {
            &mut self.remote
        };
        *held = held.saturating_add(1);
    }

    fn remove(&mut self, kind: CredentialKind) {
        let held = if kind == CredentialKind::Tag {
            &mut self.tags
        } else {
            &mut self.remote
        };
        *held = held.saturating_sub(1);
    }
}

/// The grants (door, schedule) a person holds at one IQ.
type DoorGrants = BTreeSet<(u32, Option<u32>)>;

/// The grants a person holds, by IQ.
type Grants = BTreeMap<IqId, DoorGrants>;

/// What the link knows of one site at one revision.
#[derive(Debug)]
pub(crate) struct SiteView {
    site: SiteId,
    revision: Revision,
    /// Every door of the site, with its IQ.
    doors: BTreeMap<DoorId, Option<IqId>>,
    groups: BTreeMap<GroupId, GroupRecord>,
    /// The groups of each person, mirroring the groups' members.
    memberships: HashMap<PersonId, BTreeSet<GroupId>>,
    /// The groups that open each door, mirroring the groups' doors.
    door_groups: HashMap<DoorId, BTreeSet<GroupId>>,
    credentials: BTreeMap<CredentialId, CredentialRecord>,
    /// The credentials of each person, mirroring the credentials' owners.
    owned: HashMap<PersonId, BTreeSet<CredentialId>>,
    blocked: BTreeSet<PersonId>,
    revoked: BTreeSet<CredentialId>,
    schedules: BTreeMap<ScheduleId, Schedule>,
    /// Read when the view is built; a change of the site or of a calendar makes every IQ
    /// fetch a full list from a view built afresh, so they are never stale in a list.
    time_zone: String,
    holidays: Vec<u32>,
    /// What each IQ's list would hold without its caps.
    listed: HashMap<IqId, ListCount>,
}

fn yyyymmdd(date: jiff::civil::Date) -> u32 {
    let y = u32::try_from(date.year()).unwrap_or(0);
    let m = u32::try_from(date.month()).unwrap_or(0);
    let d = u32::try_from(date.day()).unwrap_or(0);
    y * 10_000 + m * 100 + d
}

fn credential_item(id: CredentialId) -> RevocationItem {
    RevocationItem {
        what: RevocationWhat::Credential,
        id: id.get(),
        door: None,
    }
}

fn person_item(id: PersonId) -> RevocationItem {
    RevocationItem {
        what: RevocationWhat::Person,
        id: id.get(),
        door: None,
    }
}

/// Whether `new` may deny where `old` allowed: a grant gone (a door, or a door now under
/// a schedule), a validity window that starts later or ends sooner, or another secret,
/// kind or owner. Such a change is revoked first, so the IQ denies until the new entry
/// arrives; a change that only widens (or toggles offline access) is not.
fn narrows(old: &OfflineEntry, new: &OfflineEntry) -> bool {
    let later = |o: Option<i64>, n: Option<i64>| match (o, n) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(o), Some(n)) => n > o,
    };
    let sooner = |o: Option<i64>, n: Option<i64>| match (o, n) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(o), Some(n)) => n < o,
    };
    let kept = old.grants.iter().all(|g| new.grants.contains(g));
    !kept
        || later(old.valid_from, new.valid_from)
        || sooner(old.valid_until, new.valid_until)
        || old.secret != new.secret
        || old.kind != new.kind
        || old.person != new.person
}

fn lockdown(on: bool) -> DoorCommandKind {
    if on {
        DoorCommandKind::LockdownOn
    } else {
        DoorCommandKind::LockdownOff
    }
}

/// What one change does to one IQ of the site.
#[derive(Debug, Default)]
pub(crate) struct IqChange {
    revoke: Vec<RevocationItem>,
    doors: bool,
    commands: Vec<(DoorId, DoorCommandKind)>,
    upserts: Vec<OfflineEntry>,
    removals: Vec<u32>,
    /// The IQ's list is over a cap before or after the change.
    capped: bool,
}

/// What one change does to the site's IQs ([`SiteView::apply`]).
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Every IQ of the site must fetch a full list (a schedule, the site or a calendar
    /// changed).
    pub(crate) resync_all: bool,
    /// Each IQ the change touches.
    pub(crate) iqs: BTreeMap<IqId, IqChange>,
}

impl SiteView {
    /// The view of `site` from its records ([`keyway_core::Snapshot::site_records`]) at
    /// `revision`.
    pub(crate) fn build(site: SiteId, revision: Revision, records: Vec<Record>) -> SiteView {
        let mut view = SiteView {
            site,
            revision,
            doors: BTreeMap::new(),
            groups: BTreeMap::new(),
            memberships: HashMap::new(),
            door_groups: HashMap::new(),
            credentials: BTreeMap::new(),
            owned: HashMap::new(),
            blocked: BTreeSet::new(),
            revoked: BTreeSet::new(),
            schedules: BTreeMap::new(),
            time_zone: "UTC".to_owned(),
            holidays: Vec::new(),
            listed: HashMap::new(),
        };
        let mut calendars = HashMap::new();
        let mut site_calendar: Option<CalendarId> = None;
        for record in records {
            match record {
                Record::Calendar(c) => {
                    calendars.insert(c.id, c.calendar);
                }
                Record::Site(s) if s.id == site => {
                    view.time_zone = s.time_zone.iana_name().unwrap_or("UTC").to_owned();
                    site_calendar = s.holiday_calendar;
                }
                Record::Iq(i) if i.site == site => {
                    view.listed.insert(i.id, ListCount::default());
                }
                Record::Door(d) if d.site == site => {
                    view.doors.insert(d.id, d.iq);
                }
                Record::Group(g) if g.site == site => {
                    view.set_members(g.id, &[], &g.members);
                    view.set_doors(g.id, &[], &g.doors);
                    view.groups.insert(g.id, g);
                }
                Record::Credential(c) if c.site == site => {
                    if c.revoked {
                        view.revoked.insert(c.id);
                    }
                    if let Some(owner) = c.owner {
                        view.owned.entry(owner).or_default().insert(c.id);
                    }
                    view.credentials.insert(c.id, c);
                }
                Record::Person(p) if p.site == site && p.blocked => {
                    view.blocked.insert(p.id);
                }
                Record::Schedule(s) if s.site == site => {
                    view.schedules.insert(s.id, s.schedule);
                }
                _ => {}
            }
        }
        if let Some(cal) = site_calendar.and_then(|id| calendars.get(&id)) {
            view.holidays = cal.dates().iter().map(|d| yyyymmdd(*d)).collect();
        }
        let mut grants: HashMap<PersonId, Grants> = HashMap::new();
        let mut listed = std::mem::take(&mut view.listed);
        for c in view.credentials.values() {
            let Some(person) = view.listable_owner(c) else { continue };
            let held = grants.entry(person).or_insert_with(|| view.grants(person));
            for iq in held.keys() {
                listed.entry(*iq).or_default().add(c.kind);
            }
        }
        view.listed = listed;
        view
    }

    pub(crate) fn site(&self) -> SiteId {
        self.site
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// The IQs of the site.
    #[cfg(test)]
    pub(crate) fn iqs(&self) -> impl Iterator<Item = IqId> + '_ {
        self.listed.keys().copied()
    }

    /// What `iq`'s list would hold without its caps.
    pub(crate) fn listed(&self, iq: IqId) -> ListCount {
        self.listed.get(&iq).copied().unwrap_or_default()
    }

    /// The doors paired with `iq`.
    pub(crate) fn doors_of(&self, iq: IqId) -> Vec<DoorId> {
        self.doors
            .iter()
            .filter(|(_, i)| **i == Some(iq))
            .map(|(d, _)| *d)
            .collect()
    }

    /// The owner of `c` when `c` may be listed at all: owned, not revoked, owner not
    /// blocked.
    fn listable_owner(&self, c: &CredentialRecord) -> Option<PersonId> {
        let person = c.owner?;
        (!self.revoked.contains(&c.id) && !self.blocked.contains(&person)).then_some(person)
    }

    /// The doors (with their schedules) `person` may open, by the doors' IQs.
    fn grants(&self, person: PersonId) -> Grants {
        let mut grants = Grants::new();
        for g in self.memberships.get(&person).into_iter().flatten() {
            let Some(group) = self.groups.get(g) else { continue };
            for door in &group.doors {
                if let Some(Some(iq)) = self.doors.get(door) {
                    grants
                        .entry(*iq)
                        .or_default()
                        .insert((door.get(), group.schedule.map(ScheduleId::get)));
                }
            }
        }
        grants
    }

    fn entry_with(c: &CredentialRecord, person: PersonId, grants: &DoorGrants) -> OfflineEntry {
        OfflineEntry {
            credential: c.id.get(),
            kind: c.kind,
            secret: c.secret.clone(),
            person: Some(person.get()),
            offline_access: c.offline_access,
            valid_from: c.valid_from.map(Timestamp::as_millisecond),
            valid_until: c.valid_until.map(Timestamp::as_millisecond),
            grants: grants
                .iter()
                .map(|(door, schedule)| OfflineGrant {
                    door: *door,
                    schedule: *schedule,
                })
                .collect(),
        }
    }

    /// The offline entry of each of `ids` in each IQ's list that holds it, reading each
    /// owner's grants once.
    fn entries_of(&self, ids: &BTreeSet<CredentialId>) -> Vec<(CredentialId, BTreeMap<IqId, OfflineEntry>)> {
        let mut grants: HashMap<PersonId, Grants> = HashMap::new();
        ids.iter()
            .map(|id| {
                let entries = self
                    .credentials
                    .get(id)
                    .and_then(|c| Some((c, self.listable_owner(c)?)))
                    .map(|(c, person)| {
                        grants
                            .entry(person)
                            .or_insert_with(|| self.grants(person))
                            .iter()
                            .map(|(iq, held)| (*iq, SiteView::entry_with(c, person, held)))
                            .collect()
                    })
                    .unwrap_or_default();
                (*id, entries)
            })
            .collect()
    }

    /// The offline entry of credential `id` in `iq`'s list, if it opens a door there.
    fn entry(&self, id: CredentialId, iq: IqId) -> Option<OfflineEntry> {
        let c = self.credentials.get(&id)?;
        let person = self.listable_owner(c)?;
        let grants = self.grants(person).remove(&iq)?;
        Some(SiteView::entry_with(c, person, &grants))
    }

    fn credentials_of(&self, person: PersonId) -> impl Iterator<Item = CredentialId> + '_ {
        self.owned.get(&person).into_iter().flatten().copied()
    }

    fn schedules(&self) -> Vec<OfflineSchedule> {
        self.schedules
            .iter()
            .map(|(id, s)| OfflineSchedule {
                id: id.get(),
                periods: s
                    .periods()
                    .iter()
                    .map(|p| OfflinePeriod {
                        days: p.days.bits(),
                        start: p.start,
                        end: p.end,
                    })
                    .collect(),
                from: s.date_range().map(|r| yyyymmdd(r.first)),
                until: s.date_range().map(|r| yyyymmdd(r.last)),
            })
            .collect()
    }

    /// `iq`'s full list in its documented order, capped; what was left out (tags,
    /// remote users). It reads only the groups that open the IQ's doors, their members
    /// and their credentials, not the whole site.
    pub(crate) fn full_list(&self, iq: IqId) -> (OfflineList, (u32, u32)) {
        let mut grants: BTreeMap<PersonId, DoorGrants> = BTreeMap::new();
        for door in self.doors_of(iq) {
            for g in self.door_groups.get(&door).into_iter().flatten() {
                let Some(group) = self.groups.get(g) else { continue };
                for m in &group.members {
                    grants
                        .entry(*m)
                        .or_default()
                        .insert((door.get(), group.schedule.map(ScheduleId::get)));
                }
            }
        }
        let mut entries: Vec<OfflineEntry> = Vec::new();
        for (person, held) in &grants {
            if self.blocked.contains(person) {
                continue;
            }
            for id in self.credentials_of(*person) {
                if let Some(c) = self.credentials.get(&id)
                    && !self.revoked.contains(&id)
                {
                    entries.push(SiteView::entry_with(c, *person, held));
                }
            }
        }
        entries.sort_by_key(|e| (!e.offline_access, e.credential));
        let (mut tags, mut remote, mut dropped) = (0u32, 0u32, (0u32, 0u32));
        entries.retain(|e| {
            let (held, cap, out) = if e.kind == CredentialKind::Tag {
                (&mut tags, IQ_MAX_TAGS, &mut dropped.0)
            } else {
                (&mut remote, IQ_MAX_REMOTE_USERS, &mut dropped.1)
            };
            *held += 1;
            if *held > cap {
                *out += 1;
                return false;
            }
            true
        });
        (
            OfflineList {
                revision: self.revision,
                time_zone: self.time_zone.clone(),
                schedules: self.schedules(),
                holidays: self.holidays.clone(),
                entries,
            },
            dropped,
        )
    }

    /// The credentials whose entries `change` may alter, read before it is applied.
    fn touched_by(&self, change: &Change) -> BTreeSet<CredentialId> {
        let mut touched = BTreeSet::new();
        let mut people = BTreeSet::new();
        match change {
            Change::BlockPerson(p) | Change::UnblockPerson(p) | Change::RemovePerson(p) => {
                people.insert(*p);
            }
            Change::Grant { person, .. } | Change::Ungrant { person, .. } => {
                people.insert(*person);
            }
            Change::PutPerson(p) if p.site == self.site => {
                people.insert(p.id);
            }
            Change::RevokeCredential(c) | Change::RestoreCredential(c) | Change::RemoveCredential(c) => {
                touched.insert(*c);
            }
            Change::PutCredential(c) if c.site == self.site => {
                touched.insert(c.id);
            }
            Change::PutGroup(g) if g.site == self.site => {
                people.extend(g.members.iter().copied());
                if let Some(old) = self.groups.get(&g.id) {
                    people.extend(old.members.iter().copied());
                }
            }
            Change::RemoveGroup(g) => {
                if let Some(old) = self.groups.get(g) {
                    people.extend(old.members.iter().copied());
                }
            }
            // The members of the groups that open the door.
            Change::PutDoor(d) if d.site == self.site => {
                people.extend(self.members_at(d.id));
            }
            Change::RemoveDoor(d) => {
                people.extend(self.members_at(*d));
            }
            _ => {}
        }
        for p in people {
            touched.extend(self.credentials_of(p));
        }
        touched
    }

    fn members_at(&self, door: DoorId) -> BTreeSet<PersonId> {
        self.door_groups
            .get(&door)
            .into_iter()
            .flatten()
            .filter_map(|g| self.groups.get(g))
            .flat_map(|g| g.members.iter().copied())
            .collect()
    }

    fn set_doors(&mut self, group: GroupId, old: &[DoorId], new: &[DoorId]) {
        for d in old {
            if let Some(set) = self.door_groups.get_mut(d) {
                set.remove(&group);
                if set.is_empty() {
                    self.door_groups.remove(d);
                }
            }
        }
        for d in new {
            self.door_groups.entry(*d).or_default().insert(group);
        }
    }

    fn set_owner(&mut self, id: CredentialId, old: Option<PersonId>, new: Option<PersonId>) {
        if old == new {
            return;
        }
        if let Some(old) = old
            && let Some(set) = self.owned.get_mut(&old)
        {
            set.remove(&id);
            if set.is_empty() {
                self.owned.remove(&old);
            }
        }
        if let Some(new) = new {
            self.owned.entry(new).or_default().insert(id);
        }
    }

    fn set_members(&mut self, group: GroupId, old: &[PersonId], new: &[PersonId]) {
        for p in old {
            if let Some(set) = self.memberships.get_mut(p) {
                set.remove(&group);
                if set.is_empty() {
                    self.memberships.remove(p);
                }
            }
        }
        for p in new {
            self.memberships.entry(*p).or_default().insert(group);
        }
    }

    /// Applies the change of `revision`; what it does to each IQ of the site.
    #[expect(
        clippy::collapsible_match,
        reason = "one arm per change reads better than guards split from their bodies"
    )]
    pub(crate) fn apply(&mut self, revision: Revision, change: &Change) -> Applied {
        let touched = self.touched_by(change);
        let before = self.entries_of(&touched);
        let mut applied = Applied::default();
        // The IQs that held a credential of the person who is blocked or removed.
        let person_revoked = |before: &[(CredentialId, BTreeMap<IqId, OfflineEntry>)]| -> BTreeSet<IqId> {
            before.iter().flat_map(|(_, by_iq)| by_iq.keys().copied()).collect()
        };
        match change {
            Change::BlockPerson(p) => {
                if self.blocked.insert(*p) {
                    for iq in person_revoked(&before) {
                        applied.iqs.entry(iq).or_default().revoke.push(person_item(*p));
                    }
                }
            }
            Change::UnblockPerson(p) => {
                self.blocked.remove(p);
            }
            Change::RemovePerson(p) => {
                for c in self.owned.remove(p).unwrap_or_default() {
                    if let Some(cred) = self.credentials.get_mut(&c) {
                        cred.owner = None;
                    }
                }
                for g in self.memberships.remove(p).unwrap_or_default() {
                    if let Some(group) = self.groups.get_mut(&g) {
                        group.members.retain(|m| m != p);
                    }
                }
                self.blocked.remove(p);
                for iq in person_revoked(&before) {
                    applied.iqs.entry(iq).or_default().revoke.push(person_item(*p));
                }
            }
            Change::RevokeCredential(c) => {
                if self.credentials.contains_key(c) {
                    self.revoked.insert(*c);
                }
            }
            Change::RestoreCredential(c) => {
                self.revoked.remove(c);
            }
            Change::RemoveCredential(c) => {
                if let Some(old) = self.credentials.remove(c) {
                    self.set_owner(*c, old.owner, None);
                }
                self.revoked.remove(c);
            }
            Change::PutCredential(c) if c.site == self.site => {
                if c.revoked {
                    self.revoked.insert(c.id);
                } else {
                    self.revoked.remove(&c.id);
                }
                let old = self.credentials.insert(c.id, c.clone()).and_then(|o| o.owner);
                self.set_owner(c.id, old, c.owner);
            }
            Change::Grant { person, group } => {
                if let Some(g) = self.groups.get_mut(group)
                    && !g.members.contains(person)
                {
                    g.members.push(*person);
                    self.memberships.entry(*person).or_default().insert(*group);
                }
            }
            Change::Ungrant { person, group } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.retain(|m| m != person);
                    self.set_members(*group, &[*person], &[]);
                }
            }
            Change::PutGroup(g) if g.site == self.site => {
                let (members, doors) = self
                    .groups
                    .insert(g.id, g.clone())
                    .map(|o| (o.members, o.doors))
                    .unwrap_or_default();
                self.set_members(g.id, &members, &g.members);
                self.set_doors(g.id, &doors, &g.doors);
            }
            Change::RemoveGroup(g) => {
                if let Some(old) = self.groups.remove(g) {
                    self.set_members(*g, &old.members, &[]);
                    self.set_doors(*g, &old.doors, &[]);
                }
            }
            Change::PutPerson(p) if p.site == self.site => {
                if p.blocked {
                    self.blocked.insert(p.id);
                } else {
                    self.blocked.remove(&p.id);
                }
            }
            Change::PutDoor(d) if d.site == self.site => {
                let old = self.doors.insert(d.id, d.iq).flatten();
                for iq in [old, d.iq].into_iter().flatten() {
                    applied.iqs.entry(iq).or_default().doors = true;
                }
            }
            Change::RemoveDoor(d) => {
                if let Some(iq) = self.doors.remove(d).flatten() {
                    applied.iqs.entry(iq).or_default().doors = true;
                }
            }
            Change::SetDoorMode { door, mode } => {
                if let Some(Some(iq)) = self.doors.get(door) {
                    let kind = if *mode == DoorMode::Office {
                        DoorCommandKind::OfficeModeOn
                    } else {
                        DoorCommandKind::OfficeModeOff
                    };
                    applied.iqs.entry(*iq).or_default().commands.push((*door, kind));
                }
            }
            Change::SetDoorLockdown { door, on } => {
                if let Some(Some(iq)) = self.doors.get(door) {
                    applied
                        .iqs
                        .entry(*iq)
                        .or_default()
                        .commands
                        .push((*door, lockdown(*on)));
                }
            }
            Change::SetSiteLockdown { site, on } if *site == self.site => {
                for (door, iq) in &self.doors {
                    if let Some(iq) = iq {
                        applied
                            .iqs
                            .entry(*iq)
                            .or_default()
                            .commands
                            .push((*door, lockdown(*on)));
                    }
                }
            }
            Change::PutSchedule(s) if s.site == self.site => {
                self.schedules.insert(s.id, s.schedule.clone());
                // A narrowed schedule is a narrowed right: the IQs refetch.
                applied.resync_all = true;
            }
            Change::RemoveSchedule(s) => {
                self.schedules.remove(s);
            }
            Change::PutSite(s) if s.id == self.site => applied.resync_all = true,
            Change::PutCalendar(_) => applied.resync_all = true,
            Change::PutIq(i) if i.site == self.site => {
                self.listed.entry(i.id).or_default();
            }
            Change::RemoveIq(i) => {
                self.listed.remove(i);
            }
            _ => {}
        }

        let was_over: BTreeSet<IqId> = self
            .listed
            .iter()
            .filter(|(_, count)| count.over_cap())
            .map(|(iq, _)| *iq)
            .collect();
        let revokes_credentials = !matches!(change, Change::BlockPerson(_) | Change::RemovePerson(_));
        let after = self.entries_of(&touched);
        for ((id, old), (_, mut new)) in before.into_iter().zip(after) {
            for (iq, o) in &old {
                if let Some(count) = self.listed.get_mut(iq) {
                    count.remove(o.kind);
                }
                let at = applied.iqs.entry(*iq).or_default();
                match new.remove(iq) {
                    None => {
                        at.removals.push(id.get());
                        if revokes_credentials {
                            at.revoke.push(credential_item(id));
                        }
                    }
                    Some(n) => {
                        self.listed.entry(*iq).or_default().add(n.kind);
                        if *o != n {
                            if narrows(o, &n) {
                                at.revoke.push(credential_item(id));
                            }
                            at.upserts.push(n);
                        }
                    }
                }
            }
            for (iq, n) in new {
                self.listed.entry(iq).or_default().add(n.kind);
                applied.iqs.entry(iq).or_default().upserts.push(n);
            }
        }
        for (iq, at) in &mut applied.iqs {
            let changed = !at.upserts.is_empty() || !at.removals.is_empty();
            at.capped = changed && (was_over.contains(iq) || self.listed(*iq).over_cap());
        }
        self.revision = revision;
        applied
    }

    /// Notes that the change log moved to `revision` with a change the view does not
    /// hold (a policy change).
    pub(crate) fn skip_to(&mut self, revision: Revision) {
        self.revision = revision;
    }

    /// The pushes `change` (applied by [`SiteView::apply`]) makes for `iq`: revocations
    /// first, then its doors, door commands, and the delta of its list, or `RESYNC` when
    /// the list is over a cap.
    pub(crate) fn pushes(&self, revision: Revision, iq: IqId, change: &IqChange) -> Vec<PushEvent> {
        let mut events = Vec::new();
        // A revocation frame holds at most MAX_REVOCATION_ITEMS: several of the same
        // revision, all before the delta.
        for items in change.revoke.chunks(MAX_REVOCATION_ITEMS) {
            events.push(PushEvent::Revocation {
                revision,
                items: items.to_vec(),
            });
        }
        if change.doors {
            events.push(PushEvent::Doors(self.doors_of(iq)));
        }
        for (i, (door, command)) in change.commands.iter().enumerate() {
            events.push(PushEvent::DoorCommand(WireDoorCommand {
                command_id: revision.0.saturating_mul(1_000).saturating_add(i as u64),
                door: door.get(),
                command: *command,
                duration_s: 0,
            }));
        }
        if change.upserts.is_empty() && change.removals.is_empty() {
            return events;
        }
        if change.capped || change.upserts.len() > MAX_CHUNK_ENTRIES || change.removals.len() > MAX_CHUNK_ENTRIES {
            events.push(PushEvent::Resync { revision });
        } else {
            events.push(PushEvent::OfflineDelta(OfflineDelta {
                from_revision: revision.0.saturating_sub(1),
                to_revision: revision.0,
                upserts: change.upserts.clone(),
                removals: change.removals.clone(),
            }));
        }
        events
    }

    /// What `missed` (from `since` to this view's revision) did to `iq`'s list, as
    /// pushes: a revocation of what no longer opens, then one delta from `since` to the
    /// view's revision with the current entry of every credential the changes touched,
    /// or its removal. `None` when only a full list will do (see [`Missed`]), when the
    /// IQ's list is over a cap, or when the replay would not fit one frame of each kind.
    ///
    /// A person whose change may have narrowed what they open is revoked as a whole
    /// first (the IQ denies them), and their current credentials follow in the delta,
    /// which reinstates them where they still open: a person removed since `since` stays
    /// revoked, and the credentials of nobody are removed.
    pub(crate) fn replay(&self, missed: &Missed, iq: IqId, since: Revision) -> Option<Vec<PushEvent>> {
        if missed.full || missed.doors.iter().any(|d| self.doors.contains_key(d)) {
            return None;
        }
        let mut people: BTreeSet<PersonId> = missed.revoked_people.clone();
        let mut touched: BTreeSet<CredentialId> = missed.removed.clone();
        for p in &missed.blocked {
            if self.owned.contains_key(p) {
                people.insert(*p);
            }
        }
        for p in missed.people.iter().chain(&missed.blocked) {
            touched.extend(self.credentials_of(*p));
        }
        touched.extend(missed.credentials.iter().filter(|c| self.credentials.contains_key(c)));
        // A removed person's credentials now belong to nobody, and which were theirs
        // cannot be told any more: every credential of nobody leaves the list (those it
        // never held are no-ops), under the person's revocation.
        let unowned: Vec<&CredentialRecord> = if missed.removed_people.is_empty() {
            Vec::new()
        } else {
            self.credentials
                .values()
                .filter(|c| c.owner.is_none() && !touched.contains(&c.id))
                .collect()
        };
        // The IQ's list at `since` held every key that reached it, uncapped, only if no
        // more than the caps reached it then. Keys untouched since reach it now as then,
        // so at most today's count plus the touched and the unowned ones reached it:
        // within the caps, the replay is exact; else only the capped full list is.
        let mut bound = self.listed(iq);
        for id in &touched {
            match self.credentials.get(id).map(|c| c.kind) {
                Some(kind) => bound.add(kind),
                // Removed: its kind is gone; count it in both.
                None => {
                    bound.add(CredentialKind::Tag);
                    bound.add(CredentialKind::Pin);
                }
            }
        }
        for c in &unowned {
            bound.add(c.kind);
        }
        if bound.over_cap() {
            return None;
        }
        people.extend(missed.removed_people.iter().copied());
        let mut items: Vec<RevocationItem> = people.into_iter().map(person_item).collect();
        let mut upserts = Vec::new();
        let mut removals: Vec<u32> = unowned.iter().map(|c| c.id.get()).collect();
        for id in touched {
            match self.entry(id, iq) {
                Some(entry) => upserts.push(entry),
                None => {
                    removals.push(id.get());
                    items.push(credential_item(id));
                }
            }
        }
        if items.len() > MAX_REVOCATION_ITEMS || upserts.len() > MAX_CHUNK_ENTRIES || removals.len() > MAX_CHUNK_ENTRIES
        {
            return None;
        }
        let mut events = Vec::new();
        if !items.is_empty() {
            events.push(PushEvent::Revocation {
                revision: self.revision,
                items,
            });
        }
        // Always a delta, even an empty one: it moves the IQ's list to the revision.
        events.push(PushEvent::OfflineDelta(OfflineDelta {
            from_revision: since.0,
            to_revision: self.revision.0,
            upserts,
            removals,
        }));
        Some(events)
    }
}

/// What an IQ missed while away, gathered change by change ([`Missed::note`]) from the
/// change log or a hub's recent changes, and replayed against the view of the revision
/// it reconnects at ([`SiteView::replay`]).
///
/// Only changes of keys and people (blocks, grants, credentials, people) and changes of
/// other sites can be replayed. A change of the site's doors, groups, schedules, the
/// site, a calendar, a door mode, the IQ itself, a removal whose site cannot be told, or
/// a reload needs a full list: only the full list says what those did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Missed {
    full: bool,
    /// Blocked: revoked as a whole when they hold credentials of the site.
    blocked: BTreeSet<PersonId>,
    /// Edited: revoked as a whole.
    revoked_people: BTreeSet<PersonId>,
    /// Removed: revoked as a whole, and their former credentials leave the list.
    removed_people: BTreeSet<PersonId>,
    /// People whose credentials the changes touched.
    people: BTreeSet<PersonId>,
    /// Credentials the changes touched, if they are the site's.
    credentials: BTreeSet<CredentialId>,
    /// Credentials removed (their site cannot be told: a no-op where never held).
    removed: BTreeSet<CredentialId>,
    /// Doors whose mode or lockdown changed, if they are the site's.
    doors: BTreeSet<DoorId>,
}

impl Missed {
    /// Whether only a full list will do.
    pub(crate) fn needs_full_list(&self) -> bool {
        self.full
    }

    /// Notes one entry of the change log for IQ `iq` of `site` (`None`: for any IQ of
    /// the site, which notes nothing for an IQ's own change but keeps it); whether it
    /// may matter to the site.
    pub(crate) fn note(&mut self, site: SiteId, iq: Option<IqId>, entry: &Logged) -> bool {
        let change = match entry {
            Logged::Change(change) => change,
            Logged::Reload => {
                self.full = true;
                return true;
            }
            Logged::Policy(_) => return false,
        };
        match change {
            Change::BlockPerson(p) => {
                self.blocked.insert(*p);
            }
            Change::RemovePerson(p) => {
                self.removed_people.insert(*p);
            }
            Change::UnblockPerson(p) | Change::Grant { person: p, .. } | Change::Ungrant { person: p, .. } => {
                self.people.insert(*p);
            }
            Change::PutPerson(p) if p.site == site => {
                self.revoked_people.insert(p.id);
                self.people.insert(p.id);
            }
            Change::RevokeCredential(c) | Change::RestoreCredential(c) => {
                self.credentials.insert(*c);
            }
            Change::RemoveCredential(c) => {
                self.removed.insert(*c);
            }
            Change::PutCredential(c) if c.site == site => {
                self.credentials.insert(c.id);
            }
            Change::SetDoorMode { door, .. } | Change::SetDoorLockdown { door, .. } => {
                self.doors.insert(*door);
            }
            Change::PutIq(i) => match iq {
                Some(iq) if i.id == iq => self.full = true,
                Some(_) => return false,
                None => return i.site == site,
            },
            Change::PutPerson(_) | Change::PutCredential(_) | Change::SetRoles(_) => return false,
            Change::PutGroup(g) if g.site != site => return false,
            Change::PutDoor(d) if d.site != site => return false,
            Change::PutSchedule(s) if s.site != site => return false,
            Change::PutSite(s) if s.id != site => return false,
            Change::SetSiteLockdown { site: s, .. } if *s != site => return false,
            _ => self.full = true,
        }
        true
    }
}

/// How long a view built for full lists is kept after its last use.
const LIST_VIEW_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

type ListViewCell = Arc<tokio::sync::Mutex<Option<Arc<SiteView>>>>;

type ViewsBySite = Mutex<HashMap<SiteId, (ListViewCell, Instant)>>;

/// The views full lists are built from: one per site, at the latest revision a list was
/// asked at, so the IQs of a site that fetch lists at one revision (many reconnecting at
/// once) share one view. A view unused for a minute is dropped, by a sweeper task that
/// runs while any view is kept: a site's view (its whole offline list) must not stay in
/// memory because no other list was asked for since.
#[derive(Debug)]
pub(crate) struct ListViews {
    by_site: Arc<ViewsBySite>,
    sweeping: Arc<std::sync::atomic::AtomicBool>,
    /// How long a view is kept after its last use ([`LIST_VIEW_KEPT`]; shorter in tests).
    kept: std::time::Duration,
}

impl Default for ListViews {
    fn default() -> Self {
        ListViews {
            by_site: Arc::default(),
            sweeping: Arc::default(),
            kept: LIST_VIEW_KEPT,
        }
    }
}

/// Drops the views unused for `kept` at `now`; answers whether none is left.
fn drop_idle_views(
    by_site: &mut HashMap<SiteId, (ListViewCell, Instant)>,
    now: Instant,
    kept: std::time::Duration,
) -> bool {
    by_site.retain(|_, (_, used)| now.saturating_duration_since(*used) < kept);
    by_site.is_empty()
}

impl ListViews {
    /// A view of `iq`'s site at the node's revision or later.
    ///
    /// # Errors
    /// [`BackendError::Refused`] for an IQ the node does not know.
    pub(crate) async fn of(&self, node: &Node, iq: IqId) -> Result<Arc<SiteView>, BackendError> {
        let revision = node.snapshot().load().revision();
        let site = node.iq_site(iq).ok_or(BackendError::Refused)?;
        let cell = self.cell(site);
        let mut cached = cell.lock().await;
        if let Some(view) = cached.as_ref()
            && view.revision() >= revision
        {
            return Ok(Arc::clone(view));
        }
        let snapshot = node.snapshot().load_full();
        let view = tokio::task::spawn_blocking(move || {
            let revision = snapshot.revision();
            Arc::new(SiteView::build(site, revision, snapshot.site_records(site)))
        })
        .await
        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        *cached = Some(Arc::clone(&view));
        Ok(view)
    }

    /// The cell holding `site`'s view, marked used now.
    fn cell(&self, site: SiteId) -> ListViewCell {
        let cell = {
            let mut by_site = self.by_site.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let (cell, used) = by_site.entry(site).or_insert_with(|| (ListViewCell::default(), now));
            *used = now;
            Arc::clone(cell)
        };
        self.keep_sweeping();
        cell
    }

    /// Starts the sweeper unless it runs. It wakes every `kept`, drops the views unused
    /// that long, and ends when none is left (or the views are dropped);
    /// the next [`ListViews::of`] starts it again.
    fn keep_sweeping(&self) {
        use std::sync::atomic::Ordering;
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let by_site = Arc::downgrade(&self.by_site);
        let sweeping = Arc::clone(&self.sweeping);
        let kept = self.kept;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(kept).await;
                let Some(by_site) = by_site.upgrade() else {
                    return;
                };
                let mut by_site = by_site.lock().unwrap_or_else(PoisonError::into_inner);
                if drop_idle_views(&mut by_site, Instant::now(), kept) {
                    // Cleared under the lock: an `of` that adds a view after this sees
                    // the flag down and starts a new sweeper.
                    sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// How many sites have a view kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.by_site.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    //! The view applied change by change against views built afresh from the core's
    //! snapshot after each change: the lists, the counts, and the lists an IQ holds by
    //! applying the pushes (and by one replay from the start) must all agree.

    use super::*;
    use jiff::tz::TimeZone;
    use keyway_core::{DoorRecord, IqRecord, PersonRecord, RoleId, SiteRecord, Snapshot};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const SITE: SiteId = SiteId(1);
    const OTHER: SiteId = SiteId(2);
    const IQS: [IqId; 2] = [IqId(1), IqId(2)];

    #[test]
    fn a_view_is_dropped_once_unused_for_the_kept_time() {
        let kept = std::time::Duration::from_secs(60);
        let start = Instant::now();
        let at = |secs: u64| start + std::time::Duration::from_secs(secs);
        let cases = [
            // (last used, swept at, kept?)
            (0, 59, true),
            (0, 60, false),
            (30, 60, true),
            (30, 90, false),
            // A use stamped after the sweep read its clock.
            (61, 60, true),
        ];
        for (used, now, stays) in cases {
            let mut by_site = HashMap::from([(SITE, (ListViewCell::default(), at(used)))]);
            let empty = drop_idle_views(&mut by_site, at(now), kept);
            assert_eq!(by_site.contains_key(&SITE), stays, "used at {used}, swept at {now}");
            assert_eq!(empty, !stays);
        }
    }

    /// Idle views go without any further list request, the sweeper stops when none is
    /// left, and the next view starts it again. Waits for the outcome (up to 10 s) rather
    /// than timing it, so a slow machine only makes it slower.
    #[tokio::test]
    async fn idle_list_views_are_dropped_without_another_request() {
        use std::sync::atomic::Ordering;
        let views = ListViews {
            kept: std::time::Duration::from_millis(50),
            ..ListViews::default()
        };
        for _ in 0..2 {
            drop(views.cell(SITE));
            drop(views.cell(OTHER));
            assert!(views.sweeping.load(Ordering::Acquire));
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while views.kept() > 0 || views.sweeping.load(Ordering::Acquire) {
                assert!(Instant::now() < deadline, "{} views still kept", views.kept());
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    fn credential(id: u32, owner: Option<u32>, kind: CredentialKind, offline: bool, until: Option<i64>) -> Record {
        Record::Credential(CredentialRecord {
            id: CredentialId(id),
            site: SITE,
            kind,
            secret: if kind == CredentialKind::Pin {
                format!("{:04}", 1000 + id).into_bytes()
            } else {
                vec![0xa0, 0, 0, u8::try_from(id).unwrap_or(0)]
            },
            owner: owner.map(PersonId),
            valid_from: None,
            valid_until: until.map(|s| Timestamp::from_second(s).unwrap()),
            offline_access: offline,
            revoked: false,
        })
    }

    fn start() -> Snapshot {
        let mut records = vec![
            Record::Site(SiteRecord {
                id: SITE,
                time_zone: TimeZone::UTC,
                holiday_calendar: None,
                lockdown: false,
            }),
            Record::Site(SiteRecord {
                id: OTHER,
                time_zone: TimeZone::UTC,
                holiday_calendar: None,
                lockdown: false,
            }),
            Record::Iq(IqRecord { id: IQS[0], site: SITE }),
            Record::Iq(IqRecord { id: IQS[1], site: SITE }),
            Record::Iq(IqRecord {
                id: IqId(3),
                site: OTHER,
            }),
        ];
        for (door, iq) in [(1, Some(IQS[0])), (2, Some(IQS[0])), (3, Some(IQS[1])), (4, None)] {
            records.push(Record::Door(DoorRecord {
                id: DoorId(door),
                site: SITE,
                iq,
                mode: DoorMode::Normal,
                lockdown: false,
            }));
        }
        for p in 1..=4 {
            records.push(Record::Person(PersonRecord {
                id: PersonId(p),
                site: SITE,
                role: RoleId(3),
                blocked: false,
            }));
        }
        for (id, owner, kind) in [
            (1, Some(1), CredentialKind::Tag),
            (2, Some(1), CredentialKind::Pin),
            (3, Some(2), CredentialKind::Tag),
            (4, Some(3), CredentialKind::DigitalKey),
            (5, None, CredentialKind::Tag),
            (6, Some(4), CredentialKind::Tag),
        ] {
            records.push(credential(id, owner, kind, id % 2 == 0, None));
        }
        for (id, doors, members) in [
            (1, vec![1, 3], vec![1, 2]),
            (2, vec![2], vec![3]),
            (3, vec![3, 4], vec![4, 1]),
        ] {
            records.push(Record::Group(GroupRecord {
                id: GroupId(id),
                site: SITE,
                doors: doors.into_iter().map(DoorId).collect(),
                schedule: None,
                members: members.into_iter().map(PersonId).collect(),
            }));
        }
        Snapshot::build(Revision(1), records).unwrap()
    }

    fn change() -> impl Strategy<Value = Change> {
        let person = (1u32..=5).prop_map(PersonId);
        let cred = (1u32..=8).prop_map(CredentialId);
        let group = (1u32..=3).prop_map(GroupId);
        let door = 1u32..=4;
        prop_oneof![
            person.clone().prop_map(Change::BlockPerson),
            person.clone().prop_map(Change::UnblockPerson),
            (person.clone(), group.clone()).prop_map(|(person, group)| Change::Grant { person, group }),
            (person.clone(), group.clone()).prop_map(|(person, group)| Change::Ungrant { person, group }),
            cred.clone().prop_map(Change::RevokeCredential),
            cred.clone().prop_map(Change::RestoreCredential),
            cred.prop_map(Change::RemoveCredential),
            (
                1u32..=8,
                proptest::option::of(1u32..=4),
                0usize..3,
                any::<bool>(),
                proptest::option::of(1u8..3)
            )
                .prop_map(|(id, owner, kind, offline, until)| {
                    let kind = [CredentialKind::Tag, CredentialKind::DigitalKey, CredentialKind::Pin][kind];
                    let Record::Credential(c) =
                        credential(id, owner, kind, offline, until.map(|u| 2_000_000_000 + i64::from(u)))
                    else {
                        unreachable!()
                    };
                    Change::PutCredential(c)
                }),
            (
                1u32..=3,
                proptest::collection::vec(door.clone(), 0..3),
                proptest::collection::vec(1u32..=4, 0..4)
            )
                .prop_map(|(id, mut doors, mut members)| {
                    doors.sort_unstable();
                    doors.dedup();
                    members.sort_unstable();
                    members.dedup();
                    Change::PutGroup(GroupRecord {
                        id: GroupId(id),
                        site: SITE,
                        doors: doors.into_iter().map(DoorId).collect(),
                        schedule: None,
                        members: members.into_iter().map(PersonId).collect(),
                    })
                }),
            group.prop_map(Change::RemoveGroup),
            (door.clone(), proptest::option::of(0usize..2)).prop_map(|(id, iq)| Change::PutDoor(DoorRecord {
                id: DoorId(id),
                site: SITE,
                iq: iq.map(|i| IQS[i]),
                mode: DoorMode::Normal,
                lockdown: false,
            })),
            door.prop_map(|d| Change::RemoveDoor(DoorId(d))),
            (1u32..=4).prop_map(|p| Change::RemovePerson(PersonId(p))),
            (1u32..=4, any::<bool>()).prop_map(|(p, blocked)| Change::PutPerson(PersonRecord {
                id: PersonId(p),
                site: SITE,
                role: RoleId(3),
                blocked,
            })),
        ]
    }

    type Held = BTreeMap<u32, OfflineEntry>;

    fn held(list: &OfflineList) -> Held {
        list.entries.iter().map(|e| (e.credential, e.clone())).collect()
    }

    /// An IQ's list, with what it was told to deny until an upsert supersedes it.
    #[derive(Default)]
    struct Iq {
        list: Held,
        denied_credentials: BTreeSet<u32>,
        denied_people: BTreeSet<u32>,
    }

    impl Iq {
        fn hear(&mut self, event: &PushEvent, fresh: &Held) {
            match event {
                PushEvent::Revocation { items, .. } => {
                    for item in items {
                        match item.what {
                            RevocationWhat::Person => self.denied_people.insert(item.id),
                            _ => self.denied_credentials.insert(item.id),
                        };
                    }
                }
                PushEvent::OfflineDelta(delta) => {
                    for id in &delta.removals {
                        self.list.remove(id);
                    }
                    for e in &delta.upserts {
                        self.denied_credentials.remove(&e.credential);
                        if let Some(p) = e.person {
                            self.denied_people.remove(&p);
                        }
                        self.list.insert(e.credential, e.clone());
                    }
                }
                PushEvent::Resync { .. } => {
                    self.list = fresh.clone();
                    self.denied_credentials.clear();
                    self.denied_people.clear();
                }
                _ => {}
            }
        }

        /// The list holds exactly the fresh list, and nothing in it is still denied.
        fn agrees(&self, fresh: &Held) -> Result<(), TestCaseError> {
            prop_assert_eq!(&self.list, fresh);
            for e in self.list.values() {
                prop_assert!(
                    !self.denied_credentials.contains(&e.credential),
                    "{} denied",
                    e.credential
                );
                prop_assert!(
                    e.person.is_none_or(|p| !self.denied_people.contains(&p)),
                    "owner of {} denied",
                    e.credential
                );
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn applied_changes_keep_every_list_as_built_afresh(changes in proptest::collection::vec(change(), 1..40)) {
            let mut snapshot = start();
            let mut view = SiteView::build(SITE, snapshot.revision(), snapshot.site_records(SITE));
            let mut iqs: BTreeMap<IqId, Iq> = IQS
                .iter()
                .map(|iq| (*iq, Iq { list: held(&view.full_list(*iq).0), ..Iq::default() }))
                .collect();
            let since = snapshot.revision();
            let mut away = Iq { list: held(&view.full_list(IQS[0]).0), ..Iq::default() };
            let mut missed = Missed::default();
            for change in changes {
                let revision = Revision(snapshot.revision().0 + 1);
                let Ok(next) = snapshot.apply(revision, &change) else { continue };
                snapshot = next;
                let applied = view.apply(revision, &change);
                missed.note(SITE, Some(IQS[0]), &Logged::Change(change.clone()));
                let fresh = SiteView::build(SITE, revision, snapshot.site_records(SITE));
                for (iq, state) in &mut iqs {
                    prop_assert_eq!(view.listed(*iq), fresh.listed(*iq), "counts of {:?} after {:?}", iq, change);
                    let expected = held(&fresh.full_list(*iq).0);
                    prop_assert_eq!(held(&view.full_list(*iq).0), expected.clone());
                    let events = if applied.resync_all {
                        vec![PushEvent::Resync { revision }]
                    } else {
                        applied.iqs.get(iq).map(|c| view.pushes(revision, *iq, c)).unwrap_or_default()
                    };
                    for event in &events {
                        state.hear(event, &expected);
                    }
                    state.agrees(&expected)?;
                }
            }
            if let Some(events) = view.replay(&missed, IQS[0], since) {
                let expected = held(&view.full_list(IQS[0]).0);
                for event in &events {
                    prop_assert!(!matches!(event, PushEvent::Resync { .. }), "a replay is deltas");
                    away.hear(event, &expected);
                }
                away.agrees(&expected)?;
            }
        }
    }

    /// Blocks, grants, new keys, removals and revocations are replayed, exactly.
    #[test]
    fn a_replay_of_keys_and_people_is_exact() {
        let mut snapshot = start();
        let mut view = SiteView::build(SITE, snapshot.revision(), snapshot.site_records(SITE));
        let since = snapshot.revision();
        let mut away = Iq {
            list: held(&view.full_list(IQS[0]).0),
            ..Iq::default()
        };
        let Record::Credential(fresh_key) = credential(7, Some(4), CredentialKind::Tag, false, None) else {
            unreachable!()
        };
        let mut missed = Missed::default();
        for change in [
            Change::BlockPerson(PersonId(2)),
            Change::Grant {
                person: PersonId(4),
                group: GroupId(1),
            },
            Change::PutCredential(fresh_key),
            Change::RemovePerson(PersonId(3)),
            Change::RevokeCredential(CredentialId(1)),
        ] {
            let revision = Revision(snapshot.revision().0 + 1);
            snapshot = snapshot.apply(revision, &change).unwrap();
            view.apply(revision, &change);
            assert!(missed.note(SITE, Some(IQS[0]), &Logged::Change(change)));
        }
        let events = view.replay(&missed, IQS[0], since).expect("keys and people replay");
        let expected = held(&view.full_list(IQS[0]).0);
        assert_eq!(
            expected.keys().copied().collect::<Vec<_>>(),
            [2, 6, 7],
            "person 1's PIN, and person 4's tags through group 1"
        );
        for event in &events {
            away.hear(event, &expected);
        }
        away.agrees(&expected).unwrap();
        assert!(away.denied_people.contains(&2) && away.denied_people.contains(&3));
        assert!(away.denied_credentials.contains(&1));
    }

    #[test]
    fn a_view_holds_only_its_site() {
        let snapshot = start();
        let records = snapshot.site_records(SITE);
        assert!(records.iter().all(|r| match r {
            Record::Iq(i) => i.site == SITE,
            Record::Site(s) => s.id == SITE,
            _ => true,
        }));
        let view = SiteView::build(SITE, snapshot.revision(), records);
        assert_eq!(view.iqs().collect::<BTreeSet<_>>(), IQS.into_iter().collect());
        // Person 1 opens doors 1 and 3 (group 1) and 3 (group 3): tag 1 and PIN 2 on both IQs.
        assert_eq!(view.listed(IQS[0]), ListCount { tags: 2, remote: 2 });
        assert_eq!(view.listed(IQS[1]), ListCount { tags: 3, remote: 1 });
    }
}
