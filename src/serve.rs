//! `keyway serve`: the main job. Opens the node (store, plugin host, snapshot), serves the
//! admin HTTP API and the IQ link (TLS on ports 40000 and 40001), and shuts down without
//! losing anything acknowledged.
//!
//! Serving is hardened below axum, on hyper-util's connection builder: a timeout for
//! reading request headers (a slow client cannot hold a connection forever), a cap on
//! concurrent connections (a semaphore taken before `accept`), body size limits and a
//! request timeout (tower-http), and no CORS layer unless origins are configured.
//!
//! Start-up is honest: the listener opens first, `/livez` answers at once, and `/readyz`
//! and every API route answer 503 until the snapshot is loaded and the bundle verified.
//! SIGTERM or Ctrl-C stops accepting, drains in-flight requests, flushes the entries
//! queue and closes the database.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use keyway_node::{Node, NodeConfig};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `keyway serve`'s configuration: every flag also reads an environment variable.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Where Keyway keeps its data: the SQLite database, the mail outbox file, the IQ
    /// link's certificate authorities. Created on first start.
    #[arg(long, env = "KEYWAY_DATA_DIR", default_value = "keyway-data")]
    pub data_dir: PathBuf,
    /// The database: `sqlite://PATH` (default: `keyway.db` in the data directory) or
    /// `postgres://...` for several nodes sharing one database.
    #[arg(long, env = "KEYWAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The address the HTTP API listens on.
    #[arg(long, env = "KEYWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// The policy bundle directory to run when the database has no active bundle.
    #[arg(long, env = "KEYWAY_BUNDLE", default_value = "policies/default")]
    pub bundle: PathBuf,
    /// This node's name (logs, PostgreSQL `application_name`).
    #[arg(long, env = "KEYWAY_NODE_NAME", default_value = "main")]
    pub node_name: String,
    /// The URL people reach this server at, used in e-mailed links (default: the HTTP
    /// address).
    #[arg(long, env = "KEYWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// An SMTP relay for mail (`smtp://host:port`, `smtps://user:pass@host`). Without one,
    /// mail is appended to `outbox.mail` in the data directory.
    #[arg(long, env = "KEYWAY_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Log format.
    #[arg(long, env = "KEYWAY_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// The largest request body accepted, in bytes (firmware and plugin uploads have their
    /// own caps).
    #[arg(long, env = "KEYWAY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "KEYWAY_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, env = "KEYWAY_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// The most HTTP connections open at once; more wait to be accepted.
    #[arg(long, env = "KEYWAY_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Browser origins allowed by CORS, comma-separated. None (the default) means no CORS
    /// headers at all.
    #[arg(long, env = "KEYWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// The address IQs dial for their control session (decisions, pushes, entries).
    #[arg(long, env = "KEYWAY_LINK_CONTROL_ADDR", default_value = "0.0.0.0:40000")]
    pub link_control_addr: SocketAddr,
    /// The address IQs dial for bulk transfers (offline lists, firmware).
    #[arg(long, env = "KEYWAY_LINK_BULK_ADDR", default_value = "0.0.0.0:40001")]
    pub link_bulk_addr: SocketAddr,
    /// The host names IQs dial, written into the link's server certificate (default: the
    /// public URL's host and `localhost`).
    #[arg(long, env = "KEYWAY_LINK_NAMES", value_delimiter = ',')]
    pub link_names: Vec<String>,
    /// Let webhooks point at loopback, private and link-local addresses (off by default:
    /// a site admin must not reach into the network Keyway runs in).
    #[arg(long, env = "KEYWAY_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Seconds to drain in-flight requests at shutdown.
    #[arg(long, env = "KEYWAY_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Milliseconds a session, API token or site membership read for authentication is
    /// reused at most (0: read the database on every request). Any change to them, on
    /// this node or another, invalidates the cache at once whatever this is.
    #[arg(long, env = "KEYWAY_AUTH_CACHE_TTL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub auth_cache_ttl_ms: u64,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory cannot be made or used.
    #[error("cannot use the data directory `{path}`: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bundle directory does not exist.
    #[error("no policy bundle at `{0}` (run from the repository root, or pass --bundle)")]
    NoBundle(PathBuf),
    /// The HTTP address cannot be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A flag's value is not usable.
    #[error("{0}")]
    Config(String),
    /// The node did not open.
    #[error("the node does not start: {0}")]
    Node(#[from] keyway_node::NodeError),
    /// The IQ link did not start.
    #[error("the IQ link does not start: {0}")]
    Link(#[from] keyway_link::LinkError),
}

/// What the health and metrics routes read.
#[derive(Clone)]
struct Shared {
    node: Arc<OnceLock<Node>>,
    app: Arc<OnceLock<Router>>,
    http_metrics: Arc<OnceLock<RenderMetrics>>,
    link_metrics: Arc<OnceLock<RenderMetrics>>,
}

/// Appends Prometheus text to a buffer.
pub type RenderMetrics = Box<dyn Fn(&mut String) + Send + Sync>;

/// Sets up logging for the process.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colours only for a person at a terminal, not in files and journals.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The node's configuration from the flags.
pub fn node_config(args: &ServeArgs) -> Result<NodeConfig, ServeError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|source| ServeError::DataDir {
        path: args.data_dir.clone(),
        source,
    })?;
    let url = match &args.database_url {
        Some(url) if url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            url.clone()
        }
        Some(url) => {
            return Err(ServeError::Config(format!(
                "--database-url must start with `sqlite://` or `postgres://`, found `{}`",
                url.split(':').next().unwrap_or_default()
            )));
        }
        None => keyway_store::default_url(&args.data_dir),
    };
    if !args.bundle.join("bundle.toml").is_file() {
        return Err(ServeError::NoBundle(args.bundle.clone()));
    }
    let mut config = NodeConfig::new(url);
    config.store = config.store.node(args.node_name.clone());
    config.store.auth_cache_ttl = Duration::from_millis(args.auth_cache_ttl_ms);
    config.bundle_dir = Some(args.bundle.clone());
    config.plugin_cache_dir = Some(args.data_dir.join("plugin-cache"));
    Ok(config)
}

