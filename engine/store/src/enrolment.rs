//! IQ enrolment records: one-time enrolment codes and the serial of the certificate last
//! issued to each IQ.
//!
//! The API registers an IQ and asks for a code; the store keeps only the code's hash
//! (the link's `enrol::hash_code`, SHA-256 of the normalized code: 100 random bits need
//! no slow hash), its expiry and whether it was used. The IQ redeems the code once over
//! the link and receives a client certificate, whose serial is recorded here: from then
//! on only that serial authenticates the IQ. Revoking an IQ forgets its serial and its
//! unused codes. Issuing, recording and revoking are audited; a code or its hash is
//! never written to the audit log.

use crate::codec::id32;
use crate::devices::Devices;
use crate::error::StoreError;
use jiff::Timestamp;
use keyway_core::{DoorId, IqId, SiteId};

/// The certificate recorded for an IQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IqCertificate {
    pub iq: IqId,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// When it expires.
    pub not_after: Timestamp,
    /// When it was issued.
    pub issued_at: Timestamp,
}

fn check_hash(code_hash: &str) -> Result<(), StoreError> {
    if code_hash.len() != 64 || !code_hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(StoreError::invalid("an enrolment code hash is 64 lowercase hex digits"));
    }
    Ok(())
}

fn check_serial(serial: &str) -> Result<(), StoreError> {
    if serial.is_empty() || serial.len() > 128 || !serial.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(StoreError::invalid(
            "a certificate serial is 1 to 128 lowercase hex digits",
        ));
    }
    Ok(())
}

fn iq_entity(iq: IqId) -> String {
    format!("iq:{}", iq.0)
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    pub(super) async fn iq_site(conn: Conn<'_>, iq: IqId) -> Result<Option<SiteId>, StoreError> {
        each_backend!(conn, |conn| {
            let site: Option<i64> = sqlx::query_scalar("SELECT site FROM iqs WHERE id = $1")
                .bind(i64::from(iq.0))
                .fetch_optional(&mut *conn)
                .await?;
            site.map(|s| Ok(SiteId(id32(s, "site")?))).transpose()
        })
    }

    pub(super) async fn iq_doors(conn: Conn<'_>, iq: IqId) -> Result<Vec<DoorId>, StoreError> {
        each_backend!(conn, |conn| {
            let doors: Vec<i64> = sqlx::query_scalar("SELECT id FROM doors WHERE iq = $1 ORDER BY id")
                .bind(i64::from(iq.0))
                .fetch_all(&mut *conn)
                .await?;
            doors.into_iter().map(|d| Ok(DoorId(id32(d, "door")?))).collect()
        })
    }

    pub(super) async fn insert_code(
        conn: Conn<'_>,
        actor: &str,
        iq: IqId,
        code_hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            // One live code per IQ: a new one replaces the unused ones.
            sqlx::query("DELETE FROM iq_enrolment_codes WHERE iq = $1 AND used_at IS NULL")
                .bind(i64::from(iq.0))
                .execute(&mut *conn)
                .await?;
            sqlx::query(
            "INSERT INTO iq_enrolment_codes (code_hash, iq, expires_at, used_at, created_at) VALUES ($1, $2, $3, NULL, $4)",
        )
        .bind(code_hash)
        .bind(i64::from(iq.0))
        .bind(expires_at.as_second())
        .bind(now.as_second())
        .execute(&mut *conn)
        .await?;
            let after = serde_json::json!({ "expires_at": expires_at.as_second() }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "issue_enrolment_code",
                &iq_entity(iq),
                None,
                Some(&after),
            )
            .await
        })
    }

    pub(super) async fn redeem(conn: Conn<'_>, code_hash: &str, now: Timestamp) -> Result<Option<IqId>, StoreError> {
        each_backend!(conn, |conn| {
            let iq: Option<i64> = sqlx::query_scalar(
                "UPDATE iq_enrolment_codes SET used_at = $2 \
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING iq",
            )
            .bind(code_hash)
            .bind(now.as_second())
            .fetch_optional(&mut *conn)
            .await?;
            let Some(iq) = iq else { return Ok(None) };
            let iq = IqId(id32(iq, "iq")?);
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                &iq_entity(iq),
                "redeem_enrolment_code",
                &iq_entity(iq),
                None,
                None,
            )
            .await?;
            Ok(Some(iq))
        })
    }

    pub(super) async fn put_certificate(
        conn: Conn<'_>,
        actor: &str,
        iq: IqId,
        serial: &str,
        not_after: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            let before: Option<String> = sqlx::query_scalar("SELECT serial FROM iq_certificates WHERE iq = $1")
                .bind(i64::from(iq.0))
                .fetch_optional(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO iq_certificates (iq, serial, not_after, issued_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (iq) DO UPDATE SET serial = excluded.serial, not_after = excluded.not_after, \
             issued_at = excluded.issued_at",
            )
            .bind(i64::from(iq.0))
            .bind(serial)
            .bind(not_after.as_second())
            .bind(now.as_second())
            .execute(&mut *conn)
            .await?;
            let before = before.map(|s| serde_json::json!({ "serial": s }).to_string());
            let after = serde_json::json!({ "serial": serial, "not_after": not_after.as_second() }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "issue_iq_certificate",
                &iq_entity(iq),
                before.as_deref(),
                Some(&after),
            )
            .await
        })
    }

    pub(super) async fn certificate(conn: Conn<'_>, iq: IqId) -> Result<Option<IqCertificate>, StoreError> {
        each_backend!(conn, |conn| {
            let row = sqlx::query("SELECT iq, serial, not_after, issued_at FROM iq_certificates WHERE iq = $1")
                .bind(i64::from(iq.0))
                .fetch_optional(&mut *conn)
                .await?;
            row.map(|r| {
                Ok(IqCertificate {
                    iq: IqId(id32(r.col(0)?, "iq")?),
                    serial: r.col(1)?,
                    not_after: r.time(2)?,
                    issued_at: r.time(3)?,
                })
            })
            .transpose()
        })
    }

    pub(super) async fn revoke(conn: Conn<'_>, actor: &str, iq: IqId, now: Timestamp) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            let before: Option<String> =
                sqlx::query_scalar("DELETE FROM iq_certificates WHERE iq = $1 RETURNING serial")
                    .bind(i64::from(iq.0))
                    .fetch_optional(&mut *conn)
                    .await?;
            let codes = sqlx::query("DELETE FROM iq_enrolment_codes WHERE iq = $1 AND used_at IS NULL")
                .bind(i64::from(iq.0))
                .execute(&mut *conn)
                .await?
                .rows_affected();
            let before_json = before.as_ref().map(|s| serde_json::json!({ "serial": s }).to_string());
            let after = serde_json::json!({ "codes_removed": codes }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "revoke_iq_certificate",
                &iq_entity(iq),
                before_json.as_deref(),
                Some(&after),
            )
            .await?;
            Ok(before.is_some())
        })
    }
}

