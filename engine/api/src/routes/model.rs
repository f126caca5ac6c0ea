//! The decision model over HTTP: doors, people, credentials, and decisions
//! (`POST /v1/decide` and its batch form). Every change answers with the revision it
//! produced; a decision may ask for "at least revision N".
//!
//! Capabilities (from the role table of the bundle in force):
//!
//! | action | needs |
//! |--------|-------|
//! | list doors, people | membership |
//! | create, rename, remove doors | `door.lockdown` (door administration) |
//! | create and remove people, issue and revoke credentials | `people.invite` |
//! | block and unblock people | `people.block` |
//! | decide | `entries.read_all` |
//!
//! Ids of another site answer 404, as ids that do not exist.

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::offline::{OfflineWatch, PushedOut};
use crate::routes::vouchers::{Counted, check_cap};
use crate::routes::{Pagination, Revisioned, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use keyway_core::{
    Change, CredentialId, CredentialKind, CredentialRecord, DoorId, DoorMode, DoorRecord, Effect, PersonId,
    PersonRecord, Presented, Reason, Record, Revision, SiteId,
};
use keyway_node::{DecisionRequest, Direction, NodeDecision, Source};
use keyway_plugin_host::Capability;
use keyway_store::{Named, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub(crate) fn check_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > keyway_store::MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "a name has 1 to {} characters and no control characters",
            keyway_store::MAX_NAME
        )));
    }
    Ok(name)
}

pub(crate) async fn door_of(state: &AppState, site: SiteId, door: u32) -> Result<DoorRecord, ApiError> {
    match state.node().store().model().record(Target::Door(DoorId(door))).await? {
        Some(Record::Door(d)) if d.site == site => Ok(d),
        _ => Err(ApiError::not_found(format!(
            "door {door} does not exist on site {}",
            site.0
        ))),
    }
}

pub(crate) async fn person_of(state: &AppState, site: SiteId, person: u32) -> Result<PersonRecord, ApiError> {
    match state
        .node()
        .store()
        .model()
        .record(Target::Person(PersonId(person)))
        .await?
    {
        Some(Record::Person(p)) if p.site == site => Ok(p),
        _ => Err(ApiError::not_found(format!(
            "person {person} does not exist on site {}",
            site.0
        ))),
    }
}

pub(crate) async fn credential_of(state: &AppState, site: SiteId, id: u32) -> Result<CredentialRecord, ApiError> {
    match state
        .node()
        .store()
        .model()
        .record(Target::Credential(CredentialId(id)))
        .await?
    {
        Some(Record::Credential(c)) if c.site == site => Ok(c),
        _ => Err(ApiError::not_found(format!(
            "credential {id} does not exist on site {}",
            site.0
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// doors

/// A new door, or a new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DoorName {
    pub name: String,
}

/// A door.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DoorView {
    pub id: u32,
    pub name: String,
}

/// A door just changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DoorChanged {
    pub door: DoorView,
    /// The revision the change produced (absent for a rename, which is not part of the
    /// decision model).
    pub revision: Option<u64>,
}

page_of!(DoorPage, DoorView);

/// Create a door.
#[utoipa::path(post, path = "/v1/sites/{site}/doors", tag = "doors", request_body = DoorName,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = DoorChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_door(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<DoorName>,
) -> Result<(StatusCode, Json<DoorChanged>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    let name = check_name(&body.name)?;
    let store = state.node().store();
    let written = store
        .model()
        .create(
            &caller.actor(),
            Record::Door(DoorRecord {
                id: DoorId(0),
                site,
                iq: None,
                mode: DoorMode::Normal,
                lockdown: false,
            }),
        )
        .await?;
    let id = written.id.ok_or_else(|| ApiError::internal("no door id"))?;
    store
        .names()
        .set(&caller.actor(), Named::Door, id, name, crate::auth::now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DoorChanged {
            door: DoorView {
                id,
                name: name.to_owned(),
            },
            revision: Some(written.revision.0),
        }),
    ))
}

/// A site's doors.
#[utoipa::path(get, path = "/v1/sites/{site}/doors", tag = "doors",
    params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = DoorPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_doors(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<DoorPage>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let all = state.node().store().names().list(Named::Door, Some(site)).await?;
    let (page, next_cursor) = p.page(all, |(id, _)| i64::from(*id))?;
    Ok(Json(DoorPage {
        items: page.into_iter().map(|(id, name)| DoorView { id, name }).collect(),
        next_cursor,
    }))
}

