//! Notification settings (what a site sends, to whom, over which channel) and the
//! durable outbox the sender drains.
//!
//! The notify plugin turns events into notifications using a site's settings; each one
//! is put in the outbox in the same step, so a crash loses none. Senders claim due
//! rows with a lease (the claim moves `next_attempt_at` to the lease's end in one
//! statement), so two nodes never send the same row at once, and a sender that dies
//! mid-send only delays the row until the lease runs out. Failures back off; delivery is
//! recorded; delivered rows are purged by age.

use crate::codec::id32;
use crate::error::StoreError;
use crate::ids::{AccountId, OutboxId, SettingId, WebhookId};
use crate::store::Store;
use jiff::Timestamp;
use keyway_core::SiteId;

/// The channels a notification setting can choose. Webhooks are endpoints of their own
/// (`webhooks`), with a secret and a delivery history; push needs the app's gateway,
/// which Keyway does not have.
pub const CHANNELS: [&str; 1] = ["email"];
/// The largest notification payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// One notification rule of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationSetting {
    /// Its id (0 for a new one).
    pub id: SettingId,
    pub site: SiteId,
    /// The account it notifies, when it is a person's (e.g. the owner's).
    pub account: Option<AccountId>,
    /// Which events, e.g. `entry.denied`, `incident.tamper`, `admin.change`.
    pub event_kind: String,
    /// One of [`CHANNELS`].
    pub channel: String,
    /// Where to: an email address, a URL, a device token.
    pub target: String,
    /// Channel options, a JSON object.
    pub config: String,
    /// Whether it is on.
    pub enabled: bool,
}

/// A notification waiting to go out, or sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: OutboxId,
    /// The site it is about.
    pub site: SiteId,
    /// The channel: `event` (to expand), `email` or `webhook`.
    pub channel: String,
    /// The webhook endpoint, for a `webhook` row.
    pub webhook: Option<WebhookId>,
    /// The recipient: an address, a URL, or the kind of an event.
    pub target: String,
    /// What to send, JSON.
    pub payload: String,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When it may be tried next.
    pub next_attempt_at: Timestamp,
    /// How many times sending failed.
    pub attempts: u32,
    /// When it was delivered, if it was.
    pub delivered_at: Option<Timestamp>,
    /// The last failure.
    pub last_error: Option<String>,
}

fn check_setting(s: &NotificationSetting) -> Result<(), StoreError> {
    if !CHANNELS.contains(&s.channel.as_str()) {
        return Err(StoreError::invalid(format!(
            "unknown channel `{}`; use one of {}",
            s.channel,
            CHANNELS.join(", ")
        )));
    }
    if s.event_kind.is_empty()
        || s.event_kind.len() > 64
        || !s
            .event_kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || matches!(c, '.' | '_' | '*'))
    {
        return Err(StoreError::invalid(
            "an event kind has 1 to 64 lowercase letters, dots, underscores or `*`",
        ));
    }
    if s.target.trim().is_empty() || s.target.len() > 512 {
        return Err(StoreError::invalid("a notification target has 1 to 512 bytes"));
    }
    if s.channel == "email" && crate::accounts::normalise_email(&s.target).is_err() {
        return Err(StoreError::invalid(format!("`{}` is not an email address", s.target)));
    }
    check_object("config", &s.config)
}

