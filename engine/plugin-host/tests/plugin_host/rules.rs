//! Door rules on real core decisions: anti-passback, business hours, fail-secure and
//! fail-safe, rules missing from the bundle, and the role table feeding the core.

use crate::bundle::edited_bundle;
use crate::common::{runtime, wat_plugin};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{
    CredentialId, CredentialKind, CredentialRecord, Decision, DoorId, DoorMode, DoorRecord, Effect, GroupId,
    GroupRecord, PersonId, PersonRecord, Presented, Record, Revision, RoleId, SiteId, SiteRecord, Snapshot, decide,
};
use keyway_plugin_host::{Bundle, DoorContext, FailMode, PolicyHost, RuleOutcome, RuledDecision, Sha256};
use keyway_sdk::Direction;
use std::sync::Arc;

const BASIC: PersonId = PersonId(1);
const ADMIN: PersonId = PersonId(2);

/// The default bundle plus `trap-rule`, a door rule that always traps.
pub fn fixture_bundle() -> tempfile::TempDir {
    let trap = wat_plugin(r#"(func (export "keyway_door_rule") (param i32 i32) (result i64) unreachable)"#);
    let sha = Sha256::of(&trap);
    let dir = edited_bundle(|t| {
        format!("{t}\n[plugins.trap-rule]\nfile = \"trap-rule.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\"]\n")
    });
    std::fs::write(dir.path().join("trap-rule.wasm"), trap).unwrap();
    dir
}

pub fn snapshot(bundle: &Bundle) -> Snapshot {
    let site = SiteId(1);
    let mut records = vec![
        Record::Site(SiteRecord {
            id: site,
            time_zone: TimeZone::get("Europe/Amsterdam").unwrap(),
            holiday_calendar: None,
            lockdown: false,
        }),
        Record::Roles(bundle.roles().role_flags()),
    ];
    for door in 1..=8 {
        records.push(Record::Door(DoorRecord {
            id: DoorId(door),
            site,
            iq: None,
            mode: DoorMode::Normal,
            lockdown: door == 8,
        }));
    }
    for (person, role) in [(BASIC, RoleId(3)), (ADMIN, RoleId(1))] {
        records.push(Record::Person(PersonRecord {
            id: person,
            site,
            role,
            blocked: false,
        }));
        records.push(Record::Credential(CredentialRecord {
            id: CredentialId(person.0),
            site,
            kind: CredentialKind::Tag,
            secret: tag(person).to_vec(),
            owner: Some(person),
            valid_from: None,
            valid_until: None,
            offline_access: false,
            revoked: false,
        }));
    }
    records.push(Record::Group(GroupRecord {
        id: GroupId(1),
        site,
        doors: (1..=8).map(DoorId).collect(),
        schedule: None,
        members: vec![BASIC, ADMIN],
    }));
    Snapshot::build(Revision(1), records).unwrap()
}

fn tag(person: PersonId) -> [u8; 4] {
    [0xa0, 0xb0, 0xc0, u8::try_from(person.0).unwrap()]
}

pub struct World {
    pub host: PolicyHost,
    pub snapshot: Snapshot,
    pub tz: TimeZone,
    _dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let dir = fixture_bundle();
        let host = PolicyHost::load(runtime(), dir.path()).unwrap();
        let snapshot = snapshot(&host.bundle());
        let rules = host.door_rules();
        rules.attach(DoorId(1), "anti-passback", FailMode::Secure);
        rules.attach(DoorId(2), "business-hours", FailMode::Secure);
        rules.attach(DoorId(4), "trap-rule", FailMode::Secure);
        rules.attach(DoorId(5), "trap-rule", FailMode::Safe);
        rules.attach(DoorId(6), "not-in-bundle", FailMode::Secure);
        rules.attach(DoorId(7), "not-in-bundle", FailMode::Safe);
        World {
            host,
            snapshot,
            tz: TimeZone::get("Europe/Amsterdam").unwrap(),
            _dir: dir,
        }
    }

    pub fn core(&self, door: u32, person: PersonId, at: Timestamp) -> Decision {
        decide(&self.snapshot, DoorId(door), Presented::tag(&tag(person)), at)
    }

    pub fn decide(&self, door: u32, person: PersonId, direction: Direction, at: &str) -> RuledDecision {
        let at: Timestamp = at.parse().unwrap();
        let role = if person == ADMIN { RoleId(1) } else { RoleId(3) };
        let ctx = DoorContext {
            door: DoorId(door),
            role: Some(role),
            direction,
            at,
            time_zone: &self.tz,
        };
        self.host.decide(self.core(door, person, at), &ctx)
    }
}