/// Run the server until SIGTERM or Ctrl-C.
///
/// # Errors
/// Bad configuration, an address in use, a database that does not open.
pub async fn serve(
    args: ServeArgs,
    api: impl FnOnce(Node, &str, keyway_api::LinkAdvert) -> Result<ApiParts, String>,
) -> Result<(), ServeError> {
    let config = node_config(&args)?;
    let listener = TcpListener::bind(args.http_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.http_addr,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.http_addr,
        source,
    })?;
    let shared = Shared {
        node: Arc::new(OnceLock::new()),
        app: Arc::new(OnceLock::new()),
        http_metrics: Arc::new(OnceLock::new()),
        link_metrics: Arc::new(OnceLock::new()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(accept_loop(
        listener,
        outer_router(shared.clone(), &args),
        Arc::new(Semaphore::new(args.max_connections as usize)),
        Duration::from_secs(args.header_timeout_secs),
        stop_rx,
        Duration::from_secs(args.shutdown_grace_secs),
    ));
    tracing::info!(url = %format!("http://{local}"), "listening; starting the node");

    let node = Node::open(config).await?;
    if let Err(e) = adopt_bundle(&node, &args.bundle).await {
        node.close().await;
        return Err(e);
    }
    let public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{local}"));
    let backend = Arc::new(keyway_link::NodeBackend::new(
        node.clone(),
        keyway_link::NodeBackendConfig::default(),
    ));
    node.set_door_commands(backend.door_commands());
    let hubs = Arc::clone(&backend);
    let mut link_config = keyway_link::LinkConfig::new(args.data_dir.clone(), link_names(&args, &public_url));
    link_config.control_addr = args.link_control_addr;
    link_config.bulk_addr = args.link_bulk_addr;
    let link = match keyway_link::LinkServer::start(link_config, backend).await {
        Ok(link) => link,
        Err(e) => {
            node.close().await;
            return Err(ServeError::Link(e));
        }
    };
    // The API tells installers where IQs dial, so it is made once the link listens (its
    // ports may have been chosen by the system).
    let advert = keyway_api::LinkAdvert {
        ca_file: link_dir(&args.data_dir).join("ca.der"),
        control_port: link.control_addr().port(),
        bulk_port: link.bulk_addr().port(),
        server_names: link_names(&args, &public_url),
    };
    let parts = match api(node.clone(), &public_url, advert) {
        Ok(parts) => parts,
        Err(e) => {
            link.shutdown(Duration::from_secs(args.shutdown_grace_secs)).await;
            node.close().await;
            return Err(ServeError::Config(e));
        }
    };
    let _ = shared.node.set(node.clone());
    let _ = shared.http_metrics.set(parts.metrics);
    let _ = shared
        .link_metrics
        .set(link_metrics(link.session_counter(), move || hubs.push_hubs()));
    let _ = shared.app.set(parts.router);
    let parts_close_streams = parts.close_streams;
    let status = node.store().status();
    println!(
        "keyway is ready at {public_url} (revision r{}, bundle `{}`)",
        status.applied.0,
        node.policy().bundle().name()
    );
    println!("  API documentation: {public_url}/v1/docs");
    println!(
        "  IQ link: control {}, bulk {} (TLS; IQs enrol with a one-time code)",
        link.control_addr(),
        link.bulk_addr()
    );
    println!(
        "  the instance operator: keyway admin create-operator --email you@example.org (password on standard input)"
    );
    println!("  anyone else: sign up with POST {public_url}/v1/accounts");
    match &args.smtp_url {
        Some(_) => println!("  mail goes through the configured SMTP relay"),
        None => println!(
            "  no SMTP relay configured: mail is written to {}",
            mail_file(&args.data_dir).display()
        ),
    }

    shutdown_signal().await;
    tracing::info!("shutting down: draining requests");
    (parts_close_streams)();
    let _ = stop_tx.send(true);
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "the HTTP server task ended badly");
    }
    link.shutdown(Duration::from_secs(args.shutdown_grace_secs)).await;
    node.close().await;
    tracing::info!("stopped; entries flushed and the database closed");
    Ok(())
}

