//! ABI version 4: a door's own configuration for a rule, checked by the rule's
//! `keyway_door_config` when the door attaches it and when a bundle is swapped in; the
//! credential's kind and the person's groups in the rule's input, where ABI.md puts them.

use crate::common::{default_bundle, default_dir, runtime, wat_plugin};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{CredentialKind, Decision, DoorId, Effect, GroupId, PersonId, Reason, Revision, RoleId, SiteId};
use keyway_plugin_host::abi::Config;
use keyway_plugin_host::{
    AttachError, BundleError, Direction, DoorContext, FailMode, MAX_DOOR_CONFIG, PolicyHost, RuleLink, Sha256,
};

fn granted(person: u32) -> Decision {
    Decision {
        effect: Effect::Allow,
        reason: Reason::Granted {
            group: GroupId(1),
            schedule: None,
        },
        revision: Revision(1),
        credential: None,
        person: Some(PersonId(person)),
    }
}

fn decide(host: &PolicyHost, door: u32, person: u32, kind: CredentialKind, groups: &[GroupId], at: i64) -> Effect {
    let tz = TimeZone::UTC;
    let ctx = DoorContext {
        door: DoorId(door),
        site: SiteId(1),
        role: Some(RoleId(3)),
        kind,
        groups,
        direction: Direction::Unknown,
        at: Timestamp::from_second(1_800_000_000 + at).unwrap(),
        time_zone: &tz,
        holidays: None,
    };
    host.decide(granted(person), &ctx).effect
}

fn host() -> PolicyHost {
    let runtime = runtime();
    let bundle = default_bundle(&runtime);
    PolicyHost::new(runtime, bundle)
}

fn escort(window_s: i64, groups: Vec<i64>) -> Config {
    Config::new().with("window_s", window_s).with("escort_groups", groups)
}

/// Each attachment is checked by its rule; a refused one changes nothing and says why.
#[test]
fn a_door_config_is_checked_by_its_rule() {
    let host = host();
    let door = DoorId(1);
    let kept = vec![RuleLink::new("two-person", FailMode::Secure).with_config(escort(10, vec![9]))];
    host.door_rules().set_links(door, &kept).unwrap();
    let huge = Config::new().with("note", "x".repeat(MAX_DOOR_CONFIG));
    // (chain, expected refusal)
    let cases: Vec<(Vec<RuleLink>, &str)> = vec![
        (
            vec![RuleLink::new("two-person", FailMode::Secure).with_config(Config::new().with("window_s", 0))],
            "the configuration of rule `two-person` for door 1 is refused: plugin error: `window_s` must be 1 to 3600 seconds, found 0",
        ),
        (
            vec![RuleLink::new("two-person", FailMode::Secure).with_config(Config::new().with("escort", 1))],
            "the configuration of rule `two-person` for door 1 is refused: plugin error: unknown config key `escort` (known: `window_s`, `escort_groups`)",
        ),
        (
            vec![
                RuleLink::new("business-hours", FailMode::Secure),
                RuleLink::new("anti-passback", FailMode::Safe).with_config(Config::new().with("x", 1)),
            ],
            "the configuration of rule `anti-passback` for door 1 is refused: it takes no per-door configuration (it exports no `keyway_door_config`)",
        ),
        (
            vec![RuleLink::new("two-person", FailMode::Secure).with_config(huge)],
            "the configuration of rule `two-person` for door 1 is refused: 4105 bytes encoded, over the limit of 4096",
        ),
        (
            vec![RuleLink::new("two-persons", FailMode::Secure)],
            "bundle `default` has no door rule `two-persons`",
        ),
    ];
    for (chain, expected) in cases {
        let err = host.door_rules().set_links(door, &chain).unwrap_err();
        assert!(err.to_string().starts_with(expected), "{err}");
        assert_eq!(host.door_rules().links(door), kept, "{expected}");
    }
    // A rule without the hook takes an empty configuration; the chain replaces the old.
    let chain = vec![
        RuleLink::new("business-hours", FailMode::Secure),
        RuleLink::new("two-person", FailMode::Safe).with_config(escort(5, vec![])),
    ];
    host.door_rules().set_links(door, &chain).unwrap();
    assert_eq!(host.door_rules().links(door), chain);
}

