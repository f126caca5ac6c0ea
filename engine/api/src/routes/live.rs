//! The entries log beyond a page: the CSV export (streamed page by page, never held in
//! memory whole), the site's retention, incidents, and a live stream of new entries and
//! incidents as Server-Sent Events.
//!
//! The export and the stream are scoped exactly as the entries list: a caller who may
//! read only their own entries gets only those of the person linked to their membership
//! (and no incidents, which belong to nobody).
//!
//! The stream's event ids are `E.I`: the last entry id and incident id sent. A client
//! that reconnects with `Last-Event-ID` gets everything after it, so nothing is missed
//! or repeated across a reconnect (as long as retention kept it). The node polls the
//! log for the stream (every [`POLL`]), which also carries entries other nodes wrote.
//!
//! | action | needs |
//! |--------|-------|
//! | export, stream | as the entries list (`entries.read_all`, or `entries.read_own`) |
//! | read incidents, read retention | `entries.read_all` |
//! | acknowledge incidents, set retention | `door.lockdown` (site administration) |

use crate::auth::{Access, Caller, now};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::rights::{EntryFilter, entry_query, entry_scope, entry_view};
use crate::routes::{DEFAULT_LIMIT, MAX_LIMIT, page_of};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use keyway_core::{DoorId, PersonId, SiteId};
use keyway_plugin_host::Capability;
use keyway_store::{EntryId, Incident, IncidentKind, IncidentQuery};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use utoipa::ToSchema;

/// How often a live stream looks for new entries and incidents.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// The most rows a stream reads per look.
const BATCH: u32 = 500;
/// Entries per page of a CSV export.
const EXPORT_PAGE: u32 = 1000;
/// The longest retention, in days (ten years).
pub(crate) const MAX_RETENTION_DAYS: u32 = 3650;

// ---------------------------------------------------------------------------------------
// export

/// Every entry of the site that the caller may read and the filters match, newest first,
/// as CSV (`text/csv`), streamed page by page. `cursor` and `limit` do not apply.
#[utoipa::path(get, path = "/v1/sites/{site}/entries/export", tag = "rights",
    params(("site" = u32, Path, description = "The site"), EntryFilter),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn export_entries(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(f): Query<EntryFilter>,
) -> Result<Response, ApiError> {
    let site = SiteId(site);
    if f.cursor.is_some() || f.limit.is_some() {
        return Err(ApiError::bad_request(
            "bad_query",
            "an export has every matching entry: `cursor` and `limit` do not apply",
        ));
    }
    let scope = entry_scope(&state, &caller, site, f.person.map(PersonId)).await?;
    let csv = match scope {
        Some(person) => {
            let query = keyway_store::EntryQuery {
                limit: EXPORT_PAGE,
                ..entry_query(site, person, &f)?
            };
            Body::from_stream(state.node().store().entries().export_csv(query))
        }
        None => Body::from(keyway_store::ENTRIES_CSV_HEADER),
    };
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"entries-site-{}.csv\"", site.0)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// retention

/// How long a site keeps its entries.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retention {
    /// Days, 1 to 3650. Entries older than this are deleted (checked every hour).
    pub days: u32,
}

/// How long the site keeps its entries.
#[utoipa::path(get, path = "/v1/sites/{site}/entries/retention", tag = "rights",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Retention), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_retention(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<Retention>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Read, site, Capability::ENTRIES_READ_ALL)
        .await?;
    let days = state
        .node()
        .store()
        .entries_retention(site)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("site {} does not exist", site.0)))?;
    Ok(Json(Retention {
        days: u32::try_from(days).map_err(ApiError::internal)?,
    }))
}

/// Set how long the site keeps its entries (audited). Older entries go at the next
/// hourly purge.
#[utoipa::path(put, path = "/v1/sites/{site}/entries/retention", tag = "rights", request_body = Retention,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Retention), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn set_retention(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<Retention>,
) -> Result<Json<Retention>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    if body.days == 0 || body.days > MAX_RETENTION_DAYS {
        return Err(ApiError::invalid(format!(
            "retention is 1 to {MAX_RETENTION_DAYS} days"
        )));
    }
    state
        .node()
        .store()
        .entries()
        .set_retention(&caller.actor(), site, body.days, now())
        .await?;
    Ok(Json(body))
}

