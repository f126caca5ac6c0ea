//! Accounts of the admin API: an email and an argon2id password hash, and the sessions
//! signed in with them.
//!
//! Passwords are hashed with argon2id (the crate's defaults: 19 MiB, 2 passes) and a fresh
//! salt each; only the PHC string is stored. Session tokens are made and hashed by the API;
//! the store keeps the hash. Every change is audited (no revision: accounts are outside the
//! decision model).

use crate::auth_cache::{AuthCache, CachedSession};
use crate::error::StoreError;
use crate::ids::AccountId;
use crate::store::Store;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use jiff::Timestamp;

/// An account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// The email it signs in with, lowercased.
    pub email: String,
    /// The name shown.
    pub display_name: String,
    /// Whether it may sign in.
    pub disabled: bool,
    /// When it was made.
    pub created_at: Timestamp,
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// The argon2id PHC string of `password`.
fn hash(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(StoreError::internal)
}

/// The argon2id PHC string of `password`, computed off the async threads.
pub(crate) async fn hash_password(password: &str) -> Result<String, StoreError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(StoreError::internal)?
}

/// Whether `secret` matches the argon2id PHC string `phc`, computed off the async threads.
pub(crate) async fn verify_hash(secret: &str, phc: &str) -> Result<bool, StoreError> {
    let (secret, phc) = (secret.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || verify(&secret, &phc))
        .await
        .map_err(StoreError::internal)
}

/// The longest password accepted, in bytes: argon2 takes any length, but hashing a
/// megabyte on every sign-in attempt would be a cheap denial of service.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// The site-operator FAQ's password rules: at least 8 characters, with a lowercase
/// letter, an uppercase letter and a character that is neither letter nor digit.
///
/// # Errors
/// [`StoreError::Invalid`] naming the first rule broken.
pub fn check_password_strength(password: &str) -> Result<(), StoreError> {
    let rule = if password.chars().count() < 8 {
        Some("a password needs at least 8 characters")
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some("a password has at most 256 bytes")
    } else if !password.chars().any(char::is_lowercase) {
        Some("a password needs a lowercase letter (a-z)")
    } else if !password.chars().any(char::is_uppercase) {
        Some("a password needs an uppercase letter (A-Z)")
    } else if password.chars().all(char::is_alphanumeric) {
        Some("a password needs a character that is not a letter or a digit")
    } else {
        None
    };
    rule.map_or(Ok(()), |r| Err(StoreError::invalid(r)))
}

fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
}

pub(crate) fn normalise_email(email: &str) -> Result<String, StoreError> {
    let email = email.trim().to_lowercase();
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace) => {
            Ok(email)
        }
        _ => Err(StoreError::invalid(format!("`{email}` is not an email address"))),
    }
}

