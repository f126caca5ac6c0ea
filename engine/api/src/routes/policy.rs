//! Per-site policy over HTTP: door-rule attachments (a rule plugin of the bundle in
//! force, fail-secure by default) and the site's opening hours. Each change goes through
//! the change log and reaches every node; the answer carries its revision. Both need
//! `door.lockdown` (door administration) on the site.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path};
use crate::routes::Revisioned;
use crate::routes::rights::{NewSchedule, schedule_of};
use crate::state::AppState;
use axum::extract::State;
use keyway_core::{DoorId, Record, SiteId};
use keyway_plugin_host::Capability;
use keyway_store::Target;
use serde::Deserialize;
use utoipa::ToSchema;

/// A rule to attach to a door.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttachRule {
    /// The rule plugin's name in the bundle in force, e.g. `business-hours`.
    pub rule: String,
    /// Whether a failing plugin leaves the core's verdict (fail-safe) instead of denying
    /// (fail-secure, the default).
    #[serde(default)]
    pub fail_safe: bool,
}

async fn door_admin(state: &AppState, caller: &Caller, site: u32, door: u32) -> Result<DoorId, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    match state.node().store().record(Target::Door(DoorId(door))).await? {
        Some(Record::Door(d)) if d.site == site => Ok(d.id),
        _ => Err(ApiError::not_found(format!(
            "door {door} does not exist on site {}",
            site.0
        ))),
    }
}

/// Attach a rule plugin to a door (replacing any).
#[utoipa::path(put, path = "/v1/sites/{site}/doors/{door}/rule", tag = "policy", request_body = AttachRule,
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn attach_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
    Json(body): Json<AttachRule>,
) -> Result<Json<Revisioned>, ApiError> {
    let door = door_admin(&state, &caller, site, door).await?;
    let revision = state
        .node()
        .attach_door_rule(&caller.actor(), door, &body.rule, body.fail_safe)
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

/// Detach a door's rule.
#[utoipa::path(delete, path = "/v1/sites/{site}/doors/{door}/rule", tag = "policy",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn detach_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    let door = door_admin(&state, &caller, site, door).await?;
    let revision = state.node().detach_door_rule(&caller.actor(), door).await?;
    Ok(Json(Revisioned::new(revision.0)))
}

/// Set the site's opening hours (a schedule on the site's wall clock, for door rules).
#[utoipa::path(put, path = "/v1/sites/{site}/opening-hours", tag = "policy", request_body = NewSchedule,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn set_hours(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewSchedule>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let hours = schedule_of(&body)?;
    let revision = state
        .node()
        .set_opening_hours(&caller.actor(), site, Some(&hours))
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

/// Clear the site's opening hours.
#[utoipa::path(delete, path = "/v1/sites/{site}/opening-hours", tag = "policy",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn clear_hours(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let revision = state.node().set_opening_hours(&caller.actor(), site, None).await?;
    Ok(Json(Revisioned::new(revision.0)))
}
