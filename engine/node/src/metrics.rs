//! Decision counters by effect and reason, kept with relaxed atomics in a fixed table so
//! that counting adds no lock and no allocation to the decision path. The server turns
//! them into Prometheus text.

use keyway_core::Effect;
use keyway_plugin_host::RuledDecision;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every reason code a decision can carry, in a fixed order.
pub const REASON_CODES: [&str; 16] = [
    "granted",
    "office_mode",
    "unknown_door",
    "unknown_credential",
    "unassigned_credential",
    "person_blocked",
    "credential_revoked",
    "not_yet_valid",
    "expired",
    "no_right",
    "outside_schedule",
    "holiday",
    "lockdown",
    "rule_denied",
    "rule_failed",
    "other",
];

/// Counts of decisions, by effect and reason.
#[derive(Debug, Default)]
pub struct DecisionMetrics {
    allow: [AtomicU64; REASON_CODES.len()],
    deny: [AtomicU64; REASON_CODES.len()],
}

fn index(code: &str) -> usize {
    REASON_CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(REASON_CODES.len() - 1)
}

impl DecisionMetrics {
    pub(crate) fn count(&self, decision: &RuledDecision) {
        let row = match decision.effect {
            Effect::Allow => &self.allow,
            Effect::Deny => &self.deny,
        };
        if let Some(counter) = row.get(index(decision.reason_code())) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(effect, reason, count)` for every pair counted at least once.
    #[must_use]
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (effect, row) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (code, counter) in REASON_CODES.iter().zip(row.iter()) {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((effect, *code, n));
                }
            }
        }
        out
    }
}
