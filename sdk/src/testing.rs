//! A native test harness: run a plugin's hooks with plain `cargo test`.
//!
//! The harness goes through the same postcard encoding and [`dispatch`] as the wasm
//! exports, so a type that does not round-trip fails here, not in production.
//! [`DoorRuleSim`] also keeps per-person state the way the host does.

use crate::{
    Config, CoreVerdict, Direction, DoorRuleInput, DoorRuleOutput, Hook, HookResult, LocalTime, Notification,
    NotifyInput, Plugin, RoleTableDef, RuleVerdict, StateUpdate, VoucherInput, VoucherVerdict, dispatch,
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

    /// The `door_rule` hook, with the state given in `input`.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        self.call(Hook::DoorRule, input)
    }
}

/// A door rule with the host's per-person state: each call sees the state the previous
/// call for the same person left.
#[derive(Debug)]
pub struct DoorRuleSim<P> {
    harness: Harness<P>,
    states: HashMap<u32, Vec<u8>>,
}

impl<P: Plugin> DoorRuleSim<P> {
    /// Configures the rule.
    ///
    /// # Errors
    /// The plugin's configuration error.
    pub fn new(config: Config) -> HookResult<Self> {
        Ok(DoorRuleSim {
            harness: Harness::new(config)?,
            states: HashMap::new(),
        })
    }

    /// Runs the rule on `input` (its `state` is replaced by the kept one) and keeps the
    /// state it answers.
    ///
    /// # Errors
    /// The plugin's error.
    pub fn decide(&mut self, mut input: DoorRuleInput<'_>) -> HookResult<RuleVerdict> {
        input.state = Cow::Owned(
            input
                .person
                .and_then(|p| self.states.get(&p).cloned())
                .unwrap_or_default(),
        );
        let out = self.harness.door_rule(&input)?;
        if let Some(person) = input.person {
            match out.state {
                StateUpdate::Keep => {}
                StateUpdate::Set(s) => {
                    self.states.insert(person, s);
                }
                StateUpdate::Clear => {
                    self.states.remove(&person);
                }
            }
        }
        Ok(out.verdict)
    }
}

/// A door-rule input for tests: the core granted `person` at `door`, on a Monday at noon,
/// through a reader of unknown direction, at a site without opening hours. Adjust the
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
    }
}
