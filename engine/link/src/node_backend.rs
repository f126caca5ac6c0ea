//! [`NodeBackend`]: the [`LinkBackend`] a Keyway node serves IQs with, and
//! [`LinkCommands`], the node's [`DoorCommands`] carried over the link.
//!
//! - Authentication: the IQ must exist, belong to the certificate's site, and present
//!   the serial the store recorded for it last; its doors are the doors paired with it.
//! - Enrolment codes and certificate serials live in the store (`iq_enrolment_codes`,
//!   `iq_certificates`); codes are compared by [`crate::enrol::hash_code`].
//! - Decisions go through the node's pipeline ([`Node::decide_batch`]) with
//!   [`Source::Iq`]. Online decisions are logged under sequence numbers at and above
//!   [`ONLINE_SEQ_BASE`], so they never collide with the IQ's own numbers for the
//!   entries it uploads (which must stay below it).
//! - Uploaded entries keep their original time, are stored once per (iq, seq), and are
//!   acknowledged only once durable.
//! - Pushes come from the node's change feed through one hub per site ([`crate::hub`]):
//!   it keeps a view of the site (doors, groups, credentials, people's blocks) and turns
//!   each change into a revocation (sent first) and an offline-list delta of the same
//!   revision for every connected IQ of the site, or `RESYNC` for an IQ over its caps.
//! - Online state, last contact and firmware are kept in memory for
//!   [`DoorCommands::state`]; heartbeats touch memory only; incidents are stored through
//!   `Node::raise_incident` (notified once per IQ and incident number).
//!
//! - A reconnecting IQ is brought up to date by replay when the change log allows it
//!   ([`crate::site_view::Missed`]), else asked for a full list. Full lists of a site at
//!   one revision share one view ([`crate::site_view::ListViews`]).

use crate::backend::{
    BackendError, CertIdentity, DecisionBatch, DecisionOutcome, DecisionRequest, EnrolmentGrant, FirmwareSlice,
    IqProfile, LinkBackend, OfflineCause, OfflineList, PushEvent, Report, Subscription, UploadedEntry,
};
use crate::hub::{self, Hubs};
use crate::message::{
    CommandStatus, DoorCommand as WireDoorCommand, DoorCommandKind, FirmwareAvailable, IncidentKind, PinVerdict,
};
use crate::site_view::ListViews;
use jiff::Timestamp;
use keyway_core::{CredentialKind, DoorId, IqId, PersonId, Presented, Revision};
use keyway_node::{
    CommandOutcome, DecisionRequest as NodeRequest, DoorCommand, DoorCommands, FirmwareOffer, IqState, Node,
    OfflineListSize, PassageReport, Source,
};
use keyway_store::{Entry, IncidentKind as StoredIncidentKind, IqDetails, Method, NewIncident, PinCheck, StoreError};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Online decisions are logged under sequence numbers from here up (2^62), so they never
/// collide with the sequence numbers IQs give the entries they upload.
pub const ONLINE_SEQ_BASE: u64 = 1 << 62;

/// The actor the link writes in the audit log.
pub const LINK_ACTOR: &str = "link";

/// How a [`NodeBackend`] behaves.
#[derive(Clone, Debug)]
pub struct NodeBackendConfig {
    /// Pushes queued per subscription before it is told to resynchronise.
    pub push_queue: usize,
    /// How long a door command waits for the IQ's acknowledgement.
    pub command_timeout: Duration,
}

impl Default for NodeBackendConfig {
    fn default() -> Self {
        NodeBackendConfig {
            push_queue: 256,
            command_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default)]
struct Live {
    state: IqState,
    /// Its sessions' push queues. Weak: the site's hub holds the strong senders, so a
    /// session's queue closes (and the session with it) when its hub lets it go.
    sessions: Vec<mpsc::WeakSender<PushEvent>>,
    /// Entries of the last full list that did not fit (tags, remote users).
    dropped: (u32, u32),
    /// The numbers of its latest passages, so one sent again (its ack was lost) counts
    /// once on this node.
    passages: VecDeque<u64>,
    /// The serial of the certificate its sessions here authenticated with (lowercase).
    serial: Option<String>,
}

/// Passage numbers remembered per IQ.
const RECENT_PASSAGES: usize = 1024;

#[derive(Debug)]
struct Shared {
    iqs: Mutex<HashMap<IqId, Live>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<CommandStatus>>>,
    next_command: AtomicU64,
    next_seq: AtomicU64,
    config: NodeBackendConfig,
    hubs: Arc<Hubs>,
    views: ListViews,
}

impl Shared {
    fn with_iq<T>(&self, iq: IqId, f: impl FnOnce(&mut Live) -> T) -> T {
        let mut iqs = self.iqs.lock().unwrap_or_else(PoisonError::into_inner);
        f(iqs.entry(iq).or_default())
    }

