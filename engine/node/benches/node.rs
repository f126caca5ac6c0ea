//! `Node::decide` next to `keyway_core::decide` on the same snapshot and requests, so the
//! cost of the pipeline (door-rule lookup, entry queued) is visible:
//! - `pipeline/core`: the core's `decide` alone;
//! - `pipeline/node_unlogged`: the node's pipeline without the entry (doors have no rule);
//! - `pipeline/node_logged`: the whole pipeline, the entry queued for the batched writer.
//!
//! The population is `keyway-sim`'s at a tenth of gateway scale (100k credentials), read
//! into a node on a temporary SQLite database through a bulk import. Under
//! `KEYWAY_BENCH_QUICK=1` (the test script) or criterion's test mode it is 1/1000.

#![expect(clippy::unwrap_used, reason = "benchmarks fail loudly")]

use criterion::Criterion;
use keyway_core::{Presented, decide};
use keyway_node::{DecisionRequest, Direction, Node, NodeConfig, Source};
use keyway_sim::{Population, PopulationSpec};
use std::hint::black_box;
use std::path::PathBuf;

fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    std::env::var("KEYWAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
        || args.iter().any(|a| a == "--test")
        || !args.iter().any(|a| a == "--bench")
}

fn main() {
    let quick = quick();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let population = Population::generate(PopulationSpec::scaled_down(if quick { 1000 } else { 10 }));
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(format!("sqlite://{}", dir.path().join("keyway.db").display()));
    config.bundle_dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default"));
    let node: Node = runtime.block_on(async {
        let node = Node::open(config).await.unwrap();
        node.store()
            .model()
            .import("bench", population.records.clone())
            .await
            .unwrap();
        node
    });
    let requests = population.requests(if quick { 1_000 } else { 100_000 }, 17);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("pipeline");
    let snapshot = node.snapshot().load_full();
    let mut next = 0usize;
    let mut pick = || {
        let r = &requests[next % requests.len()];
        next += 1;
        r
    };
    group.bench_function("core", |b| {
        b.iter(|| {
            let r = pick();
            decide(
                black_box(&snapshot),
                r.door,
                Presented {
                    kind: r.kind,
                    secret: &r.secret,
                },
                r.at,
            )
        });
    });
    let mut pick = {
        let mut next = 0usize;
        move || {
            let r = &requests[next % requests.len()];
            next += 1;
            r.clone()
        }
    };
    group.bench_function("node_unlogged", |b| {
        b.iter_batched(
            &mut pick,
            |r| {
                node.decide_unlogged(
                    black_box(&snapshot),
                    &DecisionRequest {
                        door: r.door,
                        presented: Presented {
                            kind: r.kind,
                            secret: &r.secret,
                        },
                        at: r.at,
                        direction: Direction::Unknown,
                        source: Source::DryRun,
                    },
                )
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.bench_function("node_logged", |b| {
        b.to_async(&runtime).iter_batched(
            &mut pick,
            |r| {
                let node = node.clone();
                async move {
                    node.decide(&DecisionRequest {
                        door: r.door,
                        presented: Presented {
                            kind: r.kind,
                            secret: &r.secret,
                        },
                        at: r.at,
                        direction: Direction::Unknown,
                        source: Source::Api,
                    })
                    .await
                }
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
    c.final_summary();
    runtime.block_on(node.close());
}
