//! Site hubs: one task per site with IQ sessions on this node. A hub follows the node's
//! change feed once, keeps the site's [`SiteView`], and turns each change into the
//! pushes of every connected IQ of the site. Sessions join their site's hub
//! ([`Hubs::join`]); a hub with no sessions left stops.
//!
//! A joining IQ that holds a list at revision `since` is brought up to date by replay
//! where it can be: the joiner reads what it missed from the change log up to the
//! revision it saw ([`Missed`]), and the hub adds what it applied since from the changes
//! it keeps ([`RECENT`]), so the replay and the live pushes that follow meet at the hub's
//! revision without a gap.

use crate::backend::{BackendError, PushEvent};
use crate::message::{RevocationItem, RevocationWhat};
use crate::site_view::{Applied, Missed, SiteView};
use keyway_core::{Change, IqId, IqRecord, Revision, SiteId};
use keyway_node::Node;
use keyway_store::{ChangeStream, FeedError, FeedItem, Logged};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Changes that may matter to its site a hub keeps for IQs that join while it moves on.
const RECENT: usize = 4_096;

/// How often a hub checks whether it still has sessions.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// How many times a session tries to join its site's hub when the hub stops under it.
const JOIN_ATTEMPTS: usize = 3;

/// Joins queued per hub.
const JOIN_QUEUE: usize = 1_024;

/// A session joining its site's hub.
#[derive(Clone, Debug)]
pub(crate) struct Join {
    pub(crate) iq: IqId,
    /// The serial of the certificate the session authenticated with.
    pub(crate) serial: Option<String>,
    /// The revision of the IQ's list (0: none).
    pub(crate) since: Revision,
    /// What the IQ missed from `since` to `scanned_to`, read from the change log;
    /// `None` when only a full list will do.
    pub(crate) missed: Option<Missed>,
    /// The revision the joiner read the change log to.
    pub(crate) scanned_to: Revision,
    /// Where the session's pushes go.
    pub(crate) tx: mpsc::Sender<PushEvent>,
}

/// Where a session starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Joined {
    /// The hub's revision when the session joined: pushes follow from the next one.
    pub(crate) revision: Revision,
    /// Whether the IQ must fetch a full list.
    pub(crate) resync: bool,
}

#[derive(Debug)]
struct Request {
    join: Join,
    reply: oneshot::Sender<Joined>,
}

/// The hubs of this node, by site.
#[derive(Debug, Default)]
pub(crate) struct Hubs {
    running: Mutex<HashMap<SiteId, (u64, mpsc::Sender<Request>)>>,
    next_id: AtomicU64,
}

impl Hubs {
    /// How many hubs run.
    pub(crate) fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Joins `join.iq`'s session to the hub of `site`, starting the hub if none runs.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the hub cannot follow the change feed.
    pub(crate) async fn join(self: &Arc<Self>, node: &Node, site: SiteId, join: Join) -> Result<Joined, BackendError> {
        for _ in 0..JOIN_ATTEMPTS {
            let (id, hub) = self.hub(node, site);
            let (reply, answer) = oneshot::channel();
            let request = Request {
                join: join.clone(),
                reply,
            };
            if hub.send(request).await.is_ok()
                && let Ok(joined) = answer.await
            {
                return Ok(joined);
            }
            // The hub stopped under us: start another.
            self.forget(site, id);
        }
        Err(BackendError::Unavailable(
            "the site's push hub cannot follow the change feed".to_owned(),
        ))
    }

    fn hub(self: &Arc<Self>, node: &Node, site: SiteId) -> (u64, mpsc::Sender<Request>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((id, hub)) = running.get(&site)
            && !hub.is_closed()
        {
            return (*id, hub.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(JOIN_QUEUE);
        running.insert(site, (id, tx.clone()));
        tokio::spawn(run(Arc::clone(self), node.clone(), site, id, rx));
        (id, tx)
    }

    fn forget(&self, site: SiteId, id: u64) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(&site).is_some_and(|(current, _)| *current == id) {
            running.remove(&site);
        }
    }

    /// Removes hub `id` of `site` if no join waits for it; whether it did.
    fn retire(&self, site: SiteId, id: u64, requests: &mpsc::Receiver<Request>) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if !requests.is_empty() {
            return false;
        }
        if running.get(&site).is_some_and(|(current, _)| *current == id) {
            running.remove(&site);
        }
        true
    }
}

/// What a member is owed after a push did not fit its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owed {
    /// A `RESYNC`: the full list covers the deltas and door lists it missed.
    Resync,
    /// A revocation was lost: deny everything offline first, then `RESYNC`.
    RevokeAllThenResync,
}

