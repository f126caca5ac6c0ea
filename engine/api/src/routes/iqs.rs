//! IQ gateways over HTTP: registering one (model, serial number, name) and handing its
//! installer a one-time enrolment code with what the IQ needs to dial in, listing IQs
//! with their state as the IQ link knows it, pairing doors, resetting and removing IQs,
//! each person's activation PIN per IQ, and the firmware assigned to an IQ.
//!
//! An IQ authenticates on the link with its own certificate, obtained once with the
//! enrolment code (the link's PROTOCOL.md, section 2). Resetting or removing an IQ
//! revokes that certificate and closes its sessions on this node at once.
//!
//! | action | needs |
//! |--------|-------|
//! | list and read IQs | membership |
//! | register, rename, pair doors, new enrolment code, assign firmware | `door.lockdown` (door administration) |
//! | reset an IQ (everyone activates again, the device enrols again), remove it | `iq.reset` |
//! | list activations, reset one person's PIN | `iq.reset_pin` |
//! | set one's own activation PIN | membership with a person record |
//!
//! Ids of another site answer 404, as ids that do not exist.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::model::{check_name, door_of};
use crate::routes::offline::OfflineWatch;
use crate::routes::{Pagination, Revisioned, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use keyway_core::{Change, DoorRecord, IqId, IqRecord, PersonId, Record, SiteId};
use keyway_node::OfflineListSize;
use keyway_plugin_host::Capability;
use keyway_store::{FirmwareFile, IqActivation, IqDetails, Named, enrolment_code};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long an enrolment code works (PROTOCOL.md suggests 24 hours).
const ENROLMENT_CODE_LIFETIME_SECS: i64 = 24 * 3600;
/// What the FAQ gives an IQ: 10,000 tags and 10,000 remote users in its offline list.
const OFFLINE_LIST_CAPACITY: u32 = 10_000;

/// An IQ to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterIq {
    /// Its name on the site.
    pub name: String,
    /// Its model, as firmware files name it (1 to 64 letters, digits, `.`, `-`, `_`, `+`).
    pub model: String,
    /// Its serial number (same characters), unique among registered IQs.
    pub serial: String,
}

/// An IQ's new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IqName {
    pub name: String,
}

/// The offline list last sent to an IQ by this node, against the IQ's capacity.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfflineListView {
    /// The revision it was built at.
    pub revision: u64,
    /// Tags in it.
    pub tags: u32,
    /// Digital keys and PINs in it.
    pub remote_users: u32,
    /// Tags an IQ holds at most.
    pub tags_capacity: u32,
    /// Digital keys and PINs an IQ holds at most.
    pub remote_users_capacity: u32,
    /// Tags that did not fit (keys with offline access go first, then by credential id).
    pub tags_left_out: u32,
    /// Digital keys and PINs that did not fit.
    pub remote_users_left_out: u32,
}

impl From<OfflineListSize> for OfflineListView {
    fn from(s: OfflineListSize) -> Self {
        OfflineListView {
            revision: s.revision,
            tags: s.tags,
            remote_users: s.remote_users,
            tags_capacity: OFFLINE_LIST_CAPACITY,
            remote_users_capacity: OFFLINE_LIST_CAPACITY,
            tags_left_out: s.tags_left_out,
            remote_users_left_out: s.remote_users_left_out,
        }
    }
}

/// An IQ and its state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IqView {
    pub id: u32,
    pub name: String,
    pub model: String,
    /// Its serial number (absent for IQs made before registration details existed).
    pub serial: Option<String>,
    /// The doors paired with it.
    pub doors: Vec<u32>,
    /// Whether it holds a valid client certificate (it enrolled and was not reset since).
    pub enrolled: bool,
    /// When its certificate expires, in seconds since the epoch.
    pub certificate_expires_at: Option<i64>,
    /// Whether it has a session open on this node now.
    pub online: bool,
    /// When this node last heard from it, in seconds since the epoch.
    pub last_seen: Option<i64>,
    /// The firmware version it reported.
    pub firmware_reported: Option<String>,
    /// The firmware file assigned to it, if any.
    pub firmware_assigned: Option<i64>,
    /// The offline list this node last sent it, when this node sent one.
    pub offline_list: Option<OfflineListView>,
}

