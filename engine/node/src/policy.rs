//! The policy state every node agrees on: the bundle in force, door-rule attachments and
//! site opening hours.
//!
//! They are written through the store's change log ([`keyway_store::PolicyChange`]), so
//! they are ordered with the model's own changes and reach every node. One task per node
//! follows the change feed and applies them to the plugin host; a local write returns
//! only once that task has applied its revision, so a caller reads its own write. A task
//! that falls behind the feed reloads the whole policy state from the tables.
//!
//! **One bundle per process, global.** The store can keep a bundle per site; the node
//! runs the global one for every site. Role ids are stored in memberships and people
//! across sites, and one account belongs to several sites: a role table per site would
//! give one role id different meanings for one account. A site's own bundle is refused
//! at activation until roles are namespaced per site.

use crate::error::NodeError;
use crate::node::{Inner, Node, SYSTEM_ACTOR};
use keyway_core::{DoorId, Revision, Schedule, SiteId};
use keyway_plugin_host::abi::{Config, Value};
use keyway_plugin_host::bundle::{MANIFEST, Manifest, read_capped};
use keyway_plugin_host::{
    AttachError, Bundle, BundleError, FailMode, PolicyHost, RuleLink, Runtime, Sha256, check_door_config,
};
use keyway_store::{ChainedRule, Logged, PolicyChange, Store, StoredBundle};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a local policy write waits for the node's policy task to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn fail_mode(fail_safe: bool) -> FailMode {
    if fail_safe { FailMode::Safe } else { FailMode::Secure }
}