#[derive(Debug)]
struct Member {
    iq: IqId,
    serial: Option<String>,
    tx: mpsc::Sender<PushEvent>,
    /// The revision the IQ's list is at as far as the hub told it: its next delta starts
    /// there, so revisions that did not touch this IQ do not make it fetch a full list.
    list_at: Revision,
    owed: Option<Owed>,
}

impl Member {
    /// Queues `events` (at `revision`), after anything owed. Once a push does not fit,
    /// revocations still try to go, and what is owed follows when there is room: a lost
    /// revocation becomes a revocation of everything. Whether the session is still there.
    fn deliver(&mut self, events: Vec<PushEvent>, revision: Revision) -> bool {
        self.settle(revision);
        for event in events {
            let revocation = matches!(event, PushEvent::Revocation { .. });
            if self.owed.is_some() && !revocation {
                continue;
            }
            let event = match event {
                PushEvent::OfflineDelta(mut delta) => {
                    delta.from_revision = self.list_at.0;
                    PushEvent::OfflineDelta(delta)
                }
                other => other,
            };
            let moves_list_to = match &event {
                PushEvent::OfflineDelta(delta) => Some(Revision(delta.to_revision)),
                PushEvent::Resync { revision } => Some(*revision),
                _ => None,
            };
            match self.tx.try_send(event) {
                Ok(()) => {
                    if let Some(at) = moves_list_to {
                        self.list_at = at;
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.owed = Some(if revocation || self.owed == Some(Owed::RevokeAllThenResync) {
                        Owed::RevokeAllThenResync
                    } else {
                        Owed::Resync
                    });
                }
            }
        }
        self.settle(revision);
        !self.tx.is_closed()
    }

    /// Sends what is owed, if there is room now.
    fn settle(&mut self, revision: Revision) {
        if self.owed == Some(Owed::RevokeAllThenResync) {
            let everything = PushEvent::Revocation {
                revision,
                items: vec![RevocationItem {
                    what: RevocationWhat::Everything,
                    id: 0,
                    door: None,
                }],
            };
            if self.tx.try_send(everything).is_err() {
                return;
            }
            self.owed = Some(Owed::Resync);
        }
        if self.owed == Some(Owed::Resync) && self.tx.try_send(PushEvent::Resync { revision }).is_ok() {
            self.owed = None;
            self.list_at = revision;
        }
    }
}

struct Hub {
    node: Node,
    view: SiteView,
    members: Vec<Member>,
    /// Changes that may matter to the site, after `recent_from`.
    recent: VecDeque<(Revision, Arc<Logged>)>,
    recent_from: Revision,
    /// Joins that read the change log further than the hub has applied.
    parked: Vec<Request>,
}

/// The site's view at the node's revision, and the feed from there.
async fn start(node: &Node, site: SiteId) -> Result<(SiteView, ChangeStream), BackendError> {
    let snapshot = node.snapshot().load_full();
    let revision = snapshot.revision();
    let view = tokio::task::spawn_blocking(move || SiteView::build(site, revision, snapshot.site_records(site)))
        .await
        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
    let stream = node
        .subscribe(revision)
        .await
        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
    Ok((view, stream))
}

async fn run(hubs: Arc<Hubs>, node: Node, site: SiteId, id: u64, mut requests: mpsc::Receiver<Request>) {
    let (view, mut stream) = match start(&node, site).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(%site, error = %e, "site push hub not started");
            hubs.forget(site, id);
            return;
        }
    };
    let mut hub = Hub::new(node, view);
    let mut idle = tokio::time::interval(IDLE_CHECK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Unbiased: a burst of changes does not starve joins or the idle check.
        tokio::select! {
            item = stream.next() => {
                if !hub.on_item(item, &mut stream).await {
                    hubs.forget(site, id);
                    return;
                }
            }
            request = requests.recv() => match request {
                Some(request) => hub.join(request),
                None => return,
            },
            _ = idle.tick() => {
                let revision = hub.view.revision();
                hub.members.retain_mut(|m| m.deliver(Vec::new(), revision));
                if hub.members.is_empty() && hub.parked.is_empty() && hubs.retire(site, id, &requests) {
                    // A join that slipped in after the check finds its reply dropped and
                    // starts another hub.
                    requests.close();
                    return;
                }
            }
        }
    }
}

impl Hub {
    fn new(node: Node, view: SiteView) -> Hub {
        Hub {
            node,
            recent_from: view.revision(),
            view,
            members: Vec::new(),
            recent: VecDeque::new(),
            parked: Vec::new(),
        }
    }

