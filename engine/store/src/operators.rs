//! The instance operators, and the few account-wide records the admin API needs beside
//! them: ending every session of an account, and the display names of model entities.
//!
//! An operator is an account that whoever runs the binary set up from the command line
//! (`keyway admin create-operator`); the API lets only operators issue vouchers. Making
//! and removing one is audited (no revision: operators are outside the decision model).
//!
//! Names (of sites, doors, people, access groups) live in the model tables' `name`
//! columns, which the decision model ignores; setting one is audited without a revision.

use crate::error::StoreError;
use crate::store::{Store, now_seconds};
use keyway_core::SiteId;
use sqlx::Row;

/// The longest name of a site, door, person or group, in characters.
pub const MAX_NAME: usize = 200;

/// A model entity that carries a display name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Named {
    /// A site.
    Site,
    /// A door.
    Door,
    /// A person.
    Person,
    /// An access group.
    Group,
    /// An IQ.
    Iq,
}

impl Named {
    fn table(self) -> &'static str {
        match self {
            Named::Site => "sites",
            Named::Door => "doors",
            Named::Person => "people",
            Named::Group => "access_groups",
            Named::Iq => "iqs",
        }
    }

    fn entity(self) -> &'static str {
        match self {
            Named::Site => "site",
            Named::Door => "door",
            Named::Person => "person",
            Named::Group => "group",
            Named::Iq => "iq",
        }
    }
}

macro_rules! operator_ops {
    ($($ops:tt)*) => {
        use super::*;
        use $($ops)* as ops;

        pub(super) async fn is_operator(conn: &mut ops::Conn, account: i64) -> Result<bool, StoreError> {
            let found: Option<i64> = sqlx::query_scalar("SELECT account FROM operators WHERE account = $1")
                .bind(account)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(found.is_some())
        }

        pub(super) async fn insert(conn: &mut ops::Conn, actor: &str, account: i64) -> Result<(), StoreError> {
            let now = now_seconds();
            sqlx::query("INSERT INTO operators (account, created_at) VALUES ($1, $2)")
                .bind(account)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    StoreError::from(e)
                        .duplicate(format!("operator:{account}"), "the account is an operator already")
                        .unknown_reference(format!("operator:{account}"), format!("account:{account}"))
                })?;
            let after = serde_json::json!({ "account": account }).to_string();
            ops::insert_audit(conn, None, now, actor, "create_operator", &format!("operator:{account}"), None, Some(&after))
                .await
        }

        pub(super) async fn delete(conn: &mut ops::Conn, actor: &str, account: i64) -> Result<bool, StoreError> {
            let gone = sqlx::query("DELETE FROM operators WHERE account = $1")
                .bind(account)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0;
            if gone {
                let before = serde_json::json!({ "account": account }).to_string();
                ops::insert_audit(
                    conn,
                    None,
                    now_seconds(),
                    actor,
                    "delete_operator",
                    &format!("operator:{account}"),
                    Some(&before),
                    None,
                )
                .await?;
            }
            Ok(gone)
        }

        pub(super) async fn all(conn: &mut ops::Conn) -> Result<Vec<i64>, StoreError> {
            Ok(sqlx::query_scalar("SELECT account FROM operators ORDER BY account")
                .fetch_all(&mut *conn)
                .await?)
        }

        pub(super) async fn end_sessions(conn: &mut ops::Conn, account: i64) -> Result<u64, StoreError> {
            Ok(sqlx::query("DELETE FROM sessions WHERE account = $1")
                .bind(account)
                .execute(&mut *conn)
                .await?
                .rows_affected())
        }

        pub(super) async fn name(conn: &mut ops::Conn, what: Named, id: u32) -> Result<Option<String>, StoreError> {
            let sql = format!("SELECT name FROM {} WHERE id = $1", what.table());
            Ok(sqlx::query_scalar(&sql)
                .bind(i64::from(id))
                .fetch_optional(&mut *conn)
                .await?)
        }

        pub(super) async fn names(
            conn: &mut ops::Conn,
            what: Named,
            site: Option<SiteId>,
        ) -> Result<Vec<(u32, String)>, StoreError> {
            let rows = match site {
                Some(site) if what != Named::Site => {
                    let sql = format!("SELECT id, name FROM {} WHERE site = $1 ORDER BY id", what.table());
                    sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?
                }
                _ => {
                    let sql = format!("SELECT id, name FROM {} ORDER BY id", what.table());
                    sqlx::query(&sql).fetch_all(&mut *conn).await?
                }
            };
            rows.iter()
                .map(|r| {
                    let id: i64 = r.try_get(0)?;
                    let id = u32::try_from(id).map_err(StoreError::internal)?;
                    Ok((id, r.try_get(1)?))
                })
                .collect()
        }

        pub(super) async fn set_name(
            conn: &mut ops::Conn,
            actor: &str,
            what: Named,
            id: u32,
            before: &str,
            name: &str,
        ) -> Result<(), StoreError> {
            let sql = format!("UPDATE {} SET name = $1 WHERE id = $2", what.table());
            sqlx::query(&sql).bind(name).bind(i64::from(id)).execute(&mut *conn).await?;
            ops::insert_audit(
                conn,
                None,
                now_seconds(),
                actor,
                "set_name",
                &format!("{}:{id}", what.entity()),
                Some(&serde_json::json!({ "name": before }).to_string()),
                Some(&serde_json::json!({ "name": name }).to_string()),
            )
            .await
        }
    };
}