    /// Tells every session of `iq` that its certificate is revoked (each closes at once);
    /// how many there were.
    fn close_sessions(&self, iq: IqId) -> usize {
        let sessions = self.with_iq(iq, |live| {
            live.state.online = false;
            std::mem::take(&mut live.sessions)
        });
        let mut closed = 0;
        for s in sessions.iter().filter_map(mpsc::WeakSender::upgrade) {
            if s.try_send(PushEvent::Revoked).is_ok() {
                closed += 1;
            }
        }
        closed
    }

    /// Pushes `FIRMWARE_AVAILABLE` to a session of `iq`; whether one took it.
    fn offer_firmware(&self, iq: IqId, offer: &FirmwareOffer) -> bool {
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(&offer.sha256, &mut sha256).is_err() {
            tracing::warn!(%iq, "a firmware offer with a malformed sha256 was not sent");
            return false;
        }
        let push = PushEvent::FirmwareAvailable(FirmwareAvailable {
            version: offer.version.clone(),
            size: offer.size,
            sha256,
            download_token: offer.download_token.clone(),
        });
        self.session(iq).is_some_and(|s| s.try_send(push).is_ok())
    }

    /// A sender to one live session of `iq`, if any.
    fn session(&self, iq: IqId) -> Option<mpsc::Sender<PushEvent>> {
        self.with_iq(iq, |live| {
            live.sessions.retain(|s| s.strong_count() > 0);
            live.sessions.iter().find_map(mpsc::WeakSender::upgrade)
        })
    }
}

/// The node's side of the IQ link.
#[derive(Clone, Debug)]
pub struct NodeBackend {
    node: Node,
    shared: Arc<Shared>,
}

/// The node's [`DoorCommands`] over the link: install it with
/// [`Node::set_door_commands`]. It holds no reference to the node.
#[derive(Clone, Debug)]
pub struct LinkCommands {
    shared: Arc<Shared>,
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

fn now_micros() -> u64 {
    u64::try_from(Timestamp::now().as_microsecond()).unwrap_or(0)
}

impl NodeBackend {
    /// A backend serving IQs from `node`.
    #[must_use]
    pub fn new(node: Node, config: NodeBackendConfig) -> NodeBackend {
        NodeBackend {
            node,
            shared: Arc::new(Shared {
                iqs: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_command: AtomicU64::new(1),
                next_seq: AtomicU64::new(0),
                config,
                hubs: Arc::new(Hubs::default()),
                views: ListViews::default(),
            }),
        }
    }

    /// The door commands to install with [`Node::set_door_commands`].
    #[must_use]
    pub fn door_commands(&self) -> Arc<dyn DoorCommands> {
        Arc::new(LinkCommands {
            shared: Arc::clone(&self.shared),
        })
    }

    /// How many sites this node runs a push hub for: one per site with connected IQs,
    /// however many IQs it has.
    #[must_use]
    pub fn push_hubs(&self) -> usize {
        self.shared.hubs.running()
    }

    /// How many tags and remote users did not fit in `iq`'s last full list.
    #[must_use]
    pub fn offline_overflow(&self, iq: IqId) -> (u32, u32) {
        self.shared.with_iq(iq, |live| live.dropped)
    }

    /// Revokes `iq`'s certificate in the store and closes its sessions: call it when an
    /// IQ is removed or reset. The caller should also call
    /// [`crate::LinkServer::close_sessions`] on the server holding the sessions.
    ///
    /// # Errors
    /// If the store fails.
    pub async fn revoke(&self, actor: &str, iq: IqId) -> Result<(), BackendError> {
        self.node
            .store()
            .devices()
            .revoke_certificate(actor, iq, Timestamp::now())
            .await
            .map_err(unavailable)?;
        self.shared.close_sessions(iq);
        Ok(())
    }

