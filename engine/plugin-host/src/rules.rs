//! Door rules: per-door plugins on the decision path.
//!
//! A door attaches at most one rule, by the rule plugin's name in the bundle, and says
//! whether it is fail-secure (a plugin error denies) or fail-safe (a plugin error leaves
//! the core's verdict). Doors without a rule never enter WASM.
//!
//! Architecture Invariant: a rule only narrows. It can turn the core's allow into a deny,
//! never a deny into an allow; the final reason names the rule and its plugin's SHA-256.
//!
//! The host keeps a small state per (rule, person), e.g. the last direction for
//! anti-passback. Attachments and states live outside the bundle, so they survive a hot
//! swap. A person's state is locked for the length of the rule's call, so two readers
//! deciding for the same person at once see each other's update.

use crate::bundle::Bundle;
use crate::sha::Sha256;
use arc_swap::ArcSwap;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{Decision, DoorId, Effect, PersonId, RoleId};
use keyway_sdk::{CoreVerdict, Direction, DoorRuleInput, LocalTime, RuleVerdict, StateUpdate};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Largest per-person state a rule may keep, in bytes.
pub const MAX_RULE_STATE: usize = 1024;

const SHARDS: usize = 16;

/// What a plugin error means at a door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// A plugin error denies.
    Secure,
    /// A plugin error leaves the core's verdict.
    Safe,
}

/// The per-person states of one rule.
#[derive(Debug, Default)]
struct RuleState {
    shards: [Mutex<HashMap<PersonId, Vec<u8>>>; SHARDS],
}

impl RuleState {
    fn shard(&self, person: PersonId) -> &Mutex<HashMap<PersonId, Vec<u8>>> {
        let i = (person.0 as usize).wrapping_mul(0x9e37_79b9) >> 7;
        &self.shards[i % SHARDS]
    }
}

/// A door's rule.
#[derive(Clone, Debug)]
struct Attachment {
    rule: Arc<str>,
    fail: FailMode,
    state: Arc<RuleState>,
}

/// The context of one decision, beyond what [`Decision`] carries.
#[derive(Clone, Copy, Debug)]
pub struct DoorContext<'a> {
    /// The door.
    pub door: DoorId,
    /// The person's role, if known.
    pub role: Option<RoleId>,
    /// Which way the reader faces.
    pub direction: Direction,
    /// The time of the decision.
    pub at: Timestamp,
    /// The site's time zone.
    pub time_zone: &'a TimeZone,
}

/// What the door's rule said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOutcome {
    /// It allowed.
    Allowed,
    /// It denied.
    Denied {
        /// Its reason.
        reason: String,
    },
    /// It had no opinion.
    Abstained,
    /// It failed; the door's fail mode decided.
    Failed {
        /// What went wrong.
        error: String,
        /// The door's fail mode.
        fail: FailMode,
    },
}

/// Which rule ran, from which binary, and what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTrace {
    /// The rule's name in the bundle.
    pub rule: Arc<str>,
    /// Its plugin's SHA-256 (`None` when the bundle has no such rule).
    pub sha256: Option<Sha256>,
    /// What it said.
    pub outcome: RuleOutcome,
}

/// A core decision after the door's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuledDecision {
    /// The final effect.
    pub effect: Effect,
    /// The core's decision, unchanged.
    pub core: Decision,
    /// The rule, when the door has one.
    pub rule: Option<RuleTrace>,
}

impl RuledDecision {
    /// The core's decision, no rule involved.
    #[must_use]
    pub fn core(decision: Decision) -> Self {
        RuledDecision {
            effect: decision.effect,
            core: decision,
            rule: None,
        }
    }

    /// Whether the rule, not the core, decided the effect.
    #[must_use]
    pub fn decided_by_rule(&self) -> bool {
        self.effect != self.core.effect
    }

    /// A stable reason code: the core's, or `rule_denied` / `rule_failed` when the rule
    /// decided.
    #[must_use]
    pub fn reason_code(&self) -> &'static str {
        match (&self.rule, self.decided_by_rule()) {
            (Some(t), true) if matches!(t.outcome, RuleOutcome::Failed { .. }) => "rule_failed",
            (Some(_), true) => "rule_denied",
            _ => self.core.reason.code(),
        }
    }
}

impl fmt::Display for RuledDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(trace) = &self.rule else {
            return write!(f, "{}", self.core.reason);
        };
        let rule = &trace.rule;
        let sha = trace
            .sha256
            .map_or_else(|| "not loaded".to_owned(), |s| format!("sha256 {}", s.short()));
        match (&trace.outcome, self.decided_by_rule()) {
            (RuleOutcome::Denied { reason }, true) => write!(f, "denied by rule `{rule}` ({sha}): {reason}"),
            (RuleOutcome::Failed { error, .. }, true) => {
                write!(
                    f,
                    "denied: rule `{rule}` ({sha}) failed and the door is fail-secure: {error}"
                )
            }
            (RuleOutcome::Denied { reason }, false) => {
                write!(f, "{}; rule `{rule}` ({sha}) also denied: {reason}", self.core.reason)
            }
            (RuleOutcome::Failed { error, fail }, false) => write!(
                f,
                "{}; rule `{rule}` ({sha}) failed ({}): {error}",
                self.core.reason,
                match fail {
                    FailMode::Safe => "fail-safe door",
                    FailMode::Secure => "core already denied",
                }
            ),
            (RuleOutcome::Allowed, _) => write!(f, "{}; allowed by rule `{rule}` ({sha})", self.core.reason),
            (RuleOutcome::Abstained, _) => write!(f, "{}; rule `{rule}` ({sha}) abstained", self.core.reason),
        }
    }
}

