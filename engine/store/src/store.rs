//! The store: the write path and the follower of one node.
//!
//! A [`Store`] owns the database handle and the node's published [`SnapshotCell`].
//!
//! **Write path.** [`Model::write`] takes the node's apply lock, opens a transaction,
//! bumps the single-row revision counter (which locks it until commit: writers of every
//! node are serialised there), catches the snapshot up to the revision before, validates
//! the change against that snapshot with the core, writes the entity rows, the
//! `change_log` row and the audit row, commits, applies the change to the snapshot and
//! returns the revision. When it returns, every decision on this node sees the change.
//!
//! **Follower.** A background task applies `change_log` rows written by other nodes in
//! revision order: woken by PostgreSQL `NOTIFY`, and polling anyway, so a lost
//! notification costs at most one poll interval. Since it always reads "after the last
//! applied revision", a node that lost its connection catches up when it is back.

use crate::auth_cache::{AUTH_CHANGED, AuthCache};
use crate::clock::Clock;
use crate::codec::{self, Logged, PolicyChange};
use crate::db::Db;
use crate::dispatch::Conn;
use crate::entries::{EntriesConfig, EntriesLog};
use crate::error::StoreError;
use crate::feed::{Feed, FeedItem};
use crate::sql;
use crate::target::{self, Target};
use keyway_core::{Change, Record, Revision, Snapshot, SnapshotCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// This node's name; on PostgreSQL its connections carry `application_name`
    /// `keyway-<node>`.
    pub node: String,
    /// How often the follower polls the change log when no notification comes.
    pub poll_interval: Duration,
    /// Connections in the (read) pool.
    pub max_connections: u32,
    /// The entries log's queue.
    pub entries: EntriesConfig,
    /// Revisions the change feed keeps in memory for subscribers; one that falls further
    /// behind is told so ([`crate::FeedError::Behind`]).
    pub feed_capacity: usize,
    /// How long authentication (sessions, API tokens, memberships) is served from the
    /// node's cache at most; zero reads the database on every request. Changes invalidate
    /// the cache at once whatever this is (see `auth_cache`).
    pub auth_cache_ttl: Duration,
    /// Where the times the store stamps on its own come from (see [`Clock`]).
    pub clock: Clock,
}

impl StoreConfig {
    /// A config for `url` with the defaults: node `main`, polling every 500 ms.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            node: "main".to_owned(),
            poll_interval: Duration::from_millis(500),
            max_connections: 8,
            entries: EntriesConfig::default(),
            feed_capacity: crate::feed::DEFAULT_FEED_CAPACITY,
            auth_cache_ttl: crate::auth_cache::DEFAULT_AUTH_CACHE_TTL,
            clock: Clock::system(),
        }
    }

    /// The same config with another node name.
    #[must_use]
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }
}

/// What a write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The revision the write created; the node's snapshot is at least this new.
    pub revision: Revision,
    /// The id the store gave a created entity.
    pub id: Option<u32>,
}

/// Where a node's follower stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The revision of the published snapshot.
    pub applied: Revision,
    /// The newest revision this node has seen committed in the database.
    pub head: Revision,
    /// `head - applied`: how many revisions the snapshot is behind.
    pub lag: u64,
    /// The follower's last failure, cleared by its next success.
    pub last_error: Option<String>,
}

/// One audit row: who changed what, when, before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Its id, increasing.
    pub id: crate::AuditId,
    /// The revision of a model change.
    pub revision: Option<Revision>,
    /// When, to the second.
    pub at: jiff::Timestamp,
    /// Who.
    pub actor: String,
    /// What, e.g. `block_person`.
    pub action: String,
    /// Which entity, e.g. `person:7`.
    pub entity: String,
    /// The entity before, as JSON.
    pub before: Option<String>,
    /// The entity after, as JSON.
    pub after: Option<String>,
}

/// An event a write queues in its own transaction when the snapshot it yields calls for
/// one: the follow-up sees the snapshot before and after the write (both exact, since
/// writes are serialised), so a threshold crossing is noticed once, and the write and its
/// event commit or fail together.
pub type FollowUp = Box<dyn FnOnce(&Snapshot, &Snapshot) -> Option<PendingEvent> + Send>;

/// An event a [`FollowUp`] asks to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The site it happened on.
    pub site: keyway_core::SiteId,
    /// Its kind, e.g. `voucher.near_cap`.
    pub kind: &'static str,
    /// Its data, as the notifier and webhooks see it.
    pub data: serde_json::Value,
}

pub(crate) enum WriteOp {
    Change(Change, Option<FollowUp>),
    Create(Record, Option<FollowUp>),
    Import(Vec<Record>),
    Policy(PolicyWrite),
}