// ---------------------------------------------------------------------------------------
// incidents

/// An incident at a door or an IQ.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IncidentView {
    pub id: i64,
    /// `door_forced`, `door_left_open`, `tamper`, `battery_low` or `iq_offline`.
    pub kind: String,
    /// The door, if it is about one.
    pub door: Option<u32>,
    /// The IQ that reported it, if any.
    pub iq: Option<u32>,
    /// When, RFC 3339.
    pub at: String,
    /// The reporter's text.
    pub detail: String,
    /// When it was acknowledged, RFC 3339.
    pub acknowledged_at: Option<String>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
}

fn incident_view(i: Incident) -> IncidentView {
    IncidentView {
        id: i.id.get(),
        kind: i.kind.code().to_owned(),
        door: i.door.map(|d| d.0),
        iq: i.iq.map(|q| q.0),
        at: i.at.to_string(),
        detail: i.detail,
        acknowledged_at: i.acknowledged_at.map(|t| t.to_string()),
        acknowledged_by: i.acknowledged_by,
    }
}

page_of!(IncidentPage, IncidentView);

/// Filters of the incidents list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct IncidentFilter {
    /// Only of this kind.
    pub kind: Option<String>,
    /// Only at this door.
    pub door: Option<u32>,
    /// Only acknowledged (`true`) or open (`false`) ones.
    pub acknowledged: Option<bool>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

/// The site's incidents, newest first.
#[utoipa::path(get, path = "/v1/sites/{site}/incidents", tag = "rights",
    params(("site" = u32, Path, description = "The site"), IncidentFilter),
    responses((status = 200, body = IncidentPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn list_incidents(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(f): Query<IncidentFilter>,
) -> Result<Json<IncidentPage>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Read, site, Capability::ENTRIES_READ_ALL)
        .await?;
    let kind = match &f.kind {
        None => None,
        Some(k) => Some(IncidentKind::from_code(k).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown incident kind `{k}`; use one of {}",
                IncidentKind::ALL.map(IncidentKind::code).join(", ")
            ))
        })?),
    };
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("`limit` must be 1 to {MAX_LIMIT}"),
        ));
    }
    let before = match &f.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("bad_cursor", format!("`{c}` is not a cursor of this list")))?,
        ),
    };
    let mut found = state
        .node()
        .store()
        .incidents()
        .query(&IncidentQuery {
            site,
            kind,
            door: f.door.map(DoorId),
            acknowledged: f.acknowledged,
            before: before.map(keyway_store::IncidentId),
            limit: limit.saturating_add(1),
        })
        .await?;
    let next_cursor = if found.len() > limit as usize {
        found.truncate(limit as usize);
        found.last().map(|i| i.id.get().to_string())
    } else {
        None
    };
    Ok(Json(IncidentPage {
        items: found.into_iter().map(incident_view).collect(),
        next_cursor,
    }))
}

/// Acknowledge an incident (audited; acknowledging it again changes nothing).
#[utoipa::path(post, path = "/v1/sites/{site}/incidents/{incident}/acknowledge", tag = "rights",
    params(("site" = u32, Path, description = "The site"), ("incident" = i64, Path, description = "The incident")),
    responses((status = 200, body = IncidentView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn acknowledge_incident(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, incident)): Path<(u32, i64)>,
) -> Result<Json<IncidentView>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let acknowledged = state
        .node()
        .store()
        .incidents()
        .acknowledge(&caller.actor(), site, keyway_store::IncidentId(incident), now())
        .await
        .map_err(|e| match e {
            keyway_store::StoreError::NotFound { .. } => {
                ApiError::not_found(format!("incident {incident} does not exist on site {}", site.0))
            }
            other => other.into(),
        })?;
    Ok(Json(incident_view(acknowledged)))
}

// ---------------------------------------------------------------------------------------
// live stream

