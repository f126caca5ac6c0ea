//! A site's webhook endpoints, the expansion of queued events into deliveries, and each
//! endpoint's delivery history.
//!
//! Events (an incident, a transferred ownership, a denied entry) are queued in the
//! notification outbox as `event` rows, in the transaction that made them. The
//! notification worker claims an event, runs it through the notify plugin, and hands the
//! e-mails it produced to [`Notifications::expand_event`](crate::Notifications::expand_event), which in one transaction queues them,
//! queues one `webhook` row for each endpoint of the site subscribed to the event's kind,
//! and marks the event done: an event is expanded exactly once, and no delivery is lost
//! to a crash between the steps.
//!
//! A delivery attempt is recorded with [`Notifications::record_webhook_attempt`](crate::Notifications::record_webhook_attempt): the history
//! row, the outbox row's new state and the endpoint's run of failures move together. At
//! [`PAUSE_AFTER_FAILURES`] failures in a row the endpoint is paused: its pending rows
//! are held (not claimed) until [`Notifications::resume_webhook`](crate::Notifications::resume_webhook), and the site's owner is sent
//! an e-mail saying so, queued in the same transaction.

use crate::codec::id32;
use crate::dispatch::secrets;
use crate::error::StoreError;
use crate::ids::{DeliveryId, OutboxId, WebhookId};
use jiff::Timestamp;

use keyway_core::SiteId;

/// Most endpoints a site may have.
pub const MAX_WEBHOOKS_PER_SITE: usize = 20;
/// Most event kinds one endpoint may subscribe to.
pub const MAX_WEBHOOK_EVENTS: usize = 32;
/// The longest endpoint URL, in bytes.
pub const MAX_WEBHOOK_URL: usize = 2048;
/// Failed deliveries in a row after which an endpoint is paused.
pub const PAUSE_AFTER_FAILURES: u32 = 10;
/// When held rows of a paused endpoint are due: never, until it is resumed.
const HELD: i64 = i64::MAX / 2;

/// A webhook endpoint of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub site: SiteId,
    /// Where events are POSTed.
    pub url: String,
    /// The event kinds it receives: exact kinds, `incident.*`-style prefixes, or `*`.
    pub events: Vec<String>,
    /// When it was made, Unix seconds.
    pub created_at: Timestamp,
    /// When it was paused for failing, if it is.
    pub paused_at: Option<Timestamp>,
    /// Failed deliveries in a row.
    pub failures: u32,
}

impl Webhook {
    /// Whether it receives events of `kind`.
    #[must_use]
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| event_matches(e, kind))
    }
}

/// Whether subscription `pattern` (`*`, `incident.*` or an exact kind) covers `kind`.
#[must_use]
pub fn event_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// One attempt to deliver to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: DeliveryId,
    /// The endpoint.
    pub webhook: WebhookId,
    /// The outbox row it delivered; its id is the delivery's idempotency key.
    pub outbox: OutboxId,
    /// Which attempt at that row, from 1.
    pub attempt: u32,
    /// When.
    pub at: Timestamp,
    /// The HTTP status that came back, if any did.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u32,
}

impl WebhookDelivery {
    /// Whether the receiver took it (a 2xx status).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The outcome of one attempt, to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// The outbox row.
    pub outbox: OutboxId,
    /// When it was made.
    pub at: Timestamp,
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// Why it failed: a transport error or a non-2xx answer. `None` is a success.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u32,
    /// When to try again after a failure.
    pub retry_at: Timestamp,
}

/// An e-mail an event produced, to queue when the event is expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMail {
    /// The address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    pub body: String,
}

fn mail_payload(subject: &str, body: &str) -> String {
    serde_json::json!({"subject": subject, "body": body}).to_string()
}

