//! Keyway's admin HTTP API: an axum [`app`] over a [`keyway_node::Node`], with its
//! OpenAPI document at `/v1/openapi.json` and an interactive page at `/v1/docs`.
//!
//! - `config`: [`ApiConfig`], what the binary tells the API.
//! - `state`: [`AppState`], the node, mailer, rate limiters and HTTP metrics.
//! - `error`: [`ApiError`], every failure as RFC 9457 problem details.
//! - `extract`: JSON, path and query extractors that fail in that same shape.
//! - `auth`: sessions, API tokens and their scopes, role checks through the role table
//!   of the bundle in force.
//! - `routes`: the `/v1` routes, one module per area.
//! - `metrics`: requests and latency by route, for the binary's `/metrics`.
//! - `notifier`: the notification worker: events through the notify plugin, e-mails,
//!   signed webhook deliveries with retries.
//!
//! This crate depends on the node and never on the IQ link.
//!
//! The binary serves [`app`] with `into_make_service_with_connect_info::<SocketAddr>()`
//! so that rate limits see each client's address.

mod auth;
mod config;
mod error;
mod extract;
mod metrics;
mod notifier;
mod routes;
mod state;

pub use auth::{SCOPES, SESSION_COOKIE};
pub use config::{ApiConfig, LinkAdvert, RateLimit};
pub use error::{ApiError, Problem};
pub use notifier::{DELIVERY_HEADER, SIGNATURE_HEADER, is_public, signature};
pub use routes::accounts::password_rules_broken;
pub use state::AppState;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyway_node::Node;
use keyway_store::Account;
use routes::{
    accounts, audit, bundles, door_ops, import, iqs, keys, live, model, notifications, policy, rights, rule_state,
    sites, vouchers, webhooks,
};
use std::time::Instant;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_scalar::Servable;

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyway admin API", description = "Sites, people, rights and decisions over HTTP. Errors are RFC 9457 problem details."),
    components(schemas(Problem)),
    tags(
        (name = "accounts", description = "Sign up, sessions, password reset, API tokens"),
        (name = "sites", description = "Sites and the caller's role on each"),
        (name = "members", description = "Members, invitations, ownership"),
        (name = "vouchers", description = "Vouchers: caps on users and app users"),
        (name = "doors", description = "Doors"),
        (name = "people", description = "People"),
        (name = "credentials", description = "Tags, PINs, digital keys"),
        (name = "rights", description = "Schedules, access groups, the entries log"),
        (name = "notifications", description = "Per-site notification settings and webhook endpoints"),
        (name = "audit", description = "The audit log of a site"),
        (name = "policy", description = "Plugins and bundles, door rules, their states, and opening hours"),
        (name = "iqs", description = "IQ gateways: registration, enrolment, state, activation PINs, firmware"),
        (name = "decisions", description = "Decisions"),
    )
)]
struct ApiDoc;

/// Error answers are problem details (RFC 9457), served as `application/problem+json`.
/// The route annotations name the `Problem` body; this names its media type for all of
/// them, so the document says what the server sends.
fn problem_media_type(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else { continue };
                let is_problem = response
                    .content
                    .get("application/json")
                    .and_then(|c| c.schema.as_ref())
                    .is_some_and(|s| matches!(s, RefOr::Ref(r) if r.ref_location.ends_with("/Problem")));
                if is_problem && let Some(content) = response.content.shift_remove("application/json") {
                    response.content.insert("application/problem+json".to_owned(), content);
                }
            }
        }
    }
}

/// The `/v1` routes and their OpenAPI document.
fn v1() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = v1_routes();
    problem_media_type(&mut doc);
    (router, doc)
}

