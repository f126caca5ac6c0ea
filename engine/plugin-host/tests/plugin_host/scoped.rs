//! Scoped state (ABI version 2): the two-person rule keeps who badged first at a door in
//! per-door state the host holds. Under concurrent calls spread over a small pool of
//! instances (so instances come and go) and hot swaps, it agrees exactly with a
//! sequential model; an admin can inspect and reset the state; a version 1 rule next to
//! it behaves as before.

use crate::common::{default_dir, runtime};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{Decision, DoorId, Effect, GroupId, PersonId, Reason, Revision, RoleId, SiteId};
use keyway_plugin_host::{Direction, DoorContext, FailMode, Limits, Passage, PolicyHost, Runtime, StateScope};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SHARED: DoorId = DoorId(100);
const THREADS: u32 = 8;
const BADGES: u32 = 200;

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

fn decide(host: &PolicyHost, door: DoorId, person: u32, at: i64) -> Effect {
    let tz = TimeZone::UTC;
    let ctx = DoorContext {
        door,
        site: SiteId(1),
        role: Some(RoleId(3)),
        kind: keyway_core::CredentialKind::Tag,
        groups: &[],
        direction: Direction::Unknown,
        at: Timestamp::from_second(1_800_000_000 + at).unwrap(),
        time_zone: &tz,
        holidays: None,
    };
    host.decide(granted(person), &ctx).effect
}

/// The two-person rule, sequentially: who waits at the door, and since when.
fn model(waiting: &mut Option<(u32, i64)>, person: u32, at: i64) -> bool {
    match *waiting {
        Some((first, since)) if first != person && (0..=30).contains(&(at - since)) => {
            *waiting = None;
            true
        }
        _ => {
            *waiting = Some((person, at));
            false
        }
    }
}

