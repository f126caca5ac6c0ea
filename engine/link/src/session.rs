//! The session loops of an admitted IQ, one per port (PROTOCOL.md sections 6 and 7).
//!
//! A session is one task: a biased `select!` over its kill switch (shutdown or
//! revocation), the pushes of its subscription (control port only, so that a revocation
//! is queued before the next request is even read), the IQ's frames, and a timer for
//! heartbeats and acknowledgements. Everything it sends goes through the bounded
//! [`Outbox`]; a full outbox means the IQ does not read, and the session ends.

use crate::backend::{
    DecisionRequest, IqProfile, LinkBackend, OfflineCause, PushEvent, Report, SecurityEvent, Subscription,
    UploadedEntry,
};
use crate::codec::HEADER_LEN;
use crate::conn::{FrameReader, Outbox, PushError, ReadError, Received};
use crate::message::{
    CommandStatus, DecisionItem, Decisions, ErrorCode, ErrorFrame, FirmwareChunk, Heartbeat, HeartbeatAck, Hello,
    MAX_CHUNK_ENTRIES, MAX_DECIDE_ITEMS, MAX_ENTRY_ITEMS, MAX_FIRMWARE_CHUNK, Message, OfflineDelta, OfflineEntry,
    OfflineListBegin, OfflineListChunk, Revocation, VERSION_MAX, Welcome,
};
use crate::server::{Registration, Shared};
use bytes::BytesMut;
use jiff::Timestamp;
use keyway_core::{CredentialId, CredentialKind, DoorId, IQ_MAX_REMOTE_USERS, IQ_MAX_TAGS, IqId, PersonId, Revision};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::ReadHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

type Reader = FrameReader<ReadHalf<TlsStream<TcpStream>>>;

/// How a session ended, for the log and for the last frame it sends.
enum End {
    /// Send this fatal error, then close.
    Fatal(ErrorCode, String),
    /// The peer went away, or a write failed: just close.
    Quiet,
}

fn fatal(code: ErrorCode, message: impl Into<String>) -> End {
    End::Fatal(code, message.into())
}

fn error_msg(code: ErrorCode, fatal: bool, message: impl Into<String>) -> Message {
    Message::Error(ErrorFrame {
        code,
        fatal,
        message: message.into(),
    })
}

/// Queues `message`, waiting for room at most the write timeout, or ends the session: a
/// queue that stays full is an IQ that does not read.
async fn send(outbox: &mut Outbox, message: &Message, reply_to: u32) -> Result<u32, End> {
    outbox.push_within(message, reply_to).await.map_err(|e| match e {
        PushError::Full => fatal(ErrorCode::Timeout, "not reading"),
        PushError::Closed => End::Quiet,
        PushError::Encode(e) => {
            tracing::error!(error = %e, message = message.name(), "iq link could not encode a message");
            fatal(ErrorCode::Unavailable, "internal error")
        }
    })
}

/// A wire time (ms since the epoch) as a timestamp, clamped to the representable range.
pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// What a received frame means when it is not a message the session handles: the
/// answer to give, and whether the session ends.
fn undecodable(received: &Received) -> Option<(Message, bool)> {
    match &received.message {
        Ok(_) => None,
        Err(e) if e.is_count_limit() => Some((error_msg(ErrorCode::LimitExceeded, false, e.to_string()), false)),
        Err(crate::message::MessageError::UnknownType(t)) => Some((
            error_msg(
                ErrorCode::UnknownMessageType,
                false,
                format!("unknown message type {t:#06x}"),
            ),
            false,
        )),
        Err(e) => Some((error_msg(ErrorCode::Malformed, false, e.to_string()), false)),
    }
}

/// A push sent and not yet acknowledged.
struct Pending {
    seq: u32,
    revision: Revision,
    revocation: bool,
    sent: Instant,
}

struct Control<'a, B: LinkBackend> {
    shared: &'a Arc<Shared<B>>,
    outbox: &'a mut Outbox,
    profile: IqProfile,
    revision: Revision,
    pending: VecDeque<Pending>,
    /// Deltas waiting for a revocation of their revision or earlier to be acknowledged.
    held: VecDeque<OfflineDelta>,
    /// Door commands refused here (a door not of this IQ), to report as `UnknownDoor`.
    refused_commands: Vec<u64>,
    last_frame: Instant,
}