/// Rename a door.
#[utoipa::path(patch, path = "/v1/sites/{site}/doors/{door}", tag = "doors", request_body = DoorName,
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = DoorChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn rename_door(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
    Json(body): Json<DoorName>,
) -> Result<Json<DoorChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    door_of(&state, site, door).await?;
    let name = check_name(&body.name)?;
    state
        .node()
        .store()
        .names()
        .set(&caller.actor(), Named::Door, door, name, crate::auth::now())
        .await?;
    Ok(Json(DoorChanged {
        door: DoorView {
            id: door,
            name: name.to_owned(),
        },
        revision: None,
    }))
}

/// Remove a door.
#[utoipa::path(delete, path = "/v1/sites/{site}/doors/{door}", tag = "doors",
    params(("site" = u32, Path, description = "The site"), ("door" = u32, Path, description = "The door")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn remove_door(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, door)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    door_of(&state, site, door).await?;
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::RemoveDoor(DoorId(door)))
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

// ---------------------------------------------------------------------------------------
// people

/// A new person.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPerson {
    /// Their name.
    pub name: String,
    /// Their role's name (default `basic_user`), for lockdown exemptions.
    pub role: Option<String>,
}

/// A person.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonView {
    /// Their id.
    pub id: u32,
    /// Their name.
    pub name: String,
    /// Their role's name.
    pub role: String,
    /// Whether they are blocked.
    pub blocked: bool,
}

/// A person just changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonChanged {
    pub person: PersonView,
    /// The revision the change produced.
    pub revision: u64,
}

page_of!(PersonPage, PersonView);

/// Create a person (voucher-checked: refused beyond the site's user cap).
#[utoipa::path(post, path = "/v1/sites/{site}/people", tag = "people", request_body = NewPerson,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = PersonChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_person(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewPerson>,
) -> Result<(StatusCode, Json<PersonChanged>), ApiError> {
    let site = SiteId(site);
    let (me, bundle) = caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let name = check_name(&body.name)?;
    let role_name = body.role.as_deref().unwrap_or("basic_user");
    let roles = bundle.roles();
    let role = roles
        .by_name(role_name)
        .ok_or_else(|| ApiError::invalid(format!("the bundle in force has no role `{role_name}`")))?;
    // As for invitations: a super user makes super users and basic users only.
    if !roles.may_grant(me.role, role) {
        return Err(ApiError::forbidden(format!(
            "your role `{}` may not grant `{role_name}`",
            roles.name(me.role).unwrap_or("unknown")
        )));
    }
    let then = check_cap(&state, site, Counted::User).await?;
    let store = state.node().store();
    let written = store
        .model()
        .create_with(
            &caller.actor(),
            Record::Person(PersonRecord {
                id: PersonId(0),
                site,
                role,
                blocked: false,
            }),
            then,
        )
        .await?;
    let id = written.id.ok_or_else(|| ApiError::internal("no person id"))?;
    store
        .names()
        .set(&caller.actor(), Named::Person, id, name, crate::auth::now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PersonChanged {
            person: PersonView {
                id,
                name: name.to_owned(),
                role: role_name.to_owned(),
                blocked: false,
            },
            revision: written.revision.0,
        }),
    ))
}

/// A site's people.
#[utoipa::path(get, path = "/v1/sites/{site}/people", tag = "people",
    params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = PersonPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_people(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<PersonPage>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let names = state.node().store().names().list(Named::Person, Some(site)).await?;
    let (page, next_cursor) = p.page(names, |(id, _)| i64::from(*id))?;
    let bundle = state.node().policy().bundle();
    let mut items = Vec::with_capacity(page.len());
    for (id, name) in page {
        if let Ok(person) = person_of(&state, site, id).await {
            items.push(PersonView {
                id,
                name,
                role: bundle.roles().name(person.role).unwrap_or("unknown").to_owned(),
                blocked: person.blocked,
            });
        }
    }
    Ok(Json(PersonPage { items, next_cursor }))
}