/// Checks an endpoint's URL and subscriptions.
fn check_webhook(url: &str, events: &[String]) -> Result<(), StoreError> {
    if url.len() > MAX_WEBHOOK_URL {
        return Err(StoreError::invalid(format!(
            "a webhook URL has at most {MAX_WEBHOOK_URL} bytes"
        )));
    }
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StoreError::invalid(
            "a webhook URL is an absolute http:// or https:// URL without spaces",
        ));
    }
    if events.is_empty() || events.len() > MAX_WEBHOOK_EVENTS {
        return Err(StoreError::invalid(format!(
            "a webhook subscribes to 1 to {MAX_WEBHOOK_EVENTS} event kinds"
        )));
    }
    for e in events {
        let body = e.strip_suffix('*').unwrap_or(e);
        let well_formed = !e.is_empty()
            && e.len() <= 64
            && body.chars().all(|c| c.is_ascii_lowercase() || matches!(c, '.' | '_'))
            && (e == "*" || !body.is_empty());
        if !well_formed {
            return Err(StoreError::invalid(format!(
                "`{e}` is not an event kind: use lowercase letters, dots and underscores, \
                 e.g. `incident.door_forced`, `incident.*` or `*`"
            )));
        }
    }
    Ok(())
}

fn webhook_json(w: &Webhook) -> String {
    // The secret is never audited.
    serde_json::json!({
        "id": w.id.get(), "site": w.site.0, "url": w.url, "events": w.events,
        "paused_at": w.paused_at.map(Timestamp::as_second),
    })
    .to_string()
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const COLS: &str = "SELECT id, site, url, events, created_at, paused_at, failures FROM webhooks";

    fn webhook_from(r: &impl Columns) -> Result<Webhook, StoreError> {
        let site: i64 = r.col(1)?;
        let events: String = r.col(3)?;
        let failures: i64 = r.col(6)?;
        Ok(Webhook {
            id: r.col(0)?,
            site: SiteId(id32(site, "site")?),
            url: r.col(2)?,
            events: serde_json::from_str(&events).map_err(StoreError::internal)?,
            created_at: r.time(4)?,
            paused_at: r.time_opt(5)?,
            failures: id32(failures, "failures")?,
        })
    }

    fn delivery_from(r: &impl Columns) -> Result<WebhookDelivery, StoreError> {
        let attempt: i64 = r.col(3)?;
        let status: Option<i64> = r.col(5)?;
        let duration: i64 = r.col(7)?;
        Ok(WebhookDelivery {
            id: r.col(0)?,
            webhook: r.col(1)?,
            outbox: r.col(2)?,
            attempt: id32(attempt, "attempt")?,
            at: r.time(4)?,
            status: status
                .map(|s| u16::try_from(s).map_err(StoreError::internal))
                .transpose()?,
            error: r.col(6)?,
            duration_ms: id32(duration, "duration")?,
        })
    }

    pub(super) async fn get(conn: Conn<'_>, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(webhook_from).transpose()
        })
    }

    pub(super) async fn of_site(conn: Conn<'_>, site: SiteId) -> Result<Vec<Webhook>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{COLS} WHERE site = $1 ORDER BY id");
            let rows = sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?;
            rows.iter().map(webhook_from).collect()
        })
    }

    pub(super) async fn secret(conn: Conn<'_>, id: WebhookId) -> Result<Option<String>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar("SELECT secret FROM webhooks WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?)
        })
    }

    pub(super) async fn insert(
        conn: Conn<'_>,
        actor: &str,
        site: SiteId,
        url: &str,
        events: &[String],
        secret: &str,
        now: Timestamp,
    ) -> Result<Webhook, StoreError> {
        each_backend!(conn, |conn| {
            let events_json = serde_json::to_string(events).map_err(StoreError::internal)?;
            let id: WebhookId = sqlx::query_scalar(
                "INSERT INTO webhooks (site, url, secret, events, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(i64::from(site.0))
            .bind(url)
            .bind(secret)
            .bind(&events_json)
            .bind(now.as_second())
            .fetch_one(&mut *conn)
            .await?;
            let after = Webhook {
                id,
                site,
                url: url.to_owned(),
                events: events.to_vec(),
                created_at: crate::dispatch::whole(now),
                paused_at: None,
                failures: 0,
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "create_webhook",
                &id.to_string(),
                None,
                Some(&webhook_json(&after)),
            )
            .await?;
            Ok(after)
        })
    }

    pub(super) async fn delete(
        conn: Conn<'_>,
        actor: &str,
        before: &Webhook,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            // Its pending deliveries go with it; delivered ones are history and stay until purged.
            sqlx::query("DELETE FROM notification_outbox WHERE webhook = $1 AND delivered_at IS NULL")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM webhook_deliveries WHERE webhook = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM webhooks WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_webhook",
                &before.id.to_string(),
                Some(&webhook_json(before)),
                None,
            )
            .await
        })
    }

    pub(super) async fn set_secret(
        conn: Conn<'_>,
        actor: &str,
        before: &Webhook,
        secret: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE webhooks SET secret = $2 WHERE id = $1")
                .bind(before.id)
                .bind(secret)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "rotate_webhook_secret",
                &before.id.to_string(),
                None,
                None,
            )
            .await
        })
    }

    pub(super) async fn resume(
        conn: Conn<'_>,
        actor: &str,
        before: &Webhook,
        now: Timestamp,
    ) -> Result<Webhook, StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE webhooks SET paused_at = NULL, failures = 0 WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "UPDATE notification_outbox SET next_attempt_at = $2 WHERE webhook = $1 AND delivered_at IS NULL",
            )
            .bind(before.id)
            .bind(now.as_second())
            .execute(&mut *conn)
            .await?;
            let after = Webhook {
                paused_at: None,
                failures: 0,
                ..before.clone()
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "resume_webhook",
                &before.id.to_string(),
                Some(&webhook_json(before)),
                Some(&webhook_json(&after)),
            )
            .await?;
            Ok(after)
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one column each")]
    async fn enqueue(
        conn: Conn<'_>,
        site: SiteId,
        channel: &str,
        target: &str,
        payload: &str,
        due: i64,
        webhook: Option<WebhookId>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query(
            "INSERT INTO notification_outbox (site, channel, target, payload, created_at, next_attempt_at, webhook) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(i64::from(site.0))
        .bind(channel)
        .bind(target)
        .bind(payload)
        .bind(now.as_second())
        .bind(due)
        .bind(webhook)
        .execute(&mut *conn)
        .await?;
            Ok(())
        })
    }

    pub(super) async fn queue_test(conn: Conn<'_>, hook: &Webhook, now: Timestamp) -> Result<OutboxId, StoreError> {
        each_backend!(conn, |conn| {
            let event = crate::sql::enqueue_event(
                Conn::from(&mut *conn),
                hook.site,
                "webhook.test",
                now.as_second(),
                now.as_second(),
                serde_json::json!({"webhook": hook.id.get()}),
            )
            .await?;
            // The event row is done at once: only this endpoint receives it.
            sqlx::query("UPDATE notification_outbox SET delivered_at = $2 WHERE id = $1")
                .bind(event)
                .bind(now.as_second())
                .execute(&mut *conn)
                .await?;
            let body = serde_json::json!({
                "id": format!("evt_{event}"), "type": "webhook.test", "site": hook.site.0,
                "created_at": now.as_second(), "data": {"webhook": hook.id.get()},
            })
            .to_string();
            let due = if hook.paused_at.is_some() {
                HELD
            } else {
                now.as_second()
            };
            Ok(sqlx::query_scalar(
            "INSERT INTO notification_outbox (site, channel, target, payload, created_at, next_attempt_at, webhook) \
             VALUES ($1, 'webhook', $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(i64::from(hook.site.0))
        .bind(&hook.url)
        .bind(&body)
        .bind(now.as_second())
        .bind(due)
        .bind(hook.id)
        .fetch_one(&mut *conn)
        .await?)
        })
    }

    /// The e-mail address of `site`'s owner.
    async fn owner_email(conn: Conn<'_>, site: SiteId) -> Result<Option<String>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar(
                "SELECT a.email FROM site_memberships m JOIN accounts a ON a.id = m.account \
             WHERE m.site = $1 AND m.is_owner = $2",
            )
            .bind(i64::from(site.0))
            .bind(true)
            .fetch_optional(&mut *conn)
            .await?)
        })
    }

    pub(super) async fn expand(
        conn: Conn<'_>,
        event: OutboxId,
        mails: &[QueuedMail],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        each_backend!(conn, |conn| {
            let row = sqlx::query(
                "SELECT site, target, payload FROM notification_outbox \
             WHERE id = $1 AND channel = 'event' AND delivered_at IS NULL",
            )
            .bind(event)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound {
                    entity: format!("event:{} (pending)", event.get()),
                });
            };
            let site: i64 = row.col(0)?;
            let site = SiteId(id32(site, "site")?);
            let kind: String = row.col(1)?;
            let payload: String = row.col(2)?;
            let mut body: serde_json::Value = serde_json::from_str(&payload).map_err(StoreError::internal)?;
            if let Some(object) = body.as_object_mut() {
                object.insert(
                    "id".to_owned(),
                    serde_json::Value::String(format!("evt_{}", event.get())),
                );
            }
            let body = body.to_string();
            let mut queued = 0;
            for mail in mails {
                enqueue(
                    Conn::from(&mut *conn),
                    site,
                    "email",
                    &mail.to,
                    &mail_payload(&mail.subject, &mail.body),
                    now.as_second(),
                    None,
                    now,
                )
                .await?;
                queued += 1;
            }
            for hook in of_site(Conn::from(&mut *conn), site).await? {
                if hook.wants(&kind) {
                    // A paused endpoint's deliveries wait for it to be resumed.
                    let due = if hook.paused_at.is_some() {
                        HELD
                    } else {
                        now.as_second()
                    };
                    enqueue(
                        Conn::from(&mut *conn),
                        site,
                        "webhook",
                        &hook.url,
                        &body,
                        due,
                        Some(hook.id),
                        now,
                    )
                    .await?;
                    queued += 1;
                }
            }
            sqlx::query("UPDATE notification_outbox SET delivered_at = $2 WHERE id = $1")
                .bind(event)
                .bind(now.as_second())
                .execute(&mut *conn)
                .await?;
            Ok(queued)
        })
    }

    /// Records one attempt; answers whether it paused the endpoint.
    pub(super) async fn record(conn: Conn<'_>, hook: &Webhook, a: &WebhookAttempt) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            let attempts: Option<i64> = sqlx::query_scalar(
                "SELECT attempts FROM notification_outbox WHERE id = $1 AND webhook = $2 AND delivered_at IS NULL",
            )
            .bind(a.outbox)
            .bind(hook.id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(attempts) = attempts else {
                return Err(StoreError::NotFound {
                    entity: format!("{} (pending, for {})", a.outbox, hook.id),
                });
            };
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook, outbox, attempt, at, status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(hook.id)
            .bind(a.outbox)
            .bind(attempts + 1)
            .bind(a.at.as_second())
            .bind(a.status.map(i64::from))
            .bind(a.error.as_deref())
            .bind(i64::from(a.duration_ms))
            .execute(&mut *conn)
            .await?;
            let Some(error) = &a.error else {
                sqlx::query("UPDATE notification_outbox SET delivered_at = $2, attempts = attempts + 1 WHERE id = $1")
                    .bind(a.outbox)
                    .bind(a.at.as_second())
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("UPDATE webhooks SET failures = 0 WHERE id = $1")
                    .bind(hook.id)
                    .execute(&mut *conn)
                    .await?;
                return Ok(false);
            };
            sqlx::query(
            "UPDATE notification_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1",
        )
        .bind(a.outbox)
        .bind(error)
        .bind(a.retry_at.as_second())
        .execute(&mut *conn)
        .await?;
            let failures: i64 =
                sqlx::query_scalar("UPDATE webhooks SET failures = failures + 1 WHERE id = $1 RETURNING failures")
                    .bind(hook.id)
                    .fetch_one(&mut *conn)
                    .await?;
            let already_paused: Option<i64> = sqlx::query_scalar("SELECT paused_at FROM webhooks WHERE id = $1")
                .bind(hook.id)
                .fetch_one(&mut *conn)
                .await?;
            if failures < i64::from(PAUSE_AFTER_FAILURES) || already_paused.is_some() {
                return Ok(false);
            }
            sqlx::query("UPDATE webhooks SET paused_at = $2 WHERE id = $1")
                .bind(hook.id)
                .bind(a.at.as_second())
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "UPDATE notification_outbox SET next_attempt_at = $2 WHERE webhook = $1 AND delivered_at IS NULL",
            )
            .bind(hook.id)
            .bind(HELD)
            .execute(&mut *conn)
            .await?;
            let after = Webhook {
                paused_at: Some(a.at),
                failures: id32(failures, "failures")?,
                ..hook.clone()
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                a.at.as_second(),
                "system",
                "pause_webhook",
                &hook.id.to_string(),
                Some(&webhook_json(hook)),
                Some(&webhook_json(&after)),
            )
            .await?;
            if let Some(owner) = owner_email(Conn::from(&mut *conn), hook.site).await? {
                let subject = format!("Keyway: webhook {} paused", hook.id);
                let body = format!(
                    "The webhook {} of site {} ({}) failed {failures} times in a row and is paused. \
                 Its deliveries are kept; resume it once the receiver is fixed. Last error: {error}",
                    hook.id, hook.site.0, hook.url,
                );
                enqueue(
                    Conn::from(&mut *conn),
                    hook.site,
                    "email",
                    &owner,
                    &mail_payload(&subject, &body),
                    a.at.as_second(),
                    None,
                    a.at,
                )
                .await?;
            }
            Ok(true)
        })
    }

    pub(super) async fn deliveries(
        conn: Conn<'_>,
        webhook: WebhookId,
        before: DeliveryId,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        each_backend!(conn, |conn| {
            let rows = sqlx::query(
                "SELECT id, webhook, outbox, attempt, at, status, error, duration_ms FROM webhook_deliveries \
             WHERE webhook = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(webhook)
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(delivery_from).collect()
        })
    }
}

