//! Incidents from doors and IQs, and what the admin API's live views need beside the
//! entries log: the tail of a site's entries and incidents after an id (for a stream
//! that resumes), a site's retention setting, and audited one-off actions such as a
//! remote opening; and the site's credentials that belong to nobody.
//!
//! Raising an incident writes, in one transaction, the incident, an audit row, and its
//! notification event (`incident.<kind>`, expanded by the notification worker into
//! e-mails and webhook deliveries), so a crash loses neither the incident nor its
//! notifications. Acknowledging one is audited and happens once.

use crate::codec::{id32, kind_code, opt_id32};
use crate::entries::StoredEntry;
use crate::error::StoreError;
use crate::ids::{EntryId, IncidentId};
use crate::store::Store;
use jiff::Timestamp;
use keyway_core::{CredentialId, CredentialKind, DoorId, IqId, PersonId, SiteId};

/// What happened at a door or an IQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IncidentKind {
    /// A door opened without a decision that allowed it.
    DoorForced,
    /// A door stayed open too long.
    DoorLeftOpen,
    /// A lock or reader reported tampering.
    Tamper,
    /// A lock's battery is low.
    BatteryLow,
    /// An IQ stopped answering.
    IqOffline,
}

impl IncidentKind {
    /// Every kind.
    pub const ALL: [IncidentKind; 5] = [
        IncidentKind::DoorForced,
        IncidentKind::DoorLeftOpen,
        IncidentKind::Tamper,
        IncidentKind::BatteryLow,
        IncidentKind::IqOffline,
    ];

    /// Its stable code, e.g. `door_forced`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            IncidentKind::DoorForced => "door_forced",
            IncidentKind::DoorLeftOpen => "door_left_open",
            IncidentKind::Tamper => "tamper",
            IncidentKind::BatteryLow => "battery_low",
            IncidentKind::IqOffline => "iq_offline",
        }
    }

    /// The kind with this code.
    #[must_use]
    pub fn from_code(code: &str) -> Option<IncidentKind> {
        IncidentKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The notification event kind, as in settings: `incident.<code>`.
    #[must_use]
    pub fn event_kind(self) -> String {
        format!("incident.{}", self.code())
    }
}

/// The longest incident detail, in characters.
pub const MAX_INCIDENT_DETAIL: usize = 500;

/// An incident to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIncident {
    pub site: SiteId,
    /// What happened.
    pub kind: IncidentKind,
    /// The door, when it is about one.
    pub door: Option<DoorId>,
    /// The IQ that reported it, or that went offline.
    pub iq: Option<IqId>,
    /// The IQ's own number for it: a second report with the same IQ and number is the
    /// same incident (stored and notified once).
    pub iq_seq: Option<u64>,
    /// When.
    pub at: Timestamp,
    /// Free text from the reporter (capped, control characters removed).
    pub detail: String,
}

/// An incident as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub id: IncidentId,
    pub site: SiteId,
    /// What happened.
    pub kind: IncidentKind,
    /// The door, if any.
    pub door: Option<DoorId>,
    /// The IQ, if any.
    pub iq: Option<IqId>,
    /// When.
    pub at: Timestamp,
    /// The reporter's text.
    pub detail: String,
    /// When it was acknowledged, if it was.
    pub acknowledged_at: Option<Timestamp>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
}

/// A query of a site's incidents, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentQuery {
    pub site: SiteId,
    /// Only of this kind.
    pub kind: Option<IncidentKind>,
    /// Only at this door.
    pub door: Option<DoorId>,
    /// Only acknowledged (`true`) or open (`false`) ones.
    pub acknowledged: Option<bool>,
    /// Only with an id below this (the cursor of the previous page).
    pub before: Option<IncidentId>,
    /// Page size, 1 to 10,000.
    pub limit: u32,
}

