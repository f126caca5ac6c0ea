//! The snapshot: an immutable, indexed view of one revision of the model.
//!
//! Layout, chosen for the decision path:
//! - an FST maps `secret || kind || site` to a credential ordinal, and a flat row array
//!   holds each credential's owner and validity;
//! - roaring bitmaps hold group membership, blocked people and revoked credentials;
//! - each door keeps the sorted list of groups that open it.
//!
//! Incremental changes never rebuild the FST. New or replaced credentials live in a small
//! hash overlay, removed ones are tombstoned by ordinal, and people and doors have an
//! overlay of their own. Everything is behind `Arc`s, so a change copies only what it
//! touches. [`Snapshot::compact`] folds the overlays into a fresh base; the publisher runs
//! it off the write path.

use crate::error::ModelError;
use crate::group_list::GroupList;
use crate::ids::{CalendarId, CredentialId, DoorId, GroupId, IqId, PersonId, Revision, RoleId, ScheduleId, SiteId};
use crate::model::{
    CalendarRecord, CredentialKind, CredentialRecord, DoorMode, DoorRecord, GroupRecord, IqRecord, PersonRecord,
    Record, RoleFlags, ScheduleRecord, SiteRecord,
};
use crate::schedule::{HolidayCalendar, Schedule};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The largest id any table accepts. Ids index dense tables, so they must stay small.
pub const MAX_ID: u32 = (1 << 26) - 1;

pub(crate) const NO_PERSON: u32 = u32::MAX;
const NO_ORDINAL: u32 = u32::MAX;
const KEY_SUFFIX: usize = 5;
const KEY_CAP: usize = KEY_SUFFIX + CredentialKind::MAX_SECRET_LEN;

/// The index key of a credential: secret, kind, site. Kept inline (no heap), so the
/// overlay that maps keys to rows copies as plain memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CredentialKey {
    len: u8,
    bytes: [u8; KEY_CAP],
}

impl CredentialKey {
    /// The key, or `None` when the secret does not fit the kind.
    ///
    /// The secret comes first: its bytes are the most selective, so the FST fans out at
    /// the root and a lookup walks fewer nodes than with a site prefix (measured in
    /// `benches/`). Kind and site follow as a fixed-width suffix.
    #[inline]
    pub(crate) fn new(kind: CredentialKind, site: SiteId, secret: &[u8]) -> Option<Self> {
        if !kind.accepts(secret) {
            return None;
        }
        let mut bytes = [0u8; KEY_CAP];
        let len = secret.len().checked_add(KEY_SUFFIX)?;
        let (head, suffix) = bytes.get_mut(..len)?.split_at_mut(secret.len());
        head.copy_from_slice(secret);
        let [k, s @ ..] = suffix else { return None };
        *k = kind.tag_byte();
        s.copy_from_slice(&site.0.to_be_bytes());
        Some(CredentialKey {
            len: u8::try_from(len).ok()?,
            bytes,
        })
    }

    /// A key from the bytes of one taken from the index.
    pub(crate) fn from_raw(raw: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; KEY_CAP];
        bytes.get_mut(..raw.len())?.copy_from_slice(raw);
        Some(CredentialKey {
            len: u8::try_from(raw.len()).ok()?,
            bytes,
        })
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    fn decode(key: &[u8]) -> Option<(CredentialKind, SiteId, &[u8])> {
        let (secret, suffix) = key.split_at_checked(key.len().checked_sub(KEY_SUFFIX)?)?;
        let (&kind, site) = suffix.split_first()?;
        let site = u32::from_be_bytes(site.try_into().ok()?);
        Some((CredentialKind::from_tag_byte(kind)?, SiteId(site), secret))
    }
}

impl Ord for CredentialKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl PartialOrd for CredentialKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What the decision path needs of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CredentialRow {
    pub(crate) id: u32,
    pub(crate) person: u32,
    pub(crate) valid_from: i64,
    pub(crate) valid_until: i64,
    pub(crate) offline_access: bool,
}

impl CredentialRow {
    pub(crate) fn from_record(rec: &CredentialRecord) -> Self {
        CredentialRow {
            id: rec.id.0,
            person: rec.owner.map_or(NO_PERSON, |p| p.0),
            valid_from: rec.valid_from.map_or(i64::MIN, whole_second),
            valid_until: rec.valid_until.map_or(i64::MAX, whole_second),
            offline_access: rec.offline_access,
        }
    }

    pub(crate) fn owner(&self) -> Option<PersonId> {
        (self.person != NO_PERSON).then_some(PersonId(self.person))
    }
}