fn no_webhook(site: SiteId, id: WebhookId) -> StoreError {
    StoreError::NotFound {
        entity: format!("{id} of site:{}", site.0),
    }
}

impl crate::notifications::Notifications<'_> {
    /// Add an endpoint to `site`; its signing secret is answered once here.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL or subscription, or a site with
    /// [`MAX_WEBHOOKS_PER_SITE`] endpoints; [`StoreError::ForeignKey`] for an unknown site.
    pub async fn create_webhook(
        &self,
        actor: &str,
        site: SiteId,
        url: &str,
        events: &[String],
        now: Timestamp,
    ) -> Result<(Webhook, String), StoreError> {
        check_webhook(url, events)?;
        let secret = secrets::fresh("whsec_");
        let hook = {
            let mut db = self.store.writer().await?;
            let out = {
                if queries::of_site(db.conn(), site).await?.len() >= MAX_WEBHOOKS_PER_SITE {
                    return Err(StoreError::invalid(format!(
                        "site:{} has {MAX_WEBHOOKS_PER_SITE} webhooks, the most a site may have",
                        site.0
                    )));
                }
                queries::insert(db.conn(), actor, site, url, events, &secret, now).await?
            };
            db.commit().await?;
            out
        };
        Ok((hook, secret))
    }

    /// `site`'s endpoints.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn webhooks(&self, site: SiteId) -> Result<Vec<Webhook>, StoreError> {
        queries::of_site(self.store.reader().await?.conn(), site).await
    }

    /// The endpoint `id` of `site`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn webhook(&self, site: SiteId, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let found = queries::get(self.store.reader().await?.conn(), id).await?;
        Ok(found.filter(|w| w.site == site))
    }

    /// The endpoint `id` and its signing secret, for the sender.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn webhook_with_secret(&self, id: WebhookId) -> Result<Option<(Webhook, String)>, StoreError> {
        let mut db = self.store.reader().await?;
        Ok(
            match (
                queries::get(db.conn(), id).await?,
                queries::secret(db.conn(), id).await?,
            ) {
                (Some(hook), Some(secret)) => Some((hook, secret)),
                _ => None,
            },
        )
    }

    /// Remove endpoint `id` of `site`, its pending deliveries and its history.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an endpoint that is not `site`'s.
    pub async fn delete_webhook(
        &self,
        actor: &str,
        site: SiteId,
        id: WebhookId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::get(db.conn(), id)
            .await?
            .filter(|w| w.site == site)
            .ok_or_else(|| no_webhook(site, id))?;
        queries::delete(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Give endpoint `id` of `site` a new signing secret, answered once here; the old
    /// one stops signing at once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an endpoint that is not `site`'s.
    pub async fn rotate_webhook_secret(
        &self,
        actor: &str,
        site: SiteId,
        id: WebhookId,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        let secret = secrets::fresh("whsec_");
        let mut db = self.store.writer().await?;
        let before = queries::get(db.conn(), id)
            .await?
            .filter(|w| w.site == site)
            .ok_or_else(|| no_webhook(site, id))?;
        queries::set_secret(db.conn(), actor, &before, &secret, now).await?;
        db.commit().await?;
        Ok(secret)
    }

    /// Resume endpoint `id` of `site`: its failures are forgotten and its held
    /// deliveries are due at `now`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an endpoint that is not `site`'s.
    pub async fn resume_webhook(
        &self,
        actor: &str,
        site: SiteId,
        id: WebhookId,
        now: Timestamp,
    ) -> Result<Webhook, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            let before = queries::get(db.conn(), id)
                .await?
                .filter(|w| w.site == site)
                .ok_or_else(|| no_webhook(site, id))?;
            queries::resume(db.conn(), actor, &before, now).await?
        };
        db.commit().await?;
        Ok(out)
    }

    /// Queue a `webhook.test` event for endpoint `id` of `site` alone (held while it is
    /// paused); answers the delivery's outbox id, its `Keyway-Delivery`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an endpoint that is not `site`'s.
    pub async fn queue_webhook_test(
        &self,
        site: SiteId,
        id: WebhookId,
        now: Timestamp,
    ) -> Result<OutboxId, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            let hook = queries::get(db.conn(), id)
                .await?
                .filter(|w| w.site == site)
                .ok_or_else(|| no_webhook(site, id))?;
            queries::queue_test(db.conn(), &hook, now).await?
        };
        db.commit().await?;
        Ok(out)
    }

    /// Queue event `kind` of `site` for notification (the notify plugin and the site's
    /// webhooks). `data` is what webhooks receive as the event's `data`, a JSON object.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for `data` that is not an object or is over
    /// [`crate::MAX_PAYLOAD_BYTES`].
    pub async fn enqueue_event(
        &self,
        site: SiteId,
        kind: &str,
        at: Timestamp,
        data: serde_json::Value,
    ) -> Result<OutboxId, StoreError> {
        if !data.is_object() || data.to_string().len() > crate::MAX_PAYLOAD_BYTES {
            return Err(StoreError::invalid("event data is a JSON object of at most 64 KiB"));
        }
        let mut db = self.store.writer().await?;
        let out = { crate::dispatch::enqueue_event(db.conn(), site, kind, at, data).await? };
        db.commit().await?;
        Ok(out)
    }

    /// Expand the claimed event `event`: queue `mails` and one delivery per endpoint of
    /// its site subscribed to its kind, and mark it done, in one transaction. Answers
    /// how many rows it queued.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a row that is not a pending event (another sender
    /// expanded it first).
    pub async fn expand_event(
        &self,
        event: OutboxId,
        mails: &[QueuedMail],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::expand(db.conn(), event, mails, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// Record an attempt to deliver outbox row `attempt.outbox` to `hook`: its history
    /// row, the row's new state, the endpoint's run of failures. Answers whether this
    /// failure paused the endpoint (its owner is then sent an e-mail).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the row is not a pending delivery to `hook`.
    pub async fn record_webhook_attempt(&self, hook: &Webhook, attempt: &WebhookAttempt) -> Result<bool, StoreError> {
        let mut attempt = attempt.clone();
        attempt.error = attempt.error.map(|e| e.chars().take(1000).collect());
        let mut db = self.store.writer().await?;
        let out = queries::record(db.conn(), hook, &attempt).await?;
        db.commit().await?;
        Ok(out)
    }

    /// Endpoint `id`'s delivery attempts, newest first: up to `limit` with ids below
    /// `before`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn webhook_deliveries(
        &self,
        id: WebhookId,
        before: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let before = before.unwrap_or(DeliveryId(i64::MAX));
        queries::deliveries(self.store.reader().await?.conn(), id, before, i64::from(limit)).await
    }
}