page_of!(IqPage, IqView);

/// What an installer needs to enrol an IQ: the one-time code, and where and how to dial.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Enrolment {
    /// The one-time enrolment code (shown once; only its hash is kept).
    pub code: String,
    /// When it stops working, in seconds since the epoch.
    pub expires_at: i64,
    /// How to reach this server's IQ link; absent when this server runs none.
    pub link: Option<LinkDetails>,
}

/// Where IQs dial and which certificate authority the server's certificate chains to.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LinkDetails {
    /// The control port (decisions, pushes; the enrolment itself).
    pub control_port: u16,
    /// The bulk port (offline lists, firmware).
    pub bulk_port: u16,
    /// The host names the server's certificate carries; the IQ dials one of them.
    pub server_names: Vec<String>,
    /// The link CA's certificate, PEM: the IQ verifies the server against it.
    pub ca_certificate_pem: String,
}

/// A newly registered IQ.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IqRegistered {
    pub iq: IqView,
    /// How to enrol it.
    pub enrolment: Enrolment,
    /// The revision its registration produced.
    pub revision: u64,
}

/// The outcome of an owner's reset.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IqReset {
    /// The IQ, after the reset.
    pub iq: IqView,
    /// Activations removed: each of these people activates again.
    pub activations_removed: u64,
    /// Sessions closed on this node.
    pub sessions_closed: usize,
    /// How to enrol the device again.
    pub enrolment: Enrolment,
    /// The revision of the reset's mark in the change log, by which every other node
    /// closes the IQ's sessions it holds.
    pub revision: u64,
}

/// The IQ a door is paired with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DoorIq {
    /// One of the site's IQs, or `null` to unpair the door.
    pub iq: Option<u32>,
}

/// A person's activation on an IQ (the PIN itself is never shown).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActivationView {
    pub person: u32,
    /// Wrong PINs since the last right one.
    pub failed_attempts: u32,
    /// Whether wrong PINs blocked it (a site admin resets it).
    pub blocked: bool,
    /// When the person first entered the right PIN at the IQ.
    pub activated_at: Option<i64>,
    /// When the PIN was set.
    pub created_at: i64,
}

impl From<IqActivation> for ActivationView {
    fn from(a: IqActivation) -> Self {
        ActivationView {
            person: a.person.0,
            failed_attempts: a.failed_attempts,
            blocked: a.blocked,
            activated_at: a.activated_at.map(jiff::Timestamp::as_second),
            created_at: a.created_at.as_second(),
        }
    }
}

page_of!(ActivationPage, ActivationView);

/// An activation PIN.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivationPin {
    /// 4 to 8 digits.
    pub pin: String,
}

/// The firmware file an IQ should run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignFirmware {
    /// A firmware file for the IQ's model, or `null` for none.
    pub firmware: Option<i64>,
}

/// A firmware file IQs may be given.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FirmwareView {
    pub id: i64,
    /// The IQ model it is for.
    pub model: String,
    pub version: String,
    /// The SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the operator uploaded it, in seconds since the epoch.
    pub uploaded_at: i64,
}

impl From<FirmwareFile> for FirmwareView {
    fn from(f: FirmwareFile) -> Self {
        FirmwareView {
            id: f.id.get(),
            model: f.model,
            version: f.version,
            sha256: f.sha256,
            size: f.size,
            uploaded_at: f.uploaded_at.as_second(),
        }
    }
}

page_of!(FirmwarePage, FirmwareView);

/// Which firmware files, and which page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FirmwareQuery {
    /// Only files for this IQ model.
    pub model: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

/// `iq` when it belongs to `site`; 404 otherwise.
async fn iq_of(state: &AppState, site: SiteId, iq: u32) -> Result<IqDetails, ApiError> {
    match state.node().store().devices().iq(IqId(iq)).await? {
        Some(d) if d.site == site => Ok(d),
        _ => Err(ApiError::not_found(format!(
            "iq {iq} does not exist on site {}",
            site.0
        ))),
    }
}

/// The doors paired with `iq`, by id.
async fn paired_doors(state: &AppState, iq: IqId) -> Result<Vec<u32>, ApiError> {
    Ok(state
        .node()
        .store()
        .devices()
        .profile(iq)
        .await?
        .map(|(_, doors)| doors.into_iter().map(|door| door.0).collect())
        .unwrap_or_default())
}

