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
//! - Pushes come from the node's change feed. Each subscription keeps a small view of the
//!   IQ's site (its doors, groups, credentials, people's blocks) so a change can be turned
//!   into a revocation (sent first) and an offline-list delta of the same revision.
//! - Online state, last contact and firmware are kept in memory for
//!   [`DoorCommands::state`]; heartbeats touch memory only; incidents are stored through
//!   `Node::raise_incident` (notified once per IQ and incident number).
//!
//! Known limits: an IQ whose list is older than the node's revision when it subscribes
//! is asked for a full list (no replay of deltas from the change log yet), and every
//! subscription holds its own view of its site.

use crate::backend::{
    BackendError, CertIdentity, DecisionBatch, DecisionOutcome, DecisionRequest, EnrolmentGrant, FirmwareSlice,
    IqProfile, LinkBackend, OfflineCause, OfflineList, PushEvent, Report, Subscription, UploadedEntry,
};
use crate::message::{
    CommandStatus, DoorCommand as WireDoorCommand, DoorCommandKind, FirmwareAvailable, IncidentKind, MAX_CHUNK_ENTRIES,
    MAX_REVOCATION_ITEMS, OfflineDelta, OfflineEntry, OfflineGrant, OfflinePeriod, OfflineSchedule, PinVerdict,
    RevocationItem, RevocationWhat,
};
use jiff::Timestamp;
use keyway_core::{
    Change, CredentialId, CredentialKind, CredentialRecord, DoorId, DoorMode, GroupId, GroupRecord,
    IQ_MAX_REMOTE_USERS, IQ_MAX_TAGS, IqId, IqRecord, PersonId, Presented, Record, Revision, Schedule, ScheduleId,
    SiteId, Snapshot,
};
use keyway_node::{
    CommandOutcome, DecisionRequest as NodeRequest, DoorCommand, DoorCommands, FirmwareOffer, IqState, Node,
    OfflineListSize, PassageReport, Source,
};
use keyway_store::{
    Entry, FeedError, IncidentKind as StoredIncidentKind, IqDetails, Logged, Method, NewIncident, PinCheck, StoreError,
};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
    sessions: Vec<mpsc::Sender<PushEvent>>,
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
        for s in sessions {
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
            live.sessions.retain(|s| !s.is_closed());
            live.sessions.first().cloned()
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
            .revoke_iq_certificate(actor, iq)
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
            at: Timestamp::now().as_second(),
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
        let file = match store.iq_details(iq).await {
            Ok(Some(IqDetails { firmware: Some(id), .. })) => store.firmware(id).await,
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

/// What a subscription knows of its IQ's site, to turn changes into pushes.
#[derive(Debug)]
struct SiteView {
    site: SiteId,
    iq: IqId,
    /// Every door of the site, with its IQ.
    doors: BTreeMap<DoorId, Option<IqId>>,
    groups: BTreeMap<GroupId, GroupRecord>,
    credentials: BTreeMap<CredentialId, CredentialRecord>,
    blocked: BTreeSet<PersonId>,
    revoked: BTreeSet<CredentialId>,
    schedules: BTreeMap<ScheduleId, Schedule>,
    time_zone: String,
    holidays: Vec<u32>,
}

fn yyyymmdd(date: jiff::civil::Date) -> u32 {
    let y = u32::try_from(date.year()).unwrap_or(0);
    let m = u32::try_from(date.month()).unwrap_or(0);
    let d = u32::try_from(date.day()).unwrap_or(0);
    y * 10_000 + m * 100 + d
}

impl SiteView {
    fn build(records: Vec<Record>, iq: IqId) -> Option<SiteView> {
        let site = records.iter().find_map(|r| match r {
            Record::Iq(rec) if rec.id == iq => Some(rec.site),
            _ => None,
        })?;
        let mut view = SiteView {
            site,
            iq,
            doors: BTreeMap::new(),
            groups: BTreeMap::new(),
            credentials: BTreeMap::new(),
            blocked: BTreeSet::new(),
            revoked: BTreeSet::new(),
            schedules: BTreeMap::new(),
            time_zone: "UTC".to_owned(),
            holidays: Vec::new(),
        };
        let mut calendars = HashMap::new();
        let mut site_calendar = None;
        for record in records {
            match record {
                Record::Calendar(c) => {
                    calendars.insert(c.id, c.calendar);
                }
                Record::Site(s) if s.id == site => {
                    view.time_zone = s.time_zone.iana_name().unwrap_or("UTC").to_owned();
                    site_calendar = s.holiday_calendar;
                }
                Record::Door(d) if d.site == site => {
                    view.doors.insert(d.id, d.iq);
                }
                Record::Group(g) if g.site == site => {
                    view.groups.insert(g.id, g);
                }
                Record::Credential(c) if c.site == site => {
                    if c.revoked {
                        view.revoked.insert(c.id);
                    }
                    view.credentials.insert(c.id, c);
                }
                Record::Person(p) if p.site == site && p.blocked => {
                    view.blocked.insert(p.id);
                }
                Record::Schedule(s) if s.site == site => {
                    view.schedules.insert(s.id, s.schedule);
                }
                _ => {}
            }
        }
        if let Some(cal) = site_calendar.and_then(|id| calendars.get(&id)) {
            view.holidays = cal.dates().iter().map(|d| yyyymmdd(*d)).collect();
        }
        Some(view)
    }

    fn my_doors(&self) -> Vec<DoorId> {
        self.doors
            .iter()
            .filter(|(_, iq)| **iq == Some(self.iq))
            .map(|(d, _)| *d)
            .collect()
    }

    /// The offline entry of credential `id`, if it opens a door of the IQ now.
    fn entry(&self, id: CredentialId) -> Option<OfflineEntry> {
        let c = self.credentials.get(&id)?;
        let person = c.owner?;
        if self.revoked.contains(&id) || self.blocked.contains(&person) {
            return None;
        }
        let mut grants = BTreeSet::new();
        for g in self.groups.values() {
            if !g.members.contains(&person) {
                continue;
            }
            for door in &g.doors {
                if self.doors.get(door) == Some(&Some(self.iq)) {
                    grants.insert((door.get(), g.schedule.map(ScheduleId::get)));
                }
            }
        }
        if grants.is_empty() {
            return None;
        }
        Some(OfflineEntry {
            credential: id.get(),
            kind: c.kind,
            secret: c.secret.clone(),
            person: Some(person.get()),
            offline_access: c.offline_access,
            valid_from: c.valid_from.map(Timestamp::as_millisecond),
            valid_until: c.valid_until.map(Timestamp::as_millisecond),
            grants: grants
                .into_iter()
                .map(|(door, schedule)| OfflineGrant { door, schedule })
                .collect(),
        })
    }

    fn credentials_of(&self, person: PersonId) -> Vec<CredentialId> {
        self.credentials
            .values()
            .filter(|c| c.owner == Some(person))
            .map(|c| c.id)
            .collect()
    }

    fn schedules(&self) -> Vec<OfflineSchedule> {
        self.schedules
            .iter()
            .map(|(id, s)| OfflineSchedule {
                id: id.get(),
                periods: s
                    .periods()
                    .iter()
                    .map(|p| OfflinePeriod {
                        days: p.days.bits(),
                        start: p.start,
                        end: p.end,
                    })
                    .collect(),
                from: s.date_range().map(|r| yyyymmdd(r.first)),
                until: s.date_range().map(|r| yyyymmdd(r.last)),
            })
            .collect()
    }

    /// The full list in its documented order, capped; what was dropped.
    fn full_list(&self, revision: Revision) -> (OfflineList, (u32, u32)) {
        let mut entries: Vec<OfflineEntry> = self.credentials.keys().filter_map(|id| self.entry(*id)).collect();
        entries.sort_by_key(|e| (!e.offline_access, e.credential));
        let (mut tags, mut remote, mut dropped) = (0u32, 0u32, (0u32, 0u32));
        entries.retain(|e| {
            if e.kind == CredentialKind::Tag {
                tags += 1;
                if tags > IQ_MAX_TAGS {
                    dropped.0 += 1;
                    return false;
                }
            } else {
                remote += 1;
                if remote > IQ_MAX_REMOTE_USERS {
                    dropped.1 += 1;
                    return false;
                }
            }
            true
        });
        (
            OfflineList {
                revision,
                time_zone: self.time_zone.clone(),
                schedules: self.schedules(),
                holidays: self.holidays.clone(),
                entries,
            },
            dropped,
        )
    }

    /// Applies one change; the pushes it makes, revocations first.
    #[expect(
        clippy::collapsible_match,
        reason = "one arm per change reads better than guards split from their bodies"
    )]
    fn apply(&mut self, revision: Revision, change: &Change) -> Vec<PushEvent> {
        let mut revoke = Vec::new();
        let mut touched: BTreeSet<CredentialId> = BTreeSet::new();
        let mut doors_changed = false;
        let mut commands = Vec::new();
        let cred_item = |id: CredentialId| RevocationItem {
            what: RevocationWhat::Credential,
            id: id.get(),
            door: None,
        };
        let person_item = |id: PersonId| RevocationItem {
            what: RevocationWhat::Person,
            id: id.get(),
            door: None,
        };
        // Which credentials the change may touch, to diff their entries.
        match change {
            Change::BlockPerson(p) | Change::UnblockPerson(p) | Change::RemovePerson(p) => {
                touched.extend(self.credentials_of(*p));
            }
            Change::Grant { person, .. } | Change::Ungrant { person, .. } => {
                touched.extend(self.credentials_of(*person));
            }
            Change::RevokeCredential(c) | Change::RestoreCredential(c) | Change::RemoveCredential(c) => {
                touched.insert(*c);
            }
            Change::PutCredential(c) => {
                touched.insert(c.id);
            }
            Change::PutGroup(g) => {
                let mut people: BTreeSet<PersonId> = g.members.iter().copied().collect();
                if let Some(old) = self.groups.get(&g.id) {
                    people.extend(old.members.iter().copied());
                }
                for p in people {
                    touched.extend(self.credentials_of(p));
                }
            }
            Change::RemoveGroup(g) => {
                if let Some(old) = self.groups.get(g) {
                    for p in old.members.clone() {
                        touched.extend(self.credentials_of(p));
                    }
                }
            }
            Change::PutDoor(_) | Change::RemoveDoor(_) => {
                touched.extend(self.credentials.keys().copied());
            }
            _ => {}
        }
        let before: BTreeMap<CredentialId, Option<OfflineEntry>> =
            touched.iter().map(|id| (*id, self.entry(*id))).collect();

        match change {
            Change::BlockPerson(p) => {
                if self.blocked.insert(*p) && touched.iter().any(|c| before.get(c).is_some_and(Option::is_some)) {
                    revoke.push(person_item(*p));
                }
            }
            Change::UnblockPerson(p) => {
                self.blocked.remove(p);
            }
            Change::RemovePerson(p) => {
                for c in self.credentials.values_mut() {
                    if c.owner == Some(*p) {
                        c.owner = None;
                    }
                }
                for g in self.groups.values_mut() {
                    g.members.retain(|m| m != p);
                }
                if touched.iter().any(|c| before.get(c).is_some_and(Option::is_some)) {
                    revoke.push(person_item(*p));
                }
            }
            Change::RevokeCredential(c) => {
                self.revoked.insert(*c);
            }
            Change::RestoreCredential(c) => {
                self.revoked.remove(c);
            }
            Change::RemoveCredential(c) => {
                self.credentials.remove(c);
            }
            Change::PutCredential(c) => {
                if c.site == self.site {
                    if c.revoked {
                        self.revoked.insert(c.id);
                    } else {
                        self.revoked.remove(&c.id);
                    }
                    self.credentials.insert(c.id, c.clone());
                }
            }
            Change::Grant { person, group } => {
                if let Some(g) = self.groups.get_mut(group)
                    && !g.members.contains(person)
                {
                    g.members.push(*person);
                }
            }
            Change::Ungrant { person, group } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.retain(|m| m != person);
                }
            }
            Change::PutGroup(g) => {
                if g.site == self.site {
                    self.groups.insert(g.id, g.clone());
                }
            }
            Change::RemoveGroup(g) => {
                self.groups.remove(g);
            }
            Change::PutPerson(p) => {
                if p.site == self.site {
                    touched.extend(self.credentials_of(p.id));
                    if p.blocked {
                        self.blocked.insert(p.id);
                    } else {
                        self.blocked.remove(&p.id);
                    }
                }
            }
            Change::PutDoor(d) => {
                if d.site == self.site {
                    let old = self.doors.insert(d.id, d.iq);
                    doors_changed = old.flatten() == Some(self.iq) || d.iq == Some(self.iq);
                }
            }
            Change::RemoveDoor(d) => {
                doors_changed = self.doors.remove(d).flatten() == Some(self.iq);
            }
            Change::SetDoorMode { door, mode } => {
                if self.doors.get(door) == Some(&Some(self.iq)) {
                    let kind = if *mode == DoorMode::Office {
                        DoorCommandKind::OfficeModeOn
                    } else {
                        DoorCommandKind::OfficeModeOff
                    };
                    commands.push((*door, kind));
                }
            }
            Change::SetDoorLockdown { door, on } => {
                if self.doors.get(door) == Some(&Some(self.iq)) {
                    commands.push((*door, lockdown(*on)));
                }
            }
            Change::SetSiteLockdown { site, on } => {
                if *site == self.site {
                    for door in self.my_doors() {
                        commands.push((door, lockdown(*on)));
                    }
                }
            }
            Change::PutSchedule(s) => {
                if s.site == self.site {
                    self.schedules.insert(s.id, s.schedule.clone());
                    // A narrowed schedule is a narrowed right: the IQ refetches.
                    return vec![PushEvent::Resync { revision }];
                }
            }
            Change::RemoveSchedule(s) => {
                self.schedules.remove(s);
            }
            Change::PutSite(s) if s.id == self.site => {
                return vec![PushEvent::Resync { revision }];
            }
            Change::PutCalendar(_) => return vec![PushEvent::Resync { revision }],
            _ => {}
        }

        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for id in &touched {
            let old = before.get(id).cloned().flatten();
            let new = self.entry(*id);
            match (&old, new) {
                (Some(_), None) => {
                    removals.push(id.get());
                    if !matches!(change, Change::BlockPerson(_) | Change::RemovePerson(_)) {
                        revoke.push(cred_item(*id));
                    }
                }
                (Some(o), Some(n)) if *o != n => {
                    // Fewer grants or a shorter validity is a narrowing: revoke first.
                    if n.grants.len() < o.grants.len() || n.valid_until != o.valid_until {
                        revoke.push(cred_item(*id));
                    }
                    upserts.push(n);
                }
                (None, Some(n)) => upserts.push(n),
                _ => {}
            }
        }
        let mut events = Vec::new();
        if !revoke.is_empty() {
            events.push(PushEvent::Revocation {
                revision,
                items: revoke,
            });
        }
        if doors_changed {
            events.push(PushEvent::Doors(self.my_doors()));
        }
        for (i, (door, command)) in commands.into_iter().enumerate() {
            events.push(PushEvent::DoorCommand(WireDoorCommand {
                command_id: revision.0.saturating_mul(1_000).saturating_add(i as u64),
                door: door.get(),
                command,
                duration_s: 0,
            }));
        }
        if !upserts.is_empty() || !removals.is_empty() {
            events.push(PushEvent::OfflineDelta(OfflineDelta {
                from_revision: revision.0.saturating_sub(1),
                to_revision: revision.0,
                upserts,
                removals,
            }));
        }
        events
    }
}

