//! Per-site notification settings: which event kinds go to whom, by which channel. Only
//! holders of `notifications.configure` (the owner, in the standard role table) read or
//! change them.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use keyway_core::SiteId;
use keyway_plugin_host::Capability;
use keyway_store::NotificationSetting;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new notification setting.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSetting {
    /// The event kind, e.g. `entry.denied`, `incident.tamper`, `ownership.transferred`.
    pub event_kind: String,
    /// `email` (webhooks are endpoints of their own: `/v1/sites/{site}/webhooks`).
    pub channel: String,
    /// The e-mail address.
    pub target: String,
    /// Whether it is on (default on).
    pub enabled: Option<bool>,
}

/// A notification setting.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SettingView {
    pub id: i64,
    pub event_kind: String,
    pub channel: String,
    pub target: String,
    /// Whether it is on.
    pub enabled: bool,
}

impl From<NotificationSetting> for SettingView {
    fn from(s: NotificationSetting) -> Self {
        SettingView {
            id: s.id.get(),
            event_kind: s.event_kind,
            channel: s.channel,
            target: s.target,
            enabled: s.enabled,
        }
    }
}

page_of!(SettingPage, SettingView);

/// A site's notification settings.
#[utoipa::path(get, path = "/v1/sites/{site}/notifications", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = SettingPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<SettingPage>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Read, site, Capability::NOTIFICATIONS_CONFIGURE)
        .await?;
    let all = state.node().store().notifications().settings(site).await?;
    let (page, next_cursor) = p.page(all, |s| s.id.get())?;
    Ok(Json(SettingPage {
        items: page.into_iter().map(SettingView::from).collect(),
        next_cursor,
    }))
}

/// Add a notification setting.
#[utoipa::path(post, path = "/v1/sites/{site}/notifications", tag = "notifications", request_body = NewSetting,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = SettingView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_setting(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewSetting>,
) -> Result<(StatusCode, Json<SettingView>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::NOTIFICATIONS_CONFIGURE)
        .await?;
    let setting = NotificationSetting {
        id: keyway_store::SettingId(0),
        site,
        account: Some(caller.account),
        event_kind: body.event_kind,
        channel: body.channel,
        target: body.target,
        config: "{}".to_owned(),
        enabled: body.enabled.unwrap_or(true),
    };
    let stored = state
        .node()
        .store()
        .notifications()
        .put_setting(&caller.actor(), &setting, crate::auth::now())
        .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Remove a notification setting.
#[utoipa::path(delete, path = "/v1/sites/{site}/notifications/{setting}", tag = "notifications",
    params(("site" = u32, Path, description = "The site"), ("setting" = i64, Path, description = "The setting")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_setting(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<StatusCode, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::NOTIFICATIONS_CONFIGURE)
        .await?;
    let store = state.node().store();
    if !store
        .notifications()
        .settings(site)
        .await?
        .iter()
        .any(|s| s.id == keyway_store::SettingId(id))
    {
        return Err(ApiError::not_found(format!(
            "notification setting {id} does not exist on site {}",
            site.0
        )));
    }
    store
        .notifications()
        .delete_setting(&caller.actor(), keyway_store::SettingId(id), crate::auth::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