/// A JSON value as a plugin's configuration value: integers that fit an `i64`, other
/// numbers as floats, strings, booleans, arrays and objects; `null` has no counterpart.
fn config_value(value: &serde_json::Value) -> Result<Value, String> {
    Ok(match value {
        serde_json::Value::Null => return Err("`null` is not a configuration value".to_owned()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i),
            (None, Some(u), _) => return Err(format!("{u} is larger than a configuration integer (2^63 - 1)")),
            (None, None, Some(f)) => Value::Float(f),
            (None, None, None) => return Err(format!("{n} is not a number a configuration holds")),
        },
        serde_json::Value::String(text) => Value::Str(text.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(config_value).collect::<Result<_, _>>()?),
        serde_json::Value::Object(map) => Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), config_value(v).map_err(|e| format!("`{k}`: {e}"))?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A stored chain as the plugin host's links.
///
/// # Errors
/// [`AttachError::Config`] for a configuration with a value no plugin configuration
/// holds (`null`, an integer over `i64`).
pub(crate) fn links_of(door: DoorId, rules: &[ChainedRule]) -> Result<Vec<RuleLink>, AttachError> {
    rules
        .iter()
        .map(|r| {
            let values = r
                .config
                .iter()
                .map(|(k, v)| Ok((k.clone(), config_value(v).map_err(|e| format!("`{k}`: {e}"))?)))
                .collect::<Result<_, String>>()
                .map_err(|reason| AttachError::Config {
                    rule: r.rule.clone(),
                    door: door.0,
                    reason,
                })?;
            Ok(RuleLink::new(r.rule.clone(), fail_mode(r.fail_safe)).with_config(Config { values }))
        })
        .collect()
}

/// Puts `door`'s stored chain on this node's plugin host, as the store has it (see
/// [`keyway_plugin_host::DoorRules::restore_links`]).
fn restore(host: &PolicyHost, door: DoorId, rules: &[ChainedRule]) {
    let result = links_of(door, rules).and_then(|links| host.door_rules().restore_links(door, &links));
    if let Err(e) = result {
        // The write path checks both, so only a table edited by hand gets here; the door
        // keeps the chain it had.
        tracing::error!(error = %e, door = door.0, "stored door rules not attached");
    }
}

/// Loads stored bundle `bundle` with the plugin host: its manifest and the stored plugin
/// modules it pins, matched by sha256.
pub(crate) async fn load_stored(
    store: &Store,
    runtime: &Arc<Runtime>,
    bundle: &StoredBundle,
) -> Result<Bundle, NodeError> {
    let manifest = Manifest::parse(&bundle.manifest).map_err(|reason| BundleError::Manifest {
        path: bundle.id.to_string().into(),
        reason,
    })?;
    let mut modules = Vec::with_capacity(bundle.plugins.len());
    for id in &bundle.plugins {
        let Some(meta) = store.policy_records().plugin(*id).await? else {
            continue;
        };
        if let Some(wasm) = store.policy_records().plugin_wasm(*id).await? {
            modules.push((meta.sha256, wasm));
        }
    }
    let runtime = Arc::clone(runtime);
    let loaded = tokio::task::spawn_blocking(move || {
        Bundle::from_manifest(&runtime, &manifest, |file| {
            let pinned = manifest
                .plugins
                .values()
                .find(|entry| entry.file == file)
                .map(|entry| entry.sha256.to_ascii_lowercase());
            modules
                .iter()
                .find(|(sha, _)| Some(sha) == pinned.as_ref())
                .map(|(_, wasm)| wasm.clone())
                .ok_or_else(|| {
                    BundleError::Invalid(format!("the bundle pins `{file}`, which was not uploaded with it"))
                })
        })
    })
    .await
    .map_err(|e| NodeError::Runtime(e.to_string()))??;
    Ok(loaded)
}

/// Reloads door rules and opening hours from the tables (at start, and when the policy
/// task lost its place in the feed).
pub(crate) async fn reload_attachments(store: &Store, host: &PolicyHost) -> Result<(), NodeError> {
    let stored = store.policy_records().door_rules().await?;
    let rules = host.door_rules();
    let wanted: std::collections::HashSet<DoorId> = stored.iter().map(|a| a.door).collect();
    for chain in &stored {
        restore(host, chain.door, &chain.rules);
    }
    // Doors the tables no longer list lose their rule.
    let snapshot_doors: Vec<DoorId> = host
        .door_rules()
        .attached_doors()
        .into_iter()
        .filter(|d| !wanted.contains(d))
        .collect();
    for door in snapshot_doors {
        let _ = rules.detach(door);
    }
    host.opening_hours()
        .replace_all(store.policy_records().all_opening_hours().await?);
    Ok(())
}

/// Applies one policy change to this node's plugin host.
async fn apply(inner: &Inner, change: &PolicyChange) -> Result<(), NodeError> {
    match change {
        PolicyChange::BundleActivated { bundle, site: None } => {
            let Some(stored) = inner.store.policy_records().bundle(*bundle).await? else {
                return Err(NodeError::Store(keyway_store::StoreError::NotFound {
                    entity: bundle.to_string(),
                }));
            };
            let loaded = load_stored(&inner.store, &inner.runtime, &stored).await?;
            // The writer checked it against every stored chain; this node follows.
            drop(inner.policy.adopt(loaded));
            tracing::info!(
                bundle = stored.name,
                version = stored.version,
                "policy bundle swapped in"
            );
        }
        PolicyChange::BundleActivated { site: Some(_), .. } => {
            tracing::warn!("a site's own bundle was activated; this node runs the global bundle for every site");
        }
        PolicyChange::DoorRule { door, rules } if rules.is_empty() => {
            let _ = inner.policy.door_rules().detach(*door);
        }
        PolicyChange::DoorRule { door, rules } => restore(&inner.policy, *door, rules),
        PolicyChange::OpeningHours { site, hours } => inner.policy.set_site_opening_hours(*site, hours.clone()),
        PolicyChange::RuleStateReset { rule, scope, .. } => {
            inner
                .policy
                .door_rules()
                .reset_state(rule, crate::rule_state::host_scope(*scope));
        }
    }
    Ok(())
}

/// The node's policy task: follows the feed from `after` and applies policy changes.
pub(crate) async fn follow(inner: Arc<Inner>, mut after: Revision) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut stream = match inner.store.subscribe(after).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "policy task cannot subscribe; reloading policy state");
                after = resync(&inner).await;
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                _ = shutdown.changed() => return,
                item = stream.next() => item,
            };
            match item {
                Ok(item) => {
                    if let Logged::Policy(change) = &*item.entry
                        && let Err(e) = apply(&inner, change).await
                    {
                        tracing::error!(error = %e, revision = item.revision.0, "policy change not applied; reloading policy state");
                        after = resync(&inner).await;
                        break;
                    }
                    inner.mark_policy_applied(item.revision.0);
                }
                Err(keyway_store::FeedError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "policy task lost its place; reloading policy state");
                    after = resync(&inner).await;
                    break;
                }
            }
        }
    }
}