    /// Handles one item of the feed; whether the hub goes on.
    async fn on_item(&mut self, item: Result<FeedItem, FeedError>, stream: &mut ChangeStream) -> bool {
        let item = match item {
            Ok(item) => item,
            Err(FeedError::Behind { .. }) => return self.rebuild(stream).await,
            Err(e) => {
                tracing::warn!(site = %self.view.site(), error = %e, "change feed ended: the site's sessions close");
                return false;
            }
        };
        match item.entry.as_ref() {
            Logged::Change(change) => {
                if let Change::PutIq(IqRecord { id, .. }) | Change::RemoveIq(id) = change {
                    self.recheck(*id).await;
                }
                let applied = self.view.apply(item.revision, change);
                self.remember(&item);
                self.send(item.revision, &applied);
            }
            Logged::Reload => return self.rebuild(stream).await,
            Logged::Policy(_) => self.view.skip_to(item.revision),
        }
        self.unpark();
        true
    }

    /// Keeps `item` for joins if it may matter to the site.
    fn remember(&mut self, item: &FeedItem) {
        if !Missed::default().note(self.view.site(), None, &item.entry) {
            return;
        }
        self.recent.push_back((item.revision, Arc::clone(&item.entry)));
        if self.recent.len() > RECENT
            && let Some((revision, _)) = self.recent.pop_front()
        {
            self.recent_from = revision;
        }
    }

    fn send(&mut self, revision: Revision, applied: &Applied) {
        if applied.resync_all {
            self.members
                .retain_mut(|m| m.deliver(vec![PushEvent::Resync { revision }], revision));
            return;
        }
        let mut pushes: HashMap<IqId, Vec<PushEvent>> = HashMap::new();
        let view = &self.view;
        self.members.retain_mut(|m| {
            let Some(change) = applied.iqs.get(&m.iq) else {
                // Nothing for this IQ; what it is owed goes now if there is room.
                return m.deliver(Vec::new(), revision);
            };
            let events = pushes
                .entry(m.iq)
                .or_insert_with(|| view.pushes(revision, m.iq, change))
                .clone();
            m.deliver(events, revision)
        });
    }

    /// A change to an IQ (a reset, written on any node, or its removal) rechecks the
    /// certificate of each of its sessions: one no longer valid is closed.
    async fn recheck(&mut self, iq: IqId) {
        let mut closing = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.iq == iq && !still_valid(&self.node, iq, m.serial.as_deref()).await {
                closing.push(i);
            }
        }
        for i in closing.into_iter().rev() {
            let m = self.members.swap_remove(i);
            tracing::info!(%iq, "iq reset or removed: closing its session");
            let _ = m.tx.try_send(PushEvent::Revoked);
        }
    }

    /// Rebuilds the view at the node's revision after a reload or after falling behind;
    /// every session fetches a full list. Whether the hub goes on.
    async fn rebuild(&mut self, stream: &mut ChangeStream) -> bool {
        let site = self.view.site();
        match start(&self.node, site).await {
            Ok((view, fresh)) => {
                self.view = view;
                *stream = fresh;
            }
            Err(e) => {
                tracing::warn!(%site, error = %e, "site view not rebuilt: the site's sessions close");
                return false;
            }
        }
        let revision = self.view.revision();
        self.recent.clear();
        self.recent_from = revision;
        self.members
            .retain_mut(|m| m.deliver(vec![PushEvent::Resync { revision }], revision));
        self.unpark();
        true
    }

    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        for request in std::mem::take(&mut self.parked) {
            self.join(request);
        }
    }

    /// Admits a session at the hub's revision, with its replay queued first; parks it
    /// when it read the change log further than the hub has applied.
    fn join(&mut self, request: Request) {
        let Request { join, reply } = request;
        if join.tx.is_closed() {
            return;
        }
        if join.scanned_to > self.view.revision() {
            self.parked.push(Request { join, reply });
            return;
        }
        let revision = self.view.revision();
        let resync = if join.since == revision {
            false
        } else {
            match self.replay(&join) {
                // At most two events into a fresh queue of at least eight: they fit.
                Some(events) => !events.into_iter().all(|e| join.tx.try_send(e).is_ok()),
                None => true,
            }
        };
        if reply.send(Joined { revision, resync }).is_err() {
            return;
        }
        self.members.push(Member {
            iq: join.iq,
            serial: join.serial,
            tx: join.tx,
            list_at: revision,
            owed: None,
        });
    }

    fn replay(&self, join: &Join) -> Option<Vec<PushEvent>> {
        let mut missed = join.missed.clone()?;
        if self.recent_from > join.scanned_to {
            return None;
        }
        let site = self.view.site();
        for (revision, entry) in &self.recent {
            if *revision > join.scanned_to && missed.note(site, Some(join.iq), entry) && missed.needs_full_list() {
                return None;
            }
        }
        self.view.replay(&missed, join.iq, join.since)
    }
}

