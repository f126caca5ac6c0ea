//! Connecting to a backend chosen by URL, and running its migrations.
//!
//! `sqlite://PATH` (the default: `keyway.db` in the data directory) opens or creates an
//! embedded database with WAL, `synchronous=FULL` and foreign keys on. It gets one write
//! connection (SQLite has one writer anyway; a single connection makes the queue explicit
//! and lets the store set per-connection limits) and a small pool of readers.
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
        /// The one writer.
        write: SqlitePool,
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
        let limit = Arc::clone(page_limit);
        SqlitePoolOptions::new()
            .max_connections(1)
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
            let read = SqlitePoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(acquire_timeout())
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite {
                read,
                write,
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
            Db::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }
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
