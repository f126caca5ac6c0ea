//! The notification worker: drains the durable outbox, off every request path.
//!
//! Three kinds of row, each claimed with a lease so that two nodes never work on one row
//! and a node that dies mid-work only delays it until the lease ends:
//! - `event`: something happened on a site (an incident, a transferred ownership). The
//!   site's enabled e-mail settings whose event kind matches name the addresses; for each,
//!   the notify plugins of the bundle in force write the message (or decline to send
//!   one). Blocks, ownership transfers and vouchers near their cap reach the plugins as
//!   the ABI's administrative changes; tamper reaches plugins of ABI version 3 and later,
//!   the first to name it. Where no notify plugin of the bundle can take the event (none
//!   at all, or none that names its kind), Keyway's own plain message goes out. [`keyway_store::Store::expand_event`] then queues the
//!   e-mails and one delivery per subscribed webhook endpoint, and marks the event done,
//!   in one transaction.
//! - `email`: sent through the mailer (the SMTP relay, or the mail file).
//! - `webhook`: POSTed to the endpoint, signed: `Keyway-Signature: t=<unix>,v1=<hex>`
//!   where the hex is HMAC-SHA256 with the endpoint's secret over `<unix>.<body>`.
//!   `Keyway-Delivery` carries the outbox row's id, the same on every retry, for the
//!   receiver to drop duplicates (delivery is at least once). Redirects are not
//!   followed, and unless configured otherwise, no address on a loopback, private or
//!   link-local network is contacted.
//!
//! A failure is retried with exponential backoff and full jitter (30 s doubling to 6 h).
//! Delivered rows and webhook delivery history are kept 30 days, purged hourly.

use crate::error::ApiError;
use crate::state::AppState;
use hmac::{Hmac, Mac};
use keyway_plugin_host::abi::{Channel, Event, EventKind, NotificationSettings, NotifyInput, Recipient};
use keyway_store::{Named, OutboxItem, QueuedMail, StoreError, WebhookAttempt, event_matches};
use rand::{Rng, SeedableRng};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Rows claimed at once.
const BATCH: u32 = 32;
/// How long a claim keeps a row from other senders, in seconds.
const LEASE_SECS: i64 = 120;
/// The first retry delay, in seconds; it doubles with each failure.
const FIRST_RETRY_SECS: i64 = 30;
/// The longest retry delay, in seconds.
const MAX_RETRY_SECS: i64 = 6 * 3600;
/// How long delivered notifications and webhook delivery history are kept, in seconds.
const RETENTION_SECS: i64 = 30 * 24 * 3600;
/// How often the worker purges what is past retention.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The signature header of a webhook delivery.
pub const SIGNATURE_HEADER: &str = "keyway-signature";
/// The header carrying a delivery's idempotency id.
pub const DELIVERY_HEADER: &str = "keyway-delivery";

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct NotifyMetrics {
    outbox_depth: AtomicU64,
    events: AtomicU64,
    sent: [AtomicU64; 2],
    failed: [AtomicU64; 2],
    plugin_failures: AtomicU64,
}

const CHANNEL_NAMES: [&str; 2] = ["email", "webhook"];

