//! What the link needs from the node: the [`LinkBackend`] trait and its types.
//!
//! The link never touches the store, the snapshot or the plugin host itself. Everything
//! a session needs (authenticating an IQ, deciding, storing entries, the pushes of the
//! change feed, offline lists, PIN checks, firmware, and the reports of what IQs did) goes
//! through this one trait, which the node implements. It names only `keyway-core` types
//! and the link's own wire types, so the link builds and is tested without the node.
//!
//! Every method is called from a session task; none may block the thread. A method that
//! cannot serve a request now returns [`BackendError::Unavailable`], which the IQ sees as
//! `ERROR unavailable` (retry later), never a closed session.

use crate::message::{
    CommandStatus, DoorCommand, FirmwareAvailable, Incident, OfflineDelta, OfflineEntry, OfflineSchedule, Passage,
    PinVerdict, RevocationItem,
};
use jiff::Timestamp;
use keyway_core::{CredentialId, CredentialKind, DoorId, Effect, IqId, PersonId, Revision, SiteId};
use keyway_node::Direction;
use std::borrow::Cow;
use std::future::Future;
use thiserror::Error;
use tokio::sync::mpsc;

/// Why the backend did not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BackendError {
    /// Refused for good: an unknown IQ, a revoked or superseded certificate, an unknown,
    /// used or expired enrolment code.
    #[error("refused")]
    Refused,
    /// The thing asked for does not exist (an unknown firmware version).
    #[error("not found")]
    NotFound,
    /// Cannot be served now; the IQ may retry. The text is for logs, never for the IQ.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The identity an IQ's client certificate carries (PROTOCOL.md 2.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    /// The site named in the certificate, whose CA signed it.
    pub site: SiteId,
    /// The IQ named in the certificate.
    pub iq: IqId,
    /// The certificate's serial number, lowercase hex: the backend accepts only the
    /// serial it recorded through [`LinkBackend::certificate_issued`] last.
    pub serial: String,
}

/// An authenticated IQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IqProfile {
    pub site: SiteId,
    /// Its id.
    pub iq: IqId,
    /// The doors paired with it: the only doors it may ask about or act on.
    pub doors: Vec<DoorId>,
}

/// What a valid enrolment code was issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrolmentGrant {
    pub site: SiteId,
    /// The IQ registered with the code.
    pub iq: IqId,
}

/// One decision request of a batch. Its `Debug` hides the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecisionRequest<'a> {
    /// The door (one of the IQ's; the link checked).
    pub door: DoorId,
    /// The kind the reader reported; `None` for a kind this version does not know, to be
    /// decided as an unknown credential.
    pub kind: Option<CredentialKind>,
    /// The bytes read. Never to be logged.
    pub secret: &'a [u8],
    /// When it was read.
    pub at: Timestamp,
    /// Which way the reader faces (`Unknown` from a version 1 IQ).
    pub direction: Direction,
}

impl std::fmt::Debug for DecisionRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionRequest")
            .field("door", &self.door)
            .field("kind", &self.kind)
            .field("at", &self.at)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionOutcome {
    /// Open or not.
    pub effect: Effect,
    /// The reason code: `keyway_core::Reason::code()`, or `rule:<name>` for a door rule.
    pub reason: Cow<'static, str>,
}

/// The answers to a batch, all on one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionBatch {
    /// The revision every answer was taken on.
    pub revision: Revision,
    /// One per request, in order.
    pub outcomes: Vec<DecisionOutcome>,
}

/// An entry the IQ made alone and uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedEntry {
    /// The IQ's sequence number: (iq, seq) is unique; storing it twice stores it once.
    pub seq: u64,
    /// The door (one of the IQ's; the link checked).
    pub door: DoorId,
    /// When it happened, by the IQ's clock.
    pub at: Timestamp,
    /// Open or not.
    pub effect: Effect,
    /// The IQ's reason code.
    pub reason: String,
    /// The kind read, if known.
    pub kind: Option<CredentialKind>,
    /// The credential of the offline list it matched, if any.
    pub credential: Option<CredentialId>,
}

/// Something the node pushes to one IQ, in the order of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushEvent {
    /// Credentials the IQ may hold no longer open doors. Sent at once, before any delta of
    /// the same or a later revision.
    Revocation {
        /// The revision of the change.
        revision: Revision,
        /// What is revoked.
        items: Vec<RevocationItem>,
    },
    /// Changes to the IQ's offline list (state, not steps; see PROTOCOL.md).
    OfflineDelta(OfflineDelta),
    /// The IQ must fetch a full list (it was away too long, or the subscriber lagged).
    Resync {
        /// The node's revision.
        revision: Revision,
    },
    /// The set of doors paired with the IQ changed.
    Doors(Vec<DoorId>),
    /// An admin's door command; the outcome comes back as [`Report::DoorCommandAcked`].
    DoorCommand(DoorCommand),
    /// A firmware image the IQ should install.
    FirmwareAvailable(FirmwareAvailable),
    /// The IQ's certificate was revoked (IQ removed or reset): every session of the IQ is
    /// closed at once with `ERROR revoked`.
    Revoked,
}

/// A subscription to the pushes of one IQ.
#[derive(Debug)]
pub struct Subscription {
    /// The node's revision when the subscription started.
    pub revision: Revision,
    /// Whether the IQ's list (at the `since` revision given) cannot be brought up to date
    /// by deltas and a full list must be fetched.
    pub resync: bool,
    /// The pushes, from `since` on. Bounded: when it is full the backend sends
    /// [`PushEvent::Resync`] once there is room again rather than blocking the feed.
    /// Closing it closes the session (`ERROR unavailable`; the IQ reconnects).
    pub events: mpsc::Receiver<PushEvent>,
}

