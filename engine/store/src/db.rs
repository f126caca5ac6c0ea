//! Connecting to a backend chosen by URL, and running its migrations.
//!
//! `sqlite://PATH` (the default: `keyway.db` in the data directory) opens or creates an
//! embedded database with WAL, `synchronous=FULL` and foreign keys on. It gets one write
//! connection (SQLite has one writer anyway; a single connection makes the queue explicit
//! and lets the store set per-connection limits), a small pool of readers and, on Linux,
//! a background writer: a second write connection whose thread runs at `SCHED_IDLE`, for
//! the entries log's batches that nobody waits for (see [`Db::begin_background`]).
//! `postgres://...` opens a pool whose connections carry `application_name`
//! `keyway-<node>`, so an operator can see (or end) one node's sessions.

use crate::error::StoreError;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The embedded migrations for SQLite.
pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// The embedded migrations for PostgreSQL.
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database a store runs on.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// Embedded SQLite.
    Sqlite {
        /// Readers.
        read: SqlitePool,
        /// The writer of the model and of every transaction somebody waits for.
        write: SqlitePool,
        /// The background writer (`SCHED_IDLE`), when the platform gave one.
        background: Option<SqlitePool>,
        /// Held for each write transaction on either writer, so that one waits for the
        /// other here, woken at once, rather than in SQLite's busy handler, which polls.
        gate: Arc<tokio::sync::Mutex<()>>,
        /// Main-writer transactions waiting for the gate; a long entries batch commits
        /// what it has and lets them through (`entries::insert_batch`).
        waiting: Arc<std::sync::atomic::AtomicUsize>,
        /// The writer's `max_page_count` (0: none beyond SQLite's own). Every writer
        /// connection the pool opens applies it, so a reconnect keeps the cap.
        page_limit: Arc<AtomicU32>,
    },
    /// PostgreSQL, shared by several nodes.
    Postgres {
        pool: PgPool,
        /// The options it was opened with, for the notification listener.
        options: Box<PgConnectOptions>,
    },
}

/// The default database URL for a data directory: `sqlite://<dir>/keyway.db`.
#[must_use]
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("keyway.db").display())
}

fn acquire_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Db {
    /// The SQLite writer pool: one connection, with the operator's page limit applied to
    /// every connection it opens.
    async fn sqlite_writer(
        options: &SqliteConnectOptions,
        page_limit: &Arc<AtomicU32>,
    ) -> Result<SqlitePool, sqlx::Error> {
        Self::sqlite_writer_with(SqlitePoolOptions::new(), options, page_limit).await
    }

    async fn sqlite_writer_with(
        pool: SqlitePoolOptions,
        options: &SqliteConnectOptions,
        page_limit: &Arc<AtomicU32>,
    ) -> Result<SqlitePool, sqlx::Error> {
        let limit = Arc::clone(page_limit);
        pool.max_connections(1)
            .acquire_timeout(acquire_timeout())
            .after_connect(move |conn, _| {
                let pages = limit.load(Ordering::Acquire);
                Box::pin(async move {
                    if pages > 0 {
                        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            // A larger page cache for the writer keeps the entries indexes' hot pages
            // in memory as the log grows (64 MiB; SQLite's default is 2 MiB).
            .connect_with(options.clone().pragma("cache_size", "-65536"))
            .await
    }

    /// Open the database at `url` and bring its schema up to date.
    pub(crate) async fn open(url: &str, node: &str, max_connections: u32) -> Result<Db, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable {
                    message: format!("cannot create `{}`", dir.display()),
                    cause: Some(crate::error::Cause::new(e)),
                })?;
            }
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
                .log_statements(tracing::log::LevelFilter::Trace);
            let page_limit = Arc::new(AtomicU32::new(0));
            // Two nodes opening one new file at once race on switching it to WAL; the
            // loser's `journal_mode` pragma fails with "database is locked" at once (the
            // busy timeout does not cover it), so the first connection is retried.
            let mut attempt = 0u64;
            let write = loop {
                match Self::sqlite_writer(&options, &page_limit).await {
                    Ok(write) => break write,
                    Err(e) if attempt < 10 && e.to_string().contains("locked") => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "database locked while opening; retrying");
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                    Err(e) => return Err(StoreError::from(e).about(&path.display().to_string())),
                }
            };
            migrate_with_retry(&SQLITE_MIGRATIONS, || SQLITE_MIGRATIONS.run(&write)).await?;
            let background = background_writer(&options, &page_limit).await;
            let read = SqlitePoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(acquire_timeout())
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite {
                read,
                write,
                background,
                gate: Arc::new(tokio::sync::Mutex::new(())),
                waiting: Arc::default(),
                page_limit,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::invalid(format!("bad database url: {e}")))?
                .application_name(&format!("keyway-{node}"))
                .log_statements(tracing::log::LevelFilter::Trace);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(3))
                .acquire_timeout(acquire_timeout())
                .connect_with(options.clone())
                .await?;
            // sqlx takes a PostgreSQL advisory lock around migrations, so nodes starting
            // together apply each migration once.
            migrate_with_retry(&POSTGRES_MIGRATIONS, || POSTGRES_MIGRATIONS.run(&pool)).await?;
            Ok(Db::Postgres {
                pool,
                options: Box::new(options),
            })
        } else {
            Err(StoreError::invalid(format!(
                "unsupported database url `{url}`: expected `sqlite://PATH` or `postgres://...`"
            )))
        }
    }

    /// Close every connection.
    pub(crate) async fn close(&self) {
        match self {
            Db::Sqlite {
                read,
                write,
                background,
                ..
            } => {
                read.close().await;
                if let Some(background) = background {
                    background.close().await;
                }
                write.close().await;
            }
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }
}

