//! An occupancy limit: an entry is denied once the site holds `max` people.
//!
//! It needs ABI version 2. The count is per-site state the host keeps, and it moves on
//! passage events (what the IQ reports actually happened: a door that opened for an entry
//! or an exit), not on decisions, so a badge that was allowed but not followed by a
//! passage counts nothing. The host applies each passage atomically, so concurrent
//! passages through different doors and instances never lose a count. Between a decision
//! and its passage another entry can be allowed: the limit is exact on passages, and
//! may be passed by the entries in flight.
//!
//! Config: `max`, 1 to 100000 people (required).

use keyway_sdk::{
    Config, Direction, DoorRuleInput, DoorRuleOutput, HookResult, PassageInput, PassageOutput, Plugin, StateUpdate,
};

/// The plugin.
#[derive(Debug)]
pub struct Occupancy {
    max: u32,
}

/// The site's state: how many people are inside, 4 bytes little-endian.
fn count(state: &[u8]) -> u32 {
    state
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

impl Plugin for Occupancy {
    fn configure(config: &Config) -> HookResult<Self> {
        config.only(&["max"])?;
        let max = config.int("max")?.ok_or("`max` is required")?;
        let max = u32::try_from(max)
            .ok()
            .filter(|m| (1..=100_000).contains(m))
            .ok_or_else(|| format!("`max` must be 1 to 100000 people, found {max}"))?;
        Ok(Occupancy { max })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        if !input.verdict.allow || input.direction != Direction::Entry {
            return Ok(DoorRuleOutput::abstain());
        }
        if count(&input.site_state) >= self.max {
            return Ok(DoorRuleOutput::deny(format!("occupancy limit of {} reached", self.max)));
        }
        Ok(DoorRuleOutput::allow())
    }

    fn passage(&self, input: &PassageInput<'_>) -> HookResult<PassageOutput> {
        let inside = count(&input.site_state);
        let inside = match (input.opened, input.direction) {
            (true, Direction::Entry) => inside.saturating_add(1),
            (true, Direction::Exit) => inside.saturating_sub(1),
            _ => return Ok(PassageOutput::default()),
        };
        Ok(PassageOutput {
            site_state: StateUpdate::Set(inside.to_le_bytes().to_vec()),
            ..PassageOutput::default()
        })
    }
}

keyway_sdk::export_plugin!(Occupancy, door_rule, passage);

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::RuleVerdict;
    use keyway_sdk::testing::{DoorRuleSim, Harness, SimOptions, door_input, passage_input};

    /// Entries and exits (as passages) move the count; decisions at the limit deny
    /// entries, never exits; a badge without a passage counts nothing.
    #[test]
    fn the_count_follows_passages() {
        use Direction::{Entry, Exit};
        // (what happens: a decision (true) or a passage (false), direction, expected verdict)
        let steps = [
            (true, Entry, Some(RuleVerdict::Allow)),
            (false, Entry, None), // 1 inside
            (true, Entry, Some(RuleVerdict::Allow)),
            (true, Entry, Some(RuleVerdict::Allow)), // allowed, but nobody went through
            (false, Entry, None),                    // 2 inside: the limit
            (
                true,
                Entry,
                Some(RuleVerdict::Deny {
                    reason: "occupancy limit of 2 reached".into(),
                }),
            ),
            (true, Exit, Some(RuleVerdict::Abstain)),
            (false, Exit, None), // 1 inside
            (true, Entry, Some(RuleVerdict::Allow)),
        ];
        for seed in 1..=10 {
            let options = SimOptions {
                seed,
                ..SimOptions::default()
            };
            let mut sim = DoorRuleSim::<Occupancy>::with_options(Config::new().with("max", 2), options).unwrap();
            for (i, (decision, direction, expected)) in steps.iter().cloned().enumerate() {
                if i == 4 {
                    sim.hot_swap().unwrap();
                }
                if decision {
                    let mut input = door_input(1, Some(7));
                    input.direction = direction;
                    assert_eq!(Some(sim.decide(input).unwrap()), expected, "seed {seed}, step {i}");
                } else {
                    sim.passage(passage_input(1, Some(7), direction)).unwrap();
                }
            }
            assert_eq!(sim.site_state(1), Some(&1u32.to_le_bytes()[..]), "seed {seed}");
        }
    }

    #[test]
    fn config_is_checked() {
        // (config, expected error)
        let cases = [
            (Config::new(), "`max` is required"),
            (
                Config::new().with("max", 0),
                "`max` must be 1 to 100000 people, found 0",
            ),
            (
                Config::new().with("max", "ten"),
                "config key `max` must be an integer, found a string",
            ),
            (
                Config::new().with("max", 5).with("maximum", 9),
                "unknown config key `maximum` (known: `max`)",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(Harness::<Occupancy>::new(config).unwrap_err(), expected);
        }
    }
}
