//! The decision pipeline: core decision, door rule, entry.
//!
//! One call serves the HTTP API and the IQ link alike. The snapshot is loaded once per
//! call (once per batch), so every decision of a batch reports the same revision. When
//! the door has no rule, the pipeline adds no allocation to the core's decision: the
//! entry's reason is the core's static code, and the rule fields stay `None`.

use crate::node::Node;
use jiff::Timestamp;
use keyway_core::{CredentialKind, DoorId, Effect, IqId, Presented, Snapshot, decide};
use keyway_plugin_host::Direction;
use keyway_plugin_host::{DoorContext, RuledDecision};
use keyway_store::{Entry, Method};
use std::borrow::Cow;

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
        let (ruled, entry) = self.decide_on(&self.snapshot().load(), request);
        let logged = self.log(entry).await;
        NodeDecision { ruled, logged }
    }

    /// Decide every request on one snapshot (one revision), in order.
    pub async fn decide_batch(&self, requests: &[DecisionRequest<'_>]) -> Vec<NodeDecision> {
        let snapshot = self.snapshot().load_full();
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let (ruled, entry) = self.decide_on(&snapshot, request);
            let logged = self.log(entry).await;
            out.push(NodeDecision { ruled, logged });
        }
        out
    }

    /// Decide without logging, for callers that log in bulk themselves (benchmarks,
    /// explanations).
    #[must_use]
    pub fn decide_unlogged(&self, snapshot: &Snapshot, request: &DecisionRequest<'_>) -> RuledDecision {
        self.decide_on(snapshot, request).0
    }

    fn decide_on(&self, snapshot: &Snapshot, request: &DecisionRequest<'_>) -> (RuledDecision, Option<Entry>) {
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
            revision: ruled.core.revision,
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
