//! Door rules on real core decisions: anti-passback, business hours (the configured
//! default hours and each site's opening hours), fail-secure and fail-safe, rules missing
//! from the bundle, and the role table feeding the core.

use crate::bundle::edited_bundle;
use crate::common::{default_dir, runtime, wat_plugin};
use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use keyway_core::{
    CredentialId, CredentialKind, CredentialRecord, DaySet, Decision, DoorId, DoorMode, DoorRecord, Effect, GroupId,
    GroupRecord, HolidayCalendar, Period, PersonId, PersonRecord, Presented, Record, Revision, RoleId, Schedule,
    SiteId, SiteRecord, Snapshot, decide,
};
use keyway_plugin_host::{Bundle, DoorContext, FailMode, PolicyHost, RuleOutcome, RuledDecision, Sha256};
use keyway_sdk::Direction;
use std::sync::Arc;

const BASIC: PersonId = PersonId(1);
const ADMIN: PersonId = PersonId(2);
/// A basic user of site 2, whose doors are 9 and 10.
const GUARD: PersonId = PersonId(3);

/// The default bundle plus `trap-rule`, a door rule that always traps, with
/// anti-passback armed by decisions (`arm_on_decision`): these tests run decisions
/// without passages (scoped.rs tests anti-passback on passages).
pub fn fixture_bundle() -> tempfile::TempDir {
    let trap = wat_plugin(r#"(func (export "keyway_door_rule") (param i32 i32) (result i64) unreachable)"#);
    let sha = Sha256::of(&trap);
    let dir = edited_bundle(|t| {
        format!(
            "{t}\n[plugins.anti-passback.config]\narm_on_decision = true\n\n\
             [plugins.trap-rule]\nfile = \"trap-rule.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\"]\n"
        )
    });
    std::fs::write(dir.path().join("trap-rule.wasm"), trap).unwrap();
    dir
}

/// Site 1 (doors 1-8, people BASIC and ADMIN) and site 2 (doors 9-10, GUARD), both in
/// Amsterdam, each with one group opening all its doors at any time.
pub fn snapshot(bundle: &Bundle) -> Snapshot {
    let mut records = vec![Record::Roles(bundle.roles().role_flags())];
    for site in [SiteId(1), SiteId(2)] {
        records.push(Record::Site(SiteRecord {
            id: site,
            time_zone: TimeZone::get("Europe/Amsterdam").unwrap(),
            holiday_calendar: None,
            lockdown: false,
        }));
    }
    for door in 1..=10 {
        records.push(Record::Door(DoorRecord {
            id: DoorId(door),
            site: if door <= 8 { SiteId(1) } else { SiteId(2) },
            iq: None,
            mode: DoorMode::Normal,
            lockdown: door == 8,
        }));
    }
    for (person, role, site) in [
        (BASIC, RoleId(3), SiteId(1)),
        (ADMIN, RoleId(1), SiteId(1)),
        (GUARD, RoleId(3), SiteId(2)),
    ] {
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
        site: SiteId(1),
        doors: (1..=8).map(DoorId).collect(),
        schedule: None,
        members: vec![BASIC, ADMIN],
    }));
    records.push(Record::Group(GroupRecord {
        id: GroupId(2),
        site: SiteId(2),
        doors: vec![DoorId(9), DoorId(10)],
        schedule: None,
        members: vec![GUARD],
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
        for (door, rule, fail) in [
            (1, "anti-passback", FailMode::Secure),
            (2, "business-hours", FailMode::Secure),
            (4, "trap-rule", FailMode::Secure),
            (5, "trap-rule", FailMode::Safe),
            (9, "business-hours", FailMode::Secure),
        ] {
            assert_eq!(rules.attach(DoorId(door), rule, fail), Ok(vec![]), "door {door}");
        }
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
        self.decide_with(door, person, direction, at, None)
    }

    /// As a server would: the door's site and its time zone from the snapshot, the site's
    /// holiday calendar from the caller.
    pub fn decide_with(
        &self,
        door: u32,
        person: PersonId,
        direction: Direction,
        at: &str,
        holidays: Option<&HolidayCalendar>,
    ) -> RuledDecision {
        let at: Timestamp = at.parse().unwrap();
        let role = if person == ADMIN { RoleId(1) } else { RoleId(3) };
        let site = self.snapshot.door_site(DoorId(door)).unwrap();
        let ctx = DoorContext {
            door: DoorId(door),
            site,
            role: Some(role),
            kind: CredentialKind::Tag,
            groups: &[],
            direction,
            at,
            time_zone: self.snapshot.site_time_zone(site).unwrap(),
            holidays,
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
        (
            3,
            BASIC,
            Entry,
            DAY,
            Effect::Allow,
            "granted",
            "granted by `group:1` at any time".to_owned(),
        ),
        (
            1,
            BASIC,
            Entry,
            DAY,
            Effect::Allow,
            "granted",
            format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})"),
        ),
        (
            1,
            BASIC,
            Entry,
            DAY,
            Effect::Deny,
            "rule_denied",
            format!("denied by rule `anti-passback` (sha256 {apb}): anti-passback: already inside"),
        ),
        (
            1,
            ADMIN,
            Entry,
            DAY,
            Effect::Allow,
            "granted",
            format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})"),
        ),
        (
            1,
            BASIC,
            Exit,
            DAY,
            Effect::Allow,
            "granted",
            format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})"),
        ),
        (
            1,
            BASIC,
            Entry,
            DAY,
            Effect::Allow,
            "granted",
            format!("granted by `group:1` at any time; allowed by rule `anti-passback` (sha256 {apb})"),
        ),
        (
            2,
            BASIC,
            Unknown,
            DAY,
            Effect::Allow,
            "granted",
            format!("granted by `group:1` at any time; allowed by rule `business-hours` (sha256 {bh})"),
        ),
        (
            2,
            BASIC,
            Unknown,
            NIGHT,
            Effect::Deny,
            "rule_denied",
            format!("denied by rule `business-hours` (sha256 {bh}): outside business hours"),
        ),
        (
            2,
            ADMIN,
            Unknown,
            NIGHT,
            Effect::Allow,
            "granted",
            format!("granted by `group:1` at any time; allowed by rule `business-hours` (sha256 {bh})"),
        ),
        (
            4,
            BASIC,
            Unknown,
            DAY,
            Effect::Deny,
            "rule_failed",
            format!(
                "denied: rule `trap-rule` (sha256 {trap}) failed and the door is fail-secure: trapped: wasm trap: wasm `unreachable` instruction executed"
            ),
        ),
        (
            5,
            BASIC,
            Unknown,
            DAY,
            Effect::Allow,
            "rule_failed_open",
            format!(
                "granted by `group:1` at any time, but rule `trap-rule` (sha256 {trap}) failed and was skipped (fail-safe door): trapped: wasm trap: wasm `unreachable` instruction executed"
            ),
        ),
        // Lockdown: the role table says admins are exempt, basic users are not.
        (8, BASIC, Unknown, DAY, Effect::Deny, "lockdown", "lockdown".to_owned()),
        (
            8,
            ADMIN,
            Unknown,
            DAY,
            Effect::Allow,
            "granted",
            "granted by `group:1` at any time".to_owned(),
        ),
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
        site: SiteId(1),
        role: None,
        kind: CredentialKind::Tag,
        groups: &[],
        direction: Direction::Entry,
        at,
        time_zone: &w.tz,
        holidays: None,
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

