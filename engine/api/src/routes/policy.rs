//! Per-site policy over HTTP: each door's chain of rules (rule plugins of the bundle in
//! force, run in order, the first deny winning; each fail-secure by default and with the
//! door's own configuration) and the site's opening hours. Each change goes through the
//! change log and reaches every node; the answer carries its revision. Changing either
//! needs `door.lockdown` (door administration) on the site; any member reads a chain.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path};
use crate::routes::Revisioned;
use crate::routes::model::door_of;
use crate::routes::rights::{NewSchedule, schedule_of};
use crate::state::AppState;
use axum::extract::State;
use keyway_core::{DoorId, SiteId};
use keyway_plugin_host::Capability;
use keyway_store::ChainedRule;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A rule to attach to a door; as one rule of a chain, in the order the chain runs.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttachRule {
    /// The rule plugin's name in the bundle in force, e.g. `business-hours`.
    pub rule: String,
    /// Whether a failing plugin leaves the core's verdict (fail-safe) instead of denying
    /// (fail-secure, the default).
    #[serde(default)]
    pub fail_safe: bool,
    /// The door's own settings for the rule (a JSON object, at most 4 KiB), e.g.
    /// `{"window_s": 20}` for `two-person`. The rule checks them when they are attached
    /// (ABI version 4); a rule that does not check settings takes none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl From<AttachRule> for ChainedRule {
    fn from(body: AttachRule) -> Self {
        ChainedRule {
            rule: body.rule,
            fail_safe: body.fail_safe,
            config: body.config,
        }
    }
}

impl From<ChainedRule> for AttachRule {
    fn from(rule: ChainedRule) -> Self {
        AttachRule {
            rule: rule.rule,
            fail_safe: rule.fail_safe,
            config: rule.config,
        }
    }
}

/// A door's chain of rules, in the order they run: the first deny wins, each rule's fail
/// mode decides what its failure means.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleChain {
    /// At most 8 rules, each named once; empty when the door has none (a `PUT` of an
    /// empty chain is refused: `DELETE` detaches).
    pub rules: Vec<AttachRule>,
}

async fn door_admin(state: &AppState, caller: &Caller, site: u32, door: u32) -> Result<DoorId, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    Ok(door_of(state, site, door).await?.id)
}

/// A door of `site`, for a caller who may read the site.
async fn site_door(state: &AppState, caller: &Caller, site: u32, door: u32) -> Result<DoorId, ApiError> {
    let site = SiteId(site);
    caller.member(state, Access::Read, site).await?;
    Ok(door_of(state, site, door).await?.id)
}

/// A door's chain of rules, in order, with each rule's fail mode and configuration.
#[utoipa::path(get, path = "/v1/sites/{site}/doors/{door}/rules", tag = "policy",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = RuleChain), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_rules(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<RuleChain>, ApiError> {
    let door = site_door(&state, &caller, site, door).await?;
    let chain = state.node().store().policy_records().door_rule_chain(door).await?;
    Ok(Json(RuleChain {
        rules: chain
            .map(|c| c.rules.into_iter().map(AttachRule::from).collect())
            .unwrap_or_default(),
    }))
}

/// Set a door's chain of rules (replacing any): each must be in the bundle in force and
/// take its configuration.
#[utoipa::path(put, path = "/v1/sites/{site}/doors/{door}/rules", tag = "policy", request_body = RuleChain,
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn set_rules(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
    Json(body): Json<RuleChain>,
) -> Result<Json<Revisioned>, ApiError> {
    let door = door_admin(&state, &caller, site, door).await?;
    let rules = body.rules.into_iter().map(ChainedRule::from).collect();
    let revision = state.node().set_door_rules(&caller.actor(), door, rules).await?;
    Ok(Json(Revisioned::new(revision.0)))
}

/// Detach every rule of a door.
#[utoipa::path(delete, path = "/v1/sites/{site}/doors/{door}/rules", tag = "policy",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn detach_rules(
    state: State<AppState>,
    caller: Caller,
    path: Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    detach_rule(state, caller, path).await
}

/// Attach a rule plugin to a door as its only rule, replacing the door's rule. A door
/// whose chain has more than one rule, or settings of its own, is changed only through
/// `PUT .../rules`, which shows what it replaces: here it is refused (409), so a client
/// that knows one rule per door never wipes a chain it did not see.
#[utoipa::path(put, path = "/v1/sites/{site}/doors/{door}/rule", tag = "policy", request_body = AttachRule,
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn attach_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
    Json(body): Json<AttachRule>,
) -> Result<Json<Revisioned>, ApiError> {
    let door = door_admin(&state, &caller, site, door).await?;
    if let Some(chain) = state.node().store().policy_records().door_rule_chain(door).await?
        && (chain.rules.len() > 1 || chain.rules.iter().any(|r| !r.config.is_empty()))
    {
        return Err(ApiError::Conflict {
            code: "door_has_a_chain",
            message: format!(
                "door {} runs {}; change it with PUT /v1/sites/{site}/doors/{}/rules, which shows and replaces the whole chain",
                door.0,
                if chain.rules.len() > 1 {
                    format!("a chain of {} rules", chain.rules.len())
                } else {
                    "a rule with settings of its own".to_owned()
                },
                door.0
            ),
        });
    }
    let revision = state
        .node()
        .set_door_rules(&caller.actor(), door, vec![body.into()])
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

/// Detach every rule of a door (the same as `DELETE .../rules`).
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
