//! The SDK's own tests: config getters, dispatch, and the encoding contract in ABI.md.

use keyway_sdk::testing::{DoorRuleSim, Harness, SimOptions, door_input};
use keyway_sdk::{
    Config, DoorRuleInput, DoorRuleOutput, EventKind, Hook, HookResult, Plugin, RuleVerdict, StateUpdate, Value,
    dispatch,
};

#[derive(Debug)]
struct Echo {
    deny: bool,
}

impl Plugin for Echo {
    fn configure(config: &Config) -> HookResult<Self> {
        Ok(Echo {
            deny: config.bool("deny")?.unwrap_or(false),
        })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        Ok(if self.deny {
            DoorRuleOutput::deny(format!("door {}", input.door))
        } else {
            DoorRuleOutput::allow().with_state(StateUpdate::Set(vec![7]))
        })
    }
}

#[test]
fn config_getters() {
    let c = Config::new()
        .with("s", "x")
        .with("i", 3)
        .with("b", true)
        .with("l", vec!["a", "b"])
        .with("t", Config::new().with("k", 1));
    assert_eq!(c.str("s").unwrap(), Some("x"));
    assert_eq!(c.int("i").unwrap(), Some(3));
    assert_eq!(c.bool("b").unwrap(), Some(true));
    assert_eq!(c.strings("l").unwrap(), Some(vec!["a", "b"]));
    assert_eq!(c.table("t").unwrap().unwrap().int("k").unwrap(), Some(1));
    assert_eq!(c.str("missing").unwrap(), None);
    // (getter result, expected error)
    let cases = [
        (
            c.str("i").map(|_| ()),
            "config key `i` must be a string, found an integer",
        ),
        (
            c.int("s").map(|_| ()),
            "config key `s` must be an integer, found a string",
        ),
        (
            c.bool("l").map(|_| ()),
            "config key `l` must be a boolean, found an array",
        ),
        (
            c.strings("t").map(|_| ()),
            "config key `t` must be an array of strings, found a table",
        ),
        (
            c.table("b").map(|_| ()),
            "config key `b` must be a table, found a boolean",
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got.unwrap_err(), expected);
    }
    assert_eq!(Value::Float(1.0).type_name(), "a float");
}

#[test]
fn dispatch_and_harness() {
    let allow = Harness::<Echo>::new(Config::new()).unwrap();
    let out = allow.door_rule(&door_input(4, Some(1))).unwrap();
    assert_eq!(out, DoorRuleOutput::allow().with_state(StateUpdate::Set(vec![7])));
    let deny = Harness::<Echo>::new(Config::new().with("deny", true)).unwrap();
    assert_eq!(
        deny.door_rule(&door_input(4, None)).unwrap().verdict,
        RuleVerdict::Deny {
            reason: "door 4".into()
        }
    );
    // A hook the plugin does not implement answers an error, not a panic.
    assert_eq!(
        allow.roles().unwrap_err(),
        "this plugin does not implement the `roles` hook"
    );
    // Garbage input answers an encoded error.
    let out = dispatch(allow.plugin(), Hook::DoorRule, &[0xff, 0xff, 0xff]);
    let decoded: HookResult<DoorRuleOutput> = postcard::from_bytes(&out).unwrap();
    assert!(decoded.unwrap_err().starts_with("cannot decode the input: "));
}

#[test]
fn wire_format_matches_abi_md() {
    // The byte strings ABI.md quotes.
    let ok_unit: HookResult<()> = Ok(());
    assert_eq!(postcard::to_allocvec(&ok_unit).unwrap(), [0]);
    // Version 2: verdict, person, door and site state updates, obligations.
    let abstain: HookResult<DoorRuleOutput> = Ok(DoorRuleOutput::abstain());
    assert_eq!(postcard::to_allocvec(&abstain).unwrap(), [0, 2, 0, 0, 0, 0]);
    let err: HookResult<()> = Err("nope".into());
    assert_eq!(postcard::to_allocvec(&err).unwrap(), [1, 4, b'n', b'o', b'p', b'e']);
    let empty: HookResult<Vec<u8>> = Ok(vec![]);
    assert_eq!(postcard::to_allocvec(&empty).unwrap(), [0, 0]);
}