/// Runs the control session of an admitted IQ until it ends.
#[expect(clippy::too_many_arguments, reason = "the session's parts, each used once")]
pub(crate) async fn control<B: LinkBackend>(
    shared: &Arc<Shared<B>>,
    reader: &mut Reader,
    outbox: &mut Outbox,
    dead: &CancellationToken,
    profile: IqProfile,
    registration: Registration<B>,
    hello: &Hello,
    hello_seq: u32,
) {
    let iq = profile.iq;
    let since = Revision(hello.offline_revision);
    let subscription = match shared.backend.subscribe(iq, since).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::warn!(%iq, error = %e, "iq link could not subscribe");
            let _sent = outbox.try_push(&error_msg(ErrorCode::Unavailable, true, "cannot serve now"), hello_seq);
            return;
        }
    };
    let Subscription {
        revision,
        resync,
        mut events,
    } = subscription;
    let welcome = Message::Welcome(Welcome {
        version: VERSION_MAX,
        site: profile.site.get(),
        iq: iq.get(),
        revision: revision.get(),
        heartbeat_ms: u32::try_from(shared.config.heartbeat.as_millis()).unwrap_or(u32::MAX),
        max_frame: u32::try_from(crate::codec::CONTROL_MAX_FRAME).unwrap_or(u32::MAX),
        resync,
        doors: profile.doors.iter().map(|d| d.get()).collect(),
    });
    if outbox.try_push(&welcome, hello_seq).is_err() {
        return;
    }
    tracing::info!(%iq, site = %profile.site, firmware = %hello.firmware, "iq online");
    if let Err(e) = shared
        .backend
        .report(
            iq,
            Report::Online {
                firmware: hello.firmware.clone(),
            },
        )
        .await
    {
        tracing::warn!(%iq, error = %e, "iq link could not report an iq online");
    }
    let mut session = Control {
        shared,
        outbox,
        profile,
        revision,
        pending: VecDeque::new(),
        held: VecDeque::new(),
        refused_commands: Vec::new(),
        last_frame: Instant::now(),
    };
    let heartbeat = shared.config.heartbeat;
    let mut ticker = tokio::time::interval(heartbeat / 2);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut offline_cause = OfflineCause::Disconnected;
    let end = loop {
        let step = tokio::select! {
            biased;
            () = registration.kill.cancelled() => {
                if shared.shutdown.is_cancelled() {
                    Err(fatal(ErrorCode::ShuttingDown, "node shutting down"))
                } else {
                    Err(fatal(ErrorCode::Revoked, "certificate revoked"))
                }
            }
            () = dead.cancelled() => Err(End::Quiet),
            event = events.recv() => match event {
                Some(event) => {
                    let pushed = session.push(event).await;
                    session.report_refused_commands().await;
                    pushed
                }
                None => Err(fatal(ErrorCode::Unavailable, "push feed closed")),
            },
            received = reader.next() => match received {
                Ok(Some(received)) => {
                    session.last_frame = Instant::now();
                    session.frame(received).await
                }
                Ok(None) => Err(End::Quiet),
                Err(e) => Err(read_error(&e, iq)),
            },
            _ = ticker.tick() => {
                let limit = heartbeat * 3;
                if session.last_frame.elapsed() > limit {
                    offline_cause = OfflineCause::MissedHeartbeats;
                    Err(fatal(ErrorCode::Timeout, "3 heartbeats missed"))
                } else if session.pending.front().is_some_and(|p| p.sent.elapsed() > limit) {
                    Err(fatal(ErrorCode::Timeout, "push not acknowledged"))
                } else {
                    Ok(())
                }
            }
        };
        if let Err(end) = step {
            break end;
        }
    };
    finish(session.outbox, end, iq);
    if registration.is_last_on_port() {
        tracing::info!(%iq, cause = ?offline_cause, "iq offline");
        if let Err(e) = shared.backend.report(iq, Report::Offline(offline_cause)).await {
            tracing::warn!(%iq, error = %e, "iq link could not report an iq offline");
        }
    }
    drop(registration);
}

