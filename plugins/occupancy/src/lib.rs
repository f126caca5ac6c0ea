//! An occupancy limit: an entry is denied once the site holds `max` people, or once a
//! door's zone holds its own limit.
//!
//! It needs ABI version 2, and version 4 for zones. The counts are per-site state the
//! host keeps, and they move on passage events (what the IQ reports actually happened: a
//! door that opened for an entry or an exit), not on decisions, so a badge that was
//! allowed but not followed by a passage counts nothing. The host applies each passage
//! atomically, so concurrent passages through different doors and instances never lose a
//! count. Between a decision and its passage another entry can be allowed: the limit is
//! exact on passages, and may be passed by the entries in flight.
//!
//! Config: `max`, 1 to 100000 people in the site (required).
//!
//! Per-door config (optional, checked when a door attaches the rule): `zone`, a name of
//! 1 to 32 lowercase letters, digits, `-` or `_`, and `max`, that zone's limit (1 to
//! 100000, required with `zone`). Entries through the door count toward the site and the
//! zone; give every door of a zone, exits included, the same settings (a zone of one door
//! is a limit per door). At most 16 zones per site.

use keyway_sdk::{
    Config, Direction, DoorRuleInput, DoorRuleOutput, HookResult, PassageInput, PassageOutput, Plugin, StateUpdate,
};

/// The plugin.
#[derive(Debug)]
pub struct Occupancy {
    max: u32,
}

/// Most zones one site's state holds: each takes at most 37 bytes, within the host's
/// 1 KiB per state.
const MAX_ZONES: usize = 16;

/// A door's zone and that zone's limit.
#[derive(Debug, PartialEq, Eq)]
struct Zone<'a> {
    name: &'a str,
    max: u32,
}

/// The site's state: how many people are inside the site, 4 bytes little-endian, then
/// per zone its name's length (1 byte), the name, and its count (4 bytes).
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    site: u32,
    zones: Vec<(String, u32)>,
}

impl Counts {
    fn decode(state: &[u8]) -> Counts {
        let site = state
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes);
        let mut zones = Vec::new();
        let mut rest = state.get(4..).unwrap_or_default();
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            let (Some(name), Some(count)) = (tail.get(..len), tail.get(len..len + 4)) else {
                break;
            };
            let (Ok(name), Ok(count)) = (std::str::from_utf8(name), <[u8; 4]>::try_from(count)) else {
                break;
            };
            zones.push((name.to_owned(), u32::from_le_bytes(count)));
            rest = tail.get(len + 4..).unwrap_or_default();
        }
        Counts { site, zones }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.site.to_le_bytes().to_vec();
        for (name, count) in self.zones.iter().filter(|(_, count)| *count > 0) {
            out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    fn zone(&self, name: &str) -> u32 {
        self.zones.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    }

    /// Whether a new zone can be counted: fewer than [`MAX_ZONES`] hold anyone.
    fn room_for_a_zone(&self) -> bool {
        self.zones.iter().filter(|(_, c)| *c > 0).count() < MAX_ZONES
    }

    /// Moves a zone's count. A passage into a zone that cannot be counted (the entry
    /// was allowed before [`MAX_ZONES`] other zones filled) still counts for the site.
    fn move_zone(&mut self, name: &str, entered: bool) {
        let room = self.room_for_a_zone();
        match self.zones.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) if entered => *count = count.saturating_add(1),
            Some((_, count)) => *count = count.saturating_sub(1),
            None if entered && room => self.zones.push((name.to_owned(), 1)),
            None => {}
        }
    }
}

fn limit(value: i64, what: &str) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|m| (1..=100_000).contains(m))
        .ok_or_else(|| format!("`{what}` must be 1 to 100000 people, found {value}"))
}

/// The door's zone, from its attachment's own settings.
fn zone_of(door_config: &Config) -> Result<Option<Zone<'_>>, String> {
    door_config.only(&["zone", "max"])?;
    let Some(name) = door_config.str("zone")? else {
        return match door_config.int("max")? {
            Some(_) => Err("`max` at a door needs a `zone`".to_owned()),
            None => Ok(None),
        };
    };
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "`zone` must be 1 to 32 lowercase letters, digits, `-` or `_`, found `{name}`"
        ));
    }
    let max = door_config.int("max")?.ok_or("a `zone` needs its `max`")?;
    Ok(Some(Zone {
        name,
        max: limit(max, "max")?,
    }))
}

