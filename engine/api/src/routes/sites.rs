//! Sites and the people who administer them: create a site (its creator owns it), list
//! the caller's sites with their role on each, members (change a role, remove one),
//! ownership transfer, and invitations by e-mail (create, list, revoke, accept).
//!
//! Every check goes through the role table of the bundle in force:
//!
//! | action | needs |
//! |--------|-------|
//! | read a site, list members | membership |
//! | invite with role R, list or revoke invitations | `people.invite` and may grant R |
//! | change a member's role from A to B | `rights.grant`, may revoke A and may grant B |
//! | remove a member with role A | `rights.grant` and may revoke A |
//! | transfer ownership to a member with role R | being the owner, and may transfer to R |

use crate::auth::{Access, Caller, now};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use keyway_core::{CalendarId, CalendarRecord, Change, HolidayCalendar, Record, RoleId, SiteId, SiteRecord};
use keyway_plugin_host::{Capability, RoleTable};
use keyway_store::{Invitation, Membership, Named, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new site.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSite {
    pub name: String,
    /// Its IANA time zone, e.g. `Europe/Madrid`.
    pub time_zone: String,
    /// Its holidays, as `YYYY-MM-DD` dates (none: no holiday calendar).
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// A site, with the caller's role on it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SiteView {
    pub id: u32,
    pub name: String,
    pub time_zone: String,
    /// Whether the whole site is in lockdown.
    pub lockdown: bool,
    /// The caller's role id there.
    pub role: u16,
    /// The caller's role name there.
    pub role_name: String,
    /// Whether the caller owns it.
    pub owner: bool,
}

/// A site just made.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedSite {
    pub site: SiteView,
    /// The revision that created it.
    pub revision: u64,
}

page_of!(SitePage, SiteView);

fn role_id(roles: &RoleTable, name: &str) -> Result<RoleId, ApiError> {
    roles
        .by_name(name)
        .ok_or_else(|| ApiError::invalid(format!("the bundle in force has no role `{name}`")))
}

fn role_name(roles: &RoleTable, role: RoleId) -> String {
    roles.name(role).unwrap_or("unknown").to_owned()
}

fn site_name(raw: &str) -> Result<&str, ApiError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("a site needs a name"));
    }
    if name.chars().count() > keyway_store::MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "a name has at most {} characters and no control characters",
            keyway_store::MAX_NAME
        )));
    }
    Ok(name)
}

fn time_zone(raw: &str) -> Result<TimeZone, ApiError> {
    TimeZone::get(raw).map_err(|_| ApiError::invalid(format!("`{raw}` is not an IANA time zone")))
}

/// The most holidays a site's calendar holds.
const MAX_HOLIDAYS: usize = 1000;

fn holidays(raw: &[String]) -> Result<Vec<Date>, ApiError> {
    if raw.len() > MAX_HOLIDAYS {
        return Err(ApiError::invalid(format!(
            "a holiday calendar holds at most {MAX_HOLIDAYS} dates"
        )));
    }
    raw.iter()
        .map(|d| {
            d.parse::<Date>()
                .map_err(|_| ApiError::invalid(format!("`{d}` is not a date (YYYY-MM-DD)")))
        })
        .collect()
}

/// Changes to a site; what is absent stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SiteChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new IANA time zone: schedules and door rules follow the new wall clock at once.
    pub time_zone: Option<String>,
    /// The whole holiday calendar, as `YYYY-MM-DD` dates (`[]`: none).
    pub holidays: Option<Vec<String>>,
}

/// A site as changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UpdatedSite {
    pub site: SiteView,
    /// The revision of the change (the current one when only the name changed, which
    /// decisions do not read).
    pub revision: u64,
}