    /// Records an IQ-offline incident for `iq` (which queues its notifications). An IQ
    /// this node no longer knows (removed) raises none.
    async fn raise_offline_incident(&self, iq: IqId) {
        let Some(site) = self.node.iq_site(iq) else {
            return;
        };
        let incident = NewIncident {
            site,
            kind: StoredIncidentKind::IqOffline,
            door: None,
            iq: Some(iq),
            iq_seq: None,
            at: Timestamp::now(),
            detail: "missed 3 heartbeats".to_owned(),
        };
        if let Err(e) = self.node.raise_incident(LINK_ACTOR, incident).await {
            tracing::warn!(%iq, error = %e, "cannot record an iq-offline incident");
        }
    }

    /// Offers `iq` the firmware assigned to it (`PUT /v1/sites/{site}/iqs/{iq}/firmware`)
    /// when it runs another version. A store failure only delays the offer to the next
    /// connection.
    async fn offer_assigned_firmware(&self, iq: IqId, running: &str) {
        let store = self.node.store();
        let file = match store.devices().iq(iq).await {
            Ok(Some(IqDetails { firmware: Some(id), .. })) => store.devices().firmware(id).await,
            Ok(_) => return,
            Err(e) => Err(e),
        };
        match file {
            Ok(Some(file)) if file.version != running => {
                let offer = self.node.firmware_offer(iq, file).await;
                if !self.shared.offer_firmware(iq, &offer) {
                    tracing::debug!(%iq, "no session took the firmware offer");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%iq, error = %e, "cannot read the iq's assigned firmware"),
        }
    }

    /// A sequence number for an online decision: increasing, at or above
    /// [`ONLINE_SEQ_BASE`], from the clock so a restarted node does not reuse one.
    fn online_seq(&self) -> u64 {
        let now = now_micros() & (ONLINE_SEQ_BASE - 1);
        let mut prev = self.shared.next_seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev.saturating_add(1));
            match self
                .shared
                .next_seq
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return ONLINE_SEQ_BASE | next,
                Err(p) => prev = p,
            }
        }
    }
}

impl DoorCommands for LinkCommands {
    fn send(&self, iq: IqId, door: DoorId, command: DoorCommand) -> BoxFuture<'_, CommandOutcome> {
        Box::pin(async move {
            let not = |reason: &str| CommandOutcome::NotDelivered {
                reason: reason.to_owned(),
            };
            let Some(session) = self.shared.session(iq) else {
                return not("the iq is not connected");
            };
            let command_id = self.shared.next_command.fetch_add(1, Ordering::Relaxed);
            let kind = match command {
                DoorCommand::RemoteOpen => DoorCommandKind::RemoteOpen,
                // The IQ re-reads the door's state from a fresh list.
                DoorCommand::Refresh => {
                    let revision = Revision(0);
                    return match session.try_send(PushEvent::Resync { revision }) {
                        Ok(()) => CommandOutcome::Delivered,
                        Err(_) => not("the iq's session is not reading"),
                    };
                }
            };
            let (tx, rx) = oneshot::channel();
            self.shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(command_id, tx);
            let wire = WireDoorCommand {
                command_id,
                door: door.get(),
                command: kind,
                duration_s: 5,
            };
            let outcome = if session.try_send(PushEvent::DoorCommand(wire)).is_err() {
                not("the iq's session is not reading")
            } else {
                match tokio::time::timeout(self.shared.config.command_timeout, rx).await {
                    Ok(Ok(CommandStatus::Done)) => CommandOutcome::Delivered,
                    Ok(Ok(status)) => CommandOutcome::NotDelivered {
                        reason: format!("the iq answered {status:?}").to_lowercase(),
                    },
                    Ok(Err(_)) => not("the iq's session ended"),
                    Err(_) => not("the iq did not acknowledge in time"),
                }
            };
            self.shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&command_id);
            outcome
        })
    }

    fn state(&self, iq: IqId) -> IqState {
        self.shared.with_iq(iq, |live| live.state.clone())
    }

    fn close_sessions(&self, iq: IqId) -> usize {
        self.shared.close_sessions(iq)
    }

    fn offer_firmware(&self, iq: IqId, offer: &FirmwareOffer) -> bool {
        self.shared.offer_firmware(iq, offer)
    }
}

