//! A stateful door rule: a second entry without an exit in between is denied.
//!
//! The host keeps one byte of state per person: the direction of their last passage
//! through a door carrying this rule. An entry after an entry is denied; an exit always
//! passes (nobody is locked in) and re-arms entry. Readers of unknown direction are not
//! judged. Only passages the core allowed, and the rule did not deny, move the state.
//!
//! Config (optional): `strict_exit = true` also denies an exit without an entry before it.

use keyway_sdk::{Config, Direction, DoorRuleInput, DoorRuleOutput, HookResult, Plugin, StateUpdate};

const INSIDE: u8 = 1;
const OUTSIDE: u8 = 2;

/// The plugin.
#[derive(Debug)]
pub struct AntiPassback {
    strict_exit: bool,
}

impl Plugin for AntiPassback {
    fn configure(config: &Config) -> HookResult<Self> {
        Ok(AntiPassback {
            strict_exit: config.bool("strict_exit")?.unwrap_or(false),
        })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        if !input.verdict.allow || input.person.is_none() {
            return Ok(DoorRuleOutput::abstain());
        }
        let last = input.state.first().copied();
        match input.direction {
            Direction::Unknown => Ok(DoorRuleOutput::abstain()),
            Direction::Entry if last == Some(INSIDE) => Ok(DoorRuleOutput::deny("anti-passback: already inside")),
            Direction::Entry => Ok(DoorRuleOutput::allow().with_state(StateUpdate::Set(vec![INSIDE]))),
            Direction::Exit if self.strict_exit && last != Some(INSIDE) => {
                Ok(DoorRuleOutput::deny("anti-passback: no entry before this exit"))
            }
            Direction::Exit => Ok(DoorRuleOutput::allow().with_state(StateUpdate::Set(vec![OUTSIDE]))),
        }
    }
}

keyway_sdk::export_plugin!(AntiPassback, door_rule);

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::RuleVerdict;
    use keyway_sdk::testing::{DoorRuleSim, door_input};

    fn check(config: Config, steps: &[(u32, Direction, bool, RuleVerdict)]) {
        let mut sim = DoorRuleSim::<AntiPassback>::new(config).unwrap();
        for (i, (person, direction, core_allows, expected)) in steps.iter().enumerate() {
            let mut input = door_input(1, Some(*person));
            input.direction = *direction;
            input.verdict.allow = *core_allows;
            assert_eq!(&sim.decide(input).unwrap(), expected, "step {i}");
        }
    }

    #[test]
    fn second_entry_is_denied() {
        let denied = RuleVerdict::Deny {
            reason: "anti-passback: already inside".into(),
        };
        use Direction::{Entry, Exit, Unknown};
        check(
            Config::new(),
            &[
                (1, Entry, true, RuleVerdict::Allow),
                (1, Entry, true, denied.clone()),
                (2, Entry, true, RuleVerdict::Allow),
                (1, Unknown, true, RuleVerdict::Abstain),
                (1, Exit, true, RuleVerdict::Allow),
                (1, Entry, true, RuleVerdict::Allow),
                (1, Exit, false, RuleVerdict::Abstain),
                (1, Entry, true, denied),
                (3, Exit, true, RuleVerdict::Allow),
            ],
        );
    }

    #[test]
    fn strict_exit() {
        use Direction::{Entry, Exit};
        check(
            Config::new().with("strict_exit", true),
            &[
                (
                    1,
                    Exit,
                    true,
                    RuleVerdict::Deny {
                        reason: "anti-passback: no entry before this exit".into(),
                    },
                ),
                (1, Entry, true, RuleVerdict::Allow),
                (1, Exit, true, RuleVerdict::Allow),
            ],
        );
    }
}