async fn view(state: &AppState, d: IqDetails) -> Result<IqView, ApiError> {
    let store = state.node().store();
    let certificate = store.devices().certificate(d.id).await?;
    let doors = paired_doors(state, d.id).await?;
    let link = state.node().door_commands().state(d.id);
    Ok(IqView {
        id: d.id.0,
        name: d.name,
        model: d.model,
        serial: d.serial,
        doors,
        enrolled: certificate.is_some(),
        certificate_expires_at: (certificate.map(|c| c.not_after)).map(jiff::Timestamp::as_second),
        online: link.online,
        last_seen: link.last_seen,
        firmware_reported: link.firmware,
        firmware_assigned: d.firmware.map(|id| id.get()),
        offline_list: link.offline_list.map(OfflineListView::from),
    })
}

/// A fresh enrolment code for `iq`, stored hashed.
async fn enrolment(state: &AppState, caller: &Caller, iq: IqId) -> Result<Enrolment, ApiError> {
    let code = enrolment_code::new_code();
    let now = crate::auth::now();
    let expires_at = crate::auth::after(now, ENROLMENT_CODE_LIFETIME_SECS);
    state
        .node()
        .store()
        .devices()
        .issue_enrolment_code(&caller.actor(), iq, &enrolment_code::hash_code(&code), expires_at, now)
        .await?;
    Ok(Enrolment {
        code,
        expires_at: expires_at.as_second(),
        link: link_details(state).await,
    })
}

/// The link's details, when this server runs a link whose CA certificate can be read.
async fn link_details(state: &AppState) -> Option<LinkDetails> {
    let advert = state.config().link.as_ref()?;
    let der = match tokio::fs::read(&advert.ca_file).await {
        Ok(der) => der,
        Err(e) => {
            tracing::warn!(file = %advert.ca_file.display(), error = %e, "cannot read the link CA certificate");
            return None;
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Some(LinkDetails {
        control_port: advert.control_port,
        bulk_port: advert.bulk_port,
        server_names: advert.server_names.clone(),
        ca_certificate_pem: pem,
    })
}

/// Register an IQ on a site; the answer carries its one-time enrolment code.
#[utoipa::path(post, path = "/v1/sites/{site}/iqs", tag = "iqs", request_body = RegisterIq,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = IqRegistered), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn register_iq(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<RegisterIq>,
) -> Result<(StatusCode, Json<IqRegistered>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let name = check_name(&body.name)?;
    let store = state.node().store();
    if store.devices().iq_by_serial(&body.serial).await?.is_some() {
        return Err(ApiError::Conflict {
            code: "duplicate",
            message: format!("an IQ with serial number `{}` is registered already", body.serial),
        });
    }
    let actor = caller.actor();
    let written = store
        .model()
        .create(&actor, Record::Iq(IqRecord { id: IqId(0), site }))
        .await?;
    let id = IqId(written.id.ok_or_else(|| ApiError::internal("no iq id"))?);
    // The details are checked after the IQ exists (the store checks them against the
    // row); on a refusal the IQ is removed again so nothing half-registered stays.
    let details = async {
        store
            .devices()
            .set_details(&actor, id, &body.model, &body.serial, crate::auth::now())
            .await?;
        store
            .names()
            .set(&actor, Named::Iq, id.0, name, crate::auth::now())
            .await
    }
    .await;
    if let Err(e) = details {
        if let Err(undo) = store.model().write(&actor, Change::RemoveIq(id)).await {
            tracing::error!(iq = %id, error = %undo, "cannot remove a half-registered iq");
        }
        return Err(e.into());
    }
    let enrolment = enrolment(&state, &caller, id).await?;
    let iq = view(&state, iq_of(&state, site, id.0).await?).await?;
    Ok((
        StatusCode::CREATED,
        Json(IqRegistered {
            iq,
            enrolment,
            revision: written.revision.0,
        }),
    ))
}

/// A site's IQs and their state.
#[utoipa::path(get, path = "/v1/sites/{site}/iqs", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = IqPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_iqs(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<IqPage>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let all = state.node().store().devices().of_site(site).await?;
    let (page, next_cursor) = p.page(all, |d| i64::from(d.id.0))?;
    let mut items = Vec::with_capacity(page.len());
    for d in page {
        items.push(view(&state, d).await?);
    }
    Ok(Json(IqPage { items, next_cursor }))
}

