//! The change feed: every revision this node applies, in order, for subscribers such as
//! the IQ link (revocation pushes) and the node's policy state.
//!
//! Publication is a `tokio::sync::broadcast` send made under the node's apply lock, so
//! items go out in revision order with no gaps, whether the revision was written here or
//! by another node and applied by the follower. A send never waits: a subscriber that
//! falls more than the channel's capacity behind loses its place and is told so
//! ([`FeedError::Behind`]) rather than slowing writers or decisions down; it then
//! resynchronises in full (for an IQ, a full offline list).
//!
//! [`crate::Store::subscribe`] starts a subscriber at any revision still in the change
//! log: it subscribes to the channel first, then reads the rows up to the node's applied
//! revision from the database, and drops from the channel what the rows already gave.

use crate::codec::{self, Logged};
use crate::error::StoreError;
use crate::store::Store;
use keyway_core::Revision;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Revisions kept in memory for subscribers by default.
pub const DEFAULT_FEED_CAPACITY: usize = 4096;

/// The most change-log rows a subscriber may replay from the database when it starts;
/// one further behind is [`FeedError::Behind`] and resynchronises in full.
pub const MAX_FEED_REPLAY: u64 = 100_000;

/// One applied revision.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedItem {
    pub revision: Revision,
    /// What it changed. [`Logged::Reload`] means the model was rebuilt from the tables:
    /// a subscriber that keeps derived state must rebuild it.
    pub entry: Arc<Logged>,
}

impl FeedItem {
    pub(crate) fn new(revision: Revision, entry: Logged) -> Self {
        FeedItem {
            revision,
            entry: Arc::new(entry),
        }
    }
}

/// Why a subscriber cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedError {
    /// The subscriber fell too far behind (or asked for revisions no longer replayable):
    /// the revisions after `next - 1` cannot be delivered one by one. Resynchronise in
    /// full, then subscribe again from the revision the full state is at.
    Behind {
        /// The first revision the subscriber was missing.
        next: Revision,
    },
    /// The store was closed.
    Closed,
    /// The change log could not be read.
    Store(StoreError),
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::Behind { next } => write!(
                f,
                "the subscriber fell behind at revision `r{}`; a full resync is needed",
                next.0
            ),
            FeedError::Closed => f.write_str("the change feed is closed"),
            FeedError::Store(e) => write!(f, "the change log could not be read: {e}"),
        }
    }
}

impl std::error::Error for FeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FeedError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for FeedError {
    fn from(e: StoreError) -> Self {
        FeedError::Store(e)
    }
}

/// The publishing side, owned by the store.
#[derive(Debug)]
pub(crate) struct Feed {
    tx: broadcast::Sender<FeedItem>,
}

impl Feed {
    pub(crate) fn new(capacity: usize) -> Self {
        Feed {
            tx: broadcast::channel(capacity.max(16)).0,
        }
    }

    /// Sends `item` to every subscriber; never waits. Called under the apply lock.
    pub(crate) fn publish(&self, item: FeedItem) {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(item);
    }

    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.tx.subscribe()
    }
}

/// A subscriber's position in the feed. Call [`ChangeStream::next`] in a loop.
#[derive(Debug)]
pub struct ChangeStream {
    backlog: VecDeque<FeedItem>,
    rx: broadcast::Receiver<FeedItem>,
    next: u64,
}

impl ChangeStream {
    /// The next revision, in order and without gaps (a [`Logged::Reload`] may skip ahead:
    /// it replaces everything before it).
    ///
    /// # Errors
    /// [`FeedError::Behind`] when the subscriber lost its place; [`FeedError::Closed`]
    /// when the store closed.
    pub async fn next(&mut self) -> Result<FeedItem, FeedError> {
        if let Some(item) = self.backlog.pop_front() {
            self.next = item.revision.0.saturating_add(1);
            return Ok(item);
        }
        loop {
            match self.rx.recv().await {
                Ok(item) if item.revision.0 < self.next => {}
                Ok(item) if item.revision.0 == self.next || matches!(*item.entry, Logged::Reload) => {
                    self.next = item.revision.0.saturating_add(1);
                    return Ok(item);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(FeedError::Behind {
                        next: Revision(self.next),
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    /// The revision [`ChangeStream::next`] delivers next.
    #[must_use]
    pub fn position(&self) -> Revision {
        Revision(self.next)
    }
}

impl Store {
    /// Subscribe to the revisions after `after`, in order: those still in the change log
    /// are replayed from the database, then the live ones follow.
    ///
    /// # Errors
    /// [`FeedError::Behind`] if more than [`MAX_FEED_REPLAY`] revisions would need a
    /// replay; [`FeedError::Store`] if the change log cannot be read.
    pub async fn subscribe(&self, after: Revision) -> Result<ChangeStream, FeedError> {
        // Subscribe before reading, so nothing published meanwhile is missed; duplicates
        // are dropped by revision in `next`.
        let rx = self.inner.feed.subscribe();
        let applied = self.status().applied.0;
        let mut backlog = VecDeque::new();
        if applied > after.0 {
            if applied - after.0 > MAX_FEED_REPLAY {
                return Err(FeedError::Behind {
                    next: Revision(after.0.saturating_add(1)),
                });
            }
            let limit = i64::try_from(applied - after.0).unwrap_or(i64::MAX);
            let rows = self.changes_after(after.0, limit).await?;
            let mut expected = after.0.saturating_add(1);
            for (revision, text) in rows {
                if revision > applied {
                    break;
                }
                if revision != expected {
                    // The log does not hold these revisions (a database restored from an
                    // older copy): only a full resync is safe.
                    return Err(FeedError::Behind {
                        next: Revision(expected),
                    });
                }
                backlog.push_back(FeedItem::new(Revision(revision), codec::decode(&text)?));
                expected = revision.saturating_add(1);
            }
        }
        Ok(ChangeStream {
            backlog,
            rx,
            next: after.0.saturating_add(1),
        })
    }

    async fn changes_after(&self, after: u64, limit: i64) -> Result<Vec<(u64, String)>, StoreError> {
        crate::sql::changes_after(self.reader().await?.conn(), after, limit).await
    }
}
