//! Tables keyed by entity id whose memory follows the live rows, not the largest id.
//!
//! Ids come from the database and only grow, so a site that has run for years has ids
//! far above its number of live entities. [`IdMap`] stores its rows in a plain vector
//! indexed by id while the ids are dense (the largest id is at most about twice the row
//! count), which costs one indexed load per lookup, and in a hash map otherwise. A table
//! switches to the hash map as soon as an insert would make the vector too sparse, and
//! [`IdMap::settled`] picks the right shape again after a bulk load. [`IdSet`] does the
//! same for sets of ids: a bitset while they are dense, a roaring bitmap otherwise.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Slack allowed past twice the row count before a vector is too sparse.
const DENSE_SLACK: usize = 64;

/// A fast hasher for `u32` ids (a multiplicative hash); ids are not attacker-chosen
/// keys of a public map: they come from the store.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        let mixed = (self.0 ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = mixed ^ (mixed >> 29);
    }
}

/// A hash map keyed by id, with the id hasher.
pub(crate) type IdHashMap<T> = HashMap<u32, T, IdHash>;

/// Rows keyed by id: a vector while the ids are dense, a hash map otherwise.
#[derive(Clone, Debug)]
pub(crate) struct IdMap<T> {
    repr: Repr<T>,
    live: usize,
}

#[derive(Clone, Debug)]
enum Repr<T> {
    Dense(Vec<Option<T>>),
    Sparse(IdHashMap<T>),
}

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        IdMap {
            repr: Repr::Dense(Vec::new()),
            live: 0,
        }
    }
}

fn dense_enough(max_id: u32, live: usize) -> bool {
    (max_id as usize) < live.saturating_mul(2).saturating_add(DENSE_SLACK)
}

impl<T> IdMap<T> {
    /// The row with `id`.
    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        match &self.repr {
            Repr::Dense(rows) => rows.get(id as usize).and_then(Option::as_ref),
            Repr::Sparse(rows) => rows.get(&id),
        }
    }

    /// The row with `id`, to change it in place.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        match &mut self.repr {
            Repr::Dense(rows) => rows.get_mut(id as usize).and_then(Option::as_mut),
            Repr::Sparse(rows) => rows.get_mut(&id),
        }
    }

    /// Put `row` at `id`, returning the row it replaces.
    pub(crate) fn insert(&mut self, id: u32, row: T) -> Option<T> {
        if let Repr::Dense(rows) = &mut self.repr {
            let index = id as usize;
            if index < rows.len() {
                let old = rows.get_mut(index).and_then(|slot| slot.replace(row));
                if old.is_none() {
                    self.live += 1;
                }
                return old;
            }
            if dense_enough(id, self.live + 1) {
                rows.resize_with(index + 1, || None);
                if let Some(slot) = rows.get_mut(index) {
                    *slot = Some(row);
                }
                self.live += 1;
                return None;
            }
            self.make_sparse();
        }
        match &mut self.repr {
            Repr::Sparse(rows) => {
                let old = rows.insert(id, row);
                if old.is_none() {
                    self.live += 1;
                }
                old
            }
            Repr::Dense(_) => None,
        }
    }

    /// Take the row at `id` out.
    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        let old = match &mut self.repr {
            Repr::Dense(rows) => rows.get_mut(id as usize).and_then(Option::take),
            Repr::Sparse(rows) => rows.remove(&id),
        };
        if old.is_some() {
            self.live -= 1;
        }
        old
    }

    /// Put `row` at `id`, or clear it.
    pub(crate) fn set(&mut self, id: u32, row: Option<T>) {
        match row {
            Some(row) => {
                self.insert(id, row);
            }
            None => {
                self.remove(id);
            }
        }
    }

    fn make_sparse(&mut self) {
        if let Repr::Dense(rows) = &mut self.repr {
            let mut map = IdHashMap::with_capacity_and_hasher(self.live, IdHash);
            for (id, row) in std::mem::take(rows).into_iter().enumerate() {
                if let (Some(row), Ok(id)) = (row, u32::try_from(id)) {
                    map.insert(id, row);
                }
            }
            self.repr = Repr::Sparse(map);
        }
    }

    /// The same rows in the shape that fits them now: a vector if the ids are dense, a
    /// hash map otherwise, with no spare capacity.
    pub(crate) fn settled(self) -> Self {
        let live = self.live;
        let max_id = self.iter().map(|(id, _)| id).max();
        let dense = max_id.is_none_or(|m| dense_enough(m, live));
        match (self.repr, dense) {
            (Repr::Dense(mut rows), true) => {
                let len = max_id.map_or(0, |m| m as usize + 1);
                rows.truncate(len);
                rows.shrink_to_fit();
                IdMap {
                    repr: Repr::Dense(rows),
                    live,
                }
            }
            (Repr::Sparse(rows), true) => {
                let mut dense = Vec::new();
                dense.resize_with(max_id.map_or(0, |m| m as usize + 1), || None);
                for (id, row) in rows {
                    if let Some(slot) = dense.get_mut(id as usize) {
                        *slot = Some(row);
                    }
                }
                IdMap {
                    repr: Repr::Dense(dense),
                    live,
                }
            }
            (repr, false) => {
                let mut map = IdMap { repr, live };
                map.make_sparse();
                if let Repr::Sparse(rows) = &mut map.repr {
                    rows.shrink_to_fit();
                }
                map
            }
        }
    }

    /// Every row, in no particular order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = (u32, &T)> + '_> {
        match &self.repr {
            Repr::Dense(rows) => Box::new(
                rows.iter()
                    .enumerate()
                    .filter_map(|(id, row)| Some((u32::try_from(id).ok()?, row.as_ref()?))),
            ),
            Repr::Sparse(rows) => Box::new(rows.iter().map(|(id, row)| (*id, row))),
        }
    }

    /// Every row, by ascending id.
    pub(crate) fn sorted(&self) -> Vec<(u32, &T)> {
        let mut rows: Vec<(u32, &T)> = self.iter().collect();
        if matches!(self.repr, Repr::Sparse(_)) {
            rows.sort_unstable_by_key(|(id, _)| *id);
        }
        rows
    }

    /// Bytes held by the table itself (not by what its rows point to).
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Dense(rows) => rows.capacity() * size_of::<Option<T>>(),
            // hashbrown: one control byte per bucket, buckets at most 7/8 full.
            Repr::Sparse(rows) => rows.capacity().saturating_mul(8).div_ceil(7) * (size_of::<(u32, T)>() + 1),
        }
    }
}

