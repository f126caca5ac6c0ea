//! [`IqClient`]: a real client of the protocol, as an IQ speaks it. `keyway iq-sim` and
//! the tests use it.
//!
//! A connection has a writer task (the same bounded, numbered [`Outbox`] as the server)
//! and a reader task that routes each answer to the request it names in `reply_to`, and
//! everything else (pushes, door commands, errors) to [`IqClient::next_event`]. Pushes
//! are acknowledged by the reader as soon as they arrive when `auto_ack` is on. A
//! heartbeat task keeps the control session alive.

use crate::codec::FrameCodec;
use crate::conn::{FrameReader, Outbox, PushError, ReadError, spawn_writer};
use crate::message::{
    DecideItem, Decisions, DoorCommandAck, Enrol, EntryItem, ErrorFrame, FirmwareGet, Heartbeat, Hello, Incident,
    MAX_FIRMWARE_CHUNK, Message, OfflineEntry, OfflineListBegin, Passage, PinCheck, PinVerdict, VERSION_MAX,
    VERSION_MIN, Welcome,
};
use crate::pki::{IqCredentials, PkiError, client_config, new_key_and_csr, server_name};
use keyway_core::{IqId, SiteId};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// What can go wrong on the IQ's side.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates or TLS configuration.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The server answered with an error frame.
    #[error("refused: {} ({})", .0.code.name(), .0.message)]
    Refused(ErrorFrame),
    /// The server answered something else than expected.
    #[error("unexpected answer `{0}`")]
    Unexpected(&'static str),
    /// The connection closed before the answer came.
    #[error("connection closed")]
    Closed,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// A message did not encode.
    #[error(transparent)]
    Encode(#[from] crate::wire::EncodeError),
    /// A transfer failed its integrity check.
    #[error("integrity check failed: {0}")]
    Integrity(&'static str),
}

/// Where and how an IQ connects.
#[derive(Clone, Debug)]
pub struct IqClientConfig {
    /// The control port.
    pub control_addr: SocketAddr,
    /// The bulk port.
    pub bulk_addr: SocketAddr,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// The firmware version to report.
    pub firmware: String,
    /// The revision of the offline list held.
    pub offline_revision: u64,
    /// Send heartbeats (tests turn them off to be marked offline).
    pub heartbeats: bool,
    /// Acknowledge pushes on arrival.
    pub auto_ack: bool,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

impl IqClientConfig {
    /// Defaults: firmware `sim-1`, no list held, heartbeats and auto-ack on, 10 s timeout.
    #[must_use]
    pub fn new(control_addr: SocketAddr, bulk_addr: SocketAddr, server_name: impl Into<String>) -> Self {
        IqClientConfig {
            control_addr,
            bulk_addr,
            server_name: server_name.into(),
            firmware: "sim-1".to_owned(),
            offline_revision: 0,
            heartbeats: true,
            auto_ack: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Something the server sent on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A push (REVOCATION, OFFLINE_DELTA, RESYNC, DOORS, FIRMWARE_AVAILABLE) with its
    /// frame number, or a door command.
    Push {
        /// The frame number (what a `PUSH_ACK` names).
        seq: u32,
        message: Message,
    },
    /// An error frame not answering any request (a fatal one closes the connection).
    Error(ErrorFrame),
    /// The connection closed.
    Closed,
}

type Pending = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Message>>>>;

/// One TLS connection: requests, answers and events.
struct Connection {
    outbox: Arc<AsyncMutex<Outbox>>,
    pending: Pending,
    dead: CancellationToken,
    timeout: Duration,
}

async fn dial(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let tcp = TcpStream::connect(addr).await?;
    let _nodelay = tcp.set_nodelay(true);
    let tls = TlsConnector::from(config).connect(server_name(name)?, tcp).await?;
    Ok(tls)
}

impl Connection {
    fn start(
        tls: TlsStream<TcpStream>,
        codec: FrameCodec,
        timeout: Duration,
        auto_ack: bool,
        events: mpsc::Sender<ClientEvent>,
    ) -> Connection {
        let (read, write) = tokio::io::split(tls);
        let dead = CancellationToken::new();
        let (outbox, _writer) = spawn_writer(write, codec, 1024, timeout, dead.clone());
        let outbox = Arc::new(AsyncMutex::new(outbox));
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let mut reader = FrameReader::new(read, codec);
        let reader_outbox = Arc::clone(&outbox);
        let reader_pending = Arc::clone(&pending);
        let reader_dead = dead.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    () = reader_dead.cancelled() => break,
                    received = reader.next() => received,
                };
                let received = match received {
                    Ok(Some(received)) => received,
                    Ok(None) => break,
                    Err(e) => {
                        if !matches!(e, ReadError::Frame(crate::codec::FrameError::Io(_))) {
                            tracing::debug!(error = %e, "iq client read a bad frame");
                        }
                        break;
                    }
                };
                let Ok(message) = received.message else {
                    continue;
                };
                let waiter = reader_pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&received.reply_to)
                    .cloned();
                if received.reply_to != 0
                    && let Some(waiter) = waiter
                {
                    let _delivered = waiter.send(message);
                    continue;
                }
                let event = match message {
                    Message::Error(error) => ClientEvent::Error(error),
                    message => {
                        let revision = match &message {
                            Message::Revocation(r) => Some(r.revision),
                            Message::OfflineDelta(d) => Some(d.to_revision),
                            Message::Resync(r) => Some(*r),
                            Message::Doors(_) | Message::FirmwareAvailable(_) => Some(0),
                            _ => None,
                        };
                        if auto_ack && let Some(revision) = revision {
                            let _acked = reader_outbox
                                .lock()
                                .await
                                .push(&Message::PushAck(revision), received.seq)
                                .await;
                        }
                        ClientEvent::Push {
                            seq: received.seq,
                            message,
                        }
                    }
                };
                if events.send(event).await.is_err() {
                    break;
                }
            }
            reader_dead.cancel();
            reader_pending.lock().unwrap_or_else(PoisonError::into_inner).clear();
            let _closed = events.send(ClientEvent::Closed).await;
        });
        Connection {
            outbox,
            pending,
            dead,
            timeout,
        }
    }

    /// Sends `message` and returns the channel its answers arrive on.
    async fn send_expecting(&self, message: &Message) -> Result<(u32, mpsc::UnboundedReceiver<Message>), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut outbox = self.outbox.lock().await;
        let permit_seq = {
            // Register before sending so that the answer always finds its waiter.
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = outbox.peek_seq();
            pending.insert(seq, tx);
            seq
        };
        // The reader cancels `dead` before it drops every waiter: a waiter registered after
        // that would never hear of the close, so check once registered.
        if self.dead.is_cancelled() {
            self.forget(permit_seq);
            return Err(ClientError::Closed);
        }
        match outbox.push(message, 0).await {
            Ok(seq) if seq == permit_seq => Ok((seq, rx)),
            Ok(_) => Err(ClientError::Closed),
            Err(PushError::Encode(e)) => {
                self.forget(permit_seq);
                Err(ClientError::Encode(e))
            }
            Err(_) => {
                self.forget(permit_seq);
                Err(ClientError::Closed)
            }
        }
    }

    fn forget(&self, seq: u32) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&seq);
    }

    async fn recv(&self, rx: &mut mpsc::UnboundedReceiver<Message>) -> Result<Message, ClientError> {
        match tokio::time::timeout(self.timeout, rx.recv()).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(None) => Err(ClientError::Closed),
            Ok(Some(Message::Error(error))) => Err(ClientError::Refused(error)),
            Ok(Some(message)) => Ok(message),
        }
    }

    /// Sends a request and waits for its one answer.
    async fn request(&self, message: &Message) -> Result<Message, ClientError> {
        let (seq, mut rx) = self.send_expecting(message).await?;
        let answer = self.recv(&mut rx).await;
        self.forget(seq);
        answer
    }

    /// Sends a message that has no answer.
    async fn tell(&self, message: &Message, reply_to: u32) -> Result<(), ClientError> {
        self.outbox
            .lock()
            .await
            .push(message, reply_to)
            .await
            .map(drop)
            .map_err(|e| match e {
                PushError::Encode(e) => ClientError::Encode(e),
                PushError::Full | PushError::Closed => ClientError::Closed,
            })
    }

    /// Sends a raw frame (any type, any body): for tests of the server's error paths.
    async fn raw(&self, msg_type: u16, body: bytes::Bytes) -> Result<u32, ClientError> {
        self.outbox
            .lock()
            .await
            .push_raw(msg_type, body, 0)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.dead.cancel();
    }
}

