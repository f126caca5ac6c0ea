//! A native test harness: run a plugin's hooks with plain `cargo test`.
//!
//! The harness goes through the same postcard encoding and [`dispatch`] as the wasm
//! exports, so a type that does not round-trip fails here, not in production.
//! [`DoorRuleSim`] also keeps per-person state the way the host does, and runs a rule the
//! way the host does: over several instances, discarded at random, with hot swaps, so a
//! rule that keeps state in its own memory fails here (see [`SimOptions`]).
//! [`Harness`] is one instance, for hooks that keep no state.

use crate::{
    Config, CoreVerdict, CredentialKind, Direction, DoorRuleInput, DoorRuleOutput, Hook, HookResult, LocalTime,
    Notification, NotifyInput, PassageInput, PassageOutput, Plugin, RoleTableDef, RuleVerdict, StateUpdate,
    VoucherInput, VoucherVerdict, dispatch,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::collections::HashMap;

/// A configured plugin, called natively through the ABI's encoding.
#[derive(Debug)]
pub struct Harness<P> {
    plugin: P,
}

impl<P: Plugin> Harness<P> {
    /// Configures the plugin, as the host does after instantiating it.
    ///
    /// # Errors
    /// The plugin's own configuration error.
    pub fn new(config: Config) -> HookResult<Self> {
        let bytes = postcard::to_allocvec(&config).map_err(|e| e.to_string())?;
        let config: Config = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
        Ok(Harness {
            plugin: P::configure(&config)?,
        })
    }

    /// The plugin itself.
    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    fn call<I: Serialize, O: DeserializeOwned>(&self, hook: Hook, input: &I) -> HookResult<O> {
        let bytes = postcard::to_allocvec(input).map_err(|e| e.to_string())?;
        let out = dispatch(&self.plugin, hook, &bytes);
        postcard::from_bytes::<HookResult<O>>(&out).map_err(|e| format!("cannot decode the output: {e}"))?
    }

    /// The `roles` hook.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn roles(&self) -> HookResult<RoleTableDef> {
        self.call(Hook::Roles, &())
    }

    /// The `voucher` hook.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn voucher(&self, input: &VoucherInput) -> HookResult<VoucherVerdict> {
        self.call(Hook::Voucher, input)
    }

    /// The `notify` hook.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn notify(&self, input: &NotifyInput) -> HookResult<Vec<Notification>> {
        self.call(Hook::Notify, input)
    }

    /// The `passage` hook (ABI version 2), with the states given in `input`.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn passage(&self, input: &PassageInput<'_>) -> HookResult<PassageOutput> {
        self.call(Hook::Passage, input)
    }

    /// The `door_config` hook (ABI version 4): whether a door may attach the rule with
    /// `config`.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn door_config(&self, config: &Config) -> HookResult<()> {
        self.call(Hook::DoorConfig, config)
    }

    /// The `door_rule` hook, with the state given in `input`.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        self.call(Hook::DoorRule, input)
    }
}

/// How [`DoorRuleSim`] runs a rule: like the host, over several instances, any of which
/// may be discarded after any call.
///
/// The host pools instances and discards them at will (after a trap, when the pool is
/// full, on a hot swap), so a rule that keeps anything in its own memory between calls
/// (a field behind a `Cell`, `RefCell` or `Mutex`) sees a different, or a fresh, copy
/// from one call to the next. The simulator does the same on purpose, so such a rule fails
/// its own tests instead of failing in the field. Memory shared by every instance of a
/// native test (a `static`, a `thread_local!`) is not caught: do not use it either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// How many instances calls are spread over (at least one).
    pub instances: usize,
    /// The chance, per thousand, that the instance that served a call is then discarded
    /// (replaced by a freshly configured one).
    pub discard_per_mille: u16,
    /// The seed of the simulator's random choices: the same seed replays the same run.
    pub seed: u64,
}

impl SimOptions {
    /// One instance, never discarded: only for a rule's first steps, as it hides a rule
    /// that leans on its own memory.
    pub const SINGLE: SimOptions = SimOptions {
        instances: 1,
        discard_per_mille: 0,
        seed: 1,
    };
}

impl Default for SimOptions {
    /// Four instances, one discarded after about one call in five.
    fn default() -> Self {
        SimOptions {
            instances: 4,
            discard_per_mille: 200,
            seed: 0x6b65_7977_6179,
        }
    }
}