/// Change a site's name, time zone or holiday calendar (site administration: the
/// `door.lockdown` capability, held by site admins and the owner).
#[utoipa::path(patch, path = "/v1/sites/{site}", tag = "sites", request_body = SiteChanges,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = UpdatedSite), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn update_site(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<SiteChanges>,
) -> Result<Json<UpdatedSite>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::DOOR_LOCKDOWN)
        .await?;
    // Everything is checked before anything is written.
    let name = body.name.as_deref().map(site_name).transpose()?;
    let zone = body.time_zone.as_deref().map(time_zone).transpose()?;
    let dates = body.holidays.as_deref().map(holidays).transpose()?;
    if name.is_none() && zone.is_none() && dates.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give a name, a time zone or holidays",
        ));
    }
    let store = state.node().store();
    let actor = caller.actor();
    let Some(Record::Site(mut record)) = store.model().record(Target::Site(site)).await? else {
        return Err(ApiError::not_found(format!("site {} does not exist", site.0)));
    };
    let mut revision = store.status().applied;
    if let Some(dates) = dates {
        record.holiday_calendar = match (dates.is_empty(), record.holiday_calendar) {
            (true, _) => None,
            (false, Some(id)) => {
                revision = store
                    .model()
                    .write(
                        &actor,
                        Change::PutCalendar(CalendarRecord {
                            id,
                            calendar: HolidayCalendar::new(dates),
                        }),
                    )
                    .await?;
                Some(id)
            }
            (false, None) => {
                let written = store
                    .model()
                    .create(
                        &actor,
                        Record::Calendar(CalendarRecord {
                            id: CalendarId(0),
                            calendar: HolidayCalendar::new(dates),
                        }),
                    )
                    .await?;
                revision = written.revision;
                Some(CalendarId(
                    written.id.ok_or_else(|| ApiError::internal("no calendar id"))?,
                ))
            }
        };
    }
    if let Some(zone) = zone {
        record.time_zone = zone;
    }
    if body.time_zone.is_some() || body.holidays.is_some() {
        revision = store.model().write(&actor, Change::PutSite(record)).await?;
    }
    if let Some(name) = name {
        store.names().set(&actor, Named::Site, site.0, name, now()).await?;
    }
    let m = caller.member(&state, Access::Read, site).await?;
    Ok(Json(UpdatedSite {
        site: site_view(&state, &m).await?,
        revision: revision.0,
    }))
}

async fn site_view(state: &AppState, m: &Membership) -> Result<SiteView, ApiError> {
    let store = state.node().store();
    let Some(Record::Site(site)) = store.model().record(Target::Site(m.site)).await? else {
        return Err(ApiError::not_found(format!("site {} does not exist", m.site.0)));
    };
    let name = store.names().get(Named::Site, m.site.0).await?.unwrap_or_default();
    let bundle = state.node().policy().bundle();
    Ok(SiteView {
        id: m.site.0,
        name,
        time_zone: site.time_zone.iana_name().unwrap_or("UTC").to_owned(),
        lockdown: site.lockdown,
        role: m.role.0,
        role_name: role_name(bundle.roles(), m.role),
        owner: m.is_owner,
    })
}

/// Create a site; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/sites", tag = "sites", request_body = NewSite,
    responses((status = 201, body = CreatedSite), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)))]
pub(crate) async fn create_site(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewSite>,
) -> Result<(StatusCode, Json<CreatedSite>), ApiError> {
    caller.allow(Access::Write, None)?;
    let name = site_name(&body.name)?;
    let time_zone = time_zone(&body.time_zone)?;
    let dates = holidays(&body.holidays)?;
    let bundle = state.node().policy().bundle();
    let owner_role = role_id(bundle.roles(), "owner")?;
    let store = state.node().store();
    let actor = caller.actor();
    let holiday_calendar = if dates.is_empty() {
        None
    } else {
        let written = store
            .model()
            .create(
                &actor,
                Record::Calendar(CalendarRecord {
                    id: CalendarId(0),
                    calendar: HolidayCalendar::new(dates),
                }),
            )
            .await?;
        Some(CalendarId(
            written.id.ok_or_else(|| ApiError::internal("no calendar id"))?,
        ))
    };
    let written = store
        .model()
        .create(
            &actor,
            Record::Site(SiteRecord {
                id: SiteId(0),
                time_zone,
                holiday_calendar,
                lockdown: false,
            }),
        )
        .await?;
    let site = SiteId(written.id.ok_or_else(|| ApiError::internal("no site id"))?);
    store.names().set(&actor, Named::Site, site.0, name, now()).await?;
    let m = store
        .memberships()
        .set_first_owner(&actor, site, caller.account, owner_role, now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedSite {
            site: site_view(&state, &m).await?,
            revision: written.revision.0,
        }),
    ))
}

