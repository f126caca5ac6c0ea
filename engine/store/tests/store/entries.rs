//! The entries log on both backends: append, query, pagination, retention, CSV, idempotence.

use crate::support::*;
use futures_util::TryStreamExt;
use jiff::{SignedDuration, Timestamp};
use keyway_core::*;
use keyway_store::{Entry, EntryQuery, Method};
use std::collections::BTreeSet;

type Predicate = Box<dyn Fn(&Entry) -> bool>;

fn entry(i: u32, now: Timestamp) -> Entry {
    Entry {
        site: SiteId(1 + i % 2),
        at: now - SignedDuration::from_mins(i64::from(i)),
        door: DoorId(10 + i % 5),
        person: if i.is_multiple_of(7) {
            None
        } else {
            Some(PersonId(100 + i % 10))
        },
        credential: Some(CredentialId(i)),
        method: if i.is_multiple_of(3) { Method::Pin } else { Method::Tag },
        allowed: !i.is_multiple_of(4),
        reason: if i.is_multiple_of(4) {
            "no access, \"blocked\"".into()
        } else {
            "granted".into()
        },
        revision: Revision(u64::from(i)),
        iq: Some((IqId(1), u64::from(i))),
        rule: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_query_paginate_retain_export() {
    on_each_backend!(|db| {
        let store = db.open("a").await;
        let ids = model(&store).await;
        assert_eq!(ids.site, SiteId(1));
        let second = store
            .model()
            .create(
                ACTOR,
                Record::Site(SiteRecord {
                    id: SiteId(0),
                    time_zone: jiff::tz::TimeZone::UTC,
                    holiday_calendar: None,
                    lockdown: false,
                }),
            )
            .await
            .unwrap();
        assert_eq!(second.id, Some(2));
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let all: Vec<Entry> = (0..1000).map(|i| entry(i, now)).collect();
        for e in &all {
            store.entries().append(e.clone()).await.unwrap();
        }
        store.entries().flush().await.unwrap();
        assert_eq!(store.entries().count().await.unwrap(), 1000);
        // An IQ re-uploading entries it already sent adds nothing.
        store.entries().append_durable(all[3].clone()).await.unwrap();
        assert_eq!(store.entries().count().await.unwrap(), 1000);

        // Filters, table-driven: (query, predicate).
        let site1 = EntryQuery {
            limit: 10_000,
            ..EntryQuery::site(SiteId(1))
        };
        let cases: Vec<(EntryQuery, Predicate)> = vec![
            (site1.clone(), Box::new(|e| e.site == SiteId(1))),
            (
                EntryQuery {
                    person: Some(PersonId(104)),
                    ..site1.clone()
                },
                Box::new(|e| e.site == SiteId(1) && e.person == Some(PersonId(104))),
            ),
            (
                EntryQuery {
                    door: Some(DoorId(11)),
                    ..site1.clone()
                },
                Box::new(|e| e.site == SiteId(1) && e.door == DoorId(11)),
            ),
            (
                EntryQuery {
                    allowed: Some(false),
                    ..site1.clone()
                },
                Box::new(|e| e.site == SiteId(1) && !e.allowed),
            ),
            (
                EntryQuery {
                    from: Some(now - SignedDuration::from_hours(2)),
                    until: Some(now - SignedDuration::from_hours(1)),
                    ..site1.clone()
                },
                Box::new(move |e| {
                    e.site == SiteId(1)
                        && e.at >= now - SignedDuration::from_hours(2)
                        && e.at < now - SignedDuration::from_hours(1)
                }),
            ),
        ];
        for (query, want) in cases {
            let page = store.entries().query(&query).await.unwrap();
            let mut got: Vec<Entry> = page.entries.into_iter().map(|s| s.entry).collect();
            let mut expected: Vec<Entry> = all.iter().filter(|e| want(e)).cloned().collect();
            assert!(!expected.is_empty(), "{query:?}");
            got.sort_by_key(|e| e.credential);
            expected.sort_by_key(|e| e.credential);
            assert_eq!(got, expected, "{query:?}");
        }

        // Pagination: newest first, every entry once.
        let mut query = EntryQuery {
            limit: 37,
            ..EntryQuery::site(SiteId(2))
        };
        let mut seen = Vec::new();
        loop {
            let page = store.entries().query(&query).await.unwrap();
            seen.extend(page.entries.iter().map(|e| (e.entry.at, e.id)));
            match page.next {
                Some(c) => query.cursor = Some(keyway_store::Cursor::parse(&c.token()).unwrap()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 500);
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "strictly newest first");
        assert_eq!(seen.iter().map(|s| s.1).collect::<BTreeSet<_>>().len(), 500);

        // CSV export streams every page, quoting what needs it.
        let csv: Vec<String> = store
            .entries()
            .export_csv(EntryQuery {
                limit: 100,
                ..EntryQuery::site(SiteId(1))
            })
            .try_collect()
            .await
            .unwrap();
        let text = csv.concat();
        assert_eq!(text.lines().count(), 501);
        assert!(text.starts_with("id,site,at,door,person"));
        assert!(text.contains("\"no access, \"\"blocked\"\"\""));

        // Retention: site 1 keeps 90 days by default, site 2 is set to 1 day.
        let later = now + SignedDuration::from_hours(24 + 5);
        store.entries().set_retention(ACTOR, SiteId(2), 1, now).await.unwrap();
        let audit = store.model().audit(Some("site:2")).await.unwrap();
        let last = audit.last().unwrap();
        assert_eq!((last.action.as_str(), last.revision), ("set_entries_retention", None));
        assert_eq!(last.at.as_second(), now.as_second(), "stamped with the caller's now");
        assert_eq!(last.after.as_deref(), Some("{\"entries_retention_days\":1}"));
        let purged = store.entries().purge(later).await.unwrap();
        let expected = all
            .iter()
            .filter(|e| e.site == SiteId(2) && e.at < later - SignedDuration::from_hours(24))
            .count();
        assert_eq!(purged, expected as u64);
        assert!(purged > 0);
        let err = store
            .entries()
            .set_retention(ACTOR, SiteId(99), 1, now)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), keyway_store::ErrorKind::NotFound);
        let err = store
            .entries()
            .query(&EntryQuery { limit: 0, ..site1 })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), keyway_store::ErrorKind::Invalid);
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_pushes_back_never_drops() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let mut config = db.config("a");
    config.entries = keyway_store::EntriesConfig {
        queue: 4,
        batch: 2,
        ..Default::default()
    };
    let store = keyway_store::Store::open(config).await.unwrap();
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    // try_append refuses when full rather than dropping; append waits.
    let mut busy = 0;
    let mut accepted = 0u64;
    for i in 0..2000 {
        match store.entries().try_append(entry(i, now)) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert_eq!(e.kind(), keyway_store::ErrorKind::Busy);
                busy += 1;
                store.entries().append(entry(i, now)).await.unwrap();
                accepted += 1;
            }
        }
    }
    store.entries().flush().await.unwrap();
    assert!(busy > 0, "a 4-slot queue must fill up");
    assert_eq!(store.entries().count().await.unwrap(), accepted);
    store.close().await;
    db.cleanup().await;
}

