//! Password-reset tokens and API tokens.
//!
//! Both are random secrets (see `dispatch::secrets`) handed out once; the store keeps
//! only their SHA-256. A reset token is single use and expires: redeeming it sets the
//! new password, marks it used, voids the account's other reset tokens and ends its
//! sessions, all in one transaction, so a token raced from two places works once. An
//! API token belongs to an account, may be narrowed to one site and to named scopes,
//! may expire, and stops working when revoked or when its account is disabled.
//!
//! Asking for a reset for an unknown email is not an error: the caller gets `None`, sends
//! nothing, and answers the requester exactly as it would otherwise.

use crate::accounts::{Account, Accounts, check_password_strength, hash_password};
use crate::auth_cache::AuthCache;
use crate::codec::opt_id32;
use crate::dispatch::secrets;
use crate::error::StoreError;
use crate::ids::{AccountId, TokenId};
use jiff::Timestamp;
use keyway_core::SiteId;

/// A secret made for someone, shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    /// The secret itself; the store keeps only its hash.
    pub secret: String,
    /// When it stops working (`None`: never).
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    /// The account it acts as.
    pub account: AccountId,
    /// The one site it may touch (`None`: the account's sites).
    pub site: Option<SiteId>,
    /// A name for people.
    pub name: String,
    /// What it may do, e.g. `entries.read`; empty means what its account may do.
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was last presented.
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// The longest name of an API token, in characters.
pub const MAX_TOKEN_NAME: usize = 100;
/// How stale an API token's `last_used_at` may get.
pub const TOKEN_USE_RESOLUTION: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);
/// The most scopes on one API token.
pub const MAX_TOKEN_SCOPES: usize = 32;

fn token_json(t: &ApiToken) -> String {
    serde_json::json!({
        "id": t.id, "account": t.account, "site": t.site.map(|s| s.0), "name": t.name,
        "scopes": t.scopes, "expires_at": t.expires_at.map(Timestamp::as_second),
        "revoked_at": t.revoked_at.map(Timestamp::as_second),
    })
    .to_string()
}