fn lockdown(on: bool) -> DoorCommandKind {
    if on {
        DoorCommandKind::LockdownOn
    } else {
        DoorCommandKind::LockdownOff
    }
}

async fn view_of(snapshot: Arc<Snapshot>, iq: IqId) -> Result<Option<SiteView>, BackendError> {
    tokio::task::spawn_blocking(move || SiteView::build(snapshot.records(), iq))
        .await
        .map_err(unavailable)
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

/// The most revisions a reconnecting IQ's list is brought up to date by replay; further
/// behind, it fetches a full list.
const MAX_REPLAY: u64 = 10_000;

/// What the changes between an IQ's list (`since`) and `revision` did to the IQ's list, as
/// pushes: a revocation of what no longer opens, then one delta from `since` to
/// `revision` with the current entry of every credential they touched (or its removal).
/// Also returns the feed positioned after `revision`, for the session to follow on.
///
/// `None` when the IQ must fetch a full list: it has none (`since` 0), it is too far
/// behind or ahead, the replay would not fit one frame of each kind, the change log no longer holds the revisions, or one of them changed
/// more than keys and people (doors, groups, schedules, the site, calendars, door modes,
/// the IQ itself; a removal whose site cannot be told), since only the full list says
/// what those did to the IQ.
///
/// The entries come from `view`, the IQ's list at `revision`, so a credential touched
/// several times is sent once, as it is now. A person whose change may have narrowed
/// what they open is revoked as a whole first (the IQ denies them), and their current
/// credentials follow in the delta, which reinstates them where they still open: a
/// person removed since `since`, whose credentials now belong to nobody, stays revoked.
async fn replay(
    node: &Node,
    view: &SiteView,
    since: Revision,
    revision: Revision,
) -> Option<(keyway_store::ChangeStream, Vec<PushEvent>)> {
    if since.0 == 0 || since >= revision || revision.0 - since.0 > MAX_REPLAY {
        return None;
    }
    let mut stream = node.subscribe(since).await.ok()?;
    let mut touched: BTreeSet<CredentialId> = BTreeSet::new();
    let mut revoked_people: BTreeSet<PersonId> = BTreeSet::new();
    while stream.position() <= revision {
        let item = stream.next().await.ok()?;
        let Logged::Change(change) = item.entry.as_ref() else {
            // A policy change does not touch lists; a reload may have changed anything.
            if matches!(item.entry.as_ref(), Logged::Reload) {
                return None;
            }
            continue;
        };
        let ours_door = |d: &DoorId| view.doors.contains_key(d);
        match change {
            Change::BlockPerson(p) => {
                let theirs = view.credentials_of(*p);
                if !theirs.is_empty() {
                    revoked_people.insert(*p);
                }
                touched.extend(theirs);
            }
            Change::RemovePerson(p) => {
                // Their credentials belong to nobody now: the person is revoked whoever
                // they were, a no-op on an IQ that never held them.
                revoked_people.insert(*p);
            }
            Change::UnblockPerson(p) | Change::Grant { person: p, .. } | Change::Ungrant { person: p, .. } => {
                touched.extend(view.credentials_of(*p));
            }
            Change::PutPerson(p) => {
                if p.site == view.site {
                    revoked_people.insert(p.id);
                    touched.extend(view.credentials_of(p.id));
                }
            }
            // Not in the view: another site's (a later removal touches it by itself).
            Change::RevokeCredential(c) | Change::RestoreCredential(c) => {
                if view.credentials.contains_key(c) {
                    touched.insert(*c);
                }
            }
            // Its site cannot be told any more: a removal of what the IQ never held is a
            // no-op there.
            Change::RemoveCredential(c) => {
                touched.insert(*c);
            }
            Change::PutCredential(c) => {
                if c.site == view.site {
                    touched.insert(c.id);
                }
            }
            Change::PutGroup(g) if g.site != view.site => {}
            Change::PutDoor(d) if d.site != view.site => {}
            Change::PutSchedule(s) if s.site != view.site => {}
            Change::PutSite(s) if s.id != view.site => {}
            Change::PutIq(i) if i.id != view.iq => {}
            Change::SetDoorMode { door, .. } | Change::SetDoorLockdown { door, .. } if !ours_door(door) => {}
            Change::SetSiteLockdown { site, .. } if *site != view.site => {}
            Change::SetRoles(_) => {}
            _ => return None,
        }
    }
    let mut items: Vec<RevocationItem> = revoked_people
        .iter()
        .map(|p| RevocationItem {
            what: RevocationWhat::Person,
            id: p.get(),
            door: None,
        })
        .collect();
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    for id in touched {
        match view.entry(id) {
            Some(entry) => upserts.push(entry),
            None => {
                removals.push(id.get());
                items.push(RevocationItem {
                    what: RevocationWhat::Credential,
                    id: id.get(),
                    door: None,
                });
            }
        }
    }
    // One frame each: larger replays are what full lists are for.
    if items.len() > MAX_REVOCATION_ITEMS || upserts.len() > MAX_CHUNK_ENTRIES || removals.len() > MAX_CHUNK_ENTRIES {
        return None;
    }
    let mut events = Vec::new();
    if !items.is_empty() {
        events.push(PushEvent::Revocation { revision, items });
    }
    // Always a delta, even an empty one: it moves the IQ's list to `revision`.
    events.push(PushEvent::OfflineDelta(OfflineDelta {
        from_revision: since.0,
        to_revision: revision.0,
        upserts,
        removals,
    }));
    Some((stream, events))
}

/// Follows the node's feed for one subscription until its receiver is dropped.
/// Whether the certificate `serial` still authenticates `iq`: the IQ exists and the
/// store records that serial for it. A store failure keeps the session (the next
/// handshake checks again).
async fn still_valid(node: &Node, iq: IqId, serial: Option<&str>) -> bool {
    match node.store().iq_certificate(iq).await {
        Ok(Some(cert)) => serial.is_none_or(|s| s == cert.serial),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(%iq, error = %e, "cannot recheck an iq's certificate");
            true
        }
    }
}