/// A policy write: rows of the policy tables plus a change-log row, in one transaction.
pub(crate) enum PolicyWrite {
    Activate(crate::BundleId),
    Attach(crate::policy::DoorRuleChain),
    Detach(keyway_core::DoorId),
    Hours(keyway_core::SiteId, Option<keyway_core::Schedule>),
    ResetRuleState {
        rule: String,
        site: keyway_core::SiteId,
        scope: codec::RuleScope,
    },
}

/// What an import committed, for publication after the commit.
pub(crate) struct ImportCommitted {
    base: Arc<Snapshot>,
    next: Box<Snapshot>,
    changes: Vec<(Revision, Change)>,
}

/// What the write path committed, for publication after the commit.
pub(crate) enum Committed {
    /// A model change, validated and applied once: `next` is `base` with the change.
    Model {
        change: Change,
        base: Arc<Snapshot>,
        next: Box<Snapshot>,
    },
    /// A bulk import: the snapshot is rebuilt from the tables.
    Reload,
    /// A policy change: the snapshot is unchanged.
    Policy(PolicyChange),
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) cell: Arc<SnapshotCell>,
    /// Held by whoever applies to the cell: the writer (across its transaction) and the
    /// follower. Revisions are applied one by one, in order.
    apply_lock: Mutex<()>,
    applied: watch::Sender<u64>,
    head: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    poll_interval: Duration,
    /// Whether a compaction is running (at most one at a time).
    compacting: Arc<std::sync::atomic::AtomicBool>,
    /// Nanoseconds from the last local commit to its snapshot being published.
    last_publish_nanos: AtomicU64,
    /// The last full load.
    last_load: std::sync::Mutex<LoadTimings>,
    /// Every applied revision, in order, for subscribers.
    pub(crate) feed: Feed,
    /// Sessions, tokens and memberships read for authentication (see `auth_cache`).
    pub(crate) auth: Arc<AuthCache>,
    /// The time of the store's own stamps.
    pub(crate) clock: Clock,
}

/// One node's store: the database plus the node's published snapshot.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    entries: EntriesLog,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("applied", &*self.inner.applied.borrow())
            .finish_non_exhaustive()
    }
}

/// The change that creates `record` under `id`.
fn create_change(record: Record, id: u32) -> Result<Change, StoreError> {
    Ok(match record {
        Record::Site(mut r) => {
            r.id.0 = id;
            Change::PutSite(r)
        }
        Record::Calendar(mut r) => {
            r.id.0 = id;
            Change::PutCalendar(r)
        }
        Record::Iq(mut r) => {
            r.id.0 = id;
            Change::PutIq(r)
        }
        Record::Door(mut r) => {
            r.id.0 = id;
            Change::PutDoor(r)
        }
        Record::Person(mut r) => {
            r.id.0 = id;
            Change::PutPerson(r)
        }
        Record::Credential(mut r) => {
            r.id.0 = id;
            Change::PutCredential(r)
        }
        Record::Schedule(mut r) => {
            r.id.0 = id;
            Change::PutSchedule(r)
        }
        Record::Group(mut r) => {
            r.id.0 = id;
            Change::PutGroup(r)
        }
        Record::Roles(_) => return Err(StoreError::invalid("role flags are set, not created")),
    })
}

// ---- the write path and the follower ------------------------------------------

/// Apply every change-log row after the node's revision. Caller holds the apply lock.
pub(crate) async fn catch_up(inner: &Inner, mut conn: Conn<'_>) -> Result<(), StoreError> {
    'outer: loop {
        let applied = *inner.applied.borrow();
        let rows = sql::changes_after(conn.reborrow(), applied, 1000).await?;
        if rows.is_empty() {
            break;
        }
        for (rev, text) in rows {
            let expected = inner.applied.borrow().saturating_add(1);
            if rev != expected {
                return Err(StoreError::internal(format!(
                    "change log gap: expected `r{expected}`, found `r{rev}`"
                )));
            }
            let logged = codec::decode(&text)?;
            let applied_ok = match &logged {
                Logged::Change(change) => match inner.cell.apply(Revision(rev), change.clone()) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(error = %e, revision = rev, "change refused by the snapshot; reloading");
                        false
                    }
                },
                Logged::Policy(_) => true,
                Logged::Reload => false,
            };
            if !applied_ok {
                reload(inner).await?;
                continue 'outer;
            }
            inner.applied.send_replace(rev);
            inner.feed.publish(FeedItem::new(Revision(rev), logged));
        }
    }
    let head = sql::head(conn.reborrow()).await?;
    inner.head.fetch_max(head, Ordering::AcqRel);
    Ok(())
}

