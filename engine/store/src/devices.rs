//! What the store keeps about IQs beyond the decision model: each person's activation
//! PIN per IQ, and the firmware files IQs update from.
//!
//! A PIN is hashed with argon2id like a password (PINs are short, so a fast hash would
//! fall to a dictionary at once). After [`MAX_PIN_ATTEMPTS`] wrong PINs in a row the
//! activation is blocked until an admin resets it. Following the FAQ, an admin resets
//! one person's PIN for one IQ (the person activates again), and the owner resets a
//! whole IQ (everyone activates again).
//!
//! Firmware files are stored with their SHA-256 and size, unique per (model, version).
//!
//! An IQ's registration details (model, serial number, the firmware assigned to it) sit
//! beside its row of the decision model: they are not part of any decision, so they
//! change without a revision, and are audited.

use crate::accounts::{hash_password, verify_hash};
use crate::codec::id32;
use crate::dispatch::secrets;
use crate::error::StoreError;
use crate::ids::FirmwareId;
use crate::store::Store;
use crate::tokens::IssuedSecret;
use jiff::Timestamp;
use keyway_core::{IqId, PersonId, SiteId};

/// Wrong PINs in a row before an activation is blocked.
pub const MAX_PIN_ATTEMPTS: u32 = 5;
/// The largest firmware file accepted, in bytes.
pub const MAX_FIRMWARE_BYTES: usize = 64 << 20;

/// A person's activation on an IQ (the PIN itself is never returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IqActivation {
    pub iq: IqId,
    pub person: PersonId,
    /// Wrong PINs since the last right one.
    pub failed_attempts: u32,
    /// Whether wrong PINs blocked it.
    pub blocked: bool,
    /// When the person first entered the right PIN, if they have.
    pub activated_at: Option<Timestamp>,
    /// When the PIN was set.
    pub created_at: Timestamp,
}

/// The answer to a PIN check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinCheck {
    /// The PIN is right.
    Accepted,
    /// The PIN is wrong; this many attempts remain before the activation blocks.
    Wrong {
        /// Attempts left.
        remaining: u32,
    },
    /// Too many wrong PINs: an admin must reset it.
    Blocked,
    /// The person has no PIN for this IQ.
    NotSet,
}

/// A firmware file's description (the bytes come from [`Devices::firmware_content`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareFile {
    pub id: FirmwareId,
    /// The IQ model it is for.
    pub model: String,
    pub version: String,
    /// The SHA-256 of the bytes, hex.
    pub sha256: String,
    /// The size in bytes.
    pub size: u64,
    /// When it was uploaded.
    pub uploaded_at: Timestamp,
}

/// What an admin registered about an IQ, beyond the decision model's site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IqDetails {
    pub id: IqId,
    pub site: SiteId,
    pub name: String,
    /// Its model (what firmware files are for).
    pub model: String,
    /// Its serial number, unique among registered IQs; absent for IQs written before
    /// registration details existed.
    pub serial: Option<String>,
    /// The firmware file assigned to it, if any.
    pub firmware: Option<FirmwareId>,
}

fn activation_entity(iq: IqId, person: PersonId) -> String {
    format!("iq_activation:{}:{}", iq.0, person.0)
}

fn check_pin(pin: &str) -> Result<(), StoreError> {
    if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::invalid("a PIN has 4 to 8 digits"));
    }
    Ok(())
}