/// One rule, two doors, two settings: door 1 wants an escort (group 9) in every pair
/// within 10 s, door 2 any pair within the bundle's 30 s. The groups come from the
/// decision's context.
#[test]
fn each_door_runs_the_rule_with_its_own_settings() {
    let host = host();
    host.door_rules()
        .set_links(
            DoorId(1),
            &[RuleLink::new("two-person", FailMode::Secure).with_config(escort(10, vec![9]))],
        )
        .unwrap();
    host.door_rules()
        .attach(DoorId(2), "two-person", FailMode::Secure)
        .unwrap();
    let (visitor, guard): (&[GroupId], &[GroupId]) = (&[GroupId(3)], &[GroupId(3), GroupId(9)]);
    // (door, person, groups, time, expected)
    let badges = [
        (1, 1, visitor, 0, Effect::Deny),
        (1, 2, visitor, 2, Effect::Deny), // two visitors: no escort in the pair
        (1, 3, guard, 4, Effect::Allow),
        (1, 4, guard, 100, Effect::Deny),
        (1, 5, visitor, 111, Effect::Deny), // past door 1's 10 s
        (2, 6, visitor, 200, Effect::Deny),
        (2, 7, visitor, 225, Effect::Allow), // door 2: any pair, within 30 s
    ];
    for (i, (door, person, groups, at, expected)) in badges.into_iter().enumerate() {
        let effect = decide(&host, door, person, CredentialKind::Tag, groups, at);
        assert_eq!(effect, expected, "badge {i}");
    }
}

/// A rule of ABI version 4 that reads the end of its input, as ABI.md lays it out:
/// the kind (`2` is a PIN), the groups (`[7]`: length 1, then 7), the door's
/// configuration (empty: length 0). It denies "pin+7" when it finds exactly that, and
/// allows otherwise.
fn tail_reader() -> Vec<u8> {
    wat_plugin(
        r#"(func (export "keyway_abi_version") (result i32) (i32.const 4))
        (data (i32.const 32) "\00\00\00\00\00\00")
        (data (i32.const 64) "\00\01\05pin+7\00\00\00\00")
        (func (export "keyway_door_rule") (param $ptr i32) (param $len i32) (result i64)
          (local $end i32)
          (local.set $end (i32.add (local.get $ptr) (local.get $len)))
          (if (result i64)
            (i32.and
              (i32.and
                (i32.eq (i32.load8_u (i32.sub (local.get $end) (i32.const 4))) (i32.const 2))
                (i32.eq (i32.load8_u (i32.sub (local.get $end) (i32.const 3))) (i32.const 1)))
              (i32.and
                (i32.eq (i32.load8_u (i32.sub (local.get $end) (i32.const 2))) (i32.const 7))
                (i32.eq (i32.load8_u (i32.sub (local.get $end) (i32.const 1))) (i32.const 0))))
            (then (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 12)))
            (else (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 6)))))"#,
    )
}

#[test]
fn kind_groups_and_config_end_the_input() {
    let wasm = tail_reader();
    let sha = Sha256::of(&wasm);
    let dir = crate::bundle::edited_bundle(|t| {
        format!("{t}\n[plugins.tail]\nfile = \"tail.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\"]\n")
    });
    std::fs::write(dir.path().join("tail.wasm"), &wasm).unwrap();
    let runtime = runtime();
    let host = PolicyHost::load(runtime, dir.path()).unwrap();
    host.door_rules().attach(DoorId(1), "tail", FailMode::Secure).unwrap();
    let seven: &[GroupId] = &[GroupId(7)];
    // (kind, groups, expected)
    let cases = [
        (CredentialKind::Pin, seven, Effect::Deny),
        (CredentialKind::Tag, seven, Effect::Allow),
        (CredentialKind::DigitalKey, seven, Effect::Allow),
        (CredentialKind::Pin, &[][..], Effect::Allow),
        (CredentialKind::Pin, &[GroupId(8)][..], Effect::Allow),
    ];
    for (kind, groups, expected) in cases {
        assert_eq!(decide(&host, 1, 1, kind, groups, 0), expected, "{kind:?} {groups:?}");
    }
}