/// How a stream runs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamParams {
    /// Only this person's entries (a caller who may read only their own gets theirs).
    pub person: Option<u32>,
    /// `false`: send what is there after `Last-Event-ID` and end; `true` (the default):
    /// keep the stream open and send new events as they come.
    pub follow: Option<bool>,
}

/// Where a stream stands: the last entry and incident sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    entry: i64,
    incident: i64,
}

impl Position {
    fn parse(text: &str) -> Option<Position> {
        let (e, i) = text.trim().split_once('.')?;
        let (entry, incident) = (e.parse().ok()?, i.parse().ok()?);
        (entry >= 0 && incident >= 0).then_some(Position { entry, incident })
    }

    fn id(self) -> String {
        format!("{}.{}", self.entry, self.incident)
    }
}

struct Tail {
    state: AppState,
    site: SiteId,
    /// As [`entry_scope`] answered: `None` when the caller may read nothing.
    scope: Option<Option<PersonId>>,
    incidents: bool,
    follow: bool,
    at: Position,
    pending: VecDeque<Event>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Tail {
    /// Queue what came after the current position; how many events.
    async fn fill(&mut self) -> Result<usize, ApiError> {
        let Some(person) = self.scope else {
            return Ok(0);
        };
        let store = self.state.node().store();
        for e in store
            .entries_after(self.site, person, EntryId(self.at.entry), BATCH)
            .await?
        {
            self.at.entry = e.id.get();
            let data = serde_json::to_string(&entry_view(e)).map_err(ApiError::internal)?;
            self.pending
                .push_back(Event::default().event("entry").id(self.at.id()).data(data));
        }
        if self.incidents {
            for i in store
                .incidents()
                .after(self.site, keyway_store::IncidentId(self.at.incident), BATCH)
                .await?
            {
                self.at.incident = i.id.get();
                let data = serde_json::to_string(&incident_view(i)).map_err(ApiError::internal)?;
                self.pending
                    .push_back(Event::default().event("incident").id(self.at.id()).data(data));
            }
        }
        Ok(self.pending.len())
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut tail| async move {
            loop {
                if let Some(event) = tail.pending.pop_front() {
                    return Some((Ok(event), tail));
                }
                if *tail.closing.borrow() {
                    return None;
                }
                match tail.fill().await {
                    Ok(0) if !tail.follow => return None,
                    Ok(0) => {
                        tokio::select! {
                            () = tokio::time::sleep(POLL) => {}
                            _ = tail.closing.changed() => return None,
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // The client reconnects with its last event id and loses nothing.
                        tracing::warn!(error = %e, "live stream ended");
                        return None;
                    }
                }
            }
        })
    }
}

/// New entries (event `entry`, an entries-list item) and incidents (event `incident`)
/// of the site as Server-Sent Events, scoped as the entries list. Each event's id is
/// `E.I` (last entry id, last incident id); reconnect with `Last-Event-ID` to resume
/// after it. Without one the stream starts now.
#[utoipa::path(get, path = "/v1/sites/{site}/events", tag = "rights",
    params(("site" = u32, Path, description = "The site"), StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (`E.I`)")),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let site = SiteId(site);
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(Position::parse).ok_or_else(|| {
            ApiError::bad_request("bad_event_id", "`Last-Event-ID` is not an id of this stream (`E.I`)")
        })?),
    };
    let scope = entry_scope(&state, &caller, site, p.person.map(PersonId)).await?;
    let m = caller.member(&state, Access::Read, site).await?;
    let incidents = state
        .node()
        .policy()
        .bundle()
        .roles()
        .can(m.role, Capability::ENTRIES_READ_ALL);
    let at = match resume {
        Some(at) => at,
        None => {
            let (entry, incident) = state.node().store().event_heads(site).await?;
            Position {
                entry: entry.get(),
                incident: incident.get(),
            }
        }
    };
    let closing = state.closing();
    let tail = Tail {
        state,
        site,
        scope,
        incidents: incidents && scope.is_some(),
        follow: p.follow.unwrap_or(true),
        at,
        pending: VecDeque::new(),
        closing,
    };
    Ok(Sse::new(tail.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response())
}
