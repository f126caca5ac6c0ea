//! Criterion benchmarks of the decision path, on the `keyway-sim` population at gateway
//! scale (1M credentials, 1M people, 100k doors, 10k groups):
//! - `decide/cold`: requests drawn uniformly over the whole population, cycled through a
//!   1M-request stream, so each call touches memory no recent call touched;
//! - `decide/warm`: a working set of 10k requests cycled;
//! - `decide_batch/cold`, `decide_batch/warm`: the same requests through `decide_batch`,
//!   64 per call (time per batch; divide by 64);
//! - `wallclock/jiff` and `wallclock/offset_windows`: a site's wall clock at the cold
//!   requests' instants, by `LocalMoment::new` (a time-zone conversion per call, what
//!   `decide` did before) and by `Snapshot::local_moment` (the offset windows `decide`
//!   uses now);
//! - `index/fst` and `index/hashmap`: the exact match of the cold requests' keys in an
//!   FST of every credential key (what `decide` did before) and in a std `HashMap` of the
//!   same keys (the kind of index `decide` uses now);
//! - `build/snapshot`: a full `Snapshot::build` (10 samples), and `build/sort_fst`:
//!   sorting the same keys and building their FST alone.
//!
//! The latency histograms, throughput, change visibility, memory and peer comparisons are
//! in the `report` bench. Under `cargo test --benches` (criterion's test mode, each
//! benchmark run once), with `--test`, or with `KEYWAY_BENCH_QUICK=1`, the population is
//! 1/1000 of gateway scale so the run takes seconds.

#![expect(clippy::unwrap_used, reason = "benchmarks fail loudly")]

use criterion::{BatchSize, Criterion};
use keyway_core::{
    CredentialKind, DecisionRequest, LocalMoment, Presented, Record, Revision, Snapshot, decide, decide_batch,
};
use keyway_sim::{GeneratedRequest, Population, PopulationSpec};
use std::hint::black_box;
use std::time::Duration;

fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    std::env::var("KEYWAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
        || args.iter().any(|a| a == "--test")
        || !args.iter().any(|a| a == "--bench")
}

fn cycle<'a>(requests: &'a [GeneratedRequest], next: &mut usize) -> &'a GeneratedRequest {
    let r = &requests[*next];
    *next = if *next + 1 == requests.len() { 0 } else { *next + 1 };
    r
}

fn bench_decide(c: &mut Criterion, population: &Population, snapshot: &Snapshot, quick: bool) {
    let cold = population.requests(if quick { 10_000 } else { 1_000_000 }, 11);
    let warm = population.requests(if quick { 1_000 } else { 10_000 }, 13);
    let mut group = c.benchmark_group("decide");
    for (name, requests) in [("cold", &cold), ("warm", &warm)] {
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let r = cycle(requests, &mut next);
                decide(
                    black_box(snapshot),
                    r.door,
                    Presented {
                        kind: r.kind,
                        secret: &r.secret,
                    },
                    r.at,
                )
            });
        });
    }
    group.finish();
}

fn requests_of(requests: &[GeneratedRequest]) -> Vec<DecisionRequest<'_>> {
    requests
        .iter()
        .map(|r| DecisionRequest {
            door: r.door,
            presented: Presented {
                kind: r.kind,
                secret: &r.secret,
            },
            at: r.at,
        })
        .collect()
}

