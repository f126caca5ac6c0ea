//! Door rules: per-door plugins on the decision path.
//!
//! A door attaches a chain of rules (usually one; at most [`MAX_CHAIN`]), each by the rule
//! plugin's name in the bundle and with its own fail mode: fail-secure (a plugin error
//! denies) or fail-safe (a plugin error leaves the core's verdict, and the decision is
//! logged as `rule_failed_open`). The rules run in order and the first deny wins. Only
//! rules the running bundle provides can be attached, and a bundle that lacks an
//! attached rule cannot be swapped in. Doors without a rule never enter WASM.
//!
//! Architecture Invariant: a rule only narrows. It can turn the core's allow into a deny,
//! never a deny into an allow; the final reason names the rule and its plugin's SHA-256.
//!
//! The host keeps a small state per (rule, person), e.g. the last direction for
//! anti-passback, and, for rules of ABI version 2, per (rule, door) and per (rule, site),
//! e.g. who badged last at a door for a two-person rule, or an occupancy count. Each is
//! capped at [`MAX_RULE_STATE`]. Attachments and states live outside the bundle, so they
//! survive a hot swap; an admin reads and resets them with [`DoorRules::scoped_state`]
//! and [`DoorRules::reset_state`]. A call locks its person's, door's and site's states
//! (in that order) for its whole length, so concurrent decisions, on any instances,
//! never lose an update.
//!
//! Each rule call also gets whether the door's site is open at that moment, from the
//! site's opening hours in [`OpeningHours`] (`None` when the site has none), and (ABI
//! version 4) the credential's kind, the person's groups and the attachment's own
//! configuration: one rule attached to several doors with different settings. A rule
//! that exports `keyway_door_config` checks that configuration when a door attaches it
//! and when a bundle is swapped in; a rule that does not takes none.

use crate::bundle::Bundle;
use crate::error::{BundleError, PluginError};
use crate::hours::OpeningHours;
use crate::roles::valid_capability;
use crate::runtime::LoadedPlugin;
use crate::runtime::{decode_strict, guest_error};
use crate::sha::Sha256;
use crate::text::{is_printable, printable};
use arc_swap::ArcSwap;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_abi::{
    Config, CoreVerdict, Direction, DoorRuleInput, Hook, LocalTime, Obligation, PassageInput, RuleVerdict,
};
use keyway_core::{
    CredentialKind, Decision, DoorId, Effect, GroupId, HolidayCalendar, LocalMoment, PersonId, Reason, RoleId, SiteId,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Largest per-person state a rule may keep, in bytes.
pub const MAX_RULE_STATE: usize = 1024;

/// Largest configuration one door's attachment of a rule may carry, in encoded bytes:
/// it is encoded into every call of the rule at that door.
pub const MAX_DOOR_CONFIG: usize = 4096;

/// Most bytes of a deny reason (a rule's or a voucher's) kept: a longer one is cut, and
/// control or invisible characters are escaped, but the deny stands.
pub const MAX_REASON: usize = 256;

const SHARDS: usize = 16;

/// What a plugin error means at a door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// A plugin error denies.
    Secure,
    /// A plugin error leaves the core's verdict.
    Safe,
}

/// The states of one rule: per person (ABI v1 and v2), per door and per site (v2).
/// Each is sharded; a call locks the shards of its person, door and site (in that order,
/// so calls never deadlock) for its whole length, so a state is read and written
/// atomically with the decision it belongs to, whichever instance runs the call.
#[derive(Debug, Default)]
struct RuleState {
    shards: [Mutex<HashMap<PersonId, Vec<u8>>>; SHARDS],
    doors: [Mutex<HashMap<DoorId, Vec<u8>>>; SHARDS],
    sites: [Mutex<HashMap<SiteId, Vec<u8>>>; SHARDS],
}

fn shard_index(id: u32) -> usize {
    ((id as usize).wrapping_mul(0x9e37_79b9) >> 7) % SHARDS
}

impl RuleState {
    fn shard(&self, person: PersonId) -> &Mutex<HashMap<PersonId, Vec<u8>>> {
        &self.shards[shard_index(person.0)]
    }

    fn door_shard(&self, door: DoorId) -> &Mutex<HashMap<DoorId, Vec<u8>>> {
        &self.doors[shard_index(door.0)]
    }

    fn site_shard(&self, site: SiteId) -> &Mutex<HashMap<SiteId, Vec<u8>>> {
        &self.sites[shard_index(site.0)]
    }
}

/// Applies a state change to the state kept under `key`, reusing its buffer.
fn apply_change<K: std::hash::Hash + Eq + Copy>(
    map: &mut HashMap<K, Vec<u8>>,
    key: K,
    change: StateChange,
    new: &[u8],
) {
    match change {
        StateChange::Keep => {}
        StateChange::Set => match map.get_mut(&key) {
            // Reuses the buffer: no allocation once the key has state.
            Some(kept) => {
                kept.clear();
                kept.extend_from_slice(new);
            }
            None => {
                map.insert(key, new.to_vec());
            }
        },
        StateChange::Clear => {
            map.remove(&key);
        }
    }
}

/// One rule of a door's chain.
#[derive(Clone, Debug)]
struct Attachment {
    rule: Arc<str>,
    fail: FailMode,
    /// The attachment's own configuration (empty when none).
    config: Arc<Config>,
    state: Arc<RuleState>,
}

/// One rule of a chain to attach: the rule's name in the bundle, its fail mode and its
/// own configuration for the door (ABI version 4; empty when none).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleLink {
    /// The rule's name in the bundle.
    pub rule: String,
    /// What a failure of the rule means at the door.
    pub fail: FailMode,
    /// The door's own settings for the rule.
    pub config: Config,
}

impl RuleLink {
    /// `rule` with this fail mode and no configuration of its own.
    #[must_use]
    pub fn new(rule: impl Into<String>, fail: FailMode) -> Self {
        RuleLink {
            rule: rule.into(),
            fail,
            config: Config::new(),
        }
    }

    /// The same link with its own configuration.
    #[must_use]
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
}

