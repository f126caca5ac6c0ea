//! The SQL of the decision model: the change log, the entity tables, the audit log and
//! the event outbox's insert. The admin facets and the entries log keep their SQL beside
//! them the same way.
//!
//! Each function takes a [`Conn`] of either backend and writes its statements once, in
//! `each_backend!`, which compiles them for SQLite and for PostgreSQL; so both backends
//! run the same statements and the conformance suite tests one implementation twice.
//! The schemas differ only in column types; every statement here is portable SQL (`$N`
//! placeholders, `ON CONFLICT`, `RETURNING`), and the few dialect differences branch on
//! the backend (`ops::PG`).

use crate::codec::{self, PeriodDto, id32, opt_id32};
use crate::dispatch::{Columns, Conn};
use crate::error::StoreError;
use crate::store::Part;
use crate::target::Target;
use futures_util::TryStreamExt;
use keyway_core::{
    CalendarId, CalendarRecord, Change, CredentialId, CredentialRecord, DoorId, DoorMode, DoorRecord, GroupId,
    GroupRecord, IqId, IqRecord, PersonId, PersonRecord, Record, RoleFlags, RoleId, ScheduleId, ScheduleRecord, SiteId,
    SiteRecord,
};
use std::collections::HashMap;

/// Take the next revision. Holds the counter row's lock until the transaction ends,
/// which serialises every writer of the database.
pub(crate) async fn bump_revision(conn: Conn<'_>) -> Result<u64, StoreError> {
    each_backend!(conn, |conn| {
        let value: i64 =
            sqlx::query_scalar("UPDATE revision_counter SET value = value + 1 WHERE id = 1 RETURNING value")
                .fetch_one(&mut *conn)
                .await?;
        u64::try_from(value).map_err(StoreError::internal)
    })
}

/// Take the next `n` revisions (at least one); answers the last.
pub(crate) async fn bump_revision_by(conn: Conn<'_>, n: u64) -> Result<u64, StoreError> {
    each_backend!(conn, |conn| {
        let n = i64::try_from(n.max(1)).map_err(StoreError::internal)?;
        let value: i64 =
            sqlx::query_scalar("UPDATE revision_counter SET value = value + $1 WHERE id = 1 RETURNING value")
                .bind(n)
                .fetch_one(&mut *conn)
                .await?;
        u64::try_from(value).map_err(StoreError::internal)
    })
}

/// A new person's name and external id, written by an import.
pub(crate) async fn set_imported_person(
    conn: Conn<'_>,
    person: PersonId,
    name: &str,
    external_id: &str,
) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        sqlx::query("UPDATE people SET name = $1, external_id = $2 WHERE id = $3")
            .bind(name)
            .bind(external_id)
            .bind(i64::from(person.0))
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

