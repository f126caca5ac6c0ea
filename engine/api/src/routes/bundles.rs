//! Policy administration: plugin modules and bundles. The instance operator uploads
//! modules (`application/wasm`) and bundles (a manifest pinning uploaded modules by
//! sha256), activates one (checked by the plugin host first, then hot-swapped on every
//! node with no decision dropped), and rolls back to the bundle in force before. One
//! bundle runs for every site (see `keyway_node::policy`), so these routes are the
//! operator's; every member of a site reads what is in force there with
//! `GET /v1/sites/{site}/policy`.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use keyway_core::{Record, SiteId};
use keyway_store::{MAX_PLUGIN_BYTES, PluginId, StoredBundle, StoredPlugin, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The name and version of an uploaded module.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PluginUpload {
    /// The plugin's name, e.g. `business-hours`.
    pub name: String,
    /// Its version, e.g. `1.2.0`; a name and version are uploaded once.
    pub version: String,
}

/// An uploaded plugin module.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginView {
    /// Its id, for a bundle's `plugins`.
    pub id: i64,
    pub name: String,
    pub version: String,
    /// The module's SHA-256 (hex), which a manifest pins.
    pub sha256: String,
    /// When it was uploaded, Unix seconds.
    pub uploaded_at: i64,
}

impl From<StoredPlugin> for PluginView {
    fn from(p: StoredPlugin) -> Self {
        PluginView {
            id: p.id.get(),
            name: p.name,
            version: p.version,
            sha256: p.sha256,
            uploaded_at: p.uploaded_at.as_second(),
        }
    }
}

/// A new bundle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBundle {
    pub name: String,
    /// Its version; a name and version are uploaded once.
    pub version: String,
    /// The manifest (`bundle.toml`), TOML text; each plugin's `sha256` pins a module.
    pub manifest: String,
    /// The uploaded modules it deploys, by id.
    pub plugins: Vec<i64>,
}

/// A stored bundle.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BundleView {
    pub id: i64,
    pub name: String,
    pub version: String,
    /// The manifest's SHA-256 (hex).
    pub sha256: String,
    /// Whether it is the one in force.
    pub active: bool,
    /// When it was uploaded, Unix seconds.
    pub uploaded_at: i64,
    /// The modules it deploys, by id.
    pub plugins: Vec<i64>,
}

impl From<StoredBundle> for BundleView {
    fn from(b: StoredBundle) -> Self {
        BundleView {
            id: b.id.get(),
            name: b.name,
            version: b.version,
            sha256: b.sha256,
            active: b.active,
            uploaded_at: b.uploaded_at.as_second(),
            plugins: b.plugins.into_iter().map(|id| id.get()).collect(),
        }
    }
}

/// A bundle put in force, and the revision every node applies it at.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Activated {
    /// The bundle now in force.
    pub bundle: BundleView,
    /// The revision of the change; nodes decide with it from this revision on.
    pub revision: u64,
}

/// One rule of a door's chain, as a site sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DoorRuleView {
    pub door: u32,
    /// Its place in the door's chain, from 0 (rules run in this order).
    pub position: u32,
    /// The rule plugin.
    pub rule: String,
    /// Whether a failing rule leaves the core's verdict (fail-safe) or denies.
    pub fail_safe: bool,
    /// The door's own settings for the rule.
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// What is in force on a site.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SitePolicy {
    /// The bundle every site runs: its name and manifest SHA-256, and its stored id and
    /// version when it came from the store.
    pub bundle: String,
    /// The manifest's SHA-256, when the bundle is stored.
    pub sha256: Option<String>,
    /// Its stored id.
    pub id: Option<i64>,
    pub version: Option<String>,
    /// The rule plugins of the bundle, which doors may attach.
    pub rules: Vec<String>,
    /// The rules of the site's doors, by door, then in each door's chain order.
    pub door_rules: Vec<DoorRuleView>,
}

page_of!(PluginPage, PluginView);
page_of!(BundlePage, BundleView);