fn check_label(what: &str, text: &str) -> Result<(), StoreError> {
    if text.is_empty()
        || text.len() > 64
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    {
        return Err(StoreError::invalid(format!(
            "a {what} has 1 to 64 letters, digits, dots, dashes, underscores or pluses"
        )));
    }
    Ok(())
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const ACT_COLS: &str = "SELECT iq, person, failed_attempts, blocked, activated_at, created_at, pin_hash \
                            FROM iq_activations";
    const FW_COLS: &str = "SELECT id, model, version, sha256, size, uploaded_at FROM firmware_files";

    fn activation_from(r: &impl Columns) -> Result<(IqActivation, String), StoreError> {
        let failed: i64 = r.col(2)?;
        Ok((
            IqActivation {
                iq: IqId(id32(r.col(0)?, "iq")?),
                person: PersonId(id32(r.col(1)?, "person")?),
                failed_attempts: id32(failed, "failed_attempts")?,
                blocked: r.col(3)?,
                activated_at: r.time_opt(4)?,
                created_at: r.time(5)?,
            },
            r.col(6)?,
        ))
    }

    fn firmware_from(r: &impl Columns) -> Result<FirmwareFile, StoreError> {
        let size: i64 = r.col(4)?;
        Ok(FirmwareFile {
            id: r.col(0)?,
            model: r.col(1)?,
            version: r.col(2)?,
            sha256: r.col(3)?,
            size: u64::try_from(size).map_err(StoreError::internal)?,
            uploaded_at: r.time(5)?,
        })
    }

    pub(super) async fn activation(
        conn: Conn<'_>,
        iq: IqId,
        person: PersonId,
    ) -> Result<Option<(IqActivation, String)>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{ACT_COLS} WHERE iq = $1 AND person = $2");
            let row = sqlx::query(&sql)
                .bind(i64::from(iq.0))
                .bind(i64::from(person.0))
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(activation_from).transpose()
        })
    }

    pub(super) async fn activations(conn: Conn<'_>, iq: IqId) -> Result<Vec<IqActivation>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{ACT_COLS} WHERE iq = $1 ORDER BY person");
            let rows = sqlx::query(&sql).bind(i64::from(iq.0)).fetch_all(&mut *conn).await?;
            rows.iter().map(|r| activation_from(r).map(|(a, _)| a)).collect()
        })
    }

    pub(super) async fn put_activation(
        conn: Conn<'_>,
        actor: &str,
        iq: IqId,
        person: PersonId,
        phc: &str,
        now: Timestamp,
    ) -> Result<IqActivation, StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query(
                "INSERT INTO iq_activations (iq, person, pin_hash, failed_attempts, blocked, activated_at, created_at) \
             VALUES ($1, $2, $3, 0, FALSE, NULL, $4) ON CONFLICT (iq, person) DO UPDATE SET \
             pin_hash = excluded.pin_hash, failed_attempts = 0, blocked = FALSE, activated_at = NULL, \
             created_at = excluded.created_at",
            )
            .bind(i64::from(iq.0))
            .bind(i64::from(person.0))
            .bind(phc)
            .bind(now.as_second())
            .execute(&mut *conn)
            .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "set_iq_pin",
                &activation_entity(iq, person),
                None,
                None,
            )
            .await?;
            Ok(IqActivation {
                iq,
                person,
                failed_attempts: 0,
                blocked: false,
                activated_at: None,
                created_at: crate::dispatch::whole(now),
            })
        })
    }

    pub(super) async fn record_attempt(
        conn: Conn<'_>,
        iq: IqId,
        person: PersonId,
        ok: bool,
        now: Timestamp,
    ) -> Result<Option<(i64, bool)>, StoreError> {
        each_backend!(conn, |conn| {
            let row = if ok {
                sqlx::query(
                    "UPDATE iq_activations SET failed_attempts = 0, activated_at = COALESCE(activated_at, $3) \
                 WHERE iq = $1 AND person = $2 AND NOT blocked RETURNING failed_attempts, blocked",
                )
                .bind(i64::from(iq.0))
                .bind(i64::from(person.0))
                .bind(now.as_second())
                .fetch_optional(&mut *conn)
                .await?
            } else {
                sqlx::query(
                    "UPDATE iq_activations SET failed_attempts = failed_attempts + 1, \
                 blocked = (failed_attempts + 1 >= $3) WHERE iq = $1 AND person = $2 AND NOT blocked \
                 RETURNING failed_attempts, blocked",
                )
                .bind(i64::from(iq.0))
                .bind(i64::from(person.0))
                .bind(i64::from(MAX_PIN_ATTEMPTS))
                .fetch_optional(&mut *conn)
                .await?
            };
            row.map(|r| Ok((r.col(0)?, r.col(1)?))).transpose()
        })
    }

    pub(super) async fn delete_activations(
        conn: Conn<'_>,
        actor: &str,
        iq: IqId,
        person: Option<PersonId>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        each_backend!(conn, |conn| {
            let (n, entity, action) = match person {
                Some(p) => (
                    sqlx::query("DELETE FROM iq_activations WHERE iq = $1 AND person = $2")
                        .bind(i64::from(iq.0))
                        .bind(i64::from(p.0))
                        .execute(&mut *conn)
                        .await?
                        .rows_affected(),
                    activation_entity(iq, p),
                    "reset_iq_pin",
                ),
                None => (
                    sqlx::query("DELETE FROM iq_activations WHERE iq = $1")
                        .bind(i64::from(iq.0))
                        .execute(&mut *conn)
                        .await?
                        .rows_affected(),
                    format!("iq:{}", iq.0),
                    "reset_iq",
                ),
            };
            let after = serde_json::json!({ "activations_removed": n }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                action,
                &entity,
                None,
                Some(&after),
            )
            .await?;
            Ok(n)
        })
    }

    const IQ_COLS: &str = "SELECT id, site, name, model, serial, firmware FROM iqs";

    fn iq_from(r: &impl Columns) -> Result<IqDetails, StoreError> {
        Ok(IqDetails {
            id: IqId(id32(r.col(0)?, "iq")?),
            site: SiteId(id32(r.col(1)?, "site")?),
            name: r.col(2)?,
            model: r.col(3)?,
            serial: r.col(4)?,
            firmware: r.col(5)?,
        })
    }

    pub(super) async fn iq_details(conn: Conn<'_>, iq: IqId) -> Result<Option<IqDetails>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{IQ_COLS} WHERE id = $1");
            let row = sqlx::query(&sql)
                .bind(i64::from(iq.0))
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(iq_from).transpose()
        })
    }

    pub(super) async fn site_iqs(conn: Conn<'_>, site: SiteId) -> Result<Vec<IqDetails>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{IQ_COLS} WHERE site = $1 ORDER BY id");
            let rows = sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?;
            rows.iter().map(iq_from).collect()
        })
    }

    pub(super) async fn iq_by_serial(conn: Conn<'_>, serial: &str) -> Result<Option<IqDetails>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{IQ_COLS} WHERE serial = $1");
            let row = sqlx::query(&sql).bind(serial).fetch_optional(&mut *conn).await?;
            row.as_ref().map(iq_from).transpose()
        })
    }

    pub(super) async fn set_iq_details(
        conn: Conn<'_>,
        actor: &str,
        before: &IqDetails,
        model: &str,
        serial: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE iqs SET model = $2, serial = $3 WHERE id = $1")
                .bind(i64::from(before.id.0))
                .bind(model)
                .bind(serial)
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    StoreError::from(e).duplicate(
                        format!("iq serial `{serial}`"),
                        "an IQ with this serial number is registered already".to_owned(),
                    )
                })?;
            let old = serde_json::json!({ "model": before.model, "serial": before.serial }).to_string();
            let new = serde_json::json!({ "model": model, "serial": serial }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "set_iq_details",
                &format!("iq:{}", before.id.0),
                Some(&old),
                Some(&new),
            )
            .await
        })
    }

    pub(super) async fn assign_firmware(
        conn: Conn<'_>,
        actor: &str,
        before: &IqDetails,
        firmware: Option<FirmwareId>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE iqs SET firmware = $2 WHERE id = $1")
                .bind(i64::from(before.id.0))
                .bind(firmware)
                .execute(&mut *conn)
                .await?;
            // Download tokens are for the file assigned when they were issued.
            sqlx::query("DELETE FROM firmware_downloads WHERE iq = $1 AND firmware IS DISTINCT FROM $2")
                .bind(i64::from(before.id.0))
                .bind(firmware)
                .execute(&mut *conn)
                .await?;
            let old = serde_json::json!({ "firmware": before.firmware.map(FirmwareId::get) }).to_string();
            let new = serde_json::json!({ "firmware": firmware.map(FirmwareId::get) }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "assign_firmware",
                &format!("iq:{}", before.id.0),
                Some(&old),
                Some(&new),
            )
            .await
        })
    }

    pub(super) async fn put_download(
        conn: Conn<'_>,
        hash: &str,
        iq: IqId,
        firmware: FirmwareId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM firmware_downloads WHERE expires_at <= $1")
                .bind(now.as_second())
                .execute(&mut *conn)
                .await?;
            sqlx::query(
            "INSERT INTO firmware_downloads (token_hash, iq, firmware, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(i64::from(iq.0))
        .bind(firmware)
        .bind(expires_at.as_second())
        .bind(now.as_second())
        .execute(&mut *conn)
        .await?;
            Ok(())
        })
    }

    pub(super) async fn download(
        conn: Conn<'_>,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<(IqId, FirmwareFile)>, StoreError> {
        each_backend!(conn, |conn| {
            let row = sqlx::query(
                "SELECT f.id, f.model, f.version, f.sha256, f.size, f.uploaded_at, d.iq FROM firmware_downloads d \
             JOIN iqs i ON i.id = d.iq AND i.firmware = d.firmware \
             JOIN firmware_files f ON f.id = d.firmware \
             WHERE d.token_hash = $1 AND d.expires_at > $2",
            )
            .bind(hash)
            .bind(now.as_second())
            .fetch_optional(&mut *conn)
            .await?;
            row.map(|r| Ok((IqId(id32(r.col(6)?, "iq")?), firmware_from(&r)?)))
                .transpose()
        })
    }

    pub(super) async fn iq_exists(conn: Conn<'_>, iq: IqId) -> Result<bool, StoreError> {
        each_backend!(conn, |conn| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM iqs WHERE id = $1")
                .bind(i64::from(iq.0))
                .fetch_one(&mut *conn)
                .await?;
            Ok(n > 0)
        })
    }

    pub(super) async fn insert_firmware(
        conn: Conn<'_>,
        actor: &str,
        model: &str,
        version: &str,
        content: &[u8],
        now: Timestamp,
    ) -> Result<FirmwareFile, StoreError> {
        each_backend!(conn, |conn| {
            let sha256 = secrets::sha256_hex(content);
            let size = i64::try_from(content.len()).map_err(StoreError::internal)?;
            let id: FirmwareId = sqlx::query_scalar(
                "INSERT INTO firmware_files (model, version, sha256, size, content, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(model)
            .bind(version)
            .bind(&sha256)
            .bind(size)
            .bind(content)
            .bind(now.as_second())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                StoreError::from(e).duplicate(
                    format!("firmware `{model}` `{version}`"),
                    "that model already has this version".to_owned(),
                )
            })?;
            let file = FirmwareFile {
                id,
                model: model.to_owned(),
                version: version.to_owned(),
                sha256,
                size: u64::try_from(content.len()).map_err(StoreError::internal)?,
                uploaded_at: crate::dispatch::whole(now),
            };
            let after = serde_json::json!({ "id": id.get(), "model": model, "version": version, "sha256": file.sha256, "size": file.size }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "upload_firmware",
                &id.to_string(),
                None,
                Some(&after),
            )
            .await?;
            Ok(file)
        })
    }

    pub(super) async fn firmware(conn: Conn<'_>, id: FirmwareId) -> Result<Option<FirmwareFile>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{FW_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(firmware_from).transpose()
        })
    }

    pub(super) async fn firmware_files(conn: Conn<'_>, model: Option<&str>) -> Result<Vec<FirmwareFile>, StoreError> {
        each_backend!(conn, |conn| {
            let rows = match model {
                Some(model) => {
                    let sql = format!("{FW_COLS} WHERE model = $1 ORDER BY id");
                    sqlx::query(&sql).bind(model).fetch_all(&mut *conn).await?
                }
                None => {
                    let sql = format!("{FW_COLS} ORDER BY id");
                    sqlx::query(&sql).fetch_all(&mut *conn).await?
                }
            };
            rows.iter().map(firmware_from).collect()
        })
    }

    pub(super) async fn firmware_content(conn: Conn<'_>, id: FirmwareId) -> Result<Option<Vec<u8>>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar("SELECT content FROM firmware_files WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?)
        })
    }

    pub(super) async fn delete_firmware(
        conn: Conn<'_>,
        actor: &str,
        before: &FirmwareFile,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM firmware_files WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            let json = serde_json::json!({ "id": before.id.get(), "model": before.model, "version": before.version, "sha256": before.sha256 }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_firmware",
                &before.id.to_string(),
                Some(&json),
                None,
            )
            .await
        })
    }
}

