//! Accounts and authentication: sign up, sign in and out (one session or all of them),
//! the current account, password reset by e-mailed link, and scoped API tokens.

use crate::auth::{
    Access, Caller, SCOPES, SESSION_COOKIE, Via, after, client_address, fresh_secret, hash_secret, instant, now,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyway_core::SiteId;
use keyway_store::{Account, AccountId, ApiToken, MAX_PASSWORD_BYTES, TokenId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every password rule of the site-operator FAQ that `password` breaks, in order.
#[must_use]
pub fn password_rules_broken(password: &str) -> Vec<&'static str> {
    let mut broken = Vec::new();
    if password.chars().count() < 8 {
        broken.push("a password needs at least 8 characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        broken.push("a password has at most 256 bytes");
    }
    if !password.chars().any(char::is_lowercase) {
        broken.push("a password needs a lowercase letter (a-z)");
    }
    if !password.chars().any(char::is_uppercase) {
        broken.push("a password needs an uppercase letter (A-Z)");
    }
    if password.chars().all(char::is_alphanumeric) {
        broken.push("a password needs a character that is not a letter or a digit");
    }
    broken
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let broken = password_rules_broken(password);
    if broken.is_empty() {
        return Ok(());
    }
    Err(ApiError::Unprocessable {
        code: "weak_password",
        message: format!("the password is too weak: {}", broken.join("; ")),
        details: broken.into_iter().map(str::to_owned).collect(),
    })
}

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignUp {
    /// The e-mail to sign in with.
    pub email: String,
    /// At least 8 characters, with a lowercase and an uppercase letter and a character
    /// that is not a letter or digit.
    pub password: String,
    /// The name shown to others.
    #[serde(default)]
    pub display_name: String,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccountView {
    pub id: i64,
    /// Its e-mail, lowercased.
    pub email: String,
    /// The name shown.
    pub display_name: String,
    /// Whether it is an instance operator.
    pub operator: bool,
    /// Whether the operator disabled it.
    pub disabled: bool,
}

impl AccountView {
    fn of(a: Account, operator: bool) -> Self {
        AccountView {
            id: a.id.get(),
            email: a.email,
            display_name: a.display_name,
            operator,
            disabled: a.disabled,
        }
    }
}

/// Sign up.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = SignUp,
    responses((status = 201, body = AccountView), (status = 400, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn sign_up(
    State(state): State<AppState>,
    Json(body): Json<SignUp>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    check_password(&body.password)?;
    if body.display_name.chars().count() > keyway_store::MAX_NAME || body.display_name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "a display name has at most {} characters and no control characters",
            keyway_store::MAX_NAME
        )));
    }
    let account = state
        .node()
        .store()
        .accounts()
        .create("signup", &body.email, &body.password, body.display_name.trim(), now())
        .await?;
    Ok((StatusCode::CREATED, Json(AccountView::of(account, false))))
}

/// E-mail and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// The account's e-mail.
    pub email: String,
    pub password: String,
}

/// A new session. The same secret is set as an HttpOnly cookie for browsers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionView {
    /// The bearer token for programs (`Authorization: Bearer ...`); shown once.
    pub token: String,
    /// When it expires, in seconds since the epoch.
    pub expires_at: i64,
    pub account: AccountView,
}

/// Sign in: a session as a cookie and as a bearer token.
#[utoipa::path(post, path = "/v1/sessions", tag = "accounts", request_body = SignIn,
    responses((status = 201, body = SessionView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem)))]
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let address = client_address(request.extensions());
    let Json(body) = <Json<SignIn> as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    let email = body.email.trim().to_lowercase();
    state
        .inner
        .login_limiter
        .check(&[format!("email:{email}"), format!("ip:{address}")])?;
    let store = state.node().store();
    let account = store
        .accounts()
        .verify_password(&email, &body.password)
        .await?
        .ok_or(ApiError::BadCredentials)?;
    let secret = fresh_secret("ks_")?;
    let lifetime = i64::try_from(state.config().session_lifetime.as_secs()).unwrap_or(i64::MAX / 2);
    let now = now();
    let expires_at = after(now, lifetime);
    store
        .accounts()
        .create_session(account.id, &hash_secret(&secret), now, expires_at)
        .await?;
    let operator = store.accounts().is_operator(account.id).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={lifetime}{}",
        if state.config().secure_cookie { "; Secure" } else { "" }
    );
    let mut response = (
        StatusCode::CREATED,
        Json(SessionView {
            token: secret,
            expires_at: expires_at.as_second(),
            account: AccountView::of(account, operator),
        }),
    )
        .into_response();
    let value = HeaderValue::from_str(&cookie).map_err(ApiError::internal)?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn clear_cookie(state: &AppState) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let cookie = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if state.config().secure_cookie { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, v);
    }
    headers
}

/// Sign out: end this session.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "accounts",
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn sign_out(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.allow(Access::Account, None)?;
    if let Via::Session(hash) = &caller.via {
        state.node().store().accounts().end_session(hash).await?;
    }
    Ok((StatusCode::NO_CONTENT, clear_cookie(&state)).into_response())
}

