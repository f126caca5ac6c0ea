//! `Node`: opening, the shared parts, and closing.

use crate::commands::{DoorCommands, NoLink};
use crate::error::NodeError;
use crate::metrics::DecisionMetrics;
use crate::policy;
use arc_swap::ArcSwap;
use keyway_core::{Revision, SnapshotCell};
use keyway_plugin_host::{Bundle, Limits, PolicyHost, Runtime};
use keyway_store::{ChangeStream, FeedError, Store, StoreConfig};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The actor written in the audit log for what the node does on its own (role flags
/// taken from a new bundle).
pub const SYSTEM_ACTOR: &str = "system";

/// How a node is opened.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub store: StoreConfig,
    /// The bundle directory to run when the store has no active bundle (a first start).
    /// The binary's configuration owns its default (`policies/default`).
    pub bundle_dir: Option<PathBuf>,
    /// Limits for every plugin call.
    pub plugin_limits: Limits,
    /// Where precompiled plugin modules are cached, if anywhere.
    pub plugin_cache_dir: Option<PathBuf>,
}

impl NodeConfig {
    /// A config for the store at `url`, with the default plugin limits and no bundle
    /// directory.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        NodeConfig {
            store: StoreConfig::new(url),
            bundle_dir: None,
            plugin_limits: Limits::default(),
            plugin_cache_dir: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) policy: PolicyHost,
    /// The newest revision the policy task has applied, for waiters.
    pub(crate) policy_applied: watch::Sender<u64>,
    /// The same, for the decision path: one atomic load, no lock.
    pub(crate) policy_revision: std::sync::atomic::AtomicU64,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) metrics: DecisionMetrics,
    pub(crate) commands: ArcSwap<Arc<dyn DoorCommands>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    /// The policy state is current with `revision`: decisions report at least it, and
    /// waiters on it wake.
    pub(crate) fn mark_policy_applied(&self, revision: u64) {
        self.policy_revision
            .fetch_max(revision, std::sync::atomic::Ordering::Release);
        self.policy_applied.send_replace(revision);
    }
}

/// One Keyway node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("store", &self.inner.store)
            .field("bundle", &self.inner.policy.bundle().name())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Open the store (creating and migrating it if needed), load the bundle in force
    /// (the store's active global bundle, else `config.bundle_dir`), the door rules and
    /// opening hours, and start following the change feed.
    ///
    /// # Errors
    /// Store errors; [`NodeError::NoBundle`]; [`NodeError::Bundle`] when the bundle does
    /// not load.
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        let store = Store::open(config.store).await?;
        match Self::start(
            store.clone(),
            config.bundle_dir,
            config.plugin_limits,
            config.plugin_cache_dir,
        )
        .await
        {
            Ok(node) => Ok(node),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    }

    async fn start(
        store: Store,
        bundle_dir: Option<PathBuf>,
        limits: Limits,
        cache_dir: Option<PathBuf>,
    ) -> Result<Node, NodeError> {
        let mut runtime = Runtime::new(limits).map_err(|e| NodeError::Runtime(e.to_string()))?;
        if let Some(dir) = cache_dir {
            runtime = runtime.with_cache_dir(dir);
        }
        let runtime = Arc::new(runtime);
        // The revision the policy state is read at: the feed follows from there.
        let at = store.status().applied;
        let bundle = match store.policy_records().active_bundle(None).await? {
            Some(stored) => policy::load_stored(&store, &runtime, &stored).await?,
            None => {
                let dir = bundle_dir.ok_or(NodeError::NoBundle)?;
                let rt = Arc::clone(&runtime);
                tokio::task::spawn_blocking(move || Bundle::load(&rt, &dir))
                    .await
                    .map_err(|e| NodeError::Runtime(e.to_string()))??
            }
        };
        let host = PolicyHost::new(Arc::clone(&runtime), bundle);
        policy::reload_attachments(&store, &host).await?;
        let no_link: Arc<dyn DoorCommands> = Arc::new(NoLink);
        let inner = Arc::new(Inner {
            store,
            runtime,
            policy: host,
            policy_applied: watch::channel(at.0).0,
            policy_revision: std::sync::atomic::AtomicU64::new(at.0),
            shutdown: watch::channel(false).0,
            metrics: DecisionMetrics::default(),
            commands: ArcSwap::from_pointee(no_link),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(policy::follow(Arc::clone(&inner), at));
        inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task);
        let node = Node { inner };
        node.sync_role_flags().await?;
        Ok(node)
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The published snapshot.
    #[must_use]
    pub fn snapshot(&self) -> &Arc<SnapshotCell> {
        self.inner.store.snapshot()
    }

    /// The plugin host: the bundle in force, door rules, opening hours.
    #[must_use]
    pub fn policy(&self) -> &PolicyHost {
        &self.inner.policy
    }

    /// Decisions counted by effect and reason.
    #[must_use]
    pub fn metrics(&self) -> &DecisionMetrics {
        &self.inner.metrics
    }

    /// Subscribe to every revision after `after`, in order (see [`keyway_store::ChangeStream`]).
    ///
    /// # Errors
    /// [`FeedError::Behind`] when `after` is too old to replay.
    pub async fn subscribe(&self, after: Revision) -> Result<ChangeStream, FeedError> {
        self.inner.store.subscribe(after).await
    }

    /// Wait up to `timeout` for this node to reach `revision` (a revision a write on any
    /// node returned), catching up with the change log at once rather than at the next
    /// poll.
    ///
    /// # Errors
    /// [`NodeError::NotYet`] if it did not get there in time.
    pub async fn reach(&self, revision: Revision, timeout: std::time::Duration) -> Result<(), NodeError> {
        let store = &self.inner.store;
        if store.status().applied >= revision {
            return Ok(());
        }
        if let Err(e) = store.catch_up().await {
            tracing::debug!(error = %e, "catch-up before a consistent read failed");
        }
        if store.wait_for(revision, timeout).await {
            Ok(())
        } else {
            Err(NodeError::NotYet {
                wanted: revision.0,
                at: store.status().applied.0,
            })
        }
    }

    /// Install the IQ link's door commands.
    pub fn set_door_commands(&self, commands: Arc<dyn DoorCommands>) {
        self.inner.commands.store(Arc::new(commands));
    }

    /// The door commands in force (the link's, or [`NoLink`]).
    #[must_use]
    pub fn door_commands(&self) -> Arc<dyn DoorCommands> {
        Arc::clone(&self.inner.commands.load())
    }

    /// Stop the policy task, flush the entries queue and close the database.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
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
        self.inner.store.close().await;
    }
}