fn read_error(e: &ReadError, iq: IqId) -> End {
    match e.error_frame() {
        Some(frame) => {
            tracing::info!(%iq, error = %e, "iq link closing a session on a bad frame");
            End::Fatal(frame.code, frame.message)
        }
        None => End::Quiet,
    }
}

fn finish(outbox: &mut Outbox, end: End, iq: IqId) {
    if let End::Fatal(code, message) = end {
        tracing::info!(%iq, code = code.name(), %message, "iq link session closed");
        let _sent = outbox.try_push(&error_msg(code, true, message), 0);
    }
}

impl<B: LinkBackend> Control<'_, B> {
    fn owns(&self, door: u32) -> bool {
        self.profile.doors.contains(&DoorId(door))
    }

    async fn foreign_door(&mut self, door: u32, message: &'static str, seq: u32) -> Result<(), End> {
        let iq = self.profile.iq;
        tracing::warn!(%iq, door, message, security_event = true, "iq named a door that is not its own");
        let event = SecurityEvent::ForeignDoor {
            door: DoorId(door),
            message,
        };
        if let Err(e) = self.shared.backend.report(iq, Report::Security(event)).await {
            tracing::warn!(%iq, error = %e, "iq link could not report a security event");
        }
        send(
            self.outbox,
            &error_msg(ErrorCode::Forbidden, false, format!("door {door} is not this iq's")),
            seq,
        )
        .await
        .map(drop)
    }

    async fn push_tracked(&mut self, message: &Message, revision: Revision, revocation: bool) -> Result<(), End> {
        let seq = send(self.outbox, message, 0).await?;
        self.pending.push_back(Pending {
            seq,
            revision,
            revocation,
            sent: Instant::now(),
        });
        Ok(())
    }

    fn blocks(&self, delta: &OfflineDelta) -> bool {
        self.pending
            .iter()
            .any(|p| p.revocation && p.revision.get() <= delta.to_revision)
    }

    async fn push(&mut self, event: PushEvent) -> Result<(), End> {
        match event {
            PushEvent::Revocation { revision, items } => {
                self.revision = self.revision.max(revision);
                let message = Message::Revocation(Revocation {
                    revision: revision.get(),
                    items,
                });
                self.push_tracked(&message, revision, true).await
            }
            PushEvent::OfflineDelta(delta) => {
                self.revision = self.revision.max(Revision(delta.to_revision));
                if self.blocks(&delta) || !self.held.is_empty() {
                    self.held.push_back(delta);
                    Ok(())
                } else {
                    let revision = Revision(delta.to_revision);
                    self.push_tracked(&Message::OfflineDelta(delta), revision, false).await
                }
            }
            PushEvent::Resync { revision } => {
                self.revision = self.revision.max(revision);
                self.push_tracked(&Message::Resync(revision.get()), revision, false)
                    .await
            }
            PushEvent::Doors(doors) => {
                self.profile.doors = doors;
                let message = Message::Doors(self.profile.doors.iter().map(|d| d.get()).collect());
                self.push_tracked(&message, Revision(0), false).await
            }
            PushEvent::DoorCommand(command) => {
                if !self.owns(command.door) {
                    // Never send an IQ a command for a door it does not hold; tell the node.
                    tracing::warn!(iq = %self.profile.iq, door = command.door, "door command for a door not of this iq");
                    self.refused_commands.push(command.command_id);
                    return Ok(());
                }
                send(self.outbox, &Message::DoorCommand(command), 0).await.map(drop)
            }
            PushEvent::FirmwareAvailable(firmware) => {
                self.push_tracked(&Message::FirmwareAvailable(firmware), Revision(0), false)
                    .await
            }
            PushEvent::Revoked => {
                self.shared.kill_iq(self.profile.iq);
                Err(fatal(ErrorCode::Revoked, "certificate revoked"))
            }
        }
    }

    async fn report_refused_commands(&mut self) {
        for command_id in std::mem::take(&mut self.refused_commands) {
            let report = Report::DoorCommandAcked {
                command_id,
                status: CommandStatus::UnknownDoor,
            };
            if let Err(e) = self.shared.backend.report(self.profile.iq, report).await {
                tracing::warn!(iq = %self.profile.iq, error = %e, "iq link could not report a refused door command");
            }
        }
    }

    async fn release_held(&mut self) -> Result<(), End> {
        while let Some(delta) = self.held.front() {
            if self.blocks(delta) {
                break;
            }
            let Some(delta) = self.held.pop_front() else {
                break;
            };
            let revision = Revision(delta.to_revision);
            self.push_tracked(&Message::OfflineDelta(delta), revision, false)
                .await?;
        }
        Ok(())
    }

    async fn frame(&mut self, received: Received) -> Result<(), End> {
        if let Some((answer, _)) = undecodable(&received) {
            return send(self.outbox, &answer, received.seq).await.map(drop);
        }
        let Ok(message) = received.message else {
            return Ok(());
        };
        let seq = received.seq;
        let iq = self.profile.iq;
        let backend = &self.shared.backend;
        match message {
            Message::Heartbeat(Heartbeat { offline_revision, .. }) => {
                if let Err(e) = backend
                    .report(
                        iq,
                        Report::Heartbeat {
                            offline_revision: Revision(offline_revision),
                        },
                    )
                    .await
                {
                    tracing::debug!(%iq, error = %e, "iq link could not report a heartbeat");
                }
                let ack = Message::HeartbeatAck(HeartbeatAck {
                    server_time: now_ms(),
                    revision: self.revision.get(),
                });
                send(self.outbox, &ack, seq).await.map(drop)
            }
            Message::Decide(items) => {
                if items.is_empty() || items.len() > MAX_DECIDE_ITEMS {
                    let answer = error_msg(ErrorCode::LimitExceeded, false, "a decide carries 1 to 64 requests");
                    return send(self.outbox, &answer, seq).await.map(drop);
                }
                if let Some(item) = items.iter().find(|i| !self.owns(i.door)) {
                    return self.foreign_door(item.door, "DECIDE", seq).await;
                }
                let requests: Vec<DecisionRequest<'_>> = items
                    .iter()
                    .map(|i| DecisionRequest {
                        door: DoorId(i.door),
                        kind: i.kind,
                        secret: &i.secret,
                        at: timestamp(i.at),
                        direction: i.direction,
                    })
                    .collect();
                match backend.decide(iq, &requests).await {
                    Ok(batch) if batch.outcomes.len() == items.len() => {
                        self.revision = self.revision.max(batch.revision);
                        let answer = Message::Decisions(Decisions {
                            revision: batch.revision.get(),
                            items: batch
                                .outcomes
                                .into_iter()
                                .map(|o| DecisionItem {
                                    effect: o.effect,
                                    reason: o.reason.into_owned(),
                                })
                                .collect(),
                        });
                        send(self.outbox, &answer, seq).await.map(drop)
                    }
                    Ok(batch) => {
                        tracing::error!(%iq, asked = items.len(), got = batch.outcomes.len(), "backend answered a batch with the wrong count");
                        send(
                            self.outbox,
                            &error_msg(ErrorCode::Unavailable, false, "cannot decide now"),
                            seq,
                        )
                        .await
                        .map(drop)
                    }
                    Err(e) => {
                        tracing::warn!(%iq, error = %e, "iq link could not decide");
                        send(
                            self.outbox,
                            &error_msg(ErrorCode::Unavailable, false, "cannot decide now"),
                            seq,
                        )
                        .await
                        .map(drop)
                    }
                }
            }
            Message::Entries(items) => {
                if items.is_empty() || items.len() > MAX_ENTRY_ITEMS {
                    let answer = error_msg(ErrorCode::LimitExceeded, false, "an upload carries 1 to 256 entries");
                    return send(self.outbox, &answer, seq).await.map(drop);
                }
                if let Some(item) = items.iter().find(|i| !self.owns(i.door)) {
                    return self.foreign_door(item.door, "ENTRIES", seq).await;
                }
                if items.iter().any(|i| i.seq == 0) {
                    return send(self.outbox, &error_msg(ErrorCode::Malformed, false, "entry seq 0"), seq)
                        .await
                        .map(drop);
                }
                let entries: Vec<UploadedEntry> = items
                    .iter()
                    .map(|i| UploadedEntry {
                        seq: i.seq,
                        door: DoorId(i.door),
                        at: timestamp(i.at),
                        effect: i.effect,
                        reason: i.reason.clone(),
                        kind: i.kind,
                        credential: i.credential.map(CredentialId),
                    })
                    .collect();
                match backend.record_entries(iq, &entries).await {
                    Ok(()) => {
                        let answer = Message::EntriesAck(items.iter().map(|i| i.seq).collect());
                        send(self.outbox, &answer, seq).await.map(drop)
                    }
                    Err(e) => {
                        tracing::warn!(%iq, error = %e, "iq link could not store entries");
                        send(
                            self.outbox,
                            &error_msg(ErrorCode::Unavailable, false, "cannot store now"),
                            seq,
                        )
                        .await
                        .map(drop)
                    }
                }
            }
            Message::PushAck(revision) => {
                let Some(at) = self.pending.iter().position(|p| p.seq == received.reply_to) else {
                    // A late or duplicate ack is harmless.
                    return Ok(());
                };
                let acked = self.pending.remove(at);
                let revision = acked.map_or(Revision(revision), |p| p.revision.max(Revision(revision)));
                if let Err(e) = backend.report(iq, Report::PushAcked(revision)).await {
                    tracing::debug!(%iq, error = %e, "iq link could not report an ack");
                }
                self.release_held().await
            }
            Message::DoorCommandAck(ack) => {
                let report = Report::DoorCommandAcked {
                    command_id: ack.command_id,
                    status: ack.status,
                };
                if let Err(e) = backend.report(iq, report).await {
                    tracing::warn!(%iq, error = %e, "iq link could not report a door command ack");
                }
                Ok(())
            }
            Message::Passage(passage) => {
                if !self.owns(passage.door) {
                    return self.foreign_door(passage.door, "PASSAGE", seq).await;
                }
                let id = passage.id;
                match backend.report(iq, Report::Passage(passage)).await {
                    Ok(()) => send(self.outbox, &Message::PassageAck(id), seq).await.map(drop),
                    Err(e) => {
                        tracing::warn!(%iq, error = %e, "iq link could not take a passage");
                        send(
                            self.outbox,
                            &error_msg(ErrorCode::Unavailable, false, "cannot take passages now"),
                            seq,
                        )
                        .await
                        .map(drop)
                    }
                }
            }
            Message::Incident(incident) => {
                if let Some(door) = incident.door.filter(|d| !self.owns(*d)) {
                    return self.foreign_door(door, "INCIDENT", seq).await;
                }
                let id = incident.id;
                match backend.report(iq, Report::Incident(incident)).await {
                    Ok(()) => send(self.outbox, &Message::IncidentAck(id), seq).await.map(drop),
                    Err(e) => {
                        tracing::warn!(%iq, error = %e, "iq link could not store an incident");
                        send(
                            self.outbox,
                            &error_msg(ErrorCode::Unavailable, false, "cannot store now"),
                            seq,
                        )
                        .await
                        .map(drop)
                    }
                }
            }
            Message::PinCheck(check) => match backend.check_pin(iq, PersonId(check.person), &check.pin).await {
                Ok(verdict) => send(self.outbox, &Message::PinResult(verdict), seq).await.map(drop),
                Err(e) => {
                    tracing::warn!(%iq, error = %e, "iq link could not check a pin");
                    send(
                        self.outbox,
                        &error_msg(ErrorCode::Unavailable, false, "cannot check now"),
                        seq,
                    )
                    .await
                    .map(drop)
                }
            },
            Message::FirmwareInstalled(version) => {
                tracing::info!(%iq, %version, "iq reports its firmware");
                if let Err(e) = backend.report(iq, Report::FirmwareInstalled(version)).await {
                    tracing::warn!(%iq, error = %e, "iq link could not report a firmware version");
                }
                Ok(())
            }
            Message::Error(error) => {
                tracing::info!(%iq, code = error.code.name(), fatal = error.fatal, message = %error.message, "iq sent an error");
                if error.fatal { Err(End::Quiet) } else { Ok(()) }
            }
            other => Err(fatal(
                ErrorCode::UnexpectedMessage,
                format!("`{}` is not expected on the control port now", other.name()),
            )),
        }
    }
}