/// The write path, in `tx`. Caller holds the apply lock.
pub(crate) async fn write(
    inner: &Inner,
    mut tx: Conn<'_>,
    actor: &str,
    op: WriteOp,
) -> Result<(u64, Option<u32>, Committed), StoreError> {
    let rev = sql::bump_revision(tx.reborrow()).await?;
    catch_up(inner, tx.reborrow()).await?;
    let applied = *inner.applied.borrow();
    if applied.saturating_add(1) != rev {
        return Err(StoreError::internal(format!(
            "revision `r{rev}` taken while the snapshot is at `r{applied}`"
        )));
    }
    // The change log and the audit stamp a model write with the commit's own time,
    // read under the writers' lock so that it follows revision order.
    let stamp = inner.clock.now();
    let now = stamp.as_second();
    let (change, id, follow_up) = match op {
        WriteOp::Import(records) => {
            sql::import(tx.reborrow(), &records).await?;
            sql::insert_change_log(tx.reborrow(), rev, now, actor, &codec::encode(&Logged::Reload)?).await?;
            let summary = format!("{{\"records\":{}}}", records.len());
            sql::insert_audit(
                tx.reborrow(),
                Some(rev),
                now,
                actor,
                "import",
                "model",
                None,
                Some(&summary),
            )
            .await?;
            sql::notify(tx.reborrow(), rev).await?;
            return Ok((rev, None, Committed::Reload));
        }
        WriteOp::Policy(write) => {
            let change = policy_write(tx.reborrow(), actor, write, stamp).await?;
            sql::insert_change_log(
                tx.reborrow(),
                rev,
                now,
                actor,
                &codec::encode(&Logged::Policy(change.clone()))?,
            )
            .await?;
            sql::notify(tx.reborrow(), rev).await?;
            return Ok((rev, None, Committed::Policy(change)));
        }
        WriteOp::Create(record, then) => {
            let id = sql::next_id(tx.reborrow(), Target::of_record(&record).table()).await?;
            (create_change(record, id)?, Some(id), then)
        }
        WriteOp::Change(change, then) => (change, None, then),
    };
    let target = Target::of(&change);
    let before = sql::load_record(tx.reborrow(), target).await?;
    let blocked_site = match (&change, &before) {
        (Change::BlockPerson(_), Some(Record::Person(p))) if !p.blocked => Some(p.site),
        _ => None,
    };
    // The core decides what is valid: the change must apply to the snapshot at the
    // previous revision, or nothing is written. The snapshot it yields is the one
    // published after the commit: the change is applied once.
    let base = inner.cell.load_full();
    let next = Box::new(base.apply(Revision(rev), &change)?);
    sql::write_change(tx.reborrow(), &change).await?;
    let after = sql::load_record(tx.reborrow(), target).await?;
    let before = before.as_ref().map(codec::record_json).transpose()?;
    let after = after.as_ref().map(codec::record_json).transpose()?;
    sql::insert_change_log(
        tx.reborrow(),
        rev,
        now,
        actor,
        &codec::encode(&Logged::Change(change.clone()))?,
    )
    .await?;
    sql::insert_audit(
        tx.reborrow(),
        Some(rev),
        now,
        actor,
        target::action(&change),
        &target.to_string(),
        before.as_deref(),
        after.as_deref(),
    )
    .await?;
    // A block is an event the site's owner may want to hear of (the FAQ); it is
    // queued with the block, so neither is lost without the other.
    if let (Change::BlockPerson(person), Some(site)) = (&change, blocked_site) {
        let data = serde_json::json!({"person": person.0, "by": actor, "revision": rev});
        sql::enqueue_event(tx.reborrow(), site, "person.blocked", now, now, data).await?;
    }
    if let Some(event) = follow_up.and_then(|f| f(&base, &next)) {
        sql::enqueue_event(tx.reborrow(), event.site, event.kind, now, now, event.data).await?;
    }
    sql::notify(tx.reborrow(), rev).await?;
    Ok((rev, id, Committed::Model { change, base, next }))
}

