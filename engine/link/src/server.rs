//! The link server: the two TLS listeners, the caps on sessions, the registry of live
//! sessions per IQ, enrolment, and graceful shutdown.
//!
//! Modelled on mini-redis's server: a semaphore caps the sessions in total (a listener
//! waits for a permit before it accepts, so excess connections wait in the TCP backlog),
//! and shutdown is a broadcast (a root [`CancellationToken`] whose children are the
//! sessions'); [`LinkServer::shutdown`] waits until every session has said goodbye.
//! The session loops themselves are in `session.rs`.

use crate::backend::{CertIdentity, IqProfile, LinkBackend, Report, SecurityEvent};
use crate::codec::FrameCodec;
use crate::conn::{FrameReader, Outbox, spawn_writer};
use crate::message::{Enrolled, ErrorCode, ErrorFrame, Hello, Message, VERSION_MAX, VERSION_MIN};
use crate::pki::{LinkPki, PkiError, identity_from_cert};
use crate::session;
use arc_swap::ArcSwap;
use keyway_core::IqId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The link's configuration.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The control port's address (default port 40000).
    pub control_addr: SocketAddr,
    /// The bulk port's address (default port 40001).
    pub bulk_addr: SocketAddr,
    /// The node's data directory; certificates live in its `link/` folder.
    pub data_dir: PathBuf,
    /// The names IQs dial (DNS names or IP addresses), put in the server certificate.
    pub server_names: Vec<String>,
    /// How often IQs send heartbeats; 3 missed mark an IQ offline.
    pub heartbeat: Duration,
    /// Sessions in total, both ports.
    pub max_sessions: usize,
    /// Sessions per IQ and port.
    pub max_sessions_per_iq: usize,
    /// Frames queued per session before the IQ counts as not reading.
    pub session_queue: usize,
    /// Longest a frame write may take.
    pub write_timeout: Duration,
    /// Longest the TLS handshake plus HELLO may take.
    pub handshake_timeout: Duration,
    /// Longest a bulk connection may stay idle.
    pub bulk_idle_timeout: Duration,
}

impl LinkConfig {
    /// The defaults of PROTOCOL.md section 9, listening on `0.0.0.0:40000` and
    /// `0.0.0.0:40001`.
    #[must_use]
    pub fn new(data_dir: PathBuf, server_names: Vec<String>) -> Self {
        LinkConfig {
            control_addr: SocketAddr::from(([0, 0, 0, 0], 40_000)),
            bulk_addr: SocketAddr::from(([0, 0, 0, 0], 40_001)),
            data_dir,
            server_names,
            heartbeat: Duration::from_secs(2),
            max_sessions: 20_000,
            max_sessions_per_iq: 2,
            session_queue: 256,
            write_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            bulk_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What can stop the link from starting.
#[derive(Debug, Error)]
pub enum LinkError {
    /// A listener could not bind.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The certificates could not be loaded or made.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// Which port a session is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PortKind {
    Control,
    Bulk,
}

#[derive(Default)]
struct IqSessions {
    control: Vec<(u64, CancellationToken)>,
    bulk: Vec<(u64, CancellationToken)>,
}

impl IqSessions {
    fn port(&mut self, port: PortKind) -> &mut Vec<(u64, CancellationToken)> {
        match port {
            PortKind::Control => &mut self.control,
            PortKind::Bulk => &mut self.bulk,
        }
    }
}

/// State shared by the listeners and every session.
pub(crate) struct Shared<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) config: LinkConfig,
    pki: LinkPki,
    acceptor: ArcSwap<TlsAcceptor>,
    pub(crate) shutdown: CancellationToken,
    registry: Mutex<HashMap<IqId, IqSessions>>,
    next_session: AtomicU64,
}

/// A session's place in the registry; dropping it removes the session.
pub(crate) struct Registration<B: LinkBackend> {
    shared: Arc<Shared<B>>,
    iq: IqId,
    port: PortKind,
    id: u64,
    /// Cancelled when the session must close: shutdown (a child of the root token) or
    /// the IQ's certificate was revoked.
    pub(crate) kill: CancellationToken,
}

impl<B: LinkBackend> Registration<B> {
    /// Whether this was the IQ's last session on its port.
    pub(crate) fn is_last_on_port(&self) -> bool {
        let registry = self.shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.get(&self.iq).is_none_or(|s| match self.port {
            PortKind::Control => s.control.iter().all(|(id, _)| *id == self.id),
            PortKind::Bulk => s.bulk.iter().all(|(id, _)| *id == self.id),
        })
    }
}

impl<B: LinkBackend> Drop for Registration<B> {
    fn drop(&mut self) {
        let mut registry = self.shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sessions) = registry.get_mut(&self.iq) {
            sessions.port(self.port).retain(|(id, _)| *id != self.id);
            if sessions.control.is_empty() && sessions.bulk.is_empty() {
                registry.remove(&self.iq);
            }
        }
    }
}

