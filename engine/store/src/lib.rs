//! Keyway's storage: the model, the change log and the entries log on SQLite (embedded,
//! the default) or PostgreSQL (several nodes on one database), through sqlx.
//!
//! - [`Store`] is one node: it opens the database chosen by URL, migrates it, builds the
//!   node's [`keyway_core::Snapshot`] from the tables, and keeps it current.
//! - [`Store::model`] is the decision model's facet: every mutation ([`Model::write`],
//!   [`Model::create`], [`Model::import_people`]) is one transaction with the entity
//!   rows, an audit row and a `change_log` row carrying the next revision; it returns once
//!   the node's snapshot holds that revision (read-your-writes). Reads of the records as
//!   stored, the revisions and the audit log are there too.
//! - A follower task applies other nodes' changes in revision order, woken by PostgreSQL
//!   `NOTIFY` and polling anyway; [`Store::status`] reports the applied revision and lag.
//! - [`Store::entries`] ([`EntriesLog`]) appends door entries in batches from a bounded
//!   queue and answers queries with cursor pagination, retention and CSV export.
//! - The admin API's own records, one facet per concern ([`Store::accounts`],
//!   [`Store::memberships`], [`Store::devices`], [`Store::policy_records`],
//!   [`Store::notifications`], [`Store::incidents`], [`Store::names`]) taking typed ids
//!   ([`AccountId`], ...), `jiff::Timestamp`s and the caller's `now`, each with typed
//!   errors and an audit row per change:
//!   accounts, sessions and password-reset tokens (`accounts`, `tokens`), API tokens,
//!   site memberships, ownership, invitations and vouchers (`memberships`), IQ
//!   activation PINs and firmware (`devices`), plugins, bundles, door-rule attachments
//!   and opening hours (`policy`), notification settings and the outbox
//!   (`notifications`), webhook endpoints and their deliveries (`webhooks`), instance operators and entity names (`operators`), incidents
//!   and the live tail of entries and incidents (`incidents`).
//! - [`Store::subscribe`]: the change feed, every applied revision in order (model
//!   changes, policy changes, reloads), replayable from the change log.
//! - [`StoreError::kind`] tells client errors (4xx) from faults.
//! - Times come from the caller (`now` parameters), except the three the store must read
//!   at the moment they describe, which come from the [`Clock`] it was opened with.
//!
//! See `ARCHITECTURE-store.md` beside this crate for the write path, the follower and
//! their invariants.

#[macro_use]
mod dispatch;

mod accounts;
mod auth_cache;
mod clock;
mod codec;
mod db;
mod devices;
mod enrolment;
pub mod enrolment_code;
mod entries;
mod error;
mod feed;
mod ids;
mod import;
mod incidents;
mod memberships;
mod notifications;
mod operators;
mod policy;
mod sql;
mod store;
mod target;
mod tokens;
mod webhooks;

pub use accounts::{Account, Accounts, MAX_PASSWORD_BYTES, check_password_strength};
pub use auth_cache::DEFAULT_AUTH_CACHE_TTL;
pub use clock::Clock;
pub use codec::{Logged, PolicyChange, RuleScope, decode as decode_change, encode as encode_change};
pub use db::default_url;
pub use devices::{Devices, FirmwareFile, IqActivation, IqDetails, MAX_FIRMWARE_BYTES, MAX_PIN_ATTEMPTS, PinCheck};
pub use enrolment::IqCertificate;
pub use entries::{
    Cursor, DEFAULT_RETENTION_DAYS, ENTRIES_CSV_HEADER, EntriesConfig, EntriesLog, EntriesStats, Entry, EntryPage,
    EntryQuery, Method, StoredEntry,
};
pub use error::{Cause, ErrorKind, StoreError};
pub use feed::{ChangeStream, DEFAULT_FEED_CAPACITY, FeedError, FeedItem, MAX_FEED_REPLAY};
pub use ids::{
    AccountId, AuditId, BundleId, DeliveryId, EntryId, FirmwareId, IncidentId, InvitationId, OutboxId, PluginId,
    SettingId, TokenId, VoucherId, WebhookId,
};
pub use import::{ImportPerson, ImportTag, Imported, MAX_EXTERNAL_ID, MAX_IMPORT_ROWS, check_external_id};
pub use incidents::{Incident, IncidentKind, IncidentQuery, Incidents, MAX_INCIDENT_DETAIL, NewIncident};
pub use memberships::{Invitation, MAX_VOUCHER_CODE, Membership, Memberships, Voucher};
pub use notifications::{CHANNELS, MAX_PAYLOAD_BYTES, NotificationSetting, Notifications, OutboxItem};
pub use operators::{MAX_NAME, Named, Names};
pub use policy::{
    ChainedRule, DoorRuleChain, MAX_MANIFEST_BYTES, MAX_PLUGIN_BYTES, MAX_RULE_CHAIN, MAX_RULE_CONFIG_BYTES,
    PolicyRecords, StoredBundle, StoredPlugin, check_rule_chain,
};
pub use store::{AuditRow, FollowUp, LoadTimings, Model, NodeStatus, PendingEvent, Store, StoreConfig, Written};
pub use target::Target;
pub use tokens::{ApiToken, IssuedSecret, MAX_TOKEN_NAME, MAX_TOKEN_SCOPES, TOKEN_USE_RESOLUTION};
pub use webhooks::{
    MAX_WEBHOOK_EVENTS, MAX_WEBHOOK_URL, MAX_WEBHOOKS_PER_SITE, PAUSE_AFTER_FAILURES, QueuedMail, Webhook,
    WebhookAttempt, WebhookDelivery, event_matches,
};