/// The import write path, in `tx`: every change of `rows`, one revision each,
/// validated by the core as one batch on the snapshot at the revision before.
/// Caller holds the apply lock.
pub(crate) async fn write_import(
    inner: &Inner,
    mut tx: Conn<'_>,
    actor: &str,
    site: keyway_core::SiteId,
    rows: Vec<crate::import::ImportPerson>,
    follow_up: Option<FollowUp>,
) -> Result<(Vec<crate::import::Imported>, Option<ImportCommitted>), StoreError> {
    use crate::import::{ImportTag, Imported};
    use keyway_core::{CredentialId, CredentialKind, CredentialRecord, PersonId, PersonRecord};
    let mut next_person = sql::next_id(tx.reborrow(), "people").await?;
    let mut next_credential = sql::next_id(tx.reborrow(), "credentials").await?;
    let take = |next: &mut u32| {
        let id = *next;
        *next = next
            .checked_add(1)
            .ok_or_else(|| StoreError::internal("ids exhausted"))?;
        Ok::<u32, StoreError>(id)
    };
    let mut changes = Vec::new();
    let mut imported = Vec::with_capacity(rows.len());
    let mut named = Vec::new();
    let mut made = 0usize;
    for row in rows {
        let person = match row.person {
            Some(p) => p,
            None => {
                let id = PersonId(take(&mut next_person)?);
                changes.push(Change::PutPerson(PersonRecord {
                    id,
                    site,
                    role: row.role,
                    blocked: false,
                }));
                named.push((id, row.name, row.external_id));
                made += 1;
                id
            }
        };
        let mut tags = Vec::with_capacity(row.tags.len());
        for tag in row.tags {
            let record = match tag {
                ImportTag::New(secret) => CredentialRecord {
                    id: CredentialId(take(&mut next_credential)?),
                    site,
                    kind: CredentialKind::Tag,
                    secret,
                    owner: Some(person),
                    valid_from: None,
                    valid_until: None,
                    offline_access: false,
                    revoked: false,
                },
                ImportTag::Assign(existing) => CredentialRecord {
                    owner: Some(person),
                    ..existing
                },
            };
            tags.push(record.id);
            changes.push(Change::PutCredential(record));
        }
        for group in row.groups {
            changes.push(Change::Grant { person, group });
        }
        imported.push(Imported { person, tags });
    }
    if changes.is_empty() {
        return Ok((imported, None));
    }
    let count = changes.len() as u64;
    let last = sql::bump_revision_by(tx.reborrow(), count).await?;
    let first = last - (count - 1);
    catch_up(inner, tx.reborrow()).await?;
    let applied = *inner.applied.borrow();
    if applied.saturating_add(1) != first {
        return Err(StoreError::internal(format!(
            "revision `r{first}` taken while the snapshot is at `r{applied}`"
        )));
    }
    let base = inner.cell.load_full();
    let batch = changes.clone();
    let from = Arc::clone(&base);
    let next = tokio::task::spawn_blocking(move || from.apply_batch(Revision(first), &batch))
        .await
        .map_err(StoreError::internal)?
        .map_err(|(_, e)| StoreError::from(e))?;
    let now = inner.clock.now().as_second();
    let mut logged = Vec::with_capacity(changes.len());
    for (i, change) in changes.into_iter().enumerate() {
        let rev = first + i as u64;
        sql::write_change(tx.reborrow(), &change).await?;
        sql::insert_change_log(
            tx.reborrow(),
            rev,
            now,
            actor,
            &codec::encode(&Logged::Change(change.clone()))?,
        )
        .await?;
        let after = match &change {
            Change::PutPerson(r) => Some(codec::record_json(&Record::Person(r.clone()))?),
            Change::PutCredential(r) => Some(codec::record_json(&Record::Credential(r.clone()))?),
            _ => None,
        };
        let target = Target::of(&change).to_string();
        sql::insert_audit(
            tx.reborrow(),
            Some(rev),
            now,
            actor,
            target::action(&change),
            &target,
            None,
            after.as_deref(),
        )
        .await?;
        logged.push((Revision(rev), change));
    }
    for (person, name, external_id) in &named {
        sql::set_imported_person(tx.reborrow(), *person, name, external_id).await?;
    }
    let summary = serde_json::json!({
        "site": site.0, "rows": imported.len(), "people_made": made,
        "first_revision": first, "last_revision": last,
    })
    .to_string();
    sql::insert_audit(
        tx.reborrow(),
        Some(last),
        now,
        actor,
        "import",
        &format!("site:{}", site.0),
        None,
        Some(&summary),
    )
    .await?;
    if let Some(event) = follow_up.and_then(|f| f(&base, &next)) {
        sql::enqueue_event(tx.reborrow(), event.site, event.kind, now, now, event.data).await?;
    }
    sql::notify(tx.reborrow(), last).await?;
    Ok((
        imported,
        Some(ImportCommitted {
            base,
            next: Box::new(next),
            changes: logged,
        }),
    ))
}

