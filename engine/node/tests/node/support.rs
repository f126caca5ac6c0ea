//! A node on a fresh database (SQLite, or PostgreSQL for the two-node tests) with the
//! repository's default bundle, and a small site: one door, one person, one tag, one group.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use keyway_core::*;
use keyway_node::{Node, NodeConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tempfile::TempDir;

pub const TAG: [u8; 4] = [0x04, 0xa2, 0x19, 0x7c];
pub const ACTOR: &str = "test";

pub fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
}

/// A Monday at 09:00 and 22:00 in Madrid.
pub fn monday(hour: i8) -> Timestamp {
    jiff::civil::date(2026, 11, 23)
        .at(hour, 0, 0, 0)
        .in_tz("Europe/Madrid")
        .unwrap()
        .timestamp()
}

pub struct Site {
    pub site: SiteId,
    pub door: DoorId,
    pub person: PersonId,
}

pub struct TestNode {
    pub node: Node,
    pub _dir: TempDir,
}

pub fn config(url: String) -> NodeConfig {
    let mut config = NodeConfig::new(url);
    config.bundle_dir = Some(bundle_dir());
    config.store.poll_interval = Duration::from_millis(100);
    config
}

pub async fn sqlite_node() -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keyway.db").display());
    TestNode {
        node: Node::open(config(url)).await.unwrap(),
        _dir: dir,
    }
}

/// Seed one site with a door anyone in the group may open at any time.
pub async fn seed(node: &Node) -> Site {
    let store = node.store();
    let site = SiteId(
        store
            .model()
            .create(
                ACTOR,
                Record::Site(SiteRecord {
                    id: SiteId(0),
                    time_zone: TimeZone::get("Europe/Madrid").unwrap(),
                    holiday_calendar: None,
                    lockdown: false,
                }),
            )
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    let door = DoorId(
        store
            .model()
            .create(
                ACTOR,
                Record::Door(DoorRecord {
                    id: DoorId(0),
                    site,
                    iq: None,
                    mode: DoorMode::Normal,
                    lockdown: false,
                }),
            )
            .await
            .unwrap()
            .id
            .unwrap(),
    );
    let person = PersonId(
        store
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
            .unwrap()
            .id
            .unwrap(),
    );
    store
        .model()
        .create(
            ACTOR,
            Record::Credential(CredentialRecord {
                id: CredentialId(0),
                site,
                kind: CredentialKind::Tag,
                secret: TAG.to_vec(),
                owner: Some(person),
                valid_from: None,
                valid_until: None,
                offline_access: true,
                revoked: false,
            }),
        )
        .await
        .unwrap();
    store
        .model()
        .create(
            ACTOR,
            Record::Group(GroupRecord {
                id: GroupId(0),
                site,
                doors: vec![door],
                schedule: None,
                members: vec![person],
            }),
        )
        .await
        .unwrap();
    Site { site, door, person }
}

/// A fresh PostgreSQL database, or `None` (loudly) when none is reachable outside CI.
pub struct PgDb {
    pub url: String,
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn admin_url() -> String {
    std::env::var("KEYWAY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin() -> Result<sqlx::PgPool, sqlx::Error> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&admin_url())
        .await
}

impl PgDb {
    pub async fn fresh() -> Option<PgDb> {
        let pool = match admin().await {
            Ok(pool) => pool,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL unreachable at {} in CI: {e}",
                    admin_url()
                );
                eprintln!(
                    "\n*** SKIPPED: PostgreSQL unreachable at {} ({e}); node PostgreSQL tests did not run ***\n",
                    admin_url()
                );
                return None;
            }
        };
        let name = format!(
            "keyway_nodetest_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut attempt = 0;
        while let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await {
            attempt += 1;
            assert!(attempt < 50, "CREATE DATABASE {name}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pool.close().await;
        let admin = admin_url();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(head, _)| head)
            .to_owned();
        Some(PgDb {
            url: format!("{base}/{name}"),
            name,
        })
    }

    pub async fn drop(self) {
        if let Ok(pool) = admin().await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&pool)
                .await;
        }
    }
}
