//! The entries log: every decision at a door, appended in volume and queried by site.
//!
//! Appends go through a bounded queue (Tokio `mpsc`) to one writer task that inserts
//! them in batches, one transaction per batch. A full queue makes [`EntriesLog::append`]
//! wait (backpressure) and [`EntriesLog::try_append`] fail with [`StoreError::Busy`];
//! nothing is dropped silently. A batch that fails to insert is retried, with backoff,
//! until it succeeds; [`EntriesLog::append_durable`] and [`EntriesLog::flush`] return
//! only once their entries are committed. Entries from an IQ carry its sequence number;
//! an (IQ, sequence) pair is stored once however often it is uploaded.
//!
//! On SQLite, a loaded batch (256 entries or more) that nobody waits for goes to the
//! background writer, a connection whose thread runs at idle priority
//! (`Db::begin_background`), so that committing it never takes a core from a decision;
//! small batches, waiters, a filling queue, closing and retries take the main writer.
//!
//! Queries are by site plus optional person, door, time range and result, newest first,
//! with a keyset cursor. Retention deletes entries older than their site's setting
//! (default 90 days). CSV export is a stream of pages.

use crate::clock::Clock;
use crate::db::Db;
use crate::error::StoreError;
use futures_util::Stream;
use jiff::Timestamp;
use keyway_core::{CredentialId, DoorId, IqId, PersonId, Revision, SiteId};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Rows per INSERT statement (11 columns; well under SQLite's 32766 variables).
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;
/// The first line of a CSV export.
pub const ENTRIES_CSV_HEADER: &str =
    "id,site,at,door,person,credential,method,allowed,reason,revision,iq,iq_seq,rule\n";
/// Retention when a site sets none.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

/// How an entry was attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// An RFID tag.
    Tag,
    /// A digital key.
    DigitalKey,
    /// A PIN.
    Pin,
    /// A remote open.
    Remote,
    /// The inside handle.
    InsideHandle,
}

impl Method {
    pub(crate) const fn code(self) -> u8 {
        match self {
            Method::Tag => 1,
            Method::DigitalKey => 2,
            Method::Pin => 3,
            Method::Remote => 4,
            Method::InsideHandle => 5,
        }
    }

    fn from_code(code: i64) -> Result<Method, StoreError> {
        Ok(match code {
            1 => Method::Tag,
            2 => Method::DigitalKey,
            3 => Method::Pin,
            4 => Method::Remote,
            5 => Method::InsideHandle,
            other => return Err(StoreError::internal(format!("unknown entry method `{other}`"))),
        })
    }

    /// Its name in exports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Method::Tag => "tag",
            Method::DigitalKey => "digital_key",
            Method::Pin => "pin",
            Method::Remote => "remote",
            Method::InsideHandle => "inside_handle",
        }
    }
}

/// One entry to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub site: SiteId,
    /// When (microsecond precision is kept).
    pub at: Timestamp,
    pub door: DoorId,
    /// Who, if known.
    pub person: Option<PersonId>,
    /// Which credential, if any.
    pub credential: Option<CredentialId>,
    /// How.
    pub method: Method,
    /// Opened or refused.
    pub allowed: bool,
    /// The decision's reason: a stable code such as `granted` (borrowed, so logging a
    /// decision allocates nothing for it) or a text of its own.
    pub reason: Cow<'static, str>,
    /// The revision the decision was taken on.
    pub revision: Revision,
    /// The IQ that reported it and its sequence number there, for idempotent uploads.
    pub iq: Option<(IqId, u64)>,
    /// The door rule that took part, as `name@sha256` (hex), when the door has one.
    pub rule: Option<String>,
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its id in the log.
    pub id: crate::EntryId,
    pub entry: Entry,
}

/// Where a page ended; pass it back for the next page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) at: i64,
    pub(crate) id: i64,
}

impl Cursor {
    /// The cursor as an opaque token for an API.
    #[must_use]
    pub fn token(self) -> String {
        format!("{}.{}", self.at, self.id)
    }

