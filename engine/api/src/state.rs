//! `AppState`: the node, the configuration, the mailer, the rate limiters and the HTTP
//! metrics, shared by every handler.

use crate::config::{ApiConfig, RateLimit};
use crate::error::ApiError;
use crate::metrics::HttpMetrics;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use keyway_node::Node;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;

static BODY_LIMIT: AtomicUsize = AtomicUsize::new(1 << 20);

/// The body limit in force, for rejection messages.
pub(crate) fn body_limit() -> usize {
    BODY_LIMIT.load(Ordering::Relaxed)
}

/// Where mails go.
enum Mailer {
    /// Appended to a file.
    File {
        path: PathBuf,
        lock: tokio::sync::Mutex<()>,
    },
    /// Sent through an SMTP relay.
    Smtp(lettre::AsyncSmtpTransport<lettre::Tokio1Executor>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::File { path, .. } => f.debug_tuple("File").field(path).finish(),
            Mailer::Smtp(_) => f.write_str("Smtp"),
        }
    }
}

/// A keyed limiter with its settings.
pub(crate) struct Limiter {
    inner: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiter")
    }
}

impl Limiter {
    fn new(limit: RateLimit) -> Result<Limiter, ApiError> {
        let burst = NonZeroU32::new(limit.burst)
            .ok_or_else(|| ApiError::internal("a rate limit needs a burst of at least 1"))?;
        let quota = Quota::with_period(limit.per)
            .ok_or_else(|| ApiError::internal("a rate limit needs a positive period"))?
            .allow_burst(burst);
        Ok(Limiter {
            inner: DefaultKeyedRateLimiter::keyed(quota),
        })
    }

    /// Take one attempt for every key, or answer 429 with the longest wait.
    pub(crate) fn check(&self, keys: &[String]) -> Result<(), ApiError> {
        let clock = DefaultClock::default();
        let mut wait = None;
        for key in keys {
            if let Err(not_until) = self.inner.check_key(key) {
                let secs = not_until.wait_time_from(clock.now()).as_secs().max(1);
                wait = Some(wait.map_or(secs, |w: u64| w.max(secs)));
            }
        }
        if self.inner.len() > 100_000 {
            self.inner.retain_recent();
        }
        match wait {
            Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
            None => Ok(()),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) node: Node,
    pub(crate) config: ApiConfig,
    mailer: Mailer,
    pub(crate) login_limiter: Limiter,
    pub(crate) reset_limiter: Limiter,
    pub(crate) metrics: HttpMetrics,
    /// The client webhook deliveries go through.
    pub(crate) webhooks: reqwest::Client,
    pub(crate) notify_metrics: crate::notifier::NotifyMetrics,
    /// Set when the server stops: live streams end so that draining does not wait on them.
    closing: tokio::sync::watch::Sender<bool>,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .field("mailer", &self.inner.mailer)
            .finish_non_exhaustive()
    }
}

/// A plain-SMTP relay from `smtp://host[:port]` (port 25 by default). The relay is
/// expected on a trusted network (a local MTA); TLS to the relay is not built in.
fn smtp_relay(url: &str) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, ApiError> {
    let bad = || ApiError::internal(format!("the SMTP relay URL `{url}` is not `smtp://host[:port]`"));
    let rest = url.strip_prefix("smtp://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (rest, 25),
    };
    if host.is_empty() || host.contains(['/', '@', '?']) {
        return Err(bad());
    }
    Ok(
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .build(),
    )
}

impl AppState {
    /// The state for `node` with `config`.
    ///
    /// # Errors
    /// [`ApiError::Internal`] for an SMTP relay URL that does not parse or a rate limit
    /// with a zero burst or period.
    pub fn new(node: Node, config: ApiConfig) -> Result<AppState, ApiError> {
        let mailer = match &config.smtp_relay {
            Some(url) => Mailer::Smtp(smtp_relay(url)?),
            None => Mailer::File {
                path: config.mail_file.clone(),
                lock: tokio::sync::Mutex::new(()),
            },
        };
        BODY_LIMIT.store(config.max_body_bytes, Ordering::Relaxed);
        let webhooks = crate::notifier::webhook_client(config.webhook_timeout, config.webhook_allow_private)?;
        Ok(AppState {
            inner: Arc::new(Shared {
                login_limiter: Limiter::new(config.login_limit)?,
                reset_limiter: Limiter::new(config.reset_limit)?,
                node,
                config,
                mailer,
                metrics: HttpMetrics::default(),
                webhooks,
                notify_metrics: crate::notifier::NotifyMetrics::default(),
                closing: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// The node.
    #[must_use]
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// End every live stream (Server-Sent Events) now; call it when the server begins to
    /// stop, before it drains requests, which would otherwise wait on open streams.
    /// Clients reconnect with their last event id and lose nothing.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Whether the server is stopping, for live streams.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Append the HTTP metrics in Prometheus text format to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.metrics.render(out);
        self.inner.notify_metrics.render(out);
    }

    /// Send a mail (the body may carry a secret link: it is never logged).
    pub(crate) async fn send_mail(&self, to: &str, subject: &str, body: &str) -> Result<(), ApiError> {
        match &self.inner.mailer {
            Mailer::File { path, lock } => {
                let _guard = lock.lock().await;
                let text = format!(
                    "From: {}\nTo: {to}\nSubject: {subject}\n\n{body}\n.\n",
                    self.inner.config.mail_from
                );
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| ApiError::internal(format!("mail file `{}`: {e}", path.display())))?;
                file.write_all(text.as_bytes())
                    .await
                    .map_err(|e| ApiError::internal(format!("mail file `{}`: {e}", path.display())))?;
                // Tokio's file hands the write to a blocking thread and returns; without
                // the flush the caller could answer before the mail is in the file.
                file.flush()
                    .await
                    .map_err(|e| ApiError::internal(format!("mail file `{}`: {e}", path.display())))?;
                Ok(())
            }
            Mailer::Smtp(transport) => {
                use lettre::AsyncTransport;
                let message = lettre::Message::builder()
                    .from(
                        self.inner
                            .config
                            .mail_from
                            .parse()
                            .map_err(|e| ApiError::internal(format!("mail sender: {e}")))?,
                    )
                    .to(to
                        .parse()
                        .map_err(|e| ApiError::invalid(format!("`{to}` is not a mail address: {e}")))?)
                    .subject(subject)
                    .body(body.to_owned())
                    .map_err(|e| ApiError::internal(format!("mail: {e}")))?;
                transport.send(message).await.map_err(|e| ApiError::Unavailable {
                    cause: format!("smtp relay: {e}"),
                })?;
                Ok(())
            }
        }
    }
}
