//! What an admin does to doors in operation: office mode (by hand, or while a schedule
//! is open), lockdown of one door or of the whole site (each lifted with one call), and
//! remote opening.
//!
//! Every change of mode or lockdown is a change of the decision model: it answers with
//! its revision, then pushes a refresh to the door's IQ through the node's door commands
//! and says, per door, whether it was delivered. A door without an IQ, an offline IQ or
//! a node without the IQ link is "not delivered": the change holds all the same, and
//! decisions over HTTP follow it at once.
//!
//! | action | needs |
//! |--------|-------|
//! | read a door's state | membership |
//! | office mode, lockdown (door or site) | `door.lockdown` |
//! | remote open | `door.remote_open` |
//!
//! The roles that pass a door in lockdown are the role table's lockdown-exempt roles
//! (the roles plugin of the bundle in force); answers name them.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path};
use crate::routes::model::door_of;
use crate::state::AppState;
use axum::extract::State;
use keyway_core::{Change, DoorId, DoorMode, DoorRecord, Record, ScheduleId, SiteId};
use keyway_node::{CommandOutcome, DoorCommand};
use keyway_plugin_host::Capability;
use keyway_store::{Named, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What became of a command for one door.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Delivery {
    pub door: u32,
    /// Whether the door's IQ acknowledged it.
    pub delivered: bool,
    /// Why not, when it was not.
    pub reason: Option<String>,
}

impl Delivery {
    fn of(door: DoorId, outcome: CommandOutcome) -> Delivery {
        match outcome {
            CommandOutcome::Delivered => Delivery {
                door: door.0,
                delivered: true,
                reason: None,
            },
            CommandOutcome::NotDelivered { reason } => Delivery {
                door: door.0,
                delivered: false,
                reason: Some(reason),
            },
        }
    }
}

/// A door's office mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ModeName {
    /// Only people with a right now open it.
    Normal,
    /// Office mode by hand: open to every valid credential until set back.
    Office,
    /// Office mode while `schedule` is open, normal otherwise.
    Scheduled,
}

/// A door's new mode.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetMode {
    pub mode: ModeName,
    /// The schedule of a `scheduled` mode (one of the site's); absent otherwise.
    pub schedule: Option<u32>,
}

/// A door's operating state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DoorState {
    /// The door.
    pub id: u32,
    pub name: String,
    /// Its IQ, if paired.
    pub iq: Option<u32>,
    /// Its office mode.
    pub mode: ModeName,
    /// The schedule of a `scheduled` mode.
    pub schedule: Option<u32>,
    /// Lockdown of this door alone.
    pub lockdown: bool,
    /// Lockdown of its whole site.
    pub site_lockdown: bool,
    /// The roles that still pass it in lockdown (from the roles plugin).
    pub lockdown_exempt_roles: Vec<String>,
}

/// A door's state after a change, with its revision and what the IQ heard of it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DoorStateChanged {
    /// The door's state now.
    pub door: DoorState,
    /// The revision the change produced.
    pub revision: u64,
    /// Whether the door's IQ got the refresh.
    pub delivery: Delivery,
}

/// A site's lockdown after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SiteLockdown {
    pub site: u32,
    /// Whether the site is in lockdown now.
    pub lockdown: bool,
    /// The roles that still pass its doors (from the roles plugin).
    pub lockdown_exempt_roles: Vec<String>,
    /// The revision the change produced.
    pub revision: u64,
    /// Per door of the site, whether its IQ got the refresh.
    pub deliveries: Vec<Delivery>,
}

/// The outcome of a remote opening.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RemoteOpened {
    pub door: u32,
    /// Whether the door's IQ carried it out.
    pub delivered: bool,
    /// Why not, when it was not.
    pub reason: Option<String>,
    /// The person it is logged for (the caller's person record on the site), if any.
    pub person: Option<u32>,
}

fn exempt_roles(state: &AppState) -> Vec<String> {
    let bundle = state.node().policy().bundle();
    let roles = bundle.roles();
    roles
        .lockdown_exempt_roles()
        .into_iter()
        .filter_map(|r| roles.name(r).map(str::to_owned))
        .collect()
}

async fn door_state(state: &AppState, d: &DoorRecord) -> Result<DoorState, ApiError> {
    let site_lockdown = state
        .node()
        .snapshot()
        .load()
        .site_record(d.site)
        .is_some_and(|s| s.lockdown);
    let (mode, schedule) = match d.mode {
        DoorMode::Normal => (ModeName::Normal, None),
        DoorMode::Office => (ModeName::Office, None),
        DoorMode::OfficeScheduled(s) => (ModeName::Scheduled, Some(s.0)),
    };
    Ok(DoorState {
        id: d.id.0,
        name: state
            .node()
            .store()
            .names()
            .get(Named::Door, d.id.0)
            .await?
            .unwrap_or_default(),
        iq: d.iq.map(|q| q.0),
        mode,
        schedule,
        lockdown: d.lockdown,
        site_lockdown,
        lockdown_exempt_roles: exempt_roles(state),
    })
}

async fn changed(state: &AppState, site: SiteId, door: u32, revision: u64) -> Result<DoorStateChanged, ApiError> {
    let record = door_of(state, site, door).await?;
    let outcome = state.node().door_command(record.id, DoorCommand::Refresh).await;
    Ok(DoorStateChanged {
        door: door_state(state, &record).await?,
        revision,
        delivery: Delivery::of(record.id, outcome),
    })
}