fn incident_json(i: &Incident) -> String {
    serde_json::json!({
        "id": i.id.get(), "site": i.site.0, "kind": i.kind.code(), "door": i.door.map(|d| d.0),
        "iq": i.iq.map(|q| q.0), "at": i.at.as_second(), "detail": i.detail,
        "acknowledged_at": i.acknowledged_at.map(Timestamp::as_second), "acknowledged_by": i.acknowledged_by,
    })
    .to_string()
}

fn clean_detail(detail: &str) -> String {
    detail
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_INCIDENT_DETAIL)
        .collect()
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const COLS: &str = "SELECT id, site, kind, door, iq, at, detail, acknowledged_at, acknowledged_by FROM incidents";

    fn incident_from(r: &impl Columns) -> Result<Incident, StoreError> {
        let site: i64 = r.col(1)?;
        let kind: String = r.col(2)?;
        Ok(Incident {
            id: r.col(0)?,
            site: SiteId(id32(site, "site")?),
            kind: IncidentKind::from_code(&kind)
                .ok_or_else(|| StoreError::internal(format!("unknown incident kind `{kind}`")))?,
            door: opt_id32(r.col(3)?, "door")?.map(DoorId),
            iq: opt_id32(r.col(4)?, "iq")?.map(IqId),
            at: r.time(5)?,
            detail: r.col(6)?,
            acknowledged_at: r.time_opt(7)?,
            acknowledged_by: r.col(8)?,
        })
    }

    pub(super) async fn insert(
        conn: Conn<'_>,
        actor: &str,
        new: &NewIncident,
        now: Timestamp,
    ) -> Result<Incident, StoreError> {
        each_backend!(conn, |conn| {
            let detail = clean_detail(&new.detail);
            let iq_seq = new
                .iq_seq
                .map(i64::try_from)
                .transpose()
                .map_err(StoreError::internal)?;
            let id: Option<IncidentId> = sqlx::query_scalar(
                "INSERT INTO incidents (site, kind, door, iq, iq_seq, at, detail) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(i64::from(new.site.0))
            .bind(new.kind.code())
            .bind(new.door.map(|d| i64::from(d.0)))
            .bind(new.iq.map(|q| i64::from(q.0)))
            .bind(iq_seq)
            .bind(new.at.as_second())
            .bind(&detail)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(id) = id else {
                // Reported before: the first report stands, notified once.
                let sql = format!("{COLS} WHERE iq = $1 AND iq_seq = $2");
                let row = sqlx::query(&sql)
                    .bind(new.iq.map(|q| i64::from(q.0)))
                    .bind(iq_seq)
                    .fetch_one(&mut *conn)
                    .await?;
                return incident_from(&row);
            };
            let incident = Incident {
                id,
                site: new.site,
                kind: new.kind,
                door: new.door,
                iq: new.iq,
                // As stored: whole seconds, so the answer equals a later read.
                at: crate::dispatch::seconds_to_time(new.at.as_second())?,
                detail,
                acknowledged_at: None,
                acknowledged_by: None,
            };
            let json = incident_json(&incident);
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "raise_incident",
                &id.to_string(),
                None,
                Some(&json),
            )
            .await?;
            let data = serde_json::from_str::<serde_json::Value>(&json).map_err(StoreError::internal)?;
            crate::sql::enqueue_event(
                Conn::from(&mut *conn),
                new.site,
                &new.kind.event_kind(),
                new.at.as_second(),
                now.as_second(),
                data,
            )
            .await?;
            Ok(incident)
        })
    }

    pub(super) async fn get(conn: Conn<'_>, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(incident_from).transpose()
        })
    }

    pub(super) async fn acknowledge(
        conn: Conn<'_>,
        actor: &str,
        before: &Incident,
        now: Timestamp,
    ) -> Result<Incident, StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("UPDATE incidents SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3")
                .bind(now.as_second())
                .bind(actor)
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            let after = Incident {
                acknowledged_at: Some(crate::dispatch::whole(now)),
                acknowledged_by: Some(actor.to_owned()),
                ..before.clone()
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "acknowledge_incident",
                &before.id.to_string(),
                Some(&incident_json(before)),
                Some(&incident_json(&after)),
            )
            .await?;
            Ok(after)
        })
    }

    pub(super) async fn query(conn: Conn<'_>, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        each_backend!(conn, |conn, ops| {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new(format!("{COLS} WHERE site = "));
            qb.push_bind(i64::from(q.site.0));
            if let Some(kind) = q.kind {
                qb.push(" AND kind = ").push_bind(kind.code());
            }
            if let Some(door) = q.door {
                qb.push(" AND door = ").push_bind(i64::from(door.0));
            }
            match q.acknowledged {
                Some(true) => {
                    qb.push(" AND acknowledged_at IS NOT NULL");
                }
                Some(false) => {
                    qb.push(" AND acknowledged_at IS NULL");
                }
                None => {}
            }
            if let Some(before) = q.before {
                qb.push(" AND id < ").push_bind(before);
            }
            qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(q.limit));
            let rows = qb.build().fetch_all(&mut *conn).await?;
            rows.iter().map(incident_from).collect()
        })
    }

    pub(super) async fn incidents_after(
        conn: Conn<'_>,
        site: SiteId,
        after: IncidentId,
        limit: u32,
    ) -> Result<Vec<Incident>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{COLS} WHERE site = $1 AND id > $2 ORDER BY id LIMIT $3");
            let rows = sqlx::query(&sql)
                .bind(i64::from(site.0))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
            rows.iter().map(incident_from).collect()
        })
    }

    pub(super) async fn heads(conn: Conn<'_>, site: SiteId) -> Result<(EntryId, IncidentId), StoreError> {
        each_backend!(conn, |conn| {
            let entries: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM entries WHERE site = $1")
                .bind(i64::from(site.0))
                .fetch_one(&mut *conn)
                .await?;
            let incidents: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM incidents WHERE site = $1")
                .bind(i64::from(site.0))
                .fetch_one(&mut *conn)
                .await?;
            Ok((EntryId(entries.unwrap_or(0)), IncidentId(incidents.unwrap_or(0))))
        })
    }

    pub(super) async fn retention(conn: Conn<'_>, site: SiteId) -> Result<Option<i64>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(
                sqlx::query_scalar("SELECT entries_retention_days FROM sites WHERE id = $1")
                    .bind(i64::from(site.0))
                    .fetch_optional(&mut *conn)
                    .await?,
            )
        })
    }

    pub(super) async fn unassigned(
        conn: Conn<'_>,
        site: SiteId,
        kind: Option<CredentialKind>,
        after: u32,
        limit: u32,
    ) -> Result<Vec<CredentialId>, StoreError> {
        each_backend!(conn, |conn, ops| {
            let mut qb =
                sqlx::QueryBuilder::<ops::Db>::new("SELECT id FROM credentials WHERE owner IS NULL AND site = ");
            qb.push_bind(i64::from(site.0));
            if let Some(kind) = kind {
                qb.push(" AND kind = ").push_bind(i64::from(kind_code(kind)));
            }
            qb.push(" AND id > ").push_bind(i64::from(after));
            qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
            let ids: Vec<i64> = qb.build_query_scalar::<i64>().fetch_all(&mut *conn).await?;
            ids.into_iter()
                .map(|id| id32(id, "credential").map(CredentialId))
                .collect()
        })
    }

    pub(super) async fn audit_action(
        conn: Conn<'_>,
        actor: &str,
        action: &str,
        entity: &str,
        after: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                action,
                entity,
                None,
                Some(after),
            )
            .await
        })
    }
}