fn account_json(a: &Account) -> String {
    serde_json::json!({ "id": a.id, "email": a.email, "display_name": a.display_name, "disabled": a.disabled })
        .to_string()
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    fn account_from(r: &impl Columns) -> Result<(Account, String), StoreError> {
        Ok((
            Account {
                id: r.col(0)?,
                email: r.col(1)?,
                display_name: r.col(2)?,
                disabled: r.col(3)?,
                created_at: r.time(5)?,
            },
            r.col(4)?,
        ))
    }

    const COLS: &str = "SELECT id, email, display_name, disabled, password_hash, created_at FROM accounts";

    pub(super) async fn by_id(conn: Conn<'_>, id: AccountId) -> Result<Option<(Account, String)>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(account_from).transpose()
        })
    }

    pub(super) async fn by_email(conn: Conn<'_>, email: &str) -> Result<Option<(Account, String)>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{COLS} WHERE email = $1");
            let row = sqlx::query(&sql).bind(email).fetch_optional(&mut *conn).await?;
            row.as_ref().map(account_from).transpose()
        })
    }

    pub(super) async fn insert(
        conn: Conn<'_>,
        actor: &str,
        email: &str,
        display_name: &str,
        phc: &str,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        each_backend!(conn, |conn| {
            let id: AccountId = sqlx::query_scalar(
                "INSERT INTO accounts (email, password_hash, display_name, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
            )
            .bind(email)
            .bind(phc)
            .bind(display_name)
            .bind(now.as_second())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                StoreError::from(e).duplicate(format!("account `{email}`"), "the email is taken".to_owned())
            })?;
            let account = Account {
                id,
                email: email.to_owned(),
                display_name: display_name.to_owned(),
                disabled: false,
                created_at: crate::dispatch::whole(now),
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "create_account",
                &id.to_string(),
                None,
                Some(&account_json(&account)),
            )
            .await?;
            Ok(account)
        })
    }

    pub(super) async fn update(
        conn: Conn<'_>,
        actor: &str,
        before: &Account,
        after: &Account,
        phc: Option<&str>,
        action: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query(
                "UPDATE accounts SET display_name = $1, disabled = $2, \
             password_hash = COALESCE($3, password_hash) WHERE id = $4",
            )
            .bind(&after.display_name)
            .bind(after.disabled)
            .bind(phc)
            .bind(after.id)
            .execute(&mut *conn)
            .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                action,
                &after.id.to_string(),
                Some(&account_json(before)),
                Some(&account_json(after)),
            )
            .await
        })
    }

    pub(super) async fn delete(
        conn: Conn<'_>,
        actor: &str,
        before: &Account,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            // Checked in the deleting transaction: a transfer landing meanwhile cannot
            // leave a site without an owner (memberships go with the account).
            let owned: Vec<i64> =
                sqlx::query_scalar("SELECT site FROM site_memberships WHERE account = $1 AND is_owner = $2")
                    .bind(before.id)
                    .bind(true)
                    .fetch_all(&mut *conn)
                    .await?;
            if !owned.is_empty() {
                let sites: Vec<String> = owned.iter().map(|s| format!("site:{s}")).collect();
                return Err(StoreError::InUse {
                    entity: before.id.to_string(),
                    used_by: format!("{} as its owner; transfer ownership first", sites.join(", ")),
                });
            }
            sqlx::query("DELETE FROM accounts WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_account",
                &before.id.to_string(),
                Some(&account_json(before)),
                None,
            )
            .await
        })
    }

    pub(super) async fn put_session(
        conn: Conn<'_>,
        token_hash: &str,
        account: AccountId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query(
                "INSERT INTO sessions (token_hash, account, created_at, expires_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $3)",
            )
            .bind(token_hash)
            .bind(account)
            .bind(now.as_second())
            .bind(expires_at.as_second())
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }

    pub(super) async fn session(
        conn: Conn<'_>,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(AccountId, Timestamp)>, StoreError> {
        each_backend!(conn, |conn| {
            let found: Option<(AccountId, i64)> = sqlx::query_as(
                "SELECT s.account, s.expires_at FROM sessions s JOIN accounts a ON a.id = s.account \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND NOT a.disabled",
            )
            .bind(token_hash)
            .bind(now.as_second())
            .fetch_optional(&mut *conn)
            .await?;
            Ok(found
                .map(|(account, expires)| Ok::<_, sqlx::Error>((account, crate::dispatch::seconds_to_time(expires)?)))
                .transpose()?)
        })
    }

    pub(super) async fn end_session(conn: Conn<'_>, token_hash: &str) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0)
        })
    }
}

fn not_found(id: AccountId) -> StoreError {
    StoreError::NotFound { entity: id.to_string() }
}

/// Accounts of the admin API and their sessions: [`Store::accounts`].
#[derive(Clone, Copy, Debug)]
pub struct Accounts<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// Accounts and their sessions.
    #[must_use]
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts { store: self }
    }
}

