//! Crash safety: a child process streams acknowledged writes and is killed with SIGKILL;
//! after a restart every acknowledged write is there and the change log is contiguous.
//!
//! The child is this test binary, re-run with `KEYWAY_CRASH_CHILD_URL` set.

use crate::support::*;
use keyway_core::*;
use keyway_store::{Entry, Method, Store, StoreConfig};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KEYWAY_CRASH_CHILD_URL";
const ACKS_BEFORE_KILL: usize = 60;

async fn child(url: String) -> ! {
    let store = Store::open(StoreConfig::new(url).node("crash-child")).await.unwrap();
    let ids = model(&store).await;
    let mut out = std::io::stdout();
    let mut i = 0u32;
    loop {
        let person = PersonId(100 + i);
        let rev = store
            .model()
            .write(
                ACTOR,
                Change::PutPerson(PersonRecord {
                    id: person,
                    site: ids.site,
                    role: RoleId(1),
                    blocked: false,
                }),
            )
            .await
            .unwrap();
        store
            .entries()
            .append_durable(Entry {
                site: ids.site,
                at: jiff::Timestamp::from_second(1_800_000_000 + i64::from(i)).unwrap(),
                door: ids.door,
                person: Some(person),
                credential: None,
                method: Method::Remote,
                allowed: true,
                reason: "granted".into(),
                revision: rev,
                iq: Some((ids.iq, u64::from(i))),
                rule: None,
            })
            .await
            .unwrap();
        writeln!(out, "ACK {} {} {}", rev.0, person.0, i).unwrap();
        out.flush().unwrap();
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child(url).await;
    }
    on_each_backend!(|db| {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash::kill_9_loses_nothing_acknowledged",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let v: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    acks.push((v[0], v[1], v[2]));
                    if acks.len() == ACKS_BEFORE_KILL {
                        break;
                    }
                }
            }
            acks
        });
        let started = Instant::now();
        while !reader.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(60), "child too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL, mid-stream: the child is writing its next change right now.
        proc.kill().unwrap();
        proc.wait().unwrap();
        let acks = reader.join().unwrap();
        assert_eq!(acks.len(), ACKS_BEFORE_KILL);

        let store = db.open("restarted").await;
        let head = store.status().applied;
        let revs = store.model().revisions().await.unwrap();
        assert_eq!(
            revs,
            (1..=head.0).map(Revision).collect::<Vec<_>>(),
            "contiguous change log"
        );
        let snapshot = store.snapshot().load_full();
        let count = store.entries().count().await.unwrap();
        for (rev, person, _) in &acks {
            assert!(Revision(*rev) <= head, "acknowledged revision r{rev} survived");
            assert!(
                snapshot.has_person(PersonId(u32::try_from(*person).unwrap())),
                "person {person} survived"
            );
        }
        assert!(count >= acks.len() as u64, "acknowledged entries survived: {count}");
        eprintln!(
            "killed after {} acks; restarted at {head} with {count} entries",
            acks.len()
        );
        // The restarted node writes on from where the log stopped.
        let next = store
            .model()
            .write(ACTOR, Change::BlockPerson(PersonId(100)))
            .await
            .unwrap();
        assert_eq!(next, Revision(head.0 + 1));
        store.close().await;
    });
}