#[test]
fn names_round_trip() {
    for hook in Hook::ALL {
        assert_eq!(Hook::from_name(hook.name()), Some(hook));
        assert_eq!(hook.export_name(), format!("keyway_{}", hook.name()));
    }
    for kind in EventKind::ALL {
        assert_eq!(EventKind::from_code(kind.code()), Some(kind));
    }
    assert_eq!(Hook::from_name("nope"), None);
}

/// `DoorRuleInput` as it was before `site_open`, with owned fields: the layout ABI.md
/// documents, field for field.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct OwnedInputV0 {
    door: u32,
    person: Option<u32>,
    role: Option<u16>,
    rank: Option<u8>,
    credential: Option<u32>,
    at_unix: i64,
    local: (u8, u16),
    direction: keyway_sdk::Direction,
    verdict: (bool, String),
    state: Vec<u8>,
}

#[test]
fn door_rule_input_wire_layout() {
    let mut input = door_input(7, Some(3));
    input.state = vec![1, 2, 3].into();
    let v0 = OwnedInputV0 {
        door: 7,
        person: Some(3),
        role: Some(3),
        rank: Some(10),
        credential: Some(3),
        at_unix: input.at_unix,
        local: (1, 12 * 60),
        direction: keyway_sdk::Direction::Unknown,
        verdict: (true, "granted".into()),
        state: vec![1, 2, 3],
    };
    let v0_bytes = postcard::to_allocvec(&v0).unwrap();
    // (site_open, the bytes appended to the older layout: site_open, then version 2's
    // site 1, an empty door state and an empty site state, then version 4's kind (a
    // tag), no groups and an empty door configuration)
    let cases = [
        (None, vec![0, 1, 0, 0, 0, 0, 0]),
        (Some(false), vec![1, 0, 1, 0, 0, 0, 0, 0]),
        (Some(true), vec![1, 1, 1, 0, 0, 0, 0, 0]),
    ];
    for (site_open, tail) in cases {
        input.site_open = site_open;
        let bytes = postcard::to_allocvec(&input).unwrap();
        // The borrowed fields encode as a String and a Vec<u8> would, and `site_open`
        // and version 2's fields are appended at the end.
        assert_eq!(bytes, [v0_bytes.as_slice(), tail.as_slice()].concat(), "{site_open:?}");
        // A plugin built before `site_open` still decodes the input (postcard ignores
        // what follows a complete value).
        assert_eq!(
            postcard::from_bytes::<OwnedInputV0>(&bytes).unwrap(),
            v0,
            "{site_open:?}"
        );
        // Decoding borrows the reason and the state from the buffer.
        let decoded: DoorRuleInput<'_> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, input);
        assert!(matches!(decoded.state, std::borrow::Cow::Borrowed(_)));
        assert!(matches!(decoded.verdict.reason, std::borrow::Cow::Borrowed(_)));
    }
}

/// A two-person rule (the door opens for a badge when another person badged within 30
/// seconds), kept in two ways: in the instance's own memory (wrong: the host pools and
/// discards instances), and in the state the host keeps, which spans one person only, so
/// it can only count this person's own badges (here: "badge twice within 30 seconds").
#[derive(Debug)]
struct InMemory {
    last: std::cell::Cell<Option<(u32, i64)>>,
}

impl Plugin for InMemory {
    fn configure(_: &Config) -> HookResult<Self> {
        Ok(InMemory {
            last: std::cell::Cell::new(None),
        })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        let person = input.person.ok_or("no person")?;
        let ok = matches!(self.last.get(), Some((other, at)) if other != person && input.at_unix - at <= 30);
        self.last.set(Some((person, input.at_unix)));
        Ok(if ok {
            DoorRuleOutput::allow()
        } else {
            DoorRuleOutput::deny("waiting for a second person")
        })
    }
}

#[derive(Debug)]
struct InState;

impl Plugin for InState {
    fn configure(_: &Config) -> HookResult<Self> {
        Ok(InState)
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        let last = input
            .state
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes);
        let ok = matches!(last, Some(at) if input.at_unix - at <= 30);
        let out = if ok {
            DoorRuleOutput::allow()
        } else {
            DoorRuleOutput::deny("badge again within 30 s")
        };
        Ok(out.with_state(StateUpdate::Set(input.at_unix.to_le_bytes().to_vec())))
    }
}