/// The newest committed revision.
pub(crate) async fn head(conn: Conn<'_>) -> Result<u64, StoreError> {
    each_backend!(conn, |conn| {
        let value: i64 = sqlx::query_scalar("SELECT value FROM revision_counter WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        u64::try_from(value).map_err(StoreError::internal)
    })
}

/// Change-log rows after `after`, in revision order.
pub(crate) async fn changes_after(conn: Conn<'_>, after: u64, limit: i64) -> Result<Vec<(u64, String)>, StoreError> {
    each_backend!(conn, |conn| {
        let after = i64::try_from(after).map_err(StoreError::internal)?;
        let rows =
            sqlx::query("SELECT revision, change FROM change_log WHERE revision > $1 ORDER BY revision LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
        rows.iter()
            .map(|r| {
                let rev: i64 = r.col(0)?;
                let text: String = r.col(1)?;
                Ok((u64::try_from(rev).map_err(StoreError::internal)?, text))
            })
            .collect()
    })
}

/// Every revision number in the change log, for contiguity checks.
pub(crate) async fn revisions(conn: Conn<'_>) -> Result<Vec<u64>, StoreError> {
    each_backend!(conn, |conn| {
        let revs: Vec<i64> = sqlx::query_scalar("SELECT revision FROM change_log ORDER BY revision")
            .fetch_all(&mut *conn)
            .await?;
        revs.into_iter()
            .map(|r| u64::try_from(r).map_err(StoreError::internal))
            .collect()
    })
}

pub(crate) async fn insert_change_log(
    conn: Conn<'_>,
    revision: u64,
    at: i64,
    actor: &str,
    text: &str,
) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        sqlx::query("INSERT INTO change_log (revision, at, actor, change) VALUES ($1, $2, $3, $4)")
            .bind(i64::try_from(revision).map_err(StoreError::internal)?)
            .bind(at)
            .bind(actor)
            .bind(text)
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

#[expect(clippy::too_many_arguments, reason = "one column each")]
pub(crate) async fn insert_audit(
    conn: Conn<'_>,
    revision: Option<u64>,
    at: i64,
    actor: &str,
    action: &str,
    entity: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        let revision = revision
            .map(|r| i64::try_from(r).map_err(StoreError::internal))
            .transpose()?;
        sqlx::query(
            "INSERT INTO audit_log (revision, at, actor, action, entity, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(revision)
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(entity)
        .bind(before)
        .bind(after)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

/// Queue event `kind` of `site` for the notification worker, in the caller's
/// transaction: the notify plugin and the site's webhooks see it once it commits.
/// `data` is a JSON object; the row's payload is the event as webhooks receive it,
/// less its id (the row's own, added when it is expanded).
pub(crate) async fn enqueue_event(
    conn: Conn<'_>,
    site: SiteId,
    kind: &str,
    at: i64,
    queued_at: i64,
    data: serde_json::Value,
) -> Result<i64, StoreError> {
    each_backend!(conn, |conn| {
        let payload = serde_json::json!({
            "type": kind, "site": site.0, "created_at": at, "data": data,
        })
        .to_string();
        Ok(sqlx::query_scalar(
            "INSERT INTO notification_outbox (site, channel, target, payload, created_at, next_attempt_at) \
             VALUES ($1, 'event', $2, $3, $4, $4) RETURNING id",
        )
        .bind(i64::from(site.0))
        .bind(kind)
        .bind(&payload)
        .bind(queued_at)
        .fetch_one(&mut *conn)
        .await?)
    })
}

/// Audit rows, oldest first.
pub(crate) async fn audit(conn: Conn<'_>, entity: Option<&str>) -> Result<Vec<crate::AuditRow>, StoreError> {
    each_backend!(conn, |conn| {
        let rows = sqlx::query(
            "SELECT id, revision, at, actor, action, entity, before, after FROM audit_log \
             WHERE ($1 IS NULL OR entity = $1) ORDER BY id",
        )
        .bind(entity)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::AuditRow {
                    id: r.col(0)?,
                    revision: r
                        .col::<Option<i64>>(1)?
                        .map(|v| u64::try_from(v).map_err(StoreError::internal))
                        .transpose()?
                        .map(keyway_core::Revision),
                    at: crate::dispatch::seconds_to_time(r.col(2)?)?,
                    actor: r.col(3)?,
                    action: r.col(4)?,
                    entity: r.col(5)?,
                    before: r.col(6)?,
                    after: r.col(7)?,
                })
            })
            .collect()
    })
}

/// The smallest unused id of a table (writers are serialised, so this is race-free).
pub(crate) async fn next_id(conn: Conn<'_>, table: &str) -> Result<u32, StoreError> {
    each_backend!(conn, |conn| {
        let sql = format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}");
        let id: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *conn).await?;
        id32(id, table)
    })
}