fn invalid_reset() -> StoreError {
    StoreError::invalid("the reset link is invalid, used or expired")
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const TOKEN_COLS: &str = "SELECT id, account, site, name, scopes, created_at, expires_at, last_used_at, \
                              revoked_at FROM api_tokens";

    fn token_from(r: &impl Columns) -> Result<ApiToken, StoreError> {
        let scopes: String = r.col(4)?;
        let site: Option<i64> = r.col(2)?;
        Ok(ApiToken {
            id: r.col(0)?,
            account: r.col(1)?,
            site: opt_id32(site, "site")?.map(SiteId),
            name: r.col(3)?,
            scopes: serde_json::from_str(&scopes).map_err(StoreError::internal)?,
            created_at: r.time(5)?,
            expires_at: r.time_opt(6)?,
            last_used_at: r.time_opt(7)?,
            revoked_at: r.time_opt(8)?,
        })
    }

    pub(super) async fn enabled_account(conn: Conn<'_>, email: &str) -> Result<Option<AccountId>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(
                sqlx::query_scalar("SELECT id FROM accounts WHERE email = $1 AND NOT disabled")
                    .bind(email)
                    .fetch_optional(&mut *conn)
                    .await?,
            )
        })
    }

    pub(super) async fn insert_reset(
        conn: Conn<'_>,
        hash: &str,
        account: AccountId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query(
                "INSERT INTO password_reset_tokens (token_hash, account, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
            )
            .bind(hash)
            .bind(account)
            .bind(now.as_second())
            .bind(expires_at.as_second())
            .execute(&mut *conn)
            .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                "system",
                "issue_password_reset",
                &account.to_string(),
                None,
                None,
            )
            .await
        })
    }

    /// Marks the token used if it is live; the account it was for.
    pub(super) async fn take_reset(
        conn: Conn<'_>,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<AccountId>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar(
                "UPDATE password_reset_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING account",
            )
            .bind(hash)
            .bind(now.as_second())
            .fetch_optional(&mut *conn)
            .await?)
        })
    }

    pub(super) async fn finish_reset(
        conn: Conn<'_>,
        account: AccountId,
        phc: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
                .bind(phc)
                .bind(account)
                .execute(&mut *conn)
                .await?;
            // Other outstanding links die with this one; sessions signed in with the old
            // password end.
            sqlx::query("UPDATE password_reset_tokens SET used_at = $2 WHERE account = $1 AND used_at IS NULL")
                .bind(account)
                .bind(now.as_second())
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE account = $1")
                .bind(account)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                &account.to_string(),
                "reset_password",
                &account.to_string(),
                None,
                None,
            )
            .await
        })
    }

    pub(super) async fn purge(conn: Conn<'_>, now: Timestamp) -> Result<u64, StoreError> {
        let now = now.as_second();
        each_backend!(conn, |conn| {
            let resets = sqlx::query("DELETE FROM password_reset_tokens WHERE expires_at <= $1 OR used_at IS NOT NULL")
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(resets + sessions)
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one column each")]
    pub(super) async fn insert_token(
        conn: Conn<'_>,
        actor: &str,
        account: AccountId,
        site: Option<SiteId>,
        name: &str,
        scopes: &[String],
        hash: &str,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<ApiToken, StoreError> {
        each_backend!(conn, |conn| {
            let scopes_json = serde_json::to_string(scopes).map_err(StoreError::internal)?;
            let id: TokenId = sqlx::query_scalar(
                "INSERT INTO api_tokens (account, site, name, token_hash, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(account)
            .bind(site.map(|s| i64::from(s.0)))
            .bind(name)
            .bind(hash)
            .bind(&scopes_json)
            .bind(now.as_second())
            .bind(expires_at.map(Timestamp::as_second))
            .fetch_one(&mut *conn)
            .await?;
            let token = ApiToken {
                id,
                account,
                site,
                name: name.to_owned(),
                scopes: scopes.to_vec(),
                created_at: crate::dispatch::whole(now),
                expires_at: expires_at.map(crate::dispatch::whole),
                last_used_at: None,
                revoked_at: None,
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "create_api_token",
                &id.to_string(),
                None,
                Some(&token_json(&token)),
            )
            .await?;
            Ok(token)
        })
    }

    pub(super) async fn live_token_by_hash(
        conn: Conn<'_>,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<ApiToken>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!(
                "{TOKEN_COLS} WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
             AND account IN (SELECT id FROM accounts WHERE NOT disabled)"
            );
            let row = sqlx::query(&sql)
                .bind(hash)
                .bind(now.as_second())
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(token_from).transpose()
        })
    }

    pub(super) async fn touch(conn: Conn<'_>, id: TokenId, now: Timestamp) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now.as_second())
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    pub(super) async fn token(conn: Conn<'_>, id: TokenId) -> Result<Option<ApiToken>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{TOKEN_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(token_from).transpose()
        })
    }

    pub(super) async fn tokens(conn: Conn<'_>, account: AccountId) -> Result<Vec<ApiToken>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{TOKEN_COLS} WHERE account = $1 ORDER BY id");
            let rows = sqlx::query(&sql).bind(account).fetch_all(&mut *conn).await?;
            rows.iter().map(token_from).collect()
        })
    }

    pub(super) async fn revoke(
        conn: Conn<'_>,
        actor: &str,
        before: &ApiToken,
        now: Timestamp,
    ) -> Result<ApiToken, StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now.as_second())
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            let after = ApiToken {
                revoked_at: before.revoked_at.or(Some(crate::dispatch::whole(now))),
                ..before.clone()
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "revoke_api_token",
                &before.id.to_string(),
                Some(&token_json(before)),
                Some(&token_json(&after)),
            )
            .await?;
            Ok(after)
        })
    }
}