async fn set_blocked(
    state: &AppState,
    caller: &Caller,
    site: u32,
    person: u32,
    block: bool,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(state, Access::Write, site, Capability::PEOPLE_BLOCK)
        .await?;
    person_of(state, site, person).await?;
    let change = if block {
        Change::BlockPerson(PersonId(person))
    } else {
        Change::UnblockPerson(PersonId(person))
    };
    let watch = (!block).then(|| OfflineWatch::start(state, site));
    let revision = state.node().store().model().write(&caller.actor(), change).await?;
    Ok(Json(Revisioned {
        revision: revision.0,
        pushed_out: watch.map(|w| w.pushed_out(state)).unwrap_or_default(),
    }))
}

/// Block a person: the answer comes once this node's decisions deny them.
#[utoipa::path(post, path = "/v1/sites/{site}/people/{person}/block", tag = "people",
    params(("site" = u32, Path, description = "The site"), ("person" = u32, Path, description = "The person")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn block_person(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, person)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    set_blocked(&state, &caller, site, person, true).await
}

/// Unblock a person.
#[utoipa::path(post, path = "/v1/sites/{site}/people/{person}/unblock", tag = "people",
    params(("site" = u32, Path, description = "The site"), ("person" = u32, Path, description = "The person")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn unblock_person(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, person)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    set_blocked(&state, &caller, site, person, false).await
}

/// Remove a person; their credentials stay, unassigned.
#[utoipa::path(delete, path = "/v1/sites/{site}/people/{person}", tag = "people",
    params(("site" = u32, Path, description = "The site"), ("person" = u32, Path, description = "The person")),
    responses((status = 200, body = Revisioned), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn remove_person(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, person)): Path<(u32, u32)>,
) -> Result<Json<Revisioned>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    person_of(&state, site, person).await?;
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::RemovePerson(PersonId(person)))
        .await?;
    Ok(Json(Revisioned::new(revision.0)))
}

// ---------------------------------------------------------------------------------------
// credentials

/// A kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// An RFID tag; the value is its UID in hex (4 to 10 bytes).
    Tag,
    /// A PIN; the value is 4 to 8 digits.
    Pin,
    /// A digital key; the value is its id in hex (1 to 16 bytes).
    DigitalKey,
}

impl Kind {
    pub(crate) fn core(self) -> CredentialKind {
        match self {
            Kind::Tag => CredentialKind::Tag,
            Kind::Pin => CredentialKind::Pin,
            Kind::DigitalKey => CredentialKind::DigitalKey,
        }
    }

    fn of(kind: CredentialKind) -> Kind {
        match kind {
            CredentialKind::Tag => Kind::Tag,
            CredentialKind::Pin => Kind::Pin,
            CredentialKind::DigitalKey => Kind::DigitalKey,
        }
    }
}

/// A credential as presented: its kind and value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialValue {
    pub kind: Kind,
    /// The value: hex for tags and digital keys, digits for PINs.
    pub value: String,
}

impl CredentialValue {
    fn secret(&self) -> Result<Vec<u8>, ApiError> {
        let kind = self.kind.core();
        let bytes = match self.kind {
            Kind::Pin => self.value.as_bytes().to_vec(),
            Kind::Tag | Kind::DigitalKey => hex::decode(self.value.trim())
                .map_err(|_| ApiError::invalid("a tag UID or digital key id is written in hex, two digits a byte"))?,
        };
        if !kind.accepts(&bytes) {
            let (min, max) = kind.secret_len();
            return Err(ApiError::invalid(match self.kind {
                Kind::Pin => format!("a PIN has {min} to {max} digits"),
                Kind::Tag => format!("a tag UID has {min} to {max} bytes"),
                Kind::DigitalKey => format!("a digital key id has {min} to {max} bytes"),
            }));
        }
        Ok(bytes)
    }
}

/// A new credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCredential {
    pub kind: Kind,
    /// The value: hex for tags and digital keys, digits for PINs.
    pub value: String,
    /// Its owner on this site (none: unassigned).
    pub person: Option<u32>,
    /// Valid from (inclusive), in seconds since the epoch.
    pub valid_from: Option<i64>,
    /// Valid until (exclusive), in seconds since the epoch.
    pub valid_until: Option<i64>,
    /// Whether it goes first into IQs' offline lists.
    #[serde(default)]
    pub offline_access: bool,
}