/// Wake other nodes' followers when this transaction commits (PostgreSQL only).
pub(crate) async fn notify(conn: Conn<'_>, revision: u64) -> Result<(), StoreError> {
    if let Conn::Postgres(conn) = conn {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::store::CHANNEL)
            .bind(revision.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

// ---- rows to records -------------------------------------------------------

fn site_from(r: &impl Columns) -> Result<Record, StoreError> {
    let zone: String = r.col(1)?;
    Ok(Record::Site(SiteRecord {
        id: SiteId(id32(r.col(0)?, "site")?),
        time_zone: codec::zone(&zone)?,
        holiday_calendar: opt_id32(r.col(2)?, "calendar")?.map(CalendarId),
        lockdown: r.col(3)?,
    }))
}

fn calendar_from(r: &impl Columns) -> Result<Record, StoreError> {
    let dates: String = r.col(1)?;
    let dates: Vec<String> = serde_json::from_str(&dates).map_err(StoreError::internal)?;
    Ok(Record::Calendar(codec::calendar_record(&codec::CalendarDto {
        id: id32(r.col(0)?, "calendar")?,
        dates,
    })?))
}

fn iq_from(r: &impl Columns) -> Result<Record, StoreError> {
    Ok(Record::Iq(IqRecord {
        id: IqId(id32(r.col(0)?, "iq")?),
        site: SiteId(id32(r.col(1)?, "site")?),
    }))
}

fn schedule_from(r: &impl Columns) -> Result<Record, StoreError> {
    let periods: String = r.col(2)?;
    let periods: Vec<PeriodDto> = serde_json::from_str(&periods).map_err(StoreError::internal)?;
    let first: Option<String> = r.col(3)?;
    let last: Option<String> = r.col(4)?;
    Ok(Record::Schedule(ScheduleRecord {
        id: ScheduleId(id32(r.col(0)?, "schedule")?),
        site: SiteId(id32(r.col(1)?, "site")?),
        schedule: codec::schedule(&periods, first.as_deref(), last.as_deref())?,
    }))
}

fn door_from(r: &impl Columns) -> Result<Record, StoreError> {
    let mode: String = r.col(3)?;
    let mode_schedule = opt_id32(r.col(4)?, "schedule")?;
    let mode = match (mode.as_str(), mode_schedule) {
        ("normal", _) => DoorMode::Normal,
        ("office", _) => DoorMode::Office,
        ("office_scheduled", Some(s)) => DoorMode::OfficeScheduled(ScheduleId(s)),
        (other, _) => return Err(StoreError::internal(format!("unknown door mode `{other}`"))),
    };
    Ok(Record::Door(DoorRecord {
        id: DoorId(id32(r.col(0)?, "door")?),
        site: SiteId(id32(r.col(1)?, "site")?),
        iq: opt_id32(r.col(2)?, "iq")?.map(IqId),
        mode,
        lockdown: r.col(5)?,
    }))
}

fn person_from(r: &impl Columns) -> Result<Record, StoreError> {
    let role: i64 = r.col(2)?;
    Ok(Record::Person(PersonRecord {
        id: PersonId(id32(r.col(0)?, "person")?),
        site: SiteId(id32(r.col(1)?, "site")?),
        role: RoleId(u16::try_from(role).map_err(StoreError::internal)?),
        blocked: r.col(3)?,
    }))
}

fn credential_from(r: &impl Columns) -> Result<Record, StoreError> {
    Ok(Record::Credential(CredentialRecord {
        id: CredentialId(id32(r.col(0)?, "credential")?),
        site: SiteId(id32(r.col(1)?, "site")?),
        kind: codec::kind_from_code(r.col(2)?)?,
        secret: r.col(3)?,
        owner: opt_id32(r.col(4)?, "person")?.map(PersonId),
        valid_from: r.col::<Option<i64>>(5)?.map(codec::timestamp).transpose()?,
        valid_until: r.col::<Option<i64>>(6)?.map(codec::timestamp).transpose()?,
        offline_access: r.col(7)?,
        revoked: r.col(8)?,
    }))
}

/// A table read row by row into records: its `SELECT` and its row decoder.
#[derive(Clone, Copy)]
enum Table {
    Site,
    Calendar,
    Iq,
    Schedule,
    Door,
    Person,
    Credential,
}

impl Table {
    fn select(self) -> &'static str {
        match self {
            Table::Site => "SELECT id, time_zone, holiday_calendar, lockdown FROM sites",
            Table::Calendar => "SELECT id, dates FROM calendars",
            Table::Iq => "SELECT id, site FROM iqs",
            Table::Schedule => "SELECT id, site, periods, date_first, date_last FROM schedules",
            Table::Door => "SELECT id, site, iq, mode, mode_schedule, lockdown FROM doors",
            Table::Person => "SELECT id, site, role, blocked FROM people",
            Table::Credential => {
                "SELECT id, site, kind, secret, owner, valid_from, valid_until, offline_access, revoked \
                 FROM credentials"
            }
        }
    }

    fn decode(self, r: &impl Columns) -> Result<Record, StoreError> {
        match self {
            Table::Site => site_from(r),
            Table::Calendar => calendar_from(r),
            Table::Iq => iq_from(r),
            Table::Schedule => schedule_from(r),
            Table::Door => door_from(r),
            Table::Person => person_from(r),
            Table::Credential => credential_from(r),
        }
    }
}

/// Every row of `table`, in id order.
async fn load_table(conn: Conn<'_>, table: Table, out: &mut Vec<Record>) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        let sql = format!("{} ORDER BY id", table.select());
        let mut rows = sqlx::query(&sql).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            out.push(table.decode(&row)?);
        }
        Ok(())
    })
}

/// Rows per chunk of a bulk read.
const BULK_CHUNK: i64 = 20_000;

/// Read a big table (people, credentials) in chunks of [`BULK_CHUNK`] rows, each
/// chunk aggregated by the database into one JSON array of row arrays. Going
/// through the driver once per chunk rather than once per row makes the start-up
/// read several times faster (sqlx decodes each row into owned values on its
/// worker thread and hands it over a channel: microseconds a row, at 1M rows).
/// `columns` lists the JSON array's elements; booleans must be given as 0/1 and
/// blobs as hex, so both backends produce the same JSON.
async fn load_bulk<T: serde::de::DeserializeOwned>(
    conn: Conn<'_>,
    table: &str,
    columns: &str,
    mut convert: impl FnMut(T) -> Result<Record, StoreError>,
    out: &mut Vec<Record>,
) -> Result<(), StoreError> {
    each_backend!(conn, |conn, ops| {
        let sql = if ops::PG {
            format!(
                "SELECT COALESCE(json_agg(json_build_array({columns}))::text, '[]'), max(id) \
                 FROM (SELECT * FROM {table} WHERE id > $1 ORDER BY id LIMIT $2) AS chunk"
            )
        } else {
            format!(
                "SELECT json_group_array(json_array({columns})), max(id) \
                 FROM (SELECT * FROM {table} WHERE id > $1 ORDER BY id LIMIT $2)"
            )
        };
        // Ids start at 0.
        let mut after = -1i64;
        loop {
            let row = sqlx::query(&sql)
                .bind(after)
                .bind(BULK_CHUNK)
                .fetch_one(&mut *conn)
                .await?;
            let Some(last) = row.col::<Option<i64>>(1)? else {
                return Ok(());
            };
            let text: String = row.col(0)?;
            let rows: Vec<T> = serde_json::from_str(&text)
                .map_err(|e| StoreError::internal(format!("bulk read of `{table}`: {e}")))?;
            out.reserve(rows.len());
            for r in rows {
                out.push(convert(r)?);
            }
            after = last;
        }
    })
}

