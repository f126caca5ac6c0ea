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

use crate::clock::ZoneClock;
use crate::error::ModelError;
use crate::group_list::GroupList;
use crate::ids::{CalendarId, CredentialId, DoorId, GroupId, IqId, PersonId, Revision, RoleId, ScheduleId, SiteId};
use crate::model::{
    CalendarRecord, CredentialKind, CredentialRecord, DoorMode, DoorRecord, GroupRecord, IqRecord, PersonRecord,
    Record, RoleFlags, ScheduleRecord, SiteRecord,
};
use crate::schedule::{HolidayCalendar, Schedule};
use crate::table::{IdHashMap, IdMap, IdSet};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The largest id any table accepts: every `u32` but `u32::MAX`, which is reserved.
///
/// Tables follow the live entities, not the largest id (a vector while ids are dense, a
/// hash map otherwise), so ids from a database that has run for years work as they are.
/// An id of `u32::MAX` is refused with [`ModelError::IdTooLarge`].
pub const MAX_ID: u32 = u32::MAX - 1;

const KEY_SUFFIX: usize = 5;
const KEY_CAP: usize = KEY_SUFFIX + CredentialKind::MAX_SECRET_LEN;
const EMPTY_SLOT: u32 = u32::MAX;

/// The index key of a credential: secret, kind, site. Kept inline (no heap), so the
/// overlay that maps keys to rows copies as plain memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CredentialKey {
    len: u8,
    bytes: [u8; KEY_CAP],
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialKey({:02x?})", self.as_slice())
    }
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

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub(crate) fn decode(key: &[u8]) -> Option<(CredentialKind, SiteId, &[u8])> {
        let (secret, suffix) = key.split_at_checked(key.len().checked_sub(KEY_SUFFIX)?)?;
        let (&kind, site) = suffix.split_first()?;
        let site = u32::from_be_bytes(site.try_into().ok()?);
        Some((CredentialKind::from_tag_byte(kind)?, SiteId(site), secret))
    }

    /// The exact-match hash of this key (see [`secret_hash`]).
    fn hash(&self) -> u64 {
        match CredentialKey::decode(self.as_slice()) {
            Some((kind, _, secret)) => secret_hash(kind, secret),
            None => 0,
        }
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

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let wide = u128::from(a) * u128::from(b);
    (wide as u64) ^ ((wide >> 64) as u64)
}

/// The hash of a presented credential for the exact-match index: its kind and secret,
/// not its site, so that a decision can probe the index while the door's row (which
/// names the site) is still on its way from memory. The site is compared in the row.
#[inline]
pub(crate) fn secret_hash(kind: CredentialKind, secret: &[u8]) -> u64 {
    let mut buf = [0u8; CredentialKind::MAX_SECRET_LEN];
    let n = secret.len().min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), secret.get(..n)) {
        dst.copy_from_slice(src);
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = buf;
    let lo = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
    let hi = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    let meta = (n as u64) << 8 | u64::from(kind.tag_byte());
    fold_mul(lo ^ 0x243f_6a88_85a3_08d3, hi ^ meta ^ 0x1319_8a2e_0370_7344).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

const HAS_OWNER: u8 = 1;
const OFFLINE: u8 = 2;

/// What the decision path needs of a credential, its key included so that one read of
/// the row both confirms an exact-match probe and answers the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CredentialRow {
    pub(crate) valid_from: i64,
    pub(crate) valid_until: i64,
    pub(crate) id: u32,
    person: u32,
    pub(crate) key: CredentialKey,
    flags: u8,
}

impl CredentialRow {
    pub(crate) fn from_record(rec: &CredentialRecord, key: CredentialKey) -> Self {
        let mut flags = 0;
        if rec.owner.is_some() {
            flags |= HAS_OWNER;
        }
        if rec.offline_access {
            flags |= OFFLINE;
        }
        CredentialRow {
            valid_from: rec.valid_from.map_or(i64::MIN, whole_second),
            valid_until: rec.valid_until.map_or(i64::MAX, whole_second),
            id: rec.id.0,
            person: rec.owner.map_or(0, |p| p.0),
            key,
            flags,
        }
    }

    #[inline]
    pub(crate) fn owner(&self) -> Option<PersonId> {
        (self.flags & HAS_OWNER != 0).then_some(PersonId(self.person))
    }

    pub(crate) fn clear_owner(&mut self) {
        self.flags &= !HAS_OWNER;
        self.person = 0;
    }

    pub(crate) fn offline_access(&self) -> bool {
        self.flags & OFFLINE != 0
    }

