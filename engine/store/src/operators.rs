//! The instance operators, and the few account-wide records the admin API needs beside
//! them: ending every session of an account, and the display names of model entities.
//!
//! An operator is an account that whoever runs the binary set up from the command line
//! (`keyway admin create-operator`); the API lets only operators issue vouchers. Making
//! and removing one is audited (no revision: operators are outside the decision model).
//!
//! Names (of sites, doors, people, access groups) live in the model tables' `name`
//! columns, which the decision model ignores; setting one is audited without a revision.

use crate::accounts::Accounts;
use crate::error::StoreError;
use crate::ids::AccountId;
use crate::store::Store;
use jiff::Timestamp;
use keyway_core::SiteId;

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

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    pub(super) async fn is_operator(conn: Conn<'_>, account: AccountId) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            let found: Option<i64> = sqlx::query_scalar("SELECT account FROM operators WHERE account = $1")
                .bind(account)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(found.is_some())
        })
    }

    pub(super) async fn insert(
        conn: Conn<'_>,
        actor: &str,
        account: AccountId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("INSERT INTO operators (account, created_at) VALUES ($1, $2)")
                .bind(account)
                .bind(now.as_second())
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    StoreError::from(e)
                        .duplicate(
                            format!("operator:{}", account.get()),
                            "the account is an operator already",
                        )
                        .unknown_reference(format!("operator:{}", account.get()), account.to_string())
                })?;
            let after = serde_json::json!({ "account": account.get() }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "create_operator",
                &format!("operator:{}", account.get()),
                None,
                Some(&after),
            )
            .await
        })
    }

    pub(super) async fn delete(
        conn: Conn<'_>,
        actor: &str,
        account: AccountId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            let gone = sqlx::query("DELETE FROM operators WHERE account = $1")
                .bind(account)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0;
            if gone {
                let before = serde_json::json!({ "account": account.get() }).to_string();
                crate::sql::insert_audit(
                    Conn::from(&mut *conn),
                    None,
                    now.as_second(),
                    actor,
                    "delete_operator",
                    &format!("operator:{}", account.get()),
                    Some(&before),
                    None,
                )
                .await?;
            }
            Ok(gone)
        })
    }

    pub(super) async fn all(conn: Conn<'_>) -> Result<Vec<AccountId>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar("SELECT account FROM operators ORDER BY account")
                .fetch_all(&mut *conn)
                .await?)
        })
    }

    pub(super) async fn end_sessions(conn: Conn<'_>, account: AccountId) -> Result<u64, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query("DELETE FROM sessions WHERE account = $1")
                .bind(account)
                .execute(&mut *conn)
                .await?
                .rows_affected())
        })
    }

    pub(super) async fn name(conn: Conn<'_>, what: Named, id: u32) -> Result<Option<String>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("SELECT name FROM {} WHERE id = $1", what.table());
            Ok(sqlx::query_scalar(&sql)
                .bind(i64::from(id))
                .fetch_optional(&mut *conn)
                .await?)
        })
    }

    pub(super) async fn names(
        conn: Conn<'_>,
        what: Named,
        site: Option<SiteId>,
    ) -> Result<Vec<(u32, String)>, StoreError> {
        each_backend!(conn, |conn| {
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
                    let id: i64 = r.col(0)?;
                    let id = u32::try_from(id).map_err(StoreError::internal)?;
                    Ok((id, r.col(1)?))
                })
                .collect()
        })
    }

    pub(super) async fn set_name(
        conn: Conn<'_>,
        actor: &str,
        what: Named,
        id: u32,
        before: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("UPDATE {} SET name = $1 WHERE id = $2", what.table());
            sqlx::query(&sql)
                .bind(name)
                .bind(i64::from(id))
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "set_name",
                &format!("{}:{id}", what.entity()),
                Some(&serde_json::json!({ "name": before }).to_string()),
                Some(&serde_json::json!({ "name": name }).to_string()),
            )
            .await
        })
    }
}

impl Accounts<'_> {
    /// Make `account` an instance operator.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] if it is one already; [`StoreError::ForeignKey`] for an
    /// unknown account.
    pub async fn add_operator(&self, actor: &str, account: AccountId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        queries::insert(db.conn(), actor, account, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Whether `account` is an instance operator.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn is_operator(&self, account: AccountId) -> Result<bool, StoreError> {
        queries::is_operator(self.store.reader().await?.conn(), account).await
    }

    /// The operators' accounts, ascending.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn operators(&self) -> Result<Vec<AccountId>, StoreError> {
        queries::all(self.store.reader().await?.conn()).await
    }

    /// Stop `account` being an operator.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if it is not one.
    pub async fn remove_operator(&self, actor: &str, account: AccountId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let gone = queries::delete(db.conn(), actor, account, now).await?;
        db.commit().await?;
        if gone {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                entity: format!("operator:{}", account.get()),
            })
        }
    }

    /// End every session of `account` ("log out everywhere"); how many ended.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn end_sessions(&self, account: AccountId) -> Result<u64, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::end_sessions(db.conn(), account).await?;
        db.commit().await?;
        Ok(out)
    }
}

/// The display names of model entities: [`Store::names`].
#[derive(Clone, Copy, Debug)]
pub struct Names<'s> {
    store: &'s Store,
}

impl Store {
    /// The display names of sites, doors, people, groups and IQs.
    #[must_use]
    pub fn names(&self) -> Names<'_> {
        Names { store: self }
    }
}

impl Names<'_> {
    /// The name of a site, door, person or group; `None` if it does not exist.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn get(&self, what: Named, id: u32) -> Result<Option<String>, StoreError> {
        queries::name(self.store.reader().await?.conn(), what, id).await
    }

    /// The names of every entity of a kind, on one site (ignored for sites), by id.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn list(&self, what: Named, site: Option<SiteId>) -> Result<Vec<(u32, String)>, StoreError> {
        queries::names(self.store.reader().await?.conn(), what, site).await
    }

    /// Set the name of a site, door, person or group.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a name longer than [`MAX_NAME`] characters or with
    /// control characters; [`StoreError::NotFound`] for an unknown entity.
    pub async fn set(&self, actor: &str, what: Named, id: u32, name: &str, now: Timestamp) -> Result<(), StoreError> {
        let name = name.trim();
        if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(StoreError::invalid(format!(
                "a name has at most {MAX_NAME} characters and no control characters"
            )));
        }
        let mut db = self.store.writer().await?;
        let before = queries::name(db.conn(), what, id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                entity: format!("{}:{id}", what.entity()),
            })?;
        queries::set_name(db.conn(), actor, what, id, &before, name, now).await?;
        db.commit().await?;
        Ok(())
    }
}
