//! Who administers a site: memberships with roles, the one owner, invitations, and the
//! voucher (licence) a site holds.
//!
//! A membership ties an account to a site with a role id of the active role table (the
//! store does not interpret roles; the API checks them against the table compiled from
//! the roles plugin). The database keeps at most one owner per site (a partial unique
//! index), so two nodes transferring ownership at once cannot make two owners.
//!
//! An invitation carries a random secret (stored hashed), a role, optionally a
//! credential to hand over (the FAQ's "invite a user for an unassigned tag"), and an
//! expiry. Accepting it is single use: marking it accepted and creating the membership
//! happen in one transaction.
//!
//! A voucher is a licence code with the site's limits (users, app users). It is
//! redeemed by one site at most; the voucher plugin reads the site's current one.

use crate::codec::{id32, opt_id32};
use crate::dispatch::secrets;
use crate::error::StoreError;
use crate::ids::{AccountId, InvitationId, VoucherId};
use crate::store::Store;
use crate::tokens::IssuedSecret;
use jiff::Timestamp;
use keyway_core::{CredentialId, PersonId, RoleId, SiteId};

/// An account's place on a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub site: SiteId,
    pub account: AccountId,
    /// Its role there.
    pub role: RoleId,
    /// The person record that opens doors for it, if linked.
    pub person: Option<PersonId>,
    /// Whether it owns the site.
    pub is_owner: bool,
    /// When it joined.
    pub created_at: Timestamp,
}

/// An invitation to a site, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: InvitationId,
    pub site: SiteId,
    /// Who is invited (lowercased).
    pub email: String,
    /// The role they get.
    pub role: RoleId,
    /// A credential to assign to them on acceptance, if any.
    pub credential: Option<CredentialId>,
    /// The account that invited them.
    pub invited_by: Option<AccountId>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When it was accepted, if it was.
    pub accepted_at: Option<Timestamp>,
}

/// A licence: the limits of the site that redeems it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voucher {
    pub id: VoucherId,
    /// The site that redeemed it, if any.
    pub site: Option<SiteId>,
    /// The code printed on it (uppercased).
    pub code: String,
    /// The most users (people) the site may have.
    pub max_users: u32,
    /// The most app users (accounts) the site may have.
    pub max_app_users: u32,
    /// From when it counts, if bounded.
    pub valid_from: Option<Timestamp>,
    /// Until when it counts, if bounded.
    pub valid_until: Option<Timestamp>,
    /// When it was made.
    pub created_at: Timestamp,
}

impl Voucher {
    /// Whether it counts at `now`.
    #[must_use]
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.valid_from.is_none_or(|f| f <= now) && self.valid_until.is_none_or(|u| now < u)
    }
}

fn membership_json(m: &Membership) -> String {
    serde_json::json!({
        "site": m.site.0, "account": m.account.get(), "role": m.role.0,
        "person": m.person.map(|p| p.0), "is_owner": m.is_owner,
    })
    .to_string()
}

fn invitation_json(i: &Invitation) -> String {
    serde_json::json!({
        "id": i.id.get(), "site": i.site.0, "email": i.email, "role": i.role.0,
        "credential": i.credential.map(|c| c.0), "expires_at": i.expires_at.as_second(),
        "accepted_at": i.accepted_at.map(Timestamp::as_second),
    })
    .to_string()
}

fn voucher_json(v: &Voucher) -> String {
    serde_json::json!({
        "id": v.id.get(), "site": v.site.map(|s| s.0), "code": v.code, "max_users": v.max_users,
        "max_app_users": v.max_app_users, "valid_from": v.valid_from.map(Timestamp::as_second),
        "valid_until": v.valid_until.map(Timestamp::as_second),
    })
    .to_string()
}

fn role_of(v: i64) -> Result<RoleId, StoreError> {
    u16::try_from(v)
        .map(RoleId)
        .map_err(|_| StoreError::internal(format!("role `{v}` out of range")))
}

