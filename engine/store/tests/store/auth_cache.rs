//! The auth cache: sessions, API tokens and memberships are read once, and every change
//! to them (on this node or another) is seen by the next read.

use crate::support::*;
use keyway_core::{Change, RoleId};
use keyway_store::Store;
use std::time::{Duration, Instant};

/// Beyond any test, and within the instants a `Timestamp` holds (year 9999).
const FAR: i64 = 253_402_207_000;

/// What one check reads, and what it should find after the change.
struct Seen {
    session: bool,
    token: bool,
    member: bool,
    member_person: bool,
}

async fn seen(store: &Store, account: i64, site: keyway_core::SiteId, secret: &str) -> Seen {
    let now = jiff::Timestamp::now().as_second();
    let member = store
        .memberships()
        .get(site, keyway_store::AccountId(account))
        .await
        .unwrap();
    Seen {
        session: store
            .accounts()
            .session_account("session-hash", crate::t(now))
            .await
            .unwrap()
            == Some(keyway_store::AccountId(account)),
        token: store
            .accounts()
            .token_by_secret(secret, crate::t(now))
            .await
            .unwrap()
            .is_some(),
        member: member.is_some(),
        member_person: member.is_some_and(|m| m.person.is_some()),
    }
}

/// One account with a session, a token and a membership linked to the model's person.
async fn signed_in(store: &Store, ids: &Ids) -> (i64, String) {
    let account = store
        .accounts()
        .create(
            ACTOR,
            "cached@example.com",
            "Correct-Horse-1",
            "Cached",
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    store
        .accounts()
        .create_session(account.id, "session-hash", jiff::Timestamp::now(), crate::t(FAR))
        .await
        .unwrap();
    let (_, issued) = store
        .accounts()
        .create_token(ACTOR, account.id, None, "ci", &[], None, jiff::Timestamp::now())
        .await
        .unwrap();
    store
        .memberships()
        .put(
            ACTOR,
            ids.site,
            account.id,
            RoleId(3),
            Some(ids.person),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    (account.id.get(), issued.secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_seen_by_the_next_read() {
    type Act = fn(Store, i64, Ids) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    // (what changes, the change, session, token, member, member's person) after it.
    let cases: [(&str, Act, [bool; 4]); 6] = [
        (
            "session ended",
            |s, _, _| Box::pin(async move { assert!(s.accounts().end_session("session-hash").await.unwrap()) }),
            [false, true, true, true],
        ),
        (
            "token revoked",
            |s, account, _| {
                Box::pin(async move {
                    let id = s.accounts().tokens(keyway_store::AccountId(account)).await.unwrap()[0].id;
                    s.accounts()
                        .revoke_token(ACTOR, id, jiff::Timestamp::now())
                        .await
                        .unwrap();
                })
            },
            [true, false, true, true],
        ),
        (
            "account disabled",
            |s, account, _| {
                Box::pin(async move {
                    s.accounts()
                        .set_disabled(ACTOR, keyway_store::AccountId(account), true, jiff::Timestamp::now())
                        .await
                        .unwrap()
                })
            },
            [false, false, true, true],
        ),
        (
            "membership removed",
            |s, account, ids| {
                Box::pin(async move {
                    s.memberships()
                        .remove(
                            ACTOR,
                            ids.site,
                            keyway_store::AccountId(account),
                            jiff::Timestamp::now(),
                        )
                        .await
                        .unwrap()
                })
            },
            [true, true, false, false],
        ),
        (
            "person removed (a model change; the membership loses it by cascade)",
            |s, _, ids| {
                Box::pin(async move {
                    s.model()
                        .write(ACTOR, Change::RemoveCredential(ids.credential))
                        .await
                        .unwrap();
                    s.model().write(ACTOR, Change::RemovePerson(ids.person)).await.unwrap();
                })
            },
            [true, true, true, false],
        ),
        (
            "account deleted",
            |s, account, _| {
                Box::pin(async move {
                    s.accounts()
                        .delete(ACTOR, keyway_store::AccountId(account), jiff::Timestamp::now())
                        .await
                        .unwrap()
                })
            },
            [false, false, false, false],
        ),
    ];
    for backend in BACKENDS {
        for (what, act, want) in &cases {
            // A fresh database per case: each case removes something.
            let Some(db) = TestDb::fresh(backend).await else {
                continue;
            };
            let mut config = db.config("auth");
            config.auth_cache_ttl = Duration::from_secs(600);
            let store = Store::open(config).await.unwrap();
            let ids = model(&store).await;
            let (account, secret) = signed_in(&store, &ids).await;
            // Read twice, so the second read is the cache's.
            for _ in 0..2 {
                let s = seen(&store, account, ids.site, &secret).await;
                assert!(s.session && s.token && s.member && s.member_person, "{what}: before");
            }
            act(store.clone(), account, ids).await;
            let s = seen(&store, account, ids.site, &secret).await;
            assert_eq!(
                [s.session, s.token, s.member, s.member_person],
                *want,
                "{backend:?}, {what}: [session, token, member, member's person] after the change"
            );
            store.close().await;
            db.cleanup().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_bounds_what_a_change_behind_the_stores_back_leaves_cached() {
    let Some(db) = TestDb::fresh(Backend::Sqlite).await else {
        return;
    };
    let mut config = db.config("ttl");
    config.auth_cache_ttl = Duration::from_millis(300);
    let store = Store::open(config).await.unwrap();
    let ids = model(&store).await;
    let (account, secret) = signed_in(&store, &ids).await;
    assert!(seen(&store, account, ids.site, &secret).await.session);
    // Another process deletes the session: this node cannot know, so the TTL bounds it.
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query("DELETE FROM sessions").execute(&pool).await.unwrap();
    pool.close().await;
    let deleted = Instant::now();
    assert!(
        seen(&store, account, ids.site, &secret).await.session,
        "served from the cache"
    );
    loop {
        if !seen(&store, account, ids.site, &secret).await.session {
            break;
        }
        assert!(deleted.elapsed() < Duration::from_secs(2), "still cached after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        deleted.elapsed() >= Duration::from_millis(250),
        "gone before the TTL: not cached?"
    );

    // With the cache off, the very next read sees it.
    store.close().await;
    let mut config = db.config("ttl-off");
    config.auth_cache_ttl = Duration::ZERO;
    let store = Store::open(config).await.unwrap();
    let now = jiff::Timestamp::now().as_second();
    store
        .accounts()
        .create_session(
            keyway_store::AccountId(account),
            "session-hash",
            jiff::Timestamp::now(),
            crate::t(FAR),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .accounts()
            .session_account("session-hash", crate::t(now))
            .await
            .unwrap(),
        Some(keyway_store::AccountId(account))
    );
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query("DELETE FROM sessions").execute(&pool).await.unwrap();
    pool.close().await;
    assert_eq!(
        store
            .accounts()
            .session_account("session-hash", crate::t(now))
            .await
            .unwrap(),
        None
    );
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_reaches_the_others_cache_within_a_second() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let open = |node: &str| {
        let mut config = db.config(node);
        // Far longer than the test: only the notification can explain a refusal.
        config.auth_cache_ttl = Duration::from_secs(600);
        Store::open(config)
    };
    let a = open("node-a").await.unwrap();
    let b = open("node-b").await.unwrap();
    let ids = model(&a).await;
    let (account, secret) = signed_in(&a, &ids).await;
    assert!(b.wait_for(a.status().applied, Duration::from_secs(2)).await);
    let s = seen(&b, account, ids.site, &secret).await;
    assert!(s.session && s.token && s.member, "node B reads them");

    let id = a.accounts().tokens(keyway_store::AccountId(account)).await.unwrap()[0].id;
    a.accounts()
        .revoke_token(ACTOR, id, jiff::Timestamp::now())
        .await
        .unwrap();
    a.accounts().end_session("session-hash").await.unwrap();
    a.memberships()
        .remove(
            ACTOR,
            ids.site,
            keyway_store::AccountId(account),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let written = Instant::now();
    loop {
        let s = seen(&b, account, ids.site, &secret).await;
        if !s.session && !s.token && !s.member {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "node B still authenticates after 1 s (session {}, token {}, member {})",
            s.session,
            s.token,
            s.member
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("revocation reached node B's auth cache in {:?}", written.elapsed());
    a.close().await;
    b.close().await;
    db.cleanup().await;
}
