//! A two-person rule: a door opens for a badge only when a second, different person the
//! core allowed badged at the same door within the window (30 seconds by default).
//!
//! It needs ABI version 2: what it remembers (who badged last at this door, and when) is
//! per-door state the host keeps, read and written atomically with each decision, so it
//! holds whichever instance serves a call, under concurrent calls and across hot swaps.
//! The first badge of a pair is denied and remembered; a second badge by another person
//! within the window is allowed and clears the door's state (the pair is used up). A
//! badge the core denied, or by an unknown person, is not judged and changes nothing.
//!
//! Config (optional): `window_s`, 1 to 3600 seconds.
//!
//! Per-door config (ABI version 4, optional, checked when a door attaches the rule):
//! `window_s` for that door, and `escort_groups`, access group ids of which one of the
//! pair must be a member (an escort rule: a visitor opens the door only with a guard).

use keyway_sdk::{Config, DoorRuleInput, DoorRuleOutput, HookResult, Plugin, StateUpdate};

/// The plugin.
#[derive(Debug)]
pub struct TwoPerson {
    window_s: i64,
}

/// What one door's attachment asks for.
#[derive(Debug, PartialEq, Eq)]
struct DoorSettings {
    window_s: i64,
    /// Empty: any two people.
    escort_groups: Vec<u32>,
}

fn window(config: &Config, default: i64) -> Result<i64, String> {
    let window_s = config.int("window_s")?.unwrap_or(default);
    if !(1..=3600).contains(&window_s) {
        return Err(format!("`window_s` must be 1 to 3600 seconds, found {window_s}"));
    }
    Ok(window_s)
}

/// The door's state: the person who badged first and when, 12 bytes little-endian, then
/// one byte: whether that person is an escort.
fn encode(person: u32, at: i64, escort: bool) -> Vec<u8> {
    let mut out = person.to_le_bytes().to_vec();
    out.extend_from_slice(&at.to_le_bytes());
    out.push(u8::from(escort));
    out
}

fn decode(state: &[u8]) -> Option<(u32, i64, bool)> {
    let person = u32::from_le_bytes(state.get(..4)?.try_into().ok()?);
    let at = i64::from_le_bytes(state.get(4..12)?.try_into().ok()?);
    Some((person, at, state.get(12) == Some(&1)))
}

impl TwoPerson {
    fn settings(&self, door_config: &Config) -> Result<DoorSettings, String> {
        door_config.only(&["window_s", "escort_groups"])?;
        let escort_groups = door_config
            .ints("escort_groups")?
            .unwrap_or_default()
            .into_iter()
            .map(|g| u32::try_from(g).map_err(|_| format!("`escort_groups`: {g} is not a group id")))
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(DoorSettings {
            window_s: window(door_config, self.window_s)?,
            escort_groups,
        })
    }
}

impl Plugin for TwoPerson {
    fn configure(config: &Config) -> HookResult<Self> {
        config.only(&["window_s"])?;
        Ok(TwoPerson {
            window_s: window(config, 30)?,
        })
    }

    fn door_config(&self, config: &Config) -> HookResult<()> {
        self.settings(config).map(drop)
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        let Some(person) = input.person.filter(|_| input.verdict.allow) else {
            return Ok(DoorRuleOutput::abstain());
        };
        let settings = self.settings(&input.door_config)?;
        let escort = settings.escort_groups.iter().any(|g| input.groups.contains(g));
        let now = input.at_unix;
        match decode(&input.door_state) {
            Some((first, at, first_escort))
                if first != person
                    && (0..=settings.window_s).contains(&(now - at))
                    && (settings.escort_groups.is_empty() || escort || first_escort) =>
            {
                Ok(DoorRuleOutput::allow().with_door_state(StateUpdate::Clear))
            }
            _ => Ok(DoorRuleOutput::deny(if settings.escort_groups.is_empty() {
                "two-person rule: waiting for a second person"
            } else {
                "two-person rule: waiting for a second person, one of them an escort"
            })
            .with_door_state(StateUpdate::Set(encode(person, now, escort)))),
        }
    }
}

