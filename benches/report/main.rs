//! The Keyway benchmark report: the figures of BENCHMARKS.md, in one run.
//!
//! It measures, on the population of `keyway-sim` at gateway scale (1M credentials, 1M
//! people, 100k doors, 10k groups, 10k IQs):
//! - resident bytes per credential (VmRSS before and after building the snapshot, the
//!   generator's records dropped) and `Snapshot::heap_bytes()` per credential;
//! - the median time of a full `Snapshot::build`, and of sorting the same keys and
//!   building their FST alone (the reference the build is held to);
//! - `decide` latency p50/p99/p999 on one thread, "cold" (requests drawn uniformly over
//!   the whole population) and "warm" (10k requests cycled), each call timed with a pair
//!   of `Instant::now()` minus the measured cost of that pair, plus the batch mean;
//! - the limit (`limit.rs`: a plain hash map lookup and the dependent reads of the
//!   credential's, person's and door's rows) on the same requests, per call and in
//!   batches, beside `decide` in a loop and `decide_batch`, with the ratios; the two
//!   take turns by blocks of 10,000 requests, so that both see the same machine state;
//! - throughput on one and two threads, each thread with its own request stream over a
//!   shared `SnapshotCell` (`load()` per decision);
//! - the time from `SnapshotCell::apply` to a decision that sees the change, on the same
//!   thread and on another thread spinning on `load()`, on the fresh snapshot and with
//!   the overlay grown to the compaction threshold;
//! - the same requests through Cedar (global and per-door sliced policy sets) and casbin,
//!   at a smaller scale with Keyway measured at that scale too, with an agreement check.
//!
//! `cargo bench --bench report` runs it in full (several minutes). With
//! `KEYWAY_BENCH_QUICK=1`, or when not run by `cargo bench` (no `--bench` argument, as
//! under `cargo test --benches`), it runs at 1/1000 scale in seconds. Scales can be set
//! with `KEYWAY_BENCH_DIVISOR`, `KEYWAY_BENCH_CEDAR_DIVISOR` and
//! `KEYWAY_BENCH_CASBIN_DIVISOR`.

#![expect(clippy::unwrap_used, reason = "benchmarks fail loudly")]

mod casbin_peer;
mod cedar_peer;
mod limit;
mod local;

use hdrhistogram::Histogram;
use keyway_core::{
    Change, CredentialId, CredentialKind, CredentialRecord, DEFAULT_COMPACTION_THRESHOLD, Decision, DecisionRequest,
    Effect, PersonId, Presented, Reason, Record, Revision, SiteId, Snapshot, SnapshotCell, decide, decide_batch,
};
use keyway_sim::{GeneratedRequest, Population, PopulationSpec};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// What to run, and how big.
#[derive(Debug, Clone, Copy)]
struct Config {
    quick: bool,
    divisor: u32,
    cedar_divisor: u32,
    casbin_divisor: u32,
    cold_requests: usize,
    warm_set: usize,
    warm_calls: usize,
    build_runs: usize,
    changes: usize,
    overlay_rows: usize,
    peer_requests: usize,
    cedar_global_requests: usize,
    casbin_requests: usize,
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let args: Vec<String> = std::env::args().collect();
        let quick = std::env::var("KEYWAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
            || args.iter().any(|a| a == "--test")
            || !args.iter().any(|a| a == "--bench");
        if quick {
            Config {
                quick,
                divisor: env_u32("KEYWAY_BENCH_DIVISOR", 1000),
                cedar_divisor: env_u32("KEYWAY_BENCH_CEDAR_DIVISOR", 1000),
                casbin_divisor: env_u32("KEYWAY_BENCH_CASBIN_DIVISOR", 1000),
                cold_requests: 10_000,
                warm_set: 1_000,
                warm_calls: 10_000,
                build_runs: 2,
                changes: 50,
                overlay_rows: 256,
                peer_requests: 500,
                cedar_global_requests: 200,
                casbin_requests: 200,
            }
        } else {
            Config {
                quick,
                divisor: env_u32("KEYWAY_BENCH_DIVISOR", 1),
                cedar_divisor: env_u32("KEYWAY_BENCH_CEDAR_DIVISOR", 10),
                casbin_divisor: env_u32("KEYWAY_BENCH_CASBIN_DIVISOR", 100),
                cold_requests: 1_000_000,
                warm_set: 10_000,
                warm_calls: 1_000_000,
                build_runs: 5,
                changes: 1_000,
                overlay_rows: DEFAULT_COMPACTION_THRESHOLD,
                peer_requests: 20_000,
                cedar_global_requests: 2_000,
                casbin_requests: 2_000,
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).unwrap()
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn fmt_ns(v: u64) -> String {
    if v >= 10_000_000 {
        format!("{:.1} ms", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.1} us", v as f64 / 1e3)
    } else {
        format!("{v} ns")
    }
}

fn summary(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} | p99 {} | p999 {} | max {} | mean {:.0} ns | n {}",
        fmt_ns(h.value_at_quantile(0.5)),
        fmt_ns(h.value_at_quantile(0.99)),
        fmt_ns(h.value_at_quantile(0.999)),
        fmt_ns(h.max()),
        h.mean(),
        h.len()
    )
}

/// Resident set size of this process, in bytes (VmRSS of /proc/self/status).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn decide_one(snapshot: &Snapshot, r: &GeneratedRequest) -> Decision {
    decide(
        snapshot,
        r.door,
        Presented {
            kind: r.kind,
            secret: &r.secret,
        },
        r.at,
    )
}