fn membership_entity(site: SiteId, account: AccountId) -> String {
    format!("membership:{}:{}", site.0, account.get())
}

fn invalid_invitation() -> StoreError {
    StoreError::invalid("the invitation is invalid, used or expired")
}

/// The longest voucher code.
pub const MAX_VOUCHER_CODE: usize = 64;

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const MEMBER_COLS: &str = "SELECT site, account, role, person, is_owner, created_at FROM site_memberships";
    const INVITE_COLS: &str = "SELECT id, site, email, role, credential, invited_by, created_at, expires_at, \
                               accepted_at FROM invitations";
    const VOUCHER_COLS: &str = "SELECT id, site, code, max_users, max_app_users, valid_from, valid_until, \
                                created_at FROM vouchers";

    fn member_from(r: &impl Columns) -> Result<Membership, StoreError> {
        let person: Option<i64> = r.col(3)?;
        Ok(Membership {
            site: SiteId(id32(r.col(0)?, "site")?),
            account: r.col(1)?,
            role: role_of(r.col(2)?)?,
            person: opt_id32(person, "person")?.map(PersonId),
            is_owner: r.col(4)?,
            created_at: r.time(5)?,
        })
    }

    fn invite_from(r: &impl Columns) -> Result<Invitation, StoreError> {
        let credential: Option<i64> = r.col(4)?;
        Ok(Invitation {
            id: r.col(0)?,
            site: SiteId(id32(r.col(1)?, "site")?),
            email: r.col(2)?,
            role: role_of(r.col(3)?)?,
            credential: opt_id32(credential, "credential")?.map(CredentialId),
            invited_by: r.col(5)?,
            created_at: r.time(6)?,
            expires_at: r.time(7)?,
            accepted_at: r.time_opt(8)?,
        })
    }

    fn voucher_from(r: &impl Columns) -> Result<Voucher, StoreError> {
        let site: Option<i64> = r.col(1)?;
        Ok(Voucher {
            id: r.col(0)?,
            site: opt_id32(site, "site")?.map(SiteId),
            code: r.col(2)?,
            max_users: id32(r.col(3)?, "max_users")?,
            max_app_users: id32(r.col(4)?, "max_app_users")?,
            valid_from: r.time_opt(5)?,
            valid_until: r.time_opt(6)?,
            created_at: r.time(7)?,
        })
    }

    pub(super) async fn member(
        conn: Conn<'_>,
        site: SiteId,
        account: AccountId,
    ) -> Result<Option<Membership>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{MEMBER_COLS} WHERE site = $1 AND account = $2");
            let row = sqlx::query(&sql)
                .bind(i64::from(site.0))
                .bind(account)
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(member_from).transpose()
        })
    }

    pub(super) async fn members_of_site(conn: Conn<'_>, site: SiteId) -> Result<Vec<Membership>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{MEMBER_COLS} WHERE site = $1 ORDER BY account");
            let rows = sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?;
            rows.iter().map(member_from).collect()
        })
    }

    pub(super) async fn members_of_account(conn: Conn<'_>, account: AccountId) -> Result<Vec<Membership>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{MEMBER_COLS} WHERE account = $1 ORDER BY site");
            let rows = sqlx::query(&sql).bind(account).fetch_all(&mut *conn).await?;
            rows.iter().map(member_from).collect()
        })
    }

    /// Writes `after` (insert or update) and audits it against `before`.
    pub(super) async fn put_member(
        conn: Conn<'_>,
        actor: &str,
        before: Option<&Membership>,
        after: &Membership,
        action: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query(
                "INSERT INTO site_memberships (site, account, role, person, is_owner, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (site, account) DO UPDATE SET \
             role = excluded.role, person = excluded.person, is_owner = excluded.is_owner",
            )
            .bind(i64::from(after.site.0))
            .bind(after.account)
            .bind(i64::from(after.role.0))
            .bind(after.person.map(|p| i64::from(p.0)))
            .bind(after.is_owner)
            .bind(after.created_at.as_second())
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                StoreError::from(e).duplicate(
                    membership_entity(after.site, after.account),
                    format!("site:{} already has an owner", after.site.0),
                )
            })?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                action,
                &membership_entity(after.site, after.account),
                before.map(membership_json).as_deref(),
                Some(&membership_json(after)),
            )
            .await
        })
    }

    pub(super) async fn remove_member(
        conn: Conn<'_>,
        actor: &str,
        before: &Membership,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM site_memberships WHERE site = $1 AND account = $2")
                .bind(i64::from(before.site.0))
                .bind(before.account)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "remove_membership",
                &membership_entity(before.site, before.account),
                Some(&membership_json(before)),
                None,
            )
            .await
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one column each")]
    pub(super) async fn insert_invite(
        conn: Conn<'_>,
        actor: &str,
        site: SiteId,
        email: &str,
        role: RoleId,
        credential: Option<CredentialId>,
        invited_by: Option<AccountId>,
        hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<Invitation, StoreError> {
        each_backend!(conn, |conn| {
            let id: InvitationId = sqlx::query_scalar(
            "INSERT INTO invitations (site, email, role, credential, token_hash, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(i64::from(site.0))
        .bind(email)
        .bind(i64::from(role.0))
        .bind(credential.map(|c| i64::from(c.0)))
        .bind(hash)
        .bind(invited_by)
        .bind(now.as_second())
        .bind(expires_at.as_second())
        .fetch_one(&mut *conn)
        .await?;
            let invitation = Invitation {
                id,
                site,
                email: email.to_owned(),
                role,
                credential,
                invited_by,
                created_at: crate::dispatch::whole(now),
                expires_at: crate::dispatch::whole(expires_at),
                accepted_at: None,
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "create_invitation",
                &id.to_string(),
                None,
                Some(&invitation_json(&invitation)),
            )
            .await?;
            Ok(invitation)
        })
    }

    pub(super) async fn invite(conn: Conn<'_>, id: InvitationId) -> Result<Option<Invitation>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{INVITE_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(invite_from).transpose()
        })
    }

    pub(super) async fn live_invite_by_hash(
        conn: Conn<'_>,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<Invitation>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{INVITE_COLS} WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2");
            let row = sqlx::query(&sql)
                .bind(hash)
                .bind(now.as_second())
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(invite_from).transpose()
        })
    }

    pub(super) async fn invites_of_site(conn: Conn<'_>, site: SiteId) -> Result<Vec<Invitation>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{INVITE_COLS} WHERE site = $1 ORDER BY id");
            let rows = sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?;
            rows.iter().map(invite_from).collect()
        })
    }

    /// Marks a live invitation accepted; false if another acceptance got there first.
    pub(super) async fn mark_accepted(conn: Conn<'_>, id: InvitationId, now: Timestamp) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query(
                "UPDATE invitations SET accepted_at = $2 WHERE id = $1 AND accepted_at IS NULL AND expires_at > $2",
            )
            .bind(id)
            .bind(now.as_second())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1)
        })
    }

    pub(super) async fn delete_invite(
        conn: Conn<'_>,
        actor: &str,
        before: &Invitation,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM invitations WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "revoke_invitation",
                &before.id.to_string(),
                Some(&invitation_json(before)),
                None,
            )
            .await
        })
    }

    pub(super) async fn insert_voucher(conn: Conn<'_>, actor: &str, v: &Voucher) -> Result<Voucher, StoreError> {
        each_backend!(conn, |conn| {
            let id: VoucherId = sqlx::query_scalar(
                "INSERT INTO vouchers (code, max_users, max_app_users, valid_from, valid_until, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&v.code)
            .bind(i64::from(v.max_users))
            .bind(i64::from(v.max_app_users))
            .bind(v.valid_from.map(Timestamp::as_second))
            .bind(v.valid_until.map(Timestamp::as_second))
            .bind(v.created_at.as_second())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                StoreError::from(e).duplicate(format!("voucher `{}`", v.code), "the code is taken".to_owned())
            })?;
            let voucher = Voucher { id, ..v.clone() };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                v.created_at.as_second(),
                actor,
                "create_voucher",
                &id.to_string(),
                None,
                Some(&voucher_json(&voucher)),
            )
            .await?;
            Ok(voucher)
        })
    }

    pub(super) async fn voucher_by_id(conn: Conn<'_>, id: VoucherId) -> Result<Option<Voucher>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{VOUCHER_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(voucher_from).transpose()
        })
    }

    pub(super) async fn voucher_by_code(conn: Conn<'_>, code: &str) -> Result<Option<Voucher>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{VOUCHER_COLS} WHERE code = $1");
            let row = sqlx::query(&sql).bind(code).fetch_optional(&mut *conn).await?;
            row.as_ref().map(voucher_from).transpose()
        })
    }

    pub(super) async fn vouchers(conn: Conn<'_>, site: Option<SiteId>) -> Result<Vec<Voucher>, StoreError> {
        each_backend!(conn, |conn| {
            let rows = match site {
                Some(site) => {
                    let sql = format!("{VOUCHER_COLS} WHERE site = $1 ORDER BY id");
                    sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?
                }
                None => {
                    let sql = format!("{VOUCHER_COLS} ORDER BY id");
                    sqlx::query(&sql).fetch_all(&mut *conn).await?
                }
            };
            rows.iter().map(voucher_from).collect()
        })
    }

    /// Gives an unredeemed voucher to `site`; false if it was taken meanwhile.
    pub(super) async fn claim_voucher(conn: Conn<'_>, id: VoucherId, site: SiteId) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            Ok(
                sqlx::query("UPDATE vouchers SET site = $2 WHERE id = $1 AND site IS NULL")
                    .bind(id)
                    .bind(i64::from(site.0))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                    == 1,
            )
        })
    }

    pub(super) async fn delete_voucher(
        conn: Conn<'_>,
        actor: &str,
        before: &Voucher,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM vouchers WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_voucher",
                &before.id.to_string(),
                Some(&voucher_json(before)),
                None,
            )
            .await
        })
    }

    pub(super) async fn audit_voucher(
        conn: Conn<'_>,
        actor: &str,
        before: &Voucher,
        after: &Voucher,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "redeem_voucher",
                &before.id.to_string(),
                Some(&voucher_json(before)),
                Some(&voucher_json(after)),
            )
            .await
        })
    }
}

