//! Store benchmarks (custom harness): start-up load, commit-to-decision latency, entries
//! append rate and CPU per entry, audit-logged admin writes per second; on SQLite and
//! PostgreSQL.
//!
//! `cargo bench -p keyway-store --bench store` runs the full sizes (1M credentials);
//! `KEYWAY_BENCH_QUICK=1` (or `-- --quick`) runs small ones, for CI. PostgreSQL comes from
//! `KEYWAY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! when it is unreachable its figures are skipped, loudly.

#![expect(clippy::unwrap_used, reason = "a benchmark harness fails loudly")]

use keyway_core::{
    Change, DoorId, Effect, PersonId, PersonRecord, Presented, Record, Revision, RoleId, SiteId, decide,
};
use keyway_sim::{Population, PopulationSpec};
use keyway_store::{Entry, Method, Store, StoreConfig};
use std::time::{Duration, Instant};

struct Sizes {
    population: PopulationSpec,
    latency_writes: usize,
    entries: u32,
    admin_window: Duration,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            population: PopulationSpec::scaled_down(100),
            latency_writes: 50,
            entries: 50_000,
            admin_window: Duration::from_millis(500),
        }
    } else {
        Sizes {
            population: PopulationSpec::gateway_scale(),
            latency_writes: 500,
            entries: 500_000,
            admin_window: Duration::from_secs(3),
        }
    }
}

fn pg_admin_url() -> String {
    std::env::var("KEYWAY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn report_latency(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: p50 {:?}, p99 {:?}, max {:?} ({} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
        samples.len()
    );
}

/// A database for one backend; PostgreSQL gets a fresh database, dropped at the end.
struct BenchDb {
    url: String,
    pg: Option<(sqlx::PgPool, String)>,
    _dir: tempfile::TempDir,
}

impl BenchDb {
    async fn sqlite() -> BenchDb {
        let dir = tempfile::tempdir().unwrap();
        BenchDb {
            url: format!("sqlite://{}", dir.path().join("keyway.db").display()),
            pg: None,
            _dir: dir,
        }
    }