/// The cost of a back-to-back pair of `Instant::now()`: the median of many.
fn timer_overhead() -> u64 {
    let mut h = histogram();
    for _ in 0..1_000_000 {
        let t0 = Instant::now();
        let t1 = black_box(Instant::now());
        h.record(ns(t1 - t0).max(1)).unwrap();
    }
    println!("timer: Instant::now() pair {}", summary(&h));
    h.value_at_quantile(0.5)
}

/// Per-call latency of `decide` over `requests`, minus the timer's own cost.
fn time_keyway<'a>(
    snapshot: &Snapshot,
    requests: impl Iterator<Item = &'a GeneratedRequest>,
    overhead: u64,
) -> Histogram<u64> {
    let mut h = histogram();
    for r in requests {
        let t0 = Instant::now();
        let d = black_box(decide_one(black_box(snapshot), r));
        let t1 = Instant::now();
        let _ = d;
        h.record(ns(t1 - t0).saturating_sub(overhead).max(1)).unwrap();
    }
    h
}

/// Per-call latency of the limit probe over `requests`, minus the timer's own cost.
fn time_limit<'a>(
    limit: &limit::Limit,
    requests: impl Iterator<Item = &'a GeneratedRequest>,
    overhead: u64,
) -> Histogram<u64> {
    let mut h = histogram();
    for r in requests {
        let t0 = Instant::now();
        let d = black_box(black_box(limit).probe_request(r));
        let t1 = Instant::now();
        let _ = d;
        h.record(ns(t1 - t0).saturating_sub(overhead).max(1)).unwrap();
    }
    h
}

/// Requests per turn when the limit and `decide` take turns.
const TURN: usize = 10_000;

/// The limit and `decide` on the same requests, timed as [`take_turns`] does.
struct Turns {
    /// Per call, minus the timer.
    limit: Histogram<u64>,
    decide: Histogram<u64>,
    /// Mean per call in batches of 64: the limit, `decide` in a loop, `decide_batch`.
    batch_means: (f64, f64, f64),
}

/// The limit and `decide` over `requests`, taking turns by blocks of [`TURN`] requests,
/// the one going first alternating from block to block, so that both see the same
/// machine state (a neighbour's burst on this shared VM lands on both, not on one whole
/// pass) and neither always finds the requests' own bytes in cache. Per-call timings
/// first, then the batch means, the same way. With `warm_up`, each turn first runs its
/// block once untimed, so that "warm" still means the block's data is in cache, not
/// that it was an instant ago before the other took its turn.
fn take_turns(
    limit: &limit::Limit,
    snapshot: &Snapshot,
    requests: &[&GeneratedRequest],
    overhead: u64,
    warm_up: bool,
) -> Turns {
    let warm_limit = |block: &[&GeneratedRequest]| {
        if warm_up {
            for r in block {
                black_box(limit.probe_request(r));
            }
        }
    };
    let warm_decide = |block: &[&GeneratedRequest]| {
        if warm_up {
            for r in block {
                black_box(decide_one(snapshot, r));
            }
        }
    };
    let mut limit_h = histogram();
    let mut decide_h = histogram();
    for (i, block) in requests.chunks(TURN).enumerate() {
        let mut limit_turn = || {
            warm_limit(block);
            limit_h.add(time_limit(limit, block.iter().copied(), overhead)).unwrap();
        };
        let mut decide_turn = || {
            warm_decide(block);
            decide_h
                .add(time_keyway(snapshot, block.iter().copied(), overhead))
                .unwrap();
        };
        if i % 2 == 0 {
            limit_turn();
            decide_turn();
        } else {
            decide_turn();
            limit_turn();
        }
    }
    let mut sums = (0.0, 0.0, 0.0);
    for (i, block) in requests.chunks(TURN).enumerate() {
        let weight = block.len() as f64;
        let mut turns: [&mut dyn FnMut(); 3] = [
            &mut || {
                warm_limit(block);
                sums.0 += weight * limit_batch_mean(limit, block.iter().copied());
            },
            &mut || {
                warm_decide(block);
                sums.1 += weight * batch_mean(snapshot, block.iter().copied()).0;
            },
            &mut || {
                warm_decide(block);
                sums.2 += weight * decide_batch_mean(snapshot, block.iter().copied());
            },
        ];
        turns.rotate_left(i % 3);
        for turn in turns {
            turn();
        }
    }
    let calls = requests.len().max(1) as f64;
    Turns {
        limit: limit_h,
        decide: decide_h,
        batch_means: (sums.0 / calls, sums.1 / calls, sums.2 / calls),
    }
}

/// Mean time per probe of the limit, in batches of 64 probes.
fn limit_batch_mean<'a>(limit: &limit::Limit, requests: impl Iterator<Item = &'a GeneratedRequest>) -> f64 {
    let all: Vec<&GeneratedRequest> = requests.collect();
    let started = Instant::now();
    for batch in all.chunks(64) {
        for r in batch {
            black_box(black_box(limit).probe_request(r));
        }
    }
    ns(started.elapsed()) as f64 / all.len().max(1) as f64
}

/// Mean time per decision of `decide_batch`, in batches of 64 requests.
fn decide_batch_mean<'a>(snapshot: &Snapshot, requests: impl Iterator<Item = &'a GeneratedRequest>) -> f64 {
    let all: Vec<DecisionRequest<'_>> = requests
        .map(|r| DecisionRequest {
            door: r.door,
            presented: Presented {
                kind: r.kind,
                secret: &r.secret,
            },
            at: r.at,
        })
        .collect();
    let mut out = Vec::with_capacity(64);
    let started = Instant::now();
    for batch in all.chunks(64) {
        out.clear();
        decide_batch(black_box(snapshot), batch, &mut out);
        black_box(&out);
    }
    ns(started.elapsed()) as f64 / all.len().max(1) as f64
}