impl Accounts<'_> {
    /// Create an account at `now`; the password is stored as an argon2id hash.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed email or a password that fails
    /// [`check_password_strength`];
    /// [`StoreError::Duplicate`] if the email is taken.
    pub async fn create(
        &self,
        actor: &str,
        email: &str,
        password: &str,
        display_name: &str,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        let email = normalise_email(email)?;
        check_password_strength(password)?;
        let phc = hash_password(password).await?;
        let mut db = self.store.writer().await?;
        let out = queries::insert(db.conn(), actor, &email, display_name, &phc, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The account `id`.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn get(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let found = queries::by_id(self.store.reader().await?.conn(), id).await?;
        Ok(found.map(|(a, _)| a))
    }

    /// The enabled account whose email and password match, or `None` (the same answer for
    /// an unknown email, a wrong password and a disabled account).
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn verify_password(&self, email: &str, password: &str) -> Result<Option<Account>, StoreError> {
        let Ok(email) = normalise_email(email) else {
            return Ok(None);
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        let found = queries::by_email(self.store.reader().await?.conn(), &email).await?;
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || match found {
            Some((account, phc)) if verify(&password, &phc) && !account.disabled => Some(account),
            Some(_) => None,
            None => {
                // Spend the same time as a real check, so timing does not reveal the email.
                let _ = hash(&password);
                None
            }
        })
        .await
        .map_err(StoreError::internal)?;
        Ok(ok)
    }

    /// Change an account's password.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown account; [`StoreError::Invalid`] for a weak
    /// password.
    pub async fn set_password(
        &self,
        actor: &str,
        id: AccountId,
        password: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_password_strength(password)?;
        let phc = hash_password(password).await?;
        let mut db = self.store.writer().await?;
        let (before, _) = queries::by_id(db.conn(), id).await?.ok_or_else(|| not_found(id))?;
        queries::update(db.conn(), actor, &before, &before, Some(&phc), "set_password", now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Enable or disable an account; a disabled account's sessions stop working.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown account.
    pub async fn set_disabled(
        &self,
        actor: &str,
        id: AccountId,
        disabled: bool,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let (before, _) = queries::by_id(db.conn(), id).await?.ok_or_else(|| not_found(id))?;
        let after = Account {
            disabled,
            ..before.clone()
        };
        queries::update(db.conn(), actor, &before, &after, None, "set_account_disabled", now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Delete an account, its sessions, tokens and memberships.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown account; [`StoreError::InUse`] for the
    /// owner of a site (ownership is transferred first).
    pub async fn delete(&self, actor: &str, id: AccountId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let (before, _) = queries::by_id(db.conn(), id).await?.ok_or_else(|| not_found(id))?;
        queries::delete(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Record a session for `account` begun at `now`, by the hash of its token, valid
    /// until `expires_at`.
    ///
    /// # Errors
    /// [`StoreError::ForeignKey`] for an unknown account; [`StoreError::Duplicate`] for a
    /// token hash already in use.
    pub async fn create_session(
        &self,
        account: AccountId,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        // A new session changes nothing the auth cache holds (it keeps found sessions only).
        let mut db = self.store.writer_untracked().await?;
        queries::put_session(db.conn(), token_hash, account, now, expires_at).await?;
        db.commit().await?;
        Ok(())
    }

    /// The account of a live session at `now`, if any.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn session_account(&self, token_hash: &str, now: Timestamp) -> Result<Option<AccountId>, StoreError> {
        let auth = &self.store.inner.auth;
        let key = token_hash.to_owned();
        let stamp = self.store.auth_stamp();
        if let Some(s) = auth.get(&auth.sessions, &key, stamp) {
            if s.expires_at > now {
                return Ok(Some(s.account));
            }
            AuthCache::forget(&auth.sessions, &key);
            return Ok(None);
        }
        let found = queries::session(self.store.reader().await?.conn(), token_hash, now).await?;
        Ok(found.map(|(account, expires_at)| {
            auth.put(&auth.sessions, key, CachedSession { account, expires_at }, stamp);
            account
        }))
    }

    /// End a session; whether there was one.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn end_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::end_session(db.conn(), token_hash).await?;
        db.commit().await?;
        Ok(out)
    }
}