impl<B: LinkBackend> Shared<B> {
    /// Registers a session of `iq` on `port`, unless the IQ is at its cap there.
    fn register(self: &Arc<Self>, iq: IqId, port: PortKind) -> Option<Registration<B>> {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let sessions = registry.entry(iq).or_default().port(port);
        if sessions.len() >= self.config.max_sessions_per_iq {
            return None;
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let kill = self.shutdown.child_token();
        sessions.push((id, kill.clone()));
        Some(Registration {
            shared: Arc::clone(self),
            iq,
            port,
            id,
            kill,
        })
    }

    /// Closes every session of `iq` at once (its certificate was revoked).
    pub(crate) fn kill_iq(&self, iq: IqId) {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sessions) = registry.get(&iq) {
            for (_, token) in sessions.control.iter().chain(sessions.bulk.iter()) {
                token.cancel();
            }
        }
    }

    fn refresh_acceptor(&self) -> Result<(), PkiError> {
        let config = self.pki.server_config()?;
        self.acceptor.store(Arc::new(TlsAcceptor::from(config)));
        Ok(())
    }
}

/// A running link: both listeners and their sessions.
pub struct LinkServer<B: LinkBackend> {
    shared: Arc<Shared<B>>,
    control_addr: SocketAddr,
    bulk_addr: SocketAddr,
    done_rx: mpsc::Receiver<()>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

/// Reads how many sessions are open on each port (control, bulk).
pub type SessionCounter = Arc<dyn Fn() -> (usize, usize) + Send + Sync>;

impl<B: LinkBackend> std::fmt::Debug for LinkServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkServer")
            .field("control_addr", &self.control_addr)
            .field("bulk_addr", &self.bulk_addr)
            .finish_non_exhaustive()
    }
}

impl<B: LinkBackend> LinkServer<B> {
    /// Opens the certificate store, binds both listeners and starts accepting. Must be
    /// called within a tokio runtime.
    pub async fn start(config: LinkConfig, backend: Arc<B>) -> Result<LinkServer<B>, LinkError> {
        let pki = LinkPki::open(&config.data_dir, &config.server_names)?;
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let control = TcpListener::bind(config.control_addr)
            .await
            .map_err(|source| LinkError::Bind {
                addr: config.control_addr,
                source,
            })?;
        let bulk = TcpListener::bind(config.bulk_addr)
            .await
            .map_err(|source| LinkError::Bind {
                addr: config.bulk_addr,
                source,
            })?;
        let control_addr = control.local_addr().map_err(|source| LinkError::Bind {
            addr: config.control_addr,
            source,
        })?;
        let bulk_addr = bulk.local_addr().map_err(|source| LinkError::Bind {
            addr: config.bulk_addr,
            source,
        })?;
        let limit = Arc::new(Semaphore::new(config.max_sessions));
        let shared = Arc::new(Shared {
            backend,
            config,
            pki,
            acceptor: ArcSwap::from_pointee(acceptor),
            shutdown: CancellationToken::new(),
            registry: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        });
        let (done_tx, done_rx) = mpsc::channel(1);
        let listeners = vec![
            tokio::spawn(accept_loop(
                Arc::clone(&shared),
                control,
                PortKind::Control,
                Arc::clone(&limit),
                done_tx.clone(),
            )),
            tokio::spawn(accept_loop(Arc::clone(&shared), bulk, PortKind::Bulk, limit, done_tx)),
        ];
        tracing::info!(%control_addr, %bulk_addr, "iq link listening");
        Ok(LinkServer {
            shared,
            control_addr,
            bulk_addr,
            done_rx,
            listeners,
        })
    }