/// Enrols an IQ: makes a key pair and a CSR, presents `code` on the control port, and
/// returns the credentials to connect with from then on.
pub async fn enrol(
    control_addr: SocketAddr,
    server_name: &str,
    link_ca: &[u8],
    code: &str,
) -> Result<IqCredentials, ClientError> {
    let (key, csr) = new_key_and_csr()?;
    let tls = dial(control_addr, server_name, client_config(link_ca, None)?).await?;
    let (events_tx, _events_rx) = mpsc::channel(16);
    let conn = Connection::start(tls, FrameCodec::control(), Duration::from_secs(10), false, events_tx);
    let answer = conn
        .request(&Message::Enrol(Enrol {
            code: code.to_owned(),
            csr,
        }))
        .await?;
    let Message::Enrolled(enrolled) = answer else {
        return Err(ClientError::Unexpected(answer.name()));
    };
    Ok(IqCredentials {
        site: SiteId(enrolled.site),
        iq: IqId(enrolled.iq),
        certificate: enrolled.certificate,
        key,
        link_ca: link_ca.to_vec(),
    })
}

/// A full offline list as received on the bulk port, its digest checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedOfflineList {
    /// The header.
    pub begin: OfflineListBegin,
    /// Every entry, in order.
    pub entries: Vec<OfflineEntry>,
}

