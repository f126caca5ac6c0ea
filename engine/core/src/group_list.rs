//! A small sorted set of group ids, stored inline when short.
//!
//! Doors and people each carry one: the groups that open a door, and the groups a person
//! belongs to. Most have one to three, so keeping them inside the row saves the decision
//! path a pointer chase (a cache miss at gateway scale) per lookup.

use crate::ids::GroupId;
use std::sync::Arc;

const INLINE: usize = 4;

/// A sorted, duplicate-free list of group ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GroupList {
    Inline { len: u8, ids: [GroupId; INLINE] },
    Shared(Arc<[GroupId]>),
}

impl Default for GroupList {
    fn default() -> Self {
        GroupList::Inline {
            len: 0,
            ids: [GroupId(0); INLINE],
        }
    }
}

impl GroupList {
    /// A list from ids in any order.
    pub(crate) fn from_unsorted(mut ids: Vec<GroupId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        if ids.len() <= INLINE {
            let mut inline = [GroupId(0); INLINE];
            for (slot, id) in inline.iter_mut().zip(&ids) {
                *slot = *id;
            }
            GroupList::Inline {
                len: ids.len() as u8,
                ids: inline,
            }
        } else {
            GroupList::Shared(Arc::from(ids))
        }
    }

    /// A list from ids already sorted, with duplicates allowed; nothing is allocated
    /// when the list fits inline (a snapshot build makes a million of these).
    pub(crate) fn from_sorted(ids: impl Iterator<Item = GroupId> + Clone) -> Self {
        let mut inline = [GroupId(0); INLINE];
        let mut len = 0usize;
        let mut last = None;
        for id in ids.clone() {
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            match inline.get_mut(len) {
                Some(slot) => *slot = id,
                None => {
                    let mut all: Vec<GroupId> = ids.collect();
                    all.dedup();
                    return GroupList::Shared(Arc::from(all));
                }
            }
            len += 1;
        }
        GroupList::Inline {
            len: len as u8,
            ids: inline,
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[GroupId] {
        match self {
            GroupList::Inline { len, ids } => ids.get(..usize::from(*len)).unwrap_or(&[]),
            GroupList::Shared(ids) => ids,
        }
    }

    #[inline]
    pub(crate) fn contains(&self, id: GroupId) -> bool {
        let ids = self.as_slice();
        if ids.len() <= 8 {
            ids.contains(&id)
        } else {
            ids.binary_search(&id).is_ok()
        }
    }

    pub(crate) fn with(&self, id: GroupId) -> Self {
        let mut ids = self.as_slice().to_vec();
        ids.push(id);
        GroupList::from_unsorted(ids)
    }

    pub(crate) fn without(&self, id: GroupId) -> Self {
        GroupList::from_unsorted(self.as_slice().iter().copied().filter(|g| *g != id).collect())
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            GroupList::Inline { .. } => 0,
            GroupList::Shared(ids) => ids.len() * size_of::<GroupId>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_sorted_is_from_unsorted_on_sorted_input() {
        let g = |ids: &[u32]| ids.iter().map(|&i| GroupId(i)).collect::<Vec<_>>();
        let cases: [&[u32]; 8] = [
            &[],
            &[7],
            &[1, 1, 1],
            &[1, 2, 3, 4],
            &[1, 1, 2, 2, 3, 3, 4, 4],
            &[1, 2, 3, 4, 5],
            &[1, 1, 2, 3, 4, 5, 5, 9],
            &[u32::MAX - 1, u32::MAX - 1],
        ];
        for case in cases {
            let ids = g(case);
            let sorted = GroupList::from_sorted(ids.iter().copied());
            assert_eq!(sorted, GroupList::from_unsorted(ids.clone()), "{case:?}");
            let mut expected = ids.clone();
            expected.dedup();
            assert_eq!(sorted.as_slice(), expected.as_slice(), "{case:?}");
            assert_eq!(
                matches!(sorted, GroupList::Inline { .. }),
                expected.len() <= INLINE,
                "{case:?}"
            );
        }
    }
}