/// A loaded writer lingers to fill its batch, and whoever waits for the log ends the
/// linger: a durable append, a flush and closing the store each end it at once.
/// The test's runtime has one thread, so every `try_append` below is queued before the
/// writer first runs, and its first batch (over 256 entries) is a loaded one.
#[tokio::test(flavor = "current_thread")]
async fn a_waiter_ends_the_writers_linger() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let mut config = db.config("a");
    config.entries.linger = std::time::Duration::from_secs(3600);
    let store = keyway_store::Store::open(config).await.unwrap();
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let waited = std::time::Duration::from_secs(30);
    let mut appended = 0;
    for (round, waiter) in ["durable append", "flush"].into_iter().enumerate() {
        let round = u32::try_from(round).unwrap() * 10_000;
        for i in 0..1000 {
            store.entries().try_append(entry(round + i, now)).unwrap();
        }
        appended += 1000;
        // Let the writer take the batch; it lingers, so nothing is committed yet.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            store.entries().count().await.unwrap(),
            appended - 1000,
            "{waiter}: a loaded batch lingers"
        );
        let done = match waiter {
            "durable append" => {
                appended += 1;
                tokio::time::timeout(waited, store.entries().append_durable(entry(round + 5000, now))).await
            }
            _ => tokio::time::timeout(waited, store.entries().flush()).await,
        };
        done.unwrap_or_else(|_| panic!("{waiter}: still lingering after {waited:?}"))
            .unwrap();
        assert_eq!(store.entries().count().await.unwrap(), appended, "{waiter}");
    }
    // Closing commits a lingering batch rather than waiting it out.
    for i in 0..1000 {
        store.entries().try_append(entry(30_000 + i, now)).unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tokio::time::timeout(waited, store.close())
        .await
        .expect("closing waits out the linger");
    let store = keyway_store::Store::open(db.config("a")).await.unwrap();
    assert_eq!(store.entries().count().await.unwrap(), appended + 1000, "close");
    store.close().await;
    db.cleanup().await;
}