fn bench_batch(c: &mut Criterion, population: &Population, snapshot: &Snapshot, quick: bool) {
    let cold = population.requests(if quick { 10_048 } else { 1_000_000 }, 11);
    let warm = population.requests(if quick { 1_024 } else { 10_048 }, 13);
    let mut group = c.benchmark_group("decide_batch");
    for (name, requests) in [("cold", &cold), ("warm", &warm)] {
        let requests = requests_of(requests);
        let batches: Vec<&[DecisionRequest<'_>]> = requests.chunks_exact(64).collect();
        let mut next = 0;
        let mut out = Vec::with_capacity(64);
        group.bench_function(name, |b| {
            b.iter(|| {
                let batch = batches[next];
                next = if next + 1 == batches.len() { 0 } else { next + 1 };
                out.clear();
                decide_batch(black_box(snapshot), batch, &mut out);
                black_box(&out);
            });
        });
    }
    group.finish();
}

fn key_of(kind: CredentialKind, site: u32, secret: &[u8]) -> Vec<u8> {
    let mut k = secret.to_vec();
    k.push(match kind {
        CredentialKind::Tag => 1,
        CredentialKind::DigitalKey => 2,
        CredentialKind::Pin => 3,
    });
    k.extend_from_slice(&site.to_be_bytes());
    k
}

fn credential_keys(population: &Population) -> Vec<Vec<u8>> {
    population
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Credential(c) => Some(key_of(c.kind, c.site.0, &c.secret)),
            _ => None,
        })
        .collect()
}

fn bench_parts(c: &mut Criterion, population: &Population, snapshot: &Snapshot, quick: bool) {
    let cold = population.requests(if quick { 10_000 } else { 1_000_000 }, 11);
    let mut group = c.benchmark_group("wallclock");
    let sites: Vec<_> = cold.iter().map(|r| snapshot.door_site(r.door).unwrap()).collect();
    // Each site's zone and calendar, in a vector indexed by site id (the sim's ids are
    // dense), as the snapshot's site table holds them.
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
    let mut next = 0;
    group.bench_function("jiff", |b| {
        b.iter(|| {
            let site = sites[next];
            let r = cycle(&cold, &mut next);
            let (zone, calendar) = zones[site.0 as usize].as_ref().unwrap();
            black_box(LocalMoment::new(r.at, zone, calendar.as_ref()))
        });
    });
    let mut next = 0;
    group.bench_function("offset_windows", |b| {
        b.iter(|| {
            let site = sites[next];
            let r = cycle(&cold, &mut next);
            black_box(snapshot.local_moment(site, r.at))
        });
    });
    group.finish();

    let mut keys = credential_keys(population);
    keys.sort_unstable();
    let fst_map = fst::Map::from_iter(keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i as u64))).unwrap();
    let hash: std::collections::HashMap<Vec<u8>, u64> =
        keys.iter().enumerate().map(|(i, k)| (k.clone(), i as u64)).collect();
    let probes: Vec<Vec<u8>> = cold
        .iter()
        .zip(&sites)
        .map(|(r, site)| key_of(r.kind, site.0, &r.secret))
        .collect();
    let mut group = c.benchmark_group("index");
    let mut next = 0;
    group.bench_function("fst", |b| {
        b.iter(|| {
            let k = &probes[next];
            next = if next + 1 == probes.len() { 0 } else { next + 1 };
            black_box(fst_map.get(k))
        });
    });
    let mut next = 0;
    group.bench_function("hashmap", |b| {
        b.iter(|| {
            let k = &probes[next];
            next = if next + 1 == probes.len() { 0 } else { next + 1 };
            black_box(hash.get(k.as_slice()))
        });
    });
    group.finish();
}

fn bench_build(c: &mut Criterion, population: &Population) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("snapshot", |b| {
        b.iter_batched(
            || population.records.clone(),
            |records| Snapshot::build(Revision(1), records).unwrap(),
            BatchSize::PerIteration,
        );
    });
    let keys = credential_keys(population);
    group.bench_function("sort_fst", |b| {
        b.iter_batched(
            || keys.clone(),
            |mut keys| {
                keys.sort_unstable();
                fst::Map::from_iter(keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i as u64))).unwrap()
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn main() {
    let quick = quick();
    let spec = PopulationSpec::scaled_down(if quick { 1000 } else { 1 });
    let population = Population::generate(spec);
    let snapshot = Snapshot::build(Revision(1), population.records.iter().cloned()).unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench_decide(&mut c, &population, &snapshot, quick);
    bench_batch(&mut c, &population, &snapshot, quick);
    bench_parts(&mut c, &population, &snapshot, quick);
    bench_build(&mut c, &population);
    c.final_summary();
}