/// The whole second an instant falls in (rounding down, also before 1970): validity is
/// checked at whole-second precision.
#[inline]
pub(crate) fn whole_second(at: Timestamp) -> i64 {
    let second = at.as_second();
    if at.subsec_nanosecond() < 0 {
        second.saturating_sub(1)
    } else {
        second
    }
}

/// The immutable bulk of the credential index, rebuilt only by [`Snapshot::compact`].
struct CredentialBase {
    index: fst::Map<Vec<u8>>,
    rows: Vec<CredentialRow>,
    ordinal_by_id: Vec<u32>,
}

/// Credentials added, replaced or removed since the base was built.
#[derive(Clone, Default)]
struct CredentialOverlay {
    by_key: HashMap<CredentialKey, CredentialRow>,
    key_by_id: HashMap<u32, CredentialKey>,
    tombstones: RoaringBitmap,
}

/// A dense table with a copy-on-write overlay for the rows changed since it was built.
#[derive(Clone)]
pub(crate) struct Layered<T> {
    base: Arc<Vec<Option<T>>>,
    overlay: Arc<HashMap<u32, Option<T>>>,
}

impl<T: Clone> Layered<T> {
    fn from_dense(base: Vec<Option<T>>) -> Self {
        Layered {
            base: Arc::new(base),
            overlay: Arc::new(HashMap::new()),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        if !self.overlay.is_empty()
            && let Some(row) = self.overlay.get(&id)
        {
            return row.as_ref();
        }
        self.base.get(id as usize).and_then(Option::as_ref)
    }

    pub(crate) fn set_row(&mut self, id: u32, row: Option<T>) {
        Arc::make_mut(&mut self.overlay).insert(id, row);
    }

    fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// Every live row, by ascending id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        let len = self
            .overlay
            .keys()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
            .max(self.base.len());
        (0..len).filter_map(|i| {
            let id = u32::try_from(i).ok()?;
            self.get(id).map(|row| (id, row))
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SiteRow {
    pub(crate) time_zone: TimeZone,
    pub(crate) calendar: Option<CalendarId>,
    pub(crate) lockdown: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct DoorRow {
    pub(crate) site: SiteId,
    pub(crate) iq: Option<IqId>,
    pub(crate) mode: DoorMode,
    pub(crate) lockdown: bool,
    /// The groups that open this door.
    pub(crate) groups: GroupList,
}

#[derive(Clone, Debug)]
pub(crate) struct PersonRow {
    pub(crate) site: SiteId,
    pub(crate) role: RoleId,
    /// The groups the person is a member of; mirrors the groups' member bitmaps.
    pub(crate) groups: GroupList,
}

#[derive(Clone, Debug)]
pub(crate) struct GroupRow {
    pub(crate) site: SiteId,
    pub(crate) schedule: Option<ScheduleId>,
    pub(crate) doors: Arc<[DoorId]>,
    pub(crate) members: Arc<RoaringBitmap>,
}

#[derive(Clone, Debug)]
pub(crate) struct ScheduleRow {
    pub(crate) site: SiteId,
    pub(crate) schedule: Schedule,
}

/// One revision of the model, indexed for decisions. Cheap to clone.
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) revision: Revision,
    base: Arc<CredentialBase>,
    overlay: Arc<CredentialOverlay>,
    pub(crate) sites: Arc<Vec<Option<SiteRow>>>,
    pub(crate) calendars: Arc<Vec<Option<HolidayCalendar>>>,
    pub(crate) iqs: Arc<Vec<Option<SiteId>>>,
    pub(crate) doors: Layered<DoorRow>,
    pub(crate) people: Layered<PersonRow>,
    pub(crate) schedules: Arc<Vec<Option<ScheduleRow>>>,
    pub(crate) groups: Arc<Vec<Option<GroupRow>>>,
    pub(crate) blocked: Arc<RoaringBitmap>,
    pub(crate) revoked: Arc<RoaringBitmap>,
    pub(crate) lockdown_exempt: Arc<Vec<bool>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("credentials", &self.base.rows.len())
            .field("overlay_len", &self.overlay_len())
            .finish_non_exhaustive()
    }
}

/// How many tags and remote users an IQ holds, against its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IqLoad {
    /// Live, unrevoked tags whose owner may open a door of the IQ. A blocked owner's or
    /// an expired tag still takes its slot until it is removed or revoked: the IQ holds
    /// it to deny it.
    pub tags: u32,
    /// People with a live, unrevoked digital key who may open a door of the IQ.
    pub remote_users: u32,
}

impl IqLoad {
    /// Whether the IQ is within [`crate::IQ_MAX_TAGS`] and [`crate::IQ_MAX_REMOTE_USERS`].
    #[must_use]
    pub fn within_limits(self) -> bool {
        self.tags <= crate::model::IQ_MAX_TAGS && self.remote_users <= crate::model::IQ_MAX_REMOTE_USERS
    }
}

pub(crate) fn entity<I: fmt::Display>(id: I) -> String {
    id.to_string()
}

fn check_id(id: u32, name: impl fmt::Display) -> Result<usize, ModelError> {
    if id > MAX_ID {
        return Err(ModelError::IdTooLarge {
            entity: name.to_string(),
        });
    }
    Ok(id as usize)
}

/// Put `row` at `id` in a dense table, refusing duplicates.
fn put_dense<T>(table: &mut Vec<Option<T>>, id: u32, row: T, name: impl fmt::Display) -> Result<(), ModelError> {
    let index = check_id(id, &name)?;
    if table.len() <= index {
        table.resize_with(index + 1, || None);
    }
    match table.get_mut(index) {
        Some(slot @ None) => {
            *slot = Some(row);
            Ok(())
        }
        _ => Err(ModelError::DuplicateId {
            entity: name.to_string(),
        }),
    }
}

/// Put `row` at `id` in a dense table, replacing what was there.
pub(crate) fn set_dense<T>(
    table: &mut Vec<Option<T>>,
    id: u32,
    row: Option<T>,
    name: impl fmt::Display,
) -> Result<(), ModelError> {
    let index = check_id(id, name)?;
    if table.len() <= index {
        table.resize_with(index + 1, || None);
    }
    if let Some(slot) = table.get_mut(index) {
        *slot = row;
    }
    Ok(())
}

fn dense_get<T>(table: &[Option<T>], id: u32) -> Option<&T> {
    table.get(id as usize).and_then(Option::as_ref)
}

impl Snapshot {
    /// Build a snapshot at `revision` from every record of the model.
    ///
    /// Records may come in any order. Every reference is checked: a door's site and IQ,
    /// a credential's owner, a group's doors, members and schedule, and that each lies on
    /// the same site.
    ///
    /// # Errors
    /// The first integrity problem found, as a [`ModelError`].
    pub fn build(revision: Revision, records: impl IntoIterator<Item = Record>) -> Result<Snapshot, ModelError> {
        let mut sites = Vec::new();
        let mut calendars = Vec::new();
        let mut iqs = Vec::new();
        let mut doors = Vec::new();
        let mut people = Vec::new();
        let mut credentials = Vec::new();
        let mut schedules = Vec::new();
        let mut groups = Vec::new();
        let mut roles = RoleFlags::default();
        for record in records {
            match record {
                Record::Site(r) => sites.push(r),
                Record::Calendar(r) => calendars.push(r),
                Record::Iq(r) => iqs.push(r),
                Record::Door(r) => doors.push(r),
                Record::Person(r) => people.push(r),
                Record::Credential(r) => credentials.push(r),
                Record::Schedule(r) => schedules.push(r),
                Record::Group(r) => groups.push(r),
                Record::Roles(r) => roles = r,
            }
        }

        let mut calendar_table = Vec::new();
        for CalendarRecord { id, calendar } in calendars {
            put_dense(&mut calendar_table, id.0, calendar, id)?;
        }
        let mut site_table = Vec::new();
        for s in sites {
            if let Some(cal) = s.holiday_calendar
                && dense_get(&calendar_table, cal.0).is_none()
            {
                return Err(ModelError::UnknownReference {
                    from: entity(s.id),
                    to: entity(cal),
                });
            }
            let row = SiteRow {
                time_zone: s.time_zone,
                calendar: s.holiday_calendar,
                lockdown: s.lockdown,
            };
            put_dense(&mut site_table, s.id.0, row, s.id)?;
        }
        let mut iq_table = Vec::new();
        for IqRecord { id, site } in iqs {
            require_site(&site_table, site, id)?;
            put_dense(&mut iq_table, id.0, site, id)?;
        }
        let mut schedule_table = Vec::new();
        for ScheduleRecord { id, site, schedule } in schedules {
            require_site(&site_table, site, id)?;
            put_dense(&mut schedule_table, id.0, ScheduleRow { site, schedule }, id)?;
        }
        let mut door_table = Vec::new();
        for d in &doors {
            check_door(&site_table, &iq_table, &schedule_table, d)?;
            let row = DoorRow {
                site: d.site,
                iq: d.iq,
                mode: d.mode,
                lockdown: d.lockdown,
                groups: GroupList::default(),
            };
            put_dense(&mut door_table, d.id.0, row, d.id)?;
        }
        let mut person_table = Vec::new();
        let mut blocked = RoaringBitmap::new();
        for p in people {
            require_site(&site_table, p.site, p.id)?;
            put_dense(
                &mut person_table,
                p.id.0,
                PersonRow {
                    site: p.site,
                    role: p.role,
                    groups: GroupList::default(),
                },
                p.id,
            )?;
            if p.blocked {
                blocked.insert(p.id.0);
            }
        }
        // The credential index (key sort and FST) is the bulk of a build and needs only
        // the sites and people, so it runs on a second thread while the groups are indexed
        // here. Errors are reported groups first, so the result does not depend on timing.
        // Where no thread can be had, the credentials are indexed here after the groups.
        let (groups_indexed, credentials_indexed) = std::thread::scope(|scope| {
            let job = std::thread::Builder::new()
                .name("keyway-index".into())
                .spawn_scoped(scope, || index_credentials(&site_table, &person_table, &credentials));
            let groups_indexed = index_groups(&site_table, &schedule_table, &door_table, &person_table, groups);
            let credentials_indexed = match job {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(ModelError::Index {
                        message: "the credential indexer stopped unexpectedly".into(),
                    })
                }),
                Err(_) => index_credentials(&site_table, &person_table, &credentials),
            };
            (groups_indexed, credentials_indexed)
        });
        drop(credentials);
        let IndexedGroups {
            table: group_table,
            door_groups,
            mut memberships,
        } = groups_indexed?;
        let (base, revoked) = credentials_indexed?;
        for (door, list) in door_groups {
            if let Some(Some(row)) = door_table.get_mut(door as usize) {
                row.groups = GroupList::from_unsorted(list);
            }
        }
        memberships.sort_unstable();
        for chunk in memberships.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(person, _)) = chunk.first() else { continue };
            if let Some(Some(row)) = person_table.get_mut(person as usize) {
                row.groups = GroupList::from_unsorted(chunk.iter().map(|(_, g)| *g).collect());
            }
        }

        let mut exempt = Vec::new();
        for role in roles.lockdown_exempt {
            let index = usize::from(role.0);
            if exempt.len() <= index {
                exempt.resize(index + 1, false);
            }
            if let Some(slot) = exempt.get_mut(index) {
                *slot = true;
            }
        }

        Ok(Snapshot {
            revision,
            base: Arc::new(base),
            overlay: Arc::new(CredentialOverlay::default()),
            sites: Arc::new(site_table),
            calendars: Arc::new(calendar_table),
            iqs: Arc::new(iq_table),
            doors: Layered::from_dense(door_table),
            people: Layered::from_dense(person_table),
            schedules: Arc::new(schedule_table),
            groups: Arc::new(group_table),
            blocked: Arc::new(blocked),
            revoked: Arc::new(revoked),
            lockdown_exempt: Arc::new(exempt),
        })
    }

    /// The revision this snapshot holds.
    #[must_use]
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// How many rows the overlays hold; [`Snapshot::compact`] brings it back to zero.
    #[must_use]
    pub fn overlay_len(&self) -> usize {
        self.overlay
            .by_key
            .len()
            .saturating_add(self.overlay.tombstones.len() as usize)
            .saturating_add(self.doors.overlay_len())
            .saturating_add(self.people.overlay_len())
    }

    /// The same state with its overlays folded into a fresh base (the FST is rebuilt).
    ///
    /// # Errors
    /// Only if the index library fails; the state itself was already validated.
    pub fn compact(&self) -> Result<Snapshot, ModelError> {
        Snapshot::build(self.revision, self.records())
    }

    /// The live credential stored under `key`.
    #[inline]
    pub(crate) fn credential(&self, key: &CredentialKey) -> Option<CredentialRow> {
        if !self.overlay.by_key.is_empty()
            && let Some(row) = self.overlay.by_key.get(key)
        {
            return Some(*row);
        }
        let ordinal = u32::try_from(self.base.index.get(key.as_slice())?).ok()?;
        if !self.overlay.tombstones.is_empty() && self.overlay.tombstones.contains(ordinal) {
            return None;
        }
        self.base.rows.get(ordinal as usize).copied()
    }

    /// The live credential with `id`.
    pub(crate) fn credential_by_id(&self, id: CredentialId) -> Option<CredentialRow> {
        if let Some(key) = self.overlay.key_by_id.get(&id.0) {
            return self.overlay.by_key.get(key).copied();
        }
        let ordinal = *self.base.ordinal_by_id.get(id.0 as usize)?;
        if ordinal == NO_ORDINAL || self.overlay.tombstones.contains(ordinal) {
            return None;
        }
        self.base.rows.get(ordinal as usize).copied()
    }

    /// Remove the live credential `id`, if any, from the index.
    pub(crate) fn unlink_credential(&mut self, id: CredentialId) {
        let overlay = Arc::make_mut(&mut self.overlay);
        if let Some(key) = overlay.key_by_id.remove(&id.0) {
            overlay.by_key.remove(&key);
        }
        if let Some(&ordinal) = self.base.ordinal_by_id.get(id.0 as usize)
            && ordinal != NO_ORDINAL
        {
            overlay.tombstones.insert(ordinal);
        }
    }

    /// Index `row` under `key`, which must be free.
    pub(crate) fn link_credential(&mut self, key: CredentialKey, row: CredentialRow) {
        let overlay = Arc::make_mut(&mut self.overlay);
        overlay.key_by_id.insert(row.id, key);
        overlay.by_key.insert(key, row);
    }

    /// Visit every live credential: its index key and its row.
    pub(crate) fn for_each_credential(&self, mut visit: impl FnMut(&[u8], CredentialRow)) {
        use fst::Streamer;
        let mut stream = self.base.index.stream();
        while let Some((key, ordinal)) = stream.next() {
            let Ok(ordinal) = u32::try_from(ordinal) else { continue };
            if self.overlay.tombstones.contains(ordinal) {
                continue;
            }
            if let Some(row) = self.base.rows.get(ordinal as usize) {
                visit(key, *row);
            }
        }
        for (key, row) in &self.overlay.by_key {
            visit(key.as_slice(), *row);
        }
    }

    pub(crate) fn site(&self, id: SiteId) -> Option<&SiteRow> {
        dense_get(&self.sites, id.0)
    }

    pub(crate) fn schedule(&self, id: ScheduleId) -> Option<&ScheduleRow> {
        dense_get(&self.schedules, id.0)
    }

    pub(crate) fn group(&self, id: GroupId) -> Option<&GroupRow> {
        dense_get(&self.groups, id.0)
    }

    pub(crate) fn calendar(&self, id: CalendarId) -> Option<&HolidayCalendar> {
        dense_get(&self.calendars, id.0)
    }

    pub(crate) fn iq_site(&self, id: IqId) -> Option<SiteId> {
        dense_get(&self.iqs, id.0).copied()
    }

    pub(crate) fn is_lockdown_exempt(&self, role: RoleId) -> bool {
        self.lockdown_exempt.get(usize::from(role.0)).copied().unwrap_or(false)
    }

    /// Whether a person exists.
    #[must_use]
    pub fn has_person(&self, id: PersonId) -> bool {
        self.people.get(id.0).is_some()
    }

    /// A person's role, for callers building a context around a decision (door rules).
    #[must_use]
    pub fn person_role(&self, id: PersonId) -> Option<RoleId> {
        self.people.get(id.0).map(|p| p.role)
    }

    /// The site a door belongs to.
    #[must_use]
    pub fn door_site(&self, id: DoorId) -> Option<SiteId> {
        self.doors.get(id.0).map(|d| d.site)
    }

    /// A site's time zone.
    #[must_use]
    pub fn site_time_zone(&self, id: SiteId) -> Option<&TimeZone> {
        self.site(id).map(|s| &s.time_zone)
    }

    /// A site's holiday calendar, if it has one.
    #[must_use]
    pub fn site_holidays(&self, id: SiteId) -> Option<&HolidayCalendar> {
        self.site(id).and_then(|s| s.calendar).and_then(|c| self.calendar(c))
    }

    /// Whether a door exists.
    #[must_use]
    pub fn has_door(&self, id: DoorId) -> bool {
        self.doors.get(id.0).is_some()
    }

    /// How many live credentials the snapshot holds.
    #[must_use]
    pub fn credential_count(&self) -> usize {
        let base_live = self
            .base
            .rows
            .len()
            .saturating_sub(self.overlay.tombstones.len() as usize);
        base_live.saturating_add(self.overlay.by_key.len())
    }

    /// Bytes held by the credential index and tables, an estimate from their capacities.
    /// Benchmarks measure the process's resident size as well.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        let rows = self.base.rows.capacity() * size_of::<CredentialRow>();
        let ids = self.base.ordinal_by_id.capacity() * size_of::<u32>();
        let people = self.people.base.capacity() * size_of::<Option<PersonRow>>()
            + self
                .people
                .base
                .iter()
                .flatten()
                .map(|p| p.groups.heap_bytes())
                .sum::<usize>();
        let doors = self.doors.base.capacity() * size_of::<Option<DoorRow>>();
        let door_groups: usize = self.doors.base.iter().flatten().map(|d| d.groups.heap_bytes()).sum();
        let groups: usize = self
            .groups
            .iter()
            .flatten()
            .map(|g| g.members.serialized_size() + g.doors.len() * 4)
            .sum();
        self.base.index.as_fst().size()
            + rows
            + ids
            + people
            + doors
            + door_groups
            + groups
            + self.blocked.serialized_size()
            + self.revoked.serialized_size()
    }

    /// How loaded an IQ is: the tags and remote users that reach its doors.
    ///
    /// This scans every credential, so it belongs on the write path (admission checks),
    /// not the decision path.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for an unknown IQ.
    pub fn iq_load(&self, iq: IqId) -> Result<IqLoad, ModelError> {
        if self.iq_site(iq).is_none() {
            return Err(ModelError::NotFound { entity: entity(iq) });
        }
        let mut reach = RoaringBitmap::new();
        let mut counted = RoaringBitmap::new();
        for (_, door) in self.doors.iter() {
            if door.iq != Some(iq) {
                continue;
            }
            for g in door.groups.as_slice() {
                if counted.insert(g.0)
                    && let Some(group) = self.group(*g)
                {
                    reach |= group.members.as_ref();
                }
            }
        }
        let mut tags = 0u32;
        let mut remote = RoaringBitmap::new();
        self.for_each_credential(|key, row| {
            let Some(person) = row.owner() else { return };
            if !reach.contains(person.0) || self.revoked.contains(row.id) {
                return;
            }
            match CredentialKey::decode(key).map(|(kind, _, _)| kind) {
                Some(CredentialKind::Tag) => tags = tags.saturating_add(1),
                Some(CredentialKind::DigitalKey) => {
                    remote.insert(person.0);
                }
                Some(CredentialKind::Pin) | None => {}
            }
        });
        Ok(IqLoad {
            tags,
            remote_users: u32::try_from(remote.len()).unwrap_or(u32::MAX),
        })
    }

    /// Every record of the model as this snapshot holds it, sorted by kind and id.
    /// [`Snapshot::build`] on these records gives back an equivalent snapshot.
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (id, cal) in self.calendars.iter().enumerate() {
            if let (Some(cal), Ok(id)) = (cal, u32::try_from(id)) {
                out.push(Record::Calendar(CalendarRecord {
                    id: CalendarId(id),
                    calendar: cal.clone(),
                }));
            }
        }
        for (id, site) in self.sites.iter().enumerate() {
            if let (Some(s), Ok(id)) = (site, u32::try_from(id)) {
                out.push(Record::Site(SiteRecord {
                    id: SiteId(id),
                    time_zone: s.time_zone.clone(),
                    holiday_calendar: s.calendar,
                    lockdown: s.lockdown,
                }));
            }
        }
        for (id, site) in self.iqs.iter().enumerate() {
            if let (Some(site), Ok(id)) = (site, u32::try_from(id)) {
                out.push(Record::Iq(IqRecord {
                    id: IqId(id),
                    site: *site,
                }));
            }
        }
        for (id, s) in self.schedules.iter().enumerate() {
            if let (Some(s), Ok(id)) = (s, u32::try_from(id)) {
                out.push(Record::Schedule(ScheduleRecord {
                    id: ScheduleId(id),
                    site: s.site,
                    schedule: s.schedule.clone(),
                }));
            }
        }
        for (id, d) in self.doors.iter() {
            out.push(Record::Door(DoorRecord {
                id: DoorId(id),
                site: d.site,
                iq: d.iq,
                mode: d.mode,
                lockdown: d.lockdown,
            }));
        }
        for (id, p) in self.people.iter() {
            out.push(Record::Person(PersonRecord {
                id: PersonId(id),
                site: p.site,
                role: p.role,
                blocked: self.blocked.contains(id),
            }));
        }
        let mut creds: Vec<CredentialRecord> = Vec::with_capacity(self.credential_count());
        self.for_each_credential(|key, row| {
            if let Some((kind, site, secret)) = CredentialKey::decode(key) {
                creds.push(CredentialRecord {
                    id: CredentialId(row.id),
                    site,
                    kind,
                    secret: secret.to_vec(),
                    owner: row.owner(),
                    valid_from: (row.valid_from != i64::MIN)
                        .then(|| Timestamp::from_second(row.valid_from).ok())
                        .flatten(),
                    valid_until: (row.valid_until != i64::MAX)
                        .then(|| Timestamp::from_second(row.valid_until).ok())
                        .flatten(),
                    offline_access: row.offline_access,
                    revoked: self.revoked.contains(row.id),
                });
            }
        });
        creds.sort_unstable_by_key(|c| c.id);
        out.extend(creds.into_iter().map(Record::Credential));
        for (id, g) in self.groups.iter().enumerate() {
            if let (Some(g), Ok(id)) = (g, u32::try_from(id)) {
                out.push(Record::Group(GroupRecord {
                    id: GroupId(id),
                    site: g.site,
                    doors: g.doors.to_vec(),
                    schedule: g.schedule,
                    members: g.members.iter().map(PersonId).collect(),
                }));
            }
        }
        let exempt = self
            .lockdown_exempt
            .iter()
            .enumerate()
            .filter(|(_, e)| **e)
            .filter_map(|(i, _)| u16::try_from(i).ok().map(RoleId))
            .collect();
        out.push(Record::Roles(RoleFlags {
            lockdown_exempt: exempt,
        }));
        out
    }
}