/// A boolean column as 0/1 in both dialects.
fn as_int(column: &str) -> String {
    format!("CASE WHEN {column} THEN 1 ELSE 0 END")
}

async fn load_people(conn: Conn<'_>, out: &mut Vec<Record>) -> Result<(), StoreError> {
    let columns = format!("id, site, role, {}", as_int("blocked"));
    load_bulk(
        conn,
        "people",
        &columns,
        |(id, site, role, blocked): (i64, i64, i64, u8)| {
            Ok(Record::Person(PersonRecord {
                id: PersonId(id32(id, "person")?),
                site: SiteId(id32(site, "site")?),
                role: RoleId(u16::try_from(role).map_err(StoreError::internal)?),
                blocked: blocked != 0,
            }))
        },
        out,
    )
    .await
}

async fn load_credentials(conn: Conn<'_>, out: &mut Vec<Record>) -> Result<(), StoreError> {
    type Row = (i64, i64, i64, String, Option<i64>, Option<i64>, Option<i64>, u8, u8);
    let secret = if matches!(conn, Conn::Postgres(_)) {
        "encode(secret, 'hex')"
    } else {
        "hex(secret)"
    };
    let columns = format!(
        "id, site, kind, {secret}, owner, valid_from, valid_until, {}, {}",
        as_int("offline_access"),
        as_int("revoked")
    );
    load_bulk(
        conn,
        "credentials",
        &columns,
        |r: Row| {
            let (id, site, kind, secret, owner, valid_from, valid_until, offline_access, revoked) = r;
            Ok(Record::Credential(CredentialRecord {
                id: CredentialId(id32(id, "credential")?),
                site: SiteId(id32(site, "site")?),
                kind: codec::kind_from_code(kind)?,
                secret: hex::decode(&secret).map_err(StoreError::internal)?,
                owner: opt_id32(owner, "person")?.map(PersonId),
                valid_from: valid_from.map(codec::timestamp).transpose()?,
                valid_until: valid_until.map(codec::timestamp).transpose()?,
                offline_access: offline_access != 0,
                revoked: revoked != 0,
            }))
        },
        out,
    )
    .await
}

async fn load_groups(conn: Conn<'_>, only: Option<u32>, out: &mut Vec<Record>) -> Result<(), StoreError> {
    each_backend!(conn, |conn, ops| {
        let filter = if only.is_some() { " WHERE group_id = $1" } else { "" };
        let mut groups: Vec<GroupRecord> = Vec::new();
        let mut index: HashMap<u32, usize> = HashMap::new();
        {
            let sql = format!(
                "SELECT id, site, schedule FROM access_groups{} ORDER BY id",
                if only.is_some() { " WHERE id = $1" } else { "" }
            );
            let mut q = sqlx::query(&sql);
            if let Some(id) = only {
                q = q.bind(i64::from(id));
            }
            let mut rows = q.fetch(&mut *conn);
            while let Some(r) = rows.try_next().await? {
                let id = id32(r.col(0)?, "group")?;
                index.insert(id, groups.len());
                groups.push(GroupRecord {
                    id: GroupId(id),
                    site: SiteId(id32(r.col(1)?, "site")?),
                    doors: Vec::new(),
                    schedule: opt_id32(r.col(2)?, "schedule")?.map(ScheduleId),
                    members: Vec::new(),
                });
            }
        }
        // One row per group with its ids aggregated: millions of membership rows
        // would otherwise dominate the start-up load.
        for (table, column) in [("group_doors", "door"), ("group_members", "person")] {
            let agg = if ops::PG {
                format!("string_agg({column}::text, ',')")
            } else {
                format!("group_concat({column}, ',')")
            };
            let sql = format!("SELECT group_id, {agg} FROM {table}{filter} GROUP BY group_id");
            let mut q = sqlx::query(&sql);
            if let Some(id) = only {
                q = q.bind(i64::from(id));
            }
            let mut rows = q.fetch(&mut *conn);
            while let Some(r) = rows.try_next().await? {
                let g = id32(r.col(0)?, "group")?;
                let list: String = r.col(1)?;
                let mut ids = list
                    .split(',')
                    .map(|v| v.parse::<u32>().map_err(StoreError::internal))
                    .collect::<Result<Vec<u32>, _>>()?;
                ids.sort_unstable();
                if let Some(group) = index.get(&g).and_then(|i| groups.get_mut(*i)) {
                    if column == "door" {
                        group.doors = ids.into_iter().map(DoorId).collect();
                    } else {
                        group.members = ids.into_iter().map(PersonId).collect();
                    }
                }
            }
        }
        out.extend(groups.into_iter().map(Record::Group));
        Ok(())
    })
}