impl Plugin for Occupancy {
    fn configure(config: &Config) -> HookResult<Self> {
        config.only(&["max"])?;
        let max = config.int("max")?.ok_or("`max` is required")?;
        Ok(Occupancy {
            max: limit(max, "max")?,
        })
    }

    fn door_config(&self, config: &Config) -> HookResult<()> {
        zone_of(config).map(drop)
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        if !input.verdict.allow || input.direction != Direction::Entry {
            return Ok(DoorRuleOutput::abstain());
        }
        let counts = Counts::decode(&input.site_state);
        if counts.site >= self.max {
            return Ok(DoorRuleOutput::deny(format!("occupancy limit of {} reached", self.max)));
        }
        if let Some(zone) = zone_of(&input.door_config)? {
            let inside = counts.zone(zone.name);
            if inside >= zone.max {
                return Ok(DoorRuleOutput::deny(format!(
                    "occupancy limit of {} reached in zone `{}`",
                    zone.max, zone.name
                )));
            }
            if inside == 0 && !counts.room_for_a_zone() {
                return Ok(DoorRuleOutput::deny(format!(
                    "{MAX_ZONES} other zones hold people: zone `{}` cannot be counted",
                    zone.name
                )));
            }
        }
        Ok(DoorRuleOutput::allow())
    }

    fn passage(&self, input: &PassageInput<'_>) -> HookResult<PassageOutput> {
        let entered = match (input.opened, input.direction) {
            (true, Direction::Entry) => true,
            (true, Direction::Exit) => false,
            _ => return Ok(PassageOutput::default()),
        };
        let mut counts = Counts::decode(&input.site_state);
        counts.site = if entered {
            counts.site.saturating_add(1)
        } else {
            counts.site.saturating_sub(1)
        };
        if let Some(zone) = zone_of(&input.door_config)? {
            counts.move_zone(zone.name, entered);
        }
        Ok(PassageOutput {
            site_state: StateUpdate::Set(counts.encode()),
            ..PassageOutput::default()
        })
    }
}