/// A connected IQ: a control session, and a bulk session opened when needed.
pub struct IqClient {
    config: IqClientConfig,
    credentials: IqCredentials,
    tls: Arc<rustls::ClientConfig>,
    control: Arc<Connection>,
    welcome: Welcome,
    events: mpsc::Receiver<ClientEvent>,
    bulk: AsyncMutex<Option<(Connection, mpsc::Receiver<ClientEvent>)>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for IqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IqClient")
            .field("iq", &self.credentials.iq)
            .field("site", &self.credentials.site)
            .finish_non_exhaustive()
    }
}

async fn hello(conn: &Connection, config: &IqClientConfig) -> Result<Welcome, ClientError> {
    let answer = conn
        .request(&Message::Hello(Hello {
            min_version: VERSION_MIN,
            max_version: VERSION_MAX,
            firmware: config.firmware.clone(),
            offline_revision: config.offline_revision,
        }))
        .await?;
    match answer {
        Message::Welcome(welcome) => Ok(welcome),
        other => Err(ClientError::Unexpected(other.name())),
    }
}

impl IqClient {
    /// Connects the control session with mutual TLS and says hello.
    pub async fn connect(config: IqClientConfig, credentials: IqCredentials) -> Result<IqClient, ClientError> {
        let tls = client_config(&credentials.link_ca, Some((&credentials.certificate, &credentials.key)))?;
        let stream = dial(config.control_addr, &config.server_name, Arc::clone(&tls)).await?;
        let (events_tx, events) = mpsc::channel(1024);
        let control = Arc::new(Connection::start(
            stream,
            FrameCodec::control(),
            config.timeout,
            config.auto_ack,
            events_tx,
        ));
        let welcome = hello(&control, &config).await?;
        let heartbeat = config.heartbeats.then(|| {
            let conn = Arc::clone(&control);
            let period = Duration::from_millis(u64::from(welcome.heartbeat_ms.max(100)));
            let revision = config.offline_revision;
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(period);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let beat = Message::Heartbeat(Heartbeat {
                        iq_time: jiff::Timestamp::now().as_millisecond(),
                        offline_revision: revision,
                    });
                    if matches!(conn.request(&beat).await, Err(ClientError::Closed)) {
                        break;
                    }
                }
            })
        });
        Ok(IqClient {
            config,
            credentials,
            tls,
            control,
            welcome,
            events,
            bulk: AsyncMutex::new(None),
            heartbeat,
        })
    }

    /// The server's WELCOME.
    #[must_use]
    pub const fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The IQ's credentials.
    #[must_use]
    pub const fn credentials(&self) -> &IqCredentials {
        &self.credentials
    }

    /// Asks for decisions (1 to 64 in one frame).
    pub async fn decide(&self, items: Vec<DecideItem>) -> Result<Decisions, ClientError> {
        match self.control.request(&Message::Decide(items)).await? {
            Message::Decisions(decisions) => Ok(decisions),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// Uploads entries; returns the sequence numbers acknowledged.
    pub async fn upload_entries(&self, items: Vec<EntryItem>) -> Result<Vec<u64>, ClientError> {
        match self.control.request(&Message::Entries(items)).await? {
            Message::EntriesAck(seqs) => Ok(seqs),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// Checks a PIN.
    pub async fn check_pin(&self, person: u32, pin: &[u8]) -> Result<PinVerdict, ClientError> {
        let check = Message::PinCheck(PinCheck {
            person,
            pin: pin.to_vec(),
        });
        match self.control.request(&check).await? {
            Message::PinResult(verdict) => Ok(verdict),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// Reports a passage (protocol version 2) and waits for its `PASSAGE_ACK`; answers
    /// the passage's number.
    pub async fn report_passage(&self, passage: Passage) -> Result<u64, ClientError> {
        match self.control.request(&Message::Passage(passage)).await? {
            Message::PassageAck(id) => Ok(id),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// Reports an incident and waits for its `INCIDENT_ACK`; answers the incident's number.
    pub async fn report_incident(&self, incident: Incident) -> Result<u64, ClientError> {
        match self.control.request(&Message::Incident(incident)).await? {
            Message::IncidentAck(id) => Ok(id),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// Answers a door command (`reply_to` is the command's frame number).
    pub async fn ack_door_command(&self, reply_to: u32, ack: DoorCommandAck) -> Result<(), ClientError> {
        self.control.tell(&Message::DoorCommandAck(ack), reply_to).await
    }

    /// Acknowledges a push by hand (when `auto_ack` is off).
    pub async fn ack_push(&self, reply_to: u32, revision: u64) -> Result<(), ClientError> {
        self.control.tell(&Message::PushAck(revision), reply_to).await
    }

    /// Reports the firmware version now running.
    pub async fn firmware_installed(&self, version: &str) -> Result<(), ClientError> {
        self.control
            .tell(&Message::FirmwareInstalled(version.to_owned()), 0)
            .await
    }

    /// Sends any message on the control port and waits for its answer (tests).
    pub async fn request(&self, message: &Message) -> Result<Message, ClientError> {
        self.control.request(message).await
    }

    /// Sends a raw frame on the control port (tests of the server's error handling).
    pub async fn send_raw(&self, msg_type: u16, body: bytes::Bytes) -> Result<u32, ClientError> {
        self.control.raw(msg_type, body).await
    }

    /// The next push, door command or unsolicited error; `None` once closed and drained.
    /// Call it regularly: once 1,024 events are unread the reader waits, and answers to
    /// requests wait behind it.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// The next push or event already received, without waiting.
    pub fn try_next_event(&mut self) -> Option<ClientEvent> {
        self.events.try_recv().ok()
    }

    /// The next push or event, waiting at most `wait` (`None` if none came).
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<ClientEvent> {
        tokio::time::timeout(wait, self.events.recv()).await.ok().flatten()
    }

    async fn with_bulk<T, F>(&self, f: F) -> Result<T, ClientError>
    where
        F: AsyncFnOnce(&Connection) -> Result<T, ClientError>,
    {
        let mut bulk = self.bulk.lock().await;
        if bulk.as_ref().is_none_or(|(conn, _)| conn.dead.is_cancelled()) {
            let stream = dial(self.config.bulk_addr, &self.config.server_name, Arc::clone(&self.tls)).await?;
            let (tx, rx) = mpsc::channel(16);
            let conn = Connection::start(stream, FrameCodec::bulk(), self.config.timeout, false, tx);
            hello(&conn, &self.config).await?;
            *bulk = Some((conn, rx));
        }
        let Some((conn, _)) = bulk.as_ref() else {
            return Err(ClientError::Closed);
        };
        f(conn).await
    }

    /// Fetches the full offline list on the bulk port, checks its digest and chunk count,
    /// and acknowledges it.
    pub async fn fetch_offline_list(&self) -> Result<ReceivedOfflineList, ClientError> {
        self.with_bulk(async |conn: &Connection| {
            let (seq, mut rx) = conn.send_expecting(&Message::OfflineListGet).await?;
            let result = async {
                let Message::OfflineListBegin(begin) = conn.recv(&mut rx).await? else {
                    return Err(ClientError::Unexpected("offline list without a begin"));
                };
                let mut digest = Sha256::new();
                let mut entries = Vec::new();
                let mut chunks = 0u32;
                loop {
                    match conn.recv(&mut rx).await? {
                        Message::OfflineListChunk(chunk) => {
                            if chunk.index != chunks {
                                return Err(ClientError::Integrity("offline list chunk out of order"));
                            }
                            let mut body = bytes::BytesMut::new();
                            Message::OfflineListChunk(chunk.clone()).encode_body(&mut body)?;
                            digest.update(&body);
                            entries.extend(chunk.entries);
                            chunks += 1;
                        }
                        Message::OfflineListEnd(sha) => {
                            if sha != <[u8; 32]>::from(digest.finalize()) {
                                return Err(ClientError::Integrity("offline list digest"));
                            }
                            if chunks != begin.chunks {
                                return Err(ClientError::Integrity("offline list chunk count"));
                            }
                            break;
                        }
                        other => return Err(ClientError::Unexpected(other.name())),
                    }
                }
                Ok(ReceivedOfflineList { begin, entries })
            }
            .await;
            conn.forget(seq);
            let list = result?;
            conn.tell(&Message::OfflineListAck(list.begin.revision), 0).await?;
            Ok(list)
        })
        .await
    }

    /// Downloads a firmware image on the bulk port from `resume.len()` on (pass what a
    /// broken download already holds), `chunk` bytes at a time, and checks its SHA-256.
    pub async fn fetch_firmware(&self, version: &str, resume: Vec<u8>, chunk: u32) -> Result<Vec<u8>, ClientError> {
        let chunk = chunk.clamp(1, u32::try_from(MAX_FIRMWARE_CHUNK).unwrap_or(u32::MAX));
        self.with_bulk(async |conn: &Connection| {
            let mut image = resume;
            loop {
                let get = Message::FirmwareGet(FirmwareGet {
                    version: version.to_owned(),
                    offset: u64::try_from(image.len()).unwrap_or(u64::MAX),
                    max_len: chunk,
                });
                let Message::FirmwareChunk(part) = conn.request(&get).await? else {
                    return Err(ClientError::Unexpected("firmware answer"));
                };
                image.extend_from_slice(&part.data);
                let have = u64::try_from(image.len()).unwrap_or(u64::MAX);
                if have >= part.size || part.data.is_empty() {
                    if have != part.size || <[u8; 32]>::from(Sha256::digest(&image)) != part.sha256 {
                        return Err(ClientError::Integrity("firmware digest"));
                    }
                    return Ok(image);
                }
            }
        })
        .await
    }

    /// Hangs up the bulk session, as a gateway done with its transfers does; the next
    /// transfer dials again.
    pub async fn close_bulk(&self) {
        if let Some((conn, _)) = self.bulk.lock().await.take() {
            conn.dead.cancel();
        }
    }

    /// Closes both sessions.
    pub async fn close(self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.abort();
        }
        self.control.dead.cancel();
        if let Some((conn, _)) = self.bulk.lock().await.take() {
            conn.dead.cancel();
        }
    }
}

impl Drop for IqClient {
    fn drop(&mut self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.abort();
        }
    }
}