fn no_incident(site: SiteId, id: IncidentId) -> StoreError {
    StoreError::NotFound {
        entity: format!("{id} of site:{}", site.0),
    }
}

/// Incidents (forced doors, tampering, IQs offline) and their acknowledgement:
/// [`Store::incidents`].
#[derive(Clone, Copy, Debug)]
pub struct Incidents<'s> {
    store: &'s Store,
}

impl Store {
    /// Incidents and their acknowledgement.
    #[must_use]
    pub fn incidents(&self) -> Incidents<'_> {
        Incidents { store: self }
    }
}

impl Incidents<'_> {
    /// Record an incident, its audit row and its notification event (one outbox row the
    /// notification worker expands), in one transaction.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn raise(&self, actor: &str, incident: &NewIncident, now: Timestamp) -> Result<Incident, StoreError> {
        let mut db = self.store.writer().await?;
        let out = queries::insert(db.conn(), actor, incident, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The incident `id` of `site`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn get(&self, site: SiteId, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let found = queries::get(self.store.reader().await?.conn(), id).await?;
        Ok(found.filter(|i| i.site == site))
    }

    /// Acknowledge the incident `id` of `site` at `now`. Acknowledging it again changes
    /// nothing and answers it as it is.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an incident that is not `site`'s.
    pub async fn acknowledge(
        &self,
        actor: &str,
        site: SiteId,
        id: IncidentId,
        now: Timestamp,
    ) -> Result<Incident, StoreError> {
        let mut db = self.store.writer().await?;
        let out = {
            let before = queries::get(db.conn(), id)
                .await?
                .filter(|i| i.site == site)
                .ok_or_else(|| no_incident(site, id))?;
            if before.acknowledged_at.is_some() {
                before
            } else {
                queries::acknowledge(db.conn(), actor, &before, now).await?
            }
        };
        db.commit().await?;
        Ok(out)
    }

    /// A page of a site's incidents, newest first.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a limit out of range.
    pub async fn query(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        if !(1..=10_000).contains(&query.limit) {
            return Err(StoreError::invalid(format!(
                "page size `{}` out of range 1 to 10000",
                query.limit
            )));
        }
        queries::query(self.store.reader().await?.conn(), query).await
    }

    /// A site's incidents with an id above `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn after(&self, site: SiteId, after: IncidentId, limit: u32) -> Result<Vec<Incident>, StoreError> {
        queries::incidents_after(self.store.reader().await?.conn(), site, after, limit).await
    }
}