impl NotifyMetrics {
    fn count(&self, channel: usize, ok: bool) {
        let counters = if ok { &self.sent } else { &self.failed };
        counters[channel].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# TYPE keyway_notification_outbox_depth gauge");
        let _ = writeln!(
            out,
            "keyway_notification_outbox_depth {}",
            self.outbox_depth.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE keyway_notification_events_expanded_total counter");
        let _ = writeln!(
            out,
            "keyway_notification_events_expanded_total {}",
            self.events.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE keyway_notifications_sent_total counter");
        for (i, name) in CHANNEL_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "keyway_notifications_sent_total{{channel=\"{name}\"}} {}",
                self.sent[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE keyway_notification_failures_total counter");
        for (i, name) in CHANNEL_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "keyway_notification_failures_total{{channel=\"{name}\"}} {}",
                self.failed[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE keyway_notify_plugin_failures_total counter");
        let _ = writeln!(
            out,
            "keyway_notify_plugin_failures_total {}",
            self.plugin_failures.load(Ordering::Relaxed)
        );
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local,
/// shared (CGNAT), unspecified, broadcast, multicast or documentation space.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Why a webhook URL may not be used, when it may not: not http(s), no host, or (unless
/// private networks are allowed) a host that is a non-public address or `localhost`.
pub(crate) fn refuse_webhook_url(url: &str, allow_private: bool) -> Option<String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some(format!("`{url}` is not a URL"));
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some("a webhook URL is http:// or https://".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("a webhook URL carries no user name or password; the signature authenticates Keyway".to_owned());
    }
    let host = match parsed.host() {
        Some(host) => host,
        None => return Some("a webhook URL names a host".to_owned()),
    };
    if allow_private {
        return None;
    }
    let ip = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Some("a webhook may not point at this machine (`localhost`)".to_owned());
            }
            None
        }
    };
    match ip {
        Some(ip) if !is_public(ip) => Some(format!(
            "a webhook may not point at {ip}, a loopback, private or link-local address"
        )),
        _ => None,
    }
}

/// Resolves webhook hosts to public addresses only, so a name cannot lead a delivery
/// into the network Keyway runs in (also when the name's records change after the
/// endpoint was accepted).
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("`{host}` resolves to no public address").into();
                return Err(refused);
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client webhook deliveries use.
pub(crate) fn webhook_client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keyway-webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder
        .build()
        .map_err(|e| ApiError::internal(format!("webhook client: {e}")))
}

/// `t=<unix>,v1=<hex HMAC-SHA256 over "<unix>.<body>">`.
#[must_use]
pub fn signature(secret: &str, unix: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes a key of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// When a row that failed `attempts` times before is due again.
fn retry_at(now: jiff::Timestamp, attempts: u32) -> jiff::Timestamp {
    let exponent = attempts.min(20);
    let ceiling = FIRST_RETRY_SECS.saturating_mul(1_i64 << exponent).min(MAX_RETRY_SECS);
    // Full jitter in the upper half, so that endpoints that failed together do not
    // retry together.
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    crate::auth::after(now, rng.random_range(ceiling / 2..=ceiling))
}

/// The plugin ABI's name for event `kind` and the detail its plugin sees. Blocks,
/// ownership transfers and vouchers near their cap are administrative changes to the
/// ABI, their own kind leading the detail; `None` for a kind the ABI has no name for.
fn abi_event(kind: &str, detail: &str) -> Option<(EventKind, String)> {
    if let Some(named) = EventKind::from_code(kind) {
        return Some((named, detail.to_owned()));
    }
    match kind {
        "person.blocked" | "ownership.transferred" | "voucher.near_cap" => {
            let detail = if detail.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}: {detail}")
            };
            Some((EventKind::AdminChange, detail))
        }
        _ => None,
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl AppState {
    /// Work through the notifications due now: expand events, send e-mails, deliver to
    /// webhooks. Answers how many rows it handled. The worker of `keyway serve` calls it
    /// in a loop; tests call it to run the worker one step.
    ///
    /// # Errors
    /// When the outbox cannot be read; a failing row is retried later instead.
    pub async fn deliver_due_notifications(&self) -> Result<usize, ApiError> {
        let start = now();
        let items = self
            .node()
            .store()
            .notifications()
            .claim(start, crate::auth::after(start, LEASE_SECS), BATCH)
            .await?;
        let count = items.len();
        for item in items {
            let outcome = match item.channel.as_str() {
                "event" => self.expand(&item).await,
                "email" => self.send_email(&item).await,
                "webhook" => self.send_webhook(&item).await,
                other => {
                    tracing::error!(
                        id = item.id.get(),
                        channel = other,
                        "outbox row of an unknown channel left alone"
                    );
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(id = item.id.get(), channel = item.channel, error = %e, "notification step failed; retried later");
                let _ = self
                    .node()
                    .store()
                    .notifications()
                    .mark_failed(item.id, &e.to_string(), retry_at(now(), item.attempts))
                    .await;
            }
        }
        let depth = self.node().store().notifications().pending().await?;
        self.inner.notify_metrics.outbox_depth.store(depth, Ordering::Relaxed);
        Ok(count)
    }

    /// Run the worker until the server stops.
    pub(crate) async fn run_notifier(self) {
        let mut closing = self.closing();
        let mut last_purge: Option<Instant> = None;
        loop {
            if *closing.borrow() {
                return;
            }
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                last_purge = Some(Instant::now());
                match self
                    .node()
                    .store()
                    .notifications()
                    .purge_delivered(crate::auth::after(now(), -RETENTION_SECS))
                    .await
                {
                    Ok(n) => tracing::debug!(purged = n, "delivered notifications past retention purged"),
                    Err(e) => tracing::warn!(error = %e, "notification purge failed"),
                }
            }
            let handled = match self.deliver_due_notifications().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "notification worker cannot read the outbox");
                    0
                }
            };
            if handled < BATCH as usize {
                tokio::select! {
                    () = tokio::time::sleep(self.config().notify_poll) => {}
                    _ = closing.changed() => {}
                }
            }
        }
    }

    /// Start the notification worker on the current runtime; it ends when
    /// [`AppState::close_streams`] is called.
    #[must_use]
    pub fn spawn_notifier(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run_notifier())
    }

    async fn expand(&self, item: &OutboxItem) -> Result<(), ApiError> {
        let store = self.node().store();
        let event: serde_json::Value = serde_json::from_str(&item.payload)
            .map_err(|e| ApiError::internal(format!("event {} is not JSON: {e}", item.id)))?;
        let kind = item.target.as_str();
        let settings = store.notifications().settings(item.site).await?;
        let addresses: Vec<String> = settings
            .into_iter()
            .filter(|s| s.enabled && s.channel == "email" && event_matches(&s.event_kind, kind))
            .map(|s| s.target)
            .collect();
        let mut mails = Vec::new();
        if !addresses.is_empty() {
            let site_name = store
                .names()
                .get(Named::Site, item.site.0)
                .await?
                .unwrap_or_else(|| format!("site {}", item.site.0));
            let data = &event["data"];
            let door = self.named(Named::Door, data["door"].as_u64()).await?;
            let person = self.named(Named::Person, data["person"].as_u64()).await?;
            let detail = data["detail"].as_str().unwrap_or("").to_owned();
            let at = event["created_at"].as_i64().unwrap_or(item.created_at.as_second());
            for address in addresses {
                mails.extend(
                    self.compose(
                        &site_name,
                        kind,
                        at,
                        door.clone(),
                        person.clone(),
                        &detail,
                        data,
                        address,
                    )
                    .await,
                );
            }
        }
        self.inner.notify_metrics.events.fetch_add(1, Ordering::Relaxed);
        match store.notifications().expand_event(item.id, &mails, now()).await {
            Ok(_) => Ok(()),
            // Another node expanded it while this one's lease ran out: nothing to do.
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn named(&self, what: Named, id: Option<u64>) -> Result<Option<(u32, String)>, ApiError> {
        let Some(id) = id.and_then(|i| u32::try_from(i).ok()) else {
            return Ok(None);
        };
        let name = self.node().store().names().get(what, id).await?;
        Ok(Some((id, name.unwrap_or_else(|| format!("#{id}")))))
    }

    /// The e-mails for one address: the notify plugins' when the ABI can name the kind
    /// and the bundle has a notify plugin, else Keyway's plain message.
    #[expect(clippy::too_many_arguments, reason = "the parts of one event")]
    async fn compose(
        &self,
        site_name: &str,
        kind: &str,
        at: i64,
        door: Option<(u32, String)>,
        person: Option<(u32, String)>,
        detail: &str,
        data: &serde_json::Value,
        address: String,
    ) -> Vec<QueuedMail> {
        let bundle = self.node().policy().bundle();
        if let Some((abi_kind, plugin_detail)) = abi_event(kind, detail)
            && bundle.notifies(abi_kind)
        {
            let input = NotifyInput {
                event: Event {
                    kind: abi_kind,
                    at_unix: at,
                    door: door.clone(),
                    person: person.clone(),
                    detail: plugin_detail,
                },
                settings: NotificationSettings {
                    site_name: site_name.to_owned(),
                    owner: Recipient {
                        person: 0,
                        address: address.clone(),
                    },
                    channel: Channel::Email,
                    enabled: vec![abi_kind],
                },
            };
            let called = tokio::task::spawn_blocking(move || bundle.notify(&input)).await;
            match called {
                Ok(Ok(notifications)) => {
                    return notifications
                        .into_iter()
                        .filter(|n| n.channel == Channel::Email)
                        .map(|n| QueuedMail {
                            to: n.recipient.address,
                            subject: n.subject,
                            body: n.body,
                        })
                        .collect();
                }
                Ok(Err(e)) => {
                    self.inner
                        .notify_metrics
                        .plugin_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, kind, "the notify plugin failed; Keyway's own message goes out");
                }
                Err(e) => tracing::warn!(error = %e, kind, "the notify plugin's task failed"),
            }
        }
        let mut body = format!("{kind} on {site_name}");
        if let Some((_, name)) = &person {
            body.push_str(&format!(", by {name}"));
        }
        if let Some((_, name)) = &door {
            body.push_str(&format!(", at {name}"));
        }
        if !detail.is_empty() {
            body.push_str(&format!(": {detail}"));
        }
        body.push_str(&format!(
            "\n\n{}",
            serde_json::to_string_pretty(data).unwrap_or_default()
        ));
        vec![QueuedMail {
            to: address,
            subject: format!("{site_name}: {kind}"),
            body,
        }]
    }

    async fn send_email(&self, item: &OutboxItem) -> Result<(), ApiError> {
        let payload: serde_json::Value = serde_json::from_str(&item.payload)
            .map_err(|e| ApiError::internal(format!("mail {} is not JSON: {e}", item.id)))?;
        let subject = payload["subject"].as_str().unwrap_or("Keyway notification");
        let body = payload["body"].as_str().unwrap_or("");
        let sent = self.send_mail(&item.target, subject, body).await;
        self.inner.notify_metrics.count(0, sent.is_ok());
        sent?;
        self.node()
            .store()
            .notifications()
            .mark_delivered(item.id, now())
            .await?;
        Ok(())
    }

    async fn send_webhook(&self, item: &OutboxItem) -> Result<(), ApiError> {
        let store = self.node().store();
        let Some(id) = item.webhook else {
            return Err(ApiError::internal(format!("webhook row {} names no endpoint", item.id)));
        };
        // A removed endpoint takes its pending rows with it; nothing is left to send.
        let Some((hook, secret)) = store.notifications().webhook_with_secret(id).await? else {
            return Ok(());
        };
        let at = now();
        let started = Instant::now();
        let refused = refuse_webhook_url(&hook.url, self.config().webhook_allow_private);
        let (status, error) = match refused {
            Some(reason) => (None, Some(reason)),
            None => {
                let sent = self
                    .inner
                    .webhooks
                    .post(&hook.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature(&secret, at.as_second(), &item.payload))
                    .header(DELIVERY_HEADER, item.id.get().to_string())
                    .body(item.payload.clone())
                    .send()
                    .await;
                match sent {
                    Ok(answer) if answer.status().is_success() => (Some(answer.status().as_u16()), None),
                    Ok(answer) => (
                        Some(answer.status().as_u16()),
                        Some(format!("the receiver answered {}", answer.status())),
                    ),
                    Err(e) => (None, Some(e.without_url().to_string())),
                }
            }
        };
        self.inner.notify_metrics.count(1, error.is_none());
        let attempt = WebhookAttempt {
            outbox: item.id,
            at,
            status,
            error,
            duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
            retry_at: retry_at(at, item.attempts),
        };
        match store.notifications().record_webhook_attempt(&hook, &attempt).await {
            Ok(true) => {
                tracing::warn!(
                    webhook = hook.id.get(),
                    site = hook.site.0,
                    "webhook paused after failing repeatedly"
                );
                Ok(())
            }
            Ok(false) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_are_not_public() {
        let cases = [
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("93.184.216.34", true),
            ("2606:2800:220:1::1", true),
        ];
        for (ip, public) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn webhook_urls_refused_and_accepted() {
        let cases = [
            ("https://hooks.example.com/keyway", false, None),
            ("http://127.0.0.1:9000/", false, Some("127.0.0.1")),
            ("http://[::1]/", false, Some("::1")),
            ("http://localhost:9000/", false, Some("localhost")),
            ("http://169.254.169.254/latest", false, Some("169.254.169.254")),
            ("https://user:pw@example.com/", false, Some("password")),
            ("ftp://example.com/", false, Some("http")),
            ("not a url", false, Some("not a URL")),
            ("http://127.0.0.1:9000/", true, None),
        ];
        for (url, allow, refused) in cases {
            let got = refuse_webhook_url(url, allow);
            match refused {
                None => assert_eq!(got, None, "{url}"),
                Some(part) => assert!(got.as_deref().is_some_and(|r| r.contains(part)), "{url}: {got:?}"),
            }
        }
    }

    #[test]
    fn signature_is_hmac_sha256_over_time_and_body() {
        let sig = signature("Jefe", 1_800_000_000, "{}");
        assert!(sig.starts_with("t=1800000000,v1="), "{sig}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1800000000.{}");
        assert_eq!(
            sig,
            format!("t=1800000000,v1={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(sig, signature("Jefe", 1_800_000_001, "{}"), "the time is signed");
        assert_ne!(sig, signature("jefe", 1_800_000_000, "{}"), "the key matters");
    }

    #[test]
    fn event_kinds_as_the_plugin_abi_names_them() {
        let cases = [
            ("entry.denied", "no_right", Some((EventKind::EntryDenied, "no_right"))),
            ("incident.door_forced", "", Some((EventKind::DoorForced, ""))),
            ("person.blocked", "", Some((EventKind::AdminChange, "person.blocked"))),
            (
                "voucher.near_cap",
                "9 of 10",
                Some((EventKind::AdminChange, "voucher.near_cap: 9 of 10")),
            ),
            ("incident.tamper", "x", Some((EventKind::Tamper, "x"))),
            ("webhook.test", "", None),
        ];
        for (kind, detail, want) in cases {
            let got = abi_event(kind, detail);
            assert_eq!(got, want.map(|(k, d)| (k, d.to_owned())), "{kind}");
        }
    }

    #[test]
    fn retries_back_off_with_jitter_up_to_a_ceiling() {
        for attempts in 0..30 {
            let ceiling = (FIRST_RETRY_SECS << attempts.min(20)).min(MAX_RETRY_SECS);
            for _ in 0..20 {
                let wait = retry_at(jiff::Timestamp::from_second(1000).unwrap(), attempts).as_second() - 1000;
                assert!((ceiling / 2..=ceiling).contains(&wait), "{attempts}: {wait}");
            }
        }
    }
}
