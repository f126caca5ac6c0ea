//! Per-site opening hours, for the door rules that ask whether the site is open.
//!
//! A site may have one [`Schedule`] of opening hours. The host evaluates it for each
//! decision at a door with a rule, in the site's time zone and with the holiday calendar
//! the caller passes (see [`DoorContext`](crate::DoorContext)), and hands the answer to
//! the rule as `DoorRuleInput::site_open`. The schedule semantics (periods crossing
//! midnight, holidays, DST) are the core's, so a site's opening hours and its access
//! schedules can never disagree about what "open at 08:00 on a holiday" means.
//!
//! The registry lives beside the door rules in [`PolicyHost`](crate::PolicyHost), outside
//! any bundle, so it survives a hot swap. It holds no store: a server loads the hours
//! from its store at start and calls the setters on every change. Readers on the decision
//! path take one atomic load and never a lock.

use arc_swap::ArcSwap;
use keyway_core::{LocalMoment, Schedule, ScheduleVerdict, SiteId};
use std::collections::HashMap;
use std::sync::Arc;

/// The opening hours of every site that has some.
#[derive(Debug, Default)]
pub struct OpeningHours {
    // Values are behind `Arc`s so that a change copies pointers, not every site's periods.
    sites: ArcSwap<HashMap<SiteId, Arc<Schedule>>>,
}

impl OpeningHours {
    /// No site has opening hours.
    #[must_use]
    pub fn new() -> Self {
        OpeningHours::default()
    }

    /// Sets the opening hours of `site`, or clears them with `None`.
    pub fn set(&self, site: SiteId, hours: Option<Schedule>) {
        let hours = hours.map(Arc::new);
        self.sites.rcu(|map| {
            let mut map = HashMap::clone(map);
            match &hours {
                Some(schedule) => map.insert(site, Arc::clone(schedule)),
                None => map.remove(&site),
            };
            map
        });
    }

    /// Replaces every site's opening hours at once (a server's start-up load), so that
    /// loading n sites costs one map build instead of n copies.
    pub fn replace_all(&self, hours: impl IntoIterator<Item = (SiteId, Schedule)>) {
        let map = hours.into_iter().map(|(site, s)| (site, Arc::new(s))).collect();
        self.sites.store(Arc::new(map));
    }

    /// The opening hours of `site`, if set.
    #[must_use]
    pub fn get(&self, site: SiteId) -> Option<Arc<Schedule>> {
        self.sites.load().get(&site).map(Arc::clone)
    }

    /// How many sites have opening hours.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sites.load().len()
    }

    /// Whether no site has opening hours.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sites.load().is_empty()
    }

    /// Whether `site` is open at `local` (its wall-clock moment, holidays included);
    /// `None` when the site has no opening hours. A site closed for a holiday is closed.
    #[must_use]
    pub fn is_open(&self, site: SiteId, local: &LocalMoment) -> Option<bool> {
        self.sites
            .load()
            .get(&site)
            .map(|schedule| schedule.verdict(local) == ScheduleVerdict::Open)
    }
}