/// The policy rows of `write`, audited; answers the change-log entry.
async fn policy_write(
    mut tx: Conn<'_>,
    actor: &str,
    write: PolicyWrite,
    now: jiff::Timestamp,
) -> Result<PolicyChange, StoreError> {
    Ok(match write {
        PolicyWrite::Activate(id) => {
            let before = crate::policy::queries::bundle(tx.reborrow(), id)
                .await?
                .ok_or_else(|| crate::policy::bundle_not_found(id))?;
            crate::policy::queries::activate(tx.reborrow(), actor, &before, now).await?;
            PolicyChange::BundleActivated {
                bundle: id,
                site: before.site,
            }
        }
        PolicyWrite::Attach(after) => {
            let before = crate::policy::queries::door_rule_chain(tx.reborrow(), after.door).await?;
            crate::policy::queries::put_door_rule_chain(tx.reborrow(), actor, before.as_ref(), &after, now).await?;
            PolicyChange::DoorRule {
                door: after.door,
                rules: after.rules,
            }
        }
        PolicyWrite::Detach(door) => {
            let before = crate::policy::queries::door_rule_chain(tx.reborrow(), door)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    entity: format!("door_rule:{}", door.0),
                })?;
            crate::policy::queries::delete_door_rule_chain(tx.reborrow(), actor, &before, now).await?;
            PolicyChange::DoorRule {
                door,
                rules: Vec::new(),
            }
        }
        PolicyWrite::Hours(site, hours) => {
            crate::policy::queries::put_opening_hours(tx.reborrow(), actor, site, hours.as_ref(), now).await?;
            PolicyChange::OpeningHours { site, hours }
        }
        PolicyWrite::ResetRuleState { rule, site, scope } => {
            crate::policy::queries::audit_rule_state_reset(tx.reborrow(), actor, &rule, site, scope, now).await?;
            PolicyChange::RuleStateReset { rule, site, scope }
        }
    })
}

/// The parts of the model read in parallel at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Calendars, sites, IQs, schedules, doors, groups, roles.
    Structure,
    /// People.
    People,
    /// Credentials.
    Credentials,
}

impl Part {
    /// Every part: the whole model.
    pub(crate) const ALL: [Part; 3] = [Part::Structure, Part::People, Part::Credentials];
}

/// Read the three parts of the model on three connections at once. Each part is read in
/// its own transaction, with the revision counter; every model write bumps the counter,
/// so equal counters mean the parts are of one revision. Otherwise (a write landed
/// between the starts), read everything again in one transaction.
async fn load_parallel(db: &Db) -> Result<(u64, Vec<Record>), StoreError> {
    // Each part is its own task, so decoding the parts' rows (JSON for the big tables)
    // runs on all runtime threads rather than on the caller's.
    let part = |part: Part| {
        let db = db.clone();
        tokio::spawn(async move { sql::load(db.reader().await?.conn(), &[part]).await })
    };
    let (a, b, c) = tokio::join!(part(Part::Structure), part(Part::People), part(Part::Credentials));
    let joined =
        |r: Result<Result<(u64, Vec<Record>), StoreError>, tokio::task::JoinError>| r.map_err(StoreError::internal)?;
    let ((ha, structure), (hb, people), (hc, credentials)) = (joined(a)?, joined(b)?, joined(c)?);
    if ha == hb && hb == hc {
        let mut records = Vec::with_capacity(structure.len() + people.len() + credentials.len());
        records.extend(structure);
        records.extend(people);
        records.extend(credentials);
        Ok((ha, records))
    } else {
        sql::load(db.reader().await?.conn(), &Part::ALL).await
    }
}

/// Read every record and build a snapshot.
async fn load_snapshot(db: &Db) -> Result<(Snapshot, LoadTimings), StoreError> {
    let started = std::time::Instant::now();
    // SQLite too: with people and credentials read in JSON chunks, the work is in
    // SQLite's C code on each connection's worker thread, and three readers use the
    // cores (measured at 1M credentials: 3.9 s read on one connection, 2.1 s on three).
    let (head, records) = load_parallel(db).await?;
    let read = started.elapsed();
    let count = records.len();
    let snapshot = tokio::task::spawn_blocking(move || Snapshot::build(Revision(head), records))
        .await
        .map_err(StoreError::internal)?
        .map_err(|e| StoreError::internal(format!("the stored model does not build: {e}")))?;
    let timings = LoadTimings {
        records: count,
        read,
        build: started.elapsed().saturating_sub(read),
    };
    tracing::info!(records = count, read = ?timings.read, build = ?timings.build, "snapshot loaded");
    Ok((snapshot, timings))
}

/// How long the last full load of the snapshot took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// Records read.
    pub records: usize,
    /// Reading them from the database.
    pub read: Duration,
    /// Building the snapshot from them.
    pub build: Duration,
}

