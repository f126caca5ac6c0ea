//! A load generator for the link: simulated IQs over TLS against a server address,
//! each sending decision requests back to back (closed loop: the most the server
//! answers) or on a schedule (open loop: door reads arriving at a set rate, as at a
//! site), with a summary of decisions per second and latency percentiles. `keyway
//! iq-sim` and the end-to-end tests drive it.
//!
//! On a schedule, each IQ sends one frame every `pace`, the IQs' phases spread evenly
//! over it. An IQ held up by a slow answer sends its next frame late, and that frame's
//! latency counts from when it was due, so the delay is measured (no coordinated
//! omission); a frame the IQ waited for counts from its wake. Every IQ connects before
//! any sends, so the handshakes do not weigh on the traffic measured.
//!
//! Idle, each IQ connects, fetches its list, hangs up the bulk session and then only
//! heartbeats and hears pushes: the load of many connected gateways at rest.
//!
//! With outages, each IQ also behaves as a gateway does across a network cut: it holds
//! its offline list (fetched on the bulk port, kept current by the pushes it hears),
//! drops its connection every so often, decides alone from the list while away and keeps
//! those entries, then reconnects saying the revision of its list (so the node replays
//! what it missed, or asks for a full list) and uploads the entries until acknowledged.

use crate::client::{ClientError, ClientEvent, IqClient, IqClientConfig};
use crate::message::{DecideItem, EntryItem, MAX_ENTRY_ITEMS, Message};
use crate::offline::{DeltaOutcome, OfflineError, OfflineStore};
use crate::pki::IqCredentials;
use jiff::Timestamp;
use keyway_core::CredentialKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What one simulated IQ sends: requests it cycles through (door, kind, secret).
#[derive(Clone, Debug)]
pub struct SimIq {
    /// Its enrolled credentials.
    pub credentials: IqCredentials,
    /// The reads it sends, in turn (the `at` field is replaced by the current time).
    pub reads: Vec<DecideItem>,
}

/// Network cuts each IQ goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// Time online between cuts.
    pub every: Duration,
    /// How long each cut lasts.
    pub length: Duration,
    /// Time between two door reads decided alone during a cut.
    pub read_interval: Duration,
}

/// How a run goes.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The client configuration every IQ dials with.
    pub client: IqClientConfig,
    /// How long to send for.
    pub duration: Duration,
    /// Requests per frame.
    pub batch: usize,
    /// Time between two frames of one IQ (open loop); `None` sends back to back.
    pub pace: Option<Duration>,
    /// Network cuts, if any.
    pub outage: Option<Outage>,
    /// Idle IQs: each connects, fetches its list, hangs up the bulk session and then only
    /// heartbeats and hears pushes until the end (no decisions).
    pub idle: bool,
}

/// IQs that connect and fetch their first list at once; the others wait their turn, as
/// gateways coming back after an outage do not all land in the same millisecond.
const CONNECTING_AT_ONCE: usize = 256;

/// The start line: IQs connect a few at a time, and all start sending together.
struct Start {
    gate: Semaphore,
    barrier: tokio::sync::Barrier,
    at: std::sync::OnceLock<Instant>,
}

impl Start {
    fn new(iqs: usize) -> Start {
        Start {
            gate: Semaphore::new(CONNECTING_AT_ONCE),
            barrier: tokio::sync::Barrier::new(iqs.max(1)),
            at: std::sync::OnceLock::new(),
        }
    }

    /// Waits until every IQ has connected or failed to.
    async fn all_ready(&self) {
        self.barrier.wait().await;
        self.at.get_or_init(Instant::now);
    }