/// A credential; its value is never shown in full.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CredentialView {
    pub id: u32,
    pub kind: Kind,
    /// The last characters of its value (tags and keys), or nothing (PINs).
    pub hint: String,
    /// Its owner.
    pub person: Option<u32>,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// A credential just changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CredentialChanged {
    pub credential: CredentialView,
    /// The revision the change produced.
    pub revision: u64,
    /// Keys this change pushed out of its site's IQ offline lists (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushed_out: Vec<PushedOut>,
}

pub(crate) fn view(c: &CredentialRecord) -> CredentialView {
    let hint = match c.kind {
        CredentialKind::Pin => String::new(),
        _ => {
            let h = hex::encode(&c.secret);
            format!("…{}", &h[h.len().saturating_sub(4)..])
        }
    };
    CredentialView {
        id: c.id.0,
        kind: Kind::of(c.kind),
        hint,
        person: c.owner.map(|p| p.0),
        revoked: c.revoked,
    }
}

/// Issue a credential (an RFID tag, a PIN or a digital key; a digital key is
/// voucher-checked as an app user).
#[utoipa::path(post, path = "/v1/sites/{site}/credentials", tag = "credentials", request_body = NewCredential,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = CredentialChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_credential(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewCredential>,
) -> Result<(StatusCode, Json<CredentialChanged>), ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let secret = CredentialValue {
        kind: body.kind,
        value: body.value.clone(),
    }
    .secret()?;
    let owner = match body.person {
        Some(p) => Some(person_of(&state, site, p).await?.id),
        None => None,
    };
    if let (Some(f), Some(u)) = (body.valid_from, body.valid_until)
        && f >= u
    {
        return Err(ApiError::invalid("`valid_from` must come before `valid_until`"));
    }
    // A digital key makes its holder an app user, unless they are one already.
    let adds_app_user = body.kind == Kind::DigitalKey
        && owner.is_none_or(|p| !state.node().snapshot().load().holds_digital_key(site, p));
    let follow_up = if adds_app_user {
        Some(check_cap(&state, site, Counted::AppUser).await?)
    } else {
        None
    };
    let instant = |t: Option<i64>| t.map(crate::auth::instant).transpose();
    let record = CredentialRecord {
        id: CredentialId(0),
        site,
        kind: body.kind.core(),
        secret,
        owner,
        valid_from: instant(body.valid_from)?,
        valid_until: instant(body.valid_until)?,
        offline_access: body.offline_access,
        revoked: false,
    };
    let store = state.node().store();
    let watch = OfflineWatch::start(&state, site);
    let written = match follow_up {
        Some(then) => {
            store
                .model()
                .create_with(&caller.actor(), Record::Credential(record.clone()), then)
                .await?
        }
        None => {
            store
                .model()
                .create(&caller.actor(), Record::Credential(record.clone()))
                .await?
        }
    };
    let id = written.id.ok_or_else(|| ApiError::internal("no credential id"))?;
    Ok((
        StatusCode::CREATED,
        Json(CredentialChanged {
            credential: view(&CredentialRecord {
                id: CredentialId(id),
                ..record
            }),
            revision: written.revision.0,
            pushed_out: watch.pushed_out(&state),
        }),
    ))
}

/// Revoke a credential.
#[utoipa::path(delete, path = "/v1/sites/{site}/credentials/{credential}", tag = "credentials",
    params(("site" = u32, Path, description = "The site"), ("credential" = u32, Path, description = "The credential")),
    responses((status = 200, body = CredentialChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_credential(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
) -> Result<Json<CredentialChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let c = credential_of(&state, site, id).await?;
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::RevokeCredential(CredentialId(id)))
        .await?;
    Ok(Json(CredentialChanged {
        credential: view(&CredentialRecord { revoked: true, ..c }),
        revision: revision.0,
        pushed_out: Vec::new(),
    }))
}

// ---------------------------------------------------------------------------------------
// decisions

/// One decision to take.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideRequest {
    pub site: u32,
    pub door: u32,
    /// What was presented.
    pub credential: CredentialValue,
    /// When, as RFC 3339 (default: now).
    pub at: Option<String>,
    /// Decide on this revision or a newer one (the revision a write returned).
    pub at_least_revision: Option<u64>,
}