/// The reason code sent to an IQ (PROTOCOL.md, `DECISIONS`): the core's code, or
/// `rule:<name>` when a door rule turned the answer into a deny.
fn wire_reason(decision: &keyway_node::NodeDecision) -> Cow<'static, str> {
    match decision.ruled.denying_rule() {
        Some(rule) => Cow::Owned(format!("rule:{rule}")),
        None => Cow::Borrowed(decision.reason_code()),
    }
}

fn kind_method(kind: Option<CredentialKind>) -> Method {
    match kind {
        Some(CredentialKind::DigitalKey) => Method::DigitalKey,
        Some(CredentialKind::Pin) => Method::Pin,
        Some(CredentialKind::Tag) | None => Method::Tag,
    }
}

fn pin_verdict(check: PinCheck) -> PinVerdict {
    match check {
        PinCheck::Accepted => PinVerdict::Correct,
        PinCheck::Wrong { .. } => PinVerdict::Wrong,
        PinCheck::Blocked => PinVerdict::Locked,
        PinCheck::NotSet => PinVerdict::NotActivated,
    }
}

fn store_err(e: StoreError) -> BackendError {
    unavailable(e)
}

fn view_revision(node: &Node) -> Revision {
    node.snapshot().load().revision()
}

impl LinkBackend for NodeBackend {
    async fn authenticate(&self, identity: &CertIdentity) -> Result<IqProfile, BackendError> {
        let store = self.node.store();
        let Some((site, doors)) = store.devices().profile(identity.iq).await.map_err(store_err)? else {
            return Err(BackendError::Refused);
        };
        if site != identity.site {
            return Err(BackendError::Refused);
        }
        let serial = identity.serial.to_ascii_lowercase();
        let cert = store.devices().certificate(identity.iq).await.map_err(store_err)?;
        if cert.is_none_or(|c| c.serial != serial) {
            return Err(BackendError::Refused);
        }
        self.shared.with_iq(identity.iq, |live| live.serial = Some(serial));
        Ok(IqProfile {
            site,
            iq: identity.iq,
            doors,
        })
    }

    async fn redeem_enrolment_code(&self, code: &str) -> Result<EnrolmentGrant, BackendError> {
        let hash = crate::enrol::hash_code(code);
        match self
            .node
            .store()
            .devices()
            .redeem_enrolment_code(&hash, Timestamp::now())
            .await
            .map_err(store_err)?
        {
            Some((site, iq)) => Ok(EnrolmentGrant { site, iq }),
            None => Err(BackendError::Refused),
        }
    }

    async fn certificate_issued(&self, iq: IqId, serial: &str, not_after: Timestamp) -> Result<(), BackendError> {
        self.node
            .store()
            .devices()
            .record_certificate(
                LINK_ACTOR,
                iq,
                &serial.to_ascii_lowercase(),
                not_after,
                Timestamp::now(),
            )
            .await
            .map_err(store_err)
    }

