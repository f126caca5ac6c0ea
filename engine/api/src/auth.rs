//! Who is calling, and what they may do.
//!
//! A caller presents either a session (the `keyway_session` cookie a browser gets at
//! sign-in, or the same secret as `Authorization: Bearer ks_...`) or an API token
//! (`Authorization: Bearer kw_...`). Secrets are random, shown once and stored as
//! SHA-256 hashes; none is ever logged.
//!
//! What a caller may do on a site is the role table's answer (the roles plugin of the
//! bundle in force), never a table of this crate. An API token is narrowed further by
//! its site and its scopes:
//!
//! | scope    | may |
//! |----------|-----|
//! | `read`   | read routes (GET) |
//! | `decide` | `POST /v1/decide` and its batch form |
//! | `admin`  | everything its account may do on the token's one site |
//! | (none)   | everything its account may do |
//!
//! No token manages accounts, sessions or tokens: that needs a session.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use keyway_core::SiteId;
use keyway_plugin_host::{Capability, RoleTable};
use keyway_store::{AccountId, ApiToken, Membership};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "keyway_session";
/// The scopes an API token may carry.
pub const SCOPES: [&str; 3] = ["read", "decide", "admin"];

/// A fresh random secret with `prefix`.
pub(crate) fn fresh_secret(prefix: &str) -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the system's random generator failed: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// The hash a session secret is stored under.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Now: handlers read the clock here and pass the instant to the store.
pub(crate) fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// `seconds` after `from`, or the last representable instant (year 9999) past it.
pub(crate) fn after(from: jiff::Timestamp, seconds: i64) -> jiff::Timestamp {
    from.checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The instant a request gave as seconds since the epoch; a 422 when it is outside the
/// years -9999 to 9999.
pub(crate) fn instant(seconds: i64) -> Result<jiff::Timestamp, ApiError> {
    jiff::Timestamp::from_second(seconds).map_err(|_| ApiError::invalid(format!("`{seconds}` is not a time in range")))
}

/// What kind of thing a route does, for token scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads.
    Read,
    /// Changes something.
    Write,
    /// Asks for decisions.
    Decide,
    /// Manages the caller's own account, sessions or tokens.
    Account,
}

/// How the caller signed in.
#[derive(Clone, Debug)]
pub(crate) enum Via {
    /// A session, by the hash of its secret.
    Session(String),
    /// An API token.
    Token(ApiToken),
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) account: AccountId,
    /// How.
    pub(crate) via: Via,
}

fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

/// The bearer token of a request's `Authorization` header, if it has one.
pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The client's address, for rate limits (`unknown` when the server gave none).
pub(crate) fn client_address(parts_extensions: &axum::http::Extensions) -> String {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let store = state.node().store();
        let now = now();
        if let Some(token) = bearer(parts) {
            if token.starts_with("kw_") {
                let found = store.accounts().token_by_secret(token, now).await?;
                return found
                    .map(|t| Caller {
                        account: t.account,
                        via: Via::Token(t),
                    })
                    .ok_or(ApiError::Unauthenticated);
            }
            let hash = hash_secret(token);
            return match store.accounts().session_account(&hash, now).await? {
                Some(account) => Ok(Caller {
                    account,
                    via: Via::Session(hash),
                }),
                None => Err(ApiError::Unauthenticated),
            };
        }
        if let Some(secret) = cookie(parts) {
            let hash = hash_secret(secret);
            if let Some(account) = store.accounts().session_account(&hash, now).await? {
                return Ok(Caller {
                    account,
                    via: Via::Session(hash),
                });
            }
        }
        Err(ApiError::Unauthenticated)
    }
}

impl Caller {
    /// The actor written in the audit log.
    pub(crate) fn actor(&self) -> String {
        match &self.via {
            Via::Session(_) => self.account.to_string(),
            Via::Token(t) => format!("{}/token:{}", self.account, t.id.get()),
        }
    }

    /// Whether the way the caller signed in allows `access` on `site` (`None`: a route
    /// not about one site).
    pub(crate) fn allow(&self, access: Access, site: Option<SiteId>) -> Result<(), ApiError> {
        let Via::Token(token) = &self.via else {
            return Ok(());
        };
        if access == Access::Account {
            return Err(ApiError::forbidden(
                "an API token cannot manage accounts, sessions or tokens; sign in with a session",
            ));
        }
        if let Some(own) = token.site {
            match site {
                Some(s) if s != own => {
                    return Err(ApiError::forbidden(format!(
                        "this API token is limited to site {}",
                        own.0
                    )));
                }
                None if access != Access::Read => {
                    return Err(ApiError::forbidden(format!(
                        "this API token is limited to site {}",
                        own.0
                    )));
                }
                _ => {}
            }
        }
        if token.scopes.is_empty() {
            return Ok(());
        }
        let has = |s: &str| token.scopes.iter().any(|t| t == s);
        let ok = match access {
            Access::Read => has("read") || has("admin"),
            Access::Write => has("admin"),
            Access::Decide => has("decide") || has("admin"),
            Access::Account => false,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API token's scopes ({}) do not allow this",
                token.scopes.join(", ")
            )))
        }
    }

    /// The caller's membership of `site`, checking the token first. A site the caller
    /// is not a member of answers 404, as one that does not exist.
    pub(crate) async fn member(&self, state: &AppState, access: Access, site: SiteId) -> Result<Membership, ApiError> {
        self.allow(access, Some(site))?;
        state
            .node()
            .store()
            .memberships()
            .get(site, self.account)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("site {} does not exist or you are not a member", site.0)))
    }

    /// The caller's membership of `site` with `capability` (named for the message).
    pub(crate) async fn with_capability(
        &self,
        state: &AppState,
        access: Access,
        site: SiteId,
        capability: Capability,
    ) -> Result<(Membership, std::sync::Arc<keyway_plugin_host::Bundle>), ApiError> {
        let m = self.member(state, access, site).await?;
        let bundle = state.node().policy().bundle();
        require(bundle.roles(), &m, capability)?;
        Ok((m, bundle))
    }

    /// Whether the caller is an instance operator.
    pub(crate) async fn is_operator(&self, state: &AppState) -> Result<bool, ApiError> {
        Ok(state.node().store().accounts().is_operator(self.account).await?)
    }

    /// Refuse a caller who is not the instance operator, saying that only the operator
    /// does `what` (e.g. "issues and lists vouchers").
    pub(crate) async fn require_operator(&self, state: &AppState, access: Access, what: &str) -> Result<(), ApiError> {
        self.allow(access, None)?;
        if self.is_operator(state).await? {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("only the instance operator {what}")))
        }
    }
}

/// Refuse unless the member's role has `capability`.
pub(crate) fn require(roles: &RoleTable, m: &Membership, capability: Capability) -> Result<(), ApiError> {
    if roles.can(m.role, capability) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "your role `{}` lacks the capability `{}` on site {}",
            roles.name(m.role).unwrap_or("unknown"),
            roles.capability_name(capability).unwrap_or("unknown"),
            m.site.0
        )))
    }
}