fn check_object(what: &str, text: &str) -> Result<(), StoreError> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(StoreError::invalid(format!(
            "the {what} has at most {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(StoreError::invalid(format!("the {what} must be a JSON object"))),
        Err(e) => Err(StoreError::invalid(format!("the {what} is not JSON: {e}"))),
    }
}

fn setting_json(s: &NotificationSetting) -> String {
    serde_json::json!({
        "id": s.id.get(), "site": s.site.0, "account": s.account.map(AccountId::get), "event_kind": s.event_kind,
        "channel": s.channel, "target": s.target, "enabled": s.enabled,
    })
    .to_string()
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const SETTING_COLS: &str = "SELECT id, site, account, event_kind, channel, target, config, enabled \
                                FROM notification_settings";
    const OUTBOX_COLS: &str = "id, site, channel, target, payload, created_at, next_attempt_at, attempts, \
                               delivered_at, last_error, webhook";

    fn setting_from(r: &impl Columns) -> Result<NotificationSetting, StoreError> {
        let site: i64 = r.col(1)?;
        Ok(NotificationSetting {
            id: r.col(0)?,
            site: SiteId(id32(site, "site")?),
            account: r.col(2)?,
            event_kind: r.col(3)?,
            channel: r.col(4)?,
            target: r.col(5)?,
            config: r.col(6)?,
            enabled: r.col(7)?,
        })
    }

    fn item_from(r: &impl Columns) -> Result<OutboxItem, StoreError> {
        let site: i64 = r.col(1)?;
        let attempts: i64 = r.col(7)?;
        Ok(OutboxItem {
            id: r.col(0)?,
            site: SiteId(id32(site, "site")?),
            channel: r.col(2)?,
            target: r.col(3)?,
            payload: r.col(4)?,
            created_at: r.time(5)?,
            next_attempt_at: r.time(6)?,
            attempts: id32(attempts, "attempts")?,
            delivered_at: r.time_opt(8)?,
            last_error: r.col(9)?,
            webhook: r.col(10)?,
        })
    }

    pub(super) async fn setting(conn: Conn<'_>, id: SettingId) -> Result<Option<NotificationSetting>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{SETTING_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(setting_from).transpose()
        })
    }

    pub(super) async fn settings(conn: Conn<'_>, site: SiteId) -> Result<Vec<NotificationSetting>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{SETTING_COLS} WHERE site = $1 ORDER BY id");
            let rows = sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?;
            rows.iter().map(setting_from).collect()
        })
    }

    pub(super) async fn put_setting(
        conn: Conn<'_>,
        actor: &str,
        before: Option<&NotificationSetting>,
        s: &NotificationSetting,
        now: Timestamp,
    ) -> Result<NotificationSetting, StoreError> {
        each_backend!(conn, |conn| {
            let id: SettingId = match before {
                Some(_) => {
                    sqlx::query(
                        "UPDATE notification_settings SET account = $2, event_kind = $3, channel = $4, target = $5, \
                     config = $6, enabled = $7 WHERE id = $1",
                    )
                    .bind(s.id)
                    .bind(s.account)
                    .bind(&s.event_kind)
                    .bind(&s.channel)
                    .bind(&s.target)
                    .bind(&s.config)
                    .bind(s.enabled)
                    .execute(&mut *conn)
                    .await?;
                    s.id
                }
                None => sqlx::query_scalar(
                    "INSERT INTO notification_settings (site, account, event_kind, channel, target, config, enabled) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(i64::from(s.site.0))
                .bind(s.account)
                .bind(&s.event_kind)
                .bind(&s.channel)
                .bind(&s.target)
                .bind(&s.config)
                .bind(s.enabled)
                .fetch_one(&mut *conn)
                .await?,
            };
            let after = NotificationSetting { id, ..s.clone() };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "put_notification_setting",
                &id.to_string(),
                before.map(setting_json).as_deref(),
                Some(&setting_json(&after)),
            )
            .await?;
            Ok(after)
        })
    }

    pub(super) async fn delete_setting(
        conn: Conn<'_>,
        actor: &str,
        before: &NotificationSetting,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM notification_settings WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_notification_setting",
                &before.id.to_string(),
                Some(&setting_json(before)),
                None,
            )
            .await
        })
    }

    pub(super) async fn enqueue(
        conn: Conn<'_>,
        site: SiteId,
        channel: &str,
        target: &str,
        payload: &str,
        now: Timestamp,
    ) -> Result<OutboxId, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar(
                "INSERT INTO notification_outbox (site, channel, target, payload, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
            )
            .bind(i64::from(site.0))
            .bind(channel)
            .bind(target)
            .bind(payload)
            .bind(now.as_second())
            .fetch_one(&mut *conn)
            .await?)
        })
    }

    pub(super) async fn claim(
        conn: Conn<'_>,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        each_backend!(conn, |conn| {
            // The due condition is repeated outside the subquery: on PostgreSQL a row a
            // concurrent claim just leased is re-checked against its new version and
            // skipped, so no row goes to two senders.
            let sql = format!(
                "UPDATE notification_outbox SET next_attempt_at = $2 WHERE id IN (\
             SELECT id FROM notification_outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $3) AND delivered_at IS NULL AND next_attempt_at <= $1 \
             RETURNING {OUTBOX_COLS}"
            );
            let rows = sqlx::query(&sql)
                .bind(now.as_second())
                .bind(lease_until.as_second())
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            let mut items = rows.iter().map(item_from).collect::<Result<Vec<_>, _>>()?;
            items.sort_by_key(|i| i.id);
            Ok(items)
        })
    }

    pub(super) async fn item(conn: Conn<'_>, id: OutboxId) -> Result<Option<OutboxItem>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("SELECT {OUTBOX_COLS} FROM notification_outbox WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(item_from).transpose()
        })
    }

    pub(super) async fn delivered(conn: Conn<'_>, id: OutboxId, now: Timestamp) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            Ok(
                sqlx::query("UPDATE notification_outbox SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL")
                    .bind(id)
                    .bind(now.as_second())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                    == 1,
            )
        })
    }

    pub(super) async fn failed(
        conn: Conn<'_>,
        id: OutboxId,
        error: &str,
        retry_at: Timestamp,
    ) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query(
                "UPDATE notification_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
             WHERE id = $1 AND delivered_at IS NULL",
            )
            .bind(id)
            .bind(error)
            .bind(retry_at.as_second())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1)
        })
    }

    pub(super) async fn pending(conn: Conn<'_>) -> Result<i64, StoreError> {
        each_backend!(conn, |conn| {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM notification_outbox WHERE delivered_at IS NULL")
                    .fetch_one(&mut *conn)
                    .await?,
            )
        })
    }

    pub(super) async fn purge(conn: Conn<'_>, delivered_before: Timestamp) -> Result<u64, StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM webhook_deliveries WHERE at < $1")
                .bind(delivered_before.as_second())
                .execute(&mut *conn)
                .await?;
            Ok(
                sqlx::query("DELETE FROM notification_outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1")
                    .bind(delivered_before.as_second())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected(),
            )
        })
    }
}