/// The same credential keys as the core's index (secret, kind, site), sorted and put in
/// an FST: the reference the build time is compared with. The keys are made before the
/// clock starts.
fn sort_and_fst(records: &[Record]) -> f64 {
    let mut keys: Vec<Vec<u8>> = records
        .iter()
        .filter_map(|r| match r {
            Record::Credential(c) => Some(index_key(c.kind, c.site, &c.secret)),
            _ => None,
        })
        .collect();
    let started = Instant::now();
    keys.sort_unstable();
    let mut builder = fst::MapBuilder::memory();
    for (i, k) in keys.iter().enumerate() {
        builder.insert(k, i as u64).unwrap();
    }
    black_box(builder.into_map());
    started.elapsed().as_secs_f64()
}

/// The median time per call of `a` and of `b`, timed in alternating blocks of `block`
/// calls over `rounds` rounds, so that both see the same load on a shared machine.
fn alternate(rounds: usize, block: usize, mut a: impl FnMut(usize), mut b: impl FnMut(usize)) -> (f64, f64) {
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    let mut at = 0usize;
    for _ in 0..rounds {
        let started = Instant::now();
        for i in 0..block {
            a(at + i);
        }
        ta.push(ns(started.elapsed()) as f64 / block as f64);
        let started = Instant::now();
        for i in 0..block {
            b(at + i);
        }
        tb.push(ns(started.elapsed()) as f64 / block as f64);
        at += block;
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    (ta[ta.len() / 2], tb[tb.len() / 2])
}

/// The ways in, each against what it replaced, on the cold requests.
fn parts(snapshot: &Snapshot, population: &Population, requests: &[GeneratedRequest]) {
    let rounds = 50;
    let block = (requests.len() / rounds).max(1);
    let sites: Vec<SiteId> = requests.iter().map(|r| snapshot.door_site(r.door).unwrap()).collect();
    let mut zones = Vec::new();
    for r in &population.records {
        if let Record::Site(site) = r {
            let i = site.id.0 as usize;
            if zones.len() <= i {
                zones.resize(i + 1, None);
            }
            let calendar = site
                .holiday_calendar
                .and_then(|c| snapshot.calendar_record(c))
                .map(|c| c.calendar);
            zones[i] = Some((site.time_zone.clone(), calendar));
        }
    }
    let n = requests.len();
    let (jiff, windows) = alternate(
        rounds,
        block,
        |i| {
            let (zone, calendar) = zones[sites[i % n].0 as usize].as_ref().unwrap();
            black_box(keyway_core::LocalMoment::new(
                requests[i % n].at,
                zone,
                calendar.as_ref(),
            ));
        },
        |i| {
            black_box(snapshot.local_moment(sites[i % n], requests[i % n].at));
        },
    );
    println!(
        "wall clock per call: LocalMoment::new (jiff, before) {jiff:.0} ns; offset windows (Snapshot::local_moment, now) {windows:.0} ns; {:.2}x",
        jiff / windows
    );
    let mut keys: Vec<Vec<u8>> = population
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Credential(c) => Some(index_key(c.kind, c.site, &c.secret)),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    let fst_map = fst::Map::from_iter(keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i as u64))).unwrap();
    let hashed: std::collections::HashMap<Vec<u8>, u64, limit::Fast> =
        keys.iter().enumerate().map(|(i, k)| (k.clone(), i as u64)).collect();
    drop(keys);
    let probes: Vec<Vec<u8>> = requests
        .iter()
        .zip(&sites)
        .map(|(r, site)| index_key(r.kind, *site, &r.secret))
        .collect();
    let (fst_ns, hash_ns) = alternate(
        rounds,
        block,
        |i| {
            black_box(fst_map.get(&probes[i % n]));
        },
        |i| {
            black_box(hashed.get(probes[i % n].as_slice()));
        },
    );
    println!(
        "exact match per call, cold keys: FST get (before) {fst_ns:.0} ns; hash map get (the kind of index decide uses now) {hash_ns:.0} ns; {:.2}x",
        fst_ns / hash_ns
    );
}

/// The core's index key of a credential: secret, kind, site.
fn index_key(kind: CredentialKind, site: SiteId, secret: &[u8]) -> Vec<u8> {
    let mut k = secret.to_vec();
    k.push(match kind {
        CredentialKind::Tag => 1,
        CredentialKind::DigitalKey => 2,
        CredentialKind::Pin => 3,
    });
    k.extend_from_slice(&site.0.to_be_bytes());
    k
}

/// Mean time per call over batches of 64 calls, no per-call timer.
fn batch_mean<'a>(snapshot: &Snapshot, requests: impl Iterator<Item = &'a GeneratedRequest>) -> (f64, Histogram<u64>) {
    let mut h = histogram();
    let all: Vec<&GeneratedRequest> = requests.collect();
    let started = Instant::now();
    for batch in all.chunks(64) {
        let t0 = Instant::now();
        for r in batch {
            black_box(decide_one(black_box(snapshot), r));
        }
        h.record((ns(t0.elapsed()) / batch.len() as u64).max(1)).unwrap();
    }
    (ns(started.elapsed()) as f64 / all.len().max(1) as f64, h)
}

