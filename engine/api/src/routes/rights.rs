//! Rights: schedules (up to 8 periods and a date range), access groups (doors, a
//! schedule, members), and the entries log by site with filters and a cursor.
//!
//! | action | needs |
//! |--------|-------|
//! | create or remove schedules; create, replace or remove groups | `rights.grant` |
//! | list groups | membership |
//! | read every entry of the site | `entries.read_all` |
//! | read one's own entries (those of the person linked to one's membership) | `entries.read_own` |

use crate::auth::{Access, Caller, require};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::offline::{OfflineWatch, PushedOut};
use crate::routes::{Pagination, Revisioned, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::civil::Date;
use keyway_core::{
    Change, DateRange, DaySet, DoorId, GroupId, GroupRecord, MAX_PERIODS, Period, PersonId, Record, Schedule,
    ScheduleId, ScheduleRecord, SiteId,
};
use keyway_plugin_host::Capability;
use keyway_store::{Cursor, EntryQuery, Named, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

// ---------------------------------------------------------------------------------------
// schedules

/// One period of a schedule.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeriodBody {
    /// Day types: `mon` to `sun`, `workdays`, `weekend`, `every_day`, `holiday`.
    pub days: Vec<String>,
    /// Opening time, `HH:MM` on the site's wall clock.
    pub start: String,
    /// Closing time, `HH:MM` (exclusive); before `start` crosses midnight.
    pub end: String,
}

/// A new schedule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSchedule {
    /// 1 to 8 periods.
    pub periods: Vec<PeriodBody>,
    /// The first day it applies, `YYYY-MM-DD` (with `last_date`).
    pub first_date: Option<String>,
    /// The last day it applies, inclusive.
    pub last_date: Option<String>,
}

/// A schedule just made.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedSchedule {
    pub id: u32,
    /// The revision that made it.
    pub revision: u64,
}

fn day_set(name: &str) -> Result<DaySet, ApiError> {
    use jiff::civil::Weekday;
    Ok(match name {
        "mon" => DaySet::weekday(Weekday::Monday),
        "tue" => DaySet::weekday(Weekday::Tuesday),
        "wed" => DaySet::weekday(Weekday::Wednesday),
        "thu" => DaySet::weekday(Weekday::Thursday),
        "fri" => DaySet::weekday(Weekday::Friday),
        "sat" => DaySet::weekday(Weekday::Saturday),
        "sun" => DaySet::weekday(Weekday::Sunday),
        "workdays" => DaySet::WORKDAYS,
        "weekend" => DaySet::WEEKEND,
        "every_day" => DaySet::EVERY_DAY,
        "holiday" => DaySet::HOLIDAY,
        other => {
            return Err(ApiError::invalid(format!(
                "`{other}` is not a day type (mon..sun, workdays, weekend, every_day, holiday)"
            )));
        }
    })
}

fn minute(hm: &str) -> Result<(u16, u16), ApiError> {
    let bad = || ApiError::invalid(format!("`{hm}` is not a time of day (HH:MM)"));
    let (h, m) = hm.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m) = (
        h.parse::<u16>().map_err(|_| bad())?,
        m.parse::<u16>().map_err(|_| bad())?,
    );
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok((h, m))
}

fn date(d: &str) -> Result<Date, ApiError> {
    d.parse::<Date>()
        .map_err(|_| ApiError::invalid(format!("`{d}` is not a date (YYYY-MM-DD)")))
}