/// The background writer: one write connection whose SQLite thread runs at `SCHED_IDLE`,
/// so that it only takes CPU that nothing else wants. Committing a large batch of entries
/// is tens of milliseconds of CPU; at normal priority a Tokio worker woken meanwhile on
/// the same core waited for the batch's time slice, which was most of the IQ link's p99 at
/// 100,000 decisions/s (BENCHMARKS.md, section 15). An idle-policy thread is preempted as
/// soon as any other thread wants its core.
///
/// sqlx starts a connection's thread from the thread that opens it, and a new thread
/// inherits its creator's policy, so the connection is opened from a short-lived thread
/// that first lowers its own. `None` (and a warning) where that is refused or not Linux:
/// the entries then use the main writer, as everything does. The pool keeps its one
/// connection for good (no idle timeout, no lifetime); should sqlx ever replace it, the
/// new one runs at normal priority, which costs latency but never correctness.
async fn background_writer(options: &SqliteConnectOptions, page_limit: &Arc<AtomicU32>) -> Option<SqlitePool> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let (options, page_limit) = (options.clone(), Arc::clone(page_limit));
    let opener = std::thread::Builder::new()
        // At most 15 bytes: Linux cuts thread names there.
        .name("keyway-idle-db".to_owned())
        .spawn(move || {
            let opened = lower_to_idle().map(|()| {
                // No `min_connections`: sqlx would then also open the connection from
                // a maintenance task on a runtime thread, racing this one. Without it and
                // with neither timeout, the connection is opened here, by the first
                // acquire, and kept.
                let pool = SqlitePoolOptions::new().idle_timeout(None).max_lifetime(None);
                runtime.block_on(Db::sqlite_writer_with(pool, &options, &page_limit))
            });
            let _ = sender.send(opened);
        });
    if let Err(e) = opener {
        tracing::warn!(error = %e, "no background writer: cannot start a thread; entries use the main writer");
        return None;
    }
    match receiver.await {
        Ok(Ok(Ok(pool))) => Some(pool),
        Ok(Err(reason)) => {
            tracing::warn!(%reason, "no background writer: the idle policy was refused; entries use the main writer");
            None
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "no background writer: cannot connect; entries use the main writer");
            None
        }
        Err(_) => {
            tracing::warn!("no background writer: its opener stopped; entries use the main writer");
            None
        }
    }
}

/// Put the calling thread (only it) under `SCHED_IDLE`.
#[cfg(target_os = "linux")]
fn lower_to_idle() -> Result<(), String> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
    .map_err(|e| format!("{e:?}"))
}

