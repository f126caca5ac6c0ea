//! The audit log of one site: every admin change the store recorded, filtered by entity,
//! actor and time, paginated. Only holders of `people.invite` (the owner and site
//! admins in the standard role table) read it.
//!
//! A row belongs to the site when its entity is the site itself or when its before or
//! after state names the site. Credential secrets in those states are redacted.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{DEFAULT_LIMIT, MAX_LIMIT, page_of};
use crate::state::AppState;
use axum::extract::State;
use keyway_core::SiteId;
use keyway_plugin_host::Capability;
use keyway_store::AuditRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Filters of the audit log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditFilter {
    /// Only this entity, e.g. `door:7`.
    pub entity: Option<String>,
    /// Only this actor, e.g. `account:3`.
    pub actor: Option<String>,
    /// From this time, in seconds since the epoch (inclusive).
    pub from: Option<i64>,
    /// Until this time, in seconds since the epoch (exclusive).
    pub until: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

/// One audited change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditView {
    pub id: i64,
    /// The revision of a model change.
    pub revision: Option<u64>,
    /// When, in seconds since the epoch.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which entity.
    pub entity: String,
    /// The entity before, as JSON (secrets redacted).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The entity after, as JSON (secrets redacted).
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

page_of!(AuditPage, AuditView);

fn state_of(json: Option<&str>) -> Option<Value> {
    let mut value: Value = serde_json::from_str(json?).ok()?;
    if let Some(map) = value.as_object_mut()
        && map.contains_key("secret")
    {
        map.insert("secret".to_owned(), Value::String("<redacted>".to_owned()));
    }
    Some(value)
}

fn names_site(state: &Option<Value>, site: SiteId) -> bool {
    state
        .as_ref()
        .and_then(|v| v.get("site"))
        .and_then(Value::as_u64)
        .is_some_and(|s| s == u64::from(site.0))
}

/// The site's audit log, newest first.
#[utoipa::path(get, path = "/v1/sites/{site}/audit", tag = "audit",
    params(("site" = u32, Path, description = "The site"), AuditFilter),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(f): Query<AuditFilter>,
) -> Result<Json<AuditPage>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Read, site, Capability::PEOPLE_INVITE)
        .await?;
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("`limit` must be 1 to {MAX_LIMIT}"),
        ));
    }
    let before_id = match &f.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("bad_cursor", format!("`{c}` is not a cursor of this list")))?,
        ),
        None => None,
    };
    let rows: Vec<AuditRow> = state.node().store().model().audit(f.entity.as_deref()).await?;
    let own = format!("site:{}", site.0);
    let mut items: Vec<AuditView> = rows
        .into_iter()
        .rev()
        .filter(|r| before_id.is_none_or(|b| r.id.get() < b))
        .filter(|r| f.actor.as_ref().is_none_or(|a| &r.actor == a))
        .filter(|r| f.from.is_none_or(|t| r.at.as_second() >= t) && f.until.is_none_or(|t| r.at.as_second() < t))
        .filter_map(|r| {
            let before = state_of(r.before.as_deref());
            let after = state_of(r.after.as_deref());
            (r.entity == own || names_site(&before, site) || names_site(&after, site)).then(|| AuditView {
                id: r.id.get(),
                revision: r.revision.map(|v| v.0),
                at: r.at.as_second(),
                actor: r.actor,
                action: r.action,
                entity: r.entity,
                before,
                after,
            })
        })
        .take(usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1))
        .collect();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_cursor }))
}
