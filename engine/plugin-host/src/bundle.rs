//! Policy bundles: a manifest (`bundle.toml`) plus the `.wasm` files it pins, and the
//! [`PolicyHost`] that swaps bundles atomically.
//!
//! ```toml
//! [bundle]
//! name = "default"
//! abi = 1
//!
//! [plugins.roles]
//! file = "roles_standard.wasm"
//! sha256 = "…64 hex digits…"
//! hooks = ["roles"]
//!
//! [plugins.voucher]
//! file = "voucher_standard.wasm"
//! sha256 = "…"
//! hooks = ["voucher"]
//! [plugins.voucher.config.tiers.basic]
//! max_users = 50
//! ```
//!
//! Architecture Invariant: loading verifies every hash before compiling anything, and a
//! bundle is only published once every plugin loaded, validated and configured, and the
//! role table compiled. A bundle that fails leaves the running one in place, and the
//! error says why.

use crate::error::{BundleError, PluginError};
use crate::hours::OpeningHours;
use crate::roles::RoleTable;
use crate::rules::{DoorContext, DoorRules, RuledDecision};
use crate::runtime::{Plugin, Runtime};
use crate::sha::Sha256;
use arc_swap::ArcSwap;
use keyway_core::{Decision, Schedule, SiteId};
use keyway_sdk::{
    ABI_VERSION, Config, DoorRuleInput, DoorRuleOutput, Hook, Notification, NotifyInput, RoleTableDef, Value,
    VoucherInput, VoucherVerdict,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The manifest's file name in a bundle directory.
pub const MANIFEST: &str = "bundle.toml";

/// The parsed manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[bundle]` table.
    pub bundle: BundleMeta,
    /// The plugins, by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
}

/// The `[bundle]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    /// The bundle's name.
    pub name: String,
    /// The ABI version its plugins speak.
    pub abi: i32,
}

/// One `[plugins.<name>]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The `.wasm` file, relative to the bundle directory.
    pub file: String,
    /// Its SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// The hooks it provides: `roles`, `voucher`, `notify`, `door_rule`.
    pub hooks: Vec<String>,
    /// Its config, handed to `keyway_configure`.
    #[serde(default)]
    pub config: toml::Table,
}