    /// The control port's bound address.
    #[must_use]
    pub const fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The bulk port's bound address.
    #[must_use]
    pub const fn bulk_addr(&self) -> SocketAddr {
        self.bulk_addr
    }

    /// The link CA certificate (DER) IQs verify the server against; the API hands it out
    /// with each enrolment code.
    #[must_use]
    pub fn link_ca_der(&self) -> Vec<u8> {
        self.shared.pki.link_ca_der()
    }

    /// Closes every session of `iq` at once with `ERROR revoked`. The node calls it when
    /// it removes or resets an IQ, besides sending [`crate::PushEvent::Revoked`] (which
    /// only a control session hears): this also closes a bulk session open alone. New
    /// sessions are refused by [`crate::LinkBackend::authenticate`].
    pub fn close_sessions(&self, iq: IqId) {
        self.shared.kill_iq(iq);
    }

    /// A reader of how many sessions are open on each port (control, bulk), for metrics;
    /// it outlives moves of the server.
    #[must_use]
    pub fn session_counter(&self) -> SessionCounter {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || {
            let registry = shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
            registry
                .values()
                .fold((0, 0), |(c, b), s| (c + s.control.len(), b + s.bulk.len()))
        })
    }

    /// How many sessions are open for `iq` (control, bulk).
    #[must_use]
    pub fn sessions_of(&self, iq: IqId) -> (usize, usize) {
        let registry = self.shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.get(&iq).map_or((0, 0), |s| (s.control.len(), s.bulk.len()))
    }

    /// Stops accepting, tells every session `ERROR shutting_down`, and waits (at most
    /// `grace`) for them to close.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shared.shutdown.cancel();
        for listener in self.listeners.drain(..) {
            let _stopped = listener.await;
        }
        // Every session holds a clone of the sender; `recv` returns `None` once all are
        // gone.
        if tokio::time::timeout(grace, self.done_rx.recv()).await.is_err() {
            tracing::warn!("iq link sessions still open after the shutdown grace period");
        }
        tracing::info!("iq link stopped");
    }
}

async fn accept_loop<B: LinkBackend>(
    shared: Arc<Shared<B>>,
    listener: TcpListener,
    port: PortKind,
    limit: Arc<Semaphore>,
    done: mpsc::Sender<()>,
) {
    loop {
        let permit = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            permit = Arc::clone(&limit).acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            return;
        };
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "iq link accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let done = done.clone();
        tokio::spawn(async move {
            connection(shared, tcp, peer, port).await;
            drop(permit);
            drop(done);
        });
    }
}

/// Sends one fatal error frame on a fresh connection and closes it.
async fn refuse(outbox: &mut Outbox, code: ErrorCode, message: &str, reply_to: u32) {
    let frame = Message::Error(ErrorFrame {
        code,
        fatal: true,
        message: message.to_owned(),
    });
    let _sent = outbox.push(&frame, reply_to).await;
}