/// The doors' rule attachments and the rules' per-person states.
#[derive(Debug, Default)]
pub struct DoorRules {
    attachments: ArcSwap<HashMap<DoorId, Attachment>>,
    states: Mutex<HashMap<Arc<str>, Arc<RuleState>>>,
}

impl DoorRules {
    /// No door has a rule.
    #[must_use]
    pub fn new() -> Self {
        DoorRules::default()
    }

    /// Attaches the rule named `rule` to `door` (replacing any), with this fail mode.
    /// The rule need not be in the current bundle: until it is, the fail mode applies.
    pub fn attach(&self, door: DoorId, rule: &str, fail: FailMode) {
        let state = {
            let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(states.entry(rule.into()).or_default())
        };
        let attachment = Attachment {
            rule: rule.into(),
            fail,
            state,
        };
        self.attachments.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(door, attachment.clone());
            map
        });
    }

    /// Removes the rule of `door`.
    pub fn detach(&self, door: DoorId) {
        self.attachments.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(&door);
            map
        });
    }

    /// The rule of `door` and its fail mode.
    #[must_use]
    pub fn attachment(&self, door: DoorId) -> Option<(Arc<str>, FailMode)> {
        self.attachments
            .load()
            .get(&door)
            .map(|a| (Arc::clone(&a.rule), a.fail))
    }

    /// The state `rule` keeps for `person`.
    #[must_use]
    pub fn state(&self, rule: &str, person: PersonId) -> Option<Vec<u8>> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states.get(rule)?;
        let shard = state.shard(person).lock().unwrap_or_else(PoisonError::into_inner);
        shard.get(&person).cloned()
    }

    /// Runs the door's rule, if any, on the core's decision.
    #[must_use]
    pub fn apply(&self, bundle: &Bundle, decision: Decision, ctx: &DoorContext<'_>) -> RuledDecision {
        let attachments = self.attachments.load();
        let Some(attachment) = attachments.get(&ctx.door) else {
            return RuledDecision::core(decision);
        };
        let fail = |sha256: Option<Sha256>, error: String| {
            let effect = match attachment.fail {
                FailMode::Secure => Effect::Deny,
                FailMode::Safe => decision.effect,
            };
            RuledDecision {
                effect,
                core: decision,
                rule: Some(RuleTrace {
                    rule: Arc::clone(&attachment.rule),
                    sha256,
                    outcome: RuleOutcome::Failed {
                        error,
                        fail: attachment.fail,
                    },
                }),
            }
        };
        let Some(plugin) = bundle.rule(&attachment.rule) else {
            return fail(
                None,
                format!("rule `{}` is not in bundle `{}`", attachment.rule, bundle.name()),
            );
        };
        let sha256 = Some(plugin.sha256());
        let dt = ctx.time_zone.to_datetime(ctx.at);
        let local = LocalTime {
            weekday: u8::try_from(dt.weekday().to_monday_one_offset()).unwrap_or(1),
            minute_of_day: u16::try_from(i32::from(dt.hour()) * 60 + i32::from(dt.minute())).unwrap_or(0),
        };
        let role = ctx.role;
        let mut input = DoorRuleInput {
            door: ctx.door.0,
            person: decision.person.map(|p| p.0),
            role: role.map(|r| r.0),
            rank: role.and_then(|r| bundle.roles().rank(r)),
            credential: decision.credential.map(|c| c.0),
            at_unix: ctx.at.as_second(),
            local,
            direction: ctx.direction,
            verdict: CoreVerdict {
                allow: decision.effect == Effect::Allow,
                reason: decision.reason.code().to_owned(),
            },
            state: Vec::new(),
        };
        let mut guard = decision.person.map(|p| {
            (
                p,
                attachment.state.shard(p).lock().unwrap_or_else(PoisonError::into_inner),
            )
        });
        if let Some((person, shard)) = &guard {
            input.state = shard.get(person).cloned().unwrap_or_default();
        }
        let out = match plugin.door_rule(&input) {
            Ok(out) => out,
            Err(e) => return fail(sha256, e.to_string()),
        };
        if let Some((person, shard)) = &mut guard {
            match out.state {
                StateUpdate::Keep => {}
                StateUpdate::Set(s) if s.len() > MAX_RULE_STATE => {
                    return fail(
                        sha256,
                        format!("state of {} bytes exceeds the cap of {MAX_RULE_STATE} bytes", s.len()),
                    );
                }
                StateUpdate::Set(s) => {
                    shard.insert(*person, s);
                }
                StateUpdate::Clear => {
                    shard.remove(person);
                }
            }
        }
        drop(guard);
        let (effect, outcome) = match out.verdict {
            RuleVerdict::Allow => (decision.effect, RuleOutcome::Allowed),
            RuleVerdict::Deny { reason } => (Effect::Deny, RuleOutcome::Denied { reason }),
            RuleVerdict::Abstain => (decision.effect, RuleOutcome::Abstained),
        };
        RuledDecision {
            effect,
            core: decision,
            rule: Some(RuleTrace {
                rule: Arc::clone(&attachment.rule),
                sha256,
                outcome,
            }),
        }
    }
}