/// IQ registration details, activation PINs and firmware: [`Store::devices`].
#[derive(Clone, Copy, Debug)]
pub struct Devices<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// IQ registration details, activation PINs and firmware.
    #[must_use]
    pub fn devices(&self) -> Devices<'_> {
        Devices { store: self }
    }
}

impl Devices<'_> {
    /// Set `person`'s activation PIN for `iq` (4 to 8 digits); the person activates by
    /// entering it. Replaces any PIN and clears a block.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed PIN; [`StoreError::ForeignKey`] for an
    /// unknown IQ or person.
    pub async fn set_pin(
        &self,
        actor: &str,
        iq: IqId,
        person: PersonId,
        pin: &str,
        now: Timestamp,
    ) -> Result<IqActivation, StoreError> {
        check_pin(pin)?;
        let phc = hash_password(pin).await?;
        let mut db = self.store.writer().await?;
        let out = queries::put_activation(db.conn(), actor, iq, person, &phc, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// Check the PIN `person` entered at `iq`, counting wrong attempts and blocking the
    /// activation after [`MAX_PIN_ATTEMPTS`].
    ///
    /// # Errors
    /// If the database fails.
    pub async fn check_pin(
        &self,
        iq: IqId,
        person: PersonId,
        pin: &str,
        now: Timestamp,
    ) -> Result<PinCheck, StoreError> {
        let Some((activation, phc)) = queries::activation(self.store.reader().await?.conn(), iq, person).await? else {
            return Ok(PinCheck::NotSet);
        };
        if activation.blocked {
            return Ok(PinCheck::Blocked);
        }
        let ok = check_pin(pin).is_ok() && verify_hash(pin, &phc).await?;
        let mut db = self.store.writer().await?;
        let recorded = queries::record_attempt(db.conn(), iq, person, ok, now).await?;
        db.commit().await?;
        Ok(match recorded {
            // Blocked or reset between the read and the write.
            None => PinCheck::Blocked,
            Some(_) if ok => PinCheck::Accepted,
            Some((_, true)) => PinCheck::Blocked,
            Some((failed, false)) => PinCheck::Wrong {
                remaining: MAX_PIN_ATTEMPTS.saturating_sub(u32::try_from(failed).unwrap_or(MAX_PIN_ATTEMPTS)),
            },
        })
    }

    /// `person`'s activation on `iq`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn activation(&self, iq: IqId, person: PersonId) -> Result<Option<IqActivation>, StoreError> {
        let found = queries::activation(self.store.reader().await?.conn(), iq, person).await?;
        Ok(found.map(|(a, _)| a))
    }

    /// The activations on `iq`, by person.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn activations(&self, iq: IqId) -> Result<Vec<IqActivation>, StoreError> {
        queries::activations(self.store.reader().await?.conn(), iq).await
    }

    /// An admin's "Reset PIN" for one person on one IQ: the activation is removed and the
    /// person activates again with a new PIN.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the person has no activation there.
    pub async fn reset_pin(&self, actor: &str, iq: IqId, person: PersonId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        if queries::delete_activations(db.conn(), actor, iq, Some(person), now).await? == 0 {
            return Err(StoreError::NotFound {
                entity: activation_entity(iq, person),
            });
        }
        db.commit().await?;
        Ok(())
    }

    /// The owner's "reset the IQ": every activation on it is removed, so all its users
    /// activate again. How many were removed.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown IQ.
    pub async fn reset(&self, actor: &str, iq: IqId, now: Timestamp) -> Result<u64, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            if !queries::iq_exists(db.conn(), iq).await? {
                return Err(StoreError::NotFound {
                    entity: format!("iq:{}", iq.0),
                });
            }
            queries::delete_activations(db.conn(), actor, iq, None, now).await?
        };
        db.commit().await?;
        Ok(out)
    }

    /// Store a firmware file for `model` at `version`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty or oversized file or a malformed model or
    /// version; [`StoreError::Duplicate`] if the model has that version already.
    pub async fn upload_firmware(
        &self,
        actor: &str,
        model: &str,
        version: &str,
        content: &[u8],
        now: Timestamp,
    ) -> Result<FirmwareFile, StoreError> {
        check_label("firmware model", model)?;
        check_label("firmware version", version)?;
        if content.is_empty() || content.len() > MAX_FIRMWARE_BYTES {
            return Err(StoreError::invalid(format!(
                "a firmware file has 1 to {MAX_FIRMWARE_BYTES} bytes, found {}",
                content.len()
            )));
        }
        let mut db = self.store.writer().await?;
        let out = queries::insert_firmware(db.conn(), actor, model, version, content, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The firmware file `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn firmware(&self, id: FirmwareId) -> Result<Option<FirmwareFile>, StoreError> {
        queries::firmware(self.store.reader().await?.conn(), id).await
    }

    /// Firmware files, of one model or all, oldest upload first.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn firmware_files(&self, model: Option<&str>) -> Result<Vec<FirmwareFile>, StoreError> {
        queries::firmware_files(self.store.reader().await?.conn(), model).await
    }

    /// The bytes of firmware file `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn firmware_content(&self, id: FirmwareId) -> Result<Option<Vec<u8>>, StoreError> {
        queries::firmware_content(self.store.reader().await?.conn(), id).await
    }

    /// Delete firmware file `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown file.
    pub async fn delete_firmware(&self, actor: &str, id: FirmwareId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::firmware(db.conn(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
        queries::delete_firmware(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// What is registered about `iq`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn iq(&self, iq: IqId) -> Result<Option<IqDetails>, StoreError> {
        queries::iq_details(self.store.reader().await?.conn(), iq).await
    }

    /// The IQs of `site`, by id.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn of_site(&self, site: SiteId) -> Result<Vec<IqDetails>, StoreError> {
        queries::site_iqs(self.store.reader().await?.conn(), site).await
    }

    /// The IQ registered with `serial`, on any site.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn iq_by_serial(&self, serial: &str) -> Result<Option<IqDetails>, StoreError> {
        queries::iq_by_serial(self.store.reader().await?.conn(), serial).await
    }

    /// Record `iq`'s model and serial number.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed model or serial; [`StoreError::Duplicate`]
    /// if another IQ has the serial; [`StoreError::NotFound`] for an unknown IQ.
    pub async fn set_details(
        &self,
        actor: &str,
        iq: IqId,
        model: &str,
        serial: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_label("model", model)?;
        check_label("serial number", serial)?;
        let mut db = self.store.writer().await?;
        let before = queries::iq_details(db.conn(), iq)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                entity: format!("iq:{}", iq.0),
            })?;
        queries::set_iq_details(db.conn(), actor, &before, model, serial, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// A token with which `iq` downloads the firmware file assigned to it over HTTP until
    /// `expires_at` (`GET /v1/firmware/download`): random, shown once, stored as its
    /// SHA-256. It stops working when the IQ is assigned another file, or removed.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the IQ has no firmware assigned; if the database fails.
    pub async fn issue_firmware_download(
        &self,
        iq: IqId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<IssuedSecret, StoreError> {
        let secret = secrets::fresh("kwf_");
        let hash = secrets::hash(&secret);
        // Nothing authentication reads changes: the auth cache stays.
        let mut db = self.store.writer_untracked().await?;
        let details = queries::iq_details(db.conn(), iq).await?;
        let Some(firmware) = details.and_then(|d| d.firmware) else {
            return Err(StoreError::NotFound {
                entity: format!("firmware assigned to iq:{}", iq.0),
            });
        };
        queries::put_download(db.conn(), &hash, iq, firmware, expires_at, now).await?;
        db.commit().await?;
        Ok(IssuedSecret {
            secret,
            expires_at: Some(crate::dispatch::whole(expires_at)),
        })
    }

    /// The IQ and the firmware file a download token is good for at `now`: unexpired, and
    /// the file still the IQ's assignment.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn firmware_download(
        &self,
        secret: &str,
        now: Timestamp,
    ) -> Result<Option<(IqId, FirmwareFile)>, StoreError> {
        let hash = secrets::hash(secret);
        queries::download(self.store.reader().await?.conn(), &hash, now).await
    }

    /// Assign the firmware file `firmware` to `iq` (or none). The file must be for the
    /// IQ's model.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown IQ or file; [`StoreError::Invalid`] when the
    /// file is for another model.
    pub async fn assign_firmware(
        &self,
        actor: &str,
        iq: IqId,
        firmware: Option<FirmwareId>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::iq_details(db.conn(), iq)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                entity: format!("iq:{}", iq.0),
            })?;
        if let Some(id) = firmware {
            let file = queries::firmware(db.conn(), id)
                .await?
                .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
            if file.model != before.model {
                return Err(StoreError::invalid(format!(
                    "{id} is for model `{}`, and iq {} is a `{}`",
                    file.model, iq.0, before.model
                )));
            }
        }
        queries::assign_firmware(db.conn(), actor, &before, firmware, now).await?;
        db.commit().await?;
        Ok(())
    }
}