async fn connection<B: LinkBackend>(shared: Arc<Shared<B>>, tcp: TcpStream, peer: SocketAddr, port: PortKind) {
    let _nodelay = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + shared.config.handshake_timeout;
    let acceptor = shared.acceptor.load_full();
    let handshake = tokio::select! {
        handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => handshake,
        () = shared.shutdown.cancelled() => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "iq link tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "iq link tls handshake timed out");
            return;
        }
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| identity_from_cert(cert));
    let codec = match port {
        PortKind::Control => FrameCodec::control(),
        PortKind::Bulk => FrameCodec::bulk(),
    };
    let (read, write) = tokio::io::split(tls);
    let dead = CancellationToken::new();
    let (mut outbox, writer) = spawn_writer(
        write,
        codec,
        shared.config.session_queue,
        shared.config.write_timeout,
        dead.clone(),
    );
    let mut reader = FrameReader::new(read, codec);
    let first = tokio::select! {
        first = tokio::time::timeout_at(deadline, reader.next()) => first,
        () = shared.shutdown.cancelled() => {
            refuse(&mut outbox, ErrorCode::ShuttingDown, "node shutting down", 0).await;
            drop(outbox);
            let _closed = writer.await;
            return;
        }
    };
    let first = match first {
        Err(_) => {
            refuse(&mut outbox, ErrorCode::Timeout, "no hello in time", 0).await;
            None
        }
        Ok(Err(e)) => {
            if let Some(frame) = e.error_frame() {
                tracing::info!(%peer, error = %e, "iq link refused a bad first frame");
                let _sent = outbox.push(&Message::Error(frame), 0).await;
            }
            None
        }
        Ok(Ok(None)) => None,
        Ok(Ok(Some(first))) => Some(first),
    };
    if let Some(first) = first {
        match (first.message, port) {
            (Ok(Message::Enrol(enrol)), PortKind::Control) => {
                enrolment(&shared, &mut outbox, peer, first.seq, &enrol.code, &enrol.csr).await;
            }
            (Ok(Message::Hello(hello)), _) => {
                let session = SessionStart {
                    shared: &shared,
                    peer,
                    port,
                    seq: first.seq,
                };
                if let Some((profile, registration)) = session.admit(&mut outbox, identity, &hello).await {
                    match port {
                        PortKind::Control => {
                            session::control(
                                &shared,
                                &mut reader,
                                &mut outbox,
                                &dead,
                                profile,
                                registration,
                                &hello,
                                first.seq,
                            )
                            .await;
                        }
                        PortKind::Bulk => {
                            session::bulk(
                                &shared,
                                &mut reader,
                                &mut outbox,
                                &dead,
                                profile,
                                registration,
                                &hello,
                                first.seq,
                            )
                            .await;
                        }
                    }
                }
            }
            (Ok(other), _) => {
                let message = format!("`{}` before `HELLO`", other.name());
                refuse(&mut outbox, ErrorCode::UnexpectedMessage, &message, first.seq).await;
            }
            (Err(e), _) => {
                tracing::info!(%peer, error = %e, "iq link refused a bad first frame");
                refuse(
                    &mut outbox,
                    ErrorCode::Malformed,
                    "the first frame must be `HELLO`",
                    first.seq,
                )
                .await;
            }
        }
    }
    drop(outbox);
    let _closed = writer.await;
}

struct SessionStart<'a, B> {
    shared: &'a Arc<Shared<B>>,
    peer: SocketAddr,
    port: PortKind,
    seq: u32,
}

