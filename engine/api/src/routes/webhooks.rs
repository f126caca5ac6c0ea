//! A site's webhook endpoints: where its events are POSTed, signed with the endpoint's
//! secret (shown once, at creation and at rotation), with the history of every delivery
//! attempt. An endpoint that keeps failing is paused and its owner told; resuming it
//! sends what waited. Only holders of `notifications.configure` (the owner, in the
//! standard role table) read or change them. The notification worker (`notifier`)
//! delivers.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::notifier::refuse_webhook_url;
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use keyway_core::SiteId;
use keyway_plugin_host::Capability;
use keyway_store::{Webhook, WebhookDelivery};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new webhook endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    /// Where to POST events: an `https://` (or `http://`) URL on a public address.
    pub url: String,
    /// The event kinds to receive: exact kinds (`incident.door_forced`,
    /// `ownership.transferred`), prefixes (`incident.*`) or `*` for all; 1 to 32.
    pub events: Vec<String>,
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookView {
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    /// The event kinds it receives.
    pub events: Vec<String>,
    /// When it was made, Unix seconds.
    pub created_at: i64,
    /// `active`, or `paused` after failing repeatedly (deliveries wait; resume it).
    pub status: String,
    /// When it was paused, Unix seconds.
    pub paused_at: Option<i64>,
    /// Failed deliveries in a row.
    pub failures: u32,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        WebhookView {
            id: w.id.get(),
            url: w.url,
            events: w.events,
            created_at: w.created_at.as_second(),
            status: if w.paused_at.is_some() { "paused" } else { "active" }.to_owned(),
            paused_at: w.paused_at.map(jiff::Timestamp::as_second),
            failures: w.failures,
        }
    }
}

/// A webhook endpoint with its signing secret, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookCreated {
    /// The endpoint.
    pub webhook: WebhookView,
    /// The signing secret: `Keyway-Signature: t=<unix>,v1=<hex>` is HMAC-SHA256 with it
    /// over `<unix>.<body>`. Keep it; it is not shown again.
    pub secret: String,
}

/// A new signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookSecret {
    /// The secret, shown only here; the old one no longer signs.
    pub secret: String,
}

/// One attempt to deliver.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    pub id: i64,
    /// The delivery's idempotency id (`Keyway-Delivery`), the same on every retry.
    pub delivery: i64,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// When, Unix seconds.
    pub at: i64,
    /// The HTTP status the receiver answered, if it did.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Whether the receiver took it (2xx).
    pub succeeded: bool,
    /// How long it took, in milliseconds.
    pub duration_ms: u32,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        DeliveryView {
            succeeded: d.succeeded(),
            id: d.id.get(),
            delivery: d.outbox.get(),
            attempt: d.attempt,
            at: d.at.as_second(),
            status: d.status,
            error: d.error,
            duration_ms: d.duration_ms,
        }
    }
}

page_of!(WebhookPage, WebhookView);
page_of!(DeliveryPage, DeliveryView);

async fn configure(state: &AppState, caller: &Caller, site: u32, access: Access) -> Result<SiteId, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, access, site, Capability::NOTIFICATIONS_CONFIGURE)
        .await?;
    Ok(site)
}

async fn endpoint(state: &AppState, site: SiteId, id: i64) -> Result<Webhook, ApiError> {
    state
        .node()
        .store()
        .notifications()
        .webhook(site, keyway_store::WebhookId(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} does not exist on site {}", site.0)))
}

/// Add a webhook endpoint; the answer carries its signing secret, once.
#[utoipa::path(post, path = "/v1/sites/{site}/webhooks", tag = "notifications", request_body = NewWebhook,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = WebhookCreated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewWebhook>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    let site = configure(&state, &caller, site, Access::Write).await?;
    if let Some(reason) = refuse_webhook_url(&body.url, state.config().webhook_allow_private) {
        return Err(ApiError::invalid(reason));
    }
    let (hook, secret) = state
        .node()
        .store()
        .notifications()
        .create_webhook(&caller.actor(), site, &body.url, &body.events, crate::auth::now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookCreated {
            webhook: hook.into(),
            secret,
        }),
    ))
}