/// Every figure the summary table needs.
#[derive(Debug, Default)]
struct Figures {
    cold_p99: u64,
    warm_p99: u64,
    build_median: f64,
    fst_median: f64,
    limit_cold: (u64, u64),
    limit_warm: (u64, u64),
    decide_cold: (u64, u64),
    decide_warm: (u64, u64),
    batch_cold: (f64, f64, f64),
    batch_warm: (f64, f64, f64),
    change_p99_same: u64,
    change_p99_cross: u64,
    change_p99_worst: u64,
    rss_per_credential: f64,
    heap_per_credential: f64,
    cedar_ratio_p50: f64,
    cedar_ratio_p99: f64,
    /// Cedar sliced against the limit on the same requests (p50, p99): the most any
    /// decision that reads the same rows could be faster than Cedar on this machine.
    cedar_limit_ratio: (f64, f64),
}

fn main() {
    let cfg = Config::from_env();
    let spec = PopulationSpec::scaled_down(cfg.divisor);
    println!(
        "# keyway decision benchmarks{}",
        if cfg.quick { " (quick mode)" } else { "" }
    );
    println!(
        "scale 1/{}: {} credentials, {} people, {} doors, {} groups",
        cfg.divisor, spec.credentials, spec.people, spec.doors, spec.groups
    );
    let mut figures = Figures::default();

    // 1. Memory: first, in a fresh process. The generator runs on a helper thread so its
    //    allocations live in another malloc arena, which is released when it is freed.
    println!("\n## memory");
    let rss_start = rss_bytes();
    let generated = std::thread::spawn(move || Population::generate(spec)).join().unwrap();
    let rss_generated = rss_bytes();
    let started = Instant::now();
    let snapshot = Snapshot::build(Revision(1), generated.records).unwrap();
    let first_build = started.elapsed();
    let credentials = snapshot.credential_count();
    let rss_built = rss_bytes();
    let heap = snapshot.heap_bytes();
    let rss_delta = rss_built.saturating_sub(rss_start);
    figures.rss_per_credential = rss_delta as f64 / credentials as f64;
    figures.heap_per_credential = heap as f64 / credentials as f64;
    println!(
        "VmRSS: start {:.1} MiB, population generated {:.1} MiB, snapshot built and records dropped {:.1} MiB",
        rss_start as f64 / 1048576.0,
        rss_generated as f64 / 1048576.0,
        rss_built as f64 / 1048576.0
    );
    println!(
        "VmRSS delta per credential (glibc, upper bound: freed generator memory stays in malloc's free lists; see `--bench memory`): {:.1} ({} B / {credentials} credentials); heap_bytes per credential: {:.1} ({heap} B); first build {first_build:.2?}",
        figures.rss_per_credential, rss_delta, figures.heap_per_credential
    );

    // 2. Build time.
    println!("\n## build");
    let population = Population::generate(spec);
    let mut builds = Vec::new();
    for _ in 0..cfg.build_runs {
        let records = population.records.clone();
        let started = Instant::now();
        let built = Snapshot::build(Revision(1), records).unwrap();
        builds.push(started.elapsed().as_secs_f64());
        drop(black_box(built));
    }
    builds.sort_by(f64::total_cmp);
    figures.build_median = builds[builds.len() / 2];
    println!(
        "Snapshot::build of {} credentials, {} runs: median {:.3} s, min {:.3} s, max {:.3} s",
        spec.credentials,
        builds.len(),
        figures.build_median,
        builds[0],
        builds[builds.len() - 1]
    );
    let mut fsts: Vec<f64> = (0..cfg.build_runs).map(|_| sort_and_fst(&population.records)).collect();
    fsts.sort_by(f64::total_cmp);
    figures.fst_median = fsts[fsts.len() / 2];
    println!(
        "reference: sort the same keys + build their FST alone, {} runs: median {:.3} s; build / reference {:.2}x",
        fsts.len(),
        figures.fst_median,
        figures.build_median / figures.fst_median
    );

    // 3. Latency on one thread.
    println!("\n## decide latency, one thread");
    let overhead = timer_overhead();
    let cold = population.requests(cfg.cold_requests, 11);
    let second_stream = population.requests(cfg.cold_requests, 12);
    let warm = population.requests(cfg.warm_set, 13);
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    for r in &cold {
        *reasons.entry(decide_one(&snapshot, r).reason.code()).or_default() += 1;
    }
    println!("cold request mix: {reasons:?}");
    let cold_h = time_keyway(&snapshot, cold.iter(), overhead);
    println!(
        "cold ({} requests uniform over the population): {}",
        cold.len(),
        summary(&cold_h)
    );
    let warm_h = time_keyway(&snapshot, warm.iter().cycle().take(cfg.warm_calls), overhead);
    println!(
        "warm ({} requests cycled, {} calls): {}",
        warm.len(),
        cfg.warm_calls,
        summary(&warm_h)
    );
    let (cold_mean, cold_batches) = batch_mean(&snapshot, cold.iter());
    let (warm_mean, warm_batches) = batch_mean(&snapshot, warm.iter().cycle().take(cfg.warm_calls));
    println!(
        "batch method (64 calls per timed batch): cold mean {cold_mean:.0} ns (batch means {}); warm mean {warm_mean:.0} ns (batch means {})",
        summary(&cold_batches),
        summary(&warm_batches)
    );
    figures.cold_p99 = cold_h.value_at_quantile(0.99);
    figures.warm_p99 = warm_h.value_at_quantile(0.99);

    // 3b. The limit, on the same requests, taking turns with decide so that both see the
    //     same machine state.
    println!("\n## the limit (hash map lookup + credential, person and door rows), same requests");
    let limit = limit::Limit::new(&population.records);
    let cold_refs: Vec<&GeneratedRequest> = cold.iter().collect();
    let warm_refs: Vec<&GeneratedRequest> = warm.iter().cycle().take(cfg.warm_calls).collect();
    let cold_turns = take_turns(&limit, &snapshot, &cold_refs, overhead, false);
    let warm_turns = take_turns(&limit, &snapshot, &warm_refs, overhead, true);
    let (limit_cold, cold_again) = (&cold_turns.limit, &cold_turns.decide);
    let (limit_warm, warm_again) = (&warm_turns.limit, &warm_turns.decide);
    println!("limit cold: {}", summary(limit_cold));
    println!("decide cold (taking turns with the limit): {}", summary(cold_again));
    println!("limit warm: {}", summary(limit_warm));
    println!("decide warm (taking turns with the limit): {}", summary(warm_again));
    let q = |h: &Histogram<u64>| (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
    figures.limit_cold = q(limit_cold);
    figures.limit_warm = q(limit_warm);
    figures.decide_cold = q(cold_again);
    figures.decide_warm = q(warm_again);
    let (limit_cold_mean, decide_cold_mean, batch_cold_mean) = cold_turns.batch_means;
    let (limit_warm_mean, decide_warm_mean, batch_warm_mean) = warm_turns.batch_means;
    figures.batch_cold = (limit_cold_mean, decide_cold_mean, batch_cold_mean);
    figures.batch_warm = (limit_warm_mean, decide_warm_mean, batch_warm_mean);
    println!("| per call | limit | decide | decide / limit |");
    println!("|---|---|---|---|");
    for (name, l, d) in [
        ("cold p50", figures.limit_cold.0, figures.decide_cold.0),
        ("cold p99", figures.limit_cold.1, figures.decide_cold.1),
        ("warm p50", figures.limit_warm.0, figures.decide_warm.0),
        ("warm p99", figures.limit_warm.1, figures.decide_warm.1),
    ] {
        println!(
            "| {name} | {} | {} | {:.2}x |",
            fmt_ns(l),
            fmt_ns(d),
            d as f64 / l as f64
        );
    }
    println!(
        "| mean in batches of 64 | limit | decide in a loop | decide_batch | loop / limit | decide_batch / limit |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, (l, d, b)) in [("cold", figures.batch_cold), ("warm", figures.batch_warm)] {
        println!(
            "| {name} | {l:.0} ns | {d:.0} ns | {b:.0} ns | {:.2}x | {:.2}x |",
            d / l,
            b / l
        );
    }
    drop(limit);
    println!("\n## the ways in, each against what it replaced (alternating blocks, medians)");
    parts(&snapshot, &population, &cold);

    // 4. Throughput on one and two threads.
    println!("\n## throughput");
    let cell = SnapshotCell::new(snapshot.clone());
    let streams = [&cold, &second_stream];
    let one = throughput(&cell, &streams[..1]);
    let two = throughput(&cell, &streams);
    println!(
        "cold requests, load() per decision: 1 thread {:.2} M decisions/s; 2 threads {:.2} M decisions/s total ({:.2}x)",
        one / 1e6,
        two / 1e6,
        two / one
    );
    let warm_streams: Vec<GeneratedRequest> = warm.iter().cycle().take(cfg.warm_calls).cloned().collect();
    let warm_refs = [&warm_streams, &warm_streams];
    let one_w = throughput(&cell, &warm_refs[..1]);
    let two_w = throughput(&cell, &warm_refs);
    println!(
        "warm requests: 1 thread {:.2} M decisions/s; 2 threads {:.2} M decisions/s total ({:.2}x)",
        one_w / 1e6,
        two_w / 1e6,
        two_w / one_w
    );
    drop(cell);

    // 5. Change to visible decision.
    println!("\n## change -> decision that sees it");
    changes(&cfg, &snapshot, &population, &cold, &mut figures);
    drop((snapshot, population, cold, second_stream, warm, warm_streams));

    // 6. Peers.
    println!("\n## peers");
    peers(&cfg, overhead, &mut figures);

    // Summary.
    println!("\n## targets");
    println!("| target | measured |");
    println!("|---|---|");
    println!(
        "| decide p99 <= 1 us | cold {} / warm {} |",
        fmt_ns(figures.cold_p99),
        fmt_ns(figures.warm_p99)
    );
    println!(
        "| >= 50x faster than Cedar | sliced: {:.1}x at p50, {:.1}x at p99 (the limit: {:.1}x, {:.1}x) |",
        figures.cedar_ratio_p50, figures.cedar_ratio_p99, figures.cedar_limit_ratio.0, figures.cedar_limit_ratio.1
    );
    println!(
        "| decide within 2x of the limit (p50, p99) | cold {:.2}x, {:.2}x / warm {:.2}x, {:.2}x |",
        figures.decide_cold.0 as f64 / figures.limit_cold.0 as f64,
        figures.decide_cold.1 as f64 / figures.limit_cold.1 as f64,
        figures.decide_warm.0 as f64 / figures.limit_warm.0 as f64,
        figures.decide_warm.1 as f64 / figures.limit_warm.1 as f64
    );
    println!(
        "| decide_batch mean <= 1.2x the limit | cold {:.2}x / warm {:.2}x |",
        figures.batch_cold.2 / figures.batch_cold.0,
        figures.batch_warm.2 / figures.batch_warm.0
    );
    println!(
        "| build <= 2 s and <= 1.5x sort + FST | {:.3} s, {:.2}x of {:.3} s |",
        figures.build_median,
        figures.build_median / figures.fst_median,
        figures.fst_median
    );
    println!(
        "| change visible <= 1 ms | p99 same thread {}, other thread {}, overlay at threshold {} |",
        fmt_ns(figures.change_p99_same),
        fmt_ns(figures.change_p99_cross),
        fmt_ns(figures.change_p99_worst)
    );
    println!(
        "| <= 200 resident B/credential | glibc VmRSS delta {:.1} B (upper bound; `--bench memory` is exact), heap_bytes {:.1} B |",
        figures.rss_per_credential, figures.heap_per_credential
    );
}

/// Decisions per second over `streams`, one thread each, all starting together.
fn throughput(cell: &SnapshotCell, streams: &[&Vec<GeneratedRequest>]) -> f64 {
    let barrier = Barrier::new(streams.len());
    let elapsed: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .iter()
            .map(|stream| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    for r in stream.iter() {
                        let snapshot = cell.load();
                        black_box(decide_one(&snapshot, r));
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = streams.iter().map(|s| s.len()).sum();
    let wall = elapsed.iter().max().copied().unwrap_or_default();
    total as f64 / wall.as_secs_f64()
}

/// One change and the request whose decision must reflect it.
struct Probe {
    change: Change,
    request: GeneratedRequest,
    /// True when the decision shows the change.
    sees: fn(&Decision) -> bool,
}

fn blocked(d: &Decision) -> bool {
    d.reason == Reason::PersonBlocked
}

fn known(d: &Decision) -> bool {
    d.reason != Reason::UnknownCredential
}

/// `count` BlockPerson probes on distinct people, each with a request that was granted.
fn block_probes(snapshot: &Snapshot, requests: &[GeneratedRequest], skip: usize, count: usize) -> Vec<Probe> {
    let mut people = std::collections::HashSet::new();
    requests
        .iter()
        .filter_map(|r| {
            let d = decide_one(snapshot, r);
            matches!(d.reason, Reason::Granted { .. }).then_some((r, d.person?))
        })
        .filter(|(_, p)| people.insert(*p))
        .skip(skip)
        .take(count)
        .map(|(r, p)| Probe {
            change: Change::BlockPerson(p),
            request: r.clone(),
            sees: blocked,
        })
        .collect()
}

/// `count` PutCredential probes: a new tag for the owner of a granted request, presented
/// at the same door.
fn new_credential_probes(
    snapshot: &Snapshot,
    requests: &[GeneratedRequest],
    credential_site: &[u32],
    first_id: u32,
    skip: usize,
    count: usize,
) -> Vec<Probe> {
    requests
        .iter()
        .filter_map(|r| {
            let d = decide_one(snapshot, r);
            matches!(d.reason, Reason::Granted { .. }).then_some((r, d.person?, d.credential?))
        })
        .skip(skip)
        .take(count)
        .enumerate()
        .map(|(i, (r, person, credential))| {
            let id = first_id + i as u32;
            let mut secret = vec![0xa5, 0x5a, 0x42];
            secret.extend_from_slice(&id.to_be_bytes());
            let record = CredentialRecord {
                id: CredentialId(id),
                site: SiteId(credential_site[credential.0 as usize]),
                kind: CredentialKind::Tag,
                secret: secret.clone(),
                owner: Some(PersonId(person.0)),
                valid_from: None,
                valid_until: None,
                offline_access: false,
                revoked: false,
            };
            Probe {
                change: Change::PutCredential(record),
                request: GeneratedRequest {
                    door: r.door,
                    kind: CredentialKind::Tag,
                    secret,
                    at: r.at,
                },
                sees: known,
            }
        })
        .collect()
}

/// Apply each probe's change and decide its request on the same thread.
fn same_thread(cell: &SnapshotCell, probes: &[Probe]) -> Histogram<u64> {
    let mut h = histogram();
    for probe in probes {
        let change = probe.change.clone();
        let revision = Revision(cell.load().revision().get() + 1);
        let t0 = Instant::now();
        cell.apply(revision, change).unwrap();
        let d = decide_one(&cell.load(), &probe.request);
        let t1 = Instant::now();
        assert!((probe.sees)(&d) && d.revision == revision, "{d:?}");
        h.record(ns(t1 - t0).max(1)).unwrap();
    }
    h
}

/// Apply each probe's change on this thread while another thread spins on `load()`
/// until its decision of the probe's request shows the change.
fn cross_thread(cell: &SnapshotCell, probes: &[Probe]) -> Histogram<u64> {
    let base = cell.load().revision().get();
    let ready = AtomicUsize::new(usize::MAX);
    let done = AtomicUsize::new(0);
    let seen = Mutex::new(Vec::with_capacity(probes.len()));
    let mut applied = Vec::with_capacity(probes.len());
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, probe) in probes.iter().enumerate() {
                let target = Revision(base + 1 + i as u64);
                ready.store(i, Ordering::Release);
                let at = loop {
                    let snapshot = cell.load();
                    if snapshot.revision() >= target {
                        let d = decide_one(&snapshot, &probe.request);
                        let at = Instant::now();
                        assert!((probe.sees)(&d), "{d:?}");
                        break at;
                    }
                    drop(snapshot);
                    std::hint::spin_loop();
                };
                seen.lock().unwrap().push(at);
                done.store(i + 1, Ordering::Release);
            }
        });
        for (i, probe) in probes.iter().enumerate() {
            let change = probe.change.clone();
            while ready.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            let t0 = Instant::now();
            cell.apply(Revision(base + 1 + i as u64), change).unwrap();
            applied.push(t0);
            while done.load(Ordering::Acquire) != i + 1 {
                std::hint::spin_loop();
            }
        }
    });
    let mut h = histogram();
    for (t0, t1) in applied.iter().zip(seen.into_inner().unwrap()) {
        h.record(ns(t1.saturating_duration_since(*t0)).max(1)).unwrap();
    }
    h
}