    /// Time since every IQ was ready: the run's sending time.
    fn since_all_ready(&self) -> Duration {
        self.at.get().map_or(Duration::ZERO, Instant::elapsed)
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimSummary {
    /// IQs that connected.
    pub connected: usize,
    /// Decisions answered.
    pub decisions: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Decisions per second over the run.
    pub per_second: f64,
    /// Round-trip latency percentiles of a frame (p50, p90, p99, max), in microseconds.
    pub latency_us: [u64; 4],
    /// Pushes heard (revocations, deltas, resyncs, doors, door commands).
    pub pushes: u64,
    /// Reconnections after a cut.
    pub reconnects: u64,
    /// Of those, how many the node brought up to date by replay (no full list).
    pub replays: u64,
    /// Full offline lists fetched (the first of each IQ included).
    pub full_lists: u64,
    /// Decisions taken alone from the offline list during cuts.
    pub offline_decisions: u64,
    /// Of those, how many opened the door.
    pub offline_allowed: u64,
    /// Entries taken offline that the node acknowledged after a reconnection.
    pub uploaded: u64,
}

/// What one IQ's task counted.
#[derive(Default)]
struct IqCount {
    decisions: u64,
    errors: u64,
    latencies: Vec<u64>,
    pushes: u64,
    reconnects: u64,
    replays: u64,
    full_lists: u64,
    offline_decisions: u64,
    offline_allowed: u64,
    uploaded: u64,
}

/// An IQ's offline side: its list, and the entries it decided alone.
struct OfflineSide {
    list: OfflineStore,
    pending: Vec<EntryItem>,
    next_seq: u64,
}

impl OfflineSide {
    async fn fetch(client: &IqClient, count: &mut IqCount) -> Result<OfflineStore, ClientError> {
        let list = client.fetch_offline_list().await?;
        count.full_lists += 1;
        OfflineStore::from_list(&list).map_err(offline_error)
    }

    /// Applies the pushes heard so far; fetches a full list when one says so.
    async fn hear(&mut self, client: &mut IqClient, count: &mut IqCount) -> Result<(), ClientError> {
        let mut refetch = false;
        while let Some(event) = client.try_next_event() {
            let ClientEvent::Push { message, .. } = event else {
                continue;
            };
            count.pushes += 1;
            match message {
                Message::Revocation(r) => self.list.apply_revocation(&r),
                Message::OfflineDelta(d) => refetch |= self.list.apply_delta(&d) == DeltaOutcome::NeedsFullList,
                Message::Resync(_) => refetch = true,
                Message::DoorCommand(c) => {
                    self.list.apply_door_command(&c);
                }
                _ => {}
            }
        }
        if refetch {
            self.list = Self::fetch(client, count).await?;
        }
        Ok(())
    }

    /// Decides `read` alone and keeps the entry for upload.
    fn decide(&mut self, read: &DecideItem, count: &mut IqCount) {
        let at = Timestamp::now();
        let kind = read.kind.unwrap_or(CredentialKind::Tag);
        let d = self.list.decide(read.door, kind, &read.secret, at);
        count.offline_decisions += 1;
        if d.effect == keyway_core::Effect::Allow {
            count.offline_allowed += 1;
        }
        self.pending.push(EntryItem {
            seq: self.next_seq,
            door: read.door,
            at: at.as_millisecond(),
            effect: d.effect,
            reason: d.reason.to_owned(),
            kind: Some(kind),
            credential: d.credential,
        });
        self.next_seq += 1;
    }

    /// Uploads what was decided alone, a frame at a time, until acknowledged.
    async fn upload(&mut self, client: &IqClient, count: &mut IqCount) -> Result<(), ClientError> {
        while !self.pending.is_empty() {
            let frame: Vec<EntryItem> = self.pending.iter().take(MAX_ENTRY_ITEMS).cloned().collect();
            let acked = client.upload_entries(frame).await?;
            self.pending.retain(|e| !acked.contains(&e.seq));
            count.uploaded += acked.len() as u64;
            if acked.is_empty() {
                return Err(ClientError::Unexpected("entries not acknowledged"));
            }
        }
        Ok(())
    }
}

fn offline_error(e: OfflineError) -> ClientError {
    tracing::warn!(error = %e, "simulated iq cannot use its offline list");
    ClientError::Unexpected("unusable offline list")
}

/// An idle IQ's run: heartbeats and pushes only, its list (fetched while it connected)
/// kept current.
async fn run_idle(
    mut client: IqClient,
    mut side: OfflineSide,
    deadline: Instant,
    mut count: IqCount,
) -> Result<IqCount, ClientError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match client.next_event_within(left).await {
            Some(ClientEvent::Push { message, .. }) => {
                count.pushes += 1;
                let refetch = match message {
                    Message::Revocation(r) => {
                        side.list.apply_revocation(&r);
                        false
                    }
                    Message::OfflineDelta(d) => side.list.apply_delta(&d) == DeltaOutcome::NeedsFullList,
                    Message::Resync(_) => true,
                    _ => false,
                };
                if refetch {
                    side.list = OfflineSide::fetch(&client, &mut count).await?;
                    client.close_bulk().await;
                }
            }
            Some(ClientEvent::Closed) => return Err(ClientError::Closed),
            Some(ClientEvent::Error(_)) | None => {}
        }
    }
    client.close().await;
    Ok(count)
}