fn v1_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::sign_up))
        .routes(routes!(accounts::sign_in, accounts::sign_out_everywhere))
        .routes(routes!(accounts::sign_out))
        .routes(routes!(accounts::me, accounts::delete_me))
        .routes(routes!(accounts::disable_account))
        .routes(routes!(accounts::enable_account))
        .routes(routes!(accounts::request_reset))
        .routes(routes!(accounts::confirm_reset))
        .routes(routes!(accounts::create_token, accounts::list_tokens))
        .routes(routes!(accounts::revoke_token))
        .routes(routes!(sites::create_site, sites::list_sites))
        .routes(routes!(sites::get_site, sites::update_site))
        .routes(routes!(sites::list_members))
        .routes(routes!(sites::change_role))
        .routes(routes!(sites::remove_member))
        .routes(routes!(sites::transfer))
        .routes(routes!(sites::invite, sites::list_invitations))
        .routes(routes!(sites::revoke_invitation))
        .routes(routes!(sites::accept_invitation))
        .routes(routes!(vouchers::create_voucher, vouchers::list_vouchers))
        .routes(routes!(vouchers::redeem, vouchers::licence))
        .routes(routes!(model::create_door, model::list_doors))
        .routes(routes!(model::rename_door, model::remove_door))
        .routes(routes!(model::create_person, model::list_people))
        .routes(routes!(import::import_people))
        .routes(routes!(model::block_person))
        .routes(routes!(model::unblock_person))
        .routes(routes!(model::remove_person))
        .routes(routes!(model::create_credential))
        .routes(routes!(model::revoke_credential))
        .routes(routes!(rights::create_schedule))
        .routes(routes!(rights::remove_schedule))
        .routes(routes!(rights::create_group, rights::list_groups))
        .routes(routes!(rights::replace_group, rights::remove_group))
        .routes(routes!(rights::list_entries))
        .routes(routes!(notifications::create_setting, notifications::list_settings))
        .routes(routes!(notifications::delete_setting))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::resume_webhook))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(audit::list_audit))
        .routes(routes!(policy::attach_rule, policy::detach_rule))
        .routes(routes!(policy::get_rules, policy::set_rules, policy::detach_rules))
        .routes(routes!(policy::set_hours, policy::clear_hours))
        .routes(routes!(bundles::upload_plugin, bundles::list_plugins))
        .routes(routes!(bundles::upload_bundle, bundles::list_bundles))
        .routes(routes!(bundles::activate_bundle))
        .routes(routes!(bundles::rollback_bundle))
        .routes(routes!(bundles::site_policy))
        .routes(routes!(door_ops::get_door))
        .routes(routes!(door_ops::set_mode))
        .routes(routes!(door_ops::lock_door, door_ops::lift_door_lockdown))
        .routes(routes!(door_ops::lock_site, door_ops::lift_site_lockdown))
        .routes(routes!(door_ops::remote_open))
        .routes(routes!(keys::list_unassigned))
        .routes(routes!(keys::assign))
        .routes(routes!(keys::restore))
        .routes(routes!(live::export_entries))
        .routes(routes!(live::get_retention, live::set_retention))
        .routes(routes!(live::list_incidents))
        .routes(routes!(live::acknowledge_incident))
        .routes(routes!(live::events))
        .routes(routes!(rule_state::get_state, rule_state::reset_state))
        .routes(routes!(iqs::register_iq, iqs::list_iqs))
        .routes(routes!(iqs::get_iq, iqs::rename_iq, iqs::remove_iq))
        .routes(routes!(iqs::new_enrolment_code))
        .routes(routes!(iqs::reset_iq))
        .routes(routes!(iqs::pair_door))
        .routes(routes!(iqs::list_activations))
        .routes(routes!(iqs::set_own_pin))
        .routes(routes!(iqs::reset_pin))
        .routes(routes!(iqs::assign_firmware))
        .routes(routes!(iqs::list_firmware))
        .routes(routes!(iqs::download_firmware))
        .routes(routes!(keys::set_offline_access))
        .routes(routes!(model::decide))
        .routes(routes!(model::decide_batch))
        .split_for_parts()
}

/// The OpenAPI document of every `/v1` route.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    v1().1
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A request id: a random prefix per process and a counter, so ids are unique across
/// nodes without a call to the system's random generator per request.
fn request_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        auth::fresh_secret("")
            .ok()
            .and_then(|s| u32::from_str_radix(s.get(..8)?, 16).ok())
            .unwrap_or_default()
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix:08x}{n:08x}")
}

/// Per request: a request id (echoed as `x-request-id`), a tracing span, the HTTP
/// metrics by matched route, and the request timeout. The access log line is at `info`,
/// except for decisions answered 2xx, at `debug`: each is in the entries log already,
/// and at gateway rates a line per decision costs more than the decision.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let timeout = state.config().request_timeout;
    let run = error::REQUEST_ID.scope(id.clone(), async move {
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::Timeout.into_response(),
        }
    });
    let mut response = run.instrument(span.clone()).await;
    let status = response.status().as_u16();
    state.inner.metrics.observe(&route, &method, status, started.elapsed());
    let took_ms = started.elapsed().as_millis();
    if route.starts_with("/v1/decide") && (200..300).contains(&status) {
        span.in_scope(|| tracing::debug!(status, took_ms, "answered"));
    } else {
        span.in_scope(|| tracing::info!(status, took_ms, "answered"));
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Every `/v1` route, `/v1/openapi.json` and the interactive docs at `/v1/docs`, with
/// request ids, tracing, metrics, the request timeout, the body limit, problem-shaped
/// 404 and 405 answers, and CORS only when origins are configured.
pub fn app(state: AppState) -> Router {
    let (router, api) = v1();
    let doc = api.clone();
    let mut router = router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .merge(utoipa_scalar::Scalar::with_url("/v1/docs", api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(state.config().max_body_bytes));
    let origins: Vec<HeaderValue> = state
        .config()
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if !origins.is_empty() {
        router = router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
                .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::AUTHORIZATION])
                .allow_credentials(true),
        );
    }
    router.with_state(state)
}

/// Set up the instance operator from the command line: a new account with `email` and
/// `password` (the FAQ's password rules apply), made an operator. The operator issues
/// vouchers; nobody else can.
///
/// # Errors
/// [`ApiError::Unprocessable`] for a weak password or a malformed e-mail;
/// [`ApiError::Conflict`] if the e-mail is taken.
pub async fn create_operator(node: &Node, email: &str, password: &str) -> Result<Account, ApiError> {
    let broken = password_rules_broken(password);
    if !broken.is_empty() {
        return Err(ApiError::Unprocessable {
            code: "weak_password",
            message: format!("the password is too weak: {}", broken.join("; ")),
            details: broken.into_iter().map(str::to_owned).collect(),
        });
    }
    let store = node.store();
    let account = store
        .accounts()
        .create("cli", email, password, "operator", auth::now())
        .await?;
    store.accounts().add_operator("cli", account.id, auth::now()).await?;
    Ok(account)
}