fn changes(
    cfg: &Config,
    snapshot: &Snapshot,
    population: &Population,
    requests: &[GeneratedRequest],
    figures: &mut Figures,
) {
    let n = cfg.changes;
    let mut credential_site = Vec::new();
    for r in &population.records {
        if let Record::Credential(c) = r {
            let i = c.id.0 as usize;
            if credential_site.len() <= i {
                credential_site.resize(i + 1, 0);
            }
            credential_site[i] = c.site.0;
        }
    }
    let first_new = population.spec.credentials + 1;

    // Fresh snapshot, empty overlay.
    let cell = SnapshotCell::new(snapshot.clone());
    let h = same_thread(&cell, &block_probes(snapshot, requests, 0, n));
    println!("BlockPerson, same thread, overlay 0: {}", summary(&h));
    figures.change_p99_same = h.value_at_quantile(0.99);
    let h = cross_thread(&cell, &block_probes(snapshot, requests, n, n));
    println!(
        "BlockPerson, other thread spinning on load(), overlay 0: {}",
        summary(&h)
    );
    figures.change_p99_cross = h.value_at_quantile(0.99);
    let fresh = new_credential_probes(snapshot, requests, &credential_site, first_new, 0, n);
    let h = same_thread(&cell, &fresh);
    println!(
        "PutCredential (new tag), same thread, overlay 0 -> {}: {}",
        cell.load().overlay_len(),
        summary(&h)
    );
    drop(cell);

    // Overlay grown to the compaction threshold with new credentials.
    let cell = SnapshotCell::new(snapshot.clone());
    let grow = new_credential_probes(
        snapshot,
        requests,
        &credential_site,
        first_new + 10_000_000,
        n,
        cfg.overlay_rows,
    );
    let started = Instant::now();
    for (i, probe) in grow.iter().enumerate() {
        cell.apply(Revision(2 + i as u64), probe.change.clone()).unwrap();
    }
    println!(
        "overlay grown to {} rows ({} PutCredential in {:.2?})",
        cell.load().overlay_len(),
        grow.len(),
        started.elapsed()
    );
    let h = same_thread(&cell, &block_probes(snapshot, requests, 2 * n, n));
    println!(
        "BlockPerson, same thread, overlay {}: {}",
        cell.load().overlay_len(),
        summary(&h)
    );
    let h_cross = cross_thread(&cell, &block_probes(snapshot, requests, 3 * n, n));
    println!(
        "BlockPerson, other thread, overlay {}: {}",
        cell.load().overlay_len(),
        summary(&h_cross)
    );
    let before = cell.load().overlay_len();
    let worst = new_credential_probes(
        snapshot,
        requests,
        &credential_site,
        first_new + 20_000_000,
        n + cfg.overlay_rows,
        n,
    );
    let h_put = same_thread(&cell, &worst);
    println!(
        "PutCredential (new tag), same thread, overlay {before} -> {}: {}",
        cell.load().overlay_len(),
        summary(&h_put)
    );
    let worst_cross = new_credential_probes(
        snapshot,
        requests,
        &credential_site,
        first_new + 30_000_000,
        2 * n + cfg.overlay_rows,
        n,
    );
    let before = cell.load().overlay_len();
    let h_put_cross = cross_thread(&cell, &worst_cross);
    println!(
        "PutCredential (new tag), other thread, overlay {before} -> {}: {}",
        cell.load().overlay_len(),
        summary(&h_put_cross)
    );
    figures.change_p99_worst = [h, h_cross, h_put, h_put_cross]
        .iter()
        .map(|h| h.value_at_quantile(0.99))
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    let compacted = cell.compact().unwrap();
    println!(
        "SnapshotCell::compact at overlay {before}+{n}: {:.2?} (published {compacted:?})",
        started.elapsed()
    );
}