    async fn decide(&self, iq: IqId, requests: &[DecisionRequest<'_>]) -> Result<DecisionBatch, BackendError> {
        // A kind this version does not know is decided as an unknown tag with no bytes.
        let node_requests: Vec<NodeRequest<'_>> = requests
            .iter()
            .map(|r| NodeRequest {
                door: r.door,
                presented: match r.kind {
                    Some(kind) => Presented { kind, secret: r.secret },
                    None => Presented {
                        kind: CredentialKind::Tag,
                        secret: &[],
                    },
                },
                at: r.at,
                direction: r.direction,
                source: Source::Iq {
                    iq,
                    sequence: self.online_seq(),
                },
            })
            .collect();
        let decisions = self.node.decide_batch(&node_requests).await;
        let revision = decisions
            .first()
            .map_or_else(|| view_revision(&self.node), |d| d.revision);
        Ok(DecisionBatch {
            revision,
            outcomes: decisions
                .iter()
                .map(|d| DecisionOutcome {
                    effect: d.effect(),
                    reason: wire_reason(d),
                })
                .collect(),
        })
    }

    /// Queues the frame's entries and returns once all are committed: one flush for the
    /// frame, so an upload of many entries costs one transaction, not one each.
    async fn record_entries(&self, iq: IqId, entries: &[UploadedEntry]) -> Result<(), BackendError> {
        let snapshot = self.node.snapshot().load_full();
        let log = self.node.store().entries();
        for e in entries {
            if e.seq >= ONLINE_SEQ_BASE {
                tracing::warn!(%iq, seq = e.seq, "uploaded entry with a sequence number in the online range ignored");
                continue;
            }
            let Some(site) = snapshot.door_site(e.door) else {
                tracing::warn!(%iq, door = %e.door, "uploaded entry for an unknown door ignored");
                continue;
            };
            let entry = Entry {
                site,
                at: e.at,
                door: e.door,
                person: None,
                credential: e.credential,
                method: kind_method(e.kind),
                allowed: e.effect == keyway_core::Effect::Allow,
                reason: Cow::Owned(e.reason.clone()),
                revision: Revision(0),
                iq: Some((iq, e.seq)),
                rule: None,
            };
            log.append(entry).await.map_err(store_err)?;
        }
        log.flush().await.map_err(store_err)
    }

    async fn subscribe(&self, iq: IqId, since: Revision) -> Result<Subscription, BackendError> {
        if since.0 > view_revision(&self.node).0 {
            // The IQ holds a list from a node ahead of this one: wait briefly for it.
            let _ = self.node.reach(since, Duration::from_secs(2)).await;
        }
        let snapshot = self.node.snapshot().load_full();
        let scanned_to = snapshot.revision();
        let site = snapshot.iq_record(iq).ok_or(BackendError::Refused)?.site;
        drop(snapshot);
        let missed = hub::missed_since(&self.node, site, iq, since, scanned_to).await;
        let (tx, rx) = mpsc::channel(self.shared.config.push_queue.max(8));
        let serial = self.shared.with_iq(iq, |live| live.serial.clone());
        let join = hub::Join {
            iq,
            serial,
            since,
            missed,
            scanned_to,
            tx: tx.clone(),
        };
        let joined = self.shared.hubs.join(&self.node, site, join).await?;
        self.shared.with_iq(iq, |live| live.sessions.push(tx.downgrade()));
        Ok(Subscription {
            revision: joined.revision,
            resync: joined.resync,
            events: rx,
        })
    }

    async fn offline_list(&self, iq: IqId) -> Result<OfflineList, BackendError> {
        let view = self.shared.views.of(&self.node, iq).await?;
        let (list, dropped) = tokio::task::spawn_blocking(move || view.full_list(iq))
            .await
            .map_err(unavailable)?;
        let revision = list.revision;
        if dropped != (0, 0) {
            tracing::warn!(%iq, tags = dropped.0, remote_users = dropped.1, "offline list over the iq's limits: entries left out");
        }
        let size = OfflineListSize {
            revision: revision.0,
            tags: list
                .entries
                .iter()
                .filter(|e| e.kind == CredentialKind::Tag)
                .count()
                .try_into()
                .unwrap_or(u32::MAX),
            remote_users: list
                .entries
                .iter()
                .filter(|e| e.kind != CredentialKind::Tag)
                .count()
                .try_into()
                .unwrap_or(u32::MAX),
            tags_left_out: dropped.0,
            remote_users_left_out: dropped.1,
        };
        self.shared.with_iq(iq, |live| {
            live.dropped = dropped;
            live.state.offline_list = Some(size);
        });
        Ok(list)
    }

    async fn check_pin(&self, iq: IqId, person: PersonId, pin: &[u8]) -> Result<PinVerdict, BackendError> {
        let Ok(pin) = std::str::from_utf8(pin) else {
            return Ok(PinVerdict::Wrong);
        };
        let check = self
            .node
            .store()
            .devices()
            .check_pin(iq, person, pin, Timestamp::now())
            .await
            .map_err(store_err)?;
        Ok(pin_verdict(check))
    }

    async fn firmware_chunk(
        &self,
        iq: IqId,
        version: &str,
        offset: u64,
        max_len: u32,
    ) -> Result<FirmwareSlice, BackendError> {
        let store = self.node.store();
        // An IQ registered with a model gets only that model's files; one written before
        // registration details existed (no model) may fetch any.
        let model = store
            .devices()
            .iq(iq)
            .await
            .map_err(store_err)?
            .map(|d| d.model)
            .filter(|m| !m.is_empty());
        let files = store
            .devices()
            .firmware_files(model.as_deref())
            .await
            .map_err(store_err)?;
        let Some(file) = files.iter().rev().find(|f| f.version == version) else {
            return Err(BackendError::NotFound);
        };
        let content = store
            .devices()
            .firmware_content(file.id)
            .await
            .map_err(store_err)?
            .ok_or(BackendError::NotFound)?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&file.sha256, &mut sha256).map_err(unavailable)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
        let end = start
            .saturating_add(usize::try_from(max_len).unwrap_or(usize::MAX))
            .min(content.len());
        Ok(FirmwareSlice {
            size: file.size,
            sha256,
            data: content.get(start..end).map(<[u8]>::to_vec).unwrap_or_default(),
        })
    }

