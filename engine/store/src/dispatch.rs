//! Running the store's SQL on whichever backend the store opened.
//!
//! A concern's SQL is a set of plain functions taking a [`Conn`], the connection of
//! either backend. Each function writes its statements once, in [`each_backend!`], which
//! compiles them for SQLite and for PostgreSQL and runs the one the connection belongs
//! to; rows are read through [`Columns`], which both backends' rows implement. Callers
//! open a [`Reader`] (a pooled connection) or a [`Writer`] (a transaction that commits
//! with [`Writer::commit`] and rolls back when dropped, so an early `?` undoes it) and
//! hand its [`Conn`] to those functions: plain Rust that rustdoc, editors and
//! code-navigation tools follow.
//!
//! The model's own SQL (the change log, the entity tables, the audit log) is in `sql.rs`,
//! written the same way; see ARCHITECTURE-store.md.

use crate::error::StoreError;
use crate::store::Store;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A connection of either backend, borrowed from a [`Reader`] or a [`Writer`].
pub(crate) enum Conn<'c> {
    /// SQLite.
    Sqlite(&'c mut SqliteConnection),
    /// PostgreSQL.
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// The same connection for a shorter borrow, so that one function can hand it to
    /// several others in turn.
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

/// `each_backend!(conn, |c, ops| body)`: run `body` with `c` the backend's own connection
/// (`&mut SqliteConnection` or `&mut PgConnection`) and `ops` the backend's module below
/// (`ops::Db` for a `QueryBuilder`, `ops::PG` for a dialect branch); `|c| body` when the
/// body needs no `ops`. The body is compiled once per backend, so the same statements
/// run on both. To call another SQL function from a body, hand it `Conn::from(&mut *c)`.
macro_rules! each_backend {
    ($conn:expr, |$c:ident, $ops:ident| $body:expr) => {
        match $conn {
            $crate::dispatch::Conn::Sqlite($c) => {
                use $crate::dispatch::sqlite as $ops;
                $body
            }
            $crate::dispatch::Conn::Postgres($c) => {
                use $crate::dispatch::postgres as $ops;
                $body
            }
        }
    };
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::dispatch::Conn::Sqlite($c) => $body,
            $crate::dispatch::Conn::Postgres($c) => $body,
        }
    };
}

/// What a body of [`each_backend!`] compiled for SQLite names `ops`.
pub(crate) mod sqlite {
    /// The driver.
    pub(crate) type Db = sqlx::Sqlite;
    /// Whether this is PostgreSQL.
    pub(crate) const PG: bool = false;
}

/// What a body of [`each_backend!`] compiled for PostgreSQL names `ops`.
pub(crate) mod postgres {
    /// The driver.
    pub(crate) type Db = sqlx::Postgres;
    /// Whether this is PostgreSQL.
    pub(crate) const PG: bool = true;
}

/// A value both backends decode from a column: what [`Columns::col`] reads.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

/// A row of either backend, read by column position; lets one decoding function serve
/// both.
pub(crate) trait Columns {
    /// The value in column `index`.
    fn col<T: Column>(&self, index: usize) -> Result<T, sqlx::Error>;

    /// The instant in column `index`, stored as whole seconds since the epoch.
    fn time(&self, index: usize) -> Result<jiff::Timestamp, sqlx::Error> {
        seconds_to_time(self.col(index)?)
    }

    /// The instant in column `index` when it is not `NULL`.
    fn time_opt(&self, index: usize) -> Result<Option<jiff::Timestamp>, sqlx::Error> {
        self.col::<Option<i64>>(index)?.map(seconds_to_time).transpose()
    }
}

/// `t` as the database keeps it, whole seconds (floored): what a record built from a
/// caller's instant holds, so that it equals the same record read back later.
pub(crate) fn whole(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// An instant read back from its stored seconds; a value outside jiff's range (which no
/// Keyway write makes) is a decode error rather than a silently clamped time.
pub(crate) fn seconds_to_time(seconds: i64) -> Result<jiff::Timestamp, sqlx::Error> {
    jiff::Timestamp::from_second(seconds).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn col<T: Column>(&self, index: usize) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, index)
    }
}

impl Columns for sqlx::postgres::PgRow {
    fn col<T: Column>(&self, index: usize) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, index)
    }
}

/// Queue an event for notifications and webhooks in the caller's transaction, so the
/// event exists exactly when the write that caused it does; answers its outbox id.
pub(crate) async fn enqueue_event(
    conn: Conn<'_>,
    site: keyway_core::SiteId,
    kind: &str,
    at: jiff::Timestamp,
    data: serde_json::Value,
) -> Result<crate::OutboxId, StoreError> {
    let at = at.as_second();
    crate::sql::enqueue_event(conn, site, kind, at, at, data)
        .await
        .map(crate::OutboxId)
}

/// A pooled connection for reads.
pub(crate) enum Reader {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Reader {
    /// The connection, for the SQL functions.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Reader::Sqlite(c) => Conn::Sqlite(&mut *c),
            Reader::Postgres(c) => Conn::Postgres(&mut *c),
        }
    }
}

/// A write transaction on the database alone, for writes no cache hears of (the entries
/// log's batches, its retention and purge). [`DbTx::commit`] commits it; dropping it rolls
/// it back.
pub(crate) struct DbTx(WriterTx);

