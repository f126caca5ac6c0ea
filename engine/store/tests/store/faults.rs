//! Bad input and faults: each gives a clear error, loses nothing acknowledged, and
//! recovers without a restart once its cause is gone.

use crate::support::*;
use keyway_core::*;
use keyway_store::{ErrorKind, Store};
use std::time::Duration;

fn person(id: u32, site: SiteId) -> Change {
    Change::PutPerson(PersonRecord {
        id: PersonId(id),
        site,
        role: RoleId(1),
        blocked: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_sqlite_file_is_refused_clearly() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let path = db.dir.path().join("keyway.db");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let err = Store::open(db.config("a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("corrupt or not a database"), "{err}");
    // Cause gone (the operator restores the file): the same process opens it.
    std::fs::remove_file(&path).unwrap();
    let store = db.open("a").await;
    model(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_sqlite_file_is_refused_clearly() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let store = db.open("a").await;
    let ids = model(&store).await;
    let head = store.status().applied;
    // A standalone copy in a directory no connection of this process has touched, so no
    // SQLite shared memory is mapped when its files freeze.
    let frozen = tempfile::tempdir().unwrap();
    let path = frozen.path().join("keyway.db");
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query(&format!("VACUUM INTO '{}'", path.display()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    store.close().await;
    // Root ignores permission bits; the immutable attribute stops root too. The file and
    // its directory: SQLite can neither write the file nor create a WAL beside it.
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&path)
            .arg(frozen.path())
            .status()
            .unwrap()
            .success()
    };
    assert!(chattr("+i"), "chattr +i failed");
    let url = format!("sqlite://{}", path.display());
    let result = Store::open(keyway_store::StoreConfig::new(url.clone())).await;
    assert!(chattr("-i"));
    let err = result.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::ReadOnly | ErrorKind::Unavailable),
        "{err}"
    );
    assert!(err.to_string().contains("keyway.db"), "names the file: {err}");
    eprintln!("read-only open refused: {err}");
    // Cause gone: the same process opens it, with everything acknowledged.
    let store = Store::open(keyway_store::StoreConfig::new(url)).await.unwrap();
    assert_eq!(store.status().applied, head, "nothing acknowledged lost");
    store
        .model()
        .write(ACTOR, Change::BlockPerson(ids.person))
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_then_recovers() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let store = db.open("a").await;
    let ids = model(&store).await;
    // Cap the file just above its size now.
    let pages: i64 = {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        let n = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    };
    store
        .set_sqlite_page_limit(Some(u32::try_from(pages).unwrap() + 2))
        .await
        .unwrap();
    let mut acked = Vec::new();
    let mut full = None;
    for i in 0..5000u32 {
        match store.model().write(ACTOR, person(1000 + i, ids.site)).await {
            Ok(rev) => acked.push((rev, PersonId(1000 + i))),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("the capped database fills up");
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    let head = store.status().applied;
    // Entries cannot be written either, but they are kept and retried, not dropped.
    store
        .entries()
        .append(keyway_store::Entry {
            site: ids.site,
            at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            door: ids.door,
            person: None,
            credential: None,
            method: keyway_store::Method::Tag,
            allowed: false,
            reason: "unknown credential".into(),
            revision: head,
            iq: None,
            rule: None,
        })
        .await
        .unwrap();
    // Cause gone: lift the cap. The same store writes on, with the next revision.
    store.set_sqlite_page_limit(None).await.unwrap();
    let next = store.model().write(ACTOR, person(9999, ids.site)).await.unwrap();
    assert_eq!(next, Revision(head.0 + 1));
    tokio::time::timeout(Duration::from_secs(10), store.entries().flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.entries().count().await.unwrap(), 1);
    let snapshot = store.snapshot().load_full();
    for (_, p) in &acked {
        assert!(snapshot.has_person(*p));
    }
    assert_eq!(
        store.model().revisions().await.unwrap(),
        (1..=next.0).map(Revision).collect::<Vec<_>>()
    );
    store.close().await;
    let reopened = db.open("a").await;
    assert_eq!(reopened.status().applied, next);
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_drop_recovers() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let store = db.open("flaky").await;
    let ids = model(&store).await;
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for i in 0..20u32 {
        if i % 4 == 0 {
            db.terminate("flaky").await;
        }
        // A write may fail once with a clear error; the next attempt must succeed.
        let change = person(100 + i, ids.site);
        match store.model().write(ACTOR, change.clone()).await {
            Ok(rev) => acked.push(rev),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                errors.push(e.to_string());
                acked.push(store.model().write(ACTOR, change).await.unwrap());
            }
        }
    }
    eprintln!(
        "{} writes failed over while connections were cut: {errors:?}",
        errors.len()
    );
    let revs = store.model().revisions().await.unwrap();
    assert_eq!(revs, (1..=acked.last().unwrap().0).map(Revision).collect::<Vec<_>>());
    let snapshot = store.snapshot().load_full();
    for i in 0..20u32 {
        assert!(snapshot.has_person(PersonId(100 + i)));
    }
    assert!(store.entries().count().await.is_ok());
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_from_two_nodes() {
    on_each_backend!(|db| {
        let (a, b) = tokio::join!(Store::open(db.config("m1")), Store::open(db.config("m2")));
        let (a, b) = (a.unwrap(), b.unwrap());
        model(&a).await;
        if db.backend == Backend::Postgres {
            assert!(b.wait_for(a.status().applied, Duration::from_secs(2)).await);
        }
        a.close().await;
        b.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_refused_clearly() {
    for (url, kind) in [
        ("mysql://localhost/x", ErrorKind::Invalid),
        ("postgres://postgres@127.0.0.1:1/none", ErrorKind::Unavailable),
    ] {
        let mut config = keyway_store::StoreConfig::new(url);
        config.max_connections = 1;
        let err = Store::open(config).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{url}: {err}");
    }
}
