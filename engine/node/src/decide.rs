//! The decision pipeline: core decision, door rule, entry.
//!
//! One call serves the HTTP API and the IQ link alike. The snapshot is loaded once per
//! call (once per batch), so every decision of a batch reports the same revision: the
//! newest that the decision reflects, model and policy alike. Policy changes (a door's
//! rules, a bundle) leave the model's snapshot at its revision, so a decision reports
//! the policy task's revision when it is newer: a caller that changed a door's rules at
//! revision R and decides at revision R or later knows the rules were in force. When
//! the door has no rule, the pipeline adds no allocation to the core's decision: the
//! entry's reason is the core's static code, and the rule fields stay `None`.

use crate::node::Node;
use jiff::Timestamp;
use keyway_core::{CredentialKind, DoorId, Effect, IqId, Presented, Revision, Snapshot, decide};
use keyway_plugin_host::Direction;
use keyway_plugin_host::{DoorContext, RuledDecision};
use keyway_store::{Entry, Method};
use std::borrow::Cow;
use std::sync::Arc;

/// Who asked for a decision, for the entries log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An API caller (`POST /v1/decide`).
    Api,
    /// An IQ online, with the sequence number of its request (entries are stored once
    /// per IQ and sequence).
    Iq {
        iq: IqId,
        /// Its sequence number for this request.
        sequence: u64,
    },
    /// Not logged: a dry run (`explain`, replays).
    DryRun,
}

/// One request to decide.
#[derive(Clone, Copy, Debug)]
pub struct DecisionRequest<'a> {
    pub door: DoorId,
    /// What was presented.
    pub presented: Presented<'a>,
    /// When.
    pub at: Timestamp,
    /// Which way the reader faces.
    pub direction: Direction,
    /// Who asked.
    pub source: Source,
}

/// A decision after the whole pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDecision {
    /// The core's decision and the rule's part in it.
    pub ruled: RuledDecision,
    /// Whether the entry was queued (`false` for dry runs, unknown doors, and a closed
    /// log).
    pub logged: bool,
    /// The newest revision the decision reflects: every change up to it, to the model or
    /// to the policy, was in force (the entry is logged with it). At least the core's
    /// `ruled.core.revision`, which counts model changes only.
    pub revision: Revision,
}

impl NodeDecision {
    /// The final effect.
    #[must_use]
    pub fn effect(&self) -> Effect {
        self.ruled.effect
    }

    /// A stable reason code.
    #[must_use]
    pub fn reason_code(&self) -> &'static str {
        self.ruled.reason_code()
    }
}

fn method(kind: CredentialKind) -> Method {
    match kind {
        CredentialKind::Tag => Method::Tag,
        CredentialKind::DigitalKey => Method::DigitalKey,
        CredentialKind::Pin => Method::Pin,
    }
}

impl Node {
    /// Decide `request` on the current snapshot, run the door's rule, and queue the entry
    /// (waiting if the entries queue is full: nothing is dropped).
    pub async fn decide(&self, request: &DecisionRequest<'_>) -> NodeDecision {
        // A guard, not an owned Arc: no reference-count traffic on the decision path. It is
        // dropped before the entry is queued.
        let policy = self.policy_revision();
        let snapshot = self.snapshot().load();
        let revision = reflected(&snapshot, policy);
        let (ruled, entry) = self.decide_on(&snapshot, request, revision);
        drop(snapshot);
        let logged = self.log(entry).await;
        NodeDecision {
            ruled,
            logged,
            revision,
        }
    }

    /// Decide every request on one snapshot (one revision), in order.
    pub async fn decide_batch(&self, requests: &[DecisionRequest<'_>]) -> Vec<NodeDecision> {
        let policy = self.policy_revision();
        let snapshot = self.snapshot().load_full();
        let revision = reflected(&snapshot, policy);
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let (ruled, entry) = self.decide_on(&snapshot, request, revision);
            let logged = self.log(entry).await;
            out.push(NodeDecision {
                ruled,
                logged,
                revision,
            });
        }
        out
    }