impl Manifest {
    /// Parses a manifest.
    ///
    /// # Errors
    /// Invalid TOML, or a structure that is not a manifest.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

fn to_value(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::Str(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::Str(d.to_string()),
        toml::Value::Array(a) => Value::List(a.iter().map(to_value).collect()),
        toml::Value::Table(t) => Value::Table(t.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
    }
}

/// Converts a manifest `config` table into the plugin's [`Config`].
#[must_use]
pub fn to_config(table: &toml::Table) -> Config {
    Config {
        values: table.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

/// A loaded, validated bundle: its plugins, ready to call, and its compiled role table.
#[derive(Debug)]
pub struct Bundle {
    name: String,
    plugins: BTreeMap<String, Arc<Plugin>>,
    roles: RoleTable,
    voucher: Option<Arc<Plugin>>,
    notify: Vec<Arc<Plugin>>,
    rules: BTreeMap<String, Arc<Plugin>>,
}

impl Bundle {
    /// Loads the bundle in `dir` (its `bundle.toml` and the files it names).
    ///
    /// # Errors
    /// See [`BundleError`].
    pub fn load(runtime: &Arc<Runtime>, dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&text).map_err(|reason| BundleError::Manifest { path, reason })?;
        Bundle::from_manifest(runtime, &manifest, |file| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| BundleError::Io { path, source })
        })
    }

    /// Loads a bundle from a parsed manifest, reading files through `read`.
    ///
    /// # Errors
    /// See [`BundleError`].
    pub fn from_manifest(
        runtime: &Arc<Runtime>,
        manifest: &Manifest,
        mut read: impl FnMut(&str) -> Result<Vec<u8>, BundleError>,
    ) -> Result<Bundle, BundleError> {
        if manifest.bundle.abi != ABI_VERSION {
            return Err(BundleError::Invalid(format!(
                "bundle `{}` targets ABI version {}, this host speaks {ABI_VERSION}",
                manifest.bundle.name, manifest.bundle.abi
            )));
        }
        // First every hash, so a tampered bundle compiles nothing.
        let mut binaries = Vec::with_capacity(manifest.plugins.len());
        for (name, entry) in &manifest.plugins {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(BundleError::Invalid(format!(
                    "plugin name `{name}` must be lowercase letters, digits, `-` and `_`"
                )));
            }
            if entry.file.contains("..") || entry.file.starts_with('/') {
                return Err(BundleError::Invalid(format!(
                    "plugin `{name}`: file `{}` must be inside the bundle directory",
                    entry.file
                )));
            }
            let mut hooks = Vec::with_capacity(entry.hooks.len());
            for hook in &entry.hooks {
                hooks.push(Hook::from_name(hook).ok_or_else(|| {
                    BundleError::Invalid(format!(
                        "plugin `{name}`: unknown hook `{hook}` (known: roles, voucher, notify, door_rule)"
                    ))
                })?);
            }
            let wasm = read(&entry.file)?;
            let found = Sha256::of(&wasm);
            if found.to_string() != entry.sha256 {
                return Err(BundleError::HashMismatch {
                    plugin: name.clone(),
                    file: entry.file.clone(),
                    expected: entry.sha256.clone(),
                    found,
                });
            }
            binaries.push((name, entry, hooks, wasm));
        }
        let bundle_name = &manifest.bundle.name;
        let mut plugins = BTreeMap::new();
        let mut voucher: Option<Arc<Plugin>> = None;
        let mut notify = Vec::new();
        let mut rules = BTreeMap::new();
        let mut roles_plugin: Option<(&String, Arc<Plugin>)> = None;
        for (name, entry, hooks, wasm) in binaries {
            let plugin_err = |source: PluginError| BundleError::Plugin {
                plugin: name.clone(),
                source,
            };
            let plugin = Arc::new(
                runtime
                    .load(name, &wasm, &hooks, &to_config(&entry.config))
                    .map_err(plugin_err)?,
            );
            for hook in hooks {
                match hook {
                    Hook::Roles => {
                        if let Some((other, _)) = &roles_plugin {
                            return Err(BundleError::Invalid(format!(
                                "two plugins provide the `roles` hook: `{other}` and `{name}`"
                            )));
                        }
                        roles_plugin = Some((name, Arc::clone(&plugin)));
                    }
                    Hook::Voucher => {
                        if let Some(other) = &voucher {
                            return Err(BundleError::Invalid(format!(
                                "two plugins provide the `voucher` hook: `{}` and `{name}`",
                                other.name()
                            )));
                        }
                        voucher = Some(Arc::clone(&plugin));
                    }
                    Hook::Notify => notify.push(Arc::clone(&plugin)),
                    Hook::DoorRule => {
                        rules.insert(name.clone(), Arc::clone(&plugin));
                    }
                }
            }
            plugins.insert(name.clone(), plugin);
        }
        let Some((roles_name, roles_plugin)) = roles_plugin else {
            return Err(BundleError::Invalid(format!(
                "bundle `{bundle_name}` has no plugin providing the `roles` hook"
            )));
        };
        let def: RoleTableDef = roles_plugin
            .call(Hook::Roles, &())
            .map_err(|source| BundleError::Plugin {
                plugin: roles_name.clone(),
                source,
            })?;
        let roles = RoleTable::compile(&def).map_err(|source| BundleError::Roles {
            plugin: roles_name.clone(),
            source,
        })?;
        Ok(Bundle {
            name: bundle_name.clone(),
            plugins,
            roles,
            voucher,
            notify,
            rules,
        })
    }

    /// The bundle's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The compiled role table.
    #[must_use]
    pub fn roles(&self) -> &RoleTable {
        &self.roles
    }

    /// A plugin by name.
    #[must_use]
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// The plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = (&str, &Arc<Plugin>)> {
        self.plugins.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The door-rule plugin with this name.
    #[must_use]
    pub fn rule(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.rules.get(name)
    }