struct IndexedGroups {
    table: Vec<Option<GroupRow>>,
    door_groups: HashMap<u32, Vec<GroupId>>,
    memberships: Vec<(u32, GroupId)>,
}

fn index_groups(
    sites: &[Option<SiteRow>],
    schedules: &[Option<ScheduleRow>],
    doors: &[Option<DoorRow>],
    people: &[Option<PersonRow>],
    groups: Vec<GroupRecord>,
) -> Result<IndexedGroups, ModelError> {
    let mut table: Vec<Option<GroupRow>> = Vec::new();
    let mut door_groups: HashMap<u32, Vec<GroupId>> = HashMap::new();
    let mut memberships: Vec<(u32, GroupId)> = Vec::new();
    for g in groups {
        let row = group_row(
            sites,
            schedules,
            |d| dense_get(doors, d.0).map(|r| r.site),
            |p| dense_get(people, p.0).map(|r| r.site),
            &g,
        )?;
        for door in row.doors.iter() {
            door_groups.entry(door.0).or_default().push(g.id);
        }
        memberships.extend(row.members.iter().map(|p| (p, g.id)));
        put_dense(&mut table, g.id.0, row, g.id)?;
    }
    Ok(IndexedGroups {
        table,
        door_groups,
        memberships,
    })
}

