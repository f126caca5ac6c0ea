//! The `SnapshotCell` under concurrency: readers on threads, a writer, and compactions.
//!
//! Every loop is bounded; the threads share a scope, so a failed assertion on any of
//! them fails the test.

use crate::fixture::{credential, door, group, person, site, tag, ts};
use jiff::tz::TimeZone;
use keyway_core::{
    Change, CredentialKind, CredentialRecord, DoorId, GroupId, Presented, Reason, Record, Revision, Snapshot,
    SnapshotCell, decide,
};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Tags the writer revokes, one per revision: tag `i` at revision `1 + i`.
const WATCHED: u32 = 200;

fn secret(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

/// One door, one person allowed at any time, `WATCHED` tags of theirs, and `filler`
/// unowned digital keys so that compaction has real work to do.
fn building(filler: u32) -> Snapshot {
    let mut records = vec![
        Record::Site(site(1, TimeZone::UTC, None)),
        Record::Door(door(1, 1)),
        Record::Door(door(2, 1)),
        Record::Person(person(1, 1, 0)),
        Record::Group(group(1, 1, &[1], None, &[1])),
    ];
    records.extend((1..=WATCHED).map(|i| Record::Credential(tag(i, 1, &secret(i), Some(1)))));
    records.extend(
        (0..filler).map(|i| Record::Credential(credential(1_000 + i, 1, CredentialKind::DigitalKey, &secret(i), None))),
    );
    Snapshot::build(Revision(1), records).unwrap_or_else(|e| panic!("{e}"))
}

fn revoke(i: u32) -> Change {
    Change::PutCredential(CredentialRecord {
        revoked: true,
        ..tag(i, 1, &secret(i), Some(1))
    })
}

/// What tag `i` must get on a snapshot at `revision`.
fn expected(i: u32, revision: Revision) -> Reason {
    if revision.get() > u64::from(i) {
        Reason::CredentialRevoked
    } else {
        Reason::Granted {
            group: GroupId(1),
            schedule: None,
        }
    }
}

#[test]
fn readers_writer_and_compaction() {
    let cell = SnapshotCell::new(building(10_000)).with_compaction_threshold(0);
    let at = ts("2026-11-25T09:00:00Z");
    // The revision of the last `apply` that returned.
    let published = AtomicU64::new(1);
    let writing = AtomicBool::new(true);
    let replays = AtomicUsize::new(0);
    let compactions = AtomicUsize::new(0);

    let changes = thread::scope(|s| {
        let writer = s.spawn(|| {
            let _stop = StopOnDrop(&writing);
            let mut log = Vec::new();
            let mut revision = 1;
            let mut push = |change: Change| {
                revision += 1;
                let applied = cell.apply(Revision(revision), change.clone());
                assert_eq!(applied, Ok(Revision(revision)));
                published.store(revision, Ordering::SeqCst);
                // After `apply` returned, every load sees the change.
                assert!(cell.load().revision() >= Revision(revision));
                log.push((Revision(revision), change));
            };
            for i in 1..=WATCHED {
                push(revoke(i));
                if i % 8 == 0 {
                    thread::yield_now();
                }
            }
            // Go on with changes readers do not look at until a compaction has replayed
            // some, or long enough.
            for k in 0..20_000u32 {
                if replays.load(Ordering::SeqCst) > 0 && k > 50 {
                    break;
                }
                push(Change::SetDoorLockdown {
                    door: DoorId(2),
                    on: k % 2 == 0,
                });
                thread::sleep(Duration::from_micros(200));
            }
            writing.store(false, Ordering::SeqCst);
            log
        });

        s.spawn(|| {
            for _ in 0..10_000 {
                if !writing.load(Ordering::SeqCst) {
                    break;
                }
                let published = cell.compact().unwrap_or_else(|e| panic!("compact: {e}"));
                compactions.fetch_add(1, Ordering::SeqCst);
                if let Some(revision) = published {
                    // A compaction that replayed changes publishes them as overlays over its
                    // fresh base; one that replayed nothing publishes no overlay at all.
                    let now = cell.load();
                    if now.revision() == revision && now.overlay_len() > 0 {
                        replays.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });

        for reader in 0..2u32 {
            let (cell, published, writing) = (&cell, &published, &writing);
            s.spawn(move || {
                let _stop = StopOnDrop(writing);
                let mut last = Revision(0);
                let mut i = reader;
                let mut decisions = 0u64;
                for _ in 0..5_000_000u64 {
                    let done = !writing.load(Ordering::SeqCst);
                    let floor = Revision(published.load(Ordering::SeqCst));
                    let snapshot = cell.load();
                    i = i % WATCHED + 1;
                    let d = decide(&snapshot, DoorId(1), Presented::tag(&secret(i)), at);
                    assert_eq!(d.revision, snapshot.revision());
                    assert!(
                        d.revision >= floor,
                        "no new enemy: {} after {floor} was published",
                        d.revision
                    );
                    assert!(d.revision >= last, "revision went back from {last} to {}", d.revision);
                    assert_eq!(d.reason, expected(i, d.revision), "tag {i} at {}", d.revision);
                    last = d.revision;
                    decisions += 1;
                    if done {
                        break;
                    }
                }
                assert!(decisions > 0);
            });
        }
        writer.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    });

    assert!(compactions.load(Ordering::SeqCst) > 0);
    assert!(
        replays.load(Ordering::SeqCst) > 0,
        "no compaction overlapped a write ({} compactions)",
        compactions.load(Ordering::SeqCst)
    );
    // The published state is what the changes make, applied one by one.
    let mut sequential = building(10_000);
    for (revision, change) in &changes {
        sequential = sequential.apply(*revision, change).unwrap_or_else(|e| panic!("{e}"));
    }
    let last = cell.load_full();
    assert_eq!(last.revision(), sequential.revision());
    assert_eq!(last.records(), sequential.records());
    for i in 1..=WATCHED {
        assert_eq!(
            decide(&last, DoorId(1), Presented::tag(&secret(i)), at).reason,
            Reason::CredentialRevoked
        );
    }
}

#[test]
fn compaction_serialises_with_writers() {
    // Sequentially: a compaction publishes the revision it found, with no overlay.
    let cell = SnapshotCell::new(building(0)).with_compaction_threshold(1);
    assert!(!cell.needs_compaction());
    cell.apply(Revision(2), revoke(1)).unwrap();
    cell.apply(Revision(3), revoke(2)).unwrap();
    assert!(cell.load().overlay_len() > 1);
    assert!(cell.needs_compaction());
    assert_eq!(cell.compact(), Ok(Some(Revision(3))));
    assert_eq!(cell.load().overlay_len(), 0);
    assert!(!cell.needs_compaction());
    assert_eq!(cell.load().revision(), Revision(3));
    // Writers go on from there.
    assert_eq!(cell.apply(Revision(4), revoke(3)), Ok(Revision(4)));
    let at = ts("2026-11-25T09:00:00Z");
    for i in 1..=4 {
        let d = decide(&cell.load(), DoorId(1), Presented::tag(&secret(i)), at);
        assert_eq!(d.reason, expected(i, Revision(4)));
    }
}

#[test]
fn replace_publishes_a_full_rebuild() {
    let cell = SnapshotCell::new(building(0));
    cell.apply(Revision(2), revoke(1)).unwrap();
    let rebuilt = Snapshot::build(Revision(7), building(0).records()).unwrap();
    assert_eq!(cell.replace(rebuilt), Ok(Revision(7)));
    let at = ts("2026-11-25T09:00:00Z");
    let d = decide(&cell.load(), DoorId(1), Presented::tag(&secret(1)), at);
    assert_eq!((d.revision, d.reason), (Revision(7), expected(1, Revision(1))));
    // An equal revision is accepted, an older one is not.
    assert!(
        cell.replace(Snapshot::build(Revision(7), building(0).records()).unwrap())
            .is_ok()
    );
    assert!(cell.replace(building(0)).is_err());
    assert_eq!(cell.load().revision(), Revision(7));
}

#[test]
fn a_compaction_overtaken_by_replace_never_publishes() {
    // Regression (found by this test on 95b91ee, fixed in e15cec1): two compactors and a
    // replacer. A compaction that started before a `replace` must drop its work, even
    // when another compaction, started after the `replace`, is running when it finishes;
    // it used to take that one's replay log and publish its stale state over the
    // replacement, so the revision went back.
    let big = building(5_000);
    let cell = SnapshotCell::new(big.clone());
    let replacing = AtomicBool::new(true);
    let last_replaced = AtomicU64::new(1);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..1_000_000 {
                    if !replacing.load(Ordering::SeqCst) {
                        break;
                    }
                    if cell.compact().unwrap_or_else(|e| panic!("compact: {e}")).is_none() {
                        // Another compaction runs: try again soon.
                        thread::sleep(Duration::from_micros(100));
                    }
                }
            });
        }
        s.spawn(|| {
            let _stop = StopOnDrop(&replacing);
            let mut seen = Revision(0);
            for _ in 0..50_000_000u64 {
                let floor = last_replaced.load(Ordering::SeqCst);
                let now = cell.load().revision();
                assert!(now >= seen, "revision went back from {seen} to {now}");
                assert!(now.get() >= floor, "{now} published after r{floor} was");
                seen = now;
                if !replacing.load(Ordering::SeqCst) {
                    break;
                }
            }
        });
        s.spawn(|| {
            let _stop = StopOnDrop(&replacing);
            // Pauses of several lengths, so that some replaces land while one compaction
            // runs and the next one starts before it ends.
            let pauses = [1u64, 4, 15, 40, 90];
            for r in 2..=40u64 {
                if !replacing.load(Ordering::SeqCst) {
                    break;
                }
                let next = big
                    .apply(
                        Revision(r),
                        &Change::SetDoorLockdown {
                            door: DoorId(2),
                            on: r % 2 == 0,
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(cell.replace(next), Ok(Revision(r)));
                last_replaced.store(r, Ordering::SeqCst);
                let pause = pauses
                    .get(usize::try_from(r).unwrap_or(0) % pauses.len())
                    .copied()
                    .unwrap_or(1);
                thread::sleep(Duration::from_millis(pause));
                let now = cell.load().revision();
                assert!(now >= Revision(r), "{now} published after r{r} was");
            }
            replacing.store(false, Ordering::SeqCst);
        });
    });
    assert_eq!(cell.load().revision(), Revision(40));
}

/// Clears a flag when its thread unwinds: a thread whose assertion failed stops the
/// others instead of leaving them to run out their bounds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(false, Ordering::SeqCst);
        }
    }
}