/// Store the `--bundle` directory and put it in force when the database has no bundle
/// in force (a first start), so that every node runs one stored bundle and an operator's
/// later activation can be rolled back to it. Two nodes starting at once may both try:
/// the loser finds the winner's bundle in force.
async fn adopt_bundle(node: &Node, dir: &std::path::Path) -> Result<(), ServeError> {
    if node
        .store()
        .policy_records()
        .active_bundle(None)
        .await
        .map_err(keyway_node::NodeError::from)?
        .is_some()
    {
        return Ok(());
    }
    match node.adopt_bundle_dir(keyway_node::SYSTEM_ACTOR, dir).await {
        Ok((bundle, _)) => {
            tracing::info!(
                bundle = bundle.name,
                version = bundle.version,
                "policy bundle stored and put in force"
            );
            Ok(())
        }
        Err(e) => match node.store().policy_records().active_bundle(None).await {
            Ok(Some(_)) => {
                tracing::warn!(error = %e, "another node stored the first bundle first");
                Ok(())
            }
            _ => Err(e.into()),
        },
    }
}

/// The host names the link's server certificate carries: `--link-names`, or else the
/// host of the public URL and `localhost`.
#[must_use]
pub fn link_names(args: &ServeArgs, public_url: &str) -> Vec<String> {
    let mut names = args.link_names.clone();
    if names.is_empty() {
        let host = public_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split([':', '/']).next())
            .unwrap_or("localhost")
            .to_owned();
        names.push(host);
        names.push("localhost".to_owned());
    }
    names
}

/// Where the link keeps its certificate authorities (PROTOCOL.md, 2.1).
#[must_use]
fn link_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("link")
}

/// What the API crate hands the server.
pub struct ApiParts {
    /// Every `/v1` route.
    pub router: Router,
    /// Appends the API's own Prometheus text (HTTP requests by route and status).
    pub metrics: RenderMetrics,
    /// Ends the API's live streams, called when shutdown begins so draining does not
    /// wait on them.
    pub close_streams: Box<dyn FnOnce() + Send>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn outer_router(shared: Shared, args: &ServeArgs) -> Router {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let mut router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(forward)
        .with_state(shared)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(args.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(args.request_timeout_secs),
        ));
    if !args.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = args
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
            .collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods(tower_http::cors::Any)
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        );
    }
    router
}

fn starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, "1"),
        ],
        r#"{"code":"starting","message":"keyway is starting: the snapshot is loading","status":503}"#,
    )
        .into_response()
}