    /// A cursor from its token.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `token` is not one.
    pub fn parse(token: &str) -> Result<Cursor, StoreError> {
        let bad = || StoreError::invalid(format!("`{token}` is not a cursor"));
        let (at, id) = token.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            at: at.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// A query of the entries log. The site is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryQuery {
    pub site: SiteId,
    /// Only this person's.
    pub person: Option<PersonId>,
    /// Only at this door.
    pub door: Option<DoorId>,
    /// From this instant (inclusive).
    pub from: Option<Timestamp>,
    /// Until this instant (exclusive).
    pub until: Option<Timestamp>,
    /// Only allowed (true) or refused (false) entries.
    pub allowed: Option<bool>,
    /// Continue after this cursor.
    pub cursor: Option<Cursor>,
    /// Page size, 1 to 10,000.
    pub limit: u32,
}

impl EntryQuery {
    /// Everything of `site`, 100 a page.
    #[must_use]
    pub fn site(site: SiteId) -> Self {
        EntryQuery {
            site,
            person: None,
            door: None,
            from: None,
            until: None,
            allowed: None,
            cursor: None,
            limit: 100,
        }
    }
}

/// A page of entries, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPage {
    pub entries: Vec<StoredEntry>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<Cursor>,
}

#[expect(clippy::too_many_arguments, reason = "one per column")]
fn stored_entry(
    id: i64,
    site: i64,
    at: i64,
    door: i64,
    person: Option<i64>,
    credential: Option<i64>,
    method: i64,
    allowed: bool,
    reason: String,
    revision: i64,
    iq: Option<i64>,
    iq_seq: Option<i64>,
    rule: Option<String>,
) -> Result<StoredEntry, StoreError> {
    let id32 = |v: i64| u32::try_from(v).map_err(StoreError::internal);
    Ok(StoredEntry {
        id: crate::EntryId(id),
        entry: Entry {
            site: SiteId(id32(site)?),
            at: Timestamp::from_microsecond(at).map_err(StoreError::internal)?,
            door: DoorId(id32(door)?),
            person: person.map(id32).transpose()?.map(PersonId),
            credential: credential.map(id32).transpose()?.map(CredentialId),
            method: Method::from_code(method)?,
            allowed,
            reason: Cow::Owned(reason),
            revision: Revision(u64::try_from(revision).map_err(StoreError::internal)?),
            iq: match (iq, iq_seq) {
                (Some(iq), Some(seq)) => Some((IqId(id32(iq)?), u64::try_from(seq).map_err(StoreError::internal)?)),
                _ => None,
            },
            rule,
        },
    })
}

/// The entries queue and how the writer batches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntriesConfig {
    /// Entries the queue holds before appends wait.
    pub queue: usize,
    /// The most entries one batch (one transaction) inserts.
    pub batch: usize,
    /// The longest a loaded writer (one that found at least 256 entries queued) waits
    /// to fill its batch before it commits. A flush, a durable append or closing the
    /// store ends the wait at once, so only entries nobody waits for linger.
    pub linger: Duration,
    /// How often entries past their retention are deleted.
    pub purge_interval: Duration,
}

impl Default for EntriesConfig {
    fn default() -> Self {
        EntriesConfig {
            queue: 65_536,
            batch: 32_768,
            linger: LINGER,
            purge_interval: Duration::from_secs(3600),
        }
    }
}

enum Msg {
    Entry(Entry),
    Durable(Entry, oneshot::Sender<Result<(), StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

#[derive(Debug, Default)]
struct Counters {
    committed: AtomicU64,
    committed_in_background: AtomicU64,
    failed_batches: AtomicU64,
}

/// Counters of the entries writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntriesStats {
    /// Entries committed since start (duplicates included).
    pub committed: u64,
    /// Of those, the entries committed by SQLite's background writer, at idle priority
    /// (the rest by the main writer).
    pub committed_in_background: u64,
    /// Batch inserts that failed and were retried.
    pub failed_batches: u64,
    /// Entries (and flush requests) waiting in the queue now.
    pub queued: usize,
}

/// The entries log of a store.
#[derive(Clone, Debug)]
pub struct EntriesLog {
    db: Db,
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    done: watch::Receiver<bool>,
}

impl EntriesLog {
    pub(crate) fn start(db: Db, config: EntriesConfig, clock: Clock, shutdown: watch::Receiver<bool>) -> EntriesLog {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let (done_tx, done) = watch::channel(false);
        tokio::spawn(writer(
            db.clone(),
            rx,
            config,
            counters.clone(),
            clock.clone(),
            shutdown.clone(),
            done_tx,
        ));
        let log = EntriesLog { db, tx, counters, done };
        tokio::spawn(purger(log.clone(), config.purge_interval, clock, shutdown));
        log
    }