/// A bundle whose version of an attached rule refuses a door's settings is not swapped
/// in; the running bundle and the door's chain stay.
#[test]
fn a_swap_keeps_every_doors_settings_taken() {
    let host = host();
    let chain = vec![RuleLink::new("two-person", FailMode::Secure).with_config(escort(10, vec![9]))];
    host.door_rules().set_links(DoorId(4), &chain).unwrap();
    // The same bundle, where `two-person` is a version 1 rule: it takes no settings.
    let old_rule = wat_plugin(
        r#"(data (i32.const 32) "\00\00\00")
        (func (export "keyway_door_rule") (param i32 i32) (result i64)
          (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 3)))"#,
    );
    let manifest = std::fs::read_to_string(default_dir().join("bundle.toml")).unwrap();
    let pinned = Sha256::of(&std::fs::read(default_dir().join("two-person.wasm")).unwrap()).to_string();
    assert!(manifest.contains(&pinned));
    let dir = crate::bundle::edited_bundle(|t| {
        t.replace(&pinned, &Sha256::of(&old_rule).to_string())
            .replace(r#"hooks = ["door_rule", "door_config"]"#, r#"hooks = ["door_rule"]"#)
    });
    std::fs::write(dir.path().join("two-person.wasm"), &old_rule).unwrap();
    let running = host.bundle();
    let err = host.swap_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::DoorConfigRefused { .. })
            && err.to_string().contains(
                "the configuration of rule `two-person` for door 4 is refused: it speaks ABI version 1, which has no per-door configuration"
            ),
        "{err}"
    );
    assert!(std::sync::Arc::ptr_eq(&running, &host.bundle()));
    assert_eq!(host.door_rules().links(DoorId(4)), chain);
    // Without settings at the door, the same swap goes through.
    host.door_rules()
        .attach(DoorId(4), "two-person", FailMode::Secure)
        .unwrap();
    host.swap_dir(dir.path()).unwrap();
}

/// What a node restores from the store is not asked again: a rule the bundle lacks,
/// settings for a rule that takes none, or settings its rule refuses stay attached and
/// fail at each decision, so the door's fail mode decides.
#[test]
fn a_restored_chain_fails_where_the_bundle_disagrees() {
    let host = host();
    let restore = |door: u32, link: RuleLink| host.door_rules().restore_links(DoorId(door), &[link]).unwrap();
    restore(
        1,
        RuleLink::new("two-person", FailMode::Secure).with_config(Config::new().with("window_s", 0)),
    );
    restore(2, RuleLink::new("gone", FailMode::Secure));
    restore(3, RuleLink::new("gone", FailMode::Safe));
    restore(
        4,
        RuleLink::new("anti-passback", FailMode::Safe).with_config(Config::new().with("x", 1)),
    );
    let tz = TimeZone::UTC;
    // (door, effect, reason code, words of the rule's failure)
    let cases = [
        (
            1,
            Effect::Deny,
            "rule_failed",
            "`window_s` must be 1 to 3600 seconds, found 0",
        ),
        (2, Effect::Deny, "rule_failed", "rule `gone` is not in bundle `default`"),
        (
            3,
            Effect::Allow,
            "rule_failed_open",
            "rule `gone` is not in bundle `default`",
        ),
        (
            4,
            Effect::Allow,
            "rule_failed_open",
            "rule `anti-passback` takes no per-door configuration, but door 4 gives it one",
        ),
    ];
    for (door, effect, code, words) in cases {
        let ctx = DoorContext {
            door: DoorId(door),
            site: SiteId(1),
            role: Some(RoleId(3)),
            kind: CredentialKind::Tag,
            groups: &[],
            direction: Direction::Entry,
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            time_zone: &tz,
            holidays: None,
        };
        let ruled = host.decide(granted(1), &ctx);
        assert_eq!(
            (ruled.effect, ruled.reason_code()),
            (effect, code),
            "door {door}: {ruled}"
        );
        let failure = ruled.rules().find_map(|t| match &t.outcome {
            keyway_plugin_host::RuleOutcome::Failed { error, .. } => Some(error.clone()),
            _ => None,
        });
        assert!(failure.is_some_and(|e| e.contains(words)), "door {door}: {ruled}");
    }
    // The limits still hold.
    let twice = vec![
        RuleLink::new("gone", FailMode::Safe),
        RuleLink::new("gone", FailMode::Secure),
    ];
    assert!(matches!(
        host.door_rules().restore_links(DoorId(1), &twice),
        Err(AttachError::Duplicate { .. })
    ));
}