fn not_a_member(site: SiteId, account: AccountId) -> StoreError {
    StoreError::NotFound {
        entity: membership_entity(site, account),
    }
}

fn normalise_code(code: &str) -> Result<String, StoreError> {
    let code = code.trim().to_uppercase();
    if code.is_empty() || code.len() > MAX_VOUCHER_CODE || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(StoreError::invalid(format!(
            "a voucher code has 1 to {MAX_VOUCHER_CODE} letters, digits and dashes"
        )));
    }
    Ok(code)
}

/// Who administers a site: memberships, ownership, invitations and vouchers:
/// [`Store::memberships`].
#[derive(Clone, Copy, Debug)]
pub struct Memberships<'s> {
    store: &'s Store,
}

impl Store {
    /// Memberships, ownership, invitations and vouchers.
    #[must_use]
    pub fn memberships(&self) -> Memberships<'_> {
        Memberships { store: self }
    }
}

impl Memberships<'_> {
    /// Add `account` to `site` with `role` (or change its role and person link). An
    /// existing owner stays owner.
    ///
    /// # Errors
    /// [`StoreError::ForeignKey`] for an unknown site, account or person.
    pub async fn put(
        &self,
        actor: &str,
        site: SiteId,
        account: AccountId,
        role: RoleId,
        person: Option<PersonId>,
        now: Timestamp,
    ) -> Result<Membership, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            let before = queries::member(db.conn(), site, account).await?;
            let after = Membership {
                site,
                account,
                role,
                person,
                is_owner: before.as_ref().is_some_and(|b| b.is_owner),
                created_at: before.as_ref().map_or(crate::dispatch::whole(now), |b| b.created_at),
            };
            let action = if before.is_some() {
                "update_membership"
            } else {
                "create_membership"
            };
            queries::put_member(db.conn(), actor, before.as_ref(), &after, action, now).await?;
            after
        };
        db.commit().await?;
        Ok(out)
    }

    /// Make a new site's first owner: `account` joins (or stays) with `role` as owner.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] if the site has an owner already (use
    /// [`Memberships::transfer_ownership`]); [`StoreError::ForeignKey`] for an unknown site or
    /// account.
    pub async fn set_first_owner(
        &self,
        actor: &str,
        site: SiteId,
        account: AccountId,
        role: RoleId,
        now: Timestamp,
    ) -> Result<Membership, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            let before = queries::member(db.conn(), site, account).await?;
            let after = Membership {
                site,
                account,
                role,
                person: before.as_ref().and_then(|b| b.person),
                is_owner: true,
                created_at: before.as_ref().map_or(crate::dispatch::whole(now), |b| b.created_at),
            };
            queries::put_member(db.conn(), actor, before.as_ref(), &after, "set_owner", now).await?;
            after
        };
        db.commit().await?;
        Ok(out)
    }

    /// The membership of `account` on `site`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn get(&self, site: SiteId, account: AccountId) -> Result<Option<Membership>, StoreError> {
        let auth = &self.store.inner.auth;
        let stamp = self.store.auth_stamp();
        if let Some(m) = auth.get(&auth.members, &(site.0, account), stamp) {
            return Ok(Some(m));
        }
        let found = queries::member(self.store.reader().await?.conn(), site, account).await?;
        if let Some(m) = &found {
            auth.put(&auth.members, (site.0, account), m.clone(), stamp);
        }
        Ok(found)
    }

    /// A site's members, by account.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn of_site(&self, site: SiteId) -> Result<Vec<Membership>, StoreError> {
        queries::members_of_site(self.store.reader().await?.conn(), site).await
    }

    /// An account's sites, by site.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn of_account(&self, account: AccountId) -> Result<Vec<Membership>, StoreError> {
        queries::members_of_account(self.store.reader().await?.conn(), account).await
    }

    /// Remove `account` from `site`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if it is not a member; [`StoreError::InUse`] for the
    /// owner, who must transfer ownership first.
    pub async fn remove(
        &self,
        actor: &str,
        site: SiteId,
        account: AccountId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::member(db.conn(), site, account)
            .await?
            .ok_or_else(|| not_a_member(site, account))?;
        if before.is_owner {
            return Err(StoreError::InUse {
                entity: membership_entity(site, account),
                used_by: format!("site:{} as its owner; transfer ownership first", site.0),
            });
        }
        queries::remove_member(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Hand `site` from its owner `from` to the member `to`, in one transaction: `to`
    /// becomes owner with `owner_role`, `from` stays a member with `former_owner_role`.
    /// Who may receive ownership (the FAQ: only a site admin) is the role table's call,
    /// checked by the caller against `to`'s current role.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if either is not a member; [`StoreError::Invalid`] if
    /// `from` is not the owner or `from == to`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the two members, their new roles, the maker and the time"
    )]
    pub async fn transfer_ownership(
        &self,
        actor: &str,
        site: SiteId,
        from: AccountId,
        to: AccountId,
        owner_role: RoleId,
        former_owner_role: RoleId,
        now: Timestamp,
    ) -> Result<(Membership, Membership), StoreError> {
        if from == to {
            return Err(StoreError::invalid("ownership can only pass to another member"));
        }
        let mut db = self.store.writer().await?;
        let out = {
            let old = queries::member(db.conn(), site, from)
                .await?
                .ok_or_else(|| not_a_member(site, from))?;
            let new = queries::member(db.conn(), site, to)
                .await?
                .ok_or_else(|| not_a_member(site, to))?;
            if !old.is_owner {
                return Err(StoreError::invalid(format!("{from} does not own site:{}", site.0)));
            }
            // The old owner steps down first: the one-owner index holds at every step.
            let old_after = Membership {
                is_owner: false,
                role: former_owner_role,
                ..old.clone()
            };
            queries::put_member(db.conn(), actor, Some(&old), &old_after, "transfer_ownership", now).await?;
            let new_after = Membership {
                is_owner: true,
                role: owner_role,
                ..new.clone()
            };
            queries::put_member(db.conn(), actor, Some(&new), &new_after, "transfer_ownership", now).await?;
            crate::dispatch::enqueue_event(
                db.conn(),
                site,
                "ownership.transferred",
                now,
                serde_json::json!({"from_account": from.get(), "to_account": to.get()}),
            )
            .await?;
            (old_after, new_after)
        };
        db.commit().await?;
        Ok(out)
    }

    /// Invite `email` to `site` with `role`, optionally handing over `credential`; the
    /// secret for the invitation link is returned once.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed email or an expiry in the past;
    /// [`StoreError::ForeignKey`] for an unknown site, credential or inviter.
    #[expect(clippy::too_many_arguments, reason = "one field each")]
    pub async fn create_invitation(
        &self,
        actor: &str,
        site: SiteId,
        email: &str,
        role: RoleId,
        credential: Option<CredentialId>,
        invited_by: Option<AccountId>,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(Invitation, IssuedSecret), StoreError> {
        let email = crate::accounts::normalise_email(email)?;
        if expires_at <= now {
            return Err(StoreError::invalid("the invitation's expiry is in the past"));
        }
        let secret = secrets::fresh("");
        let hash = secrets::hash(&secret);
        let invitation = {
            let mut db = self.store.writer().await?;
            let out = queries::insert_invite(
                db.conn(),
                actor,
                site,
                &email,
                role,
                credential,
                invited_by,
                &hash,
                expires_at,
                now,
            )
            .await?;
            db.commit().await?;
            out
        };
        Ok((
            invitation,
            IssuedSecret {
                secret,
                expires_at: Some(crate::dispatch::whole(expires_at)),
            },
        ))
    }

    /// The pending invitation with this secret at `now`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn invitation_by_secret(&self, secret: &str, now: Timestamp) -> Result<Option<Invitation>, StoreError> {
        let hash = secrets::hash(secret);
        queries::live_invite_by_hash(self.store.reader().await?.conn(), &hash, now).await
    }

    /// A site's invitations, accepted and expired ones included.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn invitations(&self, site: SiteId) -> Result<Vec<Invitation>, StoreError> {
        queries::invites_of_site(self.store.reader().await?.conn(), site).await
    }

    /// Accept an invitation as `account` at `now`: it is used up and the account joins
    /// the site with the invited role, linked to `person` if given.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an unknown, used or expired secret (one message for
    /// all three); [`StoreError::Duplicate`] if the account is a member already.
    pub async fn accept_invitation(
        &self,
        secret: &str,
        account: AccountId,
        person: Option<PersonId>,
        now: Timestamp,
    ) -> Result<(Invitation, Membership), StoreError> {
        let hash = secrets::hash(secret);
        let actor = account.to_string();
        let mut db = self.store.writer().await?;
        let out = {
            let invitation = queries::live_invite_by_hash(db.conn(), &hash, now)
                .await?
                .ok_or_else(invalid_invitation)?;
            if !queries::mark_accepted(db.conn(), invitation.id, now).await? {
                return Err(invalid_invitation());
            }
            if queries::member(db.conn(), invitation.site, account).await?.is_some() {
                return Err(StoreError::Duplicate {
                    entity: membership_entity(invitation.site, account),
                    detail: "the account is a member of the site already".to_owned(),
                    cause: None,
                });
            }
            let membership = Membership {
                site: invitation.site,
                account,
                role: invitation.role,
                person,
                is_owner: false,
                created_at: crate::dispatch::whole(now),
            };
            queries::put_member(db.conn(), &actor, None, &membership, "accept_invitation", now).await?;
            (
                Invitation {
                    accepted_at: Some(crate::dispatch::whole(now)),
                    ..invitation
                },
                membership,
            )
        };
        db.commit().await?;
        Ok(out)
    }

    /// Withdraw an invitation.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown invitation.
    pub async fn revoke_invitation(&self, actor: &str, id: InvitationId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::invite(db.conn(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
        queries::delete_invite(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Issue a voucher with these limits at `now`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed code or an empty validity window;
    /// [`StoreError::Duplicate`] for a code in use.
    #[expect(clippy::too_many_arguments, reason = "a voucher's fields, its maker and the time")]
    pub async fn create_voucher(
        &self,
        actor: &str,
        code: &str,
        max_users: u32,
        max_app_users: u32,
        valid_from: Option<Timestamp>,
        valid_until: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Voucher, StoreError> {
        let code = normalise_code(code)?;
        if let (Some(f), Some(u)) = (valid_from, valid_until)
            && f >= u
        {
            return Err(StoreError::invalid("a voucher's validity must start before it ends"));
        }
        let draft = Voucher {
            id: VoucherId(0),
            site: None,
            code,
            max_users,
            max_app_users,
            valid_from: valid_from.map(crate::dispatch::whole),
            valid_until: valid_until.map(crate::dispatch::whole),
            created_at: crate::dispatch::whole(now),
        };
        let mut db = self.store.writer().await?;
        let out = queries::insert_voucher(db.conn(), actor, &draft).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The voucher with this code.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed code.
    pub async fn voucher_by_code(&self, code: &str) -> Result<Option<Voucher>, StoreError> {
        let code = normalise_code(code)?;
        queries::voucher_by_code(self.store.reader().await?.conn(), &code).await
    }

    /// Every voucher, or those a site redeemed.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn vouchers(&self, site: Option<SiteId>) -> Result<Vec<Voucher>, StoreError> {
        queries::vouchers(self.store.reader().await?.conn(), site).await
    }

    /// The voucher that sets `site`'s limits at `now`: of those it redeemed and that are
    /// valid, the latest redeemed. `None` means the site has no licence.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn site_voucher(&self, site: SiteId, now: Timestamp) -> Result<Option<Voucher>, StoreError> {
        Ok(self
            .vouchers(Some(site))
            .await?
            .into_iter()
            .filter(|v| v.is_valid_at(now))
            .max_by_key(|v| v.id))
    }

    /// Redeem the voucher `code` for `site` at `now`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown code; [`StoreError::InUse`] if another
    /// site redeemed it; [`StoreError::Invalid`] outside its validity.
    pub async fn redeem_voucher(
        &self,
        actor: &str,
        code: &str,
        site: SiteId,
        now: Timestamp,
    ) -> Result<Voucher, StoreError> {
        let code = normalise_code(code)?;
        let mut db = self.store.writer().await?;
        let out = {
            let before = queries::voucher_by_code(db.conn(), &code)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    entity: format!("voucher `{code}`"),
                })?;
            if let Some(holder) = before.site {
                if holder == site {
                    return Ok(before);
                }
                return Err(StoreError::InUse {
                    entity: format!("voucher `{code}`"),
                    used_by: format!("site:{}", holder.0),
                });
            }
            if !before.is_valid_at(now) {
                return Err(StoreError::invalid(format!("voucher `{code}` is not valid now")));
            }
            if !queries::claim_voucher(db.conn(), before.id, site).await? {
                return Err(StoreError::InUse {
                    entity: format!("voucher `{code}`"),
                    used_by: "another site".to_owned(),
                });
            }
            let after = Voucher {
                site: Some(site),
                ..before.clone()
            };
            queries::audit_voucher(db.conn(), actor, &before, &after, now).await?;
            after
        };
        db.commit().await?;
        Ok(out)
    }

    /// Delete a voucher.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown voucher.
    pub async fn delete_voucher(&self, actor: &str, id: VoucherId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::voucher_by_id(db.conn(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
        queries::delete_voucher(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }
}