impl Accounts<'_> {
    /// Start a password reset for `email` at `now`: a single-use secret for the reset
    /// link, valid until `expires_at`. `None` when no enabled account has that email. The caller must
    /// answer the requester identically either way and should not make the answer wait
    /// on this call (storing a token takes longer than finding none).
    ///
    /// # Errors
    /// If the database fails.
    pub async fn issue_password_reset(
        &self,
        email: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Option<IssuedSecret>, StoreError> {
        let email = email.trim().to_lowercase();
        let secret = secrets::fresh("");
        let hash = secrets::hash(&secret);
        let issued = {
            let mut db = self.store.writer().await?;
            let out = {
                match queries::enabled_account(db.conn(), &email).await? {
                    Some(account) => {
                        queries::insert_reset(db.conn(), &hash, account, now, expires_at).await?;
                        true
                    }
                    None => false,
                }
            };
            db.commit().await?;
            out
        };
        Ok(issued.then_some(IssuedSecret {
            secret,
            expires_at: Some(crate::dispatch::whole(expires_at)),
        }))
    }

    /// Redeem a reset secret at `now`: set the new password, void the account's reset
    /// links and end its sessions. Works once per secret.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an unknown, used or expired secret (one message for
    /// all three) or a password that fails the strength rules.
    pub async fn redeem_password_reset(
        &self,
        secret: &str,
        new_password: &str,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        check_password_strength(new_password)?;
        let phc = hash_password(new_password).await?;
        let hash = secrets::hash(secret);
        let account = {
            let mut db = self.store.writer().await?;
            let out = {
                let account = queries::take_reset(db.conn(), &hash, now)
                    .await?
                    .ok_or_else(invalid_reset)?;
                queries::finish_reset(db.conn(), account, &phc, now).await?;
                account
            };
            db.commit().await?;
            out
        };
        self.get(account).await?.ok_or_else(invalid_reset)
    }

    /// Delete used and expired reset tokens and expired sessions; how many went.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn purge_expired_secrets(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::purge(db.conn(), now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// Make an API token for `account` at `now`; the secret is returned once.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty or long name, too many or malformed scopes, or
    /// an expiry in the past; [`StoreError::ForeignKey`] for an unknown account or site.
    #[expect(clippy::too_many_arguments, reason = "a token's fields, its maker and the time")]
    pub async fn create_token(
        &self,
        actor: &str,
        account: AccountId,
        site: Option<SiteId>,
        name: &str,
        scopes: &[String],
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(ApiToken, IssuedSecret), StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME {
            return Err(StoreError::invalid(format!(
                "a token name needs 1 to {MAX_TOKEN_NAME} characters"
            )));
        }
        if scopes.len() > MAX_TOKEN_SCOPES {
            return Err(StoreError::invalid(format!(
                "a token has at most {MAX_TOKEN_SCOPES} scopes"
            )));
        }
        if let Some(bad) = scopes.iter().find(|s| {
            s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        }) {
            return Err(StoreError::invalid(format!(
                "scope `{bad}` must be lowercase letters, dots and underscores"
            )));
        }
        if expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::invalid("the token's expiry is in the past"));
        }
        let secret = secrets::fresh("kw_");
        let hash = secrets::hash(&secret);
        let mut db = self.store.writer().await?;
        let token =
            queries::insert_token(db.conn(), actor, account, site, name, scopes, &hash, expires_at, now).await?;
        db.commit().await?;
        Ok((token, IssuedSecret { secret, expires_at }))
    }

    /// The live token with this secret at `now` (not revoked, not expired, account
    /// enabled), noting its use. The lookup is a read; `last_used_at` is written at most
    /// once per [`TOKEN_USE_RESOLUTION`] seconds, so a busy token does not queue a write
    /// per request on SQLite's single writer.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn token_by_secret(&self, secret: &str, now: Timestamp) -> Result<Option<ApiToken>, StoreError> {
        let hash = secrets::hash(secret);
        let auth = &self.store.inner.auth;
        let stamp = self.store.auth_stamp();
        let token = match auth.get(&auth.tokens, &hash, stamp) {
            // Revocation and disabling invalidate the cache; only expiry is checked here.
            Some(t) if t.expires_at.is_none_or(|e| e > now) => t,
            Some(_) => {
                AuthCache::forget(&auth.tokens, &hash);
                return Ok(None);
            }
            None => {
                let Some(token) = queries::live_token_by_hash(self.store.reader().await?.conn(), &hash, now).await?
                else {
                    return Ok(None);
                };
                token
            }
        };
        if token
            .last_used_at
            .is_some_and(|t| now.duration_since(t) < TOKEN_USE_RESOLUTION)
        {
            auth.put(&auth.tokens, hash, token.clone(), stamp);
            return Ok(Some(token));
        }
        let mut db = self.store.writer_untracked().await?;
        queries::touch(db.conn(), token.id, now).await?;
        db.commit().await?;
        let token = ApiToken {
            last_used_at: Some(crate::dispatch::whole(now)),
            ..token
        };
        auth.put(&auth.tokens, hash, token.clone(), stamp);
        Ok(Some(token))
    }

    /// The API token `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn token(&self, id: TokenId) -> Result<Option<ApiToken>, StoreError> {
        queries::token(self.store.reader().await?.conn(), id).await
    }

    /// An account's API tokens, revoked ones included, oldest first.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn tokens(&self, account: AccountId) -> Result<Vec<ApiToken>, StoreError> {
        queries::tokens(self.store.reader().await?.conn(), account).await
    }

    /// Revoke an API token (again is a no-op).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown token.
    pub async fn revoke_token(&self, actor: &str, id: TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            let before = queries::token(db.conn(), id)
                .await?
                .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
            queries::revoke(db.conn(), actor, &before, now).await?
        };
        db.commit().await?;
        Ok(out)
    }
}
