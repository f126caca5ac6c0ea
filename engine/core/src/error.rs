//! The one error type of the core: why a set of records or a change was refused.
//!
//! Decisions never fail; a deny carries its reason instead. Only building a snapshot and
//! applying a change can be refused, and then the previous snapshot stays in force.

use crate::ids::Revision;
use std::fmt;

/// Why a snapshot could not be built or a change could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// Two records of the same kind share an id.
    DuplicateId {
        /// The entity, e.g. `door:7`.
        entity: String,
    },
    /// An id past [`crate::MAX_ID`]: only `u32::MAX` itself, which is reserved.
    IdTooLarge {
        /// The entity, e.g. `person:4000000000`.
        entity: String,
    },
    /// A record names something that does not exist.
    UnknownReference {
        /// The record, e.g. `door:7`.
        from: String,
        /// What it names, e.g. `site:3`.
        to: String,
    },
    /// A change names something that does not exist.
    NotFound {
        /// The entity, e.g. `credential:9`.
        entity: String,
    },
    /// A record names something on another site.
    CrossSite {
        /// The record.
        from: String,
        /// What it names.
        to: String,
    },
    /// A record would move an entity to another site.
    SiteChange { entity: String },
    /// A credential's secret does not fit its kind.
    MalformedSecret {
        /// The credential.
        entity: String,
        /// What the kind accepts.
        expected: &'static str,
    },
    /// Two live credentials of one site and kind share a secret.
    DuplicateSecret {
        /// The credential already holding the secret.
        existing: String,
        /// The credential that also claims it.
        claimed_by: String,
    },
    /// Removing something still referenced.
    InUse {
        /// What was to be removed.
        entity: String,
        /// Who still uses it.
        used_by: String,
    },
    /// A change carried a revision that is not newer than the snapshot's.
    StaleRevision {
        /// The snapshot's revision.
        current: Revision,
        /// The change's revision.
        given: Revision,
    },
    /// The FST index could not be built.
    Index {
        /// The index library's message.
        message: String,
    },
}

impl ModelError {
    /// A stable snake_case code, for wire formats and for mapping an error to an answer
    /// without parsing its text (as [`crate::Reason::code`] does for decisions).
    ///
    /// `duplicate_id`, `duplicate_secret` and `in_use` are conflicts with the current
    /// state; `not_found` and `unknown_reference` name something missing; `id_too_large`,
    /// `cross_site`, `site_change` and `malformed_secret` are invalid input;
    /// `stale_revision` and `index` are faults of the caller's or the core's machinery,
    /// not of the request.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            ModelError::DuplicateId { .. } => "duplicate_id",
            ModelError::IdTooLarge { .. } => "id_too_large",
            ModelError::UnknownReference { .. } => "unknown_reference",
            ModelError::NotFound { .. } => "not_found",
            ModelError::CrossSite { .. } => "cross_site",
            ModelError::SiteChange { .. } => "site_change",
            ModelError::MalformedSecret { .. } => "malformed_secret",
            ModelError::DuplicateSecret { .. } => "duplicate_secret",
            ModelError::InUse { .. } => "in_use",
            ModelError::StaleRevision { .. } => "stale_revision",
            ModelError::Index { .. } => "index",
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::DuplicateId { entity } => write!(f, "`{entity}` appears twice"),
            ModelError::IdTooLarge { entity } => {
                write!(
                    f,
                    "the id of `{entity}` is past the largest accepted ({})",
                    crate::snapshot::MAX_ID
                )
            }
            ModelError::UnknownReference { from, to } => write!(f, "`{from}` names unknown `{to}`"),
            ModelError::NotFound { entity } => write!(f, "`{entity}` does not exist"),
            ModelError::CrossSite { from, to } => write!(f, "`{from}` names `{to}` of another site"),
            ModelError::SiteChange { entity } => write!(f, "`{entity}` cannot move to another site"),
            ModelError::MalformedSecret { entity, expected } => {
                write!(f, "the secret of `{entity}` is malformed: expected {expected}")
            }
            ModelError::DuplicateSecret { existing, claimed_by } => {
                write!(f, "`{claimed_by}` has the same secret as `{existing}`")
            }
            ModelError::InUse { entity, used_by } => write!(f, "`{entity}` is still used by `{used_by}`"),
            ModelError::StaleRevision { current, given } => {
                write!(f, "revision `{given}` is not newer than the snapshot's `{current}`")
            }
            ModelError::Index { message } => write!(f, "the credential index could not be built: {message}"),
        }
    }
}

impl std::error::Error for ModelError {}