/// Whether the certificate `serial` still authenticates `iq`: the IQ exists and the
/// store records that serial for it. A store failure keeps the session (the next
/// handshake checks again).
async fn still_valid(node: &Node, iq: IqId, serial: Option<&str>) -> bool {
    match node.store().devices().certificate(iq).await {
        Ok(Some(cert)) => serial.is_none_or(|s| s == cert.serial),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(%iq, error = %e, "cannot recheck an iq's certificate");
            true
        }
    }
}

/// The most revisions a reconnecting IQ's list is brought up to date by replay; further
/// behind, it fetches a full list.
pub(crate) const MAX_REPLAY: u64 = 10_000;

/// What IQ `iq` of `site`, holding a list at `since`, missed up to `upto`, read from the
/// change log; `None` when only a full list will do: it has none (`since` 0), it is
/// ahead or too far behind, the log no longer holds the revisions, or a change needs one.
pub(crate) async fn missed_since(
    node: &Node,
    site: SiteId,
    iq: IqId,
    since: Revision,
    upto: Revision,
) -> Option<Missed> {
    if since.0 == 0 || since > upto || upto.0 - since.0 > MAX_REPLAY {
        return None;
    }
    let mut missed = Missed::default();
    if since == upto {
        return Some(missed);
    }
    let mut stream = node.subscribe(since).await.ok()?;
    while stream.position() <= upto {
        let item = stream.next().await.ok()?;
        missed.note(site, Some(iq), &item.entry);
        if missed.needs_full_list() {
            return None;
        }
    }
    Some(missed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::OfflineDelta;

    fn delta(to: u64) -> PushEvent {
        PushEvent::OfflineDelta(OfflineDelta {
            from_revision: to - 1,
            to_revision: to,
            upserts: Vec::new(),
            removals: vec![1],
        })
    }

    fn revocation(revision: u64) -> PushEvent {
        PushEvent::Revocation {
            revision: Revision(revision),
            items: vec![RevocationItem {
                what: RevocationWhat::Credential,
                id: 1,
                door: None,
            }],
        }
    }

    fn member(queue: usize, at: u64) -> (Member, mpsc::Receiver<PushEvent>) {
        let (tx, rx) = mpsc::channel(queue);
        let m = Member {
            iq: IqId(1),
            serial: None,
            tx,
            list_at: Revision(at),
            owed: None,
        };
        (m, rx)
    }

    /// A delta starts where the IQ's list is, not at the revision before its own: the
    /// revisions between did not touch this IQ.
    #[test]
    fn deltas_start_where_the_list_is() {
        let (mut m, mut rx) = member(8, 3);
        assert!(m.deliver(vec![delta(5)], Revision(5)));
        assert!(m.deliver(vec![delta(9)], Revision(9)));
        let from = |e: PushEvent| match e {
            PushEvent::OfflineDelta(d) => (d.from_revision, d.to_revision),
            other => panic!("{other:?}"),
        };
        assert_eq!(from(rx.try_recv().unwrap()), (3, 5));
        assert_eq!(from(rx.try_recv().unwrap()), (5, 9));
        assert_eq!(m.list_at, Revision(9));
    }

    /// A revocation that does not fit is owed as a revocation of everything, then a
    /// `RESYNC`, sent as soon as there is room, even when no later change is for this IQ.
    #[test]
    fn a_lost_revocation_is_owed_as_everything_then_resync() {
        let (mut m, mut rx) = member(1, 3);
        assert!(m.deliver(vec![revocation(4), revocation(4), delta(4)], Revision(4)));
        assert_eq!(m.owed, Some(Owed::RevokeAllThenResync));
        assert!(matches!(rx.try_recv(), Ok(PushEvent::Revocation { .. })));
        // Nothing new for this IQ: what it is owed goes anyway.
        assert!(m.deliver(Vec::new(), Revision(6)));
        match rx.try_recv() {
            Ok(PushEvent::Revocation { revision, items }) => {
                assert_eq!(revision, Revision(6));
                assert_eq!(items[0].what, RevocationWhat::Everything);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.owed, Some(Owed::Resync));
        assert!(m.deliver(Vec::new(), Revision(7)));
        assert!(matches!(rx.try_recv(), Ok(PushEvent::Resync { revision: Revision(7) })));
        assert_eq!((m.owed, m.list_at), (None, Revision(7)));
        drop(rx);
        assert!(!m.deliver(vec![delta(8)], Revision(8)), "a closed session is let go");
    }
}