/// Rebuild the node's snapshot from the tables. Caller holds the apply lock.
async fn reload(inner: &Inner) -> Result<(), StoreError> {
    let (snapshot, timings) = load_snapshot(&inner.db).await?;
    let rev = snapshot.revision().0;
    inner.cell.replace(snapshot)?;
    *inner
        .last_load
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = timings;
    inner.applied.send_replace(rev);
    inner.head.fetch_max(rev, Ordering::AcqRel);
    inner.feed.publish(FeedItem::new(Revision(rev), Logged::Reload));
    Ok(())
}

impl Store {
    /// Open the database, migrate it, load the snapshot and start the follower and the
    /// entries writer. Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// If the database cannot be opened or migrated, or what it holds does not build.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let db = Db::open(&config.url, &config.node, config.max_connections).await?;
        let (snapshot, timings) = match load_snapshot(&db).await {
            Ok(s) => s,
            Err(e) => {
                db.close().await;
                return Err(e);
            }
        };
        let rev = snapshot.revision().0;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            db: db.clone(),
            cell: Arc::new(SnapshotCell::new(snapshot)),
            apply_lock: Mutex::new(()),
            applied: watch::channel(rev).0,
            head: AtomicU64::new(rev),
            last_error: std::sync::Mutex::new(None),
            shutdown,
            tasks: std::sync::Mutex::new(Vec::new()),
            poll_interval: config.poll_interval,
            compacting: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            last_publish_nanos: AtomicU64::new(0),
            last_load: std::sync::Mutex::new(timings),
            feed: Feed::new(config.feed_capacity),
            auth: Arc::new(AuthCache::new(config.auth_cache_ttl)),
            clock: config.clock.clone(),
        });
        let entries = EntriesLog::start(db, config.entries, config.clock, inner.shutdown.subscribe());
        let store = Store { inner, entries };
        store.spawn_follower();
        Ok(store)
    }

    /// The auth cache's stamp for a read starting now.
    pub(crate) fn auth_stamp(&self) -> crate::auth_cache::Stamp {
        self.inner.auth.stamp(*self.inner.applied.borrow())
    }

    fn spawn_follower(&self) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut handles = Vec::new();
        if let Db::Postgres { options, .. } = &self.inner.db {
            handles.push(tokio::spawn(listen(
                (**options).clone(),
                wake.clone(),
                self.inner.auth.clone(),
                self.inner.shutdown.subscribe(),
            )));
        }
        let weak = Arc::downgrade(&self.inner);
        let mut shutdown = self.inner.shutdown.subscribe();
        let poll = self.inner.poll_interval;
        handles.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                let result = follow_once(&inner).await;
                let mut last = inner
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match result {
                    Ok(()) => *last = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "follower could not catch up");
                        *last = Some(e.to_string());
                    }
                }
            }
        }));
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(handles);
    }

    /// The node's published snapshot: `load()` it for decisions.
    #[must_use]
    pub fn snapshot(&self) -> &Arc<SnapshotCell> {
        &self.inner.cell
    }

    /// The entries log.
    #[must_use]
    pub fn entries(&self) -> &EntriesLog {
        &self.entries
    }

    pub(crate) async fn commit(&self, actor: &str, op: WriteOp) -> Result<Written, StoreError> {
        let inner = &*self.inner;
        let _apply = inner.apply_lock.lock().await;
        let mut tx = inner.db.begin().await?;
        let (rev, id, committed_op) = write(inner, tx.conn(), actor, op).await?;
        tx.commit().await?;
        let committed = std::time::Instant::now();
        match committed_op {
            Committed::Model { change, base, next } => {
                let logged = Logged::Change(change.clone());
                if let Err(e) = inner.cell.publish_applied(&base, *next, Revision(rev), change) {
                    // Cannot happen: the change applied to this very snapshot in the
                    // transaction, and the apply lock kept every other applier out.
                    tracing::error!(error = %e, "committed change refused by the snapshot; reloading");
                    reload(inner).await?;
                } else {
                    inner.applied.send_replace(rev);
                    inner.feed.publish(FeedItem::new(Revision(rev), logged));
                }
                let nanos = u64::try_from(committed.elapsed().as_nanos()).unwrap_or(u64::MAX);
                inner.last_publish_nanos.store(nanos, Ordering::Release);
            }
            Committed::Policy(change) => {
                inner.applied.send_replace(rev);
                inner.feed.publish(FeedItem::new(Revision(rev), Logged::Policy(change)));
            }
            Committed::Reload => reload(inner).await?,
        }
        inner.head.fetch_max(rev, Ordering::AcqRel);
        self.maybe_compact();
        Ok(Written {
            revision: Revision(rev),
            id,
        })
    }

    /// Run an import's transaction and publish what it committed (see
    /// [`Model::import_people`]).
    pub(crate) async fn commit_import(
        &self,
        actor: &str,
        site: keyway_core::SiteId,
        rows: Vec<crate::import::ImportPerson>,
        follow_up: Option<FollowUp>,
    ) -> Result<Vec<crate::import::Imported>, StoreError> {
        let inner = &*self.inner;
        let _apply = inner.apply_lock.lock().await;
        let mut tx = inner.db.begin().await?;
        let (imported, committed) = write_import(inner, tx.conn(), actor, site, rows, follow_up).await?;
        tx.commit().await?;
        let Some(ImportCommitted { base, next, changes }) = committed else {
            return Ok(imported);
        };
        let Some(last) = changes.last().map(|(revision, _)| *revision) else {
            return Ok(imported);
        };
        if let Err(e) = inner.cell.publish_applied_batch(&base, *next, &changes) {
            tracing::error!(error = %e, "committed import refused by the snapshot; reloading");
            reload(inner).await?;
        } else {
            inner.applied.send_replace(last.0);
            for (revision, change) in changes {
                inner.feed.publish(FeedItem::new(revision, Logged::Change(change)));
            }
        }
        inner.head.fetch_max(last.0, Ordering::AcqRel);
        self.maybe_compact();
        Ok(imported)
    }

    fn maybe_compact(&self) {
        if self.inner.cell.needs_compaction() && !self.inner.compacting.swap(true, Ordering::AcqRel) {
            let cell = self.inner.cell.clone();
            let compacting = self.inner.compacting.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = cell.compact() {
                    tracing::warn!(error = %e, "snapshot compaction failed");
                }
                compacting.store(false, Ordering::Release);
            });
        }
    }

    /// How long the last full load of the snapshot (at start, or after an import) took.
    #[must_use]
    pub fn last_load(&self) -> LoadTimings {
        *self
            .inner
            .last_load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long the last local write took from its COMMIT returning to its snapshot being
    /// published (the window in which a decision could still use the previous revision).
    #[must_use]
    pub fn last_publish_latency(&self) -> Duration {
        Duration::from_nanos(self.inner.last_publish_nanos.load(Ordering::Acquire))
    }

    /// Catch up with the change log now, without waiting for the next poll.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn catch_up(&self) -> Result<Revision, StoreError> {
        follow_once(&self.inner).await?;
        Ok(Revision(*self.inner.applied.borrow()))
    }

    /// Wait until this node's snapshot is at `revision` or newer, up to `timeout`.
    /// Returns whether it got there.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.inner.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision.0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Where this node's follower stands.
    #[must_use]
    pub fn status(&self) -> NodeStatus {
        let applied = *self.inner.applied.borrow();
        let head = self.inner.head.load(Ordering::Acquire).max(applied);
        NodeStatus {
            applied: Revision(applied),
            head: Revision(head),
            lag: head.saturating_sub(applied),
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Limit the SQLite file to `pages` pages (`None`: no limit beyond SQLite's own). For
    /// operators capping disk use, and for testing a full disk. The cap holds for every
    /// writer connection, including ones the pool opens later. No-op on PostgreSQL.
    ///
    /// # Errors
    /// If the pragma cannot be run.
    pub async fn set_sqlite_page_limit(&self, pages: Option<u32>) -> Result<(), StoreError> {
        if let Db::Sqlite {
            write,
            background,
            page_limit,
            ..
        } = &self.inner.db
        {
            page_limit.store(pages.unwrap_or(0), Ordering::Release);
            let pages = pages.unwrap_or(u32::MAX >> 1);
            let pragma = format!("PRAGMA max_page_count = {pages}");
            sqlx::query(&pragma).execute(write).await?;
            if let Some(background) = background {
                sqlx::query(&pragma).execute(background).await?;
            }
        }
        Ok(())
    }

    /// Stop the background tasks (flushing the entries queue) and close the database.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        self.entries.closed().await;
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        self.inner.db.close().await;
    }
}

/// One round of the follower: take a connection, then the apply lock, then catch up.
async fn follow_once(inner: &Inner) -> Result<(), StoreError> {
    let mut reader = inner.db.reader().await?;
    let _apply = inner.apply_lock.lock().await;
    catch_up(inner, reader.conn()).await
}

/// The PostgreSQL channel writers notify on commit.
pub(crate) const CHANNEL: &str = "keyway_changes";

async fn listen_once(
    options: &sqlx::postgres::PgConnectOptions,
    wake: &tokio::sync::Notify,
    auth: &AuthCache,
) -> Result<(), sqlx::Error> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    // Listening now: whatever changed while not listening may be cached.
    auth.invalidate();
    loop {
        let notification = listener.recv().await?;
        if notification.payload() == AUTH_CHANGED {
            auth.invalidate();
        } else {
            wake.notify_one();
        }
    }
}