/// A site's webhook endpoints.
#[utoipa::path(get, path = "/v1/sites/{site}/webhooks", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = WebhookPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<WebhookPage>, ApiError> {
    let site = configure(&state, &caller, site, Access::Read).await?;
    let all = state.node().store().notifications().webhooks(site).await?;
    let (page, next_cursor) = p.page(all, |w| w.id.get())?;
    Ok(Json(WebhookPage {
        items: page.into_iter().map(WebhookView::from).collect(),
        next_cursor,
    }))
}

/// One webhook endpoint.
#[utoipa::path(get, path = "/v1/sites/{site}/webhooks/{webhook}", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("webhook" = i64, Path, description = "The endpoint")),
    responses((status = 200, body = WebhookView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<Json<WebhookView>, ApiError> {
    let site = configure(&state, &caller, site, Access::Read).await?;
    Ok(Json(endpoint(&state, site, id).await?.into()))
}

/// Remove a webhook endpoint, with its pending deliveries and its history.
#[utoipa::path(delete, path = "/v1/sites/{site}/webhooks/{webhook}", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("webhook" = i64, Path, description = "The endpoint")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<StatusCode, ApiError> {
    let site = configure(&state, &caller, site, Access::Write).await?;
    state
        .node()
        .store()
        .notifications()
        .delete_webhook(&caller.actor(), site, keyway_store::WebhookId(id), crate::auth::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resume a paused endpoint: its failures are forgotten and the deliveries that waited
/// go out.
#[utoipa::path(post, path = "/v1/sites/{site}/webhooks/{webhook}/resume", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("webhook" = i64, Path, description = "The endpoint")),
    responses((status = 200, body = WebhookView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn resume_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<Json<WebhookView>, ApiError> {
    let site = configure(&state, &caller, site, Access::Write).await?;
    let hook = state
        .node()
        .store()
        .notifications()
        .resume_webhook(&caller.actor(), site, keyway_store::WebhookId(id), crate::auth::now())
        .await?;
    Ok(Json(hook.into()))
}

/// Give an endpoint a new signing secret, shown once; the old one stops signing at once.
#[utoipa::path(post, path = "/v1/sites/{site}/webhooks/{webhook}/secret", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("webhook" = i64, Path, description = "The endpoint")),
    responses((status = 200, body = WebhookSecret), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<Json<WebhookSecret>, ApiError> {
    let site = configure(&state, &caller, site, Access::Write).await?;
    let secret = state
        .node()
        .store()
        .notifications()
        .rotate_webhook_secret(&caller.actor(), site, keyway_store::WebhookId(id), crate::auth::now())
        .await?;
    Ok(Json(WebhookSecret { secret }))
}

/// An endpoint's delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/sites/{site}/webhooks/{webhook}/deliveries", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("webhook" = i64, Path, description = "The endpoint"),
        Pagination),
    responses((status = 200, body = DeliveryPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
    Query(p): Query<Pagination>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let site = configure(&state, &caller, site, Access::Read).await?;
    let hook = endpoint(&state, site, id).await?;
    let (limit, before) = p.limit_and_cursor()?;
    let mut items = state
        .node()
        .store()
        .notifications()
        .webhook_deliveries(hook.id, before.map(keyway_store::DeliveryId), limit + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|d| d.id.get().to_string())
    } else {
        None
    };
    Ok(Json(DeliveryPage {
        items: items.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

/// A test delivery queued.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TestQueued {
    /// Its `Keyway-Delivery` id; its outcome joins the endpoint's delivery history.
    pub delivery: i64,
}

/// Send the endpoint a signed `webhook.test` event, to check the receiver and its
/// signature check; it goes out within a second, and the outcome joins the history.
#[utoipa::path(post, path = "/v1/sites/{site}/webhooks/{webhook}/test", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("webhook" = i64, Path, description = "The endpoint")),
    responses((status = 202, body = TestQueued), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    let site = configure(&state, &caller, site, Access::Write).await?;
    let delivery = state
        .node()
        .store()
        .notifications()
        .queue_webhook_test(site, keyway_store::WebhookId(id), crate::auth::now())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestQueued {
            delivery: delivery.get(),
        }),
    ))
}