pub(crate) fn schedule_of(body: &NewSchedule) -> Result<Schedule, ApiError> {
    if body.periods.is_empty() || body.periods.len() > MAX_PERIODS {
        return Err(ApiError::invalid(format!("a schedule has 1 to {MAX_PERIODS} periods")));
    }
    let mut periods = Vec::with_capacity(body.periods.len());
    for p in &body.periods {
        let mut days = DaySet::EMPTY;
        for d in &p.days {
            days = days.with(day_set(d)?);
        }
        periods.push(Period::hm(days, minute(&p.start)?, minute(&p.end)?));
    }
    let range = match (&body.first_date, &body.last_date) {
        (None, None) => None,
        (Some(f), Some(l)) => Some(DateRange {
            first: date(f)?,
            last: date(l)?,
        }),
        _ => {
            return Err(ApiError::invalid(
                "a date range needs both `first_date` and `last_date`",
            ));
        }
    };
    Schedule::new(periods, range).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Create a schedule.
#[utoipa::path(post, path = "/v1/sites/{site}/schedules", tag = "rights", request_body = NewSchedule,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = CreatedSchedule), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewSchedule>,
) -> Result<(StatusCode, Json<CreatedSchedule>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    let schedule = schedule_of(&body)?;
    let written = state
        .node()
        .store()
        .model()
        .create(
            &caller.actor(),
            Record::Schedule(ScheduleRecord {
                id: ScheduleId(0),
                site,
                schedule,
            }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedSchedule {
            id: written.id.ok_or_else(|| ApiError::internal("no schedule id"))?,
            revision: written.revision.0,
        }),
    ))
}

/// Remove a schedule (refused while a group uses it).
#[utoipa::path(delete, path = "/v1/sites/{site}/schedules/{schedule}", tag = "rights",
    params(("site" = u32, Path, description = "The site"), ("schedule" = u32, Path, description = "The schedule")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn remove_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    match state
        .node()
        .store()
        .model()
        .record(Target::Schedule(ScheduleId(id)))
        .await?
    {
        Some(Record::Schedule(s)) if s.site == site => {}
        _ => {
            return Err(ApiError::not_found(format!(
                "schedule {id} does not exist on site {}",
                site.0
            )));
        }
    }
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::RemoveSchedule(ScheduleId(id)))
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

// ---------------------------------------------------------------------------------------
// groups

/// An access group: its members open its doors while its schedule is open.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupBody {
    pub name: String,
    /// The doors it opens (of this site).
    #[serde(default)]
    pub doors: Vec<u32>,
    /// Its schedule (none: at any time).
    pub schedule: Option<u32>,
    /// Its members (people of this site).
    #[serde(default)]
    pub members: Vec<u32>,
}

/// An access group.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupView {
    pub id: u32,
    pub name: String,
    pub doors: Vec<u32>,
    pub schedule: Option<u32>,
    pub members: Vec<u32>,
}

/// A group just changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupChanged {
    pub group: GroupView,
    /// The revision the change produced.
    pub revision: u64,
    /// Keys this change pushed out of its site's IQ offline lists (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushed_out: Vec<PushedOut>,
}

page_of!(GroupPage, GroupView);

fn group_record(id: GroupId, site: SiteId, body: &GroupBody) -> GroupRecord {
    GroupRecord {
        id,
        site,
        doors: body.doors.iter().map(|d| DoorId(*d)).collect(),
        schedule: body.schedule.map(ScheduleId),
        members: body.members.iter().map(|p| PersonId(*p)).collect(),
    }
}

fn group_view(name: String, g: &GroupRecord) -> GroupView {
    GroupView {
        id: g.id.0,
        name,
        doors: g.doors.iter().map(|d| d.0).collect(),
        schedule: g.schedule.map(|s| s.0),
        members: g.members.iter().map(|p| p.0).collect(),
    }
}

fn group_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > keyway_store::MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "a name has 1 to {} characters and no control characters",
            keyway_store::MAX_NAME
        )));
    }
    Ok(name)
}

async fn group_of(state: &AppState, site: SiteId, id: u32) -> Result<GroupRecord, ApiError> {
    match state.node().store().model().record(Target::Group(GroupId(id))).await? {
        Some(Record::Group(g)) if g.site == site => Ok(g),
        _ => Err(ApiError::not_found(format!(
            "group {id} does not exist on site {}",
            site.0
        ))),
    }
}