/// The context of one decision, beyond what [`Decision`] carries.
#[derive(Clone, Copy, Debug)]
pub struct DoorContext<'a> {
    pub door: DoorId,
    /// The door's site: whose opening hours apply.
    pub site: SiteId,
    /// The person's role, if known.
    pub role: Option<RoleId>,
    /// What was presented.
    pub kind: CredentialKind,
    /// The person's groups, by ascending id (empty when no person is known).
    pub groups: &'a [GroupId],
    /// Which way the reader faces.
    pub direction: Direction,
    /// The time of the decision.
    pub at: Timestamp,
    /// The site's time zone.
    pub time_zone: &'a TimeZone,
    /// The site's holiday calendar, if it has one: a holiday closes the site unless its
    /// opening hours have a period for holidays.
    pub holidays: Option<&'a HolidayCalendar>,
}

/// What the door's rule said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOutcome {
    /// It allowed.
    Allowed,
    /// It denied.
    Denied { reason: String },
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

/// A core decision after the door's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuledDecision {
    /// The final effect.
    pub effect: Effect,
    /// The core's decision, unchanged.
    pub core: Decision,
    /// The rule that ruled, when the door has rules: the first that denied (or failed on
    /// a fail-secure door), else the last of the door's chain.
    pub rule: Option<RuleTrace>,
    /// The rules of the door's chain that ran before [`RuledDecision::rule`], in order:
    /// each allowed, abstained or failed on a fail-safe attachment. Empty (and not
    /// allocated) for a door with one rule.
    pub before: Vec<RuleTrace>,
    /// What the rules that ran asked to see done beside the answer (ABI version 2), in
    /// the chain's order, for the notification path. Empty, and not allocated, when none
    /// did. They never change the effect.
    pub obligations: Vec<Obligation>,
}

impl RuledDecision {
    /// The core's decision, no rule involved.
    #[must_use]
    pub fn core(decision: Decision) -> Self {
        RuledDecision {
            effect: decision.effect,
            core: decision,
            rule: None,
            before: Vec::new(),
            obligations: Vec::new(),
        }
    }

    /// Whether a rule, not the core, decided the effect.
    #[must_use]
    pub fn decided_by_rule(&self) -> bool {
        self.effect != self.core.effect
    }

    /// Every rule that ran, in the chain's order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleTrace> {
        self.before.iter().chain(self.rule.as_ref())
    }

    /// A stable reason code: the core's when the core's verdict stands and no rule
    /// failed; `rule_denied` when a rule turned an allow into a deny; `rule_failed` when a
    /// failed rule on a fail-secure attachment did; `rule_failed_open` when a rule failed
    /// on a fail-safe attachment and the core's allow stands (never a plain `granted`, so
    /// the entries log shows that a rule was skipped).
    #[must_use]
    pub fn reason_code(&self) -> &'static str {
        self.ruling().code()
    }

    /// The rule that turned an allow into a deny, when one did ([`Ruling::RuleDenied`]).
    #[must_use]
    pub fn denying_rule(&self) -> Option<&str> {
        match (self.ruling(), &self.rule) {
            (Ruling::RuleDenied, Some(trace)) => Some(&trace.rule),
            _ => None,
        }
    }

    /// Who decided, as an enum (see [`Ruling`]).
    #[must_use]
    pub fn ruling(&self) -> Ruling {
        let failed = |t: &RuleTrace| matches!(t.outcome, RuleOutcome::Failed { .. });
        match (&self.rule, self.decided_by_rule()) {
            (Some(t), true) if failed(t) => Ruling::RuleFailed,
            (Some(_), true) => Ruling::RuleDenied,
            _ if self.effect == Effect::Allow && self.rules().any(failed) => Ruling::RuleFailedOpen,
            _ => Ruling::Core(self.core.reason),
        }
    }
}

/// The reason a ruled decision is logged with: the core's [`Reason`], or one of the
/// plugin host's own. It lives here, not in `keyway_core`, because only the host runs
/// rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ruling {
    /// The core's verdict stands, and no rule failed on an allow.
    Core(Reason),
    /// A rule turned the core's allow into a deny.
    RuleDenied,
    /// A rule failed on a fail-secure attachment: denied.
    RuleFailed,
    /// A rule failed on a fail-safe attachment: the core's allow stands, but the rule
    /// was not applied.
    RuleFailedOpen,
}

impl Ruling {
    /// A stable snake_case code, for logs and wire formats.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Ruling::Core(reason) => reason.code(),
            Ruling::RuleDenied => "rule_denied",
            Ruling::RuleFailed => "rule_failed",
            Ruling::RuleFailedOpen => "rule_failed_open",
        }
    }
}

impl RuleTrace {
    fn sha_text(&self) -> String {
        self.sha256
            .map_or_else(|| "not loaded".to_owned(), |s| format!("sha256 {}", s.short()))
    }
}

impl fmt::Display for RuledDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(trace) = &self.rule else {
            return write!(f, "{}", self.core.reason);
        };
        let core = self.core.reason;
        let core_allowed = self.core.effect == Effect::Allow;
        // What ruled first, then what each rule said, in the chain's order.
        if self.decided_by_rule() {
            let (rule, sha) = (&trace.rule, trace.sha_text());
            match &trace.outcome {
                RuleOutcome::Failed { error, .. } => write!(
                    f,
                    "denied: rule `{rule}` ({sha}) failed and the door is fail-secure: {error}"
                )?,
                RuleOutcome::Denied { reason } => write!(f, "denied by rule `{rule}` ({sha}): {reason}")?,
                _ => write!(f, "denied by rule `{rule}` ({sha})")?,
            }
            for t in &self.before {
                write!(f, "; before it, ")?;
                write_trace(f, t, core_allowed)?;
            }
            return Ok(());
        }
        write!(f, "{core}")?;
        for t in self.rules() {
            if core_allowed
                && matches!(
                    t.outcome,
                    RuleOutcome::Failed {
                        fail: FailMode::Safe,
                        ..
                    }
                )
            {
                write!(f, ", but ")?;
            } else {
                write!(f, "; ")?;
            }
            write_trace(f, t, core_allowed)?;
        }
        Ok(())
    }
}

/// What one rule said, where the decision did not hinge on it.
fn write_trace(f: &mut fmt::Formatter<'_>, t: &RuleTrace, core_allowed: bool) -> fmt::Result {
    let (rule, sha) = (&t.rule, t.sha_text());
    match &t.outcome {
        RuleOutcome::Allowed if core_allowed => write!(f, "allowed by rule `{rule}` ({sha})"),
        RuleOutcome::Allowed => write!(f, "rule `{rule}` ({sha}) answered allow, which cannot lift the deny"),
        RuleOutcome::Abstained => write!(f, "rule `{rule}` ({sha}) abstained"),
        RuleOutcome::Denied { reason } => write!(f, "rule `{rule}` ({sha}) also denied: {reason}"),
        RuleOutcome::Failed {
            error,
            fail: FailMode::Safe,
        } if core_allowed => write!(
            f,
            "rule `{rule}` ({sha}) failed and was skipped (fail-safe door): {error}"
        ),
        RuleOutcome::Failed { error, .. } => write!(f, "rule `{rule}` ({sha}) failed: {error}"),
    }
}