/// Latencies and agreement of one peer against Keyway's decisions.
fn report_peer(
    name: &str,
    requests: &[GeneratedRequest],
    expected: &[Decision],
    keyway: &Histogram<u64>,
    mut peer: impl FnMut(&GeneratedRequest) -> bool,
) -> Histogram<u64> {
    // Untimed pass: agreement.
    let mut mismatches = Vec::new();
    for (r, d) in requests.iter().zip(expected) {
        if peer(r) != (d.effect == Effect::Allow) {
            mismatches.push((r, d));
        }
    }
    let agree = requests.len() - mismatches.len();
    let mut h = histogram();
    for r in requests {
        let t0 = Instant::now();
        let allow = black_box(peer(black_box(r)));
        let t1 = Instant::now();
        let _ = allow;
        h.record(ns(t1 - t0).max(1)).unwrap();
    }
    println!(
        "{name}: {} ; agreement with keyway {agree}/{} ({:.3}%) ; ratio vs keyway p50 {:.1}x, p99 {:.1}x",
        summary(&h),
        requests.len(),
        100.0 * agree as f64 / requests.len().max(1) as f64,
        h.value_at_quantile(0.5) as f64 / keyway.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64 / keyway.value_at_quantile(0.99) as f64,
    );
    for (r, d) in mismatches.iter().take(5) {
        println!(
            "  mismatch: {} {:?} at {}: keyway {:?} {}",
            r.door, r.kind, r.at, d.effect, d.reason
        );
    }
    assert!(
        mismatches.is_empty(),
        "{name} disagrees with keyway on {} requests",
        mismatches.len()
    );
    h
}