keyway_sdk::export_plugin!(Occupancy, door_rule, passage, door_config);

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

    /// Doors 1 and 2 are the lab (2 people at most), door 3 a zone of its own (1 person),
    /// door 4 only counts toward the site (5 people).
    #[test]
    fn zones_have_their_own_limits() {
        use Direction::{Entry, Exit};
        let lab = || Config::new().with("zone", "lab").with("max", 2);
        // (door, direction, a decision (true) or a passage (false), expected verdict)
        let steps: [(u32, Direction, bool, Option<RuleVerdict>); 13] = [
            (1, Entry, false, None),
            (2, Entry, false, None), // the lab holds 2
            (1, Entry, true, Some(deny("occupancy limit of 2 reached in zone `lab`"))),
            (2, Entry, true, Some(deny("occupancy limit of 2 reached in zone `lab`"))),
            (3, Entry, true, Some(RuleVerdict::Allow)),
            (3, Entry, false, None),
            (
                3,
                Entry,
                true,
                Some(deny("occupancy limit of 1 reached in zone `vault`")),
            ),
            (4, Entry, true, Some(RuleVerdict::Allow)), // the site holds 3 of 5
            (2, Exit, false, None),                     // one leaves the lab
            (1, Entry, true, Some(RuleVerdict::Allow)),
            (1, Entry, false, None), // the lab holds 2 again
            (4, Entry, false, None),
            (4, Entry, false, None), // the site holds 5
        ];
        for seed in 1..=10 {
            let options = SimOptions {
                seed,
                ..SimOptions::default()
            };
            let mut sim = DoorRuleSim::<Occupancy>::with_options(Config::new().with("max", 5), options).unwrap();
            sim.attach(1, lab()).unwrap();
            sim.attach(2, lab()).unwrap();
            sim.attach(3, Config::new().with("zone", "vault").with("max", 1))
                .unwrap();
            for (i, (door, direction, decision, expected)) in steps.iter().cloned().enumerate() {
                if i == 6 {
                    sim.hot_swap().unwrap();
                }
                if decision {
                    let mut input = door_input(door, Some(7));
                    input.direction = direction;
                    assert_eq!(Some(sim.decide(input).unwrap()), expected, "seed {seed}, step {i}");
                } else {
                    sim.passage(passage_input(door, Some(7), direction)).unwrap();
                }
            }
            let mut input = door_input(4, Some(8));
            input.direction = Entry;
            assert_eq!(
                sim.decide(input).unwrap(),
                deny("occupancy limit of 5 reached"),
                "seed {seed}"
            );
            let counts = Counts::decode(sim.site_state(1).unwrap());
            assert_eq!(
                counts,
                Counts {
                    site: 5,
                    zones: vec![("lab".into(), 2), ("vault".into(), 1)]
                },
                "seed {seed}"
            );
        }
    }

    fn deny(reason: &str) -> RuleVerdict {
        RuleVerdict::Deny { reason: reason.into() }
    }

    #[test]
    fn door_config_is_checked() {
        let mut sim = DoorRuleSim::<Occupancy>::new(Config::new().with("max", 5)).unwrap();
        // (door config, expected refusal)
        let cases = [
            (Config::new().with("max", 3), "`max` at a door needs a `zone`"),
            (Config::new().with("zone", "lab"), "a `zone` needs its `max`"),
            (
                Config::new().with("zone", "Lab 1").with("max", 3),
                "`zone` must be 1 to 32 lowercase letters, digits, `-` or `_`, found `Lab 1`",
            ),
            (
                Config::new().with("zone", "lab").with("max", 0),
                "`max` must be 1 to 100000 people, found 0",
            ),
            (
                Config::new().with("zone", "lab").with("max", 3).with("floor", 2),
                "unknown config key `floor` (known: `zone`, `max`)",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(sim.attach(1, config).unwrap_err(), expected);
        }
        sim.attach(1, Config::new()).unwrap();
    }

    /// With 16 zones holding people, an entry into a 17th is denied (it could not be
    /// counted); a passage into it anyway (allowed earlier) still counts for the site.
    #[test]
    fn zones_beyond_the_sixteenth_are_refused_not_lost() {
        let mut sim = DoorRuleSim::<Occupancy>::new(Config::new().with("max", 1000)).unwrap();
        for door in 1..=17 {
            sim.attach(door, Config::new().with("zone", format!("z{door}")).with("max", 10))
                .unwrap();
        }
        for door in 1..=16 {
            sim.passage(passage_input(door, Some(door), Direction::Entry)).unwrap();
        }
        let mut input = door_input(17, Some(40));
        input.direction = Direction::Entry;
        assert_eq!(
            sim.decide(input).unwrap(),
            deny("16 other zones hold people: zone `z17` cannot be counted")
        );
        sim.passage(passage_input(17, Some(40), Direction::Entry)).unwrap();
        let counts = Counts::decode(sim.site_state(1).unwrap());
        assert_eq!((counts.site, counts.zones.len()), (17, 16));
        assert!(sim.site_state(1).unwrap().len() <= 1024);
        // One leaves zone 1: zone 17 can be counted again.
        sim.passage(passage_input(1, Some(1), Direction::Exit)).unwrap();
        let mut input = door_input(17, Some(41));
        input.direction = Direction::Entry;
        assert_eq!(sim.decide(input).unwrap(), RuleVerdict::Allow);
    }

    #[test]
    fn a_state_that_does_not_parse_counts_what_it_can() {
        // (state, counts): truncated zones are dropped, never a panic.
        let cases: [(&[u8], Counts); 3] = [
            (&[], Counts::default()),
            (&[3, 0, 0, 0, 3, b'l', b'a'], Counts { site: 3, zones: vec![] }),
            (
                &[1, 0, 0, 0, 1, b'a', 2, 0, 0, 0, 9],
                Counts {
                    site: 1,
                    zones: vec![("a".into(), 2)],
                },
            ),
        ];
        for (state, counts) in cases {
            assert_eq!(Counts::decode(state), counts);
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