/// Splits entries into chunk bodies that each fit a bulk frame and hold at most
/// [`MAX_CHUNK_ENTRIES`] entries.
fn chunk_bodies(entries: &[OfflineEntry], max_frame: usize) -> Result<Vec<bytes::Bytes>, End> {
    let budget = max_frame.saturating_sub(HEADER_LEN + 4 + 2 + 64);
    let mut bodies = Vec::new();
    let mut start = 0;
    let encode = |index: usize, slice: &[OfflineEntry]| -> Result<bytes::Bytes, End> {
        let mut body = BytesMut::new();
        Message::OfflineListChunk(OfflineListChunk {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            entries: slice.to_vec(),
        })
        .encode_body(&mut body)
        .map_err(|e| {
            tracing::error!(error = %e, "iq link could not encode an offline list chunk");
            fatal(ErrorCode::Unavailable, "internal error")
        })?;
        Ok(body.freeze())
    };
    while start < entries.len() {
        let mut end = (start + MAX_CHUNK_ENTRIES).min(entries.len());
        loop {
            let slice = entries.get(start..end).unwrap_or_default();
            let body = encode(bodies.len(), slice)?;
            if body.len() <= budget || end - start == 1 {
                bodies.push(body);
                break;
            }
            end = start + (end - start) / 2;
        }
        start = end;
    }
    Ok(bodies)
}

