//! A node's cache of what authenticating a request reads from the database: sessions,
//! live API tokens and site memberships.
//!
//! Every HTTP request authenticates, and `/v1/decide` is the busy one: without the cache
//! it reads the database twice (the token or session, then the membership) before a
//! decision that itself reads only memory. An entry is served only while nothing that
//! could have changed it has happened since it was read:
//! - the auth epoch is unchanged. Every store write of accounts, sessions, tokens,
//!   memberships, invitations, vouchers and operators (a `Store::writer` transaction)
//!   bumps it after its commit; on PostgreSQL the same transaction notifies the other
//!   nodes, whose listeners bump theirs, and a listener bumps it after reconnecting, when
//!   it may have missed notifications;
//! - the snapshot's revision is unchanged, since model changes (a site or a person
//!   removed) reach memberships by cascade;
//! - it is younger than the TTL ([`DEFAULT_AUTH_CACHE_TTL`]), a bound on anything the
//!   two rules above could miss;
//! - the session or token has not expired since it was read (checked against the cached
//!   expiry).
//!
//! The stamp (epoch and revision) is taken before the database is read, so a write that
//! commits while the read is in flight leaves the entry stale at once. Only positive
//! answers are kept: an unknown token costs a read every time, and cannot fill the cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a cached session, token or membership is served at most.
pub const DEFAULT_AUTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries per table; a full table drops what is stale, then everything if that is not
/// enough (a refill costs one read per caller).
const MAX_ENTRIES: usize = 16_384;

/// The PostgreSQL notification payload that says "auth data changed" on the store's
/// channel (other payloads are revisions).
pub(crate) const AUTH_CHANGED: &str = "auth";

/// When an entry was read, as the cache judges staleness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    epoch: u64,
    revision: u64,
}

struct Cached<V> {
    value: V,
    stamp: Stamp,
    filled: Instant,
}

/// One table of the cache.
pub(crate) struct Table<K, V> {
    rows: Mutex<HashMap<K, Cached<V>>>,
}

impl<K: Eq + Hash, V: Clone> Table<K, V> {
    fn new() -> Self {
        Table {
            rows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Cached<V>>> {
        self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &K, stamp: Stamp, ttl: Duration) -> Option<V> {
        let rows = self.lock();
        let hit = rows.get(key)?;
        (hit.stamp == stamp && hit.filled.elapsed() < ttl).then(|| hit.value.clone())
    }

    fn put(&self, key: K, value: V, stamp: Stamp, ttl: Duration) {
        let mut rows = self.lock();
        if rows.len() >= MAX_ENTRIES && !rows.contains_key(&key) {
            rows.retain(|_, c| c.stamp == stamp && c.filled.elapsed() < ttl);
            if rows.len() >= MAX_ENTRIES {
                rows.clear();
            }
        }
        rows.insert(
            key,
            Cached {
                value,
                stamp,
                filled: Instant::now(),
            },
        );
    }

    fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

/// A session as authentication needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachedSession {
    pub(crate) account: crate::AccountId,
    pub(crate) expires_at: jiff::Timestamp,
}

/// The node's auth cache (see the module's documentation).
pub(crate) struct AuthCache {
    epoch: AtomicU64,
    ttl: Duration,
    pub(crate) sessions: Table<String, CachedSession>,
    pub(crate) tokens: Table<String, crate::ApiToken>,
    pub(crate) members: Table<(u32, crate::AccountId), crate::Membership>,
}

impl AuthCache {
    /// A cache serving entries for at most `ttl`; zero turns it off.
    pub(crate) fn new(ttl: Duration) -> Self {
        AuthCache {
            epoch: AtomicU64::new(0),
            ttl,
            sessions: Table::new(),
            tokens: Table::new(),
            members: Table::new(),
        }
    }

    /// Forget everything read so far: auth data changed, here or on another node.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The stamp of a read starting now at the snapshot's `revision`.
    pub(crate) fn stamp(&self, revision: u64) -> Stamp {
        Stamp {
            epoch: self.epoch.load(Ordering::Acquire),
            revision,
        }
    }

    /// A cached value of `table`, if it is still good for `stamp`.
    pub(crate) fn get<K: Eq + Hash, V: Clone>(&self, table: &Table<K, V>, key: &K, stamp: Stamp) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        table.get(key, stamp, self.ttl)
    }

    /// Keep `value`, read under `stamp`.
    pub(crate) fn put<K: Eq + Hash, V: Clone>(&self, table: &Table<K, V>, key: K, value: V, stamp: Stamp) {
        if !self.ttl.is_zero() {
            table.put(key, value, stamp, self.ttl);
        }
    }

    /// Drop one entry (a value found to be no longer valid, such as an expired session).
    pub(crate) fn forget<K: Eq + Hash, V: Clone>(table: &Table<K, V>, key: &K) {
        table.remove(key);
    }
}

/// Tell the other nodes, when `tx` commits, that auth data changed.
pub(crate) async fn notify_nodes(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::store::CHANNEL)
        .bind(AUTH_CHANGED)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_served_only_under_its_own_stamp_and_within_the_ttl() {
        let cache = AuthCache::new(Duration::from_secs(60));
        let stamp = cache.stamp(7);
        cache.put(
            &cache.sessions,
            "h".to_owned(),
            CachedSession {
                account: crate::AccountId(1),
                expires_at: jiff::Timestamp::from_second(9).unwrap(),
            },
            stamp,
        );
        assert_eq!(
            cache.get(&cache.sessions, &"h".to_owned(), stamp).map(|s| s.account),
            Some(crate::AccountId(1))
        );
        // Another revision: stale.
        assert!(cache.get(&cache.sessions, &"h".to_owned(), cache.stamp(8)).is_none());
        cache.invalidate();
        assert!(cache.get(&cache.sessions, &"h".to_owned(), cache.stamp(7)).is_none());

        let off = AuthCache::new(Duration::ZERO);
        let stamp = off.stamp(1);
        off.put(
            &off.sessions,
            "h".to_owned(),
            CachedSession {
                account: crate::AccountId(1),
                expires_at: jiff::Timestamp::from_second(9).unwrap(),
            },
            stamp,
        );
        assert!(off.get(&off.sessions, &"h".to_owned(), stamp).is_none());

        let short = AuthCache::new(Duration::from_millis(1));
        let stamp = short.stamp(1);
        short.put(
            &short.sessions,
            "h".to_owned(),
            CachedSession {
                account: crate::AccountId(1),
                expires_at: jiff::Timestamp::from_second(9).unwrap(),
            },
            stamp,
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&short.sessions, &"h".to_owned(), stamp).is_none());
    }

    #[test]
    fn a_full_table_makes_room() {
        let cache = AuthCache::new(Duration::from_secs(60));
        let old = cache.stamp(1);
        for i in 0..MAX_ENTRIES {
            cache.put(
                &cache.sessions,
                format!("{i}"),
                CachedSession {
                    account: crate::AccountId(1),
                    expires_at: jiff::Timestamp::from_second(9).unwrap(),
                },
                old,
            );
        }
        let new = cache.stamp(2);
        cache.put(
            &cache.sessions,
            "fresh".to_owned(),
            CachedSession {
                account: crate::AccountId(2),
                expires_at: jiff::Timestamp::from_second(9).unwrap(),
            },
            new,
        );
        assert_eq!(
            cache.sessions.lock().len(),
            1,
            "stale entries were dropped to make room"
        );
        assert_eq!(
            cache.get(&cache.sessions, &"fresh".to_owned(), new).map(|s| s.account),
            Some(crate::AccountId(2))
        );
    }
}