impl Devices<'_> {
    /// Records a one-time enrolment code for `iq`, by its hash (the link's
    /// `enrol::hash_code`), valid until `expires_at`. Any unused
    /// code of the IQ is replaced.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed hash or an expiry in the past;
    /// [`StoreError::NotFound`] for an unknown IQ; [`StoreError::Duplicate`] if the hash
    /// is already stored.
    pub async fn issue_enrolment_code(
        &self,
        actor: &str,
        iq: IqId,
        code_hash: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_hash(code_hash)?;
        if expires_at <= now {
            return Err(StoreError::invalid("an enrolment code must expire in the future"));
        }
        let mut db = self.store.writer().await?;
        if queries::iq_site(db.conn(), iq).await?.is_none() {
            return Err(StoreError::NotFound { entity: iq_entity(iq) });
        }
        queries::insert_code(db.conn(), actor, iq, code_hash, expires_at, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// `iq`'s site and the doors paired with it, by id, or `None` for an unknown IQ.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn profile(&self, iq: IqId) -> Result<Option<(SiteId, Vec<DoorId>)>, StoreError> {
        let mut db = self.store.reader().await?;
        Ok(match queries::iq_site(db.conn(), iq).await? {
            Some(site) => Some((site, queries::iq_doors(db.conn(), iq).await?)),
            None => None,
        })
    }

    /// Consumes the enrolment code with hash `code_hash` at `now`: the site and IQ it was
    /// issued for, or `None` for an unknown, used or expired code (or one whose IQ is
    /// gone). A code redeems once.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn redeem_enrolment_code(
        &self,
        code_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(SiteId, IqId)>, StoreError> {
        if check_hash(code_hash).is_err() {
            return Ok(None);
        }
        let mut db = self.store.writer().await?;
        let out = {
            match queries::redeem(db.conn(), code_hash, now).await? {
                Some(iq) => queries::iq_site(db.conn(), iq).await?.map(|site| (site, iq)),
                None => None,
            }
        };
        db.commit().await?;
        Ok(out)
    }

    /// Records the certificate just issued to `iq`: from now on only `serial` (lowercase
    /// hex) authenticates it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed serial; [`StoreError::ForeignKey`] for an
    /// unknown IQ.
    pub async fn record_certificate(
        &self,
        actor: &str,
        iq: IqId,
        serial: &str,
        not_after: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_serial(serial)?;
        let mut db = self.store.writer().await?;
        queries::put_certificate(db.conn(), actor, iq, serial, not_after, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// The certificate recorded for `iq`, if any.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn certificate(&self, iq: IqId) -> Result<Option<IqCertificate>, StoreError> {
        queries::certificate(self.store.reader().await?.conn(), iq).await
    }

    /// Revokes `iq`'s certificate (its serial is forgotten, so it no longer
    /// authenticates) and its unused enrolment codes. Whether a certificate was recorded.
    /// The link must also close the IQ's open sessions.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn revoke_certificate(&self, actor: &str, iq: IqId, now: Timestamp) -> Result<bool, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::revoke(db.conn(), actor, iq, now).await?;
        db.commit().await?;
        Ok(out)
    }
}