/// Passages carry the door's settings too: the occupancy limit counts a zone per door's
/// settings, through the committed plugin.
#[test]
fn passages_count_each_doors_zone() {
    let host = host();
    let lab = Config::new().with("zone", "lab").with("max", 1);
    for door in [1, 2] {
        host.door_rules()
            .set_links(
                DoorId(door),
                &[RuleLink::new("occupancy", FailMode::Secure).with_config(lab.clone())],
            )
            .unwrap();
    }
    host.door_rules()
        .attach(DoorId(3), "occupancy", FailMode::Secure)
        .unwrap();
    let entry = |door: u32| {
        let tz = TimeZone::UTC;
        let ctx = DoorContext {
            door: DoorId(door),
            site: SiteId(1),
            role: Some(RoleId(3)),
            kind: CredentialKind::Tag,
            groups: &[],
            direction: Direction::Entry,
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            time_zone: &tz,
            holidays: None,
        };
        host.decide(granted(1), &ctx).effect
    };
    let passage = |door: u32, direction: Direction| {
        let failed = host.passage(&keyway_plugin_host::Passage {
            door: DoorId(door),
            site: SiteId(1),
            person: Some(PersonId(1)),
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            direction,
            opened: true,
        });
        assert!(failed.is_empty(), "{failed:?}");
    };
    assert_eq!(entry(1), Effect::Allow);
    passage(1, Direction::Entry);
    // The lab is full through either of its doors; door 3 is not in it.
    assert_eq!(
        (entry(1), entry(2), entry(3)),
        (Effect::Deny, Effect::Deny, Effect::Allow)
    );
    passage(2, Direction::Exit);
    assert_eq!(entry(1), Effect::Allow);
    // The site's state: 0 inside the site, and no zone that holds anyone.
    let state = host
        .door_rules()
        .scoped_state("occupancy", keyway_plugin_host::StateScope::Site(SiteId(1)));
    assert_eq!(state, Some(0u32.to_le_bytes().to_vec()));
}

/// A hostile `keyway_door_config`: it traps, loops, answers garbage or an error flood.
/// Each attachment is refused with what went wrong, nothing is attached, and the host
/// goes on attaching and deciding.
#[test]
fn a_hostile_door_config_hook_refuses_only_its_attachment() {
    let version_4 = r#"(func (export "keyway_abi_version") (result i32) (i32.const 4))
        (data (i32.const 32) "\00\00\00\00\00\00")
        (func (export "keyway_door_rule") (param i32 i32) (result i64)
          (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 6)))"#;
    // (case, door_config export, words the refusal holds)
    let cases = [
        (
            "trap",
            r#"(func (export "keyway_door_config") (param i32 i32) (result i64) unreachable)"#,
            "wasm `unreachable` instruction executed",
        ),
        (
            "endless loop",
            r#"(func (export "keyway_door_config") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
            "ran out of fuel in `keyway_door_config`",
        ),
        (
            "trailing bytes",
            r#"(data (i32.const 96) "\00\00\07")
            (func (export "keyway_door_config") (param i32 i32) (result i64)
              (i64.or (i64.shl (i64.const 96) (i64.const 32)) (i64.const 3)))"#,
            "trailing bytes",
        ),
        (
            "out of bounds",
            r#"(func (export "keyway_door_config") (param i32 i32) (result i64)
              (i64.or (i64.shl (i64.const 0x7ffff000) (i64.const 32)) (i64.const 4096)))"#,
            "out of",
        ),
    ];
    for (case, hook, words) in cases {
        let wasm = wat_plugin(&format!("{version_4}\n{hook}"));
        let sha = Sha256::of(&wasm);
        let dir = crate::bundle::edited_bundle(|t| {
            format!(
                "{t}\n[plugins.hostile]\nfile = \"hostile.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\", \"door_config\"]\n"
            )
        });
        std::fs::write(dir.path().join("hostile.wasm"), &wasm).unwrap();
        let host = PolicyHost::load(runtime(), dir.path()).unwrap();
        let started = std::time::Instant::now();
        let err = host
            .door_rules()
            .set_links(
                DoorId(1),
                &[RuleLink::new("hostile", FailMode::Safe).with_config(Config::new().with("x", 1))],
            )
            .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{case}");
        assert!(
            matches!(&err, AttachError::Config { rule, door: 1, .. } if rule == "hostile")
                && err.to_string().contains(words),
            "{case}: {err}"
        );
        assert!(host.door_rules().links(DoorId(1)).is_empty(), "{case}");
        // The host goes on: another rule attaches with its settings and decides.
        host.door_rules()
            .set_links(
                DoorId(2),
                &[RuleLink::new("two-person", FailMode::Secure).with_config(escort(5, vec![]))],
            )
            .unwrap();
        assert_eq!(decide(&host, 2, 1, CredentialKind::Tag, &[], 0), Effect::Deny, "{case}");
    }
}
