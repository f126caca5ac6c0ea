//! The one error type of the store, [`StoreError`], and its [`ErrorKind`], which is what
//! the API maps to an HTTP status.
//!
//! Refusals (a duplicate tag, an unknown id, a broken reference, a change the model does
//! not accept) are client errors: the API answers them with a 4xx. Faults (the database is
//! unreachable, full, read-only or corrupt) are server-side conditions that recover without
//! a restart once their cause is gone; nothing acknowledged is lost in either case.

use keyway_core::ModelError;
use std::fmt;

/// What kind of failure a [`StoreError`] is; the API maps each to one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A uniqueness rule was broken (e.g. a duplicate tag UID): 409.
    Duplicate,
    /// The id names nothing: 404.
    NotFound,
    /// A record names something that does not exist: 422.
    ForeignKey,
    /// Removing something still referenced: 409.
    InUse,
    /// The input does not fit the model: 422.
    Invalid,
    /// The database cannot be reached now; retry later: 503.
    Unavailable,
    /// The database has no room left: 507.
    StorageFull,
    /// The database refuses writes: 503.
    ReadOnly,
    /// The database file is damaged or not a database: 500, with a clear message.
    Corrupt,
    /// A bounded queue is full and the caller asked not to wait: 429.
    Busy,
    /// The store was closed.
    Closed,
    /// Anything else; a bug or an unexpected database answer: 500.
    Internal,
}

impl ErrorKind {
    /// Whether the caller's input caused it (a 4xx), rather than the server.
    #[must_use]
    pub const fn is_client_error(self) -> bool {
        matches!(
            self,
            ErrorKind::Duplicate | ErrorKind::NotFound | ErrorKind::ForeignKey | ErrorKind::InUse | ErrorKind::Invalid
        )
    }
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// A uniqueness rule was broken.
    Duplicate {
        /// What was being written, e.g. `credential:7`.
        entity: String,
        /// What it clashes with.
        detail: String,
    },
    /// The id names nothing.
    NotFound {
        /// The entity, e.g. `person:9`.
        entity: String,
    },
    /// A record names something that does not exist.
    ForeignKey {
        /// The record.
        from: String,
        /// What it names.
        to: String,
    },
    /// Removing something still referenced.
    InUse {
        /// What was to be removed.
        entity: String,
        /// Who still uses it.
        used_by: String,
    },
    /// The input does not fit the model.
    Invalid {
        /// Why.
        message: String,
    },
    /// The database cannot be reached.
    Unavailable {
        /// The driver's message.
        message: String,
    },
    /// The database is full.
    StorageFull {
        /// The driver's message.
        message: String,
    },
    /// The database refuses writes.
    ReadOnly {
        /// The driver's message.
        message: String,
    },
    /// The database file is damaged or not a database.
    Corrupt {
        /// The driver's message.
        message: String,
    },
    /// A bounded queue is full.
    Busy {
        /// Which queue.
        queue: &'static str,
    },
    /// The store was closed.
    Closed,
    /// Anything else.
    Internal {
        /// What happened.
        message: String,
    },
}

