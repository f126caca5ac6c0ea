//! Anti-passback: a second entry without an exit in between is denied.
//!
//! It needs ABI version 2. The host keeps one byte of state per person: the direction of
//! their last passage through a door carrying this rule. It moves on **passage events**
//! (the IQ reports the door actually opened for the person, entering or leaving), not on
//! decisions: a badge that was allowed but not followed by a passage (the person changed
//! their mind, the door was not pushed) arms nothing, so nobody is locked out for a
//! passage they never made. A decision only reads the state: an entry after an entry is
//! denied; an exit always passes (nobody is locked in) unless `strict_exit` is set.
//! Readers of unknown direction are not judged, and neither are badges the core denied.
//!
//! Config (optional):
//! - `strict_exit = true` also denies an exit without an entry before it.
//! - `arm_on_decision = true` moves the state on allowed decisions instead, for sites
//!   whose IQs do not report passages (the behaviour of ABI version 1's anti-passback).

use keyway_sdk::{
    Config, Direction, DoorRuleInput, DoorRuleOutput, HookResult, PassageInput, PassageOutput, Plugin, StateUpdate,
};

const INSIDE: u8 = 1;
const OUTSIDE: u8 = 2;

/// The plugin.
#[derive(Debug)]
pub struct AntiPassback {
    strict_exit: bool,
    arm_on_decision: bool,
}

/// The state a passage in `direction` leaves, if it moves it.
fn after(direction: Direction) -> Option<StateUpdate> {
    match direction {
        Direction::Unknown => None,
        Direction::Entry => Some(StateUpdate::Set(vec![INSIDE])),
        Direction::Exit => Some(StateUpdate::Set(vec![OUTSIDE])),
    }
}

impl Plugin for AntiPassback {
    fn configure(config: &Config) -> HookResult<Self> {
        config.only(&["strict_exit", "arm_on_decision"])?;
        Ok(AntiPassback {
            strict_exit: config.bool("strict_exit")?.unwrap_or(false),
            arm_on_decision: config.bool("arm_on_decision")?.unwrap_or(false),
        })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        if !input.verdict.allow || input.person.is_none() {
            return Ok(DoorRuleOutput::abstain());
        }
        let last = input.state.first().copied();
        let allowed = match input.direction {
            Direction::Unknown => return Ok(DoorRuleOutput::abstain()),
            Direction::Entry if last == Some(INSIDE) => {
                return Ok(DoorRuleOutput::deny("anti-passback: already inside"));
            }
            Direction::Exit if self.strict_exit && last != Some(INSIDE) => {
                return Ok(DoorRuleOutput::deny("anti-passback: no entry before this exit"));
            }
            Direction::Entry | Direction::Exit => DoorRuleOutput::allow(),
        };
        Ok(match after(input.direction).filter(|_| self.arm_on_decision) {
            Some(state) => allowed.with_state(state),
            None => allowed,
        })
    }

    fn passage(&self, input: &PassageInput<'_>) -> HookResult<PassageOutput> {
        let moved = (input.opened && input.person.is_some() && !self.arm_on_decision)
            .then(|| after(input.direction))
            .flatten();
        Ok(PassageOutput {
            state: moved.unwrap_or_default(),
            ..PassageOutput::default()
        })
    }
}