/// One IQ and its state.
#[utoipa::path(get, path = "/v1/sites/{site}/iqs/{iq}", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 200, body = IqView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_iq(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
) -> Result<Json<IqView>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let d = iq_of(&state, site, iq).await?;
    Ok(Json(view(&state, d).await?))
}

/// Rename an IQ.
#[utoipa::path(patch, path = "/v1/sites/{site}/iqs/{iq}", tag = "iqs", request_body = IqName,
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 200, body = IqView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn rename_iq(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
    Json(body): Json<IqName>,
) -> Result<Json<IqView>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    iq_of(&state, site, iq).await?;
    let name = check_name(&body.name)?;
    state
        .node()
        .store()
        .names()
        .set(&caller.actor(), Named::Iq, iq, name, crate::auth::now())
        .await?;
    Ok(Json(view(&state, iq_of(&state, site, iq).await?).await?))
}

/// Remove an IQ: its certificate stops working and its sessions close at once. Its
/// doors must be moved or unpaired first.
#[utoipa::path(delete, path = "/v1/sites/{site}/iqs/{iq}", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn remove_iq(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::IQ_RESET)
        .await?;
    let d = iq_of(&state, site, iq).await?;
    let paired = paired_doors(&state, d.id).await?;
    if !paired.is_empty() {
        return Err(ApiError::Conflict {
            code: "in_use",
            message: format!(
                "iq {iq} still has doors {paired:?}; move or unpair them first (PUT /v1/sites/{}/doors/{{door}}/iq)",
                site.0
            ),
        });
    }
    // Removing the row removes its certificate and codes with it (the store cascades), so
    // the link refuses the device from the next handshake on; open sessions close now.
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::RemoveIq(IqId(iq)))
        .await?;
    state.node().door_commands().close_sessions(IqId(iq));
    Ok(Json(Revisioned::new(revision.0)))
}

/// A new one-time enrolment code for an IQ that has not enrolled (the first code was
/// lost or expired). An enrolled IQ is reset by an owner instead.
#[utoipa::path(post, path = "/v1/sites/{site}/iqs/{iq}/enrolment-code", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 201, body = Enrolment), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn new_enrolment_code(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
) -> Result<(StatusCode, Json<Enrolment>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let d = iq_of(&state, site, iq).await?;
    if state.node().store().devices().certificate(d.id).await?.is_some() {
        return Err(ApiError::Conflict {
            code: "enrolled",
            message: format!("iq {iq} is enrolled already; an owner resets it to enrol a device again"),
        });
    }
    Ok((StatusCode::CREATED, Json(enrolment(&state, &caller, d.id).await?)))
}

/// An owner's reset of an IQ (the FAQ): every person's activation is removed, so all
/// activate again; its certificate is revoked and its sessions close, on every node;
/// the answer carries a new enrolment code for the device.
#[utoipa::path(post, path = "/v1/sites/{site}/iqs/{iq}/reset", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 200, body = IqReset), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn reset_iq(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
) -> Result<Json<IqReset>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::IQ_RESET)
        .await?;
    let d = iq_of(&state, site, iq).await?;
    let store = state.node().store();
    let actor = caller.actor();
    store
        .devices()
        .revoke_certificate(&actor, d.id, crate::auth::now())
        .await?;
    let sessions_closed = state.node().door_commands().close_sessions(d.id);
    // The IQ's record written again (unchanged) tells every other node through the
    // change feed; each rechecks the certificate of the sessions it holds and closes them.
    let revision = store
        .model()
        .write(&actor, Change::PutIq(IqRecord { id: d.id, site }))
        .await?;
    let activations_removed = store.devices().reset(&actor, d.id, crate::auth::now()).await?;
    let enrolment = enrolment(&state, &caller, d.id).await?;
    Ok(Json(IqReset {
        iq: view(&state, d).await?,
        activations_removed,
        sessions_closed,
        enrolment,
        revision: revision.0,
    }))
}

