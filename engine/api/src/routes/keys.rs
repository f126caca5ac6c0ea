//! Keys that belong to nobody, and the rest of a credential's life after it is issued.
//!
//! A tag whose owner was removed, or that was registered before its holder, belongs to
//! nobody: it opens nothing (`unassigned_credential`) until it is assigned to a person,
//! here or by inviting someone with the tag's number (accepting the invitation assigns
//! it; see `sites::invite`). A revoked credential can be restored. Guest keys are
//! credentials with `valid_from` and `valid_until` (`POST .../credentials`).
//!
//! | action | needs |
//! |--------|-------|
//! | list unassigned credentials, assign one, restore one, offline access | `people.invite` |
//!
//! Offline access puts a key first in the offline lists of its doors' IQs: an IQ holds
//! 10,000 tags and 10,000 remote users, and when a site has more, keys with offline
//! access on go in before the rest (the IQ's list size and what did not fit show in
//! `GET /v1/sites/{site}/iqs`).

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::model::{CredentialChanged, CredentialView, Kind, credential_of, person_of, view};
use crate::routes::offline::OfflineWatch;
use crate::routes::vouchers::{Counted, check_cap};
use crate::routes::{DEFAULT_LIMIT, MAX_LIMIT, page_of};
use crate::state::AppState;
use axum::extract::State;
use keyway_core::{Change, CredentialId, CredentialKind, CredentialRecord, PersonId, PersonRecord, Record, SiteId};
use keyway_plugin_host::Capability;
use keyway_store::{Membership, Named, StoreError};
use serde::Deserialize;
use utoipa::ToSchema;

/// Which unassigned credentials, and which page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UnassignedQuery {
    /// Only of this kind (`tag`, `pin`, `digital_key`).
    pub kind: Option<Kind>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

page_of!(CredentialPage, CredentialView);

/// The person a credential goes to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Assign {
    /// A person of the site.
    pub person: u32,
}

/// The site's credentials that belong to nobody (tags of removed people, tags
/// registered before their holder), oldest first.
#[utoipa::path(get, path = "/v1/sites/{site}/credentials/unassigned", tag = "credentials",
    params(("site" = u32, Path, description = "The site"), UnassignedQuery),
    responses((status = 200, body = CredentialPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_unassigned(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Query(q): Query<UnassignedQuery>,
) -> Result<axum::Json<CredentialPage>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Read, site, Capability::PEOPLE_INVITE)
        .await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("`limit` must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = match &q.cursor {
        None => 0,
        Some(c) => c
            .parse::<u32>()
            .map_err(|_| ApiError::bad_request("bad_cursor", format!("`{c}` is not a cursor of this list")))?,
    };
    let ids = state
        .node()
        .store()
        .unassigned_credentials(site, q.kind.map(Kind::core), after, limit.saturating_add(1))
        .await?;
    let more = ids.len() > limit as usize;
    let snapshot = state.node().snapshot().load();
    let items: Vec<CredentialView> = ids
        .iter()
        .take(limit as usize)
        .filter_map(|id| snapshot.credential_record(*id))
        .map(|c| view(&c))
        .collect();
    let next_cursor = if more {
        ids.get(limit as usize - 1).map(|id| id.0.to_string())
    } else {
        None
    };
    Ok(axum::Json(CredentialPage { items, next_cursor }))
}

/// Assign a credential that belongs to nobody to a person of the site.
#[utoipa::path(put, path = "/v1/sites/{site}/credentials/{credential}/person", tag = "credentials",
    request_body = Assign,
    params(("site" = u32, Path, description = "The site"), ("credential" = u32, Path, description = "The credential")),
    responses((status = 200, body = CredentialChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
    Json(body): Json<Assign>,
) -> Result<axum::Json<CredentialChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let credential = credential_of(&state, site, id).await?;
    let person = person_of(&state, site, body.person).await?;
    let watch = OfflineWatch::start(&state, site);
    let (record, revision) = assign_to(&state, &caller.actor(), credential, person.id).await?;
    Ok(axum::Json(CredentialChanged {
        credential: view(&record),
        revision,
        pushed_out: watch.pushed_out(&state),
    }))
}

/// Give `credential` to `person`, unless it belongs to someone else already.
pub(crate) async fn assign_to(
    state: &AppState,
    actor: &str,
    credential: CredentialRecord,
    person: PersonId,
) -> Result<(CredentialRecord, u64), ApiError> {
    if let Some(owner) = credential.owner
        && owner != person
    {
        return Err(ApiError::Conflict {
            code: "assigned",
            message: format!(
                "credential {} belongs to person {}; only a credential that belongs to nobody is assigned",
                credential.id.0, owner.0
            ),
        });
    }
    let record = CredentialRecord {
        owner: Some(person),
        ..credential
    };
    let revision = state
        .node()
        .store()
        .model()
        .write(actor, Change::PutCredential(record.clone()))
        .await?;
    Ok((record, revision.0))
}