// Wednesday 2026-11-25, 10:00 in Amsterdam (09:00 UTC); and 23:00 the same day.
const DAY: &str = "2026-11-25T09:00:00Z";
const NIGHT: &str = "2026-11-25T22:00:00Z";

#[test]
fn rules_drive_decisions() {
    use Direction::{Entry, Exit, Unknown};
    let w = World::new();
    let apb = w.host.bundle().rule("anti-passback").unwrap().sha256().short();
    let bh = w.host.bundle().rule("business-hours").unwrap().sha256().short();
    let trap = w.host.bundle().rule("trap-rule").unwrap().sha256().short();
    // (door, person, direction, time, effect, reason code, explanation)
    let cases = [
        (3, BASIC, Entry, DAY, Effect::Allow, "granted", "granted by `group:1` at any time".to_owned()),
        (1, BASIC, Entry, DAY, Effect::Allow, "granted", format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})")),
        (
            1, BASIC, Entry, DAY, Effect::Deny, "rule_denied",
            format!("denied by rule `anti-passback` (sha256 {apb}): anti-passback: already inside"),
        ),
        (1, ADMIN, Entry, DAY, Effect::Allow, "granted", format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})")),
        (1, BASIC, Exit, DAY, Effect::Allow, "granted", format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})")),
        (1, BASIC, Entry, DAY, Effect::Allow, "granted", format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})")),
        (2, BASIC, Unknown, DAY, Effect::Allow, "granted", format!("granted by `group:1` at any time; allowed by rule `business-hours` (sha256 {bh})")),
        (
            2, BASIC, Unknown, NIGHT, Effect::Deny, "rule_denied",
            format!("denied by rule `business-hours` (sha256 {bh}): outside business hours"),
        ),
        (2, ADMIN, Unknown, NIGHT, Effect::Allow, "granted", format!("granted by `group:1` at any time; allowed by rule `business-hours` (sha256 {bh})")),
        (
            4, BASIC, Unknown, DAY, Effect::Deny, "rule_failed",
            format!("denied: rule `trap-rule` (sha256 {trap}) failed and the door is fail-secure: trapped: wasm trap: wasm `unreachable` instruction executed"),
        ),
        (
            5, BASIC, Unknown, DAY, Effect::Allow, "granted",
            format!("granted by `group:1` at any time; rule `trap-rule` (sha256 {trap}) failed (fail-safe door): trapped: wasm trap: wasm `unreachable` instruction executed"),
        ),
        (
            6, BASIC, Unknown, DAY, Effect::Deny, "rule_failed",
            "denied: rule `not-in-bundle` (not loaded) failed and the door is fail-secure: rule `not-in-bundle` is not in bundle `default`".to_owned(),
        ),
        (
            7, BASIC, Unknown, DAY, Effect::Allow, "granted",
            "granted by `group:1` at any time; rule `not-in-bundle` (not loaded) failed (fail-safe door): rule `not-in-bundle` is not in bundle `default`".to_owned(),
        ),
        // Lockdown: the role table says admins are exempt, basic users are not.
        (8, BASIC, Unknown, DAY, Effect::Deny, "lockdown", "lockdown".to_owned()),
        (8, ADMIN, Unknown, DAY, Effect::Allow, "granted", "granted by `group:1` at any time".to_owned()),
    ];
    for (i, (door, person, direction, at, effect, code, explanation)) in cases.into_iter().enumerate() {
        let d = w.decide(door, person, direction, at);
        assert_eq!(
            (d.effect, d.reason_code(), d.to_string()),
            (effect, code, explanation),
            "case {i}"
        );
    }
    assert_eq!(w.host.door_rules().state("anti-passback", BASIC), Some(vec![1]));
}

#[test]
fn a_rule_never_widens() {
    let w = World::new();
    // Person 9 is unknown to the core: the rule abstains, the deny stands.
    let at: Timestamp = DAY.parse().unwrap();
    let core = decide(&w.snapshot, DoorId(1), Presented::tag(&[0xff; 4]), at);
    let ctx = DoorContext {
        door: DoorId(1),
        role: None,
        direction: Direction::Entry,
        at,
        time_zone: &w.tz,
    };
    let d = w.host.decide(core, &ctx);
    assert_eq!((d.effect, d.reason_code()), (Effect::Deny, "unknown_credential"));
    assert_eq!(d.rule.unwrap().outcome, RuleOutcome::Abstained);
    // Detached, the door never enters WASM.
    w.host.door_rules().detach(DoorId(1));
    let d = w.decide(1, BASIC, Direction::Entry, DAY);
    assert_eq!((d.effect, d.rule), (Effect::Allow, None));
    assert_eq!(
        w.host.door_rules().attachment(DoorId(2)),
        Some((Arc::from("business-hours"), FailMode::Secure))
    );
}
