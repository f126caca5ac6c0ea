//! The states door rules keep (per rule and person, door or site), for an admin to read
//! and reset.
//!
//! **They live in each node's memory, and are not persisted.** A rule's state changes
//! on every decision (and passage) at the doors that attach it; writing it to the
//! database would put a store write on the decision path, whose budget for a rule round
//! trip is 2 µs (BENCHMARKS.md), and a write made after the answer could still be lost
//! by a crash, so it would not make the state exact either. What rules keep is short-
//! lived by design: a two-person pair lasts 30 seconds, an anti-passback flag is set
//! again by the person's next passage. After a restart every state starts empty, as
//! after a reset: an occupancy count starts at zero (and never goes below it), so an
//! admin who knows people are inside lets them leave, or swaps in a bundle whose limit
//! allows for it. The states survive hot swaps of the bundle (the same rule keeps its
//! states), not restarts.
//!
//! Each node keeps its own states: a door's decisions and passages reach the node its
//! IQ is connected to, so per-person and per-door states are those of that node. A
//! read answers what the node that serves it holds; a reset goes through the change log
//! (audited, with a revision) and every node forgets the state when it applies it.

use crate::error::NodeError;
use crate::node::Node;
use keyway_core::Revision;
use keyway_plugin_host::StateScope;
use keyway_store::RuleScope;

/// The plugin host's scope for the store's.
pub(crate) fn host_scope(scope: RuleScope) -> StateScope {
    match scope {
        RuleScope::Person(p) => StateScope::Person(p),
        RuleScope::Door(d) => StateScope::Door(d),
        RuleScope::Site(s) => StateScope::Site(s),
    }
}

impl Node {
    /// The state door rule `rule` keeps on this node for a person, a door or a site;
    /// `None` when it keeps none (or the bundle in force has no such rule).
    #[must_use]
    pub fn rule_state(&self, rule: &str, scope: RuleScope) -> Option<Vec<u8>> {
        self.policy().door_rules().scoped_state(rule, host_scope(scope))
    }

    /// Forget the state door rule `rule` keeps for a person, a door or a site, on every
    /// node: an audited change-log row that each node applies. `site` is the site the
    /// person, door or state belongs to (for the audit log).
    ///
    /// # Errors
    /// [`NodeError::UnknownRule`] when the bundle in force has no door rule `rule`; store
    /// errors.
    pub async fn reset_rule_state(
        &self,
        actor: &str,
        rule: &str,
        site: keyway_core::SiteId,
        scope: RuleScope,
    ) -> Result<Revision, NodeError> {
        let bundle = self.policy().bundle();
        if bundle.rule(rule).is_none() {
            return Err(NodeError::UnknownRule {
                rule: rule.to_owned(),
                bundle: bundle.name().to_owned(),
            });
        }
        let revision = self
            .store()
            .policy_records()
            .reset_rule_state(actor, rule, site, scope)
            .await?;
        self.policy_applied(revision).await
    }
}