/// Site 1: weekdays 09:00-17:00 and Sundays 09:00-12:00, closed on holidays. Site 2: a
/// night shift, 22:00-06:00 every day, holidays included. The bundle's default hours
/// (weekdays 08:00-18:00) differ from both, so each answer shows whose hours decided.
fn site_hours() -> [(SiteId, Schedule); 2] {
    let sunday = DaySet::weekday(Weekday::Sunday);
    let office = Schedule::new(
        vec![
            Period::hm(DaySet::WORKDAYS, (9, 0), (17, 0)),
            Period::hm(sunday, (9, 0), (12, 0)),
        ],
        None,
    )
    .unwrap();
    let night = Schedule::new(
        vec![Period::hm(DaySet::EVERY_DAY.with(DaySet::HOLIDAY), (22, 0), (6, 0))],
        None,
    )
    .unwrap();
    [(SiteId(1), office), (SiteId(2), night)]
}

/// What the business-hours rule should answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Allowed by the rule.
    Open,
    /// Denied by the site's opening hours.
    SiteClosed,
    /// Denied by the bundle's default hours (the site has none).
    DefaultClosed,
}

fn outcome(d: &RuledDecision) -> (Effect, RuleOutcome) {
    (d.effect, d.rule.as_ref().unwrap().outcome.clone())
}