/// Several decisions on one revision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBatch {
    /// The requests, answered in order.
    pub requests: Vec<DecideRequest>,
}

/// The rule that ruled.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RuleView {
    /// Its name in the bundle.
    pub name: String,
    /// Its plugin's SHA-256, hex.
    pub sha256: Option<String>,
}

/// A decision.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecisionView {
    /// `allow` or `deny`.
    pub effect: String,
    /// A stable reason code, e.g. `granted`, `no_right`.
    pub reason: String,
    /// The granting access group.
    pub group: Option<u32>,
    /// The granting group's schedule.
    pub schedule: Option<u32>,
    /// The newest revision the decision reflects: every change up to it, to people and
    /// doors or to the door's rules, was in force.
    pub revision: u64,
    /// The door rule that took part, if any.
    pub rule: Option<RuleView>,
    /// With `explain=true`: every check, in order, with its outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckView>>,
}

/// One check of an explained decision.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckView {
    /// Which check: `door`, `credential`, `revoked`, `owner`, `blocked`, `validity`,
    /// `lockdown`, `office_mode`, `rights`, then `door_rule` once per rule of the door's
    /// chain that ran, in order (once, `not_applicable`, for a door without rules); a
    /// rule's detail names it and gives its deny reason or its failure.
    pub check: String,
    /// `passed`, `failed`, `opened`, `not_applicable` or `not_reached`.
    pub outcome: String,
    /// What it looked at.
    pub detail: String,
}

/// Options of a single decision.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DecideOptions {
    /// Answer every check in order with its outcome. An explained decision is a dry run:
    /// it is not written to the entries log.
    pub explain: Option<bool>,
}

/// Decisions on one revision.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecisionBatchView {
    /// One decision per request, in order.
    pub decisions: Vec<DecisionView>,
}

fn decision_view(d: &NodeDecision) -> DecisionView {
    let (group, schedule) = match d.ruled.core.reason {
        Reason::Granted { group, schedule } => (Some(group.0), schedule.map(|s| s.0)),
        _ => (None, None),
    };
    DecisionView {
        effect: match d.effect() {
            Effect::Allow => "allow".to_owned(),
            Effect::Deny => "deny".to_owned(),
        },
        reason: d.reason_code().to_owned(),
        group,
        schedule,
        revision: d.revision.0,
        rule: d.ruled.rule.as_ref().map(|r| RuleView {
            name: r.rule.to_string(),
            sha256: r.sha256.as_ref().map(ToString::to_string),
        }),
        checks: None,
    }
}

fn explained(d: &NodeDecision, explanation: &keyway_core::Explanation) -> Vec<CheckView> {
    let mut checks: Vec<CheckView> = explanation
        .checks
        .iter()
        .map(|c| CheckView {
            check: c.name.to_owned(),
            outcome: c.outcome.code().to_owned(),
            detail: c.detail.clone(),
        })
        .collect();
    if d.ruled.rule.is_none() {
        checks.push(CheckView {
            check: "door_rule".to_owned(),
            outcome: "not_applicable".to_owned(),
            detail: "no rule on this door".to_owned(),
        });
    }
    // One check per rule that ran, in the chain's order, with what it said: the text a
    // rule denies with is what explains a `rule_denied`.
    checks.extend(d.ruled.rules().map(rule_check));
    checks
}

fn rule_check(trace: &keyway_plugin_host::RuleTrace) -> CheckView {
    use keyway_plugin_host::{FailMode, RuleOutcome};
    let rule = &trace.rule;
    let (outcome, detail) = match &trace.outcome {
        RuleOutcome::Allowed => ("passed", format!("`{rule}` allowed")),
        RuleOutcome::Abstained => ("passed", format!("`{rule}` abstained: the core's answer stands")),
        RuleOutcome::Denied { reason } => ("failed", format!("`{rule}` denied: {reason}")),
        RuleOutcome::Failed {
            error,
            fail: FailMode::Safe,
        } => (
            "passed",
            format!("`{rule}` failed ({error}); the door is fail-safe, so the rule was skipped"),
        ),
        RuleOutcome::Failed {
            error,
            fail: FailMode::Secure,
        } => (
            "failed",
            format!("`{rule}` failed ({error}); the door is fail-secure, so it stays shut"),
        ),
    };
    CheckView {
        check: "door_rule".to_owned(),
        outcome: outcome.to_owned(),
        detail,
    }
}