/// The caller's sites, each with the caller's role there.
#[utoipa::path(get, path = "/v1/sites", tag = "sites", params(Pagination),
    responses((status = 200, body = SitePage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub(crate) async fn list_sites(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Pagination>,
) -> Result<Json<SitePage>, ApiError> {
    caller.allow(Access::Read, None)?;
    let mut memberships = state.node().store().memberships().of_account(caller.account).await?;
    if let crate::auth::Via::Token(t) = &caller.via
        && let Some(own) = t.site
    {
        memberships.retain(|m| m.site == own);
    }
    let (page, next_cursor) = p.page(memberships, |m| i64::from(m.site.0))?;
    let mut items = Vec::with_capacity(page.len());
    for m in &page {
        items.push(site_view(&state, m).await?);
    }
    Ok(Json(SitePage { items, next_cursor }))
}

/// One site, with the caller's role.
#[utoipa::path(get, path = "/v1/sites/{site}", tag = "sites",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = SiteView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_site(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<SiteView>, ApiError> {
    let m = caller.member(&state, Access::Read, SiteId(site)).await?;
    Ok(Json(site_view(&state, &m).await?))
}

/// A member of a site.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberView {
    pub account: i64,
    /// Its e-mail.
    pub email: String,
    /// Its role id.
    pub role: u16,
    pub role_name: String,
    /// Whether it owns the site.
    pub owner: bool,
    /// The person record it opens doors with, if linked.
    pub person: Option<u32>,
}

page_of!(MemberPage, MemberView);

async fn member_view(state: &AppState, roles: &RoleTable, m: Membership) -> Result<MemberView, ApiError> {
    let email = state
        .node()
        .store()
        .accounts()
        .get(m.account)
        .await?
        .map(|a| a.email)
        .unwrap_or_default();
    Ok(MemberView {
        account: m.account.get(),
        email,
        role: m.role.0,
        role_name: role_name(roles, m.role),
        owner: m.is_owner,
        person: m.person.map(|p| p.0),
    })
}

/// A site's members.
#[utoipa::path(get, path = "/v1/sites/{site}/members", tag = "members", params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = MemberPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<MemberPage>, ApiError> {
    caller.member(&state, Access::Read, SiteId(site)).await?;
    let members = state.node().store().memberships().of_site(SiteId(site)).await?;
    let (page, next_cursor) = p.page(members, |m| m.account.get())?;
    let bundle = state.node().policy().bundle();
    let mut items = Vec::with_capacity(page.len());
    for m in page {
        items.push(member_view(&state, bundle.roles(), m).await?);
    }
    Ok(Json(MemberPage { items, next_cursor }))
}

/// A new role for a member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleChange {
    /// The role's name in the bundle in force, e.g. `site_admin`.
    pub role: String,
}

async fn target_member(state: &AppState, site: SiteId, account: i64) -> Result<Membership, ApiError> {
    state
        .node()
        .store()
        .memberships()
        .get(site, keyway_store::AccountId(account))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {account} is not a member of site {}", site.0)))
}

/// Change a member's role.
#[utoipa::path(put, path = "/v1/sites/{site}/members/{account}/role", tag = "members", request_body = RoleChange,
    params(("site" = u32, Path, description = "The site"), ("account" = i64, Path, description = "The member's account")),
    responses((status = 200, body = MemberView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, account)): Path<(u32, i64)>,
    Json(body): Json<RoleChange>,
) -> Result<Json<MemberView>, ApiError> {
    let site = SiteId(site);
    let (me, bundle) = caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    let roles = bundle.roles();
    let target = target_member(&state, site, account).await?;
    let new_role = role_id(roles, &body.role)?;
    if target.is_owner {
        return Err(ApiError::Conflict {
            code: "owner_role",
            message: "the owner's role changes only by transferring ownership".to_owned(),
        });
    }
    if !roles.may_revoke(me.role, target.role) || !roles.may_grant(me.role, new_role) {
        return Err(ApiError::forbidden(format!(
            "your role `{}` may not change `{}` to `{}`",
            role_name(roles, me.role),
            role_name(roles, target.role),
            body.role
        )));
    }
    let m = state
        .node()
        .store()
        .memberships()
        .put(
            &caller.actor(),
            site,
            keyway_store::AccountId(account),
            new_role,
            target.person,
            now(),
        )
        .await?;
    Ok(Json(member_view(&state, roles, m).await?))
}