fn expected(e: Expect) -> (Effect, RuleOutcome) {
    let denied = |reason: &str| (Effect::Deny, RuleOutcome::Denied { reason: reason.into() });
    match e {
        Expect::Open => (Effect::Allow, RuleOutcome::Allowed),
        Expect::SiteClosed => denied("outside the site's opening hours"),
        Expect::DefaultClosed => denied("outside business hours"),
    }
}

#[test]
fn each_site_is_judged_by_its_own_opening_hours() {
    use Expect::{DefaultClosed, Open, SiteClosed};
    let w = World::new();
    w.host.opening_hours().replace_all(site_hours());
    assert_eq!(w.host.opening_hours().len(), 2);
    let xmas = HolidayCalendar::new(vec![Date::constant(2026, 12, 25)]);
    let xmas = Some(&xmas);
    // Amsterdam is UTC+1 in winter and UTC+2 from 2026-03-29 01:00Z to 2026-10-25 01:00Z.
    // (door, person, instant, holidays, expected, local time and why)
    #[rustfmt::skip]
    let cases = [
        (2, BASIC, "2026-11-25T09:00:00Z", None, Open, "site 1, Wed 10:00"),
        (9, GUARD, "2026-11-25T09:00:00Z", None, SiteClosed, "site 2, Wed 10:00: the default hours would allow"),
        (2, BASIC, "2026-11-25T07:30:00Z", None, SiteClosed, "site 1, Wed 08:30: the default hours would allow"),
        (2, BASIC, "2026-11-25T22:00:00Z", None, SiteClosed, "site 1, Wed 23:00"),
        (9, GUARD, "2026-11-25T22:00:00Z", None, Open, "site 2, Wed 23:00: the default hours would deny"),
        (9, GUARD, "2026-11-26T04:59:00Z", None, Open, "site 2, Thu 05:59, in the period crossing midnight"),
        (9, GUARD, "2026-11-26T05:00:00Z", None, SiteClosed, "site 2, Thu 06:00, the period's end is exclusive"),
        (2, ADMIN, "2026-11-25T22:00:00Z", None, Open, "site 1, Wed 23:00, an admin passes"),
        // Christmas, a Friday: site 1 is closed for it, site 2's night shift covers holidays.
        (2, BASIC, "2026-12-25T09:00:00Z", xmas, SiteClosed, "site 1, holiday 10:00"),
        (2, BASIC, "2026-12-25T09:00:00Z", None, Open, "site 1, the same Friday without the calendar"),
        (9, GUARD, "2026-12-25T22:00:00Z", xmas, Open, "site 2, holiday 23:00"),
        (2, BASIC, "2026-12-25T22:00:00Z", xmas, SiteClosed, "site 1, holiday 23:00"),
        (2, ADMIN, "2026-12-25T09:00:00Z", xmas, Open, "site 1, holiday 10:00, an admin passes"),
        // Spring forward, Sunday 2026-03-29: on UTC+1 the answers after the switch would flip.
        (2, BASIC, "2026-03-29T07:30:00Z", None, Open, "site 1, Sun 09:30 CEST"),
        (2, BASIC, "2026-03-29T06:30:00Z", None, SiteClosed, "site 1, Sun 08:30 CEST"),
        (9, GUARD, "2026-03-29T00:30:00Z", None, Open, "site 2, Sun 01:30 CET, before the switch"),
        (9, GUARD, "2026-03-29T04:30:00Z", None, SiteClosed, "site 2, Sun 06:30 CEST"),
        // Fall back, Sunday 2026-10-25: on UTC+2 the answers after the switch would flip.
        (2, BASIC, "2026-10-25T10:30:00Z", None, Open, "site 1, Sun 11:30 CET"),
        (2, BASIC, "2026-10-25T11:00:00Z", None, SiteClosed, "site 1, Sun 12:00 CET"),
        (9, GUARD, "2026-10-25T04:30:00Z", None, Open, "site 2, Sun 05:30 CET"),
    ];
    for (door, person, at, holidays, expect, why) in cases {
        let d = w.decide_with(door, person, Direction::Unknown, at, holidays);
        assert_eq!(outcome(&d), expected(expect), "{why}");
        assert_eq!(d.core.effect, Effect::Allow, "{why}: the core grants at any time");
    }

    // The hours live outside the bundle: a hot swap keeps them (the default bundle has
    // no `trap-rule`, so its doors let go of it first).
    assert_eq!(w.host.door_rules().detach(DoorId(4)).len(), 1);
    assert_eq!(w.host.door_rules().detach(DoorId(5)).len(), 1);
    w.host.swap_dir(&default_dir()).unwrap();
    let d = w.decide(9, GUARD, Direction::Unknown, "2026-11-25T09:00:00Z");
    assert_eq!(outcome(&d), expected(SiteClosed), "site 2, Wed 10:00, after a swap");

    // Cleared, site 2 falls back to the bundle's default hours (weekdays 08:00-18:00);
    // site 1 keeps its own.
    w.host.set_site_opening_hours(SiteId(2), None);
    assert_eq!(w.host.opening_hours().get(SiteId(2)), None);
    #[rustfmt::skip]
    let cases = [
        (9, GUARD, "2026-11-25T09:00:00Z", Open, "site 2, Wed 10:00"),
        (9, GUARD, "2026-11-25T22:00:00Z", DefaultClosed, "site 2, Wed 23:00"),
        (2, BASIC, "2026-11-25T07:30:00Z", SiteClosed, "site 1, Wed 08:30"),
    ];
    for (door, person, at, expect, why) in cases {
        let d = w.decide(door, person, Direction::Unknown, at);
        assert_eq!(outcome(&d), expected(expect), "{why}, site 2 cleared");
    }

    // Set again, one site at a time: the site's hours apply once more.
    let [_, (site, night)] = site_hours();
    w.host.set_site_opening_hours(site, Some(night));
    let d = w.decide(9, GUARD, Direction::Unknown, "2026-11-25T22:00:00Z");
    assert_eq!(outcome(&d), expected(Open), "site 2, Wed 23:00, set again");
}