/// Sign out everywhere: end every session of the account.
#[utoipa::path(delete, path = "/v1/sessions", tag = "accounts",
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn sign_out_everywhere(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.allow(Access::Account, None)?;
    state.node().store().accounts().end_sessions(caller.account).await?;
    Ok((StatusCode::NO_CONTENT, clear_cookie(&state)).into_response())
}

/// The current account.
#[utoipa::path(get, path = "/v1/me", tag = "accounts",
    responses((status = 200, body = AccountView), (status = 401, body = Problem)))]
pub(crate) async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<AccountView>, ApiError> {
    caller.allow(Access::Read, None)?;
    let store = state.node().store();
    let account = store
        .accounts()
        .get(caller.account)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let operator = store.accounts().is_operator(caller.account).await?;
    Ok(Json(AccountView::of(account, operator)))
}

/// Confirms deleting one's own account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteAccount {
    /// The account's password.
    pub password: String,
}

/// Delete the caller's own account, its sessions, tokens and memberships, after
/// checking its password (rate-limited as sign-in). An owner transfers ownership first;
/// the instance operator's account is not deleted over HTTP.
#[utoipa::path(delete, path = "/v1/me", tag = "accounts", request_body = DeleteAccount,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn delete_me(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<DeleteAccount>,
) -> Result<Response, ApiError> {
    caller.allow(Access::Account, None)?;
    let store = state.node().store();
    let account = store
        .accounts()
        .get(caller.account)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    state.inner.login_limiter.check(&[format!("email:{}", account.email)])?;
    if store
        .accounts()
        .verify_password(&account.email, &body.password)
        .await?
        .is_none()
    {
        return Err(ApiError::BadCredentials);
    }
    if store.accounts().is_operator(account.id).await? {
        return Err(ApiError::Conflict {
            code: "operator_account",
            message: "the instance operator's account is not deleted over HTTP".to_owned(),
        });
    }
    let owned: Vec<String> = store
        .memberships()
        .of_account(account.id)
        .await?
        .into_iter()
        .filter(|m| m.is_owner)
        .map(|m| m.site.0.to_string())
        .collect();
    if !owned.is_empty() {
        return Err(ApiError::Conflict {
            code: "owner",
            message: format!("this account owns site {}: transfer ownership first", owned.join(", ")),
        });
    }
    store.accounts().delete(&caller.actor(), account.id, now()).await?;
    Ok((StatusCode::NO_CONTENT, clear_cookie(&state)).into_response())
}

async fn set_disabled(state: &AppState, caller: &Caller, raw_id: i64, disabled: bool) -> Result<AccountView, ApiError> {
    let id = AccountId(raw_id);
    caller
        .require_operator(state, Access::Account, "disables and enables accounts")
        .await?;
    let store = state.node().store();
    if id == caller.account {
        return Err(ApiError::Conflict {
            code: "own_account",
            message: "the operator cannot disable their own account".to_owned(),
        });
    }
    store
        .accounts()
        .set_disabled(&caller.actor(), id, disabled, now())
        .await?;
    if disabled {
        store.accounts().end_sessions(id).await?;
    }
    let account = store
        .accounts()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {raw_id} does not exist")))?;
    let operator = store.accounts().is_operator(id).await?;
    Ok(AccountView::of(account, operator))
}

/// Disable an account (the instance operator only): its sessions end, its tokens stop
/// working, and it cannot sign in until enabled again. Its memberships stay.
#[utoipa::path(post, path = "/v1/accounts/{account}/disable", tag = "accounts",
    params(("account" = i64, Path, description = "The account")),
    responses((status = 200, body = AccountView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn disable_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(set_disabled(&state, &caller, id, true).await?))
}

/// Enable a disabled account again (the instance operator only).
#[utoipa::path(post, path = "/v1/accounts/{account}/enable", tag = "accounts",
    params(("account" = i64, Path, description = "The account")),
    responses((status = 200, body = AccountView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn enable_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(set_disabled(&state, &caller, id, false).await?))
}

/// Ask for a password-reset link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetRequest {
    /// The account's e-mail.
    pub email: String,
}

/// The answer to a reset request: the same whether or not the account exists.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResetAccepted {
    /// What happens next.
    pub message: String,
}