/// Whose state a rule keeps: a person's (ABI v1 and v2), a door's or a site's (v2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateScope {
    /// Per (rule, person).
    Person(PersonId),
    /// Per (rule, door).
    Door(DoorId),
    /// Per (rule, site).
    Site(SiteId),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Most rules one door's chain may hold: a decision at the door runs at most this many
/// rule calls, each under its own fuel budget.
pub const MAX_CHAIN: usize = 8;

/// The doors' rule chains and the rules' per-person states.
///
/// A door has an ordered chain of rules (usually one), each attached with its own fail
/// mode. They run in order; the first that denies (or fails on a fail-secure
/// attachment) decides, and the rest do not run.
///
/// Attachments are checked against the rules the running bundle provides: attaching a
/// rule the bundle lacks is refused, and so is swapping in a bundle that lacks a rule a
/// door attaches ([`PolicyHost::swap`](crate::PolicyHost::swap)). Both hold one lock, so
/// neither can slip between the other's check and its change.
#[derive(Debug)]
pub struct DoorRules {
    attachments: ArcSwap<HashMap<DoorId, Arc<[Attachment]>>>,
    states: Mutex<HashMap<Arc<str>, Arc<RuleState>>>,
    /// The running bundle, whose rules may be attached. Every checked change of
    /// attachments, and every swap of the bundle, holds this lock.
    running: Mutex<Arc<Bundle>>,
}

/// An attachment was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The running bundle has no door rule by that name.
    #[error("bundle `{bundle}` has no door rule `{rule}` (its door rules: {available})")]
    UnknownRule {
        /// The rule asked for, printable.
        rule: String,
        /// The running bundle.
        bundle: String,
        /// Its door rules, in backticks, or `none`.
        available: String,
    },
    /// A chain names the same rule twice.
    #[error("rule `{rule}` appears twice in the chain of door {door}")]
    Duplicate { rule: String, door: u32 },
    /// A chain is longer than [`MAX_CHAIN`].
    #[error("a chain of {len} rules for door {door}, over the limit of {max}")]
    ChainTooLong {
        /// The chain's length.
        len: usize,
        door: u32,
        /// The limit.
        max: usize,
    },
    /// A configuration given for the door was refused: by its rule, because the rule
    /// takes none, or because it is too large or holds what no configuration holds.
    #[error("the configuration of rule `{rule}` for door {door} is refused: {reason}")]
    Config {
        rule: String,
        door: u32,
        /// Why, printable.
        reason: String,
    },
}

/// Whether `bundle`'s rule `rule` takes `config` as a door's own configuration: a rule
/// that exports `keyway_door_config` (ABI version 4) is asked; any other takes only an
/// empty one. The door's id is for the error only.
///
/// # Errors
/// [`AttachError::UnknownRule`] when the bundle has no such rule; [`AttachError::Config`]
/// when the configuration is too large, or the rule refuses it or takes none.
pub fn check_door_config(bundle: &Bundle, rule: &str, door: DoorId, config: &Config) -> Result<(), AttachError> {
    let Some(plugin) = bundle.rule(rule) else {
        return Err(unknown_rule(bundle, rule));
    };
    let refused = |reason: String| AttachError::Config {
        rule: printable(rule, 64),
        door: door.0,
        reason,
    };
    let size = postcard::experimental::serialized_size(config).map_err(|e| refused(e.to_string()))?;
    if size > MAX_DOOR_CONFIG {
        return Err(refused(format!(
            "{size} bytes encoded, over the limit of {MAX_DOOR_CONFIG}"
        )));
    }
    if takes_door_config(plugin) {
        return plugin
            .call::<Config, ()>(Hook::DoorConfig, config)
            .map_err(|e| refused(e.to_string()));
    }
    if config.values.is_empty() {
        return Ok(());
    }
    Err(refused(if plugin.abi_version() < 4 {
        format!(
            "it speaks ABI version {}, which has no per-door configuration (version 4 has)",
            plugin.abi_version()
        )
    } else {
        "it takes no per-door configuration (it exports no `keyway_door_config`)".to_owned()
    }))
}

/// Whether a rule checks, and so reads, a door's own configuration.
fn takes_door_config(plugin: &LoadedPlugin) -> bool {
    plugin.abi_version() >= 4 && plugin.exports(Hook::DoorConfig)
}

fn unknown_rule(bundle: &Bundle, rule: &str) -> AttachError {
    let names: Vec<String> = bundle.rule_names().map(|r| format!("`{r}`")).collect();
    AttachError::UnknownRule {
        rule: printable(rule, 64),
        bundle: printable(bundle.name(), 64),
        available: if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        },
    }
}

/// One rule of a door's chain, as a caller sees it.
pub type Attached = (Arc<str>, FailMode);

impl DoorRules {
    /// No door has a rule; the rules `bundle` provides may be attached.
    #[must_use]
    pub(crate) fn for_bundle(bundle: Arc<Bundle>) -> Self {
        DoorRules {
            attachments: ArcSwap::default(),
            states: Mutex::default(),
            running: Mutex::new(bundle),
        }
    }

    /// Makes `rule`, with this fail mode, the door's only rule, and answers the chain it
    /// replaced (empty when the door had none).
    ///
    /// # Errors
    /// [`AttachError::UnknownRule`] when the running bundle has no door rule by that name
    /// (nothing changes).
    pub fn attach(&self, door: DoorId, rule: &str, fail: FailMode) -> Result<Vec<Attached>, AttachError> {
        self.set_chain(door, &[(rule, fail)])
    }

    /// Sets the door's chain of rules, in order, each with its own fail mode and no
    /// configuration of its own (an empty chain detaches every rule), and answers the
    /// chain it replaced. See [`DoorRules::set_links`].
    ///
    /// # Errors
    /// As [`DoorRules::set_links`].
    pub fn set_chain(&self, door: DoorId, chain: &[(&str, FailMode)]) -> Result<Vec<Attached>, AttachError> {
        let links: Vec<RuleLink> = chain.iter().map(|(rule, fail)| RuleLink::new(*rule, *fail)).collect();
        self.set_links(door, &links)
    }