/// Attaching and swapping never leave a door on a rule the running bundle lacks; a rule
/// missing from the bundle a decision uses still fails by the door's fail mode, and a
/// fail-safe door logs that with a reason of its own.
#[test]
fn attachments_stay_consistent_with_the_bundle() {
    let w = World::new();
    let rules = w.host.door_rules();
    // (door, rule, expected error)
    let refused = [
        (
            6,
            "not-in-bundle",
            "bundle `default` has no door rule `not-in-bundle` (its door rules: `anti-passback`, `business-hours`, `occupancy`, `trap-rule`, `two-person`)",
        ),
        (
            6,
            "roles-standard",
            "bundle `default` has no door rule `roles-standard` (its door rules: `anti-passback`, `business-hours`, `occupancy`, `trap-rule`, `two-person`)",
        ),
        (
            6,
            "bad\u{202e}name\n",
            "bundle `default` has no door rule `bad\\u{202e}name\\u{a}` (its door rules: `anti-passback`, `business-hours`, `occupancy`, `trap-rule`, `two-person`)",
        ),
    ];
    for (door, rule, expected) in refused {
        let err = rules.attach(DoorId(door), rule, FailMode::Safe).unwrap_err();
        assert_eq!(err.to_string(), expected, "{rule:?}");
        assert_eq!(rules.attachment(DoorId(door)), None, "{rule:?}: nothing attached");
    }
    // Replacing is said, not silent.
    let old = rules.attach(DoorId(2), "anti-passback", FailMode::Safe).unwrap();
    assert_eq!(old, vec![(Arc::from("business-hours"), FailMode::Secure)]);
    let old = rules.attach(DoorId(2), "business-hours", FailMode::Secure).unwrap();
    assert_eq!(old, vec![(Arc::from("anti-passback"), FailMode::Safe)]);

    // The default bundle lacks `trap-rule`, which doors 4 and 5 attach: the swap is
    // refused and the running bundle stays.
    let running = w.host.bundle();
    let err = w.host.swap_dir(&default_dir()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundle `default` has no door rule `trap-rule`, which doors [4, 5] attach; \
         detach it (or attach another rule) before the swap"
    );
    assert!(Arc::ptr_eq(&running, &w.host.bundle()));
    assert_eq!(
        rules.detach(DoorId(4)),
        vec![(Arc::from("trap-rule"), FailMode::Secure)]
    );
    assert!(w.host.swap_dir(&default_dir()).is_err(), "door 5 still attaches it");
    assert_eq!(rules.detach(DoorId(5)), vec![(Arc::from("trap-rule"), FailMode::Safe)]);
    w.host.swap_dir(&default_dir()).unwrap();
    // Now `trap-rule` cannot be attached.
    assert!(rules.attach(DoorId(4), "trap-rule", FailMode::Secure).is_err());

    // A caller that runs the rules with a bundle of its own (not the host's) still gets
    // the door's fail mode for a rule that bundle lacks, with a reason of its own.
    let fixture = fixture_bundle();
    let host = PolicyHost::load(runtime(), fixture.path()).unwrap();
    host.door_rules()
        .attach(DoorId(4), "trap-rule", FailMode::Secure)
        .unwrap();
    host.door_rules()
        .attach(DoorId(5), "trap-rule", FailMode::Safe)
        .unwrap();
    let at: Timestamp = DAY.parse().unwrap();
    let other = w.host.bundle();
    // (door, effect, reason code, explanation)
    let cases = [
        (
            4,
            Effect::Deny,
            "rule_failed",
            "denied: rule `trap-rule` (not loaded) failed and the door is fail-secure: rule `trap-rule` is not in bundle `default`",
        ),
        (
            5,
            Effect::Allow,
            "rule_failed_open",
            "granted by `group:1` at any time, but rule `trap-rule` (not loaded) failed and was skipped (fail-safe door): rule `trap-rule` is not in bundle `default`",
        ),
    ];
    for (door, effect, code, explanation) in cases {
        let ctx = DoorContext {
            door: DoorId(door),
            site: SiteId(1),
            role: Some(RoleId(3)),
            kind: CredentialKind::Tag,
            groups: &[],
            direction: Direction::Unknown,
            at,
            time_zone: &w.tz,
            holidays: None,
        };
        let d = host
            .door_rules()
            .apply(&other, host.opening_hours(), w.core(door, BASIC, at), &ctx);
        assert_eq!(
            (d.effect, d.reason_code(), d.to_string()),
            (effect, code, explanation.to_owned()),
            "door {door}"
        );
    }
}