/// Applies the caps of an offline list in its order: 10,000 tags, 10,000 remote users.
fn capped(entries: Vec<OfflineEntry>, iq: IqId) -> (Vec<OfflineEntry>, u32, u32) {
    let (mut tags, mut remote, mut dropped) = (0u32, 0u32, 0usize);
    let kept: Vec<OfflineEntry> = entries
        .into_iter()
        .filter(|e| {
            let (count, cap) = match e.kind {
                CredentialKind::Tag => (&mut tags, IQ_MAX_TAGS),
                CredentialKind::DigitalKey | CredentialKind::Pin => (&mut remote, IQ_MAX_REMOTE_USERS),
            };
            if *count < cap {
                *count += 1;
                true
            } else {
                dropped += 1;
                false
            }
        })
        .collect();
    if dropped > 0 {
        tracing::warn!(%iq, dropped, "offline list over the iq's caps; the rest was left out");
    }
    (kept, tags, remote)
}

/// Runs the bulk session of an admitted IQ until it ends.
#[expect(clippy::too_many_arguments, reason = "the session's parts, each used once")]
pub(crate) async fn bulk<B: LinkBackend>(
    shared: &Arc<Shared<B>>,
    reader: &mut Reader,
    outbox: &mut Outbox,
    dead: &CancellationToken,
    profile: IqProfile,
    registration: Registration<B>,
    _hello: &Hello,
    hello_seq: u32,
) {
    let iq = profile.iq;
    let welcome = Message::Welcome(Welcome {
        version: VERSION_MAX,
        site: profile.site.get(),
        iq: iq.get(),
        revision: 0,
        heartbeat_ms: u32::try_from(shared.config.heartbeat.as_millis()).unwrap_or(u32::MAX),
        max_frame: u32::try_from(crate::codec::BULK_MAX_FRAME).unwrap_or(u32::MAX),
        resync: false,
        doors: profile.doors.iter().map(|d| d.get()).collect(),
    });
    if outbox.try_push(&welcome, hello_seq).is_err() {
        return;
    }
    let idle = shared.config.bulk_idle_timeout;
    let end = loop {
        let received = tokio::select! {
            biased;
            () = registration.kill.cancelled() => {
                break if shared.shutdown.is_cancelled() {
                    fatal(ErrorCode::ShuttingDown, "node shutting down")
                } else {
                    fatal(ErrorCode::Revoked, "certificate revoked")
                };
            }
            () = dead.cancelled() => break End::Quiet,
            received = tokio::time::timeout(idle, reader.next()) => received,
        };
        let received = match received {
            Err(_) => break fatal(ErrorCode::Timeout, "idle"),
            Ok(Ok(Some(received))) => received,
            Ok(Ok(None)) => break End::Quiet,
            Ok(Err(e)) => break read_error(&e, iq),
        };
        if let Err(end) = bulk_frame(shared, outbox, iq, received).await {
            break end;
        }
    };
    finish(outbox, end, iq);
    drop(registration);
}