/// Remove a member.
#[utoipa::path(delete, path = "/v1/sites/{site}/members/{account}", tag = "members",
    params(("site" = u32, Path, description = "The site"), ("account" = i64, Path, description = "The member's account")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, account)): Path<(u32, i64)>,
) -> Result<StatusCode, ApiError> {
    let site = SiteId(site);
    let (me, bundle) = caller
        .with_capability(&state, Access::Write, site, Capability::RIGHTS_GRANT)
        .await?;
    let target = target_member(&state, site, account).await?;
    if target.is_owner {
        return Err(ApiError::Conflict {
            code: "in_use",
            message: "the owner cannot be removed; transfer ownership first".to_owned(),
        });
    }
    if !bundle.roles().may_revoke(me.role, target.role) {
        return Err(ApiError::forbidden(format!(
            "your role `{}` may not remove a `{}`",
            role_name(bundle.roles(), me.role),
            role_name(bundle.roles(), target.role)
        )));
    }
    state
        .node()
        .store()
        .memberships()
        .remove(&caller.actor(), site, keyway_store::AccountId(account), now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who receives ownership.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Transfer {
    /// The member's account; it must hold a role the owner may transfer to (a site admin).
    pub account: i64,
}

/// The two memberships after a transfer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Transferred {
    /// The former owner, now a site admin.
    pub former_owner: MemberView,
    /// The new owner.
    pub owner: MemberView,
}

/// Transfer ownership (the owner only, to a site admin; the former owner becomes a site
/// admin).
#[utoipa::path(post, path = "/v1/sites/{site}/transfer", tag = "members", request_body = Transfer,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Transferred), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn transfer(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<Transfer>,
) -> Result<Json<Transferred>, ApiError> {
    let site = SiteId(site);
    let me = caller.member(&state, Access::Write, site).await?;
    let bundle = state.node().policy().bundle();
    let roles = bundle.roles();
    if !me.is_owner {
        return Err(ApiError::forbidden("only the site's owner can transfer its ownership"));
    }
    let target = target_member(&state, site, body.account).await?;
    if target.account == me.account {
        return Err(ApiError::invalid("you own the site already"));
    }
    if !roles.may_transfer_ownership(me.role, target.role) {
        return Err(ApiError::Unprocessable {
            code: "transfer_refused",
            message: format!(
                "ownership can pass only to a site admin; account {} is a `{}`",
                target.account,
                role_name(roles, target.role)
            ),
            details: Vec::new(),
        });
    }
    let owner_role = role_id(roles, "owner")?;
    let former_role = role_id(roles, "site_admin")?;
    let (old, new) = state
        .node()
        .store()
        .memberships()
        .transfer_ownership(
            &caller.actor(),
            site,
            me.account,
            target.account,
            owner_role,
            former_role,
            now(),
        )
        .await?;
    Ok(Json(Transferred {
        former_owner: member_view(&state, roles, old).await?,
        owner: member_view(&state, roles, new).await?,
    }))
}

/// An invitation to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewInvitation {
    /// Who to invite.
    pub email: String,
    /// The role they get, by name (e.g. `super_user`).
    pub role: String,
    /// The number (UID, in hex) of a tag of the site that belongs to nobody: accepting
    /// the invitation makes a person for the new member and assigns them the tag.
    pub tag: Option<String>,
}

/// An invitation, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvitationView {
    pub id: i64,
    pub site: u32,
    /// Who is invited.
    pub email: String,
    /// The role they get.
    pub role: String,
    /// When it stops working.
    pub expires_at: i64,
    /// When it was accepted, if it was.
    pub accepted_at: Option<i64>,
    /// The credential (a tag) accepting it assigns, if any.
    pub credential: Option<u32>,
}

page_of!(InvitationPage, InvitationView);