/// A store whose entries writer commits a loaded batch at once, without lingering.
async fn open_without_linger(db: &TestDb) -> keyway_store::Store {
    let mut config = db.config("a");
    config.entries.linger = std::time::Duration::ZERO;
    keyway_store::Store::open(config).await.unwrap()
}

fn new_person(site: SiteId) -> Record {
    Record::Person(PersonRecord {
        id: PersonId(0),
        site,
        role: RoleId(3),
        blocked: false,
    })
}

/// On SQLite, a loaded batch nobody waits for is committed by the background writer
/// (its thread at idle priority), taking turns with model writes made meanwhile, which
/// all succeed; a small batch and a durable append are the main writer's. PostgreSQL has
/// no background writer. The runtime has one thread, so the first 5,000 entries are all
/// queued before the writer first runs: one loaded batch, committed without a linger
/// while the model writes run.
#[tokio::test(flavor = "current_thread")]
async fn loaded_batches_nobody_waits_for_go_to_the_background_writer() {
    on_each_backend!(|db| {
        let store = open_without_linger(&db).await;
        let ids = model(&store).await;
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let writes = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    store.model().create(ACTOR, new_person(ids.site)).await.unwrap();
                }
            })
        };
        let background = |entries: u64| match db.backend {
            Backend::Sqlite => entries,
            Backend::Postgres => 0,
        };
        let committed = |target: u64| {
            let store = store.clone();
            async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while store.entries().stats().committed < target {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{target} entries not committed in 30 s"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let stats = store.entries().stats();
                (stats.committed, stats.committed_in_background, stats.failed_batches)
            }
        };
        for i in 0..5000 {
            store.entries().try_append(entry(i, now)).unwrap();
        }
        writes.await.unwrap();
        assert_eq!(committed(5000).await, (5000, background(5000), 0), "a loaded batch");
        for i in 0..10 {
            store.entries().try_append(entry(6000 + i, now)).unwrap();
        }
        assert_eq!(committed(5010).await, (5010, background(5000), 0), "a small batch");
        store.entries().append_durable(entry(9999, now)).await.unwrap();
        assert_eq!(committed(5011).await, (5011, background(5000), 0), "a durable append");
        assert_eq!(store.entries().count().await.unwrap(), 5011);
        let people = store
            .model()
            .records()
            .await
            .unwrap()
            .1
            .iter()
            .filter(|r| matches!(r, Record::Person(_)))
            .count();
        assert_eq!(people, 21, "the model writes made meanwhile");
        store.close().await;
    });
}

/// A model write that comes while a large entries batch commits waits for one statement
/// of it, not the whole batch: the batch commits what it has, lets the write through and
/// goes on in a new transaction. Nothing is lost or doubled. Whether the write comes
/// before the batch, during it or after depends on timing, so each round appends a
/// batch, lets the writer start on it and writes: the entries committed when the write
/// returns show where it went. Without the cut it can only be before or after a batch.
#[tokio::test(flavor = "current_thread")]
async fn a_model_write_cuts_a_long_entries_batch_short() {
    on_each_backend!(|db| {
        let store = open_without_linger(&db).await;
        let ids = model(&store).await;
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        const BATCH: u64 = 30_000;
        let mut appended = 0;
        let mut cut_in = None;
        for round in 0..5 {
            let before = appended;
            // Without an IQ sequence number: a row inserted twice would be counted.
            for i in 0..BATCH {
                let mut e = entry(u32::try_from(before + i).unwrap(), now);
                e.iq = None;
                store.entries().try_append(e).unwrap();
            }
            appended += BATCH;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            store.model().create(ACTOR, new_person(ids.site)).await.unwrap();
            let when_written = store.entries().count().await.unwrap();
            store.entries().flush().await.unwrap();
            assert_eq!(store.entries().count().await.unwrap(), appended, "round {round}");
            if before < when_written && when_written < appended {
                cut_in = Some(round);
                break;
            }
            if db.backend == Backend::Postgres {
                // Its writers do not take turns: nothing to cut.
                break;
            }
        }
        if db.backend == Backend::Sqlite {
            assert!(
                cut_in.is_some(),
                "in 5 rounds no model write went between two parts of a batch"
            );
        }
        store.close().await;
    });
}