impl DbTx {
    /// The transaction's connection, for the SQL functions.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match &mut self.0 {
            WriterTx::Sqlite(tx, _) => Conn::Sqlite(&mut *tx),
            WriterTx::Postgres(tx) => Conn::Postgres(&mut *tx),
        }
    }

    /// Commit.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            WriterTx::Sqlite(tx, turn) => {
                tx.commit().await?;
                drop(turn);
            }
            WriterTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// One count in [`Db::main_writer_waiting`]'s counter while it lives, so that a
/// cancelled wait does not leave it counted.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A write transaction. [`Writer::commit`] commits it; dropping it rolls it back.
pub(crate) struct Writer<'s> {
    tx: DbTx,
    store: &'s Store,
    /// Whether the write may change what authentication reads (accounts, sessions,
    /// tokens, memberships): then other nodes and this node's auth cache hear of it.
    tracked: bool,
}

enum WriterTx {
    /// With the writers' gate, held until the transaction ends (see `Db::Sqlite`).
    Sqlite(Transaction<'static, Sqlite>, tokio::sync::OwnedMutexGuard<()>),
    Postgres(Transaction<'static, Postgres>),
}

impl Writer<'_> {
    /// The transaction's connection, for the SQL functions.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        self.tx.conn()
    }

    /// Commit. After it, a read that starts sees the write, the auth cache included.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        if self.tracked
            && let WriterTx::Postgres(tx) = &mut self.tx.0
        {
            crate::auth_cache::notify_nodes(tx).await?;
        }
        self.tx.commit().await?;
        if self.tracked {
            self.store.inner.auth.invalidate();
        }
        Ok(())
    }
}

impl crate::db::Db {
    /// A connection for reads.
    pub(crate) async fn reader(&self) -> Result<Reader, StoreError> {
        Ok(match self {
            crate::db::Db::Sqlite { read, .. } => Reader::Sqlite(read.acquire().await?),
            crate::db::Db::Postgres { pool, .. } => Reader::Postgres(pool.acquire().await?),
        })
    }

    /// A write transaction (on SQLite, on the main writer connection).
    pub(crate) async fn begin(&self) -> Result<DbTx, StoreError> {
        Ok(DbTx(match self {
            crate::db::Db::Sqlite {
                write, gate, waiting, ..
            } => {
                let turn = {
                    let _waiting = Waiting::count(waiting);
                    Arc::clone(gate).lock_owned().await
                };
                WriterTx::Sqlite(write.begin().await?, turn)
            }
            crate::db::Db::Postgres { pool, .. } => WriterTx::Postgres(pool.begin().await?),
        }))
    }

    /// Whether a main-writer transaction waits for its turn (SQLite; never on
    /// PostgreSQL, whose writers do not take turns).
    pub(crate) fn main_writer_waiting(&self) -> bool {
        match self {
            crate::db::Db::Sqlite { waiting, .. } => waiting.load(Ordering::Acquire) > 0,
            crate::db::Db::Postgres { .. } => false,
        }
    }

    /// Whether [`Db::begin_background`] has a writer of its own (SQLite on Linux).
    pub(crate) fn has_background_writer(&self) -> bool {
        matches!(
            self,
            crate::db::Db::Sqlite {
                background: Some(_),
                ..
            }
        )
    }

    /// A write transaction for work nobody waits for: on SQLite's background writer (its
    /// thread at `SCHED_IDLE`) where there is one, otherwise as [`Db::begin`]. It waits
    /// its turn with the main writer's transactions, and a main writer's transaction that
    /// comes while it runs waits for it: keep these transactions to work that can wait.
    pub(crate) async fn begin_background(&self) -> Result<DbTx, StoreError> {
        match self {
            crate::db::Db::Sqlite {
                background: Some(background),
                gate,
                ..
            } => {
                let turn = Arc::clone(gate).lock_owned().await;
                Ok(DbTx(WriterTx::Sqlite(background.begin().await?, turn)))
            }
            _ => self.begin().await,
        }
    }
}

impl Store {
    /// A connection for reads.
    pub(crate) async fn reader(&self) -> Result<Reader, StoreError> {
        self.inner.db.reader().await
    }

    /// A write transaction that may change what authentication reads.
    pub(crate) async fn writer(&self) -> Result<Writer<'_>, StoreError> {
        self.begin_writer(true).await
    }

    /// A write transaction that changes nothing authentication reads (a token's last
    /// use, a new session), so it leaves the auth caches alone.
    pub(crate) async fn writer_untracked(&self) -> Result<Writer<'_>, StoreError> {
        self.begin_writer(false).await
    }

    async fn begin_writer(&self, tracked: bool) -> Result<Writer<'_>, StoreError> {
        let tx = self.inner.db.begin().await?;
        Ok(Writer {
            tx,
            store: self,
            tracked,
        })
    }
}

/// Random secrets handed to people once (reset links, invitations, API tokens) and the
/// hashes the store keeps instead of them.
///
/// A secret is 32 bytes from the operating system's generator, shown as 64 hex digits.
/// It carries 256 bits of entropy, so a plain SHA-256 is a sound way to store it: no
/// salt or slow hash is needed against guessing, and lookups by hash stay indexed.
pub(crate) mod secrets {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    use sha2::{Digest, Sha256};

    /// A fresh secret, with `prefix` in front (e.g. `kw_` for API tokens, so leaked
    /// tokens are recognisable to secret scanners).
    pub(crate) fn fresh(prefix: &str) -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        format!("{prefix}{}", hex::encode(bytes))
    }

    /// The hash stored for `secret`.
    pub(crate) fn hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }

    /// The SHA-256 of `bytes`, as hex.
    pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }
}
