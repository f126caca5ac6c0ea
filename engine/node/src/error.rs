//! `NodeError`: what the node's operations answer when they fail, with the store's and
//! the plugin host's errors kept as sources.

use keyway_plugin_host::BundleError;
use keyway_store::{FeedError, StoreError};

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A policy bundle did not load or validate.
    #[error("the bundle does not load: {0}")]
    Bundle(#[from] BundleError),
    /// The change feed could not be followed.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// A door rule named in an attachment is not in the bundle in force.
    #[error("rule `{rule}` is not in bundle `{bundle}`")]
    UnknownRule {
        /// The rule asked for.
        rule: String,
        /// The bundle in force.
        bundle: String,
    },
    /// A rule refused the configuration a door's chain gives it, or a chain broke the
    /// plugin host's limits.
    #[error(transparent)]
    Attach(#[from] keyway_plugin_host::AttachError),
    /// A rule of the bundle being activated refuses the configuration a door gave the
    /// version in force.
    #[error("bundle `{bundle}` cannot be activated: {reason}")]
    ConfigWouldBreak {
        /// The bundle being activated.
        bundle: String,
        /// The refusal, naming the rule and the door.
        reason: String,
    },
    /// Activating this bundle would leave attached rules without their plugin.
    #[error("bundle `{bundle}` lacks rule `{rule}`, attached to door {door}; detach it first")]
    RuleWouldDangle {
        /// The bundle being activated.
        bundle: String,
        /// The rule it lacks.
        rule: String,
        /// A door it is attached to.
        door: u32,
    },
    /// There is no bundle to run: none active in the store and none configured.
    #[error("no policy bundle: none is active in the store and no bundle directory was given")]
    NoBundle,
    /// The node did not reach a revision in time.
    #[error("this node has not reached revision `r{wanted}` yet (it is at `r{at}`)")]
    NotYet {
        /// The revision asked for.
        wanted: u64,
        /// The node's revision.
        at: u64,
    },
    /// The plugin runtime could not start.
    #[error("the plugin runtime does not start: {0}")]
    Runtime(String),
}