/// One IQ's whole run.
async fn run_one(iq: SimIq, config: SimConfig, phase: Duration, start: Arc<Start>) -> Result<IqCount, ClientError> {
    let mut count = IqCount::default();
    let batch = config.batch.max(1);
    // Connect (and fetch the list) in turns, then wait for every IQ to be ready: the
    // handshakes of a thousand IQs take seconds of CPU, and would otherwise weigh on the
    // first IQs' traffic.
    let ready = async {
        let _turn = start.gate.acquire().await.map_err(|_| ClientError::Closed)?;
        let client = IqClient::connect(config.client.clone(), iq.credentials.clone()).await?;
        let side = if config.idle || config.outage.is_some() {
            Some(OfflineSide {
                list: OfflineSide::fetch(&client, &mut count).await?,
                pending: Vec::new(),
                next_seq: 1,
            })
        } else {
            None
        };
        if config.idle {
            // At rest from here on: the bulk session is for fetching only.
            client.close_bulk().await;
        }
        Ok::<_, ClientError>((client, side))
    }
    .await;
    start.all_ready().await;
    let (mut client, mut side) = ready?;
    let deadline = Instant::now() + config.duration;
    if config.idle
        && let Some(side) = side
    {
        return run_idle(client, side, deadline, count).await;
    }
    let mut next = 0usize;
    let mut due = Instant::now() + phase;
    let mut online_until = config.outage.map(|o| Instant::now() + o.every);
    while Instant::now() < deadline && !iq.reads.is_empty() {
        if let (Some(outage), Some(until), Some(side)) = (config.outage, online_until, side.as_mut())
            && Instant::now() >= until
        {
            side.hear(&mut client, &mut count).await?;
            client.close().await;
            let back = (Instant::now() + outage.length).min(deadline);
            while Instant::now() < back {
                if let Some(read) = iq.reads.get(next % iq.reads.len()) {
                    side.decide(read, &mut count);
                }
                next = next.wrapping_add(1);
                tokio::time::sleep(outage.read_interval).await;
            }
            let mut reconnect = config.client.clone();
            reconnect.offline_revision = side.list.revision();
            client = IqClient::connect(reconnect, iq.credentials.clone()).await?;
            count.reconnects += 1;
            if client.welcome().resync {
                side.list = OfflineSide::fetch(&client, &mut count).await?;
            } else {
                count.replays += 1;
            }
            side.upload(&client, &mut count).await?;
            online_until = Some(Instant::now() + outage.every);
            due = Instant::now();
            continue;
        }
        // On a schedule, a frame's latency counts from when it was due; when the IQ had
        // to wait for that moment, from when it woke instead, since the runtime's timer
        // wakes up to a millisecond late and that delay is the simulator's, not the link's.
        let mut scheduled = None;
        if let Some(pace) = config.pace {
            if due >= deadline {
                break;
            }
            scheduled = Some(if Instant::now() < due {
                tokio::time::sleep_until(due.into()).await;
                Instant::now()
            } else {
                due
            });
            due += pace;
        }
        let now = Timestamp::now().as_millisecond();
        let items: Vec<DecideItem> = (0..batch)
            .filter_map(|i| iq.reads.get((next + i) % iq.reads.len()))
            .map(|r| DecideItem { at: now, ..r.clone() })
            .collect();
        next = next.wrapping_add(batch);
        let sent = scheduled.unwrap_or_else(Instant::now);
        match client.decide(items).await {
            Ok(answer) => {
                count.decisions += answer.items.len() as u64;
                count
                    .latencies
                    .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Err(_) => count.errors += 1,
        }
        match side.as_mut() {
            Some(side) => side.hear(&mut client, &mut count).await?,
            None => {
                // Nobody keeps a list: drop what was heard so the reader never waits.
                while client.try_next_event().is_some() {
                    count.pushes += 1;
                }
            }
        }
    }
    if let Some(side) = side.as_mut() {
        side.upload(&client, &mut count).await?;
    }
    client.close().await;
    Ok(count)
}

/// Runs `iqs` against the server in `config` and sums up.
///
/// # Errors
/// The first connection error, if no IQ connected at all.
pub async fn run(iqs: Vec<SimIq>, config: &SimConfig) -> Result<SimSummary, ClientError> {
    let mut tasks = JoinSet::new();
    let start = Arc::new(Start::new(iqs.len()));
    let total = u32::try_from(iqs.len()).unwrap_or(u32::MAX).max(1);
    for (i, iq) in (0u32..).zip(iqs) {
        let phase = config.pace.map_or(Duration::ZERO, |pace| pace * i / total);
        tasks.spawn(run_one(iq, config.clone(), phase, Arc::clone(&start)));
    }
    let mut summary = SimSummary::default();
    let mut latencies = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(c)) => {
                summary.connected += 1;
                summary.decisions += c.decisions;
                summary.errors += c.errors;
                summary.pushes += c.pushes;
                summary.reconnects += c.reconnects;
                summary.replays += c.replays;
                summary.full_lists += c.full_lists;
                summary.offline_decisions += c.offline_decisions;
                summary.offline_allowed += c.offline_allowed;
                summary.uploaded += c.uploaded;
                latencies.extend(c.latencies);
            }
            Ok(Err(e)) => {
                summary.errors += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => tracing::warn!(error = %e, "simulated iq task failed"),
        }
    }
    if summary.connected == 0
        && let Some(e) = first_error
    {
        return Err(e);
    }
    latencies.sort_unstable();
    let pick = |q: usize| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = (latencies.len() - 1) * q / 100;
        latencies.get(i).copied().unwrap_or(0)
    };
    summary.latency_us = [pick(50), pick(90), pick(99), pick(100)];
    let secs = start.since_all_ready().as_secs_f64();
    if secs > 0.0 {
        summary.per_second = summary.decisions as f64 / secs;
    }
    Ok(summary)
}