/// Pair a door with one of the site's IQs, move it to another, or unpair it.
#[utoipa::path(put, path = "/v1/sites/{site}/doors/{door}/iq", tag = "iqs", request_body = DoorIq,
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn pair_door(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
    Json(body): Json<DoorIq>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let record = door_of(&state, site, door).await?;
    let iq = match body.iq {
        Some(iq) => match state.node().store().devices().iq(IqId(iq)).await? {
            Some(d) if d.site == site => Some(d.id),
            _ => {
                return Err(ApiError::invalid(format!("iq {iq} does not exist on site {}", site.0)));
            }
        },
        None => None,
    };
    let watch = OfflineWatch::start(&state, site);
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::PutDoor(DoorRecord { iq, ..record }))
        .await?;
    Ok(Json(Revisioned {
        revision: revision.0,
        pushed_out: watch.pushed_out(&state),
    }))
}

/// The activations on an IQ: who set a PIN, who activated, who is blocked.
#[utoipa::path(get, path = "/v1/sites/{site}/iqs/{iq}/activations", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ"), Pagination),
    responses((status = 200, body = ActivationPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_activations(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
    Query(p): Query<Pagination>,
) -> Result<Json<ActivationPage>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Read, site, Capability::IQ_RESET_PIN)
        .await?;
    let d = iq_of(&state, site, iq).await?;
    let all = state.node().store().devices().activations(d.id).await?;
    let (page, next_cursor) = p.page(all, |a| i64::from(a.person.0))?;
    Ok(Json(ActivationPage {
        items: page.into_iter().map(ActivationView::from).collect(),
        next_cursor,
    }))
}

/// Set one's own activation PIN for an IQ (the caller's person record on the site); the
/// person then activates by entering it at the IQ. Replaces a PIN and lifts a block.
#[utoipa::path(put, path = "/v1/sites/{site}/iqs/{iq}/activation", tag = "iqs", request_body = ActivationPin,
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 200, body = ActivationView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn set_own_pin(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
    Json(body): Json<ActivationPin>,
) -> Result<Json<ActivationView>, ApiError> {
    let site = SiteId(site);
    let m = caller.member(&state, Access::Write, site).await?;
    let d = iq_of(&state, site, iq).await?;
    let Some(person) = m.person else {
        return Err(ApiError::Conflict {
            code: "no_person",
            message: format!("your membership of site {} has no person record to activate", site.0),
        });
    };
    let activation = state
        .node()
        .store()
        .devices()
        .set_pin(&caller.actor(), d.id, person, &body.pin, crate::auth::now())
        .await?;
    Ok(Json(activation.into()))
}