#[cfg(not(target_os = "linux"))]
fn lower_to_idle() -> Result<(), String> {
    Err("SCHED_IDLE is Linux only".to_owned())
}

/// Run migrations, retrying a few times: two nodes migrating one SQLite file at once can
/// race on the bookkeeping table (PostgreSQL is serialised by sqlx's advisory lock); the
/// loser's retry then finds the work done.
async fn migrate_with_retry<F, Fut>(migrator: &sqlx::migrate::Migrator, run: F) -> Result<(), StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), sqlx::migrate::MigrateError>>,
{
    let mut attempt = 0;
    loop {
        match run().await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e)) => {
                let e = StoreError::from(e);
                if attempt >= 5 || matches!(e.kind(), crate::ErrorKind::Corrupt | crate::ErrorKind::ReadOnly) {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, "migration failed, retrying");
            }
            Err(e) => {
                if attempt >= 5 {
                    return Err(StoreError::internal(format!(
                        "migrations ({} known) failed: {e}",
                        migrator.iter().count()
                    )));
                }
                tracing::warn!(error = %e, attempt, "migration failed, retrying");
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn max_page_count(write: &SqlitePool) -> i64 {
        sqlx::query_scalar("PRAGMA max_page_count")
            .fetch_one(write)
            .await
            .unwrap()
    }

    /// The scheduling policy of each of this process's threads, by name (`/proc`,
    /// field 41 of `stat`; the name may hold spaces, so fields count from its `)`).
    #[cfg(target_os = "linux")]
    fn thread_policies() -> Vec<(String, u32)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let name = std::fs::read_to_string(task.join("comm")).ok()?;
                let stat = std::fs::read_to_string(task.join("stat")).ok()?;
                Some((name.trim().to_owned(), policy(&stat)))
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    fn policy(stat: &str) -> u32 {
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        after_name.split_whitespace().nth(38).unwrap().parse().unwrap()
    }

    /// The background writer's SQLite thread runs at `SCHED_IDLE` (policy 5); the
    /// thread that opened the database keeps its own policy, and so do the others.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_background_writer_runs_at_idle_priority() {
        const SCHED_IDLE: u32 = 5;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let db = Db::open(&url, "t", 2).await.unwrap();
        let Db::Sqlite { background, .. } = &db else {
            panic!("a sqlite url opens sqlite");
        };
        let background = background.as_ref().expect("linux gives a background writer");
        sqlx::query("CREATE TABLE t (x)").execute(background).await.unwrap();
        let idle: Vec<String> = thread_policies()
            .into_iter()
            .filter(|(_, policy)| *policy == SCHED_IDLE)
            .map(|(name, _)| name)
            .collect();
        // Tests run side by side in this process: other databases' background writers
        // (and openers) may be there too, but nothing else.
        assert!(idle.iter().any(|name| name.starts_with("sqlx-sqlite-wor")), "{idle:?}");
        assert!(
            idle.iter()
                .all(|name| name.starts_with("sqlx-sqlite-wor") || name == "keyway-idle-db"),
            "{idle:?}"
        );
        let own = policy(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        assert_eq!(own, 0, "the opening thread keeps SCHED_OTHER");
        db.close().await;
    }

    /// The page cap is a per-connection pragma; a writer connection the pool opens later
    /// (after an error or at its lifetime's end) must carry it too.
    #[tokio::test]
    async fn page_limit_survives_a_new_writer_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let Db::Sqlite { write, page_limit, .. } = Db::open(&url, "t", 2).await.unwrap() else {
            panic!("a sqlite url opens sqlite");
        };
        let default = max_page_count(&write).await;
        page_limit.store(4321, Ordering::Release);
        // The pool's one writer connection goes away; the next acquire opens a new one.
        write.acquire().await.unwrap().close().await.unwrap();
        assert_eq!(max_page_count(&write).await, 4321);
        page_limit.store(0, Ordering::Release);
        write.acquire().await.unwrap().close().await.unwrap();
        assert_eq!(max_page_count(&write).await, default);
    }
}