    /// Queue `entry`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store is closed.
    pub async fn append(&self, entry: Entry) -> Result<(), StoreError> {
        self.tx.send(Msg::Entry(entry)).await.map_err(|_| StoreError::Closed)
    }

    /// Queue `entry` if there is room now.
    ///
    /// # Errors
    /// [`StoreError::Busy`] if the queue is full; [`StoreError::Closed`] if closed.
    pub fn try_append(&self, entry: Entry) -> Result<(), StoreError> {
        self.tx.try_send(Msg::Entry(entry)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy { queue: "entries" },
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })
    }

    /// Append `entry` and return once it is committed (for an IQ upload's ack).
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store closed before the entry was committed.
    pub async fn append_durable(&self, entry: Entry) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Durable(entry, ack))
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Return once every entry queued before this call is committed.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the store closed first.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Msg::Flush(ack)).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// The writer's counters.
    #[must_use]
    pub fn stats(&self) -> EntriesStats {
        EntriesStats {
            committed: self.counters.committed.load(Ordering::Acquire),
            committed_in_background: self.counters.committed_in_background.load(Ordering::Acquire),
            failed_batches: self.counters.failed_batches.load(Ordering::Acquire),
            queued: self.tx.max_capacity().saturating_sub(self.tx.capacity()),
        }
    }

    pub(crate) async fn closed(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// One page of entries, newest first.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a limit out of range; a fault if the database fails.
    pub async fn query(&self, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        if !(1..=10_000).contains(&query.limit) {
            return Err(StoreError::invalid(format!(
                "page size `{}` out of range 1 to 10000",
                query.limit
            )));
        }
        let entries = queries::page(self.db.reader().await?.conn(), query).await?;
        let next = if entries.len() == query.limit as usize {
            entries.last().map(|e| Cursor {
                at: e.entry.at.as_microsecond(),
                id: e.id.get(),
            })
        } else {
            None
        };
        Ok(EntryPage { entries, next })
    }

    /// Every entry matching `query` (its cursor and limit are the starting point and page
    /// size) as CSV, one chunk per page, header first.
    pub fn export_csv(&self, query: EntryQuery) -> impl Stream<Item = Result<String, StoreError>> + Send + 'static {
        let log = self.clone();
        futures_util::stream::try_unfold((Some(query), true), move |(query, first)| {
            let log = log.clone();
            async move {
                let Some(query) = query else { return Ok(None) };
                let page = log.query(&query).await?;
                let mut out = String::new();
                if first {
                    out.push_str(ENTRIES_CSV_HEADER);
                }
                for e in &page.entries {
                    csv_line(&mut out, e);
                }
                let next = page.next.map(|c| EntryQuery {
                    cursor: Some(c),
                    ..query.clone()
                });
                Ok(Some((out, (next, false))))
            }
        })
    }

    /// Delete entries older than their site's retention, as of `now`. Returns how many.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn purge(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        let deleted = queries::purge(tx.conn(), now).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Keep `site`'s entries for `days` days; audited as `actor`'s change (a setting,
    /// outside the decision model, so it takes no revision).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] unless `days` is positive; [`StoreError::NotFound`] for an
    /// unknown site.
    pub async fn set_retention(&self, actor: &str, site: SiteId, days: u32, now: Timestamp) -> Result<(), StoreError> {
        if days == 0 {
            return Err(StoreError::invalid("retention must be at least one day"));
        }
        let mut tx = self.db.begin().await?;
        let found = match queries::set_retention(tx.conn(), site, days).await? {
            None => false,
            Some(before) => {
                let json = |d: i64| format!("{{\"entries_retention_days\":{d}}}");
                let (before, after) = (json(before), json(i64::from(days)));
                crate::sql::insert_audit(
                    tx.conn(),
                    None,
                    now.as_second(),
                    actor,
                    "set_entries_retention",
                    &site.to_string(),
                    Some(&before),
                    Some(&after),
                )
                .await?;
                tx.commit().await?;
                true
            }
        };
        if found {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                entity: site.to_string(),
            })
        }
    }

    /// How many entries the log holds.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn count(&self) -> Result<u64, StoreError> {
        queries::count(self.db.reader().await?.conn()).await
    }
}