/// A site admin's "Reset PIN" for one person on one IQ (the FAQ): the activation is
/// removed and the person activates again with a new PIN.
#[utoipa::path(delete, path = "/v1/sites/{site}/iqs/{iq}/activations/{person}", tag = "iqs",
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ"),
        ("person" = u32, Path, description = "The person")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn reset_pin(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq, person)): Path<(u32, u32, u32)>,
) -> Result<StatusCode, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::IQ_RESET_PIN)
        .await?;
    let d = iq_of(&state, site, iq).await?;
    state
        .node()
        .store()
        .devices()
        .reset_pin(&caller.actor(), d.id, PersonId(person), crate::auth::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The byte range a `Range` header asks for within `size` bytes: `Ok(None)` for the
/// whole file (no header, or a form this route does not serve, which HTTP lets a server
/// ignore: several ranges, other units), the first and last byte otherwise.
fn byte_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // `-N`: the last N bytes.
        (Err(_), Ok(n)) if first.is_empty() => {
            if n == 0 {
                return Err(ApiError::RangeNotSatisfiable { size });
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (Ok(a), Err(_)) if last.is_empty() => (a, size.saturating_sub(1)),
        (Ok(a), Ok(b)) if a <= b => (a, b.min(size.saturating_sub(1))),
        _ => return Ok(None),
    };
    if range.0 >= size {
        return Err(ApiError::RangeNotSatisfiable { size });
    }
    Ok(Some(range))
}

/// An IQ downloads the firmware assigned to it, with the token it was sent in
/// `FIRMWARE_AVAILABLE` over the link (`Authorization: Bearer kwf_...`; 24 hours, and
/// only while the file is still its assignment). `Range: bytes=N-` resumes a broken
/// download. Sessions and API tokens do not work here.
#[utoipa::path(get, path = "/v1/firmware/download", tag = "iqs",
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = Problem), (status = 416, body = Problem)))]
pub(crate) async fn download_firmware(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let token = crate::auth::bearer_of(&headers)
        .filter(|t| t.starts_with("kwf_"))
        .ok_or(ApiError::Unauthenticated)?;
    let store = state.node().store();
    let (iq, file) = store
        .devices()
        .firmware_download(token, crate::auth::now())
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let content = store
        .devices()
        .firmware_content(file.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let size = u64::try_from(content.len()).map_err(ApiError::internal)?;
    let range = byte_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size)?;
    tracing::info!(%iq, version = %file.version, ?range, "firmware download");
    let (status, body) = match range {
        None => (StatusCode::OK, content),
        Some((first, last)) => {
            let from = usize::try_from(first).map_err(ApiError::internal)?;
            let to = usize::try_from(last).map_err(ApiError::internal)?;
            let part = content.get(from..=to).map(<[u8]>::to_vec).unwrap_or_default();
            (StatusCode::PARTIAL_CONTENT, part)
        }
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
        h.insert(header::ETAG, v);
    }
    if let Some((first, last)) = range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}-{}.bin\"", file.model, file.version)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The firmware files the instance operator uploaded (`keyway admin firmware upload`),
/// oldest first: what an admin may assign to an IQ.
#[utoipa::path(get, path = "/v1/firmware", tag = "iqs",
    params(FirmwareQuery),
    responses((status = 200, body = FirmwarePage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub(crate) async fn list_firmware(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FirmwareQuery>,
) -> Result<Json<FirmwarePage>, ApiError> {
    caller.allow(Access::Read, None)?;
    let files = state
        .node()
        .store()
        .devices()
        .firmware_files(q.model.as_deref())
        .await?;
    let p = Pagination {
        cursor: q.cursor,
        limit: q.limit,
    };
    let (page, next_cursor) = p.page(files, |f| f.id.get())?;
    Ok(Json(FirmwarePage {
        items: page.into_iter().map(FirmwareView::from).collect(),
        next_cursor,
    }))
}

/// An IQ after a firmware assignment.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FirmwareAssigned {
    pub iq: IqView,
    /// Whether the IQ was told now (it has a session on this node and runs another
    /// version). An IQ not told now is offered the file when it next connects.
    pub offered: bool,
}

/// Assign a firmware file (for the IQ's model) to an IQ, or none. An IQ connected to
/// this node is told at once; any IQ is told when it connects running another version.
#[utoipa::path(put, path = "/v1/sites/{site}/iqs/{iq}/firmware", tag = "iqs", request_body = AssignFirmware,
    params(("site" = u32, Path, description = "The site"), ("iq" = u32, Path, description = "The IQ")),
    responses((status = 200, body = FirmwareAssigned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn assign_firmware(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, iq)): Path<(u32, u32)>,
    Json(body): Json<AssignFirmware>,
) -> Result<Json<FirmwareAssigned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let d = iq_of(&state, site, iq).await?;
    let store = state.node().store();
    let file = match body.firmware {
        Some(id) => Some(
            store
                .devices()
                .firmware(keyway_store::FirmwareId(id))
                .await?
                .ok_or_else(|| ApiError::invalid(format!("firmware {id} does not exist")))?,
        ),
        None => None,
    };
    store
        .devices()
        .assign_firmware(
            &caller.actor(),
            d.id,
            body.firmware.map(keyway_store::FirmwareId),
            crate::auth::now(),
        )
        .await?;
    let link = state.node().door_commands();
    let offered = match file {
        Some(file) if link.state(d.id).firmware.as_deref() != Some(file.version.as_str()) => {
            link.offer_firmware(d.id, &state.node().firmware_offer(d.id, file).await)
        }
        _ => false,
    };
    Ok(Json(FirmwareAssigned {
        iq: view(&state, iq_of(&state, site, iq).await?).await?,
        offered,
    }))
}
