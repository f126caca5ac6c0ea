//! What a write did to the offline lists of its site's IQs: the keys it pushed out.
//!
//! An IQ holds at most 10,000 tags and 10,000 digital keys and PINs (the FAQ). When more
//! reach it, the list's documented order (keys with offline access first, then by
//! credential id: `Snapshot::offline_plan`, the order the IQ link sends) decides which
//! are left out. A write that brings a key within an IQ's reach, raises one in the
//! order, or unblocks someone can push another key out; its answer names those keys per
//! IQ, so the admin hears of it when it happens, not from the IQ list later.
//!
//! The comparison is of the snapshots just before and just after the write, so a write
//! that ran at the same moment may be counted with it. The plans of all the site's IQs
//! come from one pass over the credentials (`Snapshot::offline_plans`), only when the
//! node holds more credentials than an IQ can, and the snapshot before is planned only
//! when the one after leaves something out.

use crate::state::AppState;
use keyway_core::{IQ_MAX_REMOTE_USERS, IQ_MAX_TAGS, IqId, OfflinePlan, SiteId, Snapshot};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// The most credential ids one answer names per IQ (the count is always whole).
const MAX_NAMED: usize = 100;

/// Keys a write pushed out of one IQ's offline list.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct PushedOut {
    pub iq: u32,
    /// How many keys this write pushed out of its list.
    pub count: u32,
    /// Their credential ids, in the list's order (at most 100).
    pub credentials: Vec<u32>,
    /// Every key its list now leaves out.
    pub left_out: u32,
}

/// The offline lists of a site before a write.
pub(crate) struct OfflineWatch {
    site: SiteId,
    before: Option<Arc<Snapshot>>,
}

/// Whether any IQ could be over its capacity at all: not with fewer credentials in the
/// whole node than one IQ holds of a kind.
fn may_overflow(snapshot: &Snapshot, site: SiteId) -> bool {
    let cap = usize::try_from(IQ_MAX_TAGS.min(IQ_MAX_REMOTE_USERS)).unwrap_or(usize::MAX);
    snapshot.credential_count() > cap && !snapshot.site_iqs(site).is_empty()
}

impl OfflineWatch {
    /// Note the lists of `site` before a write.
    pub(crate) fn start(state: &AppState, site: SiteId) -> OfflineWatch {
        let now = state.node().snapshot().load_full();
        OfflineWatch {
            site,
            before: may_overflow(&now, site).then_some(now),
        }
    }

    /// The keys the write pushed out, per IQ of the site (none when nothing was).
    pub(crate) fn pushed_out(self, state: &AppState) -> Vec<PushedOut> {
        let Some(before) = self.before else {
            return Vec::new();
        };
        let after = state.node().snapshot().load_full();
        pushed_out(&before, &after, self.site)
    }
}

/// The keys left out on `after` that were not on `before`, per IQ of `site`.
pub(crate) fn pushed_out(before: &Snapshot, after: &Snapshot, site: SiteId) -> Vec<PushedOut> {
    let now = after.offline_plans(site);
    if now.iter().all(|(_, plan)| plan.left_out.is_empty()) {
        return Vec::new();
    }
    let then: HashMap<IqId, OfflinePlan> = before.offline_plans(site).into_iter().collect();
    let mut out = Vec::new();
    for (iq, plan) in now {
        if plan.left_out.is_empty() {
            continue;
        }
        let mut was: Vec<u32> = then
            .get(&iq)
            .map(|p| p.left_out.iter().map(|c| c.0).collect())
            .unwrap_or_default();
        was.sort_unstable();
        let pushed: Vec<u32> = plan
            .left_out
            .iter()
            .map(|c| c.0)
            .filter(|c| was.binary_search(c).is_err())
            .collect();
        if pushed.is_empty() {
            continue;
        }
        out.push(PushedOut {
            iq: iq.0,
            count: u32::try_from(pushed.len()).unwrap_or(u32::MAX),
            credentials: pushed.into_iter().take(MAX_NAMED).collect(),
            left_out: u32::try_from(plan.left_out.len()).unwrap_or(u32::MAX),
        });
    }
    out
}