async fn load_roles(conn: Conn<'_>) -> Result<RoleFlags, StoreError> {
    each_backend!(conn, |conn| {
        let roles: Vec<i64> = sqlx::query_scalar("SELECT role FROM role_flags WHERE lockdown_exempt ORDER BY role")
            .fetch_all(&mut *conn)
            .await?;
        Ok(RoleFlags {
            lockdown_exempt: roles
                .into_iter()
                .map(|r| u16::try_from(r).map(RoleId).map_err(StoreError::internal))
                .collect::<Result<_, _>>()?,
        })
    })
}

/// `parts` of the model and the revision they are at, read in one transaction (on
/// PostgreSQL a repeatable-read one; SQLite's reader sees one state from its first read).
pub(crate) async fn load(conn: Conn<'_>, parts: &[Part]) -> Result<(u64, Vec<Record>), StoreError> {
    each_backend!(conn, |conn, ops| {
        let mut tx = sqlx::Connection::begin(conn).await?;
        if ops::PG {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let head = head(Conn::from(&mut *tx)).await?;
        let mut out = Vec::new();
        for part in parts {
            load_part(Conn::from(&mut *tx), *part, &mut out).await?;
        }
        tx.commit().await?;
        Ok((head, out))
    })
}

async fn load_part(mut conn: Conn<'_>, part: Part, out: &mut Vec<Record>) -> Result<(), StoreError> {
    match part {
        Part::Structure => {
            for table in [Table::Calendar, Table::Site, Table::Iq, Table::Schedule, Table::Door] {
                load_table(conn.reborrow(), table, out).await?;
            }
            load_groups(conn.reborrow(), None, out).await?;
            out.push(Record::Roles(load_roles(conn).await?));
        }
        Part::People => load_people(conn, out).await?,
        Part::Credentials => load_credentials(conn, out).await?,
    }
    Ok(())
}

async fn load_one(conn: Conn<'_>, table: Table, id: u32) -> Result<Option<Record>, StoreError> {
    each_backend!(conn, |conn| {
        let sql = format!("{} WHERE id = $1", table.select());
        let row = sqlx::query(&sql).bind(i64::from(id)).fetch_optional(&mut *conn).await?;
        row.as_ref().map(|r| table.decode(r)).transpose()
    })
}

/// One record, as the database holds it now.
pub(crate) async fn load_record(mut conn: Conn<'_>, target: Target) -> Result<Option<Record>, StoreError> {
    match target {
        Target::Site(id) => load_one(conn.reborrow(), Table::Site, id.0).await,
        Target::Calendar(id) => load_one(conn.reborrow(), Table::Calendar, id.0).await,
        Target::Iq(id) => load_one(conn.reborrow(), Table::Iq, id.0).await,
        Target::Schedule(id) => load_one(conn.reborrow(), Table::Schedule, id.0).await,
        Target::Door(id) => load_one(conn.reborrow(), Table::Door, id.0).await,
        Target::Person(id) => load_one(conn.reborrow(), Table::Person, id.0).await,
        Target::Credential(id) => load_one(conn.reborrow(), Table::Credential, id.0).await,
        Target::Group(id) => {
            let mut out = Vec::new();
            load_groups(conn.reborrow(), Some(id.0), &mut out).await?;
            Ok(out.pop())
        }
        Target::Roles => Ok(Some(Record::Roles(load_roles(conn.reborrow()).await?))),
    }
}

// ---- writing changes -------------------------------------------------------

async fn exec(conn: Conn<'_>, sql: &str, ids: &[i64]) -> Result<u64, StoreError> {
    each_backend!(conn, |conn| {
        let mut q = sqlx::query(sql);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.execute(&mut *conn).await?.rows_affected())
    })
}

fn mode_cols(mode: DoorMode) -> (&'static str, Option<i64>) {
    match mode {
        DoorMode::Normal => ("normal", None),
        DoorMode::Office => ("office", None),
        DoorMode::OfficeScheduled(s) => ("office_scheduled", Some(i64::from(s.0))),
    }
}

async fn put_site(conn: Conn<'_>, r: &SiteRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        sqlx::query(
            "INSERT INTO sites (id, time_zone, holiday_calendar, lockdown) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET time_zone = excluded.time_zone, \
             holiday_calendar = excluded.holiday_calendar, lockdown = excluded.lockdown",
        )
        .bind(i64::from(r.id.0))
        .bind(codec::zone_name(&r.time_zone)?)
        .bind(r.holiday_calendar.map(|c| i64::from(c.0)))
        .bind(r.lockdown)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