/// Wake the follower on every revision notified, and invalidate the auth cache on every
/// auth change notified. Only a hint for the follower, which polls anyway; the auth
/// cache's TTL bounds what a lost notification can leave cached.
async fn listen(
    options: sqlx::postgres::PgConnectOptions,
    wake: Arc<tokio::sync::Notify>,
    auth: Arc<AuthCache>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let attempt = listen_once(&options, &wake, &auth);
        tokio::select! {
            _ = shutdown.changed() => return,
            result = attempt => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "change listener lost its connection");
                }
            }
        }
        // After a reconnect the follower may have missed notifications: wake it.
        wake.notify_one();
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The decision model's records, and their history: [`Store::model`].
///
/// Every write is one transaction with the entity rows, the audit row and the change-log
/// row of the next revision, and returns once this node's snapshot holds that revision.
#[derive(Clone, Copy, Debug)]
pub struct Model<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The decision model: sites, doors, people, credentials, groups, schedules, IQs;
    /// their writes, reads, revisions and audit.
    #[must_use]
    pub fn model(&self) -> Model<'_> {
        Model { store: self }
    }
}

impl Model<'_> {
    /// Apply `change` as `actor`: one transaction with the entity rows, the audit row and
    /// the change-log row. Returns once this node's snapshot holds the new revision.
    ///
    /// # Errors
    /// A client error ([`crate::ErrorKind::is_client_error`]) if the model refuses the
    /// change; a fault if the database does. Either way nothing was written.
    pub async fn write(&self, actor: &str, change: Change) -> Result<Revision, StoreError> {
        Ok(self.store.commit(actor, WriteOp::Change(change, None)).await?.revision)
    }

    /// [`Model::write`], queueing the event `follow_up` asks for (if any) in the same
    /// transaction.
    ///
    /// # Errors
    /// As [`Model::write`]; a failure to queue the event fails the whole write.
    pub async fn write_with(&self, actor: &str, change: Change, follow_up: FollowUp) -> Result<Revision, StoreError> {
        Ok(self
            .store
            .commit(actor, WriteOp::Change(change, Some(follow_up)))
            .await?
            .revision)
    }

    /// Create `record` under a new id (its own id is ignored); returns the id.
    ///
    /// # Errors
    /// As [`Model::write`].
    pub async fn create(&self, actor: &str, record: Record) -> Result<Written, StoreError> {
        self.store.commit(actor, WriteOp::Create(record, None)).await
    }

    /// [`Model::create`], queueing the event `follow_up` asks for (if any) in the same
    /// transaction.
    ///
    /// # Errors
    /// As [`Model::write`]; a failure to queue the event fails the whole write.
    pub async fn create_with(&self, actor: &str, record: Record, follow_up: FollowUp) -> Result<Written, StoreError> {
        self.store.commit(actor, WriteOp::Create(record, Some(follow_up))).await
    }

    /// Insert a whole model in one revision (bulk import, e.g. for a first start or a
    /// benchmark). Followers rebuild their snapshot from the tables.
    ///
    /// # Errors
    /// As [`Model::write`]; the import is refused whole if any record clashes.
    pub async fn import(&self, actor: &str, records: Vec<Record>) -> Result<Revision, StoreError> {
        // Validate against the core first: build what the model would become.
        let mut all = self.store.inner.cell.load().records();
        all.extend(records.iter().cloned());
        tokio::task::spawn_blocking(move || Snapshot::build(Revision(1), all))
            .await
            .map_err(StoreError::internal)??;
        Ok(self.store.commit(actor, WriteOp::Import(records)).await?.revision)
    }

    /// One record as the database holds it now.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn record(&self, target: Target) -> Result<Option<Record>, StoreError> {
        sql::load_record(self.store.reader().await?.conn(), target).await
    }

    /// Every record the database holds, and the revision they are at.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn records(&self) -> Result<(Revision, Vec<Record>), StoreError> {
        let (rev, records) = sql::load(self.store.reader().await?.conn(), &Part::ALL).await?;
        Ok((Revision(rev), records))
    }

    /// Every revision in the change log, ascending.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn revisions(&self) -> Result<Vec<Revision>, StoreError> {
        let revs = sql::revisions(self.store.reader().await?.conn()).await?;
        Ok(revs.into_iter().map(Revision).collect())
    }

    /// The audit log, oldest first; only `entity`'s rows if given (e.g. `person:7`).
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn audit(&self, entity: Option<&str>) -> Result<Vec<AuditRow>, StoreError> {
        sql::audit(self.store.reader().await?.conn(), entity).await
    }
}