/// Follows the change feed for one session of `view.iq` and turns changes into its
/// pushes. A change to the IQ itself (`PutIq`, written by a reset on any node, or
/// `RemoveIq`) rechecks its certificate, so a reset or removal on another node closes
/// this node's sessions too.
async fn follow(
    node: Node,
    mut view: SiteView,
    mut stream: keyway_store::ChangeStream,
    tx: mpsc::Sender<PushEvent>,
    serial: Option<String>,
) {
    let mut owe_resync = false;
    loop {
        let item = tokio::select! {
            () = tx.closed() => return,
            item = stream.next() => item,
        };
        let events = match item {
            Ok(item) => match item.entry.as_ref() {
                Logged::Change(Change::PutIq(IqRecord { id, .. }) | Change::RemoveIq(id))
                    if *id == view.iq && !still_valid(&node, view.iq, serial.as_deref()).await =>
                {
                    tracing::info!(iq = %view.iq, "iq reset or removed: closing its session");
                    let _ = tx.try_send(PushEvent::Revoked);
                    return;
                }
                Logged::Change(change) => view.apply(item.revision, change),
                Logged::Reload => {
                    let snapshot = node.snapshot().load_full();
                    match view_of(snapshot, view.iq).await {
                        Ok(Some(v)) => view = v,
                        Ok(None) => return,
                        Err(e) => tracing::warn!(error = %e, "offline view not rebuilt"),
                    }
                    vec![PushEvent::Resync {
                        revision: item.revision,
                    }]
                }
                _ => Vec::new(),
            },
            Err(FeedError::Behind { .. }) => {
                // Resynchronise in full and follow on from the node's revision now.
                let snapshot = node.snapshot().load_full();
                let revision = snapshot.revision();
                match view_of(snapshot, view.iq).await {
                    Ok(Some(v)) => view = v,
                    _ => return,
                }
                match node.subscribe(revision).await {
                    Ok(s) => stream = s,
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed lost");
                        return;
                    }
                }
                vec![PushEvent::Resync { revision }]
            }
            Err(e) => {
                tracing::warn!(error = %e, "change feed ended");
                return;
            }
        };
        for event in events {
            if owe_resync {
                if let PushEvent::Revocation { .. } = event {
                    // Revocations still go out; the resync below covers the rest.
                } else {
                    continue;
                }
            }
            if tx.try_send(event).is_err() {
                if tx.is_closed() {
                    return;
                }
                owe_resync = true;
            }
        }
        if owe_resync
            && tx
                .try_send(PushEvent::Resync {
                    revision: view_revision(&node),
                })
                .is_ok()
        {
            owe_resync = false;
        }
    }
}