/// A door's chain of rules runs in order, each with its own fail mode; the first deny
/// wins and the rules after it do not run.
#[test]
fn rule_chains() {
    use Direction::Entry;
    let w = World::new();
    let rules = w.host.door_rules();
    let sha = |rule: &str| w.host.bundle().rule(rule).unwrap().sha256().short();
    let (apb, bh, trap) = (sha("anti-passback"), sha("business-hours"), sha("trap-rule"));
    let trapped = "trapped: wasm trap: wasm `unreachable` instruction executed";
    let chain = [
        ("trap-rule", FailMode::Safe),
        ("anti-passback", FailMode::Secure),
        ("business-hours", FailMode::Secure),
    ];
    assert_eq!(rules.set_chain(DoorId(6), &chain), Ok(vec![]));
    assert_eq!(
        rules.set_chain(
            DoorId(7),
            &[("trap-rule", FailMode::Secure), ("anti-passback", FailMode::Secure)]
        ),
        Ok(vec![])
    );
    assert_eq!(rules.chain(DoorId(6)).len(), 3);
    assert_eq!(
        rules.attachment(DoorId(6)),
        Some((Arc::from("trap-rule"), FailMode::Safe))
    );
    // (door, person, effect, reason code, rules that ran, explanation)
    let cases = [
        (
            6,
            BASIC,
            Effect::Allow,
            "rule_failed_open",
            3,
            format!(
                "granted by `group:1` at any time, but rule `trap-rule` (sha256 {trap}) failed and was skipped \
                 (fail-safe door): {trapped}; allowed by rule `anti-passback` (sha256 {apb}); \
                 allowed by rule `business-hours` (sha256 {bh})"
            ),
        ),
        (
            6,
            BASIC,
            Effect::Deny,
            "rule_denied",
            2,
            format!(
                "denied by rule `anti-passback` (sha256 {apb}): anti-passback: already inside; before it, \
                 rule `trap-rule` (sha256 {trap}) failed and was skipped (fail-safe door): {trapped}"
            ),
        ),
        (
            7,
            ADMIN,
            Effect::Deny,
            "rule_failed",
            1,
            format!("denied: rule `trap-rule` (sha256 {trap}) failed and the door is fail-secure: {trapped}"),
        ),
    ];
    for (i, (door, person, effect, code, ran, explanation)) in cases.into_iter().enumerate() {
        let d = w.decide(door, person, Entry, DAY);
        assert_eq!(
            (d.effect, d.reason_code(), d.rules().count(), d.to_string()),
            (effect, code, ran, explanation),
            "case {i}"
        );
    }
    // The chain stopped at the failed trap on door 7: anti-passback never saw the admin.
    assert_eq!(rules.state("anti-passback", ADMIN), None);

    // Refused chains change nothing.
    let nine: Vec<(&str, FailMode)> = vec![("anti-passback", FailMode::Safe); 9];
    // (chain, expected error)
    let refused: [(&[(&str, FailMode)], &str); 3] = [
        (
            &[("anti-passback", FailMode::Safe), ("anti-passback", FailMode::Secure)],
            "rule `anti-passback` appears twice in the chain of door 6",
        ),
        (&nine, "a chain of 9 rules for door 6, over the limit of 8"),
        (
            &[("anti-passback", FailMode::Safe), ("typo", FailMode::Safe)],
            "bundle `default` has no door rule `typo` (its door rules: `anti-passback`, `business-hours`, `occupancy`, `trap-rule`, `two-person`)",
        ),
    ];
    for (chain, expected) in refused {
        assert_eq!(rules.set_chain(DoorId(6), chain).unwrap_err().to_string(), expected);
        assert_eq!(rules.chain(DoorId(6)).len(), 3, "{expected}: unchanged");
    }
    // Attaching one rule replaces the whole chain, and says what it replaced.
    let old = rules.attach(DoorId(6), "business-hours", FailMode::Secure).unwrap();
    assert_eq!(old.len(), 3);
    assert_eq!(
        rules.chain(DoorId(6)),
        vec![(Arc::from("business-hours"), FailMode::Secure)]
    );
    assert_eq!(rules.detach(DoorId(6)).len(), 1);
    assert_eq!(rules.chain(DoorId(6)), vec![]);
}