fn index_credentials(
    sites: &[Option<SiteRow>],
    people: &[Option<PersonRow>],
    credentials: &[CredentialRecord],
) -> Result<(CredentialBase, RoaringBitmap), ModelError> {
    let mut revoked = RoaringBitmap::new();
    let mut keyed = Vec::with_capacity(credentials.len());
    let mut seen_ids = RoaringBitmap::new();
    for c in credentials {
        check_id(c.id.0, c.id)?;
        if !seen_ids.insert(c.id.0) {
            return Err(ModelError::DuplicateId { entity: entity(c.id) });
        }
        let key = check_credential(sites, |p| dense_get(people, p.0).map(|r| r.site), c)?;
        if c.revoked {
            revoked.insert(c.id.0);
        }
        keyed.push((key, CredentialRow::from_record(c)));
    }
    Ok((build_base(keyed)?, revoked))
}

fn build_base(mut keyed: Vec<(CredentialKey, CredentialRow)>) -> Result<CredentialBase, ModelError> {
    // By key, then id, so a duplicate secret is always reported against the lower id.
    keyed.sort_unstable_by_key(|(key, row)| (*key, row.id));
    for pair in keyed.windows(2) {
        if let [a, b] = pair
            && a.0 == b.0
        {
            return Err(ModelError::DuplicateSecret {
                existing: entity(CredentialId(a.1.id)),
                claimed_by: entity(CredentialId(b.1.id)),
            });
        }
    }
    let mut builder = fst::MapBuilder::memory();
    let mut rows = Vec::with_capacity(keyed.len());
    let max_id = keyed.iter().map(|(_, r)| r.id).max().map_or(0, |m| m as usize + 1);
    let mut ordinal_by_id = vec![NO_ORDINAL; max_id];
    for (ordinal, (key, row)) in keyed.into_iter().enumerate() {
        let ordinal32 = u32::try_from(ordinal).map_err(|_| ModelError::Index {
            message: "too many credentials".into(),
        })?;
        builder
            .insert(key.as_slice(), u64::from(ordinal32))
            .map_err(|e| ModelError::Index {
                message: e.to_string().to_lowercase(),
            })?;
        if let Some(slot) = ordinal_by_id.get_mut(row.id as usize) {
            *slot = ordinal32;
        }
        rows.push(row);
    }
    let index = builder.into_map();
    Ok(CredentialBase {
        index,
        rows,
        ordinal_by_id,
    })
}