fn view_revision(node: &Node) -> Revision {
    node.snapshot().load().revision()
}

impl LinkBackend for NodeBackend {
    async fn authenticate(&self, identity: &CertIdentity) -> Result<IqProfile, BackendError> {
        let store = self.node.store();
        let Some((site, doors)) = store.iq_profile(identity.iq).await.map_err(store_err)? else {
            return Err(BackendError::Refused);
        };
        if site != identity.site {
            return Err(BackendError::Refused);
        }
        let serial = identity.serial.to_ascii_lowercase();
        let cert = store.iq_certificate(identity.iq).await.map_err(store_err)?;
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
            .redeem_enrolment_code(&hash, Timestamp::now().as_second())
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
            .record_iq_certificate(LINK_ACTOR, iq, &serial.to_ascii_lowercase(), not_after.as_second())
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
            .map_or_else(|| view_revision(&self.node), |d| d.ruled.core.revision);
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
            log.append_durable(entry).await.map_err(store_err)?;
        }
        Ok(())
    }

    async fn subscribe(&self, iq: IqId, since: Revision) -> Result<Subscription, BackendError> {
        if since.0 > view_revision(&self.node).0 {
            // The IQ holds a list from a node ahead of this one: wait briefly for it.
            let _ = self.node.reach(since, Duration::from_secs(2)).await;
        }
        let snapshot = self.node.snapshot().load_full();
        let revision = snapshot.revision();
        let Some(view) = view_of(snapshot, iq).await? else {
            return Err(BackendError::Refused);
        };
        let (tx, rx) = mpsc::channel(self.shared.config.push_queue.max(8));
        let (stream, resync) = match replay(&self.node, &view, since, revision).await {
            Some((stream, events)) => {
                // At most two events into a fresh channel of at least eight: they fit.
                let all_queued = events.into_iter().all(|e| tx.try_send(e).is_ok());
                (stream, !all_queued)
            }
            None => (
                self.node.subscribe(revision).await.map_err(unavailable)?,
                since != revision,
            ),
        };
        let serial = self.shared.with_iq(iq, |live| {
            live.sessions.push(tx.clone());
            live.serial.clone()
        });
        tokio::spawn(follow(self.node.clone(), view, stream, tx, serial));
        Ok(Subscription {
            revision,
            resync,
            events: rx,
        })
    }

    async fn offline_list(&self, iq: IqId) -> Result<OfflineList, BackendError> {
        let snapshot = self.node.snapshot().load_full();
        let revision = snapshot.revision();
        let Some(view) = view_of(snapshot, iq).await? else {
            return Err(BackendError::Refused);
        };
        let (list, dropped) = view.full_list(revision);
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
            .check_iq_pin(iq, person, pin, Timestamp::now().as_second())
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
            .iq_details(iq)
            .await
            .map_err(store_err)?
            .map(|d| d.model)
            .filter(|m| !m.is_empty());
        let files = store.firmware_files(model.as_deref()).await.map_err(store_err)?;
        let Some(file) = files.iter().rev().find(|f| f.version == version) else {
            return Err(BackendError::NotFound);
        };
        let content = store
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
                    live.sessions.retain(|s| !s.is_closed());
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
                    at: incident.at.div_euclid(1000),
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
