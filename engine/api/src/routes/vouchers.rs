//! Vouchers: the instance operator issues them (nobody else can), a site's owner redeems
//! one, and a site shows its caps and current counts. Creating a user (person) or an
//! app user (a digital key) beyond a cap is refused with an error naming the cap and the
//! count; nobody is ever suspended silently.

use crate::auth::{Access, Caller, instant, now};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path, Query};
use crate::routes::{Pagination, page_of};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use keyway_core::{SiteId, VoucherCounts};
use keyway_plugin_host::abi::{
    Counted as AbiCounted, Counts as AbiCounts, IssuedVoucher, VoucherInput, VoucherTerms, VoucherVerdict,
};
use keyway_store::{FollowUp, PendingEvent, Voucher};
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
    pub id: i64,
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
            id: v.id.get(),
            code: v.code,
            site: v.site.map(|s| s.0),
            max_users: v.max_users,
            max_app_users: v.max_app_users,
            valid_from: v.valid_from.map(jiff::Timestamp::as_second),
            valid_until: v.valid_until.map(jiff::Timestamp::as_second),
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
        .memberships()
        .create_voucher(
            &caller.actor(),
            &body.code,
            body.max_users,
            body.max_app_users,
            body.valid_from.map(instant).transpose()?,
            body.valid_until.map(instant).transpose()?,
            now(),
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
    let all = state.node().store().memberships().vouchers(None).await?;
    let (page, next_cursor) = p.page(all, |v| v.id.get())?;
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
    let c = state.node().snapshot().load().voucher_counts(site);
    Counts {
        users: c.people,
        app_users: c.app_users,
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

impl Counted {
    fn abi(self) -> AbiCounted {
        match self {
            Counted::User => AbiCounted::People,
            Counted::AppUser => AbiCounted::AppUsers,
        }
    }

    fn of(self, c: VoucherCounts) -> u32 {
        match self {
            Counted::User => c.people,
            Counted::AppUser => c.app_users,
        }
    }

    fn cap(self, v: &Voucher) -> (u32, &'static str) {
        match self {
            Counted::User => (v.max_users, "max_users"),
            Counted::AppUser => (v.max_app_users, "max_app_users"),
        }
    }
}

/// Ask the bundle's voucher plugin whether `site` may have one more of `what`; answers
/// the follow-up for the write, which queues `voucher.near_cap` in the write's own
/// transaction when the write takes the count to 90% of the cap (once per crossing).
///
/// # Errors
/// 422 `voucher_required` without a valid voucher; 422 `voucher_cap` when the plugin
/// refuses, with its message; 503 when the plugin fails (the write is refused).
pub(crate) async fn check_cap(state: &AppState, site: SiteId, what: Counted) -> Result<FollowUp, ApiError> {
    let (admitted, refusal, voucher) = admit(state, site, what, 1).await?;
    if admitted == 1 {
        return Ok(near_cap_follow_up(site, what, voucher));
    }
    let (max, cap) = what.cap(&voucher);
    let count = what.of(state.node().snapshot().load().voucher_counts(site));
    Err(ApiError::Unprocessable {
        code: "voucher_cap",
        message: refusal.unwrap_or_default(),
        details: vec![format!("{cap}={max}"), format!("count={count}")],
    })
}

/// How many of `wanted` new users `site` may take now, with the follow-up that queues
/// `voucher.near_cap`; the voucher plugin's refusal for the rest is reported per row by
/// the caller.
///
/// # Errors
/// As [`check_cap`], except that a refusal is an answer here, not an error.
pub(crate) async fn admit_users(
    state: &AppState,
    site: SiteId,
    wanted: u32,
) -> Result<(u32, Option<String>, FollowUp), ApiError> {
    let (admitted, refusal, voucher) = admit(state, site, Counted::User, wanted).await?;
    Ok((admitted, refusal, near_cap_follow_up(site, Counted::User, voucher)))
}

/// How many of `wanted` more of `what` `site` may take now, by the bundle's voucher
/// plugin, with its refusal for the rest (`None` when all fit) and the voucher in force.
/// The plugin is asked for all at once, then, if it refuses, for the most it allows (a
/// binary search: a cap allows fewer, never more, as the count grows).
///
/// # Errors
/// 422 `voucher_required` without a valid voucher; 503 when the plugin fails.
async fn admit(
    state: &AppState,
    site: SiteId,
    what: Counted,
    wanted: u32,
) -> Result<(u32, Option<String>, Voucher), ApiError> {
    let at = now();
    let Some(v) = state.node().store().memberships().site_voucher(site, at).await? else {
        return Err(ApiError::Unprocessable {
            code: "voucher_required",
            message: format!(
                "site {} has no valid voucher; its owner must redeem one before adding users",
                site.0
            ),
            details: Vec::new(),
        });
    };
    let c = state.node().snapshot().load().voucher_counts(site);
    let bundle = state.node().policy().bundle();
    let terms = v.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let ask = |delta: u32| {
            bundle.voucher(&VoucherInput {
                voucher: VoucherTerms {
                    tier: String::new(),
                    valid_until: terms.valid_until.map(jiff::Timestamp::as_second),
                },
                counts: AbiCounts {
                    people: c.people,
                    app_users: c.app_users,
                    doors: 0,
                    iqs: 0,
                },
                change: what.abi(),
                delta: i32::try_from(delta).unwrap_or(i32::MAX),
                at_unix: at.as_second(),
                issued: Some(IssuedVoucher {
                    code: terms.code.clone(),
                    max_users: terms.max_users,
                    max_app_users: terms.max_app_users,
                }),
            })
        };
        if wanted == 0 {
            return Ok((0, None));
        }
        let refusal = match ask(wanted)? {
            VoucherVerdict::Allow => return Ok((wanted, None)),
            VoucherVerdict::Deny { message } => message,
        };
        // The most that fit: `low` is allowed (0 always is), `high` is not.
        let (mut low, mut high) = (0u32, wanted);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            match ask(mid)? {
                VoucherVerdict::Allow => low = mid,
                VoucherVerdict::Deny { .. } => high = mid,
            }
        }
        Ok((low, Some(refusal)))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the voucher plugin's task failed: {e}")))?
    .map_err(|e: keyway_plugin_host::PluginError| ApiError::Unavailable {
        cause: format!("the voucher plugin failed: {e}"),
    })?;
    Ok((answer.0, answer.1, v))
}

/// The follow-up that queues `voucher.near_cap` when a write takes `what` on `site` from
/// under 90% of the voucher's cap to 90% or more.
fn near_cap_follow_up(site: SiteId, what: Counted, v: Voucher) -> FollowUp {
    Box::new(move |before, after| {
        let (max, cap) = what.cap(&v);
        let threshold = u64::from(max).saturating_mul(9).div_ceil(10);
        let (was, is) = (
            u64::from(what.of(before.voucher_counts(site))),
            u64::from(what.of(after.voucher_counts(site))),
        );
        if max == 0 || was >= threshold || is < threshold {
            return None;
        }
        Some(PendingEvent {
            site,
            kind: "voucher.near_cap",
            data: serde_json::json!({
                "voucher": v.code, "cap": cap, "max": max, "count": is,
                "detail": format!("{is} of {max} ({cap})"),
            }),
        })
    })
}

/// A voucher code to redeem.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redeem {
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
        .memberships()
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
    let v = state.node().store().memberships().site_voucher(site, now()).await?;
    Ok(Json(Licence {
        voucher: v.map(VoucherView::from),
        counts: counts(&state, site),
    }))
}