/// Upload a plugin module (the instance operator only): the body is the `.wasm` file,
/// within the server's body limit (`--max-body-bytes`) and 16 MiB.
#[utoipa::path(post, path = "/v1/plugins", tag = "policy", params(PluginUpload),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The module"),
    responses((status = 201, body = PluginView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn upload_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Query(upload): Query<PluginUpload>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    caller
        .require_operator(&state, Access::Write, "administers plugins and bundles")
        .await?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/wasm") {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/wasm",
        });
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: crate::state::body_limit(),
        },
        _ => ApiError::bad_request("bad_body", e.body_text()),
    })?;
    if body.len() > MAX_PLUGIN_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_PLUGIN_BYTES,
        });
    }
    let stored = state
        .node()
        .store()
        .policy_records()
        .upload_plugin(
            &caller.actor(),
            &upload.name,
            &upload.version,
            &body,
            crate::auth::now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// The uploaded plugin modules (the instance operator only).
#[utoipa::path(get, path = "/v1/plugins", tag = "policy", params(Pagination),
    responses((status = 200, body = PluginPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub(crate) async fn list_plugins(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Pagination>,
) -> Result<Json<PluginPage>, ApiError> {
    caller
        .require_operator(&state, Access::Read, "administers plugins and bundles")
        .await?;
    let all = state.node().store().policy_records().plugins().await?;
    let (page, next_cursor) = p.page(all, |x| x.id.get())?;
    Ok(Json(PluginPage {
        items: page.into_iter().map(PluginView::from).collect(),
        next_cursor,
    }))
}

/// Upload a bundle (the instance operator only). Activating it checks it.
#[utoipa::path(post, path = "/v1/bundles", tag = "policy", request_body = NewBundle,
    responses((status = 201, body = BundleView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn upload_bundle(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewBundle>,
) -> Result<(StatusCode, Json<BundleView>), ApiError> {
    caller
        .require_operator(&state, Access::Write, "administers plugins and bundles")
        .await?;
    let stored = state
        .node()
        .store()
        .policy_records()
        .upload_bundle(
            &caller.actor(),
            None,
            &body.name,
            &body.version,
            &body.manifest,
            &body.plugins.iter().copied().map(PluginId).collect::<Vec<_>>(),
            crate::auth::now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// The stored bundles, the one in force marked (the instance operator only).
#[utoipa::path(get, path = "/v1/bundles", tag = "policy", params(Pagination),
    responses((status = 200, body = BundlePage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub(crate) async fn list_bundles(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Pagination>,
) -> Result<Json<BundlePage>, ApiError> {
    caller
        .require_operator(&state, Access::Read, "administers plugins and bundles")
        .await?;
    let all = state.node().store().policy_records().bundles(None).await?;
    let (page, next_cursor) = p.page(all, |b| b.id.get())?;
    Ok(Json(BundlePage {
        items: page.into_iter().map(BundleView::from).collect(),
        next_cursor,
    }))
}

/// Put a stored bundle in force on every node (the instance operator only). A bundle
/// that does not load, or that lacks a rule some door has attached, is refused and the
/// running one stays.
#[utoipa::path(post, path = "/v1/bundles/{bundle}/activate", tag = "policy",
    params(("bundle" = i64, Path, description = "The bundle")),
    responses((status = 200, body = Activated), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn activate_bundle(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Activated>, ApiError> {
    caller
        .require_operator(&state, Access::Write, "administers plugins and bundles")
        .await?;
    let (bundle, revision) = state
        .node()
        .activate_bundle(&caller.actor(), keyway_store::BundleId(id))
        .await?;
    Ok(Json(Activated {
        bundle: bundle.into(),
        revision: revision.0,
    }))
}

/// Put the bundle that was in force before the current one back in force (the instance
/// operator only).
#[utoipa::path(post, path = "/v1/bundles/rollback", tag = "policy",
    responses((status = 200, body = Activated), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn rollback_bundle(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Activated>, ApiError> {
    caller
        .require_operator(&state, Access::Write, "administers plugins and bundles")
        .await?;
    let Some(previous) = state.node().store().policy_records().previous_bundle(None).await? else {
        return Err(ApiError::Conflict {
            code: "no_previous_bundle",
            message: "no bundle was in force before the current one".to_owned(),
        });
    };
    let (bundle, revision) = state.node().activate_bundle(&caller.actor(), previous.id).await?;
    Ok(Json(Activated {
        bundle: bundle.into(),
        revision: revision.0,
    }))
}

/// What is in force on a site: the bundle, its rule plugins, the site's door rules.
#[utoipa::path(get, path = "/v1/sites/{site}/policy", tag = "policy",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = SitePolicy), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn site_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<SitePolicy>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let store = state.node().store();
    let running = state.node().policy().bundle();
    let stored = store.policy_records().active_bundle(None).await?;
    let mut door_rules = Vec::new();
    for chain in store.policy_records().door_rules().await? {
        if let Some(Record::Door(d)) = store.model().record(Target::Door(chain.door)).await?
            && d.site == site
        {
            for (position, link) in (0u32..).zip(chain.rules) {
                door_rules.push(DoorRuleView {
                    door: d.id.0,
                    position,
                    rule: link.rule,
                    fail_safe: link.fail_safe,
                    config: link.config,
                });
            }
        }
    }
    Ok(Json(SitePolicy {
        bundle: running.name().to_owned(),
        sha256: stored.as_ref().map(|b| b.sha256.clone()),
        id: (stored.as_ref().map(|b| b.id)).map(|id| id.get()),
        version: stored.map(|b| b.version),
        rules: running.rule_names().map(str::to_owned).collect(),
        door_rules,
    }))
}
