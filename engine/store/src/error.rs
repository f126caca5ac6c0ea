//! The one error type of the store, [`StoreError`], and its [`ErrorKind`], which is what
//! the API maps to an HTTP status.
//!
//! Refusals (a duplicate tag, an unknown id, a broken reference, a change the model does
//! not accept) are client errors: the API answers them with a 4xx. Faults (the database is
//! unreachable, full, read-only or corrupt) are server-side conditions that recover without
//! a restart once their cause is gone; nothing acknowledged is lost in either case.

use keyway_core::ModelError;
use std::fmt;
use std::sync::Arc;

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
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
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
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
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
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
    },
    /// The database cannot be reached.
    Unavailable {
        /// What Keyway was doing, in its own words.
        message: String,
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
    },
    /// The database is full.
    StorageFull {
        /// What Keyway was doing, in its own words.
        message: String,
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
    },
    /// The database refuses writes.
    ReadOnly {
        /// What Keyway was doing, in its own words.
        message: String,
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
    },
    /// The database file is damaged or not a database.
    Corrupt {
        /// What Keyway was doing, in its own words.
        message: String,
        /// The database's own error, when it raised this one.
        cause: Option<Cause>,
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
        /// The underlying error, when there is one.
        cause: Option<Cause>,
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

    /// The error and every cause under it, joined by `: `: what a log line or an
    /// operator's terminal shows. Never an HTTP answer: the causes hold the database's
    /// own text.
    #[must_use]
    pub fn with_causes(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            next = cause.source();
        }
        out
    }

    /// An internal error in Keyway's words (its text reaches only the log: the API
    /// answers a 500 without it).
    pub(crate) fn internal(message: impl fmt::Display) -> StoreError {
        StoreError::Internal {
            message: message.to_string(),
            cause: None,
        }
    }

    /// The same error, its message prefixed with what it concerns (e.g. a file).
    pub(crate) fn about(self, what: &str) -> StoreError {
        let prefix = |message: String| format!("`{what}`: {message}");
        match self {
            StoreError::Unavailable { message, cause } => StoreError::Unavailable {
                message: prefix(message),
                cause,
            },
            StoreError::StorageFull { message, cause } => StoreError::StorageFull {
                message: prefix(message),
                cause,
            },
            StoreError::ReadOnly { message, cause } => StoreError::ReadOnly {
                message: prefix(message),
                cause,
            },
            StoreError::Corrupt { message, cause } => StoreError::Corrupt {
                message: prefix(message),
                cause,
            },
            StoreError::Internal { message, cause } => StoreError::Internal {
                message: prefix(message),
                cause,
            },
            other => other,
        }
    }

    pub(crate) fn invalid(message: impl fmt::Display) -> StoreError {
        StoreError::Invalid {
            message: message.to_string(),
            cause: None,
        }
    }

    /// A duplicate refused in Keyway's words, keeping the database's error as the cause.
    pub(crate) fn duplicate(self, entity: impl Into<String>, detail: impl Into<String>) -> StoreError {
        match self {
            StoreError::Duplicate { cause, .. } => StoreError::Duplicate {
                entity: entity.into(),
                detail: detail.into(),
                cause,
            },
            other => other,
        }
    }

    /// A broken reference refused in Keyway's words, keeping the database's error as the
    /// cause.
    pub(crate) fn unknown_reference(self, from: impl Into<String>, to: impl Into<String>) -> StoreError {
        match self {
            StoreError::ForeignKey { cause, .. } => StoreError::ForeignKey {
                from: from.into(),
                to: to.into(),
                cause,
            },
            other => other,
        }
    }

    fn cause(&self) -> Option<&Cause> {
        match self {
            StoreError::Duplicate { cause, .. }
            | StoreError::ForeignKey { cause, .. }
            | StoreError::Invalid { cause, .. }
            | StoreError::Unavailable { cause, .. }
            | StoreError::StorageFull { cause, .. }
            | StoreError::ReadOnly { cause, .. }
            | StoreError::Corrupt { cause, .. }
            | StoreError::Internal { cause, .. } => cause.as_ref(),
            StoreError::NotFound { .. } | StoreError::InUse { .. } | StoreError::Busy { .. } | StoreError::Closed => {
                None
            }
        }
    }
}