/// Ask for a password-reset link by e-mail. The answer is the same whether or not an
/// account has that e-mail.
#[utoipa::path(post, path = "/v1/password-resets", tag = "accounts", request_body = ResetRequest,
    responses((status = 202, body = ResetAccepted), (status = 400, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn request_reset(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<ResetAccepted>), ApiError> {
    let address = client_address(request.extensions());
    let Json(body) =
        <Json<ResetRequest> as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    let email = body.email.trim().to_lowercase();
    state
        .inner
        .reset_limiter
        .check(&[format!("email:{email}"), format!("ip:{address}")])?;
    // Issue and mail off the request path, so the answer takes as long with or without
    // an account.
    let background = state.clone();
    tokio::spawn(async move {
        let lifetime = i64::try_from(background.config().reset_lifetime.as_secs()).unwrap_or(3600);
        match background
            .node()
            .store()
            .accounts()
            .issue_password_reset(&email, now(), after(now(), lifetime))
            .await
        {
            Ok(Some(issued)) => {
                let link = format!(
                    "{}/reset-password?token={}",
                    background.config().public_url,
                    issued.secret
                );
                let body = format!(
                    "Someone asked to reset the password of your Keyway account.\n\
                     Open this link within {} minutes to choose a new password:\n\n{link}\n\n\
                     If it was not you, ignore this mail.",
                    lifetime / 60
                );
                if let Err(e) = background.send_mail(&email, "Reset your Keyway password", &body).await {
                    tracing::warn!(error = %e, "password-reset mail not sent");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "password reset not issued"),
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(ResetAccepted {
            message: "if an account has this e-mail, a reset link is on its way".to_owned(),
        }),
    ))
}

/// Choose a new password with the secret from a reset link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetConfirm {
    /// The `token` of the reset link.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// Set a new password with a reset link's secret; every session of the account ends.
#[utoipa::path(post, path = "/v1/password-resets/confirm", tag = "accounts", request_body = ResetConfirm,
    responses((status = 204), (status = 400, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn confirm_reset(
    State(state): State<AppState>,
    Json(body): Json<ResetConfirm>,
) -> Result<StatusCode, ApiError> {
    check_password(&body.password)?;
    state
        .node()
        .store()
        .accounts()
        .redeem_password_reset(&body.token, &body.password, now())
        .await
        .map_err(|e| match e {
            keyway_store::StoreError::Invalid { .. } => ApiError::Unprocessable {
                code: "invalid_reset_token",
                message: "the reset link is invalid, used or expired".to_owned(),
                details: Vec::new(),
            },
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// A name for people.
    pub name: String,
    /// Scopes: `read`, `decide`, `admin` (`admin` needs a `site`). Empty: everything the
    /// account may do, except managing accounts and tokens.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The one site it may touch.
    pub site: Option<u32>,
    /// When it stops working, in seconds since the epoch.
    pub expires_at: Option<i64>,
}

/// An API token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenView {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    /// Its site, if limited to one.
    pub site: Option<u32>,
    /// When it was made.
    pub created_at: i64,
    /// When it stops working.
    pub expires_at: Option<i64>,
    /// When it was last used.
    pub last_used_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        TokenView {
            id: t.id.get(),
            name: t.name,
            scopes: t.scopes,
            site: t.site.map(|s| s.0),
            created_at: t.created_at.as_second(),
            expires_at: t.expires_at.map(jiff::Timestamp::as_second),
            last_used_at: t.last_used_at.map(jiff::Timestamp::as_second),
            revoked_at: t.revoked_at.map(jiff::Timestamp::as_second),
        }
    }
}

/// A token just made, with its secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IssuedToken {
    pub token: TokenView,
    /// The secret, for `Authorization: Bearer`; it is not shown again.
    pub secret: String,
}

page_of!(TokenPage, TokenView);

/// Make an API token; the secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "accounts", request_body = NewToken,
    responses((status = 201, body = IssuedToken), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    caller.allow(Access::Account, None)?;
    if let Some(bad) = body.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::invalid(format!(
            "unknown scope `{bad}`; the scopes are {}",
            SCOPES.join(", ")
        )));
    }
    if body.scopes.iter().any(|s| s == "admin") && body.site.is_none() {
        return Err(ApiError::invalid("an `admin` token needs a `site`"));
    }
    let site = body.site.map(SiteId);
    if let Some(site) = site {
        caller.member(&state, Access::Account, site).await?;
    }
    let expires_at = body.expires_at.map(instant).transpose()?;
    let (token, issued) = state
        .node()
        .store()
        .accounts()
        .create_token(
            &caller.actor(),
            caller.account,
            site,
            &body.name,
            &body.scopes,
            expires_at,
            now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            token: token.into(),
            secret: issued.secret,
        }),
    ))
}

/// The account's API tokens.
#[utoipa::path(get, path = "/v1/tokens", tag = "accounts", params(Pagination),
    responses((status = 200, body = TokenPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Pagination>,
) -> Result<Json<TokenPage>, ApiError> {
    caller.allow(Access::Account, None)?;
    let tokens = state.node().store().accounts().tokens(caller.account).await?;
    let (items, next_cursor) = p.page(tokens, |t| t.id.get())?;
    Ok(Json(TokenPage {
        items: items.into_iter().map(TokenView::from).collect(),
        next_cursor,
    }))
}

/// Revoke one of the account's API tokens.
#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "accounts",
    params(("token" = i64, Path, description = "The token's id")),
    responses((status = 200, body = TokenView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<TokenView>, ApiError> {
    caller.allow(Access::Account, None)?;
    let store = state.node().store();
    match store.accounts().token(TokenId(id)).await? {
        Some(t) if t.account == caller.account => {}
        _ => return Err(ApiError::not_found(format!("token {id} does not exist"))),
    }
    Ok(Json(
        store
            .accounts()
            .revoke_token(&caller.actor(), TokenId(id), now())
            .await?
            .into(),
    ))
}
