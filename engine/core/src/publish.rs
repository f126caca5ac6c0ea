//! Publication: one `ArcSwap<Snapshot>` that readers load and one writer advances.
//!
//! Readers call [`SnapshotCell::load`] and see exactly one revision. Writers are
//! serialised by a mutex; each change builds the next snapshot off to the side and swaps
//! it in, so a decision never waits for a write.
//!
//! Compaction folds the overlays into a fresh FST without blocking writers: it snapshots
//! the current state, rebuilds off the lock, then replays the changes that landed
//! meanwhile and swaps the result in.

use crate::change::Change;
use crate::error::ModelError;
use crate::ids::Revision;
use crate::snapshot::Snapshot;
use arc_swap::{ArcSwap, Guard};
use std::sync::{Arc, Mutex, MutexGuard};

/// Overlay size past which [`SnapshotCell::needs_compaction`] says yes.
pub const DEFAULT_COMPACTION_THRESHOLD: usize = 4096;

#[derive(Default)]
struct WriterState {
    /// Changes applied since a compaction started, to be replayed on its result.
    replay: Option<Vec<(Revision, Change)>>,
    /// Bumped by every compaction start and every `replace`, so that a compaction can
    /// tell whether the replay list it finds is still its own.
    generation: u64,
}

/// The published snapshot.
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    writer: Mutex<WriterState>,
    compaction_threshold: usize,
}

impl std::fmt::Debug for SnapshotCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCell")
            .field("revision", &self.load().revision())
            .finish_non_exhaustive()
    }
}

impl SnapshotCell {
    /// Publish `snapshot`.
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotCell {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(WriterState::default()),
            compaction_threshold: DEFAULT_COMPACTION_THRESHOLD,
        }
    }

    /// Set the overlay size past which compaction is due.
    #[must_use]
    pub fn with_compaction_threshold(mut self, rows: usize) -> Self {
        self.compaction_threshold = rows;
        self
    }

    /// The current snapshot, for one decision or a short batch of them.
    #[inline]
    #[must_use]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, owned.
    #[must_use]
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // A writer that panicked left no half-written snapshot behind (snapshots are built
        // aside and swapped whole), so the state is still good.
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Apply `change` as `revision` and publish it. When this returns, every later
    /// [`SnapshotCell::load`] sees the change.
    ///
    /// # Errors
    /// Why the change was refused; the published snapshot is then unchanged.
    pub fn apply(&self, revision: Revision, change: Change) -> Result<Revision, ModelError> {
        let mut state = self.lock();
        let next = self.current.load().apply(revision, &change)?;
        self.current.store(Arc::new(next));
        if let Some(replay) = state.replay.as_mut() {
            replay.push((revision, change));
        }
        Ok(revision)
    }

    /// Publish `next`, which the caller built with `base.apply(revision, &change)` where
    /// `base` is a snapshot it loaded from this cell: the change is validated and applied
    /// once, not again at publication. If the published snapshot is no longer `base`
    /// (a compaction or a replace landed meanwhile), the change is applied to what is
    /// published instead, so nothing that landed is lost.
    ///
    /// # Errors
    /// Why the change was refused by the newer snapshot; the published one is then
    /// unchanged.
    pub fn publish_applied(
        &self,
        base: &Arc<Snapshot>,
        next: Snapshot,
        revision: Revision,
        change: Change,
    ) -> Result<Revision, ModelError> {
        let mut state = self.lock();
        let current = self.current.load();
        let next = if Arc::ptr_eq(&current, base) && next.revision() == revision {
            next
        } else {
            current.apply(revision, &change)?
        };
        drop(current);
        self.current.store(Arc::new(next));
        if let Some(replay) = state.replay.as_mut() {
            replay.push((revision, change));
        }
        Ok(revision)
    }

    /// Publish `next`, which the caller built with `base.apply_batch(first, &changes)`
    /// where `base` is a snapshot it loaded from this cell, as [`SnapshotCell::publish_applied`]
    /// does for one change: if the published snapshot is no longer `base`, the changes
    /// are applied to what is published instead.
    ///
    /// # Errors
    /// Why a change was refused by the newer snapshot; the published one is then
    /// unchanged.
    pub fn publish_applied_batch(
        &self,
        base: &Arc<Snapshot>,
        next: Snapshot,
        changes: &[(Revision, Change)],
    ) -> Result<(), ModelError> {
        let Some((last, _)) = changes.last() else {
            return Ok(());
        };
        let mut state = self.lock();
        let current = self.current.load();
        let next = if Arc::ptr_eq(&current, base) && next.revision() == *last {
            next
        } else {
            let mut rebuilt = Snapshot::clone(&current);
            for (revision, change) in changes {
                rebuilt = rebuilt.apply(*revision, change)?;
            }
            rebuilt
        };
        drop(current);
        self.current.store(Arc::new(next));
        if let Some(replay) = state.replay.as_mut() {
            replay.extend(changes.iter().cloned());
        }
        Ok(())
    }

    /// Publish a snapshot built elsewhere (a full rebuild). It must not be older than the
    /// current one.
    ///
    /// # Errors
    /// [`ModelError::StaleRevision`] if it is older.
    pub fn replace(&self, snapshot: Snapshot) -> Result<Revision, ModelError> {
        let mut state = self.lock();
        let current = self.current.load().revision();
        if snapshot.revision() < current {
            return Err(ModelError::StaleRevision {
                current,
                given: snapshot.revision(),
            });
        }
        let revision = snapshot.revision();
        self.current.store(Arc::new(snapshot));
        // A compaction running now started from an older state; its result must not win.
        state.replay = None;
        state.generation = state.generation.wrapping_add(1);
        Ok(revision)
    }

    /// Whether the overlays have grown past the threshold.
    #[must_use]
    pub fn needs_compaction(&self) -> bool {
        self.load().overlay_len() > self.compaction_threshold
    }

    /// Rebuild the base from the current state, replay what landed meanwhile, publish.
    /// Meant for a background thread; writers and readers go on while it runs.
    ///
    /// Returns the revision published, or `None` if a [`SnapshotCell::replace`] or another
    /// compaction overtook this one (its work is then dropped, as it is stale).
    ///
    /// # Errors
    /// If the rebuild or a replayed change fails; the published snapshot is then unchanged.
    pub fn compact(&self) -> Result<Option<Revision>, ModelError> {
        let (start, generation) = {
            let mut state = self.lock();
            if state.replay.is_some() {
                return Ok(None);
            }
            state.replay = Some(Vec::new());
            state.generation = state.generation.wrapping_add(1);
            (self.current.load_full(), state.generation)
        };
        let rebuilt = start.compact();
        let mut state = self.lock();
        if state.generation != generation {
            return Ok(None);
        }
        let Some(replay) = state.replay.take() else {
            return Ok(None);
        };
        let mut next = rebuilt?;
        for (revision, change) in &replay {
            next = next.apply(*revision, change)?;
        }
        let revision = next.revision();
        self.current.store(Arc::new(next));
        Ok(Some(revision))
    }
}