mod sqlite_operators {
    operator_ops!(crate::sql::sqlite);
}

mod pg_operators {
    operator_ops!(crate::sql::postgres);
}

impl Store {
    /// Make `account` an instance operator.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] if it is one already; [`StoreError::ForeignKey`] for an
    /// unknown account.
    pub async fn add_operator(&self, actor: &str, account: i64) -> Result<(), StoreError> {
        on_backend!(self, sqlite_operators, pg_operators, write, |conn, m| m::insert(
            conn, actor, account
        )
        .await?);
        Ok(())
    }

    /// Whether `account` is an instance operator.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn is_operator(&self, account: i64) -> Result<bool, StoreError> {
        Ok(on_backend!(self, sqlite_operators, pg_operators, read, |conn, m| {
            m::is_operator(conn, account).await?
        }))
    }

    /// The operators' accounts, ascending.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn operators(&self) -> Result<Vec<i64>, StoreError> {
        Ok(on_backend!(self, sqlite_operators, pg_operators, read, |conn, m| {
            m::all(conn).await?
        }))
    }

    /// Stop `account` being an operator.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if it is not one.
    pub async fn remove_operator(&self, actor: &str, account: i64) -> Result<(), StoreError> {
        let gone = on_backend!(self, sqlite_operators, pg_operators, write, |conn, m| m::delete(
            conn, actor, account
        )
        .await?);
        if gone {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                entity: format!("operator:{account}"),
            })
        }
    }

    /// End every session of `account` ("log out everywhere"); how many ended.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn end_account_sessions(&self, account: i64) -> Result<u64, StoreError> {
        Ok(on_backend!(self, sqlite_operators, pg_operators, write, |conn, m| {
            m::end_sessions(conn, account).await?
        }))
    }

    /// The name of a site, door, person or group; `None` if it does not exist.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn name(&self, what: Named, id: u32) -> Result<Option<String>, StoreError> {
        Ok(on_backend!(self, sqlite_operators, pg_operators, read, |conn, m| {
            m::name(conn, what, id).await?
        }))
    }

    /// The names of every entity of a kind, on one site (ignored for sites), by id.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn names(&self, what: Named, site: Option<SiteId>) -> Result<Vec<(u32, String)>, StoreError> {
        Ok(on_backend!(self, sqlite_operators, pg_operators, read, |conn, m| {
            m::names(conn, what, site).await?
        }))
    }

    /// Set the name of a site, door, person or group.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a name longer than [`MAX_NAME`] characters or with
    /// control characters; [`StoreError::NotFound`] for an unknown entity.
    pub async fn set_name(&self, actor: &str, what: Named, id: u32, name: &str) -> Result<(), StoreError> {
        let name = name.trim();
        if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(StoreError::invalid(format!(
                "a name has at most {MAX_NAME} characters and no control characters"
            )));
        }
        on_backend!(self, sqlite_operators, pg_operators, write, |conn, m| {
            let before = m::name(conn, what, id).await?.ok_or_else(|| StoreError::NotFound {
                entity: format!("{}:{id}", what.entity()),
            })?;
            m::set_name(conn, actor, what, id, &before, name).await?
        });
        Ok(())
    }
}