impl<B: LinkBackend> SessionStart<'_, B> {
    /// Checks the HELLO: a certificate, an IQ the backend accepts, a common version, room
    /// for one more session of the IQ.
    async fn admit(
        &self,
        outbox: &mut Outbox,
        identity: Option<Result<CertIdentity, PkiError>>,
        hello: &Hello,
    ) -> Option<(IqProfile, Registration<B>)> {
        let peer = self.peer;
        let identity = match identity {
            Some(Ok(identity)) => identity,
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "iq link: certificate without an iq identity");
                refuse(
                    outbox,
                    ErrorCode::Unauthenticated,
                    "certificate names no iq of this node",
                    self.seq,
                )
                .await;
                return None;
            }
            None => {
                refuse(
                    outbox,
                    ErrorCode::Unauthenticated,
                    "a client certificate is required",
                    self.seq,
                )
                .await;
                return None;
            }
        };
        let version = hello.max_version.min(VERSION_MAX);
        if version < hello.min_version || version < VERSION_MIN {
            let message = format!("server speaks {VERSION_MIN}..={VERSION_MAX}");
            refuse(outbox, ErrorCode::UnsupportedVersion, &message, self.seq).await;
            return None;
        }
        let profile = match self.shared.backend.authenticate(&identity).await {
            Ok(profile) if profile.iq == identity.iq && profile.site == identity.site => profile,
            Ok(_) | Err(crate::BackendError::Refused) => {
                tracing::warn!(
                    %peer,
                    iq = %identity.iq,
                    site = %identity.site,
                    serial = %identity.serial,
                    security_event = true,
                    "iq link refused a revoked or unknown certificate"
                );
                let _reported = self
                    .shared
                    .backend
                    .report(identity.iq, Report::Security(SecurityEvent::RevokedCertificate))
                    .await;
                refuse(outbox, ErrorCode::Revoked, "certificate revoked", self.seq).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(%peer, iq = %identity.iq, error = %e, "iq link could not authenticate");
                refuse(outbox, ErrorCode::Unavailable, "cannot authenticate now", self.seq).await;
                return None;
            }
        };
        let Some(registration) = self.shared.register(profile.iq, self.port) else {
            tracing::warn!(%peer, iq = %profile.iq, "iq link: too many sessions for this iq");
            refuse(
                outbox,
                ErrorCode::TooManySessions,
                "too many sessions for this iq",
                self.seq,
            )
            .await;
            return None;
        };
        Some((profile, registration))
    }
}

/// The enrolment of PROTOCOL.md 2.2: check and consume the code, issue the certificate,
/// record it, answer ENROLLED.
async fn enrolment<B: LinkBackend>(
    shared: &Arc<Shared<B>>,
    outbox: &mut Outbox,
    peer: SocketAddr,
    seq: u32,
    code: &str,
    csr: &[u8],
) {
    let grant = match shared
        .backend
        .redeem_enrolment_code(&crate::enrol::normalize(code))
        .await
    {
        Ok(grant) => grant,
        Err(e) => {
            tracing::warn!(%peer, error = %e, security_event = true, "iq link refused an enrolment code");
            refuse(outbox, ErrorCode::EnrolmentRefused, "enrolment refused", seq).await;
            return;
        }
    };
    let issued = match shared.pki.issue(grant.site, grant.iq, csr) {
        Ok((issued, new_ca)) => {
            if new_ca && let Err(e) = shared.refresh_acceptor() {
                tracing::error!(error = %e, "iq link could not rebuild its tls configuration");
            }
            issued
        }
        Err(e) => {
            tracing::warn!(%peer, iq = %grant.iq, error = %e, "iq link could not issue a certificate");
            refuse(
                outbox,
                ErrorCode::EnrolmentRefused,
                "bad certificate signing request",
                seq,
            )
            .await;
            return;
        }
    };
    let site_ca = match shared.pki.site_ca_der(grant.site) {
        Ok(der) => der,
        Err(e) => {
            tracing::error!(error = %e, "iq link could not read a site ca");
            refuse(outbox, ErrorCode::Unavailable, "cannot enrol now", seq).await;
            return;
        }
    };
    let not_after = jiff::Timestamp::from_millisecond(issued.not_after_ms).unwrap_or(jiff::Timestamp::MAX);
    if let Err(e) = shared
        .backend
        .certificate_issued(grant.iq, &issued.serial, not_after)
        .await
    {
        tracing::warn!(iq = %grant.iq, error = %e, "iq link could not record a certificate");
        refuse(outbox, ErrorCode::Unavailable, "cannot enrol now", seq).await;
        return;
    }
    tracing::info!(%peer, iq = %grant.iq, site = %grant.site, serial = %issued.serial, "iq enrolled");
    let enrolled = Message::Enrolled(Enrolled {
        site: grant.site.get(),
        iq: grant.iq.get(),
        certificate: issued.der,
        site_ca,
        not_after: issued.not_after_ms,
    });
    if let Err(e) = outbox.push(&enrolled, seq).await {
        tracing::warn!(iq = %grant.iq, error = %e, "iq link could not send a certificate");
    }
}