fn require_site(sites: &[Option<SiteRow>], site: SiteId, from: impl fmt::Display) -> Result<(), ModelError> {
    if dense_get(sites, site.0).is_none() {
        return Err(ModelError::UnknownReference {
            from: from.to_string(),
            to: entity(site),
        });
    }
    Ok(())
}

pub(crate) fn check_door(
    sites: &[Option<SiteRow>],
    iqs: &[Option<SiteId>],
    schedules: &[Option<ScheduleRow>],
    d: &DoorRecord,
) -> Result<(), ModelError> {
    require_site(sites, d.site, d.id)?;
    if let Some(iq) = d.iq {
        match dense_get(iqs, iq.0) {
            None => {
                return Err(ModelError::UnknownReference {
                    from: entity(d.id),
                    to: entity(iq),
                });
            }
            Some(site) if *site != d.site => {
                return Err(ModelError::CrossSite {
                    from: entity(d.id),
                    to: entity(iq),
                });
            }
            Some(_) => {}
        }
    }
    if let DoorMode::OfficeScheduled(s) = d.mode {
        check_schedule_ref(schedules, s, d.site, d.id)?;
    }
    Ok(())
}

fn check_schedule_ref(
    schedules: &[Option<ScheduleRow>],
    s: ScheduleId,
    site: SiteId,
    from: impl fmt::Display,
) -> Result<(), ModelError> {
    match dense_get(schedules, s.0) {
        None => Err(ModelError::UnknownReference {
            from: from.to_string(),
            to: entity(s),
        }),
        Some(row) if row.site != site => Err(ModelError::CrossSite {
            from: from.to_string(),
            to: entity(s),
        }),
        Some(_) => Ok(()),
    }
}