/// Reloads the whole policy state; answers the revision it is current with.
async fn resync(inner: &Inner) -> Revision {
    loop {
        let at = inner.store.status().applied;
        let result = async {
            if let Some(stored) = inner.store.policy_records().active_bundle(None).await? {
                let loaded = load_stored(&inner.store, &inner.runtime, &stored).await?;
                // No door is left without its rules meanwhile: the reload below replaces
                // each door's chain with what the tables say, and a rule the bundle lacks
                // fails at each decision until then (the door's fail mode decides).
                drop(inner.policy.adopt(loaded));
            }
            reload_attachments(&inner.store, &inner.policy).await
        }
        .await;
        match result {
            Ok(()) => {
                inner.mark_policy_applied(at.0);
                return at;
            }
            Err(e) => {
                // A closing node stops retrying: `Node::close` waits for this task, and
                // the store it reads may already refuse.
                let mut shutdown = inner.shutdown.subscribe();
                if *shutdown.borrow() {
                    return at;
                }
                tracing::error!(error = %e, "policy state reload failed; retrying");
                tokio::select! {
                    _ = shutdown.wait_for(|closing| *closing) => return at,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

impl Node {
    pub(crate) async fn policy_applied(&self, revision: Revision) -> Result<Revision, NodeError> {
        let mut rx = self.inner.policy_applied.subscribe();
        let reached = matches!(
            tokio::time::timeout(APPLY_TIMEOUT, rx.wait_for(|r| *r >= revision.0)).await,
            Ok(Ok(_))
        );
        if reached {
            Ok(revision)
        } else {
            Err(NodeError::NotYet {
                wanted: revision.0,
                at: *rx.borrow(),
            })
        }
    }

    /// Attach `rule` to `door` as its only rule, with no configuration of its own. See
    /// [`Node::set_door_rules`].
    ///
    /// # Errors
    /// As [`Node::set_door_rules`].
    pub async fn attach_door_rule(
        &self,
        actor: &str,
        door: DoorId,
        rule: &str,
        fail_safe: bool,
    ) -> Result<Revision, NodeError> {
        self.set_door_rules(actor, door, vec![ChainedRule::new(rule, fail_safe)])
            .await
    }

    /// Set `door`'s chain of rules, in order, each with its fail mode and its own
    /// configuration. Every rule must be in the bundle in force and take its
    /// configuration (a rule that exports `keyway_door_config` is asked; any other takes
    /// none).
    ///
    /// # Errors
    /// [`NodeError::UnknownRule`] for a rule the bundle lacks; [`NodeError::Attach`] for a
    /// configuration a rule refuses; store errors (a malformed chain is
    /// [`keyway_store::StoreError::Invalid`], an unknown door
    /// [`keyway_store::StoreError::ForeignKey`]).
    pub async fn set_door_rules(
        &self,
        actor: &str,
        door: DoorId,
        rules: Vec<ChainedRule>,
    ) -> Result<Revision, NodeError> {
        keyway_store::check_rule_chain(&rules)?;
        let links = links_of(door, &rules)?;
        let bundle = self.policy().bundle();
        if let Some(link) = links.iter().find(|link| bundle.rule(&link.rule).is_none()) {
            return Err(NodeError::UnknownRule {
                rule: link.rule.clone(),
                bundle: bundle.name().to_owned(),
            });
        }
        // A rule's `door_config` hook runs WebAssembly: off the async runtime.
        tokio::task::spawn_blocking(move || {
            links
                .iter()
                .try_for_each(|link| check_door_config(&bundle, &link.rule, door, &link.config))
        })
        .await
        .map_err(|e| NodeError::Runtime(e.to_string()))??;
        let (_, revision) = self.store().policy_records().set_door_rules(actor, door, rules).await?;
        self.policy_applied(revision).await
    }

    /// Detach `door`'s rule.
    ///
    /// # Errors
    /// [`keyway_store::StoreError::NotFound`] if the door has none.
    pub async fn detach_door_rule(&self, actor: &str, door: DoorId) -> Result<Revision, NodeError> {
        let revision = self.store().policy_records().detach_door_rule(actor, door).await?;
        self.policy_applied(revision).await
    }

    /// Set or clear `site`'s opening hours.
    ///
    /// # Errors
    /// [`keyway_store::StoreError::ForeignKey`] for an unknown site.
    pub async fn set_opening_hours(
        &self,
        actor: &str,
        site: SiteId,
        hours: Option<&Schedule>,
    ) -> Result<Revision, NodeError> {
        let revision = self
            .store()
            .policy_records()
            .set_opening_hours(actor, site, hours)
            .await?;
        self.policy_applied(revision).await
    }

    /// Validate stored bundle `id` with the plugin host, then make it the one in force on
    /// every node. A bundle that does not load, or that lacks a rule some door has
    /// attached, is refused and the running bundle stays.
    ///
    /// # Errors
    /// [`NodeError::Bundle`], [`NodeError::RuleWouldDangle`],
    /// [`NodeError::ConfigWouldBreak`], store errors.
    pub async fn activate_bundle(
        &self,
        actor: &str,
        id: keyway_store::BundleId,
    ) -> Result<(StoredBundle, Revision), NodeError> {
        let stored = self
            .store()
            .policy_records()
            .bundle(id)
            .await?
            .ok_or_else(|| keyway_store::StoreError::NotFound { entity: id.to_string() })?;
        if stored.site.is_some() {
            return Err(NodeError::Bundle(BundleError::Invalid(
                "a bundle for one site cannot be activated: this node runs one global bundle for every site".to_owned(),
            )));
        }
        let loaded = load_stored(self.store(), &self.inner.runtime, &stored).await?;
        let chains = self.store().policy_records().door_rules().await?;
        for chain in &chains {
            for link in &chain.rules {
                if loaded.rule(&link.rule).is_none() {
                    return Err(NodeError::RuleWouldDangle {
                        bundle: loaded.name().to_owned(),
                        rule: link.rule.clone(),
                        door: chain.door.0,
                    });
                }
            }
        }
        // The new version of each attached rule must take the settings its doors gave
        // the old one.
        tokio::task::spawn_blocking(move || {
            for chain in &chains {
                for link in links_of(chain.door, &chain.rules)? {
                    check_door_config(&loaded, &link.rule, chain.door, &link.config)?;
                }
            }
            Ok::<(), AttachError>(())
        })
        .await
        .map_err(|e| NodeError::Runtime(e.to_string()))?
        .map_err(|e| NodeError::ConfigWouldBreak {
            bundle: stored.name.clone(),
            reason: e.to_string(),
        })?;
        let (bundle, revision) = self.store().policy_records().activate_bundle(actor, id).await?;
        self.policy_applied(revision).await?;
        self.sync_role_flags().await?;
        Ok((bundle, revision))
    }

    /// Store the bundle in directory `dir` (its manifest and every module it pins, each
    /// checked against its pin) and make it the one in force on every node. What is
    /// stored already is reused, so adopting the same directory twice changes nothing.
    /// `keyway serve` adopts its `--bundle` directory when the database has no bundle in
    /// force, so that every node runs the same stored bundle and a later activation can
    /// be rolled back to it.
    ///
    /// # Errors
    /// [`NodeError::Bundle`] for an unreadable manifest or module, or a module that does
    /// not match its pin; the errors of [`Node::activate_bundle`].
    pub async fn adopt_bundle_dir(&self, actor: &str, dir: &Path) -> Result<(StoredBundle, Revision), NodeError> {
        let manifest_path = dir.join(MANIFEST);
        let text = read_capped(&manifest_path, keyway_store::MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(text).map_err(|_| BundleError::Manifest {
            path: manifest_path.clone(),
            reason: "not UTF-8".to_owned(),
        })?;
        let manifest = Manifest::parse(&text).map_err(|reason| BundleError::Manifest {
            path: manifest_path.clone(),
            reason,
        })?;
        let stored_plugins = self.store().policy_records().plugins().await?;
        let mut ids = Vec::with_capacity(manifest.plugins.len());
        for (name, entry) in &manifest.plugins {
            let wasm = read_capped(&dir.join(&entry.file), keyway_store::MAX_PLUGIN_BYTES)?;
            let sha = Sha256::of(&wasm).to_string();
            if !sha.eq_ignore_ascii_case(&entry.sha256) {
                return Err(NodeError::Bundle(BundleError::Invalid(format!(
                    "plugin `{name}`: `{}` has sha256 {sha}, the manifest pins {}",
                    entry.file, entry.sha256
                ))));
            }
            let id = match stored_plugins.iter().find(|p| p.sha256 == sha) {
                Some(p) => p.id,
                None => {
                    self.store()
                        .policy_records()
                        .upload_plugin(actor, name, &sha[..12], &wasm, jiff::Timestamp::now())
                        .await?
                        .id
                }
            };
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        let sha = Sha256::of(text.as_bytes()).to_string();
        let existing = self
            .store()
            .policy_records()
            .bundles(None)
            .await?
            .into_iter()
            .find(|b| b.site.is_none() && b.sha256 == sha && b.plugins == ids);
        let stored = match existing {
            Some(b) => b,
            None => {
                self.store()
                    .policy_records()
                    .upload_bundle(
                        actor,
                        None,
                        &manifest.bundle.name,
                        &sha[..12],
                        &text,
                        &ids,
                        jiff::Timestamp::now(),
                    )
                    .await?
            }
        };
        if stored.active {
            return Ok((stored, self.store().status().applied));
        }
        self.activate_bundle(actor, stored.id).await
    }

    /// Makes the model's lockdown-exempt roles those of the bundle in force, writing a
    /// revision only when they differ.
    pub(crate) async fn sync_role_flags(&self) -> Result<(), NodeError> {
        let flags = self.policy().bundle().roles().role_flags();
        let stored = self.store().model().record(keyway_store::Target::Roles).await?;
        let current = match stored {
            Some(keyway_core::Record::Roles(r)) => Some(r),
            _ => None,
        };
        if current.as_ref() != Some(&flags) {
            self.store()
                .model()
                .write(SYSTEM_ACTOR, keyway_core::Change::SetRoles(flags))
                .await?;
        }
        Ok(())
    }
}
