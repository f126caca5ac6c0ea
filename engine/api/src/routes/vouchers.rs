//! Vouchers: the instance operator issues them (nobody else can), a site's owner redeems
//! one, and a site shows its caps and current counts. Creating a user (person) or an
//! app user (a digital key) beyond a cap is refused with an error naming the cap and the
//! count; nobody is ever suspended silently.

use crate::auth::{Access, Caller, now};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use keyway_core::{CredentialKind, Record, SiteId};
use keyway_store::Voucher;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A voucher to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewVoucher {
    /// The code printed on it: letters, digits and dashes.
    pub code: String,
    /// The most users (people) a site may have with it.
    pub max_users: u32,
    /// The most app users (people with a digital key) a site may have with it.
    pub max_app_users: u32,
    /// From when it counts, in seconds since the epoch.
    pub valid_from: Option<i64>,
    /// Until when it counts, in seconds since the epoch.
    pub valid_until: Option<i64>,
}

/// A voucher.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VoucherView {
    /// Its id.
    pub id: i64,
    /// Its code.
    pub code: String,
    /// The site that redeemed it, if any.
    pub site: Option<u32>,
    /// The most users.
    pub max_users: u32,
    /// The most app users.
    pub max_app_users: u32,
    /// From when it counts.
    pub valid_from: Option<i64>,
    /// Until when it counts.
    pub valid_until: Option<i64>,
}

impl From<Voucher> for VoucherView {
    fn from(v: Voucher) -> Self {
        VoucherView {
            id: v.id,
            code: v.code,
            site: v.site.map(|s| s.0),
            max_users: v.max_users,
            max_app_users: v.max_app_users,
            valid_from: v.valid_from,
            valid_until: v.valid_until,
        }
    }
}

page_of!(VoucherPage, VoucherView);

/// Issue a voucher (the instance operator only).
#[utoipa::path(post, path = "/v1/vouchers", tag = "vouchers", request_body = NewVoucher,
    responses((status = 201, body = VoucherView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_voucher(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewVoucher>,
) -> Result<(StatusCode, Json<VoucherView>), ApiError> {
    caller
        .require_operator(&state, Access::Write, "issues and lists vouchers")
        .await?;
    let v = state
        .node()
        .store()
        .create_voucher(
            &caller.actor(),
            &body.code,
            body.max_users,
            body.max_app_users,
            body.valid_from,
            body.valid_until,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(v.into())))
}

/// Every voucher (the instance operator only).
#[utoipa::path(get, path = "/v1/vouchers", tag = "vouchers", params(Pagination),
    responses((status = 200, body = VoucherPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub(crate) async fn list_vouchers(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Pagination>,
) -> Result<Json<VoucherPage>, ApiError> {
    caller
        .require_operator(&state, Access::Read, "issues and lists vouchers")
        .await?;
    let all = state.node().store().vouchers(None).await?;
    let (page, next_cursor) = p.page(all, |v| v.id)?;
    Ok(Json(VoucherPage {
        items: page.into_iter().map(VoucherView::from).collect(),
        next_cursor,
    }))
}

/// What counts against a voucher.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) struct Counts {
    /// People on the site.
    pub users: u32,
    /// People with a digital key (app users).
    pub app_users: u32,
}

/// A site's licence: its voucher, caps and counts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Licence {
    /// The voucher in force, if any.
    pub voucher: Option<VoucherView>,
    /// The current counts.
    pub counts: Counts,
}

/// The counts of `site` on the current snapshot.
pub(crate) fn counts(state: &AppState, site: SiteId) -> Counts {
    let snapshot = state.node().snapshot().load_full();
    let mut users = 0u32;
    let mut app_people = std::collections::BTreeSet::new();
    for record in snapshot.records() {
        match record {
            Record::Person(p) if p.site == site => users = users.saturating_add(1),
            Record::Credential(c) if c.site == site && c.kind == CredentialKind::DigitalKey && !c.revoked => {
                app_people.insert(c.owner.map_or(u64::from(c.id.0) << 32, |p| u64::from(p.0)));
            }
            _ => {}
        }
    }
    Counts {
        users,
        app_users: u32::try_from(app_people.len()).unwrap_or(u32::MAX),
    }
}

/// What a write adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// One more user.
    User,
    /// One more app user.
    AppUser,
}