    /// Sets the door's chain of rules, in order, each with its own fail mode and
    /// configuration (an empty chain detaches every rule), and answers the chain it
    /// replaced. Every rule must be in the running bundle and take its configuration
    /// ([`check_door_config`]).
    ///
    /// # Errors
    /// A rule the running bundle lacks, a rule named twice, a chain longer than
    /// [`MAX_CHAIN`], a configuration a rule refuses; nothing changes.
    pub fn set_links(&self, door: DoorId, links: &[RuleLink]) -> Result<Vec<Attached>, AttachError> {
        let running = lock(&self.running);
        check_chain(door, links)?;
        for link in links {
            check_door_config(&running, &link.rule, door, &link.config)?;
        }
        let old = self.publish(door, links);
        drop(running);
        Ok(old)
    }

    /// Sets the door's chain as the store has it, without asking the running bundle:
    /// what a node does when it applies an attachment another node checked, or reloads
    /// the tables. A rule the bundle lacks, or a rule given a configuration although it
    /// takes none, stays attached and fails at each decision, so the door's fail mode
    /// decides (a fail-secure door stays shut) rather than the door losing its rule. A
    /// rule that takes per-door configurations gets the one stored; the standard rules
    /// read it at each call as their `keyway_door_config` does, and fail on what it
    /// would refuse.
    ///
    /// # Errors
    /// A rule named twice or a chain longer than [`MAX_CHAIN`]; nothing changes.
    pub fn restore_links(&self, door: DoorId, links: &[RuleLink]) -> Result<Vec<Attached>, AttachError> {
        let running = lock(&self.running);
        check_chain(door, links)?;
        let old = self.publish(door, links);
        drop(running);
        Ok(old)
    }

    /// Publishes `links` as the door's chain; the caller holds the `running` lock.
    fn publish(&self, door: DoorId, links: &[RuleLink]) -> Vec<Attached> {
        let attachments: Vec<Attachment> = links
            .iter()
            .map(|link| {
                let rule: Arc<str> = Arc::from(link.rule.as_str());
                let state = {
                    let mut states = lock(&self.states);
                    Arc::clone(states.entry(Arc::clone(&rule)).or_default())
                };
                Attachment {
                    rule,
                    fail: link.fail,
                    config: Arc::new(link.config.clone()),
                    state,
                }
            })
            .collect();
        let chain: Option<Arc<[Attachment]>> = (!attachments.is_empty()).then(|| Arc::from(attachments));
        let old = self.attachments.rcu(|map| {
            let mut map = HashMap::clone(map);
            match &chain {
                Some(chain) => map.insert(door, Arc::clone(chain)),
                None => map.remove(&door),
            };
            map
        });
        old.get(&door).map(|c| attached(c)).unwrap_or_default()
    }

    /// Removes every rule of `door`; answers the chain it had.
    pub fn detach(&self, door: DoorId) -> Vec<Attached> {
        // An empty chain names no rule: it cannot be refused.
        self.set_links(door, &[]).unwrap_or_default()
    }

    /// The first rule of `door`'s chain and its fail mode (the door's rule, for a door
    /// with one). See [`DoorRules::chain`] for them all.
    #[must_use]
    pub fn attachment(&self, door: DoorId) -> Option<Attached> {
        self.attachments
            .load()
            .get(&door)
            .and_then(|c| c.first().map(|a| (Arc::clone(&a.rule), a.fail)))
    }

    /// Every door that has at least one rule.
    #[must_use]
    pub fn attached_doors(&self) -> Vec<DoorId> {
        self.attachments.load().keys().copied().collect()
    }

    /// The rules of `door`'s chain, in order, each with its fail mode.
    #[must_use]
    pub fn chain(&self, door: DoorId) -> Vec<Attached> {
        self.attachments
            .load()
            .get(&door)
            .map(|c| attached(c))
            .unwrap_or_default()
    }

    /// The rules of `door`'s chain, in order, each with its fail mode and its own
    /// configuration.
    #[must_use]
    pub fn links(&self, door: DoorId) -> Vec<RuleLink> {
        self.attachments.load().get(&door).map_or_else(Vec::new, |chain| {
            chain
                .iter()
                .map(|a| RuleLink {
                    rule: a.rule.to_string(),
                    fail: a.fail,
                    config: Config::clone(&a.config),
                })
                .collect()
        })
    }