pub(crate) fn group_row(
    sites: &[Option<SiteRow>],
    schedules: &[Option<ScheduleRow>],
    door_site: impl Fn(DoorId) -> Option<SiteId>,
    person_site: impl Fn(PersonId) -> Option<SiteId>,
    g: &GroupRecord,
) -> Result<GroupRow, ModelError> {
    require_site(sites, g.site, g.id)?;
    if let Some(s) = g.schedule {
        check_schedule_ref(schedules, s, g.site, g.id)?;
    }
    let mut doors = g.doors.clone();
    doors.sort_unstable();
    doors.dedup();
    for d in &doors {
        match door_site(*d) {
            None => {
                return Err(ModelError::UnknownReference {
                    from: entity(g.id),
                    to: entity(*d),
                });
            }
            Some(site) if site != g.site => {
                return Err(ModelError::CrossSite {
                    from: entity(g.id),
                    to: entity(*d),
                });
            }
            Some(_) => {}
        }
    }
    let mut members = RoaringBitmap::new();
    for p in &g.members {
        match person_site(*p) {
            None => {
                return Err(ModelError::UnknownReference {
                    from: entity(g.id),
                    to: entity(*p),
                });
            }
            Some(site) if site != g.site => {
                return Err(ModelError::CrossSite {
                    from: entity(g.id),
                    to: entity(*p),
                });
            }
            Some(_) => {}
        }
        members.insert(p.0);
    }
    Ok(GroupRow {
        site: g.site,
        schedule: g.schedule,
        doors: Arc::from(doors),
        members: Arc::new(members),
    })
}

pub(crate) fn check_credential(
    sites: &[Option<SiteRow>],
    person_site: impl Fn(PersonId) -> Option<SiteId>,
    c: &CredentialRecord,
) -> Result<CredentialKey, ModelError> {
    require_site(sites, c.site, c.id)?;
    if let Some(owner) = c.owner {
        match person_site(owner) {
            None => {
                return Err(ModelError::UnknownReference {
                    from: entity(c.id),
                    to: entity(owner),
                });
            }
            Some(site) if site != c.site => {
                return Err(ModelError::CrossSite {
                    from: entity(c.id),
                    to: entity(owner),
                });
            }
            Some(_) => {}
        }
    }
    CredentialKey::new(c.kind, c.site, &c.secret).ok_or_else(|| ModelError::MalformedSecret {
        entity: entity(c.id),
        expected: match c.kind {
            CredentialKind::Tag => "a tag uid of 4 to 10 bytes",
            CredentialKind::DigitalKey => "a key id of 1 to 16 bytes",
            CredentialKind::Pin => "4 to 8 ascii digits",
        },
    })
}