/// A door's operating state: office mode, lockdown, IQ.
#[utoipa::path(get, path = "/v1/sites/{site}/doors/{door}", tag = "doors",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = DoorState), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_door(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<DoorState>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let record = door_of(&state, site, door).await?;
    Ok(Json(door_state(&state, &record).await?))
}

/// Set a door's office mode: `office` now (by hand, until set back), `scheduled` (open to
/// every valid credential while the schedule is open) or `normal`.
#[utoipa::path(put, path = "/v1/sites/{site}/doors/{door}/mode", tag = "doors", request_body = SetMode,
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = DoorStateChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn set_mode(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
    Json(body): Json<SetMode>,
) -> Result<Json<DoorStateChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    door_of(&state, site, door).await?;
    let mode = match (body.mode, body.schedule) {
        (ModeName::Normal, None) => DoorMode::Normal,
        (ModeName::Office, None) => DoorMode::Office,
        (ModeName::Scheduled, Some(s)) => match state
            .node()
            .store()
            .model()
            .record(Target::Schedule(ScheduleId(s)))
            .await?
        {
            Some(Record::Schedule(r)) if r.site == site => DoorMode::OfficeScheduled(r.id),
            _ => {
                return Err(ApiError::not_found(format!(
                    "schedule {s} does not exist on site {}",
                    site.0
                )));
            }
        },
        (ModeName::Scheduled, None) => return Err(ApiError::invalid("a `scheduled` mode names its `schedule`")),
        (_, Some(_)) => return Err(ApiError::invalid("only a `scheduled` mode takes a `schedule`")),
    };
    let revision = state
        .node()
        .store()
        .model()
        .write(
            &caller.actor(),
            Change::SetDoorMode {
                door: DoorId(door),
                mode,
            },
        )
        .await?;
    Ok(Json(changed(&state, site, door, revision.0).await?))
}

async fn door_lockdown(
    state: &AppState,
    caller: &Caller,
    site: u32,
    door: u32,
    on: bool,
) -> Result<Json<DoorStateChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    door_of(state, site, door).await?;
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::SetDoorLockdown { door: DoorId(door), on })
        .await?;
    Ok(Json(changed(state, site, door, revision.0).await?))
}

/// Lock a door down: only the lockdown-exempt roles pass it, office mode or not.
#[utoipa::path(put, path = "/v1/sites/{site}/doors/{door}/lockdown", tag = "doors",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = DoorStateChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn lock_door(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<DoorStateChanged>, ApiError> {
    door_lockdown(&state, &caller, site, door, true).await
}

/// Lift a door's lockdown.
#[utoipa::path(delete, path = "/v1/sites/{site}/doors/{door}/lockdown", tag = "doors",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = DoorStateChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn lift_door_lockdown(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<DoorStateChanged>, ApiError> {
    door_lockdown(&state, &caller, site, door, false).await
}

async fn site_lockdown(state: &AppState, caller: &Caller, site: u32, on: bool) -> Result<Json<SiteLockdown>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::SetSiteLockdown { site, on })
        .await?;
    let doors = state.node().store().names().list(Named::Door, Some(site)).await?;
    let mut deliveries = Vec::with_capacity(doors.len());
    for (door, _) in doors {
        let door = DoorId(door);
        deliveries.push(Delivery::of(
            door,
            state.node().door_command(door, DoorCommand::Refresh).await,
        ));
    }
    Ok(Json(SiteLockdown {
        site: site.0,
        lockdown: on,
        lockdown_exempt_roles: exempt_roles(state),
        revision: revision.0,
        deliveries,
    }))
}

/// Lock the whole site down: only the lockdown-exempt roles pass its doors.
#[utoipa::path(put, path = "/v1/sites/{site}/lockdown", tag = "doors",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = SiteLockdown), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn lock_site(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<SiteLockdown>, ApiError> {
    site_lockdown(&state, &caller, site, true).await
}

/// Lift the site's lockdown.
#[utoipa::path(delete, path = "/v1/sites/{site}/lockdown", tag = "doors",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = SiteLockdown), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn lift_site_lockdown(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<SiteLockdown>, ApiError> {
    site_lockdown(&state, &caller, site, false).await
}

/// Open a door once, now. Logged in the entries log as a remote opening by the caller's
/// person on the site, and audited; the answer says whether the door's IQ carried it
/// out (a door without an IQ, an offline IQ or a node without the IQ link: not
/// delivered, and logged as such).
#[utoipa::path(post, path = "/v1/sites/{site}/doors/{door}/remote-open", tag = "doors",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = RemoteOpened), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn remote_open(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<RemoteOpened>, ApiError> {
    let site = SiteId(site);
    let (member, _) = caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_REMOTE_OPEN)
        .await?;
    door_of(&state, site, door).await?;
    let opened = state
        .node()
        .remote_open(&caller.actor(), site, DoorId(door), member.person)
        .await?;
    let (delivered, reason) = match opened.outcome {
        CommandOutcome::Delivered => (true, None),
        CommandOutcome::NotDelivered { reason } => (false, Some(reason)),
    };
    Ok(Json(RemoteOpened {
        door,
        delivered,
        reason,
        person: member.person.map(|p| p.0),
    }))
}