/// A door rule run as the host runs it: each call sees the per-person, per-door and
/// per-site states the previous calls left (kept by the simulator, as the host keeps
/// them), calls are
/// spread over several instances that are discarded at random ([`SimOptions`]), and
/// [`DoorRuleSim::hot_swap`] replaces every instance as a bundle swap does.
#[derive(Debug)]
pub struct DoorRuleSim<P> {
    config: Config,
    instances: Vec<Harness<P>>,
    options: SimOptions,
    rng: u64,
    states: HashMap<u32, Vec<u8>>,
    door_states: HashMap<u32, Vec<u8>>,
    site_states: HashMap<u32, Vec<u8>>,
    door_configs: HashMap<u32, Config>,
    discarded: u64,
}

impl<P: Plugin> DoorRuleSim<P> {
    /// Configures the rule, with the default [`SimOptions`].
    ///
    /// # Errors
    /// The plugin's configuration error.
    pub fn new(config: Config) -> HookResult<Self> {
        DoorRuleSim::with_options(config, SimOptions::default())
    }

    /// Configures the rule, run with these options.
    ///
    /// # Errors
    /// The plugin's configuration error.
    pub fn with_options(config: Config, options: SimOptions) -> HookResult<Self> {
        let count = options.instances.max(1);
        let mut instances = Vec::with_capacity(count);
        for _ in 0..count {
            instances.push(Harness::new(config.clone())?);
        }
        Ok(DoorRuleSim {
            config,
            instances,
            options,
            // xorshift needs a non-zero state.
            rng: options.seed | 1,
            states: HashMap::new(),
            door_states: HashMap::new(),
            site_states: HashMap::new(),
            door_configs: HashMap::new(),
            discarded: 0,
        })
    }

    /// Attaches the rule to `door` with its own `config`, as the host does: the rule's
    /// `door_config` hook must accept it (ABI version 4), and from then on every
    /// decision at `door` gets it in [`DoorRuleInput::door_config`]. An empty `config`
    /// is accepted without a call when the rule does not take per-door settings.
    ///
    /// # Errors
    /// The rule's refusal; nothing changes.
    pub fn attach(&mut self, door: u32, config: Config) -> HookResult<()> {
        let index = (self.next_random() % self.instances.len() as u64) as usize;
        let Some(instance) = self.instances.get(index) else {
            return Err("the simulator has no instance".into());
        };
        match instance.door_config(&config) {
            Ok(()) => {}
            // As the host: a rule without the hook takes an empty configuration only.
            Err(e) if e == crate::not_exported(Hook::DoorConfig) && config.values.is_empty() => {}
            Err(e) => return Err(e),
        }
        self.door_configs.insert(door, config);
        Ok(())
    }

    /// Runs the rule on `input` (its `state`, `door_state` and `site_state` are replaced
    /// by the kept ones, and its `door_config` by what [`DoorRuleSim::attach`] gave the
    /// door) on one of the instances, keeps the states it answers, and may then discard
    /// that instance.
    ///
    /// # Errors
    /// The plugin's error, or its configuration error when a fresh instance is made.
    pub fn decide(&mut self, mut input: DoorRuleInput<'_>) -> HookResult<RuleVerdict> {
        input.state = Cow::Owned(
            input
                .person
                .and_then(|p| self.states.get(&p).cloned())
                .unwrap_or_default(),
        );
        input.door_state = Cow::Owned(self.door_states.get(&input.door).cloned().unwrap_or_default());
        input.site_state = Cow::Owned(self.site_states.get(&input.site).cloned().unwrap_or_default());
        input.door_config = Cow::Owned(self.door_configs.get(&input.door).cloned().unwrap_or_default());
        let index = (self.next_random() % self.instances.len() as u64) as usize;
        let out = match self.instances.get(index) {
            Some(instance) => instance.door_rule(&input)?,
            None => return Err("the simulator has no instance".into()),
        };
        if let Some(person) = input.person {
            update(&mut self.states, person, out.state);
        }
        update(&mut self.door_states, input.door, out.door_state);
        update(&mut self.site_states, input.site, out.site_state);
        if self.next_random() % 1000 < u64::from(self.options.discard_per_mille) {
            let fresh = Harness::new(self.config.clone())?;
            if let Some(slot) = self.instances.get_mut(index) {
                *slot = fresh;
                self.discarded += 1;
            }
        }
        Ok(out.verdict)
    }

