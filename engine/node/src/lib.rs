//! Keyway's node: one process's store, plugin host and published snapshot, tied into the
//! three things every front end needs, so the HTTP API and the IQ link never assemble
//! them on their own.
//!
//! - **The decision pipeline** ([`Node::decide`], [`Node::decide_batch`]): the core's
//!   `decide` on one loaded snapshot, then the door's rule plugin (fail-secure or
//!   fail-safe), then the entry queued in the entries log with its reason code, revision
//!   and, when a rule took part, the rule's name and sha256.
//! - **The change feed** ([`Node::subscribe`]): every revision this node applies, written
//!   here or by another node, in order and without gaps, resumable from any revision
//!   still in the change log, telling a subscriber that fell too far behind.
//! - **The policy state** ([`policy`]): the bundle in force, door-rule attachments and
//!   opening hours. They are written through the change log like the model, and one task
//!   per node applies them to the plugin host in revision order, so every node of a
//!   PostgreSQL cluster decides the same request the same way after a policy change.
//!
//! - **Door rules' states** (`rule_state`): what a rule keeps per person, door or site,
//!   for an admin to inspect and reset.
//!
//! `engine/api` and `engine/link` depend on this crate and never on each other; what the
//! API needs from the link (door commands, IQ state) goes through the [`DoorCommands`]
//! interface defined here.

mod commands;
mod decide;
mod doors;
mod error;
mod metrics;
mod node;
pub mod policy;
mod rule_state;

pub use commands::{
    BoxFuture, CommandOutcome, DoorCommand, DoorCommands, FirmwareOffer, IqState, NoLink, OfflineListSize,
};
pub use decide::{DecisionRequest, NodeDecision, Source};
pub use doors::{PassageReport, REMOTE_OPEN, REMOTE_OPEN_NOT_DELIVERED, RemoteOpening};
pub use error::NodeError;
pub use metrics::{DecisionMetrics, REASON_CODES};
pub use node::{Node, NodeConfig, SYSTEM_ACTOR};

pub use keyway_plugin_host::Direction;