    /// Runs `swap` (which publishes `bundle`) only if `bundle` provides every rule a door
    /// attaches, and each takes its doors' configurations, holding the attachments' lock
    /// throughout.
    pub(crate) fn swap_checked<R>(&self, bundle: &Arc<Bundle>, swap: impl FnOnce() -> R) -> Result<R, BundleError> {
        let mut running = lock(&self.running);
        let attachments = self.attachments.load();
        let mut missing: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (door, chain) in attachments.iter() {
            for attachment in chain.iter() {
                if bundle.rule(&attachment.rule).is_none() {
                    missing.entry(&attachment.rule).or_default().push(door.0);
                }
            }
        }
        if let Some((rule, mut doors)) = missing.into_iter().next() {
            doors.sort_unstable();
            return Err(BundleError::RuleStillAttached {
                bundle: printable(bundle.name(), 64),
                rule: rule.to_owned(),
                doors,
            });
        }
        // A new version of a rule may refuse settings the old one took; doors in
        // ascending order, so the error is the same on every node.
        let mut doors: Vec<(&DoorId, &Arc<[Attachment]>)> = attachments.iter().collect();
        doors.sort_unstable_by_key(|(door, _)| door.0);
        for (door, chain) in doors {
            for attachment in chain.iter() {
                if let Err(e) = check_door_config(bundle, &attachment.rule, *door, &attachment.config) {
                    return Err(BundleError::DoorConfigRefused {
                        bundle: printable(bundle.name(), 64),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let out = swap();
        *running = Arc::clone(bundle);
        Ok(out)
    }

    /// Runs `swap` (which publishes `bundle`) and makes `bundle` the one attachments are
    /// checked against, holding the attachments' lock, without checking the doors.
    pub(crate) fn swap_unchecked<R>(&self, bundle: &Arc<Bundle>, swap: impl FnOnce() -> R) -> R {
        let mut running = lock(&self.running);
        let out = swap();
        *running = Arc::clone(bundle);
        out
    }

    /// The state `rule` keeps for `person`.
    #[must_use]
    pub fn state(&self, rule: &str, person: PersonId) -> Option<Vec<u8>> {
        self.scoped_state(rule, StateScope::Person(person))
    }

    /// The state `rule` keeps for a person, a door or a site, for an admin to inspect.
    #[must_use]
    pub fn scoped_state(&self, rule: &str, scope: StateScope) -> Option<Vec<u8>> {
        let state = Arc::clone(self.states.lock().unwrap_or_else(PoisonError::into_inner).get(rule)?);
        match scope {
            StateScope::Person(p) => lock(state.shard(p)).get(&p).cloned(),
            StateScope::Door(d) => lock(state.door_shard(d)).get(&d).cloned(),
            StateScope::Site(s) => lock(state.site_shard(s)).get(&s).cloned(),
        }
    }

    /// Forgets the state `rule` keeps for a person, a door or a site (an admin's reset),
    /// atomically with respect to rule calls; answers whether there was one.
    pub fn reset_state(&self, rule: &str, scope: StateScope) -> bool {
        let Some(state) = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rule)
            .map(Arc::clone)
        else {
            return false;
        };
        match scope {
            StateScope::Person(p) => lock(state.shard(p)).remove(&p).is_some(),
            StateScope::Door(d) => lock(state.door_shard(d)).remove(&d).is_some(),
            StateScope::Site(s) => lock(state.site_shard(s)).remove(&s).is_some(),
        }
    }

    /// Runs the door's chain of rules, if any, on the core's decision, telling each
    /// whether the door's site is open by `hours`. The first rule that denies, or fails
    /// on a fail-secure attachment, decides; the rest do not run.
    #[must_use]
    pub fn apply(
        &self,
        bundle: &Bundle,
        hours: &OpeningHours,
        decision: Decision,
        ctx: &DoorContext<'_>,
    ) -> RuledDecision {
        let attachments = self.attachments.load();
        let Some(chain) = attachments.get(&ctx.door) else {
            return RuledDecision::core(decision);
        };
        // One conversion to the site's wall clock serves every rule's local time and the
        // site's opening hours.
        let moment = LocalMoment::new(ctx.at, ctx.time_zone, ctx.holidays);
        let site_open = hours.is_open(ctx.site, &moment);
        let mut before = Vec::new();
        let mut obligations = Vec::new();
        let mut last = None;
        for attachment in chain.iter() {
            if let Some(trace) = last.take() {
                before.push(trace);
            }
            let (effect, trace) = run_rule(attachment, bundle, &decision, ctx, &moment, site_open, &mut obligations);
            // The first deny wins (on a decision the core denied too: the rest need not
            // run).
            if matches!(
                trace.outcome,
                RuleOutcome::Denied { .. }
                    | RuleOutcome::Failed {
                        fail: FailMode::Secure,
                        ..
                    }
            ) {
                return RuledDecision {
                    effect,
                    core: decision,
                    rule: Some(trace),
                    before,
                    obligations,
                };
            }
            last = Some(trace);
        }
        RuledDecision {
            effect: decision.effect,
            core: decision,
            rule: last,
            before,
            obligations,
        }
    }
}

/// A passage an IQ reported at a door: what actually happened after a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Passage {
    pub door: DoorId,
    /// The door's site.
    pub site: SiteId,
    /// The person, when known.
    pub person: Option<PersonId>,
    /// When.
    pub at: Timestamp,
    /// Which way the reader faces.
    pub direction: Direction,
    /// Whether the door actually opened.
    pub opened: bool,
}

impl DoorRules {
    /// Tells every rule of the door's chain that exports `keyway_passage` (ABI version 2)
    /// of a passage, in order, each under the same locks as a decision, so its states
    /// change atomically. Answers the rules that failed, with why; their states are
    /// unchanged, and the others' calls still happen.
    #[must_use]
    pub fn passage(&self, bundle: &Bundle, passage: &Passage) -> Vec<(Arc<str>, PluginError)> {
        let attachments = self.attachments.load();
        let Some(chain) = attachments.get(&passage.door) else {
            return Vec::new();
        };
        let mut failed = Vec::new();
        for attachment in chain.iter() {
            let Some(plugin) = bundle.rule(&attachment.rule) else {
                continue;
            };
            if plugin.abi_version() < 2 || !plugin.exports(Hook::Passage) {
                continue;
            }
            if let Err(e) = run_passage(attachment, plugin, passage) {
                failed.push((Arc::clone(&attachment.rule), e));
            }
        }
        failed
    }
}

/// Runs one rule's passage hook and applies the states it answers.
fn run_passage(attachment: &Attachment, plugin: &LoadedPlugin, passage: &Passage) -> Result<(), PluginError> {
    let mut guard = passage.person.map(|p| (p, lock(attachment.state.shard(p))));
    let mut doors = lock(attachment.state.door_shard(passage.door));
    let mut sites = lock(attachment.state.site_shard(passage.site));
    with_scratch(|scratch| {
        let state = guard
            .as_ref()
            .and_then(|(person, shard)| shard.get(person))
            .map_or(&[][..], Vec::as_slice);
        let input = PassageInput {
            door: passage.door.0,
            site: passage.site.0,
            person: passage.person.map(|p| p.0),
            at_unix: passage.at.as_second(),
            direction: passage.direction,
            opened: passage.opened,
            state: Cow::Borrowed(state),
            door_state: Cow::Borrowed(doors.get(&passage.door).map_or(&[][..], Vec::as_slice)),
            site_state: Cow::Borrowed(sites.get(&passage.site).map_or(&[][..], Vec::as_slice)),
            door_config: Cow::Borrowed(&attachment.config),
        };
        let mut bytes = std::mem::take(&mut scratch.input);
        bytes.clear();
        let bytes = postcard::to_extend(&input, bytes).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
        let out = plugin.call_raw_with(Hook::Passage, &bytes, |out| decode_passage(out, &mut scratch.states));
        scratch.input = bytes;
        let [change, door_change, site_change] = out??;
        let [new, new_door, new_site] = &scratch.states;
        if let Some((person, shard)) = &mut guard {
            apply_change(shard, *person, change, new);
        }
        apply_change(&mut doors, passage.door, door_change, new_door);
        apply_change(&mut sites, passage.site, site_change, new_site);
        Ok(())
    })
}

/// `keyway_abi::PassageOutput`, borrowed.
#[derive(Debug, Serialize, Deserialize)]
struct PassageWire<'a> {
    #[serde(borrow)]
    state: StateWire<'a>,
    #[serde(borrow)]
    door_state: StateWire<'a>,
    #[serde(borrow)]
    site_state: StateWire<'a>,
}

/// Decodes a passage hook's `HookResult<PassageOutput>` strictly, copying new states
/// into `states` (each checked against [`MAX_RULE_STATE`]).
fn decode_passage(bytes: &[u8], states: &mut [Vec<u8>; 3]) -> Result<[StateChange; 3], PluginError> {
    let out = match decode_strict::<Result<PassageWire<'_>, &str>>(bytes)? {
        Ok(out) => out,
        Err(message) => return Err(guest_error(message)),
    };
    state_changes([out.state, out.door_state, out.site_state], states)
}

/// Turns three state updates into changes, copying new states into `states`.
fn state_changes(wires: [StateWire<'_>; 3], states: &mut [Vec<u8>; 3]) -> Result<[StateChange; 3], PluginError> {
    let mut changes = [StateChange::Keep; 3];
    for ((wire, change), buf) in wires.into_iter().zip(&mut changes).zip(states.iter_mut()) {
        *change = match wire {
            StateWire::Keep => StateChange::Keep,
            StateWire::Set(s) if s.len() > MAX_RULE_STATE => {
                return Err(PluginError::StateTooLarge {
                    len: s.len(),
                    max: MAX_RULE_STATE,
                });
            }
            StateWire::Set(s) => {
                buf.clear();
                buf.extend_from_slice(s);
                StateChange::Set
            }
            StateWire::Clear => StateChange::Clear,
        };
    }
    Ok(changes)
}

/// The checks a chain passes whatever the bundle: its length, and no rule twice.
fn check_chain(door: DoorId, links: &[RuleLink]) -> Result<(), AttachError> {
    if links.len() > MAX_CHAIN {
        return Err(AttachError::ChainTooLong {
            len: links.len(),
            door: door.0,
            max: MAX_CHAIN,
        });
    }
    for (i, link) in links.iter().enumerate() {
        if links.iter().take(i).any(|other| other.rule == link.rule) {
            return Err(AttachError::Duplicate {
                rule: printable(&link.rule, 64),
                door: door.0,
            });
        }
    }
    Ok(())
}

fn attached(chain: &[Attachment]) -> Vec<Attached> {
    chain.iter().map(|a| (Arc::clone(&a.rule), a.fail)).collect()
}

/// Runs one rule of a chain: the effect it leads to (the core's, or a deny) and what it
/// said.
fn run_rule(
    attachment: &Attachment,
    bundle: &Bundle,
    decision: &Decision,
    ctx: &DoorContext<'_>,
    moment: &LocalMoment,
    site_open: Option<bool>,
    obligations: &mut Vec<Obligation>,
) -> (Effect, RuleTrace) {
    let fail = |sha256: Option<Sha256>, error: String| {
        let effect = match attachment.fail {
            FailMode::Secure => Effect::Deny,
            FailMode::Safe => decision.effect,
        };
        let outcome = RuleOutcome::Failed {
            error,
            fail: attachment.fail,
        };
        (
            effect,
            RuleTrace {
                rule: Arc::clone(&attachment.rule),
                sha256,
                outcome,
            },
        )
    };
    let Some(plugin) = bundle.rule(&attachment.rule) else {
        return fail(
            None,
            format!("rule `{}` is not in bundle `{}`", attachment.rule, bundle.name()),
        );
    };
    let sha256 = Some(plugin.sha256());
    // Settings that no check of this rule accepted (a chain restored from the store
    // while another bundle ran) must not be silently ignored by a rule that reads none.
    if !attachment.config.values.is_empty() && !takes_door_config(plugin) {
        return fail(
            sha256,
            format!(
                "rule `{}` takes no per-door configuration, but door {} gives it one",
                attachment.rule, ctx.door.0
            ),
        );
    }
    let local = LocalTime {
        weekday: u8::try_from(moment.weekday.to_monday_one_offset()).unwrap_or(1),
        minute_of_day: moment.minute,
    };
    let role = ctx.role;
    let scoped = plugin.abi_version() >= 2;
    let mut guard = decision.person.map(|p| {
        (
            p,
            attachment.state.shard(p).lock().unwrap_or_else(PoisonError::into_inner),
        )
    });
    // Only a version 2 rule sees (and so locks) its door's and site's states.
    let mut door_guard = scoped.then(|| {
        attachment
            .state
            .door_shard(ctx.door)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    });
    let mut site_guard = scoped.then(|| {
        attachment
            .state
            .site_shard(ctx.site)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    });
    let out = with_scratch(|scratch| {
        let RuleScratch {
            input: scratch_input,
            states: scratch_states,
            groups,
        } = scratch;
        groups.clear();
        groups.extend(ctx.groups.iter().map(|g| g.0));
        let state = guard
            .as_ref()
            .and_then(|(person, shard)| shard.get(person))
            .map_or(&[][..], Vec::as_slice);
        let door_state = door_guard
            .as_ref()
            .and_then(|m| m.get(&ctx.door))
            .map_or(&[][..], Vec::as_slice);
        let site_state = site_guard
            .as_ref()
            .and_then(|m| m.get(&ctx.site))
            .map_or(&[][..], Vec::as_slice);
        // Borrowed: no copy of the states or of the reason code for the call.
        let input = DoorRuleInput {
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
                reason: Cow::Borrowed(decision.reason.code()),
            },
            state: Cow::Borrowed(state),
            site_open,
            site: ctx.site.0,
            door_state: Cow::Borrowed(door_state),
            site_state: Cow::Borrowed(site_state),
            kind: abi_kind(ctx.kind),
            groups: Cow::Borrowed(groups.as_slice()),
            door_config: Cow::Borrowed(&attachment.config),
        };
        let mut bytes = std::mem::take(scratch_input);
        bytes.clear();
        let bytes = postcard::to_extend(&input, bytes).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
        let out = plugin.call_raw_with(Hook::DoorRule, &bytes, |out| {
            decode_output(out, scoped, scratch_states, obligations)
        });
        *scratch_input = bytes;
        let (verdict, [change, door_change, site_change]) = out??;
        // The states change only once the whole call succeeded.
        let [new, new_door, new_site] = &*scratch_states;
        if let Some((person, shard)) = &mut guard {
            apply_change(shard, *person, change, new);
        }
        if let Some(doors) = &mut door_guard {
            apply_change(doors, ctx.door, door_change, new_door);
        }
        if let Some(sites) = &mut site_guard {
            apply_change(sites, ctx.site, site_change, new_site);
        }
        Ok::<_, PluginError>(verdict)
    });
    drop(site_guard);
    drop(door_guard);
    drop(guard);
    let verdict = match out {
        Ok(verdict) => verdict,
        Err(e) => return fail(sha256, e.to_string()),
    };
    let (effect, outcome) = match verdict {
        RuleVerdict::Allow => (decision.effect, RuleOutcome::Allowed),
        RuleVerdict::Deny { reason } => (Effect::Deny, RuleOutcome::Denied { reason }),
        RuleVerdict::Abstain => (decision.effect, RuleOutcome::Abstained),
    };
    (
        effect,
        RuleTrace {
            rule: Arc::clone(&attachment.rule),
            sha256,
            outcome,
        },
    )
}

/// Buffers one thread reuses across rule calls, so a call allocates nothing on the host.
#[derive(Debug, Default)]
struct RuleScratch {
    /// The encoded input.
    input: Vec<u8>,
    /// The states a rule answered with `StateUpdate::Set`: per person, door and site.
    states: [Vec<u8>; 3],
    /// The person's groups, as the input carries them.
    groups: Vec<u32>,
}

/// The core's credential kind as the ABI spells it.
const fn abi_kind(kind: CredentialKind) -> keyway_abi::CredentialKind {
    match kind {
        CredentialKind::Tag => keyway_abi::CredentialKind::Tag,
        CredentialKind::DigitalKey => keyway_abi::CredentialKind::DigitalKey,
        CredentialKind::Pin => keyway_abi::CredentialKind::Pin,
    }
}

thread_local! {
    static SCRATCH: RefCell<RuleScratch> = RefCell::new(RuleScratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut RuleScratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        // Only a rule call nested in another on the same thread could get here; it pays
        // for fresh buffers rather than failing.
        Err(_) => f(&mut RuleScratch::default()),
    })
}