    /// A dry run (nothing logged) and the snapshot it was taken on, for callers that
    /// also explain the decision on that snapshot.
    #[must_use]
    pub fn decide_dry(&self, request: &DecisionRequest<'_>) -> (NodeDecision, Arc<Snapshot>) {
        let policy = self.policy_revision();
        let snapshot = self.snapshot().load_full();
        let revision = reflected(&snapshot, policy);
        let request = DecisionRequest {
            source: Source::DryRun,
            ..*request
        };
        let (ruled, _) = self.decide_on(&snapshot, &request, revision);
        let decision = NodeDecision {
            ruled,
            logged: false,
            revision,
        };
        (decision, snapshot)
    }

    /// The revision the policy state is current with. Read before the snapshot is
    /// loaded: every model change up to it is then in the snapshot too (the feed
    /// announces a change only after the snapshot holds it).
    fn policy_revision(&self) -> u64 {
        self.inner.policy_revision.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Decide without logging, for callers that log in bulk themselves (benchmarks,
    /// explanations).
    #[must_use]
    pub fn decide_unlogged(&self, snapshot: &Snapshot, request: &DecisionRequest<'_>) -> RuledDecision {
        self.decide_on(snapshot, request, snapshot.revision()).0
    }

    fn decide_on(
        &self,
        snapshot: &Snapshot,
        request: &DecisionRequest<'_>,
        revision: Revision,
    ) -> (RuledDecision, Option<Entry>) {
        let core = decide(snapshot, request.door, request.presented, request.at);
        let Some(site) = snapshot.door_site(request.door) else {
            // An unknown door has no site to log under; the core already denied.
            let ruled = RuledDecision::core(core);
            self.metrics().count(&ruled);
            return (ruled, None);
        };
        let ruled = if self.policy().door_rules().attachment(request.door).is_some() {
            match snapshot.site_time_zone(site) {
                Some(time_zone) => {
                    let ctx = DoorContext {
                        door: request.door,
                        site,
                        role: core.person.and_then(|p| snapshot.person_role(p)),
                        kind: request.presented.kind,
                        groups: core.person.and_then(|p| snapshot.person_groups(p)).unwrap_or(&[]),
                        direction: request.direction,
                        at: request.at,
                        time_zone,
                        holidays: snapshot.site_holidays(site),
                    };
                    self.policy().decide(core, &ctx)
                }
                None => RuledDecision::core(core),
            }
        } else {
            RuledDecision::core(core)
        };
        self.metrics().count(&ruled);
        let iq = match request.source {
            Source::DryRun => return (ruled, None),
            Source::Api => None,
            Source::Iq { iq, sequence } => Some((iq, sequence)),
        };
        let rule = ruled.rule.as_ref().map(|trace| match trace.sha256 {
            Some(sha) => format!("{}@{sha}", trace.rule),
            None => format!("{}@missing", trace.rule),
        });
        let entry = Entry {
            site,
            at: request.at,
            door: request.door,
            person: ruled.core.person,
            credential: ruled.core.credential,
            method: method(request.presented.kind),
            allowed: ruled.effect == Effect::Allow,
            reason: Cow::Borrowed(ruled.reason_code()),
            revision,
            iq,
            rule,
        };
        (ruled, Some(entry))
    }

    async fn log(&self, entry: Option<Entry>) -> bool {
        let Some(entry) = entry else { return false };
        match self.store().entries().append(entry).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "decision entry not logged");
                false
            }
        }
    }
}

/// The revision a decision on `snapshot` reflects, the policy state being current with
/// `policy` (read before the snapshot was loaded).
fn reflected(snapshot: &Snapshot, policy: u64) -> Revision {
    snapshot.revision().max(Revision(policy))
}
