//! Heap allocations per decision: `keyway_core::decide` next to the node's pipeline on a
//! door without a rule, counted by dhat's allocator over the same requests. The
//! pipeline's promise is that a door with no rule adds no allocation to the core's
//! decision; this binary prints the counts and fails when the pipeline allocates more.
//!
//! A separate binary from `node.rs` because a counting allocator slows every allocation
//! and would distort the latency figures there.

#![expect(clippy::unwrap_used, reason = "benchmarks fail loudly")]

use keyway_core::{Presented, decide};
use keyway_node::{DecisionRequest, Direction, Node, NodeConfig, Source};
use keyway_sim::{Population, PopulationSpec};
use std::hint::black_box;
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let population = Population::generate(PopulationSpec::scaled_down(1000));
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
    let requests = population.requests(10_000, 17);
    let snapshot = node.snapshot().load_full();
    let request = |i: usize| {
        let r = &requests[i];
        DecisionRequest {
            door: r.door,
            presented: Presented {
                kind: r.kind,
                secret: &r.secret,
            },
            at: r.at,
            direction: Direction::Unknown,
            source: Source::Api,
        }
    };
    // Only the decisions are counted: the profiler starts after the set-up. The node's
    // background tasks (the follower, the entries writer) allocate now and then on other
    // threads and dhat counts every thread, so each side keeps its least of several rounds.
    let profiler = dhat::Profiler::builder().testing().build();
    // The counter must see what it is meant to see, or a zero below would prove nothing.
    let before = blocks();
    black_box(Vec::<u8>::with_capacity(16));
    assert_eq!(blocks() - before, 1, "the allocation counter missed an allocation");
    let rounds = 5;
    let per_round = requests.len() / rounds;
    let (mut core, mut pipeline) = (u64::MAX, u64::MAX);
    for round in 0..rounds {
        let range = round * per_round..(round + 1) * per_round;
        let before = blocks();
        for i in range.clone() {
            let r = request(i);
            black_box(decide(&snapshot, r.door, r.presented, r.at));
        }
        core = core.min(blocks() - before);
        let before = blocks();
        for i in range {
            black_box(node.decide_unlogged(&snapshot, &request(i)));
        }
        pipeline = pipeline.min(blocks() - before);
    }
    let n = per_round as f64;
    println!(
        "heap allocations per decision ({per_round} requests, least of {rounds} rounds): \
         core::decide {:.3}, node pipeline on doors without a rule (entry built) {:.3}",
        core as f64 / n,
        pipeline as f64 / n
    );
    assert!(
        pipeline <= core,
        "the pipeline allocated {pipeline} blocks where the core alone allocated {core}"
    );
    drop(profiler);
    runtime.block_on(node.close());
}