/// Runs `badges` (person, time) through a simulator and answers how many the rule
/// allowed.
#[expect(clippy::unwrap_used, reason = "a test helper")]
fn allowed<P: Plugin>(options: SimOptions, badges: &[(u32, i64)], swap_at: Option<usize>) -> usize {
    let mut sim = DoorRuleSim::<P>::with_options(Config::new(), options).unwrap();
    let mut allowed = 0;
    for (i, &(person, at)) in badges.iter().enumerate() {
        if swap_at == Some(i) {
            sim.hot_swap().unwrap();
        }
        let mut input = door_input(1, Some(person));
        input.at_unix = at;
        if sim.decide(input).unwrap() == RuleVerdict::Allow {
            allowed += 1;
        }
    }
    allowed
}

/// The simulator runs a rule as the host does, so a rule that leans on its instance's
/// memory fails its tests, and one that keeps its state through the host passes them.
#[test]
fn the_simulator_catches_rules_that_lean_on_instance_memory() {
    // Pairs of people badging 10 s apart: the second of each pair should pass.
    let pairs: Vec<(u32, i64)> = (0..200)
        .flat_map(|i| [(2 * i + 1, 100 * i64::from(i)), (2 * i + 2, 100 * i64::from(i) + 10)])
        .collect();
    // Each person badging twice, 10 s apart: the second badge should pass.
    let twice: Vec<(u32, i64)> = (0..200)
        .flat_map(|i| [(i + 1, 100 * i64::from(i)), (i + 1, 100 * i64::from(i) + 10)])
        .collect();
    // (case, allowed, expected)
    let cases = [
        (
            "in memory, one instance: looks right",
            allowed::<InMemory>(SimOptions::SINGLE, &pairs, None),
            200,
        ),
        (
            "in memory, like the host",
            allowed::<InMemory>(SimOptions::default(), &pairs, None),
            0,
        ),
        (
            "in state, one instance",
            allowed::<InState>(SimOptions::SINGLE, &twice, None),
            200,
        ),
        (
            "in state, like the host",
            allowed::<InState>(SimOptions::default(), &twice, None),
            200,
        ),
        (
            "in state, with a hot swap",
            allowed::<InState>(SimOptions::default(), &twice, Some(201)),
            200,
        ),
    ];
    for (case, got, expected) in cases {
        if case == "in memory, like the host" {
            assert!(got < 150, "{case}: {got} of 200 passed; the simulator must catch it");
        } else {
            assert_eq!(got, expected, "{case}");
        }
    }
    // A hot swap alone is enough to catch it, even on one instance.
    assert_eq!(allowed::<InMemory>(SimOptions::SINGLE, &[(1, 0), (2, 10)], Some(1)), 0);
    // The same seed replays the same run.
    let run = || {
        allowed::<InMemory>(
            SimOptions {
                seed: 7,
                ..SimOptions::default()
            },
            &pairs,
            None,
        )
    };
    assert_eq!(run(), run());
}

/// Every Rust block of the guide (`sdk/README.md`) is marked as an excerpt of a file of
/// the repository and is a verbatim part of it: the guide shows code that builds and
/// whose tests pass (the doc test of `keyway_sdk::Guide` also compiles each block).
#[test]
fn the_guide_shows_real_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("sdk/README.md")).unwrap();
    let lines: Vec<&str> = guide.lines().collect();
    let mut excerpts = 0;
    for (i, line) in lines.iter().enumerate() {
        if *line != "```rust" {
            continue;
        }
        let marker = i
            .checked_sub(1)
            .and_then(|j| lines.get(j))
            .and_then(|l| l.strip_prefix("<!-- excerpt: "))
            .and_then(|l| l.strip_suffix(" -->"));
        let Some(file) = marker else {
            panic!(
                "the Rust block at line {} of sdk/README.md is not marked as an excerpt",
                i + 1
            );
        };
        let end = lines[i + 1..].iter().position(|l| *l == "```").unwrap() + i + 1;
        let block = lines[i + 1..end].join("\n");
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            source.contains(&block),
            "the Rust block at line {} of sdk/README.md is not a verbatim excerpt of {file}",
            i + 1
        );
        excerpts += 1;
    }
    assert!(excerpts >= 2, "the guide shows the plugin and its tests");
}