async fn put_calendar(conn: Conn<'_>, r: &CalendarRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        let dates = serde_json::to_string(&codec::calendar_dto(r).dates).map_err(StoreError::internal)?;
        sqlx::query(
            "INSERT INTO calendars (id, dates) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET dates = excluded.dates",
        )
        .bind(i64::from(r.id.0))
        .bind(dates)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

async fn put_iq(conn: Conn<'_>, r: &IqRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        sqlx::query("INSERT INTO iqs (id, site) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET site = excluded.site")
            .bind(i64::from(r.id.0))
            .bind(i64::from(r.site.0))
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

async fn put_schedule(conn: Conn<'_>, r: &ScheduleRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        let d = codec::schedule_dto(r);
        let periods = serde_json::to_string(&d.periods).map_err(StoreError::internal)?;
        sqlx::query(
            "INSERT INTO schedules (id, site, periods, date_first, date_last) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET site = excluded.site, periods = excluded.periods, \
             date_first = excluded.date_first, date_last = excluded.date_last",
        )
        .bind(i64::from(r.id.0))
        .bind(i64::from(r.site.0))
        .bind(periods)
        .bind(d.date_first)
        .bind(d.date_last)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

async fn put_door(conn: Conn<'_>, r: &DoorRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        let (mode, mode_schedule) = mode_cols(r.mode);
        sqlx::query(
            "INSERT INTO doors (id, site, iq, mode, mode_schedule, lockdown) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET site = excluded.site, iq = excluded.iq, mode = excluded.mode, \
             mode_schedule = excluded.mode_schedule, lockdown = excluded.lockdown",
        )
        .bind(i64::from(r.id.0))
        .bind(i64::from(r.site.0))
        .bind(r.iq.map(|i| i64::from(i.0)))
        .bind(mode)
        .bind(mode_schedule)
        .bind(r.lockdown)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

async fn put_person(conn: Conn<'_>, r: &PersonRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        sqlx::query(
            "INSERT INTO people (id, site, role, blocked) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET site = excluded.site, role = excluded.role, \
             blocked = excluded.blocked",
        )
        .bind(i64::from(r.id.0))
        .bind(i64::from(r.site.0))
        .bind(i64::from(r.role.0))
        .bind(r.blocked)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

async fn put_credential(conn: Conn<'_>, r: &CredentialRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn| {
        sqlx::query(
            "INSERT INTO credentials (id, site, kind, secret, owner, valid_from, valid_until, offline_access, \
             revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET site = excluded.site, kind = excluded.kind, \
             secret = excluded.secret, owner = excluded.owner, valid_from = excluded.valid_from, \
             valid_until = excluded.valid_until, offline_access = excluded.offline_access, \
             revoked = excluded.revoked",
        )
        .bind(i64::from(r.id.0))
        .bind(i64::from(r.site.0))
        .bind(i64::from(codec::kind_code(r.kind)))
        .bind(r.secret.as_slice())
        .bind(r.owner.map(|p| i64::from(p.0)))
        .bind(r.valid_from.map(jiff::Timestamp::as_second))
        .bind(r.valid_until.map(jiff::Timestamp::as_second))
        .bind(r.offline_access)
        .bind(r.revoked)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

async fn put_group(conn: Conn<'_>, r: &GroupRecord) -> Result<(), StoreError> {
    each_backend!(conn, |conn, ops| {
        let id = i64::from(r.id.0);
        sqlx::query(
            "INSERT INTO access_groups (id, site, schedule) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET site = excluded.site, schedule = excluded.schedule",
        )
        .bind(id)
        .bind(i64::from(r.site.0))
        .bind(r.schedule.map(|s| i64::from(s.0)))
        .execute(&mut *conn)
        .await?;
        exec(
            Conn::from(&mut *conn),
            "DELETE FROM group_doors WHERE group_id = $1",
            &[id],
        )
        .await?;
        exec(
            Conn::from(&mut *conn),
            "DELETE FROM group_members WHERE group_id = $1",
            &[id],
        )
        .await?;
        let mut doors: Vec<u32> = r.doors.iter().map(|d| d.0).collect();
        doors.sort_unstable();
        doors.dedup();
        for chunk in doors.chunks(1000) {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new("INSERT INTO group_doors (group_id, door) ");
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(id).push_bind(i64::from(*d));
            });
            qb.build().execute(&mut *conn).await?;
        }
        let mut members: Vec<u32> = r.members.iter().map(|p| p.0).collect();
        members.sort_unstable();
        members.dedup();
        for chunk in members.chunks(1000) {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new("INSERT INTO group_members (group_id, person) ");
            qb.push_values(chunk, |mut b, p| {
                b.push_bind(id).push_bind(i64::from(*p));
            });
            qb.build().execute(&mut *conn).await?;
        }
        Ok(())
    })
}

async fn set_roles(mut conn: Conn<'_>, flags: &RoleFlags) -> Result<(), StoreError> {
    exec(conn.reborrow(), "DELETE FROM role_flags", &[]).await?;
    let mut roles: Vec<u16> = flags.lockdown_exempt.iter().map(|r| r.0).collect();
    roles.sort_unstable();
    roles.dedup();
    for role in roles {
        exec(
            conn.reborrow(),
            "INSERT INTO role_flags (role, lockdown_exempt) VALUES ($1, TRUE)",
            &[i64::from(role)],
        )
        .await?;
    }
    Ok(())
}

/// Write `change` to the entity tables. The core has already accepted it against a
/// snapshot at the previous revision; the database's constraints back that up.
pub(crate) async fn write_change(mut conn: Conn<'_>, change: &Change) -> Result<(), StoreError> {
    let affected = match change {
        Change::BlockPerson(p) => {
            exec(
                conn.reborrow(),
                "UPDATE people SET blocked = TRUE WHERE id = $1",
                &[i64::from(p.0)],
            )
            .await?
        }
        Change::UnblockPerson(p) => {
            exec(
                conn.reborrow(),
                "UPDATE people SET blocked = FALSE WHERE id = $1",
                &[i64::from(p.0)],
            )
            .await?
        }
        Change::RevokeCredential(c) => {
            exec(
                conn.reborrow(),
                "UPDATE credentials SET revoked = TRUE WHERE id = $1",
                &[i64::from(c.0)],
            )
            .await?
        }
        Change::RestoreCredential(c) => {
            exec(
                conn.reborrow(),
                "UPDATE credentials SET revoked = FALSE WHERE id = $1",
                &[i64::from(c.0)],
            )
            .await?
        }
        Change::PutCredential(r) => {
            put_credential(conn.reborrow(), r).await?;
            1
        }
        Change::RemoveCredential(c) => {
            exec(
                conn.reborrow(),
                "DELETE FROM credentials WHERE id = $1",
                &[i64::from(c.0)],
            )
            .await?
        }
        Change::Grant { person, group } => {
            exec(
                conn.reborrow(),
                "INSERT INTO group_members (group_id, person) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[i64::from(group.0), i64::from(person.0)],
            )
            .await?;
            1
        }
        Change::Ungrant { person, group } => {
            exec(
                conn.reborrow(),
                "DELETE FROM group_members WHERE group_id = $1 AND person = $2",
                &[i64::from(group.0), i64::from(person.0)],
            )
            .await?;
            1
        }
        Change::PutPerson(r) => {
            put_person(conn.reborrow(), r).await?;
            1
        }
        Change::RemovePerson(p) => exec(conn.reborrow(), "DELETE FROM people WHERE id = $1", &[i64::from(p.0)]).await?,
        Change::PutDoor(r) => {
            put_door(conn.reborrow(), r).await?;
            1
        }
        Change::RemoveDoor(d) => exec(conn.reborrow(), "DELETE FROM doors WHERE id = $1", &[i64::from(d.0)]).await?,
        Change::SetDoorMode { door, mode } => {
            let (mode, schedule) = mode_cols(*mode);
            each_backend!(conn.reborrow(), |conn| {
                sqlx::query("UPDATE doors SET mode = $1, mode_schedule = $2 WHERE id = $3")
                    .bind(mode)
                    .bind(schedule)
                    .bind(i64::from(door.0))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            })
        }
        Change::SetDoorLockdown { door, on } => each_backend!(conn.reborrow(), |conn| {
            sqlx::query("UPDATE doors SET lockdown = $1 WHERE id = $2")
                .bind(*on)
                .bind(i64::from(door.0))
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }),
        Change::SetSiteLockdown { site, on } => each_backend!(conn.reborrow(), |conn| {
            sqlx::query("UPDATE sites SET lockdown = $1 WHERE id = $2")
                .bind(*on)
                .bind(i64::from(site.0))
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }),
        Change::PutGroup(r) => {
            put_group(conn.reborrow(), r).await?;
            1
        }
        Change::RemoveGroup(g) => {
            exec(
                conn.reborrow(),
                "DELETE FROM access_groups WHERE id = $1",
                &[i64::from(g.0)],
            )
            .await?
        }
        Change::PutSchedule(r) => {
            put_schedule(conn.reborrow(), r).await?;
            1
        }
        Change::RemoveSchedule(s) => {
            exec(
                conn.reborrow(),
                "DELETE FROM schedules WHERE id = $1",
                &[i64::from(s.0)],
            )
            .await?
        }
        Change::PutIq(r) => {
            put_iq(conn.reborrow(), r).await?;
            1
        }
        Change::RemoveIq(iq) => exec(conn.reborrow(), "DELETE FROM iqs WHERE id = $1", &[i64::from(iq.0)]).await?,
        Change::PutSite(r) => {
            put_site(conn.reborrow(), r).await?;
            1
        }
        Change::PutCalendar(r) => {
            put_calendar(conn.reborrow(), r).await?;
            1
        }
        Change::SetRoles(flags) => {
            set_roles(conn.reborrow(), flags).await?;
            1
        }
    };
    if affected == 0 {
        return Err(StoreError::NotFound {
            entity: Target::of(change).to_string(),
        });
    }
    Ok(())
}

/// Insert a whole model in bulk, table by table, referenced tables first, with
/// multi-row statements for the big ones.
pub(crate) async fn import(conn: Conn<'_>, records: &[Record]) -> Result<(), StoreError> {
    each_backend!(conn, |conn, ops| {
        let mut iqs = Vec::new();
        let mut doors = Vec::new();
        let mut people = Vec::new();
        let mut credentials = Vec::new();
        let mut groups = Vec::new();
        let mut roles = None;
        for r in records {
            match r {
                Record::Calendar(c) => put_calendar(Conn::from(&mut *conn), c).await?,
                Record::Iq(i) => iqs.push(i),
                Record::Door(d) => doors.push(d),
                Record::Person(p) => people.push(p),
                Record::Credential(c) => credentials.push(c),
                Record::Group(g) => groups.push(g),
                Record::Roles(f) => roles = Some(f),
                Record::Site(_) | Record::Schedule(_) => {}
            }
        }
        for r in records {
            if let Record::Site(s) = r {
                put_site(Conn::from(&mut *conn), s).await?;
            }
        }
        for r in records {
            if let Record::Schedule(s) = r {
                put_schedule(Conn::from(&mut *conn), s).await?;
            }
        }
        for chunk in iqs.chunks(8000) {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new("INSERT INTO iqs (id, site) ");
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(i64::from(i.id.0)).push_bind(i64::from(i.site.0));
            });
            qb.build().execute(&mut *conn).await?;
        }
        for chunk in doors.chunks(3000) {
            let mut qb =
                sqlx::QueryBuilder::<ops::Db>::new("INSERT INTO doors (id, site, iq, mode, mode_schedule, lockdown) ");
            qb.push_values(chunk, |mut b, d| {
                let (mode, schedule) = mode_cols(d.mode);
                b.push_bind(i64::from(d.id.0))
                    .push_bind(i64::from(d.site.0))
                    .push_bind(d.iq.map(|i| i64::from(i.0)))
                    .push_bind(mode)
                    .push_bind(schedule)
                    .push_bind(d.lockdown);
            });
            qb.build().execute(&mut *conn).await?;
        }
        for chunk in people.chunks(4000) {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new("INSERT INTO people (id, site, role, blocked) ");
            qb.push_values(chunk, |mut b, p| {
                b.push_bind(i64::from(p.id.0))
                    .push_bind(i64::from(p.site.0))
                    .push_bind(i64::from(p.role.0))
                    .push_bind(p.blocked);
            });
            qb.build().execute(&mut *conn).await?;
        }
        for chunk in credentials.chunks(2000) {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new(
                "INSERT INTO credentials (id, site, kind, secret, owner, valid_from, valid_until, \
                 offline_access, revoked) ",
            );
            qb.push_values(chunk, |mut b, c| {
                b.push_bind(i64::from(c.id.0))
                    .push_bind(i64::from(c.site.0))
                    .push_bind(i64::from(codec::kind_code(c.kind)))
                    .push_bind(c.secret.clone())
                    .push_bind(c.owner.map(|p| i64::from(p.0)))
                    .push_bind(c.valid_from.map(jiff::Timestamp::as_second))
                    .push_bind(c.valid_until.map(jiff::Timestamp::as_second))
                    .push_bind(c.offline_access)
                    .push_bind(c.revoked);
            });
            qb.build().execute(&mut *conn).await?;
        }
        for chunk in groups.chunks(8000) {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new("INSERT INTO access_groups (id, site, schedule) ");
            qb.push_values(chunk, |mut b, g| {
                b.push_bind(i64::from(g.id.0))
                    .push_bind(i64::from(g.site.0))
                    .push_bind(g.schedule.map(|s| i64::from(s.0)));
            });
            qb.build().execute(&mut *conn).await?;
        }
        let mut pairs: Vec<(i64, i64)> = Vec::new();
        for (table, column, doors) in [("group_doors", "door", true), ("group_members", "person", false)] {
            pairs.clear();
            for g in &groups {
                let mut ids: Vec<u32> = if doors {
                    g.doors.iter().map(|d| d.0).collect()
                } else {
                    g.members.iter().map(|p| p.0).collect()
                };
                ids.sort_unstable();
                ids.dedup();
                pairs.extend(ids.into_iter().map(|id| (i64::from(g.id.0), i64::from(id))));
            }
            for chunk in pairs.chunks(8000) {
                let mut qb = sqlx::QueryBuilder::<ops::Db>::new(format!("INSERT INTO {table} (group_id, {column}) "));
                qb.push_values(chunk, |mut b, (g, id)| {
                    b.push_bind(*g).push_bind(*id);
                });
                qb.build().execute(&mut *conn).await?;
            }
        }
        if let Some(flags) = roles {
            set_roles(Conn::from(&mut *conn), flags).await?;
        }
        Ok(())
    })
}