/// Refuse a write that would take `site` past its voucher's cap for `what`.
pub(crate) async fn check_cap(state: &AppState, site: SiteId, what: Counted) -> Result<(), ApiError> {
    let Some(v) = state.node().store().site_voucher(site, now()).await? else {
        return Err(ApiError::Unprocessable {
            code: "voucher_required",
            message: format!(
                "site {} has no valid voucher; its owner must redeem one before adding users",
                site.0
            ),
            details: Vec::new(),
        });
    };
    let c = counts(state, site);
    let (max, current, noun, cap) = match what {
        Counted::User => (v.max_users, c.users, "users", "max_users"),
        Counted::AppUser => (v.max_app_users, c.app_users, "app users", "max_app_users"),
    };
    if current < max {
        return Ok(());
    }
    Err(ApiError::Unprocessable {
        code: "voucher_cap",
        message: format!(
            "the site is full: voucher `{}` allows {max} {noun} (`{cap}`) and the site has {current}; \
             remove some or redeem a larger voucher",
            v.code
        ),
        details: vec![format!("{cap}={max}"), format!("count={current}")],
    })
}

/// After a write added one of `what` to `site`: when the count just reached 90% of the
/// voucher's cap, queue a `voucher.near_cap` event, once per crossing. A failure to
/// queue it is logged; the write stands.
pub(crate) async fn note_near_cap(state: &AppState, site: SiteId, what: Counted) {
    let store = state.node().store();
    let Ok(Some(v)) = store.site_voucher(site, now()).await else {
        return;
    };
    let c = counts(state, site);
    let (max, current, cap) = match what {
        Counted::User => (v.max_users, c.users, "max_users"),
        Counted::AppUser => (v.max_app_users, c.app_users, "max_app_users"),
    };
    let threshold = (u64::from(max) * 9).div_ceil(10);
    if max == 0 || u64::from(current) != threshold {
        return;
    }
    let data = serde_json::json!({
        "voucher": v.code, "cap": cap, "max": max, "count": current,
        "detail": format!("{current} of {max} ({cap})"),
    });
    if let Err(e) = store.enqueue_event(site, "voucher.near_cap", now(), data).await {
        tracing::warn!(error = %e, site = site.0, "voucher.near_cap event not queued");
    }
}

/// A voucher code to redeem.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redeem {
    /// The code.
    pub code: String,
}

/// Redeem a voucher on a site (its owner only).
#[utoipa::path(post, path = "/v1/sites/{site}/voucher", tag = "vouchers", request_body = Redeem,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Licence), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn redeem(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<Redeem>,
) -> Result<Json<Licence>, ApiError> {
    let site = SiteId(site);
    let m = caller.member(&state, Access::Write, site).await?;
    if !m.is_owner {
        return Err(ApiError::forbidden("only the site's owner redeems vouchers"));
    }
    let v = state
        .node()
        .store()
        .redeem_voucher(&caller.actor(), &body.code, site, now())
        .await?;
    Ok(Json(Licence {
        voucher: Some(v.into()),
        counts: counts(&state, site),
    }))
}

/// A site's voucher, caps and counts.
#[utoipa::path(get, path = "/v1/sites/{site}/voucher", tag = "vouchers",
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = Licence), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn licence(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
) -> Result<Json<Licence>, ApiError> {
    let site = SiteId(site);
    caller.member(&state, Access::Read, site).await?;
    let v = state.node().store().site_voucher(site, now()).await?;
    Ok(Json(Licence {
        voucher: v.map(VoucherView::from),
        counts: counts(&state, site),
    }))
}