    async fn report(&self, iq: IqId, report: Report) -> Result<(), BackendError> {
        let now = Some(Timestamp::now().as_second());
        match report {
            Report::Online { firmware } => {
                self.offer_assigned_firmware(iq, &firmware).await;
                self.shared.with_iq(iq, |live| {
                    live.state.online = true;
                    live.state.last_seen = now;
                    live.state.firmware = Some(firmware);
                });
            }
            Report::Heartbeat { .. } | Report::PushAcked(_) | Report::OfflineListInstalled(_) => {
                self.shared.with_iq(iq, |live| live.state.last_seen = now);
            }
            Report::Offline(cause) => {
                tracing::warn!(%iq, ?cause, "iq offline");
                self.shared.with_iq(iq, |live| {
                    live.sessions.retain(|s| s.strong_count() > 0);
                    live.state.online = false;
                });
                // Missed heartbeats are the IQ going quiet: an incident, and through it
                // the "IQ offline" notification. A session that ended (the IQ closed it,
                // a reset, this node stopping) is not one.
                if cause == OfflineCause::MissedHeartbeats {
                    self.raise_offline_incident(iq).await;
                }
            }
            Report::DoorCommandAcked { command_id, status } => {
                let waiter = self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&command_id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(status);
                }
            }
            Report::Incident(incident) => {
                tracing::warn!(%iq, id = incident.id, kind = ?incident.kind, door = ?incident.door, at = incident.at, "iq incident");
                let kind = match incident.kind {
                    IncidentKind::DoorForced => StoredIncidentKind::DoorForced,
                    IncidentKind::HeldOpen => StoredIncidentKind::DoorLeftOpen,
                    IncidentKind::Tamper => StoredIncidentKind::Tamper,
                    IncidentKind::LowBattery => StoredIncidentKind::BatteryLow,
                    // Kept in the log only: no stored kind means "other".
                    IncidentKind::Unspecified | IncidentKind::Other(_) => return Ok(()),
                };
                let site = self.node.iq_site(iq).ok_or_else(|| unavailable("the iq has no site"))?;
                let new = NewIncident {
                    site,
                    kind,
                    door: incident.door.map(DoorId),
                    iq: Some(iq),
                    iq_seq: Some(incident.id),
                    // An IQ clock past jiff's range (year 9999) is a broken clock, not a
                    // reason to lose the incident: it is stamped when it arrived.
                    at: Timestamp::from_millisecond(incident.at).unwrap_or_else(|_| Timestamp::now()),
                    detail: incident.detail,
                };
                // Not acknowledged unless stored: the IQ reports it again.
                self.node
                    .raise_incident(&format!("iq:{}", iq.0), new)
                    .await
                    .map_err(unavailable)?;
            }
            Report::Passage(passage) => {
                let fresh = self.shared.with_iq(iq, |live| {
                    if live.passages.contains(&passage.id) {
                        return false;
                    }
                    if live.passages.len() >= RECENT_PASSAGES {
                        live.passages.pop_front();
                    }
                    live.passages.push_back(passage.id);
                    true
                });
                if fresh {
                    let report = PassageReport {
                        door: DoorId(passage.door),
                        presented: passage.kind.map(|kind| Presented {
                            kind,
                            secret: &passage.secret,
                        }),
                        at: crate::session::timestamp(passage.at),
                        direction: passage.direction,
                        opened: passage.opened,
                    };
                    self.node.passage(&report).map_err(unavailable)?;
                }
            }
            Report::FirmwareInstalled(version) => {
                self.shared.with_iq(iq, |live| live.state.firmware = Some(version));
            }
            Report::Security(event) => {
                tracing::warn!(%iq, ?event, "iq security event");
            }
        }
        Ok(())
    }
}