#[test]
fn two_person_rule_under_concurrency() {
    // A pool of 2 for 8 threads: most calls make an instance and many are dropped.
    let limits = Limits {
        pool_size: 2,
        ..Limits::default()
    };
    let host = Arc::new(PolicyHost::load(Arc::new(Runtime::new(limits).unwrap()), &default_dir()).unwrap());
    let rules = host.door_rules();
    rules.attach(SHARED, "two-person", FailMode::Secure).unwrap();
    for t in 0..THREADS {
        rules.attach(DoorId(t + 1), "two-person", FailMode::Secure).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shared_allowed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (host, shared_allowed) = (Arc::clone(&host), Arc::clone(&shared_allowed));
            std::thread::spawn(move || {
                let mut waiting = None;
                let mut mismatches = Vec::new();
                for i in 0..BADGES {
                    // Its own door: a mix of the same person twice, another person, and
                    // badges too late, checked against the model.
                    let person = t * 1000 + (i * 7) % 3;
                    let at = i64::from(i) * 20 + i64::from(i % 5) * 7;
                    let expected = model(&mut waiting, person, at);
                    let got = decide(&host, DoorId(t + 1), person, at) == Effect::Allow;
                    if got != expected {
                        mismatches.push(i);
                    }
                    // The shared door: a different person every time, all at once.
                    if decide(&host, SHARED, 100_000 + t * BADGES + i, 0) == Effect::Allow {
                        shared_allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                mismatches
            })
        })
        .collect();
    // Hot swaps while the threads run: the states live outside the bundle.
    let swapper = {
        let (host, stop) = (Arc::clone(&host), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                host.swap_dir(&default_dir()).unwrap();
                swaps += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            swaps
        })
    };
    for (t, w) in workers.into_iter().enumerate() {
        assert_eq!(
            w.join().unwrap(),
            Vec::<u32>::new(),
            "thread {t}: badges that disagree with the model"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0, "at least one hot swap ran during the test");
    // Linearised, the shared door alternates waiting and opening: exactly one badge in
    // two opens it. A lost update (two calls reading the same state) would break this.
    assert_eq!(shared_allowed.load(Ordering::Relaxed), u64::from(THREADS * BADGES / 2));
}

#[test]
fn scoped_state_is_inspected_and_reset() {
    let host = PolicyHost::load(runtime(), &default_dir()).unwrap();
    let rules = host.door_rules();
    rules.attach(DoorId(5), "two-person", FailMode::Secure).unwrap();
    rules.attach(DoorId(6), "anti-passback", FailMode::Secure).unwrap();
    let scope = StateScope::Door(DoorId(5));
    assert_eq!(rules.scoped_state("two-person", scope), None);
    assert_eq!(decide(&host, DoorId(5), 1, 0), Effect::Deny);
    let mut expected = 1u32.to_le_bytes().to_vec();
    expected.extend_from_slice(&1_800_000_000i64.to_le_bytes());
    expected.push(0); // not an escort
    assert_eq!(rules.scoped_state("two-person", scope), Some(expected));
    // Reset by an admin: the next person waits instead of opening.
    assert!(rules.reset_state("two-person", scope));
    assert!(!rules.reset_state("two-person", scope), "nothing left to reset");
    assert_eq!(decide(&host, DoorId(5), 2, 1), Effect::Deny);
    assert_eq!(decide(&host, DoorId(5), 3, 2), Effect::Allow);
    // Nothing is kept per person or per site by this rule.
    assert_eq!(rules.scoped_state("two-person", StateScope::Person(PersonId(2))), None);
    assert_eq!(rules.scoped_state("two-person", StateScope::Site(SiteId(1))), None);
    assert_eq!(rules.scoped_state("nope", scope), None);
    assert!(!rules.reset_state("nope", scope));
}

/// Version 1 and later rules run side by side, in one chain.
#[test]
fn version_1_and_later_rules_in_one_chain() {
    let fixture = crate::rules::fixture_bundle();
    let host = PolicyHost::load(runtime(), fixture.path()).unwrap();
    let bundle = host.bundle();
    let version = |rule: &str| bundle.rule(rule).map(|p| p.abi_version());
    // `trap-rule` is a WAT module of version 1; the standard plugins are built on 4.
    assert_eq!((version("trap-rule"), version("two-person")), (Some(1), Some(4)));
    host.door_rules()
        .set_chain(
            DoorId(7),
            &[("trap-rule", FailMode::Safe), ("two-person", FailMode::Secure)],
        )
        .unwrap();
    // The version 1 rule fails (and is skipped, fail-safe); the version 3 rule decides.
    assert_eq!(decide(&host, DoorId(7), 1, 0), Effect::Deny);
    assert_eq!(decide(&host, DoorId(7), 2, 5), Effect::Allow);
}

/// The occupancy limit counts passages (what happened) in per-site state: 8 threads
/// reporting entries and exits through 8 doors at once lose no count.
#[test]
fn occupancy_counts_passages_under_concurrency() {
    let host = Arc::new(PolicyHost::load(runtime(), &default_dir()).unwrap());
    for t in 0..THREADS {
        host.door_rules()
            .attach(DoorId(t + 1), "occupancy", FailMode::Secure)
            .unwrap();
    }
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let host = Arc::clone(&host);
            std::thread::spawn(move || {
                for i in 0..150u32 {
                    // Two entries for each exit.
                    let direction = if i % 3 == 2 { Direction::Exit } else { Direction::Entry };
                    let passage = Passage {
                        door: DoorId(t + 1),
                        site: SiteId(1),
                        person: Some(PersonId(t * 1000 + i)),
                        at: Timestamp::from_second(1_800_000_000).unwrap(),
                        direction,
                        opened: true,
                    };
                    assert_eq!(host.passage(&passage), Vec::new());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let inside = host
        .door_rules()
        .scoped_state("occupancy", StateScope::Site(SiteId(1)))
        .unwrap();
    assert_eq!(inside, (THREADS * 50).to_le_bytes().to_vec());
    // 400 people inside, over the bundle's limit of 50: an entry is denied, with the
    // rule's reason.
    let tz = TimeZone::UTC;
    let ctx = DoorContext {
        door: DoorId(1),
        site: SiteId(1),
        role: Some(RoleId(3)),
        kind: keyway_core::CredentialKind::Tag,
        groups: &[],
        direction: Direction::Entry,
        at: Timestamp::from_second(1_800_000_000).unwrap(),
        time_zone: &tz,
        holidays: None,
    };
    let d = host.decide(granted(1), &ctx);
    assert_eq!(
        (
            d.effect,
            d.reason_code(),
            d.to_string().ends_with("occupancy limit of 50 reached")
        ),
        (Effect::Deny, "rule_denied", true)
    );
}

/// A badge at `door` in `direction` by `person`; its effect.
fn badge(host: &PolicyHost, door: DoorId, person: u32, direction: Direction) -> Effect {
    let tz = TimeZone::UTC;
    let ctx = DoorContext {
        door,
        site: SiteId(1),
        role: Some(RoleId(3)),
        kind: keyway_core::CredentialKind::Tag,
        groups: &[],
        direction,
        at: Timestamp::from_second(1_800_000_000).unwrap(),
        time_zone: &tz,
        holidays: None,
    };
    host.decide(granted(person), &ctx).effect
}

/// The IQ reports `person` went through `door` (or the door stayed shut).
fn pass(host: &PolicyHost, door: DoorId, person: u32, direction: Direction, opened: bool) {
    let passage = Passage {
        door,
        site: SiteId(1),
        person: Some(PersonId(person)),
        at: Timestamp::from_second(1_800_000_000).unwrap(),
        direction,
        opened,
    };
    assert_eq!(host.passage(&passage), Vec::new());
}

/// Anti-passback on passages (the default bundle's configuration): only a passage the
/// IQ reports arms it. 8 threads, each a person going in and out through 8 doors of
/// the same rule, over a pool of instances and under hot swaps, agree exactly with the
/// sequential model: inside after an entry passage, outside after an exit passage.
#[test]
fn anti_passback_counts_passages_under_concurrency() {
    use Direction::{Entry, Exit};
    let host = Arc::new(PolicyHost::load(runtime(), &default_dir()).unwrap());
    for t in 0..THREADS {
        host.door_rules()
            .attach(DoorId(200 + t), "anti-passback", FailMode::Secure)
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (host, stop) = (Arc::clone(&host), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                host.swap_dir(&default_dir()).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let host = Arc::clone(&host);
            std::thread::spawn(move || {
                let person = 7;
                for round in 0..40u32 {
                    // Every person goes through every door of the pool: the state is per
                    // (rule, person), whichever door and instance.
                    let door = DoorId(200 + (t + round) % THREADS);
                    let person = person + t;
                    // Allowed, but nobody went through: the next entry is allowed too.
                    assert_eq!(badge(&host, door, person, Entry), Effect::Allow, "{t}/{round}");
                    assert_eq!(badge(&host, door, person, Entry), Effect::Allow, "{t}/{round}");
                    pass(&host, door, person, Entry, true);
                    assert_eq!(badge(&host, door, person, Entry), Effect::Deny, "{t}/{round}");
                    // A door that stayed shut moves nothing; one that opened does.
                    assert_eq!(badge(&host, door, person, Exit), Effect::Allow, "{t}/{round}");
                    pass(&host, door, person, Exit, false);
                    assert_eq!(badge(&host, door, person, Entry), Effect::Deny, "{t}/{round}");
                    pass(&host, door, person, Exit, true);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0, "at least one hot swap ran during the test");
    for t in 0..THREADS {
        // Each ended outside (2 is the plugin's "outside" byte).
        let state = host
            .door_rules()
            .scoped_state("anti-passback", StateScope::Person(PersonId(7 + t)));
        assert_eq!(state, Some(vec![2]), "person {}", 7 + t);
    }
}

/// A hot swap to another bundle with the same rules (here, another config: every
/// instance is new) keeps every
/// state the rules hold: per door (two-person), per person (anti-passback) and per site
/// (occupancy).
#[test]
fn states_survive_a_hot_swap_of_the_same_rule() {
    use Direction::Entry;
    let host = PolicyHost::load(runtime(), &default_dir()).unwrap();
    let rules = host.door_rules();
    rules.attach(DoorId(1), "two-person", FailMode::Secure).unwrap();
    rules.attach(DoorId(2), "anti-passback", FailMode::Secure).unwrap();
    rules.attach(DoorId(3), "occupancy", FailMode::Secure).unwrap();
    assert_eq!(decide(&host, DoorId(1), 1, 0), Effect::Deny);
    pass(&host, DoorId(2), 4, Entry, true);
    pass(&host, DoorId(3), 5, Entry, true);
    let scopes = [
        ("two-person", StateScope::Door(DoorId(1))),
        ("anti-passback", StateScope::Person(PersonId(4))),
        ("occupancy", StateScope::Site(SiteId(1))),
    ];
    let before: Vec<_> = scopes.iter().map(|(r, s)| rules.scoped_state(r, *s)).collect();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let other = crate::bundle::edited_bundle(|t| t.replace("window_s = 30", "window_s = 60"));
    let old = host.swap_dir(other.path()).unwrap();
    assert!(!Arc::ptr_eq(&old, &host.bundle()), "another bundle runs");
    let after: Vec<_> = scopes.iter().map(|(r, s)| rules.scoped_state(r, *s)).collect();
    assert_eq!(before, after);
    // And the rules go on from them: the second person opens within the new window.
    assert_eq!(decide(&host, DoorId(1), 2, 45), Effect::Allow);
    assert_eq!(badge(&host, DoorId(2), 4, Entry), Effect::Deny);
}