/// `keyway_abi::DoorRuleOutput` as it lies on the wire, borrowing from the plugin's
/// memory: decoding it allocates nothing unless the rule denies (for the reason).
#[derive(Debug, Serialize, Deserialize)]
enum VerdictWire<'a> {
    Allow,
    Deny { reason: &'a str },
    Abstain,
}

/// `keyway_abi::StateUpdate`, borrowed.
#[derive(Debug, Serialize, Deserialize)]
enum StateWire<'a> {
    Keep,
    Set(&'a [u8]),
    Clear,
}

/// `keyway_abi::DoorRuleOutput`, borrowed.
#[derive(Debug, Serialize, Deserialize)]
struct OutputWire<'a> {
    #[serde(borrow)]
    verdict: VerdictWire<'a>,
    #[serde(borrow)]
    state: StateWire<'a>,
}

/// What to do with the person's state; for `Set`, the bytes are in the scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateChange {
    Keep,
    Set,
    Clear,
}

/// `keyway_abi::DoorRuleOutput` of ABI version 2, borrowed: version 1's fields, then the
/// per-door and per-site state updates.
#[derive(Debug, Serialize, Deserialize)]
struct OutputWireV2<'a> {
    #[serde(borrow)]
    verdict: VerdictWire<'a>,
    #[serde(borrow)]
    state: StateWire<'a>,
    #[serde(borrow)]
    door_state: StateWire<'a>,
    #[serde(borrow)]
    site_state: StateWire<'a>,
    #[serde(borrow)]
    obligations: Vec<ObligationWire<'a>>,
}