struct Prepared {
    door: DoorId,
    kind: CredentialKind,
    secret: Vec<u8>,
    at: jiff::Timestamp,
}

async fn prepare(state: &AppState, caller: &Caller, r: &DecideRequest) -> Result<Prepared, ApiError> {
    authorise_decisions(state, caller, SiteId(r.site)).await?;
    prepare_authorised(state, r).await
}

/// Whether `caller` may ask for decisions on `site` (a membership read in the store).
async fn authorise_decisions(state: &AppState, caller: &Caller, site: SiteId) -> Result<(), ApiError> {
    caller
        .with_capability(state, Access::Decide, site, Capability::ENTRIES_READ_ALL)
        .await
        .map(drop)
}

/// A request of a site the caller may decide on, checked against the snapshot.
async fn prepare_authorised(state: &AppState, r: &DecideRequest) -> Result<Prepared, ApiError> {
    let site = SiteId(r.site);
    if let Some(wanted) = r.at_least_revision {
        state
            .node()
            .reach(Revision(wanted), state.config().revision_wait)
            .await?;
    }
    let snapshot = state.node().snapshot().load();
    if snapshot.door_site(DoorId(r.door)) != Some(site) {
        return Err(ApiError::not_found(format!(
            "door {} does not exist on site {}",
            r.door, site.0
        )));
    }
    let at = match &r.at {
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .map_err(|_| ApiError::invalid(format!("`{t}` is not an RFC 3339 time")))?,
        None => jiff::Timestamp::now(),
    };
    Ok(Prepared {
        door: DoorId(r.door),
        kind: r.credential.kind.core(),
        secret: r.credential.secret()?,
        at,
    })
}

fn request(p: &Prepared) -> DecisionRequest<'_> {
    DecisionRequest {
        door: p.door,
        presented: Presented {
            kind: p.kind,
            secret: &p.secret,
        },
        at: p.at,
        direction: Direction::Unknown,
        source: Source::Api,
    }
}

/// Decide whether a credential opens a door, and why.
#[utoipa::path(post, path = "/v1/decide", tag = "decisions", request_body = DecideRequest, params(DecideOptions),
    responses((status = 200, body = DecisionView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<DecideOptions>,
    Json(body): Json<DecideRequest>,
) -> Result<Json<DecisionView>, ApiError> {
    let p = prepare(&state, &caller, &body).await?;
    if options.explain != Some(true) {
        let d = state.node().decide(&request(&p)).await;
        return Ok(Json(decision_view(&d)));
    }
    // One snapshot for the decision and its explanation, so both are of one revision.
    let dry = request(&p);
    let (d, snapshot) = state.node().decide_dry(&dry);
    let explanation = keyway_core::explain(&snapshot, p.door, dry.presented, p.at);
    Ok(Json(DecisionView {
        checks: Some(explained(&d, &explanation)),
        ..decision_view(&d)
    }))
}

/// Decide many requests on one revision, answered in order.
#[utoipa::path(post, path = "/v1/decide/batch", tag = "decisions", request_body = DecideBatch,
    responses((status = 200, body = DecisionBatchView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
pub(crate) async fn decide_batch(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<DecideBatch>,
) -> Result<Json<DecisionBatchView>, ApiError> {
    if body.requests.is_empty() || body.requests.len() > state.config().max_batch {
        return Err(ApiError::invalid(format!(
            "a batch has 1 to {} requests",
            state.config().max_batch
        )));
    }
    // The caller's right is read once per site of the batch, not once per request.
    let mut authorised: Vec<u32> = Vec::new();
    let mut prepared = Vec::with_capacity(body.requests.len());
    for r in &body.requests {
        if !authorised.contains(&r.site) {
            authorise_decisions(&state, &caller, SiteId(r.site)).await?;
            authorised.push(r.site);
        }
        prepared.push(prepare_authorised(&state, r).await?);
    }
    let requests: Vec<DecisionRequest<'_>> = prepared.iter().map(request).collect();
    let decisions = state.node().decide_batch(&requests).await;
    Ok(Json(DecisionBatchView {
        decisions: decisions.iter().map(decision_view).collect(),
    }))
}
