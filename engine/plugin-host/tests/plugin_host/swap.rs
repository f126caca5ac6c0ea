//! Hot swap: decisions running while bundles are swapped all succeed; a bundle that fails
//! validation leaves the old one running and says why.

use crate::bundle::edited_bundle;
use crate::common::{default_dir, runtime};
use crate::rules::fixture_bundle;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{Decision, DoorId, Effect, PersonId, Reason, Revision, RoleId, SiteId};
use keyway_plugin_host::{DoorContext, FailMode, PolicyHost};
use keyway_sdk::Direction;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn granted(person: u32) -> Decision {
    Decision {
        effect: Effect::Allow,
        reason: Reason::Granted {
            group: keyway_core::GroupId(1),
            schedule: None,
        },
        revision: Revision(1),
        credential: None,
        person: Some(PersonId(person)),
    }
}

#[test]
fn swap_under_load() {
    let runtime = runtime();
    let host = Arc::new(PolicyHost::load(Arc::clone(&runtime), &default_dir()).unwrap());
    host.door_rules()
        .attach(DoorId(1), "business-hours", FailMode::Secure)
        .unwrap();
    let other = fixture_bundle();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (host, stop, ok, failed) = (
                Arc::clone(&host),
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                let tz = TimeZone::UTC;
                let at: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let ctx = DoorContext {
                        door: DoorId(1),
                        site: SiteId(1),
                        role: Some(RoleId(3)),
                        kind: keyway_core::CredentialKind::Tag,
                        groups: &[],
                        direction: Direction::Unknown,
                        at,
                        time_zone: &tz,
                        holidays: None,
                    };
                    let d = host.decide(granted(t * 1_000_000 + i), &ctx);
                    let counter = if d.effect == Effect::Allow && d.reason_code() == "granted" {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    i = i.wrapping_add(1);
                }
            })
        })
        .collect();
    let broken = edited_bundle(|t| t.replace("hooks = [\"roles\"]", "hooks = []"));
    for round in 0..6u32 {
        let dir = if round.is_multiple_of(2) {
            other.path().to_path_buf()
        } else {
            default_dir()
        };
        let before = host.bundle();
        host.swap_dir(&dir).unwrap();
        assert!(!Arc::ptr_eq(&before, &host.bundle()));
        // A broken bundle is refused, the running one stays.
        let running = host.bundle();
        let err = host.swap_dir(broken.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle `default` has no plugin providing the `roles` hook"
        );
        assert!(Arc::ptr_eq(&running, &host.bundle()));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 0);
    // Modules were compiled once per distinct wasm: 7 standard + the trap rule.
    assert_eq!(runtime.compiled_count(), 8);
}