impl Store {
    /// A site's entries (only `person`'s, if given) with an id above `after`, in id
    /// order, at most `limit`: the tail a live stream resumes from.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn entries_after(
        &self,
        site: SiteId,
        person: Option<PersonId>,
        after: EntryId,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        crate::entries::queries::after(self.reader().await?.conn(), site, person, after, limit).await
    }

    /// The highest entry id and incident id of `site` (0 when there is none): where a
    /// live stream that starts now begins.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn event_heads(&self, site: SiteId) -> Result<(EntryId, IncidentId), StoreError> {
        queries::heads(self.reader().await?.conn(), site).await
    }

    /// How many days `site` keeps its entries, or `None` for an unknown site.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn entries_retention(&self, site: SiteId) -> Result<Option<i64>, StoreError> {
        queries::retention(self.reader().await?.conn(), site).await
    }

    /// The credentials of `site` that belong to nobody (only of `kind`, if given), with
    /// an id above `after`, in id order, at most `limit`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn unassigned_credentials(
        &self,
        site: SiteId,
        kind: Option<CredentialKind>,
        after: u32,
        limit: u32,
    ) -> Result<Vec<CredentialId>, StoreError> {
        queries::unassigned(self.reader().await?.conn(), site, kind, after, limit).await
    }

    /// Audit an action that changes no stored record (a remote opening, say): `after` is
    /// a JSON object describing it.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn audit_action(
        &self,
        actor: &str,
        action: &str,
        entity: &str,
        after: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut db = self.writer().await?;
        queries::audit_action(db.conn(), actor, action, entity, after, now).await?;
        db.commit().await?;
        Ok(())
    }
}