/// `keyway_abi::Obligation`, borrowed.
#[derive(Debug, Serialize, Deserialize)]
struct ObligationWire<'a> {
    kind: &'a str,
    detail: &'a str,
}

/// Most obligations one rule call may answer.
pub const MAX_OBLIGATIONS: usize = 4;
/// Longest obligation kind, in bytes.
pub const MAX_OBLIGATION_KIND: usize = 64;
/// Most bytes of an obligation's detail kept (the rest is cut, and said so).
pub const MAX_OBLIGATION_DETAIL: usize = 256;

/// Checks owned obligations (from [`LoadedPlugin::door_rule`](crate::LoadedPlugin::door_rule))
/// as the decision path does, capping and escaping their details in place.
pub(crate) fn check_obligations(obligations: &mut Vec<Obligation>) -> Result<(), PluginError> {
    let wires: Vec<ObligationWire<'_>> = obligations
        .iter()
        .map(|o| ObligationWire {
            kind: &o.kind,
            detail: &o.detail,
        })
        .collect();
    let mut checked = Vec::with_capacity(wires.len());
    take_obligations(&wires, &mut checked)?;
    *obligations = checked;
    Ok(())
}

/// Checks a rule's obligations and keeps them, capped and printable.
fn take_obligations(wires: &[ObligationWire<'_>], out: &mut Vec<Obligation>) -> Result<(), PluginError> {
    if wires.len() > MAX_OBLIGATIONS {
        return Err(PluginError::OutputLimit {
            what: "obligations",
            count: wires.len(),
            max: MAX_OBLIGATIONS,
        });
    }
    for wire in wires {
        if wire.kind.len() > MAX_OBLIGATION_KIND || !valid_capability(wire.kind) {
            return Err(PluginError::Decode {
                reason: format!(
                    "obligation kind `{}` is not a lowercase dotted name of at most {MAX_OBLIGATION_KIND} bytes",
                    printable(wire.kind, MAX_OBLIGATION_KIND)
                ),
            });
        }
    }
    out.extend(wires.iter().map(|w| Obligation {
        kind: w.kind.to_owned(),
        detail: printable(w.detail, MAX_OBLIGATION_DETAIL),
    }));
    Ok(())
}

/// Decodes a door rule's `HookResult<DoorRuleOutput>` in place (version 1's or, when
/// `v2`, version 2's), copying each new state into `states` (per person, door, site;
/// each checked against [`MAX_RULE_STATE`]) and appending its obligations to
/// `obligations`. A version 1 output keeps the door's and the site's states and has no
/// obligations.
fn decode_output(
    bytes: &[u8],
    v2: bool,
    states: &mut [Vec<u8>; 3],
    obligations: &mut Vec<Obligation>,
) -> Result<(RuleVerdict, [StateChange; 3]), PluginError> {
    let (verdict, wires) = if v2 {
        match decode_strict::<Result<OutputWireV2<'_>, &str>>(bytes)? {
            Ok(out) => {
                // Checked before anything is kept: a refused answer leaves no trace.
                let kept = obligations.len();
                if let Err(e) = take_obligations(&out.obligations, obligations) {
                    obligations.truncate(kept);
                    return Err(e);
                }
                (out.verdict, [out.state, out.door_state, out.site_state])
            }
            Err(message) => return Err(guest_error(message)),
        }
    } else {
        match decode_strict::<Result<OutputWire<'_>, &str>>(bytes)? {
            Ok(out) => (out.verdict, [out.state, StateWire::Keep, StateWire::Keep]),
            Err(message) => return Err(guest_error(message)),
        }
    };
    let changes = state_changes(wires, states)?;
    let verdict = match verdict {
        VerdictWire::Allow => RuleVerdict::Allow,
        VerdictWire::Deny { reason } => RuleVerdict::Deny {
            reason: if is_printable(reason, MAX_REASON) {
                reason.to_owned()
            } else {
                printable(reason, MAX_REASON)
            },
        },
        VerdictWire::Abstain => RuleVerdict::Abstain,
    };
    Ok((verdict, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_abi::{DoorRuleOutput, HookResult, StateUpdate};

    type Decoded = Result<(RuleVerdict, [StateChange; 3]), String>;

    /// A decision's text says what happened: never "allowed" when it was denied, and a
    /// rule skipped on a fail-safe door is said so.
    #[test]
    fn text_never_misleads() {
        use keyway_core::{GroupId, Revision};
        let decision = |reason: Reason| Decision {
            effect: reason.effect(),
            reason,
            revision: Revision(1),
            credential: None,
            person: None,
        };
        let granted = Reason::Granted {
            group: GroupId(1),
            schedule: None,
        };
        let trace = |outcome| RuleTrace {
            rule: Arc::from("r"),
            sha256: None,
            outcome,
        };
        let failed = |fail| RuleOutcome::Failed {
            error: "boom".into(),
            fail,
        };
        // (core reason, final effect, what the rule said, code, text)
        let cases = [
            (
                Reason::NoRight,
                Effect::Deny,
                RuleOutcome::Allowed,
                "no_right",
                "no_right; rule `r` (not loaded) answered allow, which cannot lift the deny",
            ),
            (
                granted,
                Effect::Allow,
                RuleOutcome::Allowed,
                "granted",
                "granted by `group:1` at any time; allowed by rule `r` (not loaded)",
            ),
            (
                granted,
                Effect::Allow,
                failed(FailMode::Safe),
                "rule_failed_open",
                "granted by `group:1` at any time, but rule `r` (not loaded) failed and was skipped (fail-safe door): boom",
            ),
            (
                Reason::NoRight,
                Effect::Deny,
                failed(FailMode::Safe),
                "no_right",
                "no_right; rule `r` (not loaded) failed: boom",
            ),
            (
                granted,
                Effect::Deny,
                failed(FailMode::Secure),
                "rule_failed",
                "denied: rule `r` (not loaded) failed and the door is fail-secure: boom",
            ),
        ];
        for (reason, effect, outcome, code, text) in cases {
            let d = RuledDecision {
                effect,
                core: decision(reason),
                rule: Some(trace(outcome)),
                before: Vec::new(),
                obligations: Vec::new(),
            };
            assert_eq!((d.reason_code(), d.to_string().as_str()), (code, text));
        }
    }

    /// The borrowed wire types decode exactly what the SDK's owned types encode.
    #[test]
    fn wire_types_match_the_sdk() {
        use StateChange::{Clear, Keep, Set};
        let big = vec![7u8; MAX_RULE_STATE + 1];
        // (what a version 2 plugin answers, the decoded verdict and changes, the states)
        let cases: Vec<(HookResult<DoorRuleOutput>, Decoded, [Vec<u8>; 3])> = vec![
            (
                Ok(DoorRuleOutput::allow()),
                Ok((RuleVerdict::Allow, [Keep; 3])),
                Default::default(),
            ),
            (
                Ok(DoorRuleOutput::abstain()),
                Ok((RuleVerdict::Abstain, [Keep; 3])),
                Default::default(),
            ),
            (
                Ok(DoorRuleOutput::deny("no").with_state(StateUpdate::Set(vec![1, 2, 3]))),
                Ok((RuleVerdict::Deny { reason: "no".into() }, [Set, Keep, Keep])),
                [vec![1, 2, 3], vec![], vec![]],
            ),
            (
                Ok(DoorRuleOutput::allow()
                    .with_state(StateUpdate::Clear)
                    .with_door_state(StateUpdate::Set(vec![4]))
                    .with_site_state(StateUpdate::Clear)),
                Ok((RuleVerdict::Allow, [Clear, Set, Clear])),
                [vec![], vec![4], vec![]],
            ),
            (
                Ok(DoorRuleOutput::allow().with_site_state(StateUpdate::Set(big))),
                Err("state of 1025 bytes exceeds the cap of 1024 bytes".into()),
                Default::default(),
            ),
            (
                Err("broken".into()),
                Err("plugin error: broken".into()),
                Default::default(),
            ),
        ];
        for (answer, expected, expected_states) in cases {
            let bytes = postcard::to_allocvec(&answer).unwrap();
            let mut states = <[Vec<u8>; 3]>::default();
            let got = decode_output(&bytes, true, &mut states, &mut Vec::new()).map_err(|e| e.to_string());
            assert_eq!(got, expected, "{answer:?}");
            assert_eq!(states, expected_states, "{answer:?}");
            // A version 1 plugin's answer has no door or site state: the same bytes are
            // refused as trailing bytes.
            if expected.is_ok() {
                assert!(
                    decode_output(&bytes, false, &mut states, &mut Vec::new()).is_err(),
                    "{answer:?} as v1"
                );
            }
        }
        // Version 1: verdict and person state only; the door's and site's states stay.
        let v1: HookResult<(RuleVerdict, StateUpdate)> = Ok((RuleVerdict::Allow, StateUpdate::Set(vec![9])));
        let bytes = postcard::to_allocvec(&v1).unwrap();
        let mut states = <[Vec<u8>; 3]>::default();
        let got = decode_output(&bytes, false, &mut states, &mut Vec::new()).map_err(|e| e.to_string());
        assert_eq!(got, Ok((RuleVerdict::Allow, [Set, Keep, Keep])));
        assert_eq!(states[0], vec![9]);
        let err = decode_output(&[0, 9], true, &mut states, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, PluginError::Decode { .. }), "{err}");
    }
}