async fn bulk_frame<B: LinkBackend>(
    shared: &Arc<Shared<B>>,
    outbox: &mut Outbox,
    iq: IqId,
    received: Received,
) -> Result<(), End> {
    if let Some((answer, _)) = undecodable(&received) {
        return send(outbox, &answer, received.seq).await.map(drop);
    }
    let Ok(message) = received.message else {
        return Ok(());
    };
    let seq = received.seq;
    let backend = &shared.backend;
    match message {
        Message::OfflineListGet => {
            let list = match backend.offline_list(iq).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(%iq, error = %e, "iq link could not build an offline list");
                    return send(
                        outbox,
                        &error_msg(ErrorCode::Unavailable, false, "cannot build now"),
                        seq,
                    )
                    .await
                    .map(drop);
                }
            };
            let (entries, tags, remote_users) = capped(list.entries, iq);
            let bodies = chunk_bodies(&entries, crate::codec::BULK_MAX_FRAME)?;
            let begin = Message::OfflineListBegin(OfflineListBegin {
                revision: list.revision.get(),
                tags,
                remote_users,
                chunks: u32::try_from(bodies.len()).unwrap_or(u32::MAX),
                time_zone: list.time_zone,
                schedules: list.schedules,
                holidays: list.holidays,
            });
            // Bulk frames wait for room in the queue: the writer's timeout bounds a stuck IQ.
            let pushed = outbox.push(&begin, seq).await;
            if let Err(e) = pushed {
                return Err(push_end(e));
            }
            let mut digest = Sha256::new();
            for body in bodies {
                digest.update(&body);
                outbox
                    .push_raw(crate::message::types::OFFLINE_LIST_CHUNK, body, seq)
                    .await
                    .map_err(push_end)?;
            }
            let end = Message::OfflineListEnd(digest.finalize().into());
            outbox.push(&end, seq).await.map_err(push_end)?;
            tracing::info!(%iq, revision = %list.revision, tags, remote_users, "iq link sent a full offline list");
            Ok(())
        }
        Message::OfflineListAck(revision) => {
            if let Err(e) = backend
                .report(iq, Report::OfflineListInstalled(Revision(revision)))
                .await
            {
                tracing::debug!(%iq, error = %e, "iq link could not report an offline list");
            }
            Ok(())
        }
        Message::FirmwareGet(get) => {
            let max_len = get.max_len.min(u32::try_from(MAX_FIRMWARE_CHUNK).unwrap_or(u32::MAX));
            match backend.firmware_chunk(iq, &get.version, get.offset, max_len).await {
                Ok(mut slice) => {
                    slice
                        .data
                        .truncate(usize::try_from(max_len).unwrap_or(MAX_FIRMWARE_CHUNK));
                    let chunk = Message::FirmwareChunk(FirmwareChunk {
                        version: get.version,
                        size: slice.size,
                        sha256: slice.sha256,
                        offset: get.offset,
                        data: slice.data,
                    });
                    outbox.push(&chunk, seq).await.map(drop).map_err(push_end)
                }
                Err(crate::BackendError::NotFound) => send(
                    outbox,
                    &error_msg(ErrorCode::NotFound, false, "unknown firmware version"),
                    seq,
                )
                .await
                .map(drop),
                Err(e) => {
                    tracing::warn!(%iq, error = %e, "iq link could not read firmware");
                    send(
                        outbox,
                        &error_msg(ErrorCode::Unavailable, false, "cannot read now"),
                        seq,
                    )
                    .await
                    .map(drop)
                }
            }
        }
        Message::Error(error) => {
            tracing::info!(%iq, code = error.code.name(), message = %error.message, "iq sent an error on the bulk port");
            if error.fatal { Err(End::Quiet) } else { Ok(()) }
        }
        other => Err(fatal(
            ErrorCode::UnexpectedMessage,
            format!("`{}` is not expected on the bulk port", other.name()),
        )),
    }
}

fn push_end(e: PushError) -> End {
    match e {
        PushError::Closed => End::Quiet,
        PushError::Full => fatal(ErrorCode::Timeout, "not reading"),
        PushError::Encode(e) => {
            tracing::error!(error = %e, "iq link could not encode a message");
            fatal(ErrorCode::Unavailable, "internal error")
        }
    }
}