/// Ids a dense [`IdSet`] may always reach, whatever its universe: 8 KiB of bits.
const DENSE_SET_FLOOR: u32 = 1 << 16;

/// A set of ids (blocked people, revoked credentials), probed on every decision: a plain
/// bitset while the ids are small against the entities they are drawn from, so that a
/// probe is one load and one bit test, and a roaring bitmap otherwise, so that memory
/// follows the members, not the largest id.
///
/// A bitset reaches ids below `max(65,536, 8 x universe)`, where the universe is the
/// number of entities of the kind when the set was made (at most one byte per entity);
/// an insert beyond turns the set into a roaring bitmap for good, and the next build
/// (a compaction) picks the shape again.
#[derive(Clone, Debug)]
pub(crate) struct IdSet {
    repr: SetRepr,
}

#[derive(Clone, Debug)]
enum SetRepr {
    Bits { words: Vec<u64>, reach: u32 },
    Roaring(roaring::RoaringBitmap),
}

impl IdSet {
    /// An empty set of ids drawn from `universe` entities.
    pub(crate) fn for_universe(universe: usize) -> IdSet {
        let reach = u32::try_from(universe.saturating_mul(8))
            .unwrap_or(u32::MAX)
            .max(DENSE_SET_FLOOR);
        IdSet {
            repr: SetRepr::Bits {
                words: Vec::new(),
                reach,
            },
        }
    }

    /// Whether `id` is in the set.
    #[inline]
    pub(crate) fn contains(&self, id: u32) -> bool {
        match &self.repr {
            SetRepr::Bits { words, .. } => words
                .get((id >> 6) as usize)
                .is_some_and(|word| word >> (id & 63) & 1 != 0),
            SetRepr::Roaring(bits) => bits.contains(id),
        }
    }