keyway_sdk::export_plugin!(TwoPerson, door_rule, door_config);

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::RuleVerdict;
    use keyway_sdk::testing::{DoorRuleSim, Harness, SimOptions, door_input};

    /// A sequence of badges (door, person, time, expected allow), run on the simulator
    /// as the host runs it (several instances, random discards), with a hot swap midway.
    #[test]
    fn pairs_open_the_door() {
        // (door, person, time, allowed)
        let badges = [
            (1, 1, 100, false), // first of a pair
            (1, 1, 110, false), // the same person again: still waiting (and restarts the wait)
            (1, 2, 120, true),  // a second person within 30 s
            (1, 3, 200, false), // a new pair
            (2, 4, 205, false), // another door has its own state
            (1, 4, 231, false), // 31 s later: too late, starts a new wait
            (1, 5, 261, true),  // 30 s later: just in time
            (2, 6, 210, true),  // door 2's pair
        ];
        for seed in 1..=20 {
            let options = SimOptions {
                seed,
                ..SimOptions::default()
            };
            let mut sim = DoorRuleSim::<TwoPerson>::with_options(Config::new(), options).unwrap();
            for (i, (door, person, at, allowed)) in badges.into_iter().enumerate() {
                if i == 4 {
                    sim.hot_swap().unwrap();
                }
                let mut input = door_input(door, Some(person));
                input.at_unix = at;
                let verdict = sim.decide(input).unwrap();
                assert_eq!(verdict == RuleVerdict::Allow, allowed, "seed {seed}, badge {i}");
            }
        }
    }

    #[test]
    fn only_allowed_badges_count() {
        let mut sim = DoorRuleSim::<TwoPerson>::new(Config::new()).unwrap();
        let mut denied = door_input(1, Some(1));
        denied.verdict.allow = false;
        assert_eq!(sim.decide(denied).unwrap(), RuleVerdict::Abstain);
        assert_eq!(sim.door_state(1), None);
        assert_eq!(sim.decide(door_input(1, None)).unwrap(), RuleVerdict::Abstain);
    }

    /// Door 1 wants an escort (group 9) in every pair, within 10 s; door 2 keeps the
    /// bundle's 30 s and takes any pair.
    #[test]
    fn each_door_has_its_own_settings() {
        // (door, person, groups, time, allowed)
        let badges: [(u32, u32, &[u32], i64, bool); 8] = [
            (1, 1, &[], 100, false),  // a visitor
            (1, 2, &[3], 105, false), // another visitor: no escort in the pair
            (1, 3, &[9], 108, true),  // an escort, 3 s after the last visitor
            (1, 4, &[9], 200, false), // an escort first
            (1, 5, &[], 211, false),  // 11 s later: past door 1's window
            (1, 6, &[], 215, false),  // a visitor after a visitor
            (2, 7, &[], 300, false),  // door 2: any pair
            (2, 8, &[], 325, true),   // within the bundle's 30 s
        ];
        for seed in 1..=10 {
            let options = SimOptions {
                seed,
                ..SimOptions::default()
            };
            let mut sim = DoorRuleSim::<TwoPerson>::with_options(Config::new(), options).unwrap();
            sim.attach(1, Config::new().with("window_s", 10).with("escort_groups", vec![9i64]))
                .unwrap();
            for (i, (door, person, groups, at, allowed)) in badges.into_iter().enumerate() {
                let mut input = door_input(door, Some(person));
                input.at_unix = at;
                input.groups = groups.to_vec().into();
                let verdict = sim.decide(input).unwrap();
                assert_eq!(verdict == RuleVerdict::Allow, allowed, "seed {seed}, badge {i}");
            }
        }
    }

    #[test]
    fn door_config_is_checked() {
        let mut sim = DoorRuleSim::<TwoPerson>::new(Config::new()).unwrap();
        // (door config, expected refusal)
        let cases = [
            (
                Config::new().with("window_s", 0),
                "`window_s` must be 1 to 3600 seconds, found 0",
            ),
            (
                Config::new().with("escort_groups", vec![-1i64]),
                "`escort_groups`: -1 is not a group id",
            ),
            (
                Config::new().with("escort_groups", "guards"),
                "config key `escort_groups` must be an array of integers, found a string",
            ),
            (
                Config::new().with("escort", vec![1i64]),
                "unknown config key `escort` (known: `window_s`, `escort_groups`)",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(sim.attach(1, config).unwrap_err(), expected);
        }
        sim.attach(1, Config::new().with("window_s", 5)).unwrap();
    }

    #[test]
    fn config_is_checked() {
        // (window_s, expected error)
        let cases = [
            (0, "`window_s` must be 1 to 3600 seconds, found 0"),
            (3601, "`window_s` must be 1 to 3600 seconds, found 3601"),
        ];
        for (window, expected) in cases {
            let err = Harness::<TwoPerson>::new(Config::new().with("window_s", window)).unwrap_err();
            assert_eq!(err, expected);
        }
        let err = Harness::<TwoPerson>::new(Config::new().with("window", 10)).unwrap_err();
        assert_eq!(err, "unknown config key `window` (known: `window_s`)");
    }
}