fn csv_line(out: &mut String, e: &StoredEntry) {
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
    let reason = if e.entry.reason.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", e.entry.reason.replace('"', "\"\""))
    } else {
        e.entry.reason.to_string()
    };
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
        e.id,
        e.entry.site.0,
        e.entry.at,
        e.entry.door.0,
        opt(e.entry.person.map(|p| p.0)),
        opt(e.entry.credential.map(|c| c.0)),
        e.entry.method.name(),
        if e.entry.allowed { "allowed" } else { "refused" },
        reason,
        e.entry.revision.0,
        opt(e.entry.iq.map(|(iq, _)| iq.0)),
        e.entry.iq.map(|(_, s)| s.to_string()).unwrap_or_default(),
        e.entry.rule.as_deref().unwrap_or_default(),
    );
}

/// Delete entries past their retention every `interval`.
async fn purger(log: EntriesLog, interval: Duration, clock: Clock, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match log.purge(clock.now()).await {
            Ok(n) => tracing::debug!(deleted = n, "entries past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "entries retention purge failed"),
        }
    }
}

/// Insert `batch` and queue the denied-entry events it raises, stamped `queued_at`, on
/// the background writer if `background`. One transaction, unless a main-writer
/// transaction (a model write) comes to wait for its turn meanwhile: the rows so far are
/// then committed at the end of the statement under way, and the rest go in a new
/// transaction after that one, so a block waits for one statement of 1,000 rows rather
/// than a whole batch. On error, how many rows (from the start) were committed before it.
async fn insert_batch(
    db: &Db,
    batch: &[Entry],
    queued_at: Timestamp,
    background: bool,
) -> Result<(), (usize, StoreError)> {
    let mut done = 0;
    while done < batch.len() {
        let begun = if background {
            db.begin_background().await
        } else {
            db.begin().await
        };
        let mut tx = begun.map_err(|e| (done, e))?;
        let mut end = done;
        loop {
            let next = (end + ROWS_PER_STATEMENT).min(batch.len());
            let chunk = &batch[end..next];
            queries::insert(tx.conn(), chunk).await.map_err(|e| (done, e))?;
            queries::enqueue_denied(tx.conn(), chunk, queued_at)
                .await
                .map_err(|e| (done, e))?;
            end = next;
            if end == batch.len() || db.main_writer_waiting() {
                break;
            }
        }
        tx.commit().await.map_err(|e| (done, e))?;
        done = end;
    }
    Ok(())
}

/// Under load (a batch of at least this many entries) the writer waits up to
/// [`EntriesConfig::linger`] for more before it commits. A quiet log commits at once.
const LINGER_FROM: usize = 256;

/// The default linger. The index pages a batch touches are written to the WAL once per
/// transaction, and each of the (person, at) and (door, at) indexes has an insertion
/// point per person and per door, so larger transactions cost less per entry: on SQLite,
/// 8,192 rows per transaction cost about 9 us of CPU per row and 32,768 rows about
/// 4.8 us (BENCHMARKS.md, section 14). At 100,000 decisions/s a 100 ms linger commits
/// about 10,000 rows at a time; the entries reach queries that much later under load.
const LINGER: Duration = Duration::from_millis(100);

/// A batch goes to the main writer rather than the background one once more than this
/// fraction of the queue (a quarter) waits behind it: a queue that fills because the
/// machine has no spare CPU must not wait for spare CPU to drain.
const BACKLOG_FRACTION: usize = 4;