    /// Add `id`; whether it was new.
    pub(crate) fn insert(&mut self, id: u32) -> bool {
        if let SetRepr::Bits { words, reach } = &mut self.repr {
            if id < *reach {
                let word = (id >> 6) as usize;
                if words.len() <= word {
                    words.resize(word + 1, 0);
                }
                return words.get_mut(word).is_some_and(|w| {
                    let was = *w >> (id & 63) & 1 != 0;
                    *w |= 1 << (id & 63);
                    !was
                });
            }
            let members = self.iter().collect();
            self.repr = SetRepr::Roaring(members);
        }
        match &mut self.repr {
            SetRepr::Roaring(bits) => bits.insert(id),
            SetRepr::Bits { .. } => false,
        }
    }

    /// Take `id` out; whether it was there.
    pub(crate) fn remove(&mut self, id: u32) -> bool {
        match &mut self.repr {
            SetRepr::Bits { words, .. } => words.get_mut((id >> 6) as usize).is_some_and(|w| {
                let was = *w >> (id & 63) & 1 != 0;
                *w &= !(1 << (id & 63));
                was
            }),
            SetRepr::Roaring(bits) => bits.remove(id),
        }
    }

    /// Every id, ascending.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match &self.repr {
            SetRepr::Bits { words, .. } => Box::new(words.iter().enumerate().flat_map(|(i, &word)| {
                (0..64u32)
                    .filter(move |bit| word >> bit & 1 != 0)
                    .filter_map(move |bit| u32::try_from(i).ok()?.checked_mul(64)?.checked_add(bit))
            })),
            SetRepr::Roaring(bits) => Box::new(bits.iter()),
        }
    }

    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.repr {
            SetRepr::Bits { words, .. } => words.capacity() * size_of::<u64>(),
            SetRepr::Roaring(bits) => bits.serialized_size(),
        }
    }

    /// Whether the set is a bitset (for tests of its shape).
    #[cfg(test)]
    pub(crate) fn is_bitset(&self) -> bool {
        matches!(self.repr, SetRepr::Bits { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_set_answers_as_a_roaring_bitmap_in_both_shapes() {
        // (universe, ids inserted then removed, in order: positive inserts, negative
        // removes; whether the set is still a bitset at the end)
        let cases: [(usize, &[i64], bool); 6] = [
            (0, &[], true),
            (10, &[1, 2, 3, -2, 0, 63, 64, 65_535], true),
            (10, &[5, 65_536, 7, -5], false),
            (100_000, &[799_999, 1, -1, 1], true),
            (100_000, &[800_000, 3], false),
            (1, &[4_294_967_294, 0, 17, -4_294_967_294, 4_294_967_295], false),
        ];
        for (universe, ops, stays_bitset) in cases {
            let mut set = IdSet::for_universe(universe);
            let mut model = roaring::RoaringBitmap::new();
            for &op in ops {
                let id = u32::try_from(op.unsigned_abs()).unwrap();
                if op >= 0 {
                    assert_eq!(set.insert(id), model.insert(id), "insert {id}, {ops:?}");
                } else {
                    assert_eq!(set.remove(id), model.remove(id), "remove {id}, {ops:?}");
                }
                // Again: nothing left to add or take out.
                if op >= 0 {
                    assert!(!set.insert(id), "insert {id} again, {ops:?}");
                } else {
                    assert!(!set.remove(id), "remove {id} again, {ops:?}");
                }
            }
            assert_eq!(set.is_bitset(), stays_bitset, "{ops:?}");
            assert_eq!(
                set.iter().collect::<Vec<_>>(),
                model.iter().collect::<Vec<_>>(),
                "{ops:?}"
            );
            let probes = [
                0,
                1,
                2,
                3,
                5,
                7,
                17,
                63,
                64,
                65,
                65_535,
                65_536,
                799_999,
                800_000,
                u32::MAX - 1,
                u32::MAX,
            ];
            for id in probes {
                assert_eq!(set.contains(id), model.contains(id), "contains {id}, {ops:?}");
            }
            assert!(set.heap_bytes() <= (universe * 8).max(1 << 16) / 8 + 8 || !set.is_bitset());
        }
    }
}