fn invitation_view(roles: &RoleTable, i: Invitation) -> InvitationView {
    InvitationView {
        id: i.id.get(),
        site: i.site.0,
        email: i.email,
        role: role_name(roles, i.role),
        expires_at: i.expires_at.as_second(),
        accepted_at: i.accepted_at.map(jiff::Timestamp::as_second),
        credential: i.credential.map(|c| c.0),
    }
}

/// Invite someone by e-mail with a role; the mail carries a single-use link.
#[utoipa::path(post, path = "/v1/sites/{site}/invitations", tag = "members", request_body = NewInvitation,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 201, body = InvitationView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<NewInvitation>,
) -> Result<(StatusCode, Json<InvitationView>), ApiError> {
    let site = SiteId(site);
    let (me, bundle) = caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let roles = bundle.roles();
    let role = role_id(roles, &body.role)?;
    if !roles.may_grant(me.role, role) {
        return Err(ApiError::forbidden(format!(
            "your role `{}` may not grant `{}`",
            role_name(roles, me.role),
            body.role
        )));
    }
    let credential = match &body.tag {
        Some(tag) => Some(crate::routes::keys::unassigned_tag(&state, site, tag)?),
        None => None,
    };
    let lifetime = i64::try_from(state.config().invitation_lifetime.as_secs()).unwrap_or(7 * 86_400);
    let (invitation, issued) = state
        .node()
        .store()
        .memberships()
        .create_invitation(
            &caller.actor(),
            site,
            &body.email,
            role,
            credential,
            Some(caller.account),
            crate::auth::after(now(), lifetime),
            now(),
        )
        .await?;
    let site_name = state
        .node()
        .store()
        .names()
        .get(Named::Site, site.0)
        .await?
        .unwrap_or_default();
    let link = format!(
        "{}/invitations/accept?token={}",
        state.config().public_url,
        issued.secret
    );
    let mail = format!(
        "You are invited to the Keyway site `{site_name}` as `{}`.\n\
         Sign in (or sign up) and open this link to accept:\n\n{link}\n",
        body.role
    );
    state
        .send_mail(&invitation.email, "You are invited to a Keyway site", &mail)
        .await?;
    Ok((StatusCode::CREATED, Json(invitation_view(roles, invitation))))
}

/// A site's invitations.
#[utoipa::path(get, path = "/v1/sites/{site}/invitations", tag = "members", params(("site" = u32, Path, description = "The site"), Pagination),
    responses((status = 200, body = InvitationPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_invitations(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(p): Query<Pagination>,
) -> Result<Json<InvitationPage>, ApiError> {
    let site = SiteId(site);
    let (_, bundle) = caller
        .with_capability(&state, Access::Read, site, Capability::PEOPLE_INVITE)
        .await?;
    let all = state.node().store().memberships().invitations(site).await?;
    let (page, next_cursor) = p.page(all, |i| i.id.get())?;
    Ok(Json(InvitationPage {
        items: page.into_iter().map(|i| invitation_view(bundle.roles(), i)).collect(),
        next_cursor,
    }))
}

/// Withdraw an invitation.
#[utoipa::path(delete, path = "/v1/sites/{site}/invitations/{invitation}", tag = "members",
    params(("site" = u32, Path, description = "The site"), ("invitation" = i64, Path, description = "The invitation")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, i64)>,
) -> Result<StatusCode, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let store = state.node().store();
    if !store
        .memberships()
        .invitations(site)
        .await?
        .iter()
        .any(|i| i.id == keyway_store::InvitationId(id))
    {
        return Err(ApiError::not_found(format!(
            "invitation {id} does not exist on site {}",
            site.0
        )));
    }
    store
        .memberships()
        .revoke_invitation(&caller.actor(), keyway_store::InvitationId(id), now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The secret of an invitation link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Accept {
    /// The `token` of the invitation link.
    pub token: String,
}

/// Accept an invitation as the signed-in account.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "members", request_body = Accept,
    responses((status = 200, body = SiteView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Accept>,
) -> Result<Json<SiteView>, ApiError> {
    caller.allow(Access::Account, None)?;
    let m = crate::routes::keys::accept(&state, &caller, &body.token).await?;
    Ok(Json(site_view(&state, &m).await?))
}
