//! Test support: a fresh database per test on each backend, and a small model.

use jiff::tz::TimeZone;
use keyway_core::*;
use keyway_store::{Store, StoreConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tempfile::TempDir;

/// The backends every conformance test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// The PostgreSQL server's admin URL.
pub fn pg_admin_url() -> String {
    std::env::var("KEYWAY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_with_db(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let base = match base.rsplit_once('/') {
        Some((head, _)) if head.contains("://") && head.len() > head.find("://").unwrap() + 3 => head,
        _ => base,
    };
    format!("{base}/{name}{query}")
}

/// A fresh, empty database on one backend; removed by [`TestDb::cleanup`].
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub dir: TempDir,
    pg_name: Option<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn admin() -> Result<sqlx::PgPool, sqlx::Error> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&pg_admin_url())
        .await
}

/// Drop test databases left by runs whose process is gone.
async fn drop_stale(pool: &sqlx::PgPool) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'keyway_test_%'")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    for name in names {
        let pid = name.trim_start_matches("keyway_test_").split('_').next().unwrap_or("");
        if pid != std::process::id().to_string() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(pool)
                .await;
        }
    }
}

impl TestDb {
    /// A fresh database, or `None` when PostgreSQL is unreachable outside CI (loudly).
    pub async fn fresh(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Some(TestDb {
                backend,
                url: format!("sqlite://{}", dir.path().join("keyway.db").display()),
                dir,
                pg_name: None,
            }),
            Backend::Postgres => {
                let pool = match admin().await {
                    Ok(p) => p,
                    Err(e) => {
                        if std::env::var_os("CI").is_some() {
                            panic!("PostgreSQL unreachable at {} in CI: {e}", pg_admin_url());
                        }
                        eprintln!(
                            "\n*** SKIPPED: PostgreSQL unreachable at {} ({e}); PostgreSQL tests did not run ***\n",
                            pg_admin_url()
                        );
                        return None;
                    }
                };
                drop_stale(&pool).await;
                let name = format!(
                    "keyway_test_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                // Concurrent CREATE DATABASE statements contend for the template; retry.
                let mut attempt = 0;
                while let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await {
                    attempt += 1;
                    assert!(attempt < 50, "CREATE DATABASE {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                pool.close().await;
                Some(TestDb {
                    backend,
                    url: url_with_db(&pg_admin_url(), &name),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    pub fn config(&self, node: &str) -> StoreConfig {
        let mut c = StoreConfig::new(self.url.clone()).node(node);
        c.poll_interval = Duration::from_millis(200);
        c
    }

    pub async fn open(&self, node: &str) -> Store {
        Store::open(self.config(node)).await.unwrap()
    }

    /// End every connection of `node` (by `application_name`) to this test's database, as a
    /// network cut would. Tests run in parallel, so other tests' nodes of the same name
    /// (on their own databases) must be left alone.
    pub async fn terminate(&self, node: &str) -> u64 {
        let pool = admin().await.unwrap();
        let n: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
        )
        .bind(format!("keyway-{node}"))
        .bind(self.pg_name.as_deref().unwrap_or(""))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        n.len() as u64
    }

    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name {
            let pool = admin().await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

/// Run `scenario` on a fresh database of each backend.
macro_rules! on_each_backend {
    (|$db:ident| $body:expr) => {
        for backend in crate::support::BACKENDS {
            let Some($db) = crate::support::TestDb::fresh(backend).await else {
                continue;
            };
            eprintln!("-- on {backend:?}");
            $body;
            $db.cleanup().await;
        }
    };
}
pub(crate) use on_each_backend;

pub const ACTOR: &str = "admin@example.com";

/// The ids of [`model`].
#[derive(Clone, Copy)]
pub struct Ids {
    pub site: SiteId,
    pub calendar: CalendarId,
    pub iq: IqId,
    pub schedule: ScheduleId,
    pub door: DoorId,
    pub person: PersonId,
    pub credential: CredentialId,
    pub group: GroupId,
}

pub const TAG: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

pub fn at_nine() -> jiff::Timestamp {
    "2026-11-25T09:00:00Z".parse().unwrap()
}

/// Create a small model through `store`: one of every entity.
pub async fn model(store: &Store) -> Ids {
    let calendar = store
        .model()
        .create(
            ACTOR,
            Record::Calendar(CalendarRecord {
                id: CalendarId(0),
                calendar: HolidayCalendar::new(vec!["2026-12-25".parse().unwrap()]),
            }),
        )
        .await
        .unwrap()
        .id
        .unwrap();
    let site = SiteId(
        store
            .model()
            .create(
                ACTOR,
                Record::Site(SiteRecord {
                    id: SiteId(0),
                    time_zone: TimeZone::get("Europe/Madrid").unwrap(),
                    holiday_calendar: Some(CalendarId(calendar)),
                    lockdown: false,
                }),
            )
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    let id = |w: keyway_store::Written| w.id.unwrap();
    let iq = IqId(id(store
        .model()
        .create(ACTOR, Record::Iq(IqRecord { id: IqId(0), site }))
        .await
        .unwrap()));
    let schedule = ScheduleId(id(store
        .model()
        .create(
            ACTOR,
            Record::Schedule(ScheduleRecord {
                id: ScheduleId(0),
                site,
                schedule: Schedule::new(vec![Period::hm(DaySet::WORKDAYS, (8, 0), (18, 0))], None).unwrap(),
            }),
        )
        .await
        .unwrap()));
    let door = DoorId(id(store
        .model()
        .create(
            ACTOR,
            Record::Door(DoorRecord {
                id: DoorId(0),
                site,
                iq: Some(iq),
                mode: DoorMode::Normal,
                lockdown: false,
            }),
        )
        .await
        .unwrap()));
    let person = PersonId(id(store
        .model()
        .create(
            ACTOR,
            Record::Person(PersonRecord {
                id: PersonId(0),
                site,
                role: RoleId(3),
                blocked: false,
            }),
        )
        .await
        .unwrap()));
    let credential = CredentialId(id(store
        .model()
        .create(ACTOR, Record::Credential(tag(site, Some(person), &TAG)))
        .await
        .unwrap()));
    let group = GroupId(id(store
        .model()
        .create(
            ACTOR,
            Record::Group(GroupRecord {
                id: GroupId(0),
                site,
                doors: vec![door],
                schedule: Some(schedule),
                members: vec![person],
            }),
        )
        .await
        .unwrap()));
    Ids {
        site,
        calendar: CalendarId(calendar),
        iq,
        schedule,
        door,
        person,
        credential,
        group,
    }
}

pub fn tag(site: SiteId, owner: Option<PersonId>, secret: &[u8]) -> CredentialRecord {
    CredentialRecord {
        id: CredentialId(0),
        site,
        kind: CredentialKind::Tag,
        secret: secret.to_vec(),
        owner,
        valid_from: None,
        valid_until: None,
        offline_access: false,
        revoked: false,
    }
}

/// The decision for `secret` at `door` on `store`'s snapshot, at 09:00 on a workday.
pub fn decide_tag(store: &Store, door: DoorId, secret: &[u8]) -> Decision {
    let snapshot = store.snapshot().load();
    decide(&snapshot, door, Presented::tag(secret), at_nine())
}
