//! The states door rules keep, for an admin to inspect and reset: a rule's state for one
//! person, one door, or the site itself (`?person=`, `?door=`, neither for the site).
//! Both need `door.lockdown` (door administration) on the site, as attaching rules does.
//!
//! States live in each node's memory and are not persisted (why: `keyway_node`'s
//! `rule_state` module): a read answers what the node serving it holds; a reset goes
//! through the change log, is audited, answers its revision, and every node applies it.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::Revisioned;
use crate::state::AppState;
use axum::extract::State;
use keyway_core::{DoorId, PersonId, Record, SiteId};
use keyway_plugin_host::Capability;
use keyway_store::{RuleScope, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whose state: a person's, a door's, or (with neither) the site's.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StateQuery {
    /// A person of the site: the state the rule keeps for them.
    pub person: Option<u32>,
    /// A door of the site: the state the rule keeps for it.
    pub door: Option<u32>,
}

/// What a door rule keeps for a person, a door or a site, on the node that answered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RuleStateView {
    pub rule: String,
    /// `person`, `door` or `site`.
    pub scope: &'static str,
    /// The person's, door's or site's id.
    pub id: u32,
    /// The state's bytes in lowercase hex (what the rule last answered with
    /// `StateUpdate::Set`; its meaning is the rule's own); absent when it keeps none.
    pub state: Option<String>,
    /// The state's length in bytes (0 when it keeps none).
    pub bytes: usize,
}

/// Checks the caller's capability, the rule and whose state it is; answers the scope.
async fn scope_of(
    state: &AppState,
    caller: &Caller,
    access: Access,
    site: u32,
    rule: &str,
    query: &StateQuery,
) -> Result<(SiteId, RuleScope), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, access, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let bundle = state.node().policy().bundle();
    if bundle.rule(rule).is_none() {
        let shown: String = rule.chars().take(64).flat_map(char::escape_default).collect();
        return Err(ApiError::not_found(format!(
            "bundle `{}` has no door rule `{shown}`",
            bundle.name()
        )));
    }
    let store = state.node().store();
    let scope = match (query.person, query.door) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "give `person` or `door`, not both (neither: the site's state)",
            ));
        }
        (Some(person), None) => match store.model().record(Target::Person(PersonId(person))).await? {
            Some(Record::Person(p)) if p.site == site => RuleScope::Person(p.id),
            _ => {
                return Err(ApiError::not_found(format!(
                    "person {person} does not exist on site {}",
                    site.0
                )));
            }
        },
        (None, Some(door)) => match store.model().record(Target::Door(DoorId(door))).await? {
            Some(Record::Door(d)) if d.site == site => RuleScope::Door(d.id),
            _ => {
                return Err(ApiError::not_found(format!(
                    "door {door} does not exist on site {}",
                    site.0
                )));
            }
        },
        (None, None) => RuleScope::Site(site),
    };
    Ok((site, scope))
}

/// Read the state a door rule keeps for a person, a door or the site, on this node.
#[utoipa::path(get, path = "/v1/sites/{site}/rules/{rule}/state", tag = "policy",
    params(("site" = u32, Path, description = "The site"),
        ("rule" = String, Path, description = "A door rule of the bundle in force"), StateQuery),
    responses((status = 200, body = RuleStateView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_state(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, rule)): Path<(u32, String)>,
    Query(query): Query<StateQuery>,
) -> Result<Json<RuleStateView>, ApiError> {
    let (_, scope) = scope_of(&state, &caller, Access::Read, site, &rule, &query).await?;
    let kept = state.node().rule_state(&rule, scope);
    Ok(Json(RuleStateView {
        bytes: kept.as_ref().map_or(0, Vec::len),
        state: kept.map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect()),
        scope: scope.kind(),
        id: scope.id(),
        rule,
    }))
}

/// Reset (forget) the state a door rule keeps for a person, a door or the site, on every
/// node; audited.
#[utoipa::path(delete, path = "/v1/sites/{site}/rules/{rule}/state", tag = "policy",
    params(("site" = u32, Path, description = "The site"),
        ("rule" = String, Path, description = "A door rule of the bundle in force"), StateQuery),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn reset_state(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, rule)): Path<(u32, String)>,
    Query(query): Query<StateQuery>,
) -> Result<Json<Revisioned>, ApiError> {
    let (site, scope) = scope_of(&state, &caller, Access::Write, site, &rule, &query).await?;
    let revision = state
        .node()
        .reset_rule_state(&caller.actor(), &rule, site, scope)
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}