fn no_item(id: OutboxId) -> StoreError {
    StoreError::NotFound { entity: id.to_string() }
}

/// Notification settings, the outbox, and webhooks: [`Store::notifications`].
#[derive(Clone, Copy, Debug)]
pub struct Notifications<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// Notification settings, the outbox, and webhooks.
    #[must_use]
    pub fn notifications(&self) -> Notifications<'_> {
        Notifications { store: self }
    }
}

impl Notifications<'_> {
    /// Create (`id` 0) or replace a notification setting at `now`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an unknown channel, a malformed event kind, target or
    /// config; [`StoreError::NotFound`] for an unknown id; [`StoreError::ForeignKey`] for
    /// an unknown site or account; [`StoreError::Invalid`] when an update names another
    /// site.
    pub async fn put_setting(
        &self,
        actor: &str,
        setting: &NotificationSetting,
        now: Timestamp,
    ) -> Result<NotificationSetting, StoreError> {
        check_setting(setting)?;
        let mut db = self.store.writer().await?;
        let out = {
            let before = if setting.id == SettingId(0) {
                None
            } else {
                let before = queries::setting(db.conn(), setting.id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        entity: setting.id.to_string(),
                    })?;
                if before.site != setting.site {
                    return Err(StoreError::invalid(
                        "a notification setting cannot move to another site",
                    ));
                }
                Some(before)
            };
            queries::put_setting(db.conn(), actor, before.as_ref(), setting, now).await?
        };
        db.commit().await?;
        Ok(out)
    }

    /// A site's notification settings.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn settings(&self, site: SiteId) -> Result<Vec<NotificationSetting>, StoreError> {
        queries::settings(self.store.reader().await?.conn(), site).await
    }

    /// Delete a notification setting.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    pub async fn delete_setting(&self, actor: &str, id: SettingId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::setting(db.conn(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
        queries::delete_setting(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Queue a notification, due at once.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an unknown channel, an empty target or a payload that
    /// is not a JSON object or is oversized.
    pub async fn enqueue(
        &self,
        site: SiteId,
        channel: &str,
        target: &str,
        payload: &str,
        now: Timestamp,
    ) -> Result<OutboxId, StoreError> {
        if !CHANNELS.contains(&channel) {
            return Err(StoreError::invalid(format!("unknown channel `{channel}`")));
        }
        if target.trim().is_empty() || target.len() > 512 {
            return Err(StoreError::invalid("a notification target has 1 to 512 bytes"));
        }
        check_object("payload", payload)?;
        let mut db = self.store.writer().await?;
        let out = queries::enqueue(db.conn(), site, channel, target, payload, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// Claim up to `limit` notifications due at `now` for sending, leased until
    /// `lease_until`: no other claim sees them before then.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a lease that ends before `now` or a zero limit.
    pub async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        if lease_until <= now || limit == 0 {
            return Err(StoreError::invalid(
                "a claim needs a lease in the future and a limit above 0",
            ));
        }
        let mut db = self.store.writer().await?;
        let out = queries::claim(db.conn(), now, lease_until, i64::from(limit)).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The outbox row `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn outbox_item(&self, id: OutboxId) -> Result<Option<OutboxItem>, StoreError> {
        queries::item(self.store.reader().await?.conn(), id).await
    }

    /// Record that `id` was delivered.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown or already delivered row.
    pub async fn mark_delivered(&self, id: OutboxId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let done = queries::delivered(db.conn(), id, now).await?;
        db.commit().await?;
        if done { Ok(()) } else { Err(no_item(id)) }
    }

    /// Record that sending `id` failed with `error`; it is due again at `retry_at`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown or already delivered row.
    pub async fn mark_failed(&self, id: OutboxId, error: &str, retry_at: Timestamp) -> Result<(), StoreError> {
        let error: String = error.chars().take(1000).collect();
        let mut db = self.store.writer().await?;
        let done = queries::failed(db.conn(), id, &error, retry_at).await?;
        db.commit().await?;
        if done { Ok(()) } else { Err(no_item(id)) }
    }

    /// How many outbox rows wait: events to expand, e-mails and webhook deliveries to
    /// send (those of paused endpoints included).
    ///
    /// # Errors
    /// If the database fails.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        let n = queries::pending(self.store.reader().await?.conn()).await?;
        u64::try_from(n).map_err(StoreError::internal)
    }

    /// Delete notifications delivered before `delivered_before`, and webhook delivery
    /// attempts made before it; answers how many notifications went.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn purge_delivered(&self, delivered_before: Timestamp) -> Result<u64, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::purge(db.conn(), delivered_before).await?;
        db.commit().await?;
        Ok(out)
    }
}