/// Create an access group.
#[utoipa::path(post, path = "/v1/sites/{site}/groups", tag = "rights", request_body = GroupBody,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = GroupChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<GroupBody>,
) -> Result<(StatusCode, Json<GroupChanged>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    let name = group_name(&body.name)?;
    let store = state.node().store();
    let record = group_record(GroupId(0), site, &body);
    let watch = OfflineWatch::start(&state, site);
    let written = store
        .model()
        .create(&caller.actor(), Record::Group(record.clone()))
        .await?;
    let id = written.id.ok_or_else(|| ApiError::internal("no group id"))?;
    store
        .names()
        .set(&caller.actor(), Named::Group, id, name, crate::auth::now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(GroupChanged {
            group: group_view(
                name.to_owned(),
                &GroupRecord {
                    id: GroupId(id),
                    ..record
                },
            ),
            revision: written.revision.0,
            pushed_out: watch.pushed_out(&state),
        }),
    ))
}

/// A site's access groups.
#[utoipa::path(get, path = "/v1/sites/{site}/groups", tag = "rights",
    params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = GroupPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<GroupPage>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let names = state.node().store().names().list(Named::Group, Some(site)).await?;
    let (page, next_cursor) = p.page(names, |(id, _)| i64::from(*id))?;
    let mut items = Vec::with_capacity(page.len());
    for (id, name) in page {
        if let Ok(g) = group_of(&state, site, id).await {
            items.push(group_view(name, &g));
        }
    }
    Ok(Json(GroupPage { items, next_cursor }))
}

/// Replace an access group's name, doors, schedule and members.
#[utoipa::path(put, path = "/v1/sites/{site}/groups/{group}", tag = "rights", request_body = GroupBody,
    params(("site" = u32, Path, description = "The site"), ("group" = u32, Path, description = "The group")),
    responses((status = 200, body = GroupChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn replace_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
    Json(body): Json<GroupBody>,
) -> Result<Json<GroupChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    group_of(&state, site, id).await?;
    let name = group_name(&body.name)?;
    let record = group_record(GroupId(id), site, &body);
    let store = state.node().store();
    let watch = OfflineWatch::start(&state, site);
    let revision = store
        .model()
        .write(&caller.actor(), Change::PutGroup(record.clone()))
        .await?;
    let pushed_out = watch.pushed_out(&state);
    store
        .names()
        .set(&caller.actor(), Named::Group, id, name, crate::auth::now())
        .await?;
    Ok(Json(GroupChanged {
        group: group_view(name.to_owned(), &record),
        revision: revision.0,
        pushed_out,
    }))
}

/// Remove an access group.
#[utoipa::path(delete, path = "/v1/sites/{site}/groups/{group}", tag = "rights",
    params(("site" = u32, Path, description = "The site"), ("group" = u32, Path, description = "The group")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn remove_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    group_of(&state, site, id).await?;
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::RemoveGroup(GroupId(id)))
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

// ---------------------------------------------------------------------------------------
// entries

/// Filters of the entries log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EntryFilter {
    /// Only at this door.
    pub door: Option<u32>,
    /// Only this person's.
    pub person: Option<u32>,
    /// From this instant (RFC 3339, inclusive).
    pub from: Option<String>,
    /// Until this instant (RFC 3339, exclusive).
    pub until: Option<String>,
    /// Only allowed (`true`) or refused (`false`) entries.
    pub allowed: Option<bool>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

/// One entry of the log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntryView {
    pub id: i64,
    /// When, RFC 3339.
    pub at: String,
    pub door: u32,
    /// The person, if known.
    pub person: Option<u32>,
    /// The credential, if known.
    pub credential: Option<u32>,
    /// `tag`, `digital_key`, `pin`, ...
    pub method: String,
    /// Whether the door opened.
    pub allowed: bool,
    /// The reason code.
    pub reason: String,
    /// The revision the decision was taken on.
    pub revision: u64,
    /// The door rule that took part, `name@sha256`.
    pub rule: Option<String>,
}

