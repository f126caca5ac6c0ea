//! Criterion benchmarks of the decision path, on the `keyway-sim` population at gateway
//! scale (1M credentials, 1M people, 100k doors, 10k groups):
//! - `decide/cold`: requests drawn uniformly over the whole population, cycled through a
//!   1M-request stream, so each call touches memory no recent call touched;
//! - `decide/warm`: a working set of 10k requests cycled;
//! - `build/snapshot`: a full `Snapshot::build` (10 samples).
//!
//! The latency histograms, throughput, change visibility, memory and peer comparisons are
//! in the `report` bench. Under `cargo test --benches` (criterion's test mode, each
//! benchmark run once), with `--test`, or with `KEYWAY_BENCH_QUICK=1`, the population is
//! 1/1000 of gateway scale so the run takes seconds.

#![expect(clippy::unwrap_used, reason = "benchmarks fail loudly")]

use criterion::{BatchSize, Criterion};
use keyway_core::{Presented, Revision, Snapshot, decide};
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
    group.finish();
}

fn main() {
    let quick = quick();
    let spec = PopulationSpec::scaled_down(if quick { 1000 } else { 1 });
    let population = Population::generate(spec);
    let snapshot = Snapshot::build(Revision(1), population.records.iter().cloned()).unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench_decide(&mut c, &population, &snapshot, quick);
    bench_build(&mut c, &population);
    c.final_summary();
}
