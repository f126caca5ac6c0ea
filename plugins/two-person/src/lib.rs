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

use keyway_sdk::{Config, DoorRuleInput, DoorRuleOutput, HookResult, Plugin, StateUpdate};

/// The plugin.
#[derive(Debug)]
pub struct TwoPerson {
    window_s: i64,
}

/// The door's state: the person who badged first and when, 12 bytes little-endian.
fn encode(person: u32, at: i64) -> Vec<u8> {
    let mut out = person.to_le_bytes().to_vec();
    out.extend_from_slice(&at.to_le_bytes());
    out
}

fn decode(state: &[u8]) -> Option<(u32, i64)> {
    let person = u32::from_le_bytes(state.get(..4)?.try_into().ok()?);
    let at = i64::from_le_bytes(state.get(4..12)?.try_into().ok()?);
    Some((person, at))
}

impl Plugin for TwoPerson {
    fn configure(config: &Config) -> HookResult<Self> {
        config.only(&["window_s"])?;
        let window_s = config.int("window_s")?.unwrap_or(30);
        if !(1..=3600).contains(&window_s) {
            return Err(format!("`window_s` must be 1 to 3600 seconds, found {window_s}"));
        }
        Ok(TwoPerson { window_s })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        let Some(person) = input.person.filter(|_| input.verdict.allow) else {
            return Ok(DoorRuleOutput::abstain());
        };
        let now = input.at_unix;
        match decode(&input.door_state) {
            Some((first, at)) if first != person && (0..=self.window_s).contains(&(now - at)) => {
                Ok(DoorRuleOutput::allow().with_door_state(StateUpdate::Clear))
            }
            _ => Ok(DoorRuleOutput::deny("two-person rule: waiting for a second person")
                .with_door_state(StateUpdate::Set(encode(person, now)))),
        }
    }
}

keyway_sdk::export_plugin!(TwoPerson, door_rule);

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