/// Lift a credential's revocation.
#[utoipa::path(post, path = "/v1/sites/{site}/credentials/{credential}/restore", tag = "credentials",
    params(("site" = u32, Path, description = "The site"), ("credential" = u32, Path, description = "The credential")),
    responses((status = 200, body = CredentialChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
) -> Result<axum::Json<CredentialChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let c = credential_of(&state, site, id).await?;
    // Restoring a digital key makes its holder an app user again, unless they are one.
    let adds_app_user = c.revoked
        && c.kind == CredentialKind::DigitalKey
        && c.owner
            .is_none_or(|p| !state.node().snapshot().load().holds_digital_key(site, p));
    let change = Change::RestoreCredential(CredentialId(id));
    let store = state.node().store();
    let watch = OfflineWatch::start(&state, site);
    let revision = if adds_app_user {
        let then = check_cap(&state, site, Counted::AppUser).await?;
        store.model().write_with(&caller.actor(), change, then).await?
    } else {
        store.model().write(&caller.actor(), change).await?
    };
    Ok(axum::Json(CredentialChanged {
        credential: view(&CredentialRecord { revoked: false, ..c }),
        revision: revision.0,
        pushed_out: watch.pushed_out(&state),
    }))
}

/// Whether a key goes first into its IQs' offline lists.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfflineAccess {
    /// On or off.
    pub enabled: bool,
}

/// Turn a key's offline access on or off.
#[utoipa::path(put, path = "/v1/sites/{site}/credentials/{credential}/offline-access", tag = "credentials",
    request_body = OfflineAccess,
    params(("site" = u32, Path, description = "The site"), ("credential" = u32, Path, description = "The credential")),
    responses((status = 200, body = CredentialChanged), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn set_offline_access(
    State(state): State<AppState>,
    caller: Caller,
    Path((site, id)): Path<(u32, u32)>,
    Json(body): Json<OfflineAccess>,
) -> Result<axum::Json<CredentialChanged>, ApiError> {
    let site = SiteId(site);
    caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    let c = credential_of(&state, site, id).await?;
    let record = CredentialRecord {
        offline_access: body.enabled,
        ..c
    };
    let watch = OfflineWatch::start(&state, site);
    let revision = state
        .node()
        .store()
        .model()
        .write(&caller.actor(), Change::PutCredential(record.clone()))
        .await?;
    Ok(axum::Json(CredentialChanged {
        credential: view(&record),
        revision: revision.0,
        pushed_out: watch.pushed_out(&state),
    }))
}

/// The tag of `site` whose UID is `tag` (hex), if it belongs to nobody.
pub(crate) fn unassigned_tag(state: &AppState, site: SiteId, tag: &str) -> Result<CredentialId, ApiError> {
    let uid =
        hex::decode(tag.trim()).map_err(|_| ApiError::invalid("a tag number is its UID in hex, two digits a byte"))?;
    let record = state
        .node()
        .snapshot()
        .load()
        .credential_by_secret(site, CredentialKind::Tag, &uid)
        .ok_or_else(|| ApiError::not_found(format!("no tag `{}` on site {}", tag.trim(), site.0)))?;
    if let Some(owner) = record.owner {
        return Err(ApiError::Conflict {
            code: "assigned",
            message: format!("tag `{}` belongs to person {}", tag.trim(), owner.0),
        });
    }
    Ok(record.id)
}

fn invalid_invitation() -> ApiError {
    ApiError::Unprocessable {
        code: "invalid_invitation",
        message: "the invitation link is invalid, used or expired".to_owned(),
        details: Vec::new(),
    }
}

/// Accept the invitation whose secret is `token` as the caller. An invitation that hands
/// over a tag first makes a person for the new member (voucher-checked, with the invited
/// role, named by the invited e-mail), links the membership to it and assigns the tag,
/// provided it still belongs to nobody.
pub(crate) async fn accept(state: &AppState, caller: &Caller, token: &str) -> Result<Membership, ApiError> {
    let store = state.node().store();
    let now = crate::auth::now();
    let map = |e: StoreError| match e {
        StoreError::Invalid { .. } => invalid_invitation(),
        other => other.into(),
    };
    let invitation = store
        .memberships()
        .invitation_by_secret(token, now)
        .await?
        .ok_or_else(invalid_invitation)?;
    let Some(credential) = invitation.credential else {
        let (_, m) = store
            .memberships()
            .accept_invitation(token, caller.account, None, now)
            .await
            .map_err(map)?;
        return Ok(m);
    };
    let site = invitation.site;
    let tag = match state.node().snapshot().load().credential_record(credential) {
        Some(c) if c.site == site && c.owner.is_none() => c,
        _ => {
            return Err(ApiError::Conflict {
                code: "assigned",
                message: "the tag of this invitation belongs to someone else now, or is gone; ask for a new invitation"
                    .to_owned(),
            });
        }
    };
    if store.memberships().get(site, caller.account).await?.is_some() {
        return Err(ApiError::Conflict {
            code: "duplicate",
            message: format!("you are a member of site {} already", site.0),
        });
    }
    let then = check_cap(state, site, Counted::User).await?;
    let actor = caller.actor();
    let written = store
        .model()
        .create_with(
            &actor,
            Record::Person(PersonRecord {
                id: PersonId(0),
                site,
                role: invitation.role,
                blocked: false,
            }),
            then,
        )
        .await?;
    let person = PersonId(written.id.ok_or_else(|| ApiError::internal("no person id"))?);
    let accepted = store
        .memberships()
        .accept_invitation(token, caller.account, Some(person), now)
        .await;
    let m = match accepted {
        Ok((_, m)) => m,
        Err(e) => {
            // Nobody got the invitation: the person made for it goes again.
            if let Err(undo) = store.model().write(&actor, Change::RemovePerson(person)).await {
                tracing::warn!(error = %undo, "a person made for a refused invitation was not removed");
            }
            return Err(map(e));
        }
    };
    store
        .names()
        .set(&actor, Named::Person, person.0, &invitation.email, crate::auth::now())
        .await?;
    assign_to(state, &actor, tag, person).await?;
    Ok(m)
}