    /// The record this row was made from.
    fn record(&self, revoked: bool) -> Option<CredentialRecord> {
        let (kind, site, secret) = CredentialKey::decode(self.key.as_slice())?;
        Some(CredentialRecord {
            id: CredentialId(self.id),
            site,
            kind,
            secret: secret.to_vec(),
            owner: self.owner(),
            valid_from: (self.valid_from != i64::MIN)
                .then(|| Timestamp::from_second(self.valid_from).ok())
                .flatten(),
            valid_until: (self.valid_until != i64::MAX)
                .then(|| Timestamp::from_second(self.valid_until).ok())
                .flatten(),
            offline_access: self.offline_access(),
            revoked,
        })
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

/// One bucket of the exact-match index: a 32-bit tag of the hash and the row's ordinal.
#[derive(Clone, Copy, Debug)]
struct Slot {
    tag: u32,
    ordinal: u32,
}

/// The immutable bulk of the credential index, rebuilt only by [`Snapshot::compact`].
///
/// Two indexes over one row array: an open-addressing hash table (linear probing, at
/// most half full) for the exact match a decision needs, and an FST for ordered and
/// prefix scans (offline lists, exports, an admin typing the first digits of a tag).
///
/// The FST comes in parts, each over a consecutive range of the sorted rows, so that the
/// parts are built on as many threads as the machine has cores (an FST is otherwise the
/// one sequential step of a build); streaming them one after the other gives every key in
/// order.
struct CredentialBase {
    index: Vec<fst::Map<Vec<u8>>>,
    rows: Vec<CredentialRow>,
    slots: Box<[Slot]>,
    ordinal_by_id: IdMap<u32>,
}

impl CredentialBase {
    fn slot_of(&self, hash: u64) -> usize {
        ((hash >> 32) as usize) & self.slots.len().wrapping_sub(1)
    }

    /// The ordinal of the row under `key`.
    #[inline]
    fn find(&self, key: &CredentialKey, hash: u64) -> Option<u32> {
        let mask = self.slots.len().checked_sub(1)?;
        let tag = hash as u32;
        let mut i = self.slot_of(hash);
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if slot.ordinal == EMPTY_SLOT {
                return None;
            }
            if slot.tag == tag && self.rows.get(slot.ordinal as usize).is_some_and(|row| row.key == *key) {
                return Some(slot.ordinal);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Load the bucket `hash` lands on, so that a later [`CredentialBase::find`] finds it
    /// in cache. Used by batches to overlap the memory reads of several requests.
    #[inline]
    fn touch(&self, hash: u64) -> u32 {
        self.slots.get(self.slot_of(hash)).map_or(0, |s| s.ordinal)
    }
}

/// Credentials added, replaced or removed since the base was built.
#[derive(Clone, Default)]
struct CredentialOverlay {
    by_key: HashMap<CredentialKey, CredentialRow>,
    key_by_id: IdHashMap<CredentialKey>,
    tombstones: RoaringBitmap,
}

/// A table with a copy-on-write overlay for the rows changed since it was built.
#[derive(Clone)]
pub(crate) struct Layered<T> {
    base: Arc<IdMap<T>>,
    overlay: Arc<IdHashMap<Option<T>>>,
}

impl<T: Clone> Layered<T> {
    fn new(base: IdMap<T>) -> Self {
        Layered {
            base: Arc::new(base.settled()),
            overlay: Arc::new(IdHashMap::default()),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        if !self.overlay.is_empty()
            && let Some(row) = self.overlay.get(&id)
        {
            return row.as_ref();
        }
        self.base.get(id)
    }

    pub(crate) fn set_row(&mut self, id: u32, row: Option<T>) {
        Arc::make_mut(&mut self.overlay).insert(id, row);
    }

    fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// Every live row, by ascending id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        let mut ids: Vec<u32> = self
            .base
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !self.overlay.contains_key(id))
            .chain(self.overlay.keys().copied())
            .collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.get(id).map(|row| (id, row)))
    }

    /// Bytes held by the table and its overlay (not by what rows point to).
    fn heap_bytes(&self) -> usize {
        self.base.heap_bytes() + self.overlay.capacity() * (size_of::<(u32, Option<T>)>() + 1)
    }

    /// Every live row (base and overlay, overlay winning), in no particular order.
    fn rows(&self) -> impl Iterator<Item = &T> {
        self.base
            .iter()
            .filter(|(id, _)| !self.overlay.contains_key(id))
            .map(|(_, row)| row)
            .chain(self.overlay.values().flatten())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SiteRow {
    /// The site's zone and its offset windows.
    pub(crate) clock: Arc<ZoneClock>,
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
    pub(crate) sites: Arc<IdMap<SiteRow>>,
    pub(crate) calendars: Arc<IdMap<HolidayCalendar>>,
    pub(crate) iqs: Arc<IdMap<SiteId>>,
    pub(crate) doors: Layered<DoorRow>,
    pub(crate) people: Layered<PersonRow>,
    pub(crate) schedules: Arc<IdMap<ScheduleRow>>,
    pub(crate) groups: Arc<IdMap<GroupRow>>,
    pub(crate) blocked: Arc<IdSet>,
    pub(crate) revoked: Arc<IdSet>,
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

/// An IQ's offline list, counted ([`Snapshot::offline_plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfflinePlan {
    /// Tags in the list.
    pub tags: u32,
    /// Digital keys and PINs in the list.
    pub remote_users: u32,
    /// The credentials that do not fit, in the list's order.
    pub left_out: Vec<CredentialId>,
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

fn check_id(id: u32, name: impl fmt::Display) -> Result<(), ModelError> {
    if id > MAX_ID {
        return Err(ModelError::IdTooLarge {
            entity: name.to_string(),
        });
    }
    Ok(())
}

/// Put `row` at `id` in a table, refusing duplicates.
fn put_new<T>(table: &mut IdMap<T>, id: u32, row: T, name: impl fmt::Display) -> Result<(), ModelError> {
    check_id(id, &name)?;
    if table.get(id).is_some() {
        return Err(ModelError::DuplicateId {
            entity: name.to_string(),
        });
    }
    table.insert(id, row);
    Ok(())
}

/// Put `row` at `id` in a table, replacing what was there, or clear it.
pub(crate) fn put_row<T>(
    table: &mut IdMap<T>,
    id: u32,
    row: Option<T>,
    name: impl fmt::Display,
) -> Result<(), ModelError> {
    if row.is_some() {
        check_id(id, name)?;
    }
    table.set(id, row);
    Ok(())
}

/// The clock of `zone`, shared with a site already indexed in the same zone if any.
pub(crate) fn clock_for<'a>(zone: &TimeZone, known: impl IntoIterator<Item = &'a Arc<ZoneClock>>) -> Arc<ZoneClock> {
    known
        .into_iter()
        .find(|c| c.zone() == zone)
        .cloned()
        .unwrap_or_else(|| ZoneClock::new(zone))
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

        let mut calendar_table = IdMap::default();
        for CalendarRecord { id, calendar } in calendars {
            put_new(&mut calendar_table, id.0, calendar, id)?;
        }
        let mut site_table = IdMap::default();
        let mut clocks: Vec<Arc<ZoneClock>> = Vec::new();
        for s in sites {
            if let Some(cal) = s.holiday_calendar
                && calendar_table.get(cal.0).is_none()
            {
                return Err(ModelError::UnknownReference {
                    from: entity(s.id),
                    to: entity(cal),
                });
            }
            let clock = clock_for(&s.time_zone, &clocks);
            if !clocks.iter().any(|c| Arc::ptr_eq(c, &clock)) {
                clocks.push(clock.clone());
            }
            let row = SiteRow {
                clock,
                calendar: s.holiday_calendar,
                lockdown: s.lockdown,
            };
            put_new(&mut site_table, s.id.0, row, s.id)?;
        }
        let mut iq_table = IdMap::default();
        for IqRecord { id, site } in iqs {
            require_site(&site_table, site, id)?;
            put_new(&mut iq_table, id.0, site, id)?;
        }
        let mut schedule_table = IdMap::default();
        for ScheduleRecord { id, site, schedule } in schedules {
            require_site(&site_table, site, id)?;
            put_new(&mut schedule_table, id.0, ScheduleRow { site, schedule }, id)?;
        }
        let mut door_table = IdMap::default();
        for d in &doors {
            check_door(&site_table, &iq_table, &schedule_table, d)?;
            let row = DoorRow {
                site: d.site,
                iq: d.iq,
                mode: d.mode,
                lockdown: d.lockdown,
                groups: GroupList::default(),
            };
            put_new(&mut door_table, d.id.0, row, d.id)?;
        }
        drop(doors);
        let mut person_table = IdMap::default();
        let mut blocked = IdSet::for_universe(people.len());
        for p in people {
            require_site(&site_table, p.site, p.id)?;
            put_new(
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
        // The credential index (key sort, FST and hash index) is the bulk of a build and
        // needs only the sites and people, so it runs on a second thread while the groups
        // and every door's and person's group list are made here. The records come back
        // once their rows are made, so that freeing a million secrets happens here too
        // rather than after the index. Errors are reported groups first, so the result
        // does not depend on timing. Where no thread can be had, the credentials are
        // indexed here after the groups.
        let (sites_ref, people_ref) = (&site_table, &person_table);
        let (groups_indexed, credentials_indexed) = std::thread::scope(|scope| {
            let (hand_over, handed_over) = std::sync::mpsc::channel::<Vec<CredentialRecord>>();
            let (give_back, given_back) = std::sync::mpsc::channel::<Vec<CredentialRecord>>();
            let job = std::thread::Builder::new()
                .name("keyway-index".into())
                .spawn_scoped(scope, move || {
                    let credentials = handed_over.recv().map_err(|_| ModelError::Index {
                        message: "the credential indexer got no records".into(),
                    })?;
                    let rows = credential_rows(sites_ref, people_ref, &credentials);
                    // If the builder is gone the records are freed here instead.
                    let _ = give_back.send(credentials);
                    let (rows, revoked) = rows?;
                    Ok((build_base(rows)?, revoked))
                });
            match job {
                Ok(handle) => {
                    // If the indexer is gone, the records come back in the error and are
                    // freed with it; the join below reports why.
                    drop(hand_over.send(credentials));
                    let groups_indexed = index_groups(&site_table, &schedule_table, &door_table, &person_table, groups);
                    drop(given_back.recv());
                    let credentials_indexed = handle.join().unwrap_or_else(|_| {
                        Err(ModelError::Index {
                            message: "the credential indexer stopped unexpectedly".into(),
                        })
                    });
                    (groups_indexed, credentials_indexed)
                }
                Err(_) => {
                    let groups_indexed = index_groups(&site_table, &schedule_table, &door_table, &person_table, groups);
                    let credentials_indexed = credential_rows(&site_table, &person_table, &credentials)
                        .and_then(|(rows, revoked)| Ok((build_base(rows)?, revoked)));
                    (groups_indexed, credentials_indexed)
                }
            }
        });
        let IndexedGroups {
            table: group_table,
            door_lists,
            person_lists,
        } = groups_indexed?;
        let (base, revoked) = credentials_indexed?;
        for (door, list) in door_lists {
            if let Some(row) = door_table.get_mut(door) {
                row.groups = list;
            }
        }
        for (person, list) in person_lists {
            if let Some(row) = person_table.get_mut(person) {
                row.groups = list;
            }
        }

        Ok(Snapshot {
            revision,
            base: Arc::new(base),
            overlay: Arc::new(CredentialOverlay::default()),
            sites: Arc::new(site_table.settled()),
            calendars: Arc::new(calendar_table.settled()),
            iqs: Arc::new(iq_table.settled()),
            doors: Layered::new(door_table),
            people: Layered::new(person_table),
            schedules: Arc::new(schedule_table.settled()),
            groups: Arc::new(group_table.settled()),
            blocked: Arc::new(blocked),
            revoked: Arc::new(revoked),
            lockdown_exempt: Arc::new(exempt_table(&roles)),
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
    pub(crate) fn credential(&self, key: &CredentialKey) -> Option<&CredentialRow> {
        self.credential_hashed(key, key.hash())
    }

    /// The live credential stored under `key`, whose [`secret_hash`] is `hash`.
    #[inline]
    pub(crate) fn credential_hashed(&self, key: &CredentialKey, hash: u64) -> Option<&CredentialRow> {
        if !self.overlay.by_key.is_empty()
            && let Some(row) = self.overlay.by_key.get(key)
        {
            return Some(row);
        }
        let ordinal = self.base.find(key, hash)?;
        if !self.overlay.tombstones.is_empty() && self.overlay.tombstones.contains(ordinal) {
            return None;
        }
        self.base.rows.get(ordinal as usize)
    }

    /// Bring the index bucket of `hash` towards the cache; see [`crate::decide_batch`].
    #[inline]
    pub(crate) fn touch_credential(&self, hash: u64) -> u32 {
        self.base.touch(hash)
    }

    /// The live credential with `id`.
    pub(crate) fn credential_by_id(&self, id: CredentialId) -> Option<CredentialRow> {
        if let Some(key) = self.overlay.key_by_id.get(&id.0) {
            return self.overlay.by_key.get(key).copied();
        }
        let ordinal = *self.base.ordinal_by_id.get(id.0)?;
        if self.overlay.tombstones.contains(ordinal) {
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
        if let Some(&ordinal) = self.base.ordinal_by_id.get(id.0) {
            overlay.tombstones.insert(ordinal);
        }
    }

    /// Index `row` under its key, which must be free.
    pub(crate) fn link_credential(&mut self, row: CredentialRow) {
        let overlay = Arc::make_mut(&mut self.overlay);
        overlay.key_by_id.insert(row.id, row.key);
        overlay.by_key.insert(row.key, row);
    }

    /// Visit every live credential, in the order of their index keys (secret, kind, site)
    /// for the base and then the overlay's.
    pub(crate) fn for_each_credential(&self, mut visit: impl FnMut(&CredentialRow)) {
        use fst::Streamer;
        for part in &self.base.index {
            let mut stream = part.stream();
            while let Some((_, ordinal)) = stream.next() {
                let Ok(ordinal) = u32::try_from(ordinal) else { continue };
                if self.overlay.tombstones.contains(ordinal) {
                    continue;
                }
                if let Some(row) = self.base.rows.get(ordinal as usize) {
                    visit(row);
                }
            }
        }
        for row in self.overlay.by_key.values() {
            visit(row);
        }
    }

    pub(crate) fn site(&self, id: SiteId) -> Option<&SiteRow> {
        self.sites.get(id.0)
    }

    pub(crate) fn schedule(&self, id: ScheduleId) -> Option<&ScheduleRow> {
        self.schedules.get(id.0)
    }

    pub(crate) fn group(&self, id: GroupId) -> Option<&GroupRow> {
        self.groups.get(id.0)
    }

    pub(crate) fn calendar(&self, id: CalendarId) -> Option<&HolidayCalendar> {
        self.calendars.get(id.0)
    }

    pub(crate) fn iq_site(&self, id: IqId) -> Option<SiteId> {
        self.iqs.get(id.0).copied()
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
        self.site(id).map(|s| s.clock.zone())
    }

    /// A site's wall clock at `at`, holidays included, exactly as [`crate::decide`] sees
    /// it: from the site's offset windows, computed once when the site was indexed, so
    /// it costs a binary search and integer arithmetic rather than a time-zone
    /// conversion. For callers that evaluate a [`Schedule`] of the site's themselves
    /// (opening hours of door rules).
    #[must_use]
    pub fn local_moment(&self, site: SiteId, at: Timestamp) -> Option<crate::schedule::LocalMoment> {
        let row = self.site(site)?;
        Some(row.clock.local(at, row.calendar.and_then(|c| self.calendar(c))))
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

    /// A credential by id, as its record (`revoked` included).
    #[must_use]
    pub fn credential_record(&self, id: CredentialId) -> Option<CredentialRecord> {
        self.credential_by_id(id)?.record(self.revoked.contains(id.0))
    }

    /// The live credential of `site` that a reader presenting `kind` and `secret` would
    /// match (the lookup [`crate::decide`] makes), as its record. `None` when there is
    /// none, or the secret does not fit the kind.
    #[must_use]
    pub fn credential_by_secret(&self, site: SiteId, kind: CredentialKind, secret: &[u8]) -> Option<CredentialRecord> {
        let key = CredentialKey::new(kind, site, secret)?;
        let row = self.credential(&key)?;
        row.record(self.revoked.contains(row.id))
    }

    /// A door as its record: site, IQ, mode and lockdown. A site-wide lockdown is not
    /// folded in: see [`Snapshot::site_record`].
    #[must_use]
    pub fn door_record(&self, id: DoorId) -> Option<DoorRecord> {
        self.doors.get(id.0).map(|d| DoorRecord {
            id,
            site: d.site,
            iq: d.iq,
            mode: d.mode,
            lockdown: d.lockdown,
        })
    }

    /// The groups that open a door, by ascending id.
    #[must_use]
    pub fn door_groups(&self, id: DoorId) -> Option<&[GroupId]> {
        self.doors.get(id.0).map(|d| d.groups.as_slice())
    }

    /// A person as their record (`blocked` included).
    #[must_use]
    pub fn person_record(&self, id: PersonId) -> Option<PersonRecord> {
        self.people.get(id.0).map(|p| PersonRecord {
            id,
            site: p.site,
            role: p.role,
            blocked: self.blocked.contains(id.0),
        })
    }

    /// The groups a person is a member of, by ascending id.
    #[must_use]
    pub fn person_groups(&self, id: PersonId) -> Option<&[GroupId]> {
        self.people.get(id.0).map(|p| p.groups.as_slice())
    }

    /// A group as its record: doors and members by ascending id.
    #[must_use]
    pub fn group_record(&self, id: GroupId) -> Option<GroupRecord> {
        self.group(id).map(|g| GroupRecord {
            id,
            site: g.site,
            doors: g.doors.to_vec(),
            schedule: g.schedule,
            members: g.members.iter().map(PersonId).collect(),
        })
    }

    /// A site as its record.
    #[must_use]
    pub fn site_record(&self, id: SiteId) -> Option<SiteRecord> {
        self.site(id).map(|s| SiteRecord {
            id,
            time_zone: s.clock.zone().clone(),
            holiday_calendar: s.calendar,
            lockdown: s.lockdown,
        })
    }

    /// A schedule as its record.
    #[must_use]
    pub fn schedule_record(&self, id: ScheduleId) -> Option<ScheduleRecord> {
        self.schedule(id).map(|s| ScheduleRecord {
            id,
            site: s.site,
            schedule: s.schedule.clone(),
        })
    }

    /// A holiday calendar as its record.
    #[must_use]
    pub fn calendar_record(&self, id: CalendarId) -> Option<CalendarRecord> {
        self.calendar(id).map(|c| CalendarRecord {
            id,
            calendar: c.clone(),
        })
    }

    /// An IQ as its record.
    #[must_use]
    pub fn iq_record(&self, id: IqId) -> Option<IqRecord> {
        self.iq_site(id).map(|site| IqRecord { id, site })
    }

    /// What a voucher caps on `site`: its people, and its app users (people holding a
    /// digital key that is not revoked; an unassigned digital key counts as one). Walks
    /// the site's people and every credential, without copying any.
    #[must_use]
    pub fn voucher_counts(&self, site: SiteId) -> VoucherCounts {
        let people = self.people.rows().filter(|p| p.site == site).count();
        let mut app_users = std::collections::HashSet::new();
        self.for_each_credential(|row| {
            if let Some((CredentialKind::DigitalKey, row_site, _)) = CredentialKey::decode(row.key.as_slice())
                && row_site == site
                && !self.revoked.contains(row.id)
            {
                app_users.insert(row.owner().map_or(u64::from(row.id) << 32, |p| u64::from(p.0)));
            }
        });
        VoucherCounts {
            people: u32::try_from(people).unwrap_or(u32::MAX),
            app_users: u32::try_from(app_users.len()).unwrap_or(u32::MAX),
        }
    }

    /// Whether `person` holds a digital key on `site` that is not revoked (is one of its
    /// app users already).
    #[must_use]
    pub fn holds_digital_key(&self, site: SiteId, person: PersonId) -> bool {
        let mut holds = false;
        self.for_each_credential(|row| {
            holds = holds
                || (row.owner() == Some(person)
                    && !self.revoked.contains(row.id)
                    && matches!(
                        CredentialKey::decode(row.key.as_slice()),
                        Some((CredentialKind::DigitalKey, s, _)) if s == site
                    ));
        });
        holds
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

    /// Bytes held by every table of the snapshot (credential rows, both credential
    /// indexes and the overlay, people, doors, sites and their clocks, calendars, IQs,
    /// schedules, groups, the bitmaps), an estimate from their capacities. Benchmarks
    /// measure the process's resident size as well.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        let credentials = self.base.index.iter().map(|part| part.as_fst().size()).sum::<usize>()
            + self.base.rows.capacity() * size_of::<CredentialRow>()
            + self.base.slots.len() * size_of::<Slot>()
            + self.base.ordinal_by_id.heap_bytes();
        let overlay = self.overlay.by_key.capacity() * (size_of::<(CredentialKey, CredentialRow)>() + 1)
            + self.overlay.key_by_id.capacity() * (size_of::<(u32, CredentialKey)>() + 1)
            + self.overlay.tombstones.serialized_size();
        let people = self.people.heap_bytes() + self.people.rows().map(|p| p.groups.heap_bytes()).sum::<usize>();
        let doors = self.doors.heap_bytes() + self.doors.rows().map(|d| d.groups.heap_bytes()).sum::<usize>();
        let mut clocks: Vec<&Arc<ZoneClock>> = Vec::new();
        for (_, site) in self.sites.iter() {
            if !clocks.iter().any(|c| Arc::ptr_eq(c, &site.clock)) {
                clocks.push(&site.clock);
            }
        }
        let sites = self.sites.heap_bytes() + clocks.iter().map(|c| c.heap_bytes()).sum::<usize>();
        let calendars = self.calendars.heap_bytes()
            + self
                .calendars
                .iter()
                .map(|(_, c)| size_of_val(c.dates()))
                .sum::<usize>();
        // Schedules hold their periods inline.
        let schedules = self.schedules.heap_bytes();
        let groups = self.groups.heap_bytes()
            + self
                .groups
                .iter()
                .map(|(_, g)| g.members.serialized_size() + g.doors.len() * size_of::<DoorId>())
                .sum::<usize>();
        credentials
            + overlay
            + people
            + doors
            + sites
            + calendars
            + self.iqs.heap_bytes()
            + schedules
            + groups
            + self.blocked.heap_bytes()
            + self.revoked.heap_bytes()
            + self.lockdown_exempt.capacity()
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
        self.for_each_credential(|row| {
            let Some(person) = row.owner() else { return };
            if !reach.contains(person.0) || self.revoked.contains(row.id) {
                return;
            }
            match CredentialKey::decode(row.key.as_slice()).map(|(kind, _, _)| kind) {
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

    /// An IQ's offline list as the IQ link builds it, counted: the credentials whose owner
    /// may open one of the IQ's doors, neither revoked nor blocked, in the list's
    /// documented order (keys with offline access first, then by credential id), capped
    /// at [`crate::IQ_MAX_TAGS`] tags and [`crate::IQ_MAX_REMOTE_USERS`] digital keys and
    /// PINs. What does not fit is left out, in that order.
    ///
    /// This scans every credential, so it belongs on the write path, not the decision path.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for an unknown IQ.
    pub fn offline_plan(&self, iq: IqId) -> Result<OfflinePlan, ModelError> {
        let site = self
            .iq_site(iq)
            .ok_or_else(|| ModelError::NotFound { entity: entity(iq) })?;
        Ok(self
            .offline_plans(site)
            .into_iter()
            .find_map(|(id, plan)| (id == iq).then_some(plan))
            .unwrap_or_default())
    }

    /// [`Snapshot::offline_plan`] of every IQ of `site`, by IQ id, in one pass over the
    /// credentials: each credential's owner is mapped once to the IQs they reach (their
    /// groups' doors), the lists are counted, and only the IQs over a cap have their
    /// lists sorted to name what is left out.
    #[must_use]
    pub fn offline_plans(&self, site: SiteId) -> Vec<(IqId, OfflinePlan)> {
        let iqs = self.site_iqs(site);
        if iqs.is_empty() {
            return Vec::new();
        }
        let slot_of: HashMap<u32, usize> = iqs.iter().enumerate().map(|(slot, iq)| (iq.0, slot)).collect();
        let mut reach: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut reached = |person: u32| -> Vec<usize> {
            reach
                .entry(person)
                .or_insert_with(|| {
                    let mut slots = Vec::new();
                    let Some(row) = self.people.get(person).filter(|p| p.site == site) else {
                        return slots;
                    };
                    for g in row.groups.as_slice() {
                        for door in self.group(*g).map(|g| g.doors.as_ref()).unwrap_or_default() {
                            if let Some(slot) = self
                                .doors
                                .get(door.0)
                                .and_then(|d| d.iq)
                                .and_then(|iq| slot_of.get(&iq.0))
                            {
                                slots.push(*slot);
                            }
                        }
                    }
                    slots.sort_unstable();
                    slots.dedup();
                    slots
                })
                .clone()
        };
        // A listed credential: whether it sorts after the offline-access keys, its id,
        // whether it is a tag.
        let listed = |row: &CredentialRow| -> Option<(u32, (bool, u32, bool))> {
            let person = row.owner()?;
            if self.revoked.contains(row.id) || self.blocked.contains(person.0) {
                return None;
            }
            let is_tag = matches!(
                CredentialKey::decode(row.key.as_slice()).map(|(kind, _, _)| kind),
                Some(CredentialKind::Tag)
            );
            Some((person.0, (!row.offline_access(), row.id, is_tag)))
        };
        let mut plans = vec![OfflinePlan::default(); iqs.len()];
        self.for_each_credential(|row| {
            let Some((person, (_, _, is_tag))) = listed(row) else {
                return;
            };
            for slot in reached(person) {
                if let Some(plan) = plans.get_mut(slot) {
                    let held = if is_tag { &mut plan.tags } else { &mut plan.remote_users };
                    *held = held.saturating_add(1);
                }
            }
        });
        let over = |plan: &OfflinePlan| {
            plan.tags > crate::model::IQ_MAX_TAGS || plan.remote_users > crate::model::IQ_MAX_REMOTE_USERS
        };
        if plans.iter().any(over) {
            let full: Vec<bool> = plans.iter().map(over).collect();
            let mut lists: Vec<Vec<(bool, u32, bool)>> = vec![Vec::new(); iqs.len()];
            self.for_each_credential(|row| {
                let Some((person, key)) = listed(row) else { return };
                for slot in reached(person) {
                    if full.get(slot).copied().unwrap_or(false)
                        && let Some(list) = lists.get_mut(slot)
                    {
                        list.push(key);
                    }
                }
            });
            for (plan, mut list) in plans.iter_mut().zip(lists) {
                if list.is_empty() {
                    continue;
                }
                list.sort_unstable();
                let (mut tags, mut remote) = (0u32, 0u32);
                for (_, id, is_tag) in list {
                    let (held, cap) = if is_tag {
                        (&mut tags, crate::model::IQ_MAX_TAGS)
                    } else {
                        (&mut remote, crate::model::IQ_MAX_REMOTE_USERS)
                    };
                    if *held < cap {
                        *held += 1;
                    } else {
                        plan.left_out.push(CredentialId(id));
                    }
                }
                plan.tags = tags;
                plan.remote_users = remote;
            }
        }
        iqs.into_iter().zip(plans).collect()
    }

    /// The IQs of a site, by id.
    #[must_use]
    pub fn site_iqs(&self, site: SiteId) -> Vec<IqId> {
        self.iqs
            .iter()
            .filter(|(_, s)| **s == site)
            .map(|(id, _)| IqId(id))
            .collect()
    }

    /// Every record of the model as this snapshot holds it, sorted by kind and id.
    /// [`Snapshot::build`] on these records gives back an equivalent snapshot.
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        self.records_of(None)
    }

    /// The records of one site, sorted by kind and id: the site, its holiday calendar,
    /// IQs, schedules, doors, people, credentials and groups (not the role flags, which
    /// belong to no site). It reads every row once but copies only the site's, so it is
    /// the way to take one site out of a node holding many.
    #[must_use]
    pub fn site_records(&self, site: SiteId) -> Vec<Record> {
        self.records_of(Some(site))
    }

    fn records_of(&self, only: Option<SiteId>) -> Vec<Record> {
        let ours = |s: SiteId| only.is_none_or(|o| o == s);
        let mut out = Vec::new();
        let site_calendar = only.and_then(|s| self.site(s)).and_then(|s| s.calendar);
        for (id, cal) in self.calendars.sorted() {
            if only.is_some() && site_calendar != Some(CalendarId(id)) {
                continue;
            }
            out.push(Record::Calendar(CalendarRecord {
                id: CalendarId(id),
                calendar: cal.clone(),
            }));
        }
        for (id, s) in self.sites.sorted() {
            if !ours(SiteId(id)) {
                continue;
            }
            out.push(Record::Site(SiteRecord {
                id: SiteId(id),
                time_zone: s.clock.zone().clone(),
                holiday_calendar: s.calendar,
                lockdown: s.lockdown,
            }));
        }
        for (id, site) in self.iqs.sorted() {
            if !ours(*site) {
                continue;
            }
            out.push(Record::Iq(IqRecord {
                id: IqId(id),
                site: *site,
            }));
        }
        for (id, s) in self.schedules.sorted() {
            if !ours(s.site) {
                continue;
            }
            out.push(Record::Schedule(ScheduleRecord {
                id: ScheduleId(id),
                site: s.site,
                schedule: s.schedule.clone(),
            }));
        }
        for (id, d) in self.doors.iter() {
            if !ours(d.site) {
                continue;
            }
            out.push(Record::Door(DoorRecord {
                id: DoorId(id),
                site: d.site,
                iq: d.iq,
                mode: d.mode,
                lockdown: d.lockdown,
            }));
        }
        for (id, p) in self.people.iter() {
            if !ours(p.site) {
                continue;
            }
            out.push(Record::Person(PersonRecord {
                id: PersonId(id),
                site: p.site,
                role: p.role,
                blocked: self.blocked.contains(id),
            }));
        }
        let mut creds: Vec<CredentialRecord> = Vec::with_capacity(self.credential_count());
        self.for_each_credential(|row| {
            let site = CredentialKey::decode(row.key.as_slice()).map(|(_, site, _)| site);
            if site.is_some_and(ours)
                && let Some(record) = row.record(self.revoked.contains(row.id))
            {
                creds.push(record);
            }
        });
        creds.sort_unstable_by_key(|c| c.id);
        out.extend(creds.into_iter().map(Record::Credential));
        for (id, g) in self.groups.sorted() {
            if !ours(g.site) {
                continue;
            }
            out.push(Record::Group(GroupRecord {
                id: GroupId(id),
                site: g.site,
                doors: g.doors.to_vec(),
                schedule: g.schedule,
                members: g.members.iter().map(PersonId).collect(),
            }));
        }
        if only.is_none() {
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
        }
        out
    }
}

/// What a voucher caps on one site, as [`Snapshot::voucher_counts`] counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoucherCounts {
    /// People on the site.
    pub people: u32,
    /// People with a digital key (app users).
    pub app_users: u32,
}

/// The lockdown-exempt flag of every role, indexed by role id.
pub(crate) fn exempt_table(roles: &RoleFlags) -> Vec<bool> {
    let mut exempt = Vec::new();
    for role in &roles.lockdown_exempt {
        let index = usize::from(role.0);
        if exempt.len() <= index {
            exempt.resize(index + 1, false);
        }
        if let Some(slot) = exempt.get_mut(index) {
            *slot = true;
        }
    }
    exempt
}

struct IndexedGroups {
    table: IdMap<GroupRow>,
    /// Each door's groups, by door id.
    door_lists: Vec<(u32, GroupList)>,
    /// Each member's groups, by person id (ascending).
    person_lists: Vec<(u32, GroupList)>,
}

fn index_groups(
    sites: &IdMap<SiteRow>,
    schedules: &IdMap<ScheduleRow>,
    doors: &IdMap<DoorRow>,
    people: &IdMap<PersonRow>,
    groups: Vec<GroupRecord>,
) -> Result<IndexedGroups, ModelError> {
    let mut table = IdMap::default();
    let mut door_groups: IdHashMap<Vec<GroupId>> = IdHashMap::default();
    let mut memberships: Vec<(u32, GroupId)> = Vec::new();
    for g in groups {
        let row = group_row(
            sites,
            schedules,
            |d| doors.get(d.0).map(|r| r.site),
            |p| people.get(p.0).map(|r| r.site),
            &g,
        )?;
        for door in row.doors.iter() {
            door_groups.entry(door.0).or_default().push(g.id);
        }
        memberships.extend(row.members.iter().map(|p| (p, g.id)));
        put_new(&mut table, g.id.0, row, g.id)?;
    }
    let door_lists = door_groups
        .into_iter()
        .map(|(door, list)| (door, GroupList::from_unsorted(list)))
        .collect();
    memberships.sort_unstable();
    let person_lists = memberships
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|chunk| {
            let &(person, _) = chunk.first()?;
            Some((person, GroupList::from_sorted(chunk.iter().map(|(_, g)| *g))))
        })
        .collect();
    Ok(IndexedGroups {
        table,
        door_lists,
        person_lists,
    })
}

/// The index rows of `credentials`, checked against the sites and people, and the
/// revoked ones.
fn credential_rows(
    sites: &IdMap<SiteRow>,
    people: &IdMap<PersonRow>,
    credentials: &[CredentialRecord],
) -> Result<(Vec<CredentialRow>, IdSet), ModelError> {
    let mut revoked = IdSet::for_universe(credentials.len());
    let mut rows = Vec::with_capacity(credentials.len());
    let mut seen_ids = RoaringBitmap::new();
    for c in credentials {
        check_id(c.id.0, c.id)?;
        if !seen_ids.insert(c.id.0) {
            return Err(ModelError::DuplicateId { entity: entity(c.id) });
        }
        let key = check_credential(sites, |p| people.get(p.0).map(|r| r.site), c)?;
        if c.revoked {
            revoked.insert(c.id.0);
        }
        rows.push(CredentialRow::from_record(c, key));
    }
    Ok((rows, revoked))
}

/// The credential base from its rows: sorted by key, checked for duplicate ids and
/// secrets, indexed by an FST and by the exact-match hash table.
fn build_base(rows: Vec<CredentialRow>) -> Result<CredentialBase, ModelError> {
    build_base_in(rows, build_threads(), MIN_ROWS_PER_FST_PART)
}

/// [`build_base`] with the FST in up to `threads` parts of at least `min_part_rows` rows.
fn build_base_in(
    mut rows: Vec<CredentialRow>,
    threads: usize,
    min_part_rows: usize,
) -> Result<CredentialBase, ModelError> {
    // By key, then id, so a duplicate secret is always reported against the lower id.
    rows.sort_unstable_by_key(|row| (row.key, row.id));
    // Ordinals run below `EMPTY_SLOT` (`u32::MAX`), which marks an empty bucket.
    if u32::try_from(rows.len()).is_err() {
        return Err(ModelError::Index {
            message: "too many credentials".into(),
        });
    }
    // The FST is the long part of a build (it is most of the reference a build is held
    // to). Its parts are built on threads of their own, and the id map and the hash index,
    // which need only the sorted rows, on one more; where no thread can be had, each
    // runs after the other here.
    let sorted = &rows;
    let ranges = fst_ranges(rows.len(), threads, min_part_rows);
    let (index, ids_and_slots) = std::thread::scope(|scope| {
        let side = std::thread::Builder::new()
            .name("keyway-index-ids".into())
            .spawn_scoped(scope, || ids_and_slots(sorted));
        let (first, rest) = ranges.split_first().map_or((0..0, &[][..]), |(f, r)| (f.clone(), r));
        let others: Vec<_> = rest
            .iter()
            .map(|range| {
                let job = std::thread::Builder::new()
                    .name("keyway-index-fst".into())
                    .spawn_scoped(scope, move || fst_of(sorted, range.clone()));
                (range, job)
            })
            .collect();
        let mut parts = vec![fst_of(sorted, first)];
        for (range, job) in others {
            parts.push(joined(
                job,
                || fst_of(sorted, range.clone()),
                "a credential index builder",
            ));
        }
        let ids_and_slots = joined(side, || ids_and_slots(sorted), "the credential id indexer");
        // The parts in key order: the first error is the one a single pass would report.
        (parts.into_iter().collect::<Result<Vec<_>, _>>(), ids_and_slots)
    });
    let index = index?;
    let (ordinal_by_id, slots) = ids_and_slots?;
    Ok(CredentialBase {
        index,
        rows,
        slots,
        ordinal_by_id: ordinal_by_id.settled(),
    })
}

/// What a scoped thread returned, or what `inline` returns where the thread could not be
/// spawned; a thread that panicked is an index error naming `who`.
fn joined<T>(
    spawned: std::io::Result<std::thread::ScopedJoinHandle<'_, Result<T, ModelError>>>,
    inline: impl FnOnce() -> Result<T, ModelError>,
    who: &str,
) -> Result<T, ModelError> {
    match spawned {
        Ok(handle) => handle.join().unwrap_or_else(|_| {
            Err(ModelError::Index {
                message: format!("{who} stopped unexpectedly"),
            })
        }),
        Err(_) => inline(),
    }
}

/// Rows below which the FST is built in one part: a thread costs more than it saves.
const MIN_ROWS_PER_FST_PART: usize = 1 << 16;

/// At most this many FST parts, however many cores there are: past a few, the sort and
/// the row checks before the FST dominate a build.
const MAX_FST_PARTS: usize = 8;

/// How many threads a build may keep busy: the machine's cores.
fn build_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Consecutive ranges of `rows` sorted rows, one per FST part: at most one per thread,
/// each of at least `min_part_rows` rows, and never none.
fn fst_ranges(rows: usize, threads: usize, min_part_rows: usize) -> Vec<std::ops::Range<usize>> {
    let parts = threads
        .min(MAX_FST_PARTS)
        .min(rows.checked_div(min_part_rows).unwrap_or(rows))
        .max(1);
    (0..parts).map(|i| rows * i / parts..rows * (i + 1) / parts).collect()
}

/// The FST of the rows in `range` of `rows` (sorted by key), mapping each key to its
/// row's ordinal in `rows`; refuses a secret held twice (reported against the lower id,
/// the rows being sorted by id within a key), the row just before the range included, so
/// that parts built apart refuse what one pass would.
fn fst_of(rows: &[CredentialRow], range: std::ops::Range<usize>) -> Result<fst::Map<Vec<u8>>, ModelError> {
    let mut builder = fst::MapBuilder::memory();
    let mut previous: Option<&CredentialRow> = range.start.checked_sub(1).and_then(|i| rows.get(i));
    let start = range.start;
    for (ordinal, row) in rows.get(range).unwrap_or_default().iter().enumerate() {
        if let Some(prev) = previous
            && prev.key == row.key
        {
            return Err(ModelError::DuplicateSecret {
                existing: entity(CredentialId(prev.id)),
                claimed_by: entity(CredentialId(row.id)),
            });
        }
        previous = Some(row);
        builder
            .insert(row.key.as_slice(), (start + ordinal) as u64)
            .map_err(|e| ModelError::Index {
                message: e.to_string().to_lowercase(),
            })?;
    }
    Ok(builder.into_map())
}

/// Each row's ordinal by credential id, and the exact-match hash index (at most half
/// full, so a miss ends at the first empty bucket a few buckets on).
fn ids_and_slots(rows: &[CredentialRow]) -> Result<(IdMap<u32>, Box<[Slot]>), ModelError> {
    let mut ordinal_by_id = IdMap::default();
    for (ordinal, row) in rows.iter().enumerate() {
        if ordinal_by_id.insert(row.id, ordinal as u32).is_some() {
            return Err(ModelError::DuplicateId {
                entity: entity(CredentialId(row.id)),
            });
        }
    }
    let buckets = rows.len().saturating_mul(2).max(2).next_power_of_two();
    let mut slots = vec![
        Slot {
            tag: 0,
            ordinal: EMPTY_SLOT,
        };
        buckets
    ]
    .into_boxed_slice();
    let mask = buckets - 1;
    for (ordinal, row) in rows.iter().enumerate() {
        let hash = row.key.hash();
        let mut i = ((hash >> 32) as usize) & mask;
        while let Some(slot) = slots.get_mut(i) {
            if slot.ordinal == EMPTY_SLOT {
                *slot = Slot {
                    tag: hash as u32,
                    ordinal: ordinal as u32,
                };
                break;
            }
            i = (i + 1) & mask;
        }
    }
    Ok((ordinal_by_id, slots))
}

fn require_site(sites: &IdMap<SiteRow>, site: SiteId, from: impl fmt::Display) -> Result<(), ModelError> {
    if sites.get(site.0).is_none() {
        return Err(ModelError::UnknownReference {
            from: from.to_string(),
            to: entity(site),
        });
    }
    Ok(())
}

pub(crate) fn check_door(
    sites: &IdMap<SiteRow>,
    iqs: &IdMap<SiteId>,
    schedules: &IdMap<ScheduleRow>,
    d: &DoorRecord,
) -> Result<(), ModelError> {
    require_site(sites, d.site, d.id)?;
    if let Some(iq) = d.iq {
        match iqs.get(iq.0) {
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
    schedules: &IdMap<ScheduleRow>,
    s: ScheduleId,
    site: SiteId,
    from: impl fmt::Display,
) -> Result<(), ModelError> {
    match schedules.get(s.0) {
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
    sites: &IdMap<SiteRow>,
    schedules: &IdMap<ScheduleRow>,
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
    sites: &IdMap<SiteRow>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fst_ranges_cover_the_rows_in_order() {
        // (rows, threads, min_part_rows, where each part ends)
        let cases: [(usize, usize, usize, &[usize]); 7] = [
            (0, 4, 10, &[0]),
            (9, 4, 10, &[9]),
            (20, 1, 10, &[20]),
            (20, 4, 10, &[10, 20]),
            (25, 2, 10, &[12, 25]),
            (100, 4, 10, &[25, 50, 75, 100]),
            (1_000, 64, 1, &[125, 250, 375, 500, 625, 750, 875, 1_000]),
        ];
        for (rows, threads, min, ends) in cases {
            let expected: Vec<std::ops::Range<usize>> = ends
                .iter()
                .scan(0, |start, &end| Some(std::mem::replace(start, end)..end))
                .collect();
            assert_eq!(
                fst_ranges(rows, threads, min),
                expected,
                "{rows} rows, {threads} threads, {min}"
            );
        }
    }

    fn row(id: u32, secret: u32) -> CredentialRow {
        let rec = CredentialRecord {
            id: CredentialId(id),
            site: SiteId(1),
            kind: CredentialKind::Tag,
            secret: secret.to_be_bytes().to_vec(),
            owner: None,
            valid_from: None,
            valid_until: None,
            offline_access: false,
            revoked: false,
        };
        let key = CredentialKey::new(rec.kind, rec.site, &rec.secret).unwrap();
        CredentialRow::from_record(&rec, key)
    }

    fn streamed(base: &CredentialBase) -> Vec<(Vec<u8>, u64)> {
        use fst::Streamer;
        let mut out = Vec::new();
        for part in &base.index {
            let mut stream = part.stream();
            while let Some((key, ordinal)) = stream.next() {
                out.push((key.to_vec(), ordinal));
            }
        }
        out
    }

    #[test]
    fn an_fst_in_parts_streams_and_refuses_as_one() {
        // Ids in a shuffled order of the secrets, so that sorting moves every row.
        let rows: Vec<CredentialRow> = (0..1_000u32)
            .map(|i| row(i + 1, i.wrapping_mul(7_919) % 1_000))
            .collect();
        let whole = build_base_in(rows.clone(), 1, 10).unwrap();
        assert_eq!(whole.index.len(), 1);
        let expected = streamed(&whole);
        assert_eq!(expected.len(), 1_000);
        for threads in [2, 3, 8] {
            let parted = build_base_in(rows.clone(), threads, 10).unwrap();
            assert_eq!(parted.index.len(), threads);
            assert_eq!(streamed(&parted), expected, "{threads} parts");
            for (key, ordinal) in &expected {
                assert_eq!(parted.rows[*ordinal as usize].key.as_slice(), key.as_slice());
            }
        }
        // A secret held twice, across each boundary of 4 parts (250, 500, 750 rows) and
        // inside a part: refused against the lower id, as by one pass. With two
        // duplicates, the first in key order is the one named.
        type Duplicates = &'static [(u32, u32)];
        let cases: [(Duplicates, (u32, u32)); 5] = [
            (&[(249, 250)], (250, 251)),
            (&[(499, 500)], (500, 501)),
            (&[(749, 750)], (750, 751)),
            (&[(10, 11)], (11, 12)),
            (&[(900, 901), (249, 250)], (250, 251)),
        ];
        for (duplicates, (existing, claimed_by)) in cases {
            // Rows whose secret is their index, so that sorted position = secret.
            let mut rows: Vec<CredentialRow> = (0..1_000u32).map(|i| row(i + 1, i)).collect();
            for &(first, second) in duplicates {
                rows[second as usize] = row(second + 1, first);
            }
            for threads in [1, 4] {
                let refused = build_base_in(rows.clone(), threads, 10).err();
                assert_eq!(
                    refused,
                    Some(ModelError::DuplicateSecret {
                        existing: format!("credential:{existing}"),
                        claimed_by: format!("credential:{claimed_by}"),
                    }),
                    "{duplicates:?}, {threads} parts"
                );
            }
        }
    }
}