fn peers(cfg: &Config, overhead: u64, figures: &mut Figures) {
    // Cedar's scale.
    let spec = PopulationSpec::scaled_down(cfg.cedar_divisor);
    println!(
        "### Cedar scale 1/{}: {} credentials, {} people, {} doors, {} groups",
        cfg.cedar_divisor, spec.credentials, spec.people, spec.doors, spec.groups
    );
    let population = Population::generate(spec);
    let requests = population.requests(cfg.peer_requests, 21);
    let snapshot = Snapshot::build(Revision(1), population.records.iter().cloned()).unwrap();
    let expected: Vec<Decision> = requests.iter().map(|r| decide_one(&snapshot, r)).collect();
    let allowed = expected.iter().filter(|d| d.effect == Effect::Allow).count();
    println!("{} requests, {allowed} allowed by keyway", requests.len());
    let keyway = time_keyway(&snapshot, requests.iter(), overhead);
    println!("keyway (same requests, per call minus timer): {}", summary(&keyway));
    let limit = limit::Limit::new(&population.records);
    let limit_h = time_limit(&limit, requests.iter(), overhead);
    println!(
        "limit (same requests, per call minus timer): {} ; keyway / limit p50 {:.2}x, p99 {:.2}x",
        summary(&limit_h),
        keyway.value_at_quantile(0.5) as f64 / limit_h.value_at_quantile(0.5) as f64,
        keyway.value_at_quantile(0.99) as f64 / limit_h.value_at_quantile(0.99) as f64
    );
    drop(limit);
    let started = Instant::now();
    let cedar = cedar_peer::CedarPeer::new(&population.records);
    println!(
        "cedar loaded in {:.2?}: {} entities ({:.2} s), {} policies ({:.2} s)",
        started.elapsed(),
        cedar.entity_count,
        cedar.entities_seconds,
        cedar.policy_count,
        cedar.policies_seconds
    );
    let sliced = report_peer("cedar sliced (whole path)", &requests, &expected, &keyway, |r| {
        cedar.decide(r, true)
    });
    figures.cedar_ratio_p50 = sliced.value_at_quantile(0.5) as f64 / keyway.value_at_quantile(0.5) as f64;
    figures.cedar_ratio_p99 = sliced.value_at_quantile(0.99) as f64 / keyway.value_at_quantile(0.99) as f64;
    figures.cedar_limit_ratio = (
        sliced.value_at_quantile(0.5) as f64 / limit_h.value_at_quantile(0.5) as f64,
        sliced.value_at_quantile(0.99) as f64 / limit_h.value_at_quantile(0.99) as f64,
    );
    println!(
        "cedar sliced / limit: p50 {:.1}x, p99 {:.1}x (the ceiling of any ratio to Cedar for a decision reading these rows one call at a time)",
        figures.cedar_limit_ratio.0, figures.cedar_limit_ratio.1
    );
    // is_authorized alone, the adapter's work (lookup, zone, context) done beforehand.
    let prepared: Vec<cedar_peer::Prepared> = requests
        .iter()
        .map(|r| cedar.prepare(r.door.0, r.kind, &r.secret, r.at))
        .collect();
    let mut h = histogram();
    for p in &prepared {
        let t0 = Instant::now();
        black_box(cedar.authorize(black_box(p), true));
        h.record(ns(t0.elapsed()).max(1)).unwrap();
    }
    println!(
        "cedar sliced, is_authorized alone: {} ; ratio vs keyway p50 {:.1}x, p99 {:.1}x",
        summary(&h),
        h.value_at_quantile(0.5) as f64 / keyway.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64 / keyway.value_at_quantile(0.99) as f64
    );
    let n = cfg.cedar_global_requests.min(requests.len());
    let keyway_n = time_keyway(&snapshot, requests[..n].iter(), overhead);
    report_peer(
        &format!("cedar global ({} policies, first {n} requests)", cedar.policy_count),
        &requests[..n],
        &expected[..n],
        &keyway_n,
        |r| cedar.decide(r, false),
    );
    drop((cedar, snapshot, population, prepared));

    // casbin's scale.
    let spec = PopulationSpec::scaled_down(cfg.casbin_divisor);
    println!(
        "### casbin scale 1/{}: {} credentials, {} people, {} doors, {} groups",
        cfg.casbin_divisor, spec.credentials, spec.people, spec.doors, spec.groups
    );
    let population = Population::generate(spec);
    let requests = population.requests(cfg.casbin_requests, 31);
    let snapshot = Snapshot::build(Revision(1), population.records.iter().cloned()).unwrap();
    let expected: Vec<Decision> = requests.iter().map(|r| decide_one(&snapshot, r)).collect();
    let keyway = time_keyway(&snapshot, requests.iter(), overhead);
    println!("keyway (same requests): {}", summary(&keyway));
    let casbin = casbin_peer::CasbinPeer::new(&population.records);
    println!(
        "casbin loaded in {:.2} s: {} p lines, {} g lines",
        casbin.build_seconds, casbin.policy_count, casbin.grouping_count
    );
    report_peer("casbin (whole path)", &requests, &expected, &keyway, |r| {
        casbin.decide(r)
    });
}