impl StoreError {
    /// The kind, for mapping to a status code.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Duplicate { .. } => ErrorKind::Duplicate,
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::ForeignKey { .. } => ErrorKind::ForeignKey,
            StoreError::InUse { .. } => ErrorKind::InUse,
            StoreError::Invalid { .. } => ErrorKind::Invalid,
            StoreError::Unavailable { .. } => ErrorKind::Unavailable,
            StoreError::StorageFull { .. } => ErrorKind::StorageFull,
            StoreError::ReadOnly { .. } => ErrorKind::ReadOnly,
            StoreError::Corrupt { .. } => ErrorKind::Corrupt,
            StoreError::Busy { .. } => ErrorKind::Busy,
            StoreError::Closed => ErrorKind::Closed,
            StoreError::Internal { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn internal(message: impl fmt::Display) -> StoreError {
        StoreError::Internal {
            message: message.to_string(),
        }
    }

    /// The same error, its message prefixed with what it concerns (e.g. a file).
    pub(crate) fn about(self, what: &str) -> StoreError {
        let prefix = |message: String| format!("`{what}`: {message}");
        match self {
            StoreError::Unavailable { message } => StoreError::Unavailable {
                message: prefix(message),
            },
            StoreError::StorageFull { message } => StoreError::StorageFull {
                message: prefix(message),
            },
            StoreError::ReadOnly { message } => StoreError::ReadOnly {
                message: prefix(message),
            },
            StoreError::Corrupt { message } => StoreError::Corrupt {
                message: prefix(message),
            },
            StoreError::Internal { message } => StoreError::Internal {
                message: prefix(message),
            },
            other => other,
        }
    }

    pub(crate) fn invalid(message: impl fmt::Display) -> StoreError {
        StoreError::Invalid {
            message: message.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Duplicate { entity, detail } => write!(f, "`{entity}` is a duplicate: {detail}"),
            StoreError::NotFound { entity } => write!(f, "`{entity}` does not exist"),
            StoreError::ForeignKey { from, to } => write!(f, "`{from}` names unknown `{to}`"),
            StoreError::InUse { entity, used_by } => write!(f, "`{entity}` is still used by `{used_by}`"),
            StoreError::Invalid { message } => write!(f, "invalid input: {message}"),
            StoreError::Unavailable { message } => write!(f, "the database is unavailable: {message}"),
            StoreError::StorageFull { message } => write!(f, "the database is full: {message}"),
            StoreError::ReadOnly { message } => write!(f, "the database is read-only: {message}"),
            StoreError::Corrupt { message } => write!(f, "the database is corrupt or not a database: {message}"),
            StoreError::Busy { queue } => write!(f, "the {queue} queue is full"),
            StoreError::Closed => write!(f, "the store is closed"),
            StoreError::Internal { message } => write!(f, "internal store error: {message}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<ModelError> for StoreError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::DuplicateId { entity } => StoreError::Duplicate {
                entity,
                detail: "the id is taken".to_owned(),
            },
            ModelError::DuplicateSecret { existing, claimed_by } => StoreError::Duplicate {
                entity: claimed_by,
                detail: format!("the secret is held by `{existing}`"),
            },
            ModelError::NotFound { entity } => StoreError::NotFound { entity },
            ModelError::UnknownReference { from, to } => StoreError::ForeignKey { from, to },
            ModelError::InUse { entity, used_by } => StoreError::InUse { entity, used_by },
            e @ (ModelError::IdTooLarge { .. }
            | ModelError::CrossSite { .. }
            | ModelError::SiteChange { .. }
            | ModelError::MalformedSecret { .. }) => StoreError::Invalid { message: e.to_string() },
            e @ (ModelError::StaleRevision { .. } | ModelError::Index { .. }) => StoreError::internal(e),
        }
    }
}

/// SQLite primary result codes the store tells apart.
mod sqlite_code {
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const READONLY: i64 = 8;
    pub const IOERR: i64 = 10;
    pub const CORRUPT: i64 = 11;
    pub const FULL: i64 = 13;
    pub const CANTOPEN: i64 = 14;
    pub const NOTADB: i64 = 26;
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                let message = db.message().to_owned();
                match db.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => {
                        return StoreError::Duplicate {
                            entity: db.constraint().unwrap_or("row").to_owned(),
                            detail: message,
                        };
                    }
                    sqlx::error::ErrorKind::ForeignKeyViolation => {
                        return StoreError::ForeignKey {
                            from: db.table().unwrap_or("row").to_owned(),
                            to: message,
                        };
                    }
                    sqlx::error::ErrorKind::NotNullViolation | sqlx::error::ErrorKind::CheckViolation => {
                        return StoreError::Invalid { message };
                    }
                    _ => {}
                }
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // SQLite reports numeric extended codes, PostgreSQL five-character SQLSTATEs.
                if let Ok(extended) = code.parse::<i64>() {
                    return match extended & 0xff {
                        sqlite_code::FULL => StoreError::StorageFull { message },
                        sqlite_code::READONLY => StoreError::ReadOnly { message },
                        sqlite_code::CORRUPT | sqlite_code::NOTADB => StoreError::Corrupt { message },
                        sqlite_code::BUSY | sqlite_code::LOCKED | sqlite_code::IOERR | sqlite_code::CANTOPEN => {
                            StoreError::Unavailable { message }
                        }
                        _ => StoreError::Internal { message },
                    };
                }
                match code.as_str() {
                    "53100" => StoreError::StorageFull { message },
                    "25006" => StoreError::ReadOnly { message },
                    c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
                        StoreError::Unavailable { message }
                    }
                    _ => StoreError::Internal {
                        message: format!("{message} ({code})"),
                    },
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable { message: e.to_string() },
            sqlx::Error::RowNotFound => StoreError::NotFound {
                entity: "row".to_owned(),
            },
            other => StoreError::internal(other),
        }
    }
}
