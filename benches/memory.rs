//! Resident bytes per credential of a `Snapshot` at gateway scale (1M credentials).
//!
//! The process runs on jemalloc with `dirty_decay_ms:0,muzzy_decay_ms:0` (it re-executes
//! itself with `_RJEM_MALLOC_CONF` set when needed), so memory freed by the dropped
//! generator records goes back to the OS at once and the resident size after the build is
//! the snapshot's, not glibc's retained free lists. It reports, before and after
//! `Snapshot::build` with the generator's records dropped:
//! - VmRSS from /proc/self/status;
//! - jemalloc's `stats.resident` and `stats.allocated` (live heap bytes, exact);
//! - `Snapshot::heap_bytes()`, the snapshot's own estimate;
//!
//! each divided by the credential count. Under `cargo test --benches`, with `--test`, or
//! with `KEYWAY_BENCH_QUICK=1` it runs at 1/1000 scale.

#![expect(clippy::unwrap_used, reason = "benchmarks fail loudly")]

use keyway_core::{Effect, Presented, Revision, Snapshot, decide};
use keyway_sim::{Population, PopulationSpec};
use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CONF_VAR: &str = "_RJEM_MALLOC_CONF";
const CONF: &str = "dirty_decay_ms:0,muzzy_decay_ms:0";

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: u64,
    resident: u64,
    allocated: u64,
}

fn sample() -> Sample {
    epoch::advance().unwrap();
    Sample {
        rss: rss_bytes(),
        resident: stats::resident::read().unwrap() as u64,
        allocated: stats::allocated::read().unwrap() as u64,
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var(CONF_VAR).is_err() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(&args[1..])
            .env(CONF_VAR, CONF)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let quick = std::env::var("KEYWAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
        || args.iter().any(|a| a == "--test")
        || !args.iter().any(|a| a == "--bench");
    let spec = PopulationSpec::scaled_down(if quick { 1000 } else { 1 });
    println!(
        "# snapshot memory{} ({} credentials, {} people, {} doors, {} groups; jemalloc {CONF})",
        if quick { " (quick mode)" } else { "" },
        spec.credentials,
        spec.people,
        spec.doors,
        spec.groups
    );

    let start = sample();
    let mut population = Population::generate(spec);
    let requests = population.requests(1000, 11);
    let generated = sample();
    let records = std::mem::take(&mut population.records);
    drop(population);
    let snapshot = Snapshot::build(Revision(1), records).unwrap();
    let built = sample();
    let credentials = snapshot.credential_count() as f64;
    let heap = snapshot.heap_bytes();

    let allowed = requests
        .iter()
        .filter(|r| {
            let presented = Presented {
                kind: r.kind,
                secret: &r.secret,
            };
            decide(&snapshot, r.door, presented, r.at).effect == Effect::Allow
        })
        .count();
    assert!(allowed > 0, "the snapshot allows nothing");

    println!(
        "before: VmRSS {:.1} MiB, jemalloc resident {:.1} MiB, allocated {:.1} MiB",
        mib(start.rss),
        mib(start.resident),
        mib(start.allocated)
    );
    println!(
        "population generated: VmRSS {:.1} MiB, allocated {:.1} MiB",
        mib(generated.rss),
        mib(generated.allocated)
    );
    println!(
        "snapshot built, records dropped: VmRSS {:.1} MiB, jemalloc resident {:.1} MiB, allocated {:.1} MiB",
        mib(built.rss),
        mib(built.resident),
        mib(built.allocated)
    );
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / credentials;
    println!("per credential:");
    println!("  VmRSS delta             {:.1} B", per(built.rss, start.rss));
    println!("  jemalloc resident delta {:.1} B", per(built.resident, start.resident));
    println!(
        "  jemalloc allocated delta {:.1} B",
        per(built.allocated, start.allocated)
    );
    println!(
        "  Snapshot::heap_bytes    {:.1} B ({heap} B)",
        heap as f64 / credentials
    );
    drop(snapshot);
    let dropped = sample();
    println!(
        "snapshot dropped: VmRSS {:.1} MiB, allocated {:.1} MiB",
        mib(dropped.rss),
        mib(dropped.allocated)
    );
}