async fn readyz(State(shared): State<Shared>) -> Response {
    if shared.app.get().is_some() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        starting()
    }
}

async fn forward(State(shared): State<Shared>, request: Request<Body>) -> Response {
    match shared.app.get() {
        Some(app) => match app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => starting(),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let mut out = String::new();
    if let Some(node) = shared.node.get() {
        render_node_metrics(node, &mut out);
    }
    if let Some(render) = shared.http_metrics.get() {
        render(&mut out);
    }
    if let Some(render) = shared.link_metrics.get() {
        render(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The IQ link's gauges: open sessions by port, and the site hubs that push to them.
fn link_metrics(
    sessions: keyway_link::SessionCounter,
    hubs: impl Fn() -> usize + Send + Sync + 'static,
) -> RenderMetrics {
    Box::new(move |out: &mut String| {
        let (control, bulk) = sessions();
        let _ = writeln!(out, "# HELP keyway_link_sessions IQ sessions open, by port.");
        let _ = writeln!(out, "# TYPE keyway_link_sessions gauge");
        let _ = writeln!(out, "keyway_link_sessions{{port=\"control\"}} {control}");
        let _ = writeln!(out, "keyway_link_sessions{{port=\"bulk\"}} {bulk}");
        let _ = writeln!(
            out,
            "# HELP keyway_link_push_hubs Sites whose connected IQs this node pushes changes to."
        );
        let _ = writeln!(out, "# TYPE keyway_link_push_hubs gauge");
        let _ = writeln!(out, "keyway_link_push_hubs {}", hubs());
    })
}

fn render_node_metrics(node: &Node, out: &mut String) {
    let _ = writeln!(out, "# HELP keyway_decisions_total Decisions by effect and reason.");
    let _ = writeln!(out, "# TYPE keyway_decisions_total counter");
    for (effect, reason, n) in node.metrics().counts() {
        let _ = writeln!(
            out,
            "keyway_decisions_total{{effect=\"{effect}\",reason=\"{reason}\"}} {n}"
        );
    }
    let status = node.store().status();
    let _ = writeln!(
        out,
        "# HELP keyway_revision_applied The revision this node's snapshot holds."
    );
    let _ = writeln!(out, "# TYPE keyway_revision_applied gauge");
    let _ = writeln!(out, "keyway_revision_applied {}", status.applied.0);
    let _ = writeln!(
        out,
        "# HELP keyway_follower_lag Revisions committed in the database and not yet applied here."
    );
    let _ = writeln!(out, "# TYPE keyway_follower_lag gauge");
    let _ = writeln!(out, "keyway_follower_lag {}", status.lag);
    let _ = writeln!(
        out,
        "# HELP keyway_store_publish_seconds The last local write's commit-to-visible time."
    );
    let _ = writeln!(out, "# TYPE keyway_store_publish_seconds gauge");
    let _ = writeln!(
        out,
        "keyway_store_publish_seconds {}",
        node.store().last_publish_latency().as_secs_f64()
    );
    let entries = node.store().entries().stats();
    let _ = writeln!(
        out,
        "# HELP keyway_entries_queue_depth Entries waiting for the batched writer."
    );
    let _ = writeln!(out, "# TYPE keyway_entries_queue_depth gauge");
    let _ = writeln!(out, "keyway_entries_queue_depth {}", entries.queued);
    let _ = writeln!(
        out,
        "# HELP keyway_entries_committed_total Entries committed, by writer: SQLite's background \
         writer (idle priority) takes the batches nobody waits for while the queue is short."
    );
    let _ = writeln!(out, "# TYPE keyway_entries_committed_total counter");
    let main = entries.committed.saturating_sub(entries.committed_in_background);
    let _ = writeln!(out, "keyway_entries_committed_total{{writer=\"main\"}} {main}");
    let _ = writeln!(
        out,
        "keyway_entries_committed_total{{writer=\"background\"}} {}",
        entries.committed_in_background
    );
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    connections: Arc<Semaphore>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request.map(Body::new))
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after the grace period were cut");
    }
}

/// Where mail goes when no SMTP relay is configured.
#[must_use]
pub fn mail_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("outbox.mail")
}