/// Sorts received messages into the batch and its acknowledgements; whether somebody
/// waits for this batch (a flush or a durable append), which ends the linger.
fn take(msgs: &mut Vec<Msg>, batch: &mut Vec<Entry>, acks: &mut Vec<oneshot::Sender<Result<(), StoreError>>>) -> bool {
    let mut awaited = false;
    for msg in msgs.drain(..) {
        match msg {
            Msg::Entry(e) => batch.push(e),
            Msg::Durable(e, ack) => {
                awaited = true;
                batch.push(e);
                acks.push(ack);
            }
            Msg::Flush(ack) => {
                awaited = true;
                acks.push(ack);
            }
        }
    }
    awaited
}

async fn writer(
    db: Db,
    mut rx: mpsc::Receiver<Msg>,
    config: EntriesConfig,
    counters: Arc<Counters>,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
    done: watch::Sender<bool>,
) {
    let (batch_size, linger) = (config.batch.max(1), config.linger);
    // They grow to the largest batch the load brings, not the configured most.
    let mut msgs = Vec::with_capacity(LINGER_FROM);
    let mut batch = Vec::with_capacity(LINGER_FROM);
    let mut acks = Vec::new();
    let mut closing = false;
    // Once a batch is dropped (only while closing), every later acknowledgement reports
    // it: a flush answers for everything queued before it, dropped entries included.
    let mut dropped: Option<StoreError> = None;
    loop {
        if closing {
            // Drain what is queued, then stop.
            rx.close();
        }
        let received = tokio::select! {
            n = rx.recv_many(&mut msgs, batch_size) => n,
            _ = shutdown.changed(), if !closing => {
                closing = true;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let mut awaited = take(&mut msgs, &mut batch, &mut acks);
        if !closing && !awaited && batch.len() >= LINGER_FROM {
            let until = tokio::time::Instant::now() + linger;
            while !awaited && batch.len() < batch_size {
                let room = batch_size - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut msgs, room) => match n {
                        0 => break,
                        _ => awaited = take(&mut msgs, &mut batch, &mut acks),
                    },
                    () = tokio::time::sleep_until(until) => break,
                    // Closing commits what it holds now rather than after the linger.
                    _ = shutdown.changed() => {
                        closing = true;
                        break;
                    }
                }
            }
        }
        // A loaded batch nobody waits for, while the queue is not backing up, goes to the
        // background writer, at idle priority: its tens of milliseconds of CPU then never
        // delay a decision. A small batch (a few rows: cheap, and seen at once in the
        // log), a waiter, closing, a filling queue or a retry take the main writer, so
        // that none of them depends on spare CPU.
        let mut background = db.has_background_writer()
            && batch.len() >= LINGER_FROM
            && !awaited
            && !closing
            && rx.len() < config.queue / BACKLOG_FRACTION;
        let mut backoff = Duration::from_millis(20);
        let mut attempts = 0u32;
        // Rows of the batch committed so far: a retry inserts only the rest (entries
        // without an IQ sequence number have no key that would skip them).
        let mut committed = 0;
        let result = loop {
            if committed == batch.len() {
                break Ok(());
            }
            let rest = &batch[committed..];
            let (inserted, failure) = match insert_batch(&db, rest, clock.now(), background).await {
                Ok(()) => (rest.len(), None),
                Err((inserted, e)) => (inserted, Some(e)),
            };
            committed += inserted;
            counters.committed.fetch_add(inserted as u64, Ordering::AcqRel);
            if background {
                counters
                    .committed_in_background
                    .fetch_add(inserted as u64, Ordering::AcqRel);
            }
            match failure {
                None => break Ok(()),
                Some(e) => {
                    counters.failed_batches.fetch_add(1, Ordering::AcqRel);
                    attempts = attempts.saturating_add(1);
                    tracing::warn!(error = %e, entries = batch.len() - committed, attempts, "entries batch failed; retrying");
                    // While running, retry until the cause is gone. When closing, give up
                    // after a few tries and say so: those entries were never acknowledged.
                    if closing && attempts >= 5 {
                        tracing::error!(
                            entries = batch.len() - committed,
                            "store closing: unwritten entries dropped"
                        );
                        break Err(e);
                    }
                    background = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        batch.clear();
        if let Err(e) = &result {
            dropped.get_or_insert_with(|| e.clone());
        }
        let result = dropped.clone().map_or(result, Err);
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
    done.send_replace(true);
}

pub(crate) mod queries {
    //! The SQL of the entries log, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const SELECT: &str = "SELECT id, site, at, door, person, credential, method, allowed, reason, revision, iq, iq_seq, rule FROM entries";

    /// An entry from a row of [`SELECT`].
    fn entry_from(r: &impl Columns) -> Result<StoredEntry, StoreError> {
        stored_entry(
            r.col(0)?,
            r.col(1)?,
            r.col(2)?,
            r.col(3)?,
            r.col(4)?,
            r.col(5)?,
            r.col(6)?,
            r.col(7)?,
            r.col(8)?,
            r.col(9)?,
            r.col(10)?,
            r.col(11)?,
            r.col(12)?,
        )
    }

    /// Insert `batch`; an (IQ, sequence) pair already stored is skipped.
    ///
    /// On SQLite the statement is `INSERT OR IGNORE`, not `ON CONFLICT DO NOTHING`: the
    /// latter leaves the NOT NULL constraints able to abort a multi-row statement, so
    /// SQLite keeps a statement journal, a copy of every page before the statement first
    /// changes it. Without it the writer's CPU per entry fell by about a third
    /// (BENCHMARKS.md, section 14). The writer never binds NULL to a NOT NULL column, so
    /// the two skip the same rows: the (IQ, sequence) pairs already stored.
    pub(super) async fn insert(conn: Conn<'_>, batch: &[Entry]) -> Result<(), StoreError> {
        const COLUMNS: &str = "entries (site, at, door, person, credential, method, allowed, reason, revision, \
                               iq, iq_seq, rule) ";
        each_backend!(conn, |conn, ops| {
            for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                let mut qb = sqlx::QueryBuilder::<ops::Db>::new(if ops::PG {
                    "INSERT INTO "
                } else {
                    "INSERT OR IGNORE INTO "
                });
                qb.push(COLUMNS);
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(i64::from(e.site.0))
                        .push_bind(e.at.as_microsecond())
                        .push_bind(i64::from(e.door.0))
                        .push_bind(e.person.map(|p| i64::from(p.0)))
                        .push_bind(e.credential.map(|c| i64::from(c.0)))
                        .push_bind(i64::from(e.method.code()))
                        .push_bind(e.allowed)
                        .push_bind(e.reason.to_string())
                        .push_bind(i64::try_from(e.revision.0).unwrap_or(i64::MAX))
                        .push_bind(e.iq.map(|(iq, _)| i64::from(iq.0)))
                        .push_bind(e.iq.map(|(_, seq)| i64::try_from(seq).unwrap_or(i64::MAX)))
                        .push_bind(e.rule.clone());
                });
                if ops::PG {
                    qb.push(" ON CONFLICT DO NOTHING");
                }
                qb.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    /// Queue an `entry.denied` event, stamped `queued_at`, for each refused entry of
    /// `batch` whose site listens for it (an enabled e-mail setting or a webhook
    /// subscribed to it), in the transaction that logs the entries. Sites that do not
    /// listen cost one query.
    pub(super) async fn enqueue_denied(
        conn: Conn<'_>,
        batch: &[Entry],
        queued_at: Timestamp,
    ) -> Result<(), StoreError> {
        if batch.iter().all(|e| e.allowed) {
            return Ok(());
        }
        let queued_at = queued_at.as_second();
        each_backend!(conn, |conn| {
            let listening: Vec<i64> = sqlx::query_scalar(
                "SELECT site FROM notification_settings WHERE enabled = $1 AND channel = 'email' \
                 AND event_kind IN ('entry.denied', 'entry.*', '*') \
                 UNION SELECT site FROM webhooks WHERE events LIKE '%\"entry.denied\"%' \
                 OR events LIKE '%\"entry.*\"%' OR events LIKE '%\"*\"%'",
            )
            .bind(true)
            .fetch_all(&mut *conn)
            .await?;
            for e in batch
                .iter()
                .filter(|e| !e.allowed && listening.contains(&i64::from(e.site.0)))
            {
                let at = e.at.as_second();
                let data = serde_json::json!({
                    "door": e.door.0, "person": e.person.map(|p| p.0),
                    "credential": e.credential.map(|c| c.0), "method": e.method.code(),
                    "reason": e.reason, "detail": e.reason, "at": at, "iq": e.iq.map(|(iq, _)| iq.0),
                    "rule": e.rule,
                });
                crate::sql::enqueue_event(Conn::from(&mut *conn), e.site, "entry.denied", at, queued_at, data).await?;
            }
            Ok(())
        })
    }

    /// One page of entries, newest first.
    pub(super) async fn page(conn: Conn<'_>, q: &EntryQuery) -> Result<Vec<StoredEntry>, StoreError> {
        each_backend!(conn, |conn, ops| {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new(SELECT);
            qb.push(" WHERE site = ").push_bind(i64::from(q.site.0));
            if let Some(p) = q.person {
                qb.push(" AND person = ").push_bind(i64::from(p.0));
            }
            if let Some(d) = q.door {
                qb.push(" AND door = ").push_bind(i64::from(d.0));
            }
            if let Some(from) = q.from {
                qb.push(" AND at >= ").push_bind(from.as_microsecond());
            }
            if let Some(until) = q.until {
                qb.push(" AND at < ").push_bind(until.as_microsecond());
            }
            if let Some(allowed) = q.allowed {
                qb.push(" AND allowed = ").push_bind(allowed);
            }
            if let Some(c) = q.cursor {
                qb.push(" AND (at < ")
                    .push_bind(c.at)
                    .push(" OR (at = ")
                    .push_bind(c.at)
                    .push(" AND id < ")
                    .push_bind(c.id)
                    .push("))");
            }
            qb.push(" ORDER BY at DESC, id DESC LIMIT ")
                .push_bind(i64::from(q.limit));
            let rows = qb.build().fetch_all(&mut *conn).await?;
            rows.iter().map(entry_from).collect()
        })
    }

    /// A site's entries (only `person`'s, if given) with an id above `after`, in id order,
    /// at most `limit`.
    pub(crate) async fn after(
        conn: Conn<'_>,
        site: SiteId,
        person: Option<PersonId>,
        after: crate::EntryId,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        each_backend!(conn, |conn, ops| {
            let mut qb = sqlx::QueryBuilder::<ops::Db>::new(SELECT);
            qb.push(" WHERE site = ").push_bind(i64::from(site.0));
            if let Some(p) = person {
                qb.push(" AND person = ").push_bind(i64::from(p.0));
            }
            qb.push(" AND id > ").push_bind(after.get());
            qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
            let rows = qb.build().fetch_all(&mut *conn).await?;
            rows.iter().map(entry_from).collect()
        })
    }

    /// Delete entries past their site's retention at `now`.
    pub(super) async fn purge(conn: Conn<'_>, now: Timestamp) -> Result<u64, StoreError> {
        each_backend!(conn, |conn| {
            let deleted = sqlx::query(
                "DELETE FROM entries WHERE at < $1 - COALESCE((SELECT s.entries_retention_days FROM sites s \
                 WHERE s.id = entries.site), $2) * 86400000000",
            )
            .bind(now.as_microsecond())
            .bind(DEFAULT_RETENTION_DAYS)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(deleted)
        })
    }

    /// Set a site's retention; the previous one, or `None` if the site does not exist.
    pub(super) async fn set_retention(conn: Conn<'_>, site: SiteId, days: u32) -> Result<Option<i64>, StoreError> {
        each_backend!(conn, |conn| {
            let before: Option<i64> = sqlx::query_scalar("SELECT entries_retention_days FROM sites WHERE id = $1")
                .bind(i64::from(site.0))
                .fetch_optional(&mut *conn)
                .await?;
            if before.is_some() {
                sqlx::query("UPDATE sites SET entries_retention_days = $1 WHERE id = $2")
                    .bind(i64::from(days))
                    .bind(i64::from(site.0))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(before)
        })
    }

    /// How many entries the log holds.
    pub(super) async fn count(conn: Conn<'_>) -> Result<u64, StoreError> {
        each_backend!(conn, |conn| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries")
                .fetch_one(&mut *conn)
                .await?;
            u64::try_from(n).map_err(StoreError::internal)
        })
    }
}
