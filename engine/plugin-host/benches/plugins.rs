//! Plugin host benchmarks: door-rule round trip, role-table compile, notify throughput,
//! and hot swap under load.
//!
//! `cargo bench -p keyway-plugin-host --bench plugins` for the full run;
//! `KEYWAY_BENCH_QUICK=1 cargo bench -p keyway-plugin-host --bench plugins` for CI.
//! Criterion reports means; the percentile lines (p50/p99 from an HDR histogram of
//! single calls) and the swap report are printed at the end.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use criterion::Criterion;
use hdrhistogram::Histogram;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::{Decision, DoorId, Effect, GroupId, PersonId, Reason, Revision, RoleId, SiteId};
use keyway_plugin_host::{Bundle, DoorContext, FailMode, Limits, PolicyHost, RoleTable, RuleLink, Runtime};
use keyway_sdk::{
    Channel, Direction, Event, EventKind, Hook, NotificationSettings, NotifyInput, Recipient, RoleTableDef,
};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

fn ctx(door: u32, direction: Direction, at: Timestamp, tz: &TimeZone) -> DoorContext<'_> {
    DoorContext {
        door: DoorId(door),
        site: SiteId(1),
        role: Some(RoleId(3)),
        kind: keyway_core::CredentialKind::Tag,
        groups: &[],
        direction,
        at,
        time_zone: tz,
        holidays: None,
    }
}

fn notify_input() -> NotifyInput {
    NotifyInput {
        event: Event {
            kind: EventKind::EntryDenied,
            at_unix: 1_800_000_000,
            door: Some((4, "Front door".into())),
            person: Some((7, "Ada Lovelace".into())),
            detail: "no_right".into(),
        },
        settings: NotificationSettings {
            site_name: "HQ".into(),
            owner: Recipient {
                person: 1,
                address: "owner@example.com".into(),
            },
            channel: Channel::Email,
            enabled: vec![EventKind::EntryDenied, EventKind::DoorForced],
        },
    }
}