/// The error under a [`StoreError`]: the database driver's (or another library's) own,
/// kept for [`std::error::Error::source`] and the log, never shown to an API client.
///
/// Two causes are equal only when they are the same error, so comparing two
/// `StoreError`s compares what Keyway says and whether they share their origin.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cause {}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Duplicate { entity, detail, .. } => write!(f, "`{entity}` is a duplicate: {detail}"),
            StoreError::NotFound { entity } => write!(f, "`{entity}` does not exist"),
            StoreError::ForeignKey { from, to, .. } => write!(f, "`{from}` names unknown `{to}`"),
            StoreError::InUse { entity, used_by } => write!(f, "`{entity}` is still used by `{used_by}`"),
            StoreError::Invalid { message, .. } => write!(f, "invalid input: {message}"),
            StoreError::Unavailable { message, .. } => write!(f, "the database is unavailable: {message}"),
            StoreError::StorageFull { message, .. } => write!(f, "the database is full: {message}"),
            StoreError::ReadOnly { message, .. } => write!(f, "the database is read-only: {message}"),
            StoreError::Corrupt { message, .. } => write!(f, "the database is corrupt or not a database: {message}"),
            StoreError::Busy { queue } => write!(f, "the {queue} queue is full"),
            StoreError::Closed => write!(f, "the store is closed"),
            StoreError::Internal { message, .. } => write!(f, "internal store error: {message}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause().map(|c| &*c.0 as &(dyn std::error::Error + 'static))
    }
}

impl From<ModelError> for StoreError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::DuplicateId { entity } => StoreError::Duplicate {
                entity,
                detail: "the id is taken".to_owned(),
                cause: None,
            },
            ModelError::DuplicateSecret { existing, claimed_by } => StoreError::Duplicate {
                entity: claimed_by,
                detail: format!("the secret is held by `{existing}`"),
                cause: None,
            },
            ModelError::NotFound { entity } => StoreError::NotFound { entity },
            ModelError::UnknownReference { from, to } => StoreError::ForeignKey { from, to, cause: None },
            ModelError::InUse { entity, used_by } => StoreError::InUse { entity, used_by },
            e @ (ModelError::IdTooLarge { .. }
            | ModelError::CrossSite { .. }
            | ModelError::SiteChange { .. }
            | ModelError::MalformedSecret { .. }) => StoreError::invalid(e),
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

/// The kinds of database failure the store tells apart, before it words them.
enum DriverFailure {
    Duplicate,
    ForeignKey,
    Invalid,
    StorageFull,
    ReadOnly,
    Corrupt,
    Unavailable,
    Internal,
}

fn classify(e: &sqlx::Error) -> DriverFailure {
    let sqlx::Error::Database(db) = e else {
        return match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DriverFailure::Unavailable,
            _ => DriverFailure::Internal,
        };
    };
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => return DriverFailure::Duplicate,
        sqlx::error::ErrorKind::ForeignKeyViolation => return DriverFailure::ForeignKey,
        sqlx::error::ErrorKind::NotNullViolation | sqlx::error::ErrorKind::CheckViolation => {
            return DriverFailure::Invalid;
        }
        _ => {}
    }
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    // SQLite reports numeric extended codes, PostgreSQL five-character SQLSTATEs.
    if let Ok(extended) = code.parse::<i64>() {
        return match extended & 0xff {
            sqlite_code::FULL => DriverFailure::StorageFull,
            sqlite_code::READONLY => DriverFailure::ReadOnly,
            sqlite_code::CORRUPT | sqlite_code::NOTADB => DriverFailure::Corrupt,
            sqlite_code::BUSY | sqlite_code::LOCKED | sqlite_code::IOERR | sqlite_code::CANTOPEN => {
                DriverFailure::Unavailable
            }
            _ => DriverFailure::Internal,
        };
    }
    match code.as_str() {
        "53100" => DriverFailure::StorageFull,
        "25006" => DriverFailure::ReadOnly,
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => DriverFailure::Unavailable,
        _ => DriverFailure::Internal,
    }
}

/// The driver's error in Keyway's words. The driver's own text (which names tables,
/// constraints and values) stays in the cause, for the log; callers that know what they
/// were writing reword refusals further (e.g. [`StoreError::duplicate`]).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if matches!(e, sqlx::Error::RowNotFound) {
            return StoreError::NotFound {
                entity: "row".to_owned(),
            };
        }
        let failure = classify(&e);
        let cause = Some(Cause::new(e));
        let message = |text: &str| text.to_owned();
        match failure {
            DriverFailure::Duplicate => StoreError::Duplicate {
                entity: message("record"),
                detail: message("a stored record has the same unique value"),
                cause,
            },
            DriverFailure::ForeignKey => StoreError::ForeignKey {
                from: message("record"),
                to: message("referenced record"),
                cause,
            },
            DriverFailure::Invalid => StoreError::Invalid {
                message: message("a value breaks a rule of the stored schema"),
                cause,
            },
            DriverFailure::StorageFull => StoreError::StorageFull {
                message: message("no space left for the write"),
                cause,
            },
            DriverFailure::ReadOnly => StoreError::ReadOnly {
                message: message("the write was refused"),
                cause,
            },
            DriverFailure::Corrupt => StoreError::Corrupt {
                message: message("the database file cannot be read"),
                cause,
            },
            DriverFailure::Unavailable => StoreError::Unavailable {
                message: message("the database did not answer"),
                cause,
            },
            DriverFailure::Internal => StoreError::Internal {
                message: message("the database gave an unexpected answer"),
                cause,
            },
        }
    }
}