keyway_sdk::export_plugin!(AntiPassback, door_rule, passage);

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::RuleVerdict;
    use keyway_sdk::testing::{DoorRuleSim, Harness, SimOptions, door_input, passage_input};

    /// One step: a badge (the core allows it or not, and the rule's expected verdict),
    /// or a passage the IQ reports (the door opened or stayed shut).
    #[derive(Clone, Debug)]
    enum Step {
        Badge(u32, Direction, bool, RuleVerdict),
        Passage(u32, Direction, bool),
    }

    fn check(config: Config, steps: &[Step]) {
        // Several seeds: instances come and go, and a hot swap lands midway.
        for seed in 1..=8 {
            let options = SimOptions {
                seed,
                ..SimOptions::default()
            };
            let mut sim = DoorRuleSim::<AntiPassback>::with_options(config.clone(), options).unwrap();
            for (i, step) in steps.iter().enumerate() {
                if i == steps.len() / 2 {
                    sim.hot_swap().unwrap();
                }
                match step {
                    Step::Badge(person, direction, core_allows, expected) => {
                        let mut input = door_input(1, Some(*person));
                        input.direction = *direction;
                        input.verdict.allow = *core_allows;
                        assert_eq!(&sim.decide(input).unwrap(), expected, "seed {seed}, step {i}");
                    }
                    Step::Passage(person, direction, opened) => {
                        let mut input = passage_input(1, Some(*person), *direction);
                        input.opened = *opened;
                        sim.passage(input).unwrap();
                    }
                }
            }
        }
    }

    fn denied() -> RuleVerdict {
        RuleVerdict::Deny {
            reason: "anti-passback: already inside".into(),
        }
    }

    #[test]
    fn passages_arm_it_not_decisions() {
        use Direction::{Entry, Exit, Unknown};
        use Step::{Badge, Passage};
        check(
            Config::new(),
            &[
                Badge(1, Entry, true, RuleVerdict::Allow),
                // Allowed but never went through: the next entry is still allowed.
                Badge(1, Entry, true, RuleVerdict::Allow),
                Passage(1, Entry, true),
                Badge(1, Entry, true, denied()),
                Badge(2, Entry, true, RuleVerdict::Allow),
                Badge(1, Unknown, true, RuleVerdict::Abstain),
                // A door that stayed shut moves nothing.
                Badge(1, Exit, true, RuleVerdict::Allow),
                Passage(1, Exit, false),
                Badge(1, Entry, true, denied()),
                Passage(1, Exit, true),
                Badge(1, Entry, true, RuleVerdict::Allow),
                Badge(1, Exit, false, RuleVerdict::Abstain),
                // Nobody is locked in: an exit passes without an entry before it.
                Badge(3, Exit, true, RuleVerdict::Allow),
            ],
        );
    }

    #[test]
    fn strict_exit() {
        use Direction::{Entry, Exit};
        use Step::{Badge, Passage};
        let no_entry = RuleVerdict::Deny {
            reason: "anti-passback: no entry before this exit".into(),
        };
        check(
            Config::new().with("strict_exit", true),
            &[
                Badge(1, Exit, true, no_entry.clone()),
                Badge(1, Entry, true, RuleVerdict::Allow),
                Passage(1, Entry, true),
                Badge(1, Exit, true, RuleVerdict::Allow),
                Passage(1, Exit, true),
                Badge(1, Exit, true, no_entry),
            ],
        );
    }

    /// For IQs that report no passages: allowed decisions arm it, passages are ignored.
    #[test]
    fn arm_on_decision() {
        use Direction::{Entry, Exit};
        use Step::{Badge, Passage};
        check(
            Config::new().with("arm_on_decision", true),
            &[
                Badge(1, Entry, true, RuleVerdict::Allow),
                Badge(1, Entry, true, denied()),
                Passage(1, Exit, true),
                Badge(1, Entry, true, denied()),
                Badge(1, Exit, true, RuleVerdict::Allow),
                Badge(1, Entry, true, RuleVerdict::Allow),
            ],
        );
    }

    #[test]
    fn config_is_checked() {
        // (config, expected error)
        let cases = [
            (
                Config::new().with("strict_exit", 1),
                "config key `strict_exit` must be a boolean, found an integer",
            ),
            (
                Config::new().with("strict-exit", true),
                "unknown config key `strict-exit` (known: `strict_exit`, `arm_on_decision`)",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(Harness::<AntiPassback>::new(config).unwrap_err(), expected);
        }
    }
}