page_of!(EntryPageView, EntryView);

/// An entry as the API shows it.
pub(crate) fn entry_view(e: keyway_store::StoredEntry) -> EntryView {
    EntryView {
        id: e.id.get(),
        at: e.entry.at.to_string(),
        door: e.entry.door.0,
        person: e.entry.person.map(|p| p.0),
        credential: e.entry.credential.map(|c| c.0),
        method: e.entry.method.name().to_owned(),
        allowed: e.entry.allowed,
        reason: e.entry.reason.to_string(),
        revision: e.entry.revision.0,
        rule: e.entry.rule,
    }
}

/// Whose entries of `site` the caller may read, narrowed by the `asked` person filter:
/// `Some(filter)` to read with that filter (`None` inside: everyone's), or `None` when
/// they may read nothing that matches (a caller who may read only their own entries and
/// has no person on the site, or asked for someone else's).
pub(crate) async fn entry_scope(
    state: &AppState,
    caller: &Caller,
    site: SiteId,
    asked: Option<PersonId>,
) -> Result<Option<Option<PersonId>>, ApiError> {
    let m = caller.member(state, Access::Read, site).await?;
    let bundle = state.node().policy().bundle();
    let roles = bundle.roles();
    if roles.can(m.role, Capability::ENTRIES_READ_ALL) {
        return Ok(Some(asked));
    }
    require(roles, &m, Capability::ENTRIES_READ_OWN)?;
    Ok(match m.person {
        Some(own) if asked.is_none_or(|p| p == own) => Some(Some(own)),
        _ => None,
    })
}

/// Filters of the entries log as an [`EntryQuery`] (cursor and limit checked), for
/// `person` as [`entry_scope`] narrowed it.
pub(crate) fn entry_query(site: SiteId, person: Option<PersonId>, f: &EntryFilter) -> Result<EntryQuery, ApiError> {
    let instant = |t: &Option<String>| {
        t.as_ref()
            .map(|s| {
                s.parse::<jiff::Timestamp>()
                    .map_err(|_| ApiError::invalid(format!("`{s}` is not an RFC 3339 time")))
            })
            .transpose()
    };
    let limit = f.limit.unwrap_or(crate::routes::DEFAULT_LIMIT);
    if limit == 0 || limit > crate::routes::MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("`limit` must be 1 to {}", crate::routes::MAX_LIMIT),
        ));
    }
    let cursor = match &f.cursor {
        Some(c) => Some(
            Cursor::parse(c)
                .map_err(|_| ApiError::bad_request("bad_cursor", format!("`{c}` is not a cursor of this list")))?,
        ),
        None => None,
    };
    Ok(EntryQuery {
        site,
        person,
        door: f.door.map(DoorId),
        from: instant(&f.from)?,
        until: instant(&f.until)?,
        allowed: f.allowed,
        cursor,
        limit,
    })
}

/// The site's entries, newest first. A caller who may read only their own entries sees
/// those of the person linked to their membership.
#[utoipa::path(get, path = "/v1/sites/{site}/entries", tag = "rights",
    params(("site" = u32, Path, description = "The site"), EntryFilter),
    responses((status = 200, body = EntryPageView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn list_entries(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(f): Query<EntryFilter>,
) -> Result<Json<EntryPageView>, ApiError> {
    let site = SiteId(site);
    let Some(person) = entry_scope(&state, &caller, site, f.person.map(PersonId)).await? else {
        return Ok(Json(EntryPageView {
            items: Vec::new(),
            next_cursor: None,
        }));
    };
    let query = entry_query(site, person, &f)?;
    let page = state.node().store().entries().query(&query).await?;
    Ok(Json(EntryPageView {
        items: page.entries.into_iter().map(entry_view).collect(),
        next_cursor: page.next.map(Cursor::token),
    }))
}