fn percentiles(name: &str, n: u64, mut f: impl FnMut(u64)) {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..n / 10 {
        f(i);
    }
    for i in 0..n {
        let start = Instant::now();
        f(i);
        h.record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .unwrap();
    }
    println!(
        "{name}: n={n} p50={}ns p99={}ns p99.9={}ns max={}ns",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) run small.
    let quick = std::env::var_os("KEYWAY_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default().configure_from_args();
    if quick {
        c = c
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500));
    }
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let dir = PolicyHost::default_bundle_dir_in(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let host = Arc::new(PolicyHost::load(Arc::clone(&runtime), &dir).unwrap());
    host.door_rules()
        .attach(DoorId(1), "anti-passback", FailMode::Secure)
        .unwrap();
    host.door_rules()
        .attach(DoorId(2), "business-hours", FailMode::Secure)
        .unwrap();
    // ABI version 2: per-door state, locked and written on every call.
    host.door_rules()
        .attach(DoorId(4), "two-person", FailMode::Secure)
        .unwrap();
    // ABI version 4: the same rule with the door's own settings (an escort from group 9
    // in every pair, a 10 s window), which it reads at each call, and the person's groups.
    host.door_rules()
        .set_links(
            DoorId(6),
            &[RuleLink::new("two-person", FailMode::Secure).with_config(
                keyway_sdk::Config::new()
                    .with("window_s", 10)
                    .with("escort_groups", vec![9i64]),
            )],
        )
        .unwrap();
    // A chain of three rules, each of which runs (none denies).
    host.door_rules()
        .set_chain(
            DoorId(5),
            &[
                ("business-hours", FailMode::Secure),
                ("anti-passback", FailMode::Secure),
                ("two-person", FailMode::Safe),
            ],
        )
        .unwrap();
    let tz = TimeZone::get("Europe/Amsterdam").unwrap();
    let at: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();

    // Door rule round trip: core decision in, ruled decision out, through WASM.
    c.bench_function("door_rule/business_hours", |b| {
        let ctx = ctx(2, Direction::Unknown, at, &tz);
        b.iter(|| black_box(host.decide(black_box(granted(7)), &ctx)));
    });
    c.bench_function("door_rule/anti_passback", |b| {
        let (entry, exit) = (ctx(1, Direction::Entry, at, &tz), ctx(1, Direction::Exit, at, &tz));
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            // Each person enters, then leaves: every passage is allowed.
            let ctx = if i.is_multiple_of(2) { &entry } else { &exit };
            black_box(host.decide(granted((i / 2) % 1000), ctx))
        });
    });
    c.bench_function("door_rule/two_person_scoped_state", |b| {
        let ctx = ctx(4, Direction::Unknown, at, &tz);
        let mut i = 0u32;
        // Alternating people: every other call opens and clears the door's state.
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(host.decide(granted(i % 2), &ctx))
        });
    });
    c.bench_function("door_rule/two_person_door_settings", |b| {
        let groups = [GroupId(3), GroupId(9)];
        let ctx = DoorContext {
            groups: &groups,
            ..ctx(6, Direction::Unknown, at, &tz)
        };
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(host.decide(granted(i % 2), &ctx))
        });
    });
    c.bench_function("door_rule/chain_of_three", |b| {
        let ctx = ctx(5, Direction::Unknown, at, &tz);
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(host.decide(granted(i % 2), &ctx))
        });
    });
    c.bench_function("door_rule/no_rule", |b| {
        let ctx = ctx(3, Direction::Unknown, at, &tz);
        b.iter(|| black_box(host.decide(black_box(granted(7)), &ctx)));
    });

    // The same round trip with a minimal WAT guest (sdk/ABI.md's example): what the host
    // and wasmtime cost, without a Rust guest's decode/encode.
    let abi_md = include_str!("../../../sdk/ABI.md");
    let start = abi_md.find("```wat\n").unwrap() + "```wat\n".len();
    let end = start + abi_md[start..].find("```").unwrap();
    let wat_rule = runtime
        .load(
            "abi-md",
            &wat::parse_str(&abi_md[start..end]).unwrap(),
            &[Hook::DoorRule],
            &keyway_sdk::Config::new(),
        )
        .unwrap();
    let input = keyway_sdk::testing::door_input(1, Some(7));
    c.bench_function("door_rule/minimal_wat_guest", |b| {
        b.iter(|| black_box(wat_rule.door_rule(black_box(&input)).unwrap()));
    });

    // Role table: the pure compile, and the roles hook plus compile.
    let bundle = host.bundle();
    let roles_plugin = bundle.plugin("roles-standard").unwrap();
    let def: RoleTableDef = roles_plugin.call(Hook::Roles, &()).unwrap();
    c.bench_function("roles/compile", |b| {
        b.iter(|| black_box(RoleTable::compile(black_box(&def)).unwrap()))
    });
    c.bench_function("roles/hook_and_compile", |b| {
        b.iter(|| {
            let def: RoleTableDef = roles_plugin.call(Hook::Roles, &()).unwrap();
            black_box(RoleTable::compile(&def).unwrap())
        });
    });

    // Notify: one event through the notify plugin.
    let notify = notify_input();
    c.bench_function("notify/event", |b| {
        b.iter(|| black_box(bundle.notify(black_box(&notify)).unwrap()))
    });

    c.final_summary();

    let n = if quick { 20_000 } else { 200_000 };
    println!("\n== percentiles (single calls, HDR histogram) ==");
    let bh = ctx(2, Direction::Unknown, at, &tz);
    percentiles("door_rule/business_hours round trip", n, |_| {
        black_box(host.decide(granted(7), &bh));
    });
    let (entry, exit) = (ctx(1, Direction::Entry, at, &tz), ctx(1, Direction::Exit, at, &tz));
    percentiles("door_rule/anti_passback round trip", n, |i| {
        let ctx = if i.is_multiple_of(2) { &entry } else { &exit };
        black_box(host.decide(granted(u32::try_from((i / 2) % 1000).unwrap()), ctx));
    });
    let two = ctx(4, Direction::Unknown, at, &tz);
    percentiles("door_rule/two_person (scoped state) round trip", n, |i| {
        black_box(host.decide(granted(u32::try_from(i % 2).unwrap()), &two));
    });
    let groups = [GroupId(3), GroupId(9)];
    let settings = DoorContext {
        groups: &groups,
        ..ctx(6, Direction::Unknown, at, &tz)
    };
    percentiles("door_rule/two_person (door settings, groups) round trip", n, |i| {
        black_box(host.decide(granted(u32::try_from(i % 2).unwrap()), &settings));
    });
    let chain = ctx(5, Direction::Unknown, at, &tz);
    percentiles("door_rule/chain_of_three round trip", n, |i| {
        black_box(host.decide(granted(u32::try_from(i % 2).unwrap()), &chain));
    });
    percentiles("door_rule/minimal_wat_guest round trip", n, |_| {
        black_box(wat_rule.door_rule(&input).unwrap());
    });
    let start = Instant::now();
    let events = if quick { 20_000 } else { 200_000 };
    for _ in 0..events {
        black_box(bundle.notify(&notify).unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "notify throughput: {:.0} events/s ({events} events, one thread)",
        f64::from(events) / secs
    );
    let start = Instant::now();
    let loads = if quick { 3 } else { 10 };
    for _ in 0..loads {
        black_box(Bundle::load(&runtime, &dir).unwrap());
    }
    println!(
        "bundle load (modules already compiled; hash check, instantiate, configure, roles): {:?} per load",
        start.elapsed() / loads
    );

    swap_report(&runtime, &dir, quick);
}

/// Two threads decide at a ruled door while the main thread swaps bundles.
fn swap_report(runtime: &Arc<Runtime>, dir: &std::path::Path, quick: bool) {
    let host = Arc::new(PolicyHost::load(Arc::clone(runtime), dir).unwrap());
    host.door_rules()
        .attach(DoorId(2), "business-hours", FailMode::Secure)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, failed) = (Arc::clone(&host), Arc::clone(&stop), Arc::clone(&failed));
            std::thread::spawn(move || {
                let tz = TimeZone::UTC;
                let at: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
                let ctx = ctx(2, Direction::Unknown, at, &tz);
                let mut h = Histogram::<u64>::new(3).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let d = host.decide(granted(7), &ctx);
                    h.record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
                        .unwrap();
                    if d.effect != Effect::Allow {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                h
            })
        })
        .collect();
    let swaps = if quick { 5 } else { 50 };
    let mut swap_times = Histogram::<u64>::new(3).unwrap();
    for _ in 0..swaps {
        let bundle = Bundle::load(runtime, dir).unwrap();
        let start = Instant::now();
        drop(host.swap(bundle).unwrap());
        swap_times
            .record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut decisions = Histogram::<u64>::new(3).unwrap();
    for w in workers {
        decisions.add(w.join().unwrap()).unwrap();
    }
    println!(
        "hot swap: {swaps} swaps during {} decisions, {} failed; swap (pointer store + old bundle drop) p50={}ns max={}ns; \
         decision latency during swaps p50={}ns p99={}ns max={}ns",
        decisions.len(),
        failed.load(Ordering::Relaxed),
        swap_times.value_at_quantile(0.5),
        swap_times.max(),
        decisions.value_at_quantile(0.5),
        decisions.value_at_quantile(0.99),
        decisions.max()
    );
}