    /// Tells the rule of a passage (`input`'s states are replaced by the kept ones, and
    /// its `door_config` by what [`DoorRuleSim::attach`] gave the door) on
    /// one of the instances and keeps the states it answers, as the host does when an IQ
    /// reports what happened at the door.
    ///
    /// # Errors
    /// The plugin's error, or its configuration error when a fresh instance is made.
    pub fn passage(&mut self, mut input: PassageInput<'_>) -> HookResult<()> {
        input.state = Cow::Owned(
            input
                .person
                .and_then(|p| self.states.get(&p).cloned())
                .unwrap_or_default(),
        );
        input.door_state = Cow::Owned(self.door_states.get(&input.door).cloned().unwrap_or_default());
        input.site_state = Cow::Owned(self.site_states.get(&input.site).cloned().unwrap_or_default());
        input.door_config = Cow::Owned(self.door_configs.get(&input.door).cloned().unwrap_or_default());
        let index = (self.next_random() % self.instances.len() as u64) as usize;
        let out = match self.instances.get(index) {
            Some(instance) => instance.passage(&input)?,
            None => return Err("the simulator has no instance".into()),
        };
        if let Some(person) = input.person {
            update(&mut self.states, person, out.state);
        }
        update(&mut self.door_states, input.door, out.door_state);
        update(&mut self.site_states, input.site, out.site_state);
        Ok(())
    }

    /// Replaces every instance by a freshly configured one, as a hot swap of the bundle
    /// does; the per-person states are kept, as the host keeps them.
    ///
    /// # Errors
    /// The plugin's configuration error.
    pub fn hot_swap(&mut self) -> HookResult<()> {
        for slot in &mut self.instances {
            *slot = Harness::new(self.config.clone())?;
        }
        self.discarded += self.instances.len() as u64;
        Ok(())
    }

    /// The state kept for `person`, if any.
    #[must_use]
    pub fn state(&self, person: u32) -> Option<&[u8]> {
        self.states.get(&person).map(Vec::as_slice)
    }

    /// The state kept for `door`, if any.
    #[must_use]
    pub fn door_state(&self, door: u32) -> Option<&[u8]> {
        self.door_states.get(&door).map(Vec::as_slice)
    }

    /// The state kept for `site`, if any.
    #[must_use]
    pub fn site_state(&self, site: u32) -> Option<&[u8]> {
        self.site_states.get(&site).map(Vec::as_slice)
    }

    /// How many instances were discarded so far (at random or by a hot swap).
    #[must_use]
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// xorshift64: deterministic for a seed, good enough to pick instances.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Applies a state update to the state kept under `key`.
fn update(states: &mut HashMap<u32, Vec<u8>>, key: u32, change: StateUpdate) {
    match change {
        StateUpdate::Keep => {}
        StateUpdate::Set(s) => {
            states.insert(key, s);
        }
        StateUpdate::Clear => {
            states.remove(&key);
        }
    }
}

/// A passage for tests: `person` went through `door` of site 1 (it opened) at the time
/// [`door_input`] uses, in `direction`.
#[must_use]
pub fn passage_input(door: u32, person: Option<u32>, direction: Direction) -> PassageInput<'static> {
    PassageInput {
        door,
        site: 1,
        person,
        at_unix: 1_795_000_000,
        direction,
        opened: true,
        state: Cow::Borrowed(&[]),
        door_state: Cow::Borrowed(&[]),
        site_state: Cow::Borrowed(&[]),
        door_config: Cow::Owned(Config::new()),
    }
}

/// A door-rule input for tests: the core granted `person` at `door` of site 1, on a
/// Monday at noon, through a reader of unknown direction, at a site without opening
/// hours, with no state kept yet. Adjust the
/// fields you care about.
#[must_use]
pub fn door_input(door: u32, person: Option<u32>) -> DoorRuleInput<'static> {
    DoorRuleInput {
        door,
        person,
        role: person.map(|_| 3),
        rank: person.map(|_| 10),
        credential: person,
        at_unix: 1_795_000_000,
        local: LocalTime {
            weekday: 1,
            minute_of_day: 12 * 60,
        },
        direction: Direction::Unknown,
        verdict: CoreVerdict {
            allow: true,
            reason: Cow::Borrowed("granted"),
        },
        state: Cow::Borrowed(&[]),
        site_open: None,
        site: 1,
        door_state: Cow::Borrowed(&[]),
        site_state: Cow::Borrowed(&[]),
        kind: CredentialKind::Tag,
        groups: Cow::Borrowed(&[]),
        door_config: Cow::Owned(Config::new()),
    }
}