/// A full offline list (PROTOCOL.md 6.4), in its documented order: offline-access
/// credentials first, then the others, each by credential id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineList {
    /// The revision it was built on.
    pub revision: Revision,
    /// The site's IANA time zone.
    pub time_zone: String,
    /// The schedules its grants name.
    pub schedules: Vec<OfflineSchedule>,
    /// The site's holidays, as `yyyymmdd`.
    pub holidays: Vec<u32>,
    /// The entries. The link enforces the caps (10,000 tags, 10,000 remote users) by
    /// dropping what is past them, in this order, and logs how many.
    pub entries: Vec<OfflineEntry>,
}

/// A slice of a firmware image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareSlice {
    /// The whole image's size.
    pub size: u64,
    /// The whole image's SHA-256.
    pub sha256: [u8; 32],
    /// The bytes from the offset asked for (at most the length asked for; empty past the
    /// end).
    pub data: Vec<u8>,
}

/// Why an IQ counts as offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineCause {
    /// Its last control session ended.
    Disconnected,
    /// It missed 3 heartbeats.
    MissedHeartbeats,
}

/// A security event: an IQ (or someone claiming to be one) did something it may not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    /// It named a door that is not its own.
    ForeignDoor {
        door: DoorId,
        /// The message that named it.
        message: &'static str,
    },
    /// It presented a certificate the backend refused (revoked or superseded).
    RevokedCertificate,
}

/// What an IQ did, reported to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A control session started.
    Online {
        /// The firmware version from its `HELLO`.
        firmware: String,
    },
    /// A heartbeat arrived (every `heartbeat` interval per connected IQ: keep its
    /// handling in memory, it is 5,000 a second for 10,000 IQs at the default 2 s).
    Heartbeat {
        /// The revision of the list it holds.
        offline_revision: Revision,
    },
    /// It is offline.
    Offline(OfflineCause),
    /// It acknowledged a push of this revision (0 for pushes without one).
    PushAcked(Revision),
    /// It installed a full offline list of this revision.
    OfflineListInstalled(Revision),
    /// It answered a door command.
    DoorCommandAcked {
        /// The command.
        command_id: u64,
        /// The outcome.
        status: CommandStatus,
    },
    /// It reported an incident; the IQ gets `INCIDENT_ACK` once this returns `Ok`.
    Incident(Incident),
    /// It reported a passage at one of its doors; the IQ gets `PASSAGE_ACK` once this
    /// returns `Ok`.
    Passage(Passage),
    /// It runs this firmware version now.
    FirmwareInstalled(String),
    /// A security event.
    Security(SecurityEvent),
}

/// Everything a link session needs from the node.
///
/// The futures must be `Send`; implementations may simply write `async fn`.
pub trait LinkBackend: Send + Sync + 'static {
    /// Authenticates an IQ by the identity of its certificate: `Ok` with its site and
    /// doors if the certificate (by serial) is still its current one and the IQ exists;
    /// [`BackendError::Refused`] otherwise.
    fn authenticate(&self, identity: &CertIdentity) -> impl Future<Output = Result<IqProfile, BackendError>> + Send;

    /// Checks and consumes a one-time enrolment code (issued by the API, stored hashed;
    /// see [`crate::enrol::hash_code`]). An unknown, used or expired code is
    /// [`BackendError::Refused`]. The code is a secret: never log it.
    fn redeem_enrolment_code(&self, code: &str) -> impl Future<Output = Result<EnrolmentGrant, BackendError>> + Send;

    /// Records the certificate just issued to `iq`: from now on only this serial
    /// authenticates, and any earlier certificate of the IQ is refused.
    fn certificate_issued(
        &self,
        iq: IqId,
        serial: &str,
        not_after: Timestamp,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Decides a batch of requests on one revision (the node's pipeline: core decision,
    /// door rules, entry logged with the IQ's identity).
    fn decide(
        &self,
        iq: IqId,
        requests: &[DecisionRequest<'_>],
    ) -> impl Future<Output = Result<DecisionBatch, BackendError>> + Send;

    /// Stores entries uploaded by an IQ, idempotently by (iq, seq). Returns once they are
    /// durable; the IQ is acknowledged only then.
    fn record_entries(
        &self,
        iq: IqId,
        entries: &[UploadedEntry],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Subscribes to the pushes for `iq` from revision `since` (the revision of the list
    /// the IQ holds, 0 for none).
    fn subscribe(&self, iq: IqId, since: Revision) -> impl Future<Output = Result<Subscription, BackendError>> + Send;

    /// Builds the IQ's full offline list.
    fn offline_list(&self, iq: IqId) -> impl Future<Output = Result<OfflineList, BackendError>> + Send;

    /// Checks a person's PIN against the activation kept for them on this IQ. The PIN is
    /// a secret: never log it.
    fn check_pin(
        &self,
        iq: IqId,
        person: PersonId,
        pin: &[u8],
    ) -> impl Future<Output = Result<PinVerdict, BackendError>> + Send;

    /// A slice of a firmware image: at most `max_len` bytes from `offset`.
    /// [`BackendError::NotFound`] for an unknown version.
    fn firmware_chunk(
        &self,
        iq: IqId,
        version: &str,
        offset: u64,
        max_len: u32,
    ) -> impl Future<Output = Result<FirmwareSlice, BackendError>> + Send;

    /// Reports what an IQ did or became (online, offline, acks, incidents, security
    /// events).
    fn report(&self, iq: IqId, report: Report) -> impl Future<Output = Result<(), BackendError>> + Send;
}