    /// Asks the voucher plugin about a write. Without a voucher plugin, every write is
    /// allowed.
    ///
    /// # Errors
    /// The plugin failed; the caller must refuse the write (a voucher fails closed).
    pub fn voucher(&self, input: &VoucherInput) -> Result<VoucherVerdict, PluginError> {
        match &self.voucher {
            Some(p) => p.call(Hook::Voucher, input),
            None => Ok(VoucherVerdict::Allow),
        }
    }

    /// The notifications one event produces, from every notify plugin in turn.
    ///
    /// # Errors
    /// The first plugin that failed.
    pub fn notify(&self, input: &NotifyInput) -> Result<Vec<Notification>, PluginError> {
        let mut out = Vec::new();
        for p in &self.notify {
            out.extend(p.call::<_, Vec<Notification>>(Hook::Notify, input)?);
        }
        Ok(out)
    }
}

impl Plugin {
    /// The door-rule hook.
    ///
    /// # Errors
    /// As [`Plugin::call`].
    pub fn door_rule(&self, input: &DoorRuleInput<'_>) -> Result<DoorRuleOutput, PluginError> {
        self.call(Hook::DoorRule, input)
    }
}

/// The running policy: the current bundle behind an [`ArcSwap`], the door rules, and the
/// sites' opening hours. Rules and hours live outside the bundle and survive a swap.
///
/// Architecture Invariant: a swap is atomic. A decision loads the bundle once and uses
/// that one throughout; decisions running during a swap finish on the old bundle, later
/// ones use the new one, and none fails.
#[derive(Debug)]
pub struct PolicyHost {
    runtime: Arc<Runtime>,
    bundle: ArcSwap<Bundle>,
    rules: DoorRules,
    hours: OpeningHours,
}

impl PolicyHost {
    /// A host running `bundle`.
    #[must_use]
    pub fn new(runtime: Arc<Runtime>, bundle: Bundle) -> Self {
        PolicyHost {
            runtime,
            bundle: ArcSwap::from_pointee(bundle),
            rules: DoorRules::new(),
            hours: OpeningHours::new(),
        }
    }

    /// A host running the bundle in `dir`.
    ///
    /// # Errors
    /// See [`BundleError`].
    pub fn load(runtime: Arc<Runtime>, dir: &Path) -> Result<Self, BundleError> {
        let bundle = Bundle::load(&runtime, dir)?;
        Ok(PolicyHost::new(runtime, bundle))
    }

    /// The current bundle.
    #[must_use]
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.load_full()
    }

    /// The door rules.
    #[must_use]
    pub fn door_rules(&self) -> &DoorRules {
        &self.rules
    }

    /// The sites' opening hours.
    #[must_use]
    pub fn opening_hours(&self) -> &OpeningHours {
        &self.hours
    }

    /// Sets the opening hours of `site`, or clears them with `None` (door rules then see
    /// `site_open: None` for its doors).
    pub fn set_site_opening_hours(&self, site: SiteId, hours: Option<Schedule>) {
        self.hours.set(site, hours);
    }

    /// Loads and validates the bundle in `dir`, then swaps it in. On error the running
    /// bundle stays. Answers the bundle swapped out.
    ///
    /// # Errors
    /// See [`BundleError`].
    pub fn swap_dir(&self, dir: &Path) -> Result<Arc<Bundle>, BundleError> {
        let bundle = Bundle::load(&self.runtime, dir)?;
        Ok(self.swap(bundle))
    }

    /// Swaps in an already validated bundle; answers the one swapped out.
    pub fn swap(&self, bundle: Bundle) -> Arc<Bundle> {
        self.bundle.swap(Arc::new(bundle))
    }

    /// Runs the door's rule, if any, on the core's decision, with the current bundle.
    #[must_use]
    pub fn decide(&self, decision: Decision, ctx: &DoorContext<'_>) -> RuledDecision {
        let bundle = self.bundle.load();
        self.rules.apply(&bundle, &self.hours, decision, ctx)
    }

    /// The bundle directory the server uses by default, relative to the workspace root.
    #[must_use]
    pub fn default_bundle_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
    }
}