    async fn postgres() -> Option<BenchDb> {
        let admin = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&pg_admin_url())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                println!(
                    "*** SKIPPED PostgreSQL figures: unreachable at {} ({e}) ***",
                    pg_admin_url()
                );
                return None;
            }
        };
        let name = format!("keyway_bench_{}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let base = pg_admin_url();
        let base = base.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(base);
        Some(BenchDb {
            url: format!("{base}/{name}"),
            pg: Some((admin, name)),
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    /// Another fresh database on the same backend as `db`.
    async fn fresh_like(db: &BenchDb) -> BenchDb {
        match &db.pg {
            None => BenchDb::sqlite().await,
            Some((_, name)) => {
                let other = format!("{name}_entries");
                // Its own admin pool: dropping this database closes it.
                let admin = sqlx::PgPool::connect(&pg_admin_url()).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {other}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                let base = db.url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or_default();
                BenchDb {
                    url: format!("{base}/{other}"),
                    pg: Some((admin, other)),
                    _dir: tempfile::tempdir().unwrap(),
                }
            }
        }
    }

    async fn open(&self, node: &str) -> Store {
        let mut config = StoreConfig::new(self.url.clone()).node(node);
        config.poll_interval = Duration::from_millis(500);
        Store::open(config).await.unwrap()
    }

    async fn drop_db(self) {
        if let Some((admin, name)) = self.pg {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

async fn bench_backend(label: &str, db: &BenchDb, population: &Population, sizes: &Sizes) {
    // Start-up: import once, then time a cold open (load + snapshot build).
    let store = db.open("bench-a").await;
    let started = Instant::now();
    store.model().import("bench", population.records.clone()).await.unwrap();
    println!(
        "[{label}] import of {} records ({} credentials): {:?}",
        population.records.len(),
        population.spec.credentials,
        started.elapsed()
    );
    store.close().await;
    let started = Instant::now();
    let store = db.open("bench-a").await;
    let load = started.elapsed();
    let timings = store.last_load();
    println!(
        "[{label}] start-up load of {} credentials: {load:?} (reading {} records {:?}, building {:?})",
        store.snapshot().load().credential_count(),
        timings.records,
        timings.read,
        timings.build
    );

    // One change, commit to the writing node's next decision.
    let (door, secret, person) = population_probe(population);
    let mut samples = Vec::new();
    let mut publish = Vec::new();
    for i in 0..sizes.latency_writes {
        let change = if i % 2 == 0 {
            Change::BlockPerson(person)
        } else {
            Change::UnblockPerson(person)
        };
        let started = Instant::now();
        let rev = store.model().write("bench", change).await.unwrap();
        let d = decide(
            &store.snapshot().load(),
            door,
            Presented::tag(&secret),
            "2026-11-25T09:00:00Z".parse().unwrap(),
        );
        samples.push(started.elapsed());
        publish.push(store.last_publish_latency());
        assert_eq!(d.revision, rev);
        if i % 2 == 0 {
            assert_eq!(d.effect, Effect::Deny, "a blocked person is denied at once");
        }
    }
    report_latency(
        &format!("[{label}] write call incl. commit + apply (writing node)"),
        samples,
    );
    report_latency(
        &format!("[{label}] commit to the snapshot's next decision (writing node)"),
        publish,
    );

    // Commit on node A to node B's snapshot (PostgreSQL only: SQLite has one node).
    if db.pg.is_some() {
        let b = db.open("bench-b").await;
        let mut samples = Vec::new();
        for i in 0..sizes.latency_writes.min(100) {
            let change = if i % 2 == 0 {
                Change::BlockPerson(person)
            } else {
                Change::UnblockPerson(person)
            };
            let rev = store.model().write("bench", change).await.unwrap();
            let committed = Instant::now();
            assert!(b.wait_for(rev, Duration::from_secs(2)).await);
            samples.push(committed.elapsed());
        }
        report_latency(&format!("[{label}] commit on node A to node B's snapshot"), samples);
        b.close().await;
    }

    // Audit-logged admin writes per second: one writer, then 16 concurrent.
    let site = SiteId(1);
    let base = 5_000_000u32;
    for writers in [1u32, 16] {
        let deadline = Instant::now() + sizes.admin_window;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while Instant::now() < deadline {
                    let id = PersonId(base + w * 100_000 + n + writers * 1_000_000);
                    store
                        .model()
                        .write(
                            "bench",
                            Change::PutPerson(PersonRecord {
                                id,
                                site,
                                role: RoleId(1),
                                blocked: false,
                            }),
                        )
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0u32;
        for t in tasks {
            total += t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "[{label}] audit-logged admin writes, {writers} writer(s): {:.0}/s ({total} in {secs:.2} s)",
            f64::from(total) / secs
        );
    }

    // Entries append rate on this node, with its 1M-credential model (and any snapshot
    // compaction the admin writes above started) sharing the CPU.
    append_entries(
        &format!("[{label}] entries append (node with the model loaded)"),
        &store,
        sizes.entries,
        Traffic::Api,
    )
    .await;
    store.close().await;

    // The entries log alone: a fresh database and store.
    let alone = BenchDb::fresh_like(db).await;
    let store = alone.open("bench-entries").await;
    append_entries(
        &format!("[{label}] entries append (entries log alone)"),
        &store,
        sizes.entries,
        Traffic::Api,
    )
    .await;
    store.close().await;
    alone.drop_db().await;

    // The link's traffic, in rounds on one growing log: the cost per entry as the
    // indexes grow.
    let alone = BenchDb::fresh_like(db).await;
    let store = alone.open("bench-entries").await;
    for round in 1..=4 {
        append_entries(
            &format!("[{label}] entries append, link traffic, round {round} of 4 (entries log alone)"),
            &store,
            sizes.entries,
            Traffic::Link,
        )
        .await;
    }
    store.close().await;
    alone.drop_db().await;
}

/// Which decisions an entries run logs.
#[derive(Clone, Copy)]
enum Traffic {
    /// 10 sites, 1,000 doors, 100,000 people, no IQ: decisions over HTTP.
    Api,
    /// One site, 1,000 doors (an IQ each), 50 people, the node's own sequence numbers:
    /// what `iq-sim --doors-per-iq 1 --people 50` sends in the serve bench.
    Link,
}

/// Append `count` entries as fast as the writer takes them; prints the rate and the
/// process's CPU per entry (the writer's, nearly all of it).
async fn append_entries(name: &str, store: &Store, count: u32, traffic: Traffic) {
    let started = Instant::now();
    let cpu = cpu_ticks();
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    for i in 0..count {
        let entry = match traffic {
            Traffic::Api => Entry {
                site: SiteId(1 + i % 10),
                at: at + jiff::SignedDuration::from_millis(i64::from(i)),
                door: DoorId(1 + i % 1000),
                person: Some(PersonId(1 + i % 100_000)),
                credential: None,
                method: Method::Tag,
                allowed: i % 10 != 0,
                reason: "granted".into(),
                revision: Revision(1),
                iq: None,
                rule: None,
            },
            Traffic::Link => {
                // Doors and people in a scattered order, as 1,000 IQs interleave.
                let door = i.wrapping_mul(7919) % 1000;
                let person = i.wrapping_mul(104_729) % 50;
                Entry {
                    site: SiteId(1),
                    at: at + jiff::SignedDuration::from_micros(i64::from(i) * 10),
                    door: DoorId(1 + door),
                    person: Some(PersonId(1 + person)),
                    credential: Some(keyway_core::CredentialId(1 + person)),
                    method: Method::Tag,
                    allowed: true,
                    reason: "granted".into(),
                    revision: Revision(7),
                    iq: Some((keyway_core::IqId(1 + door), (1 << 62) + u64::from(i))),
                    rule: None,
                }
            }
        };
        store.entries().append(entry).await.unwrap();
    }
    store.entries().flush().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let cpu_us = (cpu_ticks() - cpu) as f64 * 1e6 / USER_HZ / f64::from(count);
    println!(
        "{name}: {:.0}/s ({count} in {secs:.2} s), process CPU {cpu_us:.2} us per entry",
        f64::from(count) / secs
    );
}

/// The process's CPU time so far (user plus system), in clock ticks, from `/proc`.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name's closing parenthesis; utime and stime are the
    // 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Linux's `USER_HZ`, the unit of `/proc`'s CPU times: 100 on every mainstream build.
const USER_HZ: f64 = 100.0;

/// A door, a tag secret and its owner from the population, for latency probes.
fn population_probe(population: &Population) -> (DoorId, Vec<u8>, PersonId) {
    let request = population.requests(1, 1).pop().unwrap();
    let owner = population
        .records
        .iter()
        .find_map(|r| match r {
            Record::Credential(c) if c.secret == request.secret => c.owner,
            _ => None,
        })
        .unwrap_or(PersonId(0));
    (request.door, request.secret, owner)
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) run small.
    let quick = std::env::var_os("KEYWAY_BENCH_QUICK").is_some()
        || std::env::args().any(|a| a == "--quick")
        || !std::env::args().any(|a| a == "--bench");
    let mut sizes = sizes(quick);
    if let Some(n) = std::env::var("KEYWAY_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()) {
        sizes.entries = n;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let population = Population::generate(sizes.population);
        println!(
            "generated {} records ({} credentials) in {:?}{}",
            population.records.len(),
            population.spec.credentials,
            started.elapsed(),
            if quick { " [quick mode]" } else { "" }
        );
        let sqlite = BenchDb::sqlite().await;
        bench_backend("sqlite", &sqlite, &population, &sizes).await;
        sqlite.drop_db().await;
        if let Some(pg) = BenchDb::postgres().await {
            bench_backend("postgres", &pg, &population, &sizes).await;
            pg.drop_db().await;
        }
    });
}
