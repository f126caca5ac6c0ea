//! Policy bundles: a manifest (`bundle.toml`) plus the `.wasm` files it pins, and the
//! [`PolicyHost`] that swaps bundles atomically.
//!
//! ```toml
//! [bundle]
//! name = "default"
//! abi = 4
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
use crate::rules::{DoorContext, DoorRules, Passage, RuledDecision};
use crate::rules::{MAX_REASON, MAX_RULE_STATE, check_obligations};
use crate::runtime::{LoadedPlugin, Runtime};
use crate::sha::Sha256;
use crate::text::{is_printable, printable};
use arc_swap::ArcSwap;
use keyway_abi::{
    Config, DoorRuleInput, DoorRuleOutput, EventKind, Hook, Notification, NotifyInput, RoleTableDef, RuleVerdict,
    SUPPORTED_ABI_VERSIONS, StateUpdate, Value, VoucherInput, VoucherVerdict,
};
use keyway_core::{Decision, Schedule, SiteId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default bundle's directory, relative to a Keyway checkout or install root.
pub const DEFAULT_BUNDLE_DIR: &str = "policies/default";

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
    /// The ABI version its plugins are built for: 1 to 4 (the host speaks each; each
    /// plugin says its own through `keyway_abi_version`).
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

impl PluginEntry {
    /// Checks this `[plugins.<name>]` entry on its own (the plugin's name, its file name,
    /// its hooks, the form of its sha256), reads its file through `read` and verifies
    /// the file's sha256 (either case), compiling nothing. Answers its hooks and bytes.
    ///
    /// # Errors
    /// [`BundleError::Invalid`] naming what is wrong, [`BundleError::HashMismatch`], or
    /// what `read` answered.
    pub fn verify(
        &self,
        name: &str,
        read: impl FnOnce(&str) -> Result<Vec<u8>, BundleError>,
    ) -> Result<(Vec<Hook>, Vec<u8>), BundleError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(BundleError::Invalid(format!(
                "plugin name `{}` must be lowercase letters, digits, `-` and `_`",
                printable(name, 64)
            )));
        }
        if self.file.contains("..") || self.file.starts_with('/') || !is_printable(&self.file, 255) {
            return Err(BundleError::Invalid(format!(
                "plugin `{name}`: file `{}` must be a printable name inside the bundle directory",
                printable(&self.file, 255)
            )));
        }
        let mut hooks = Vec::with_capacity(self.hooks.len());
        for hook in &self.hooks {
            hooks.push(Hook::from_name(hook).ok_or_else(|| {
                let known: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
                BundleError::Invalid(format!(
                    "plugin `{name}`: unknown hook `{}` (known: {})",
                    printable(hook, 64),
                    known.join(", ")
                ))
            })?);
        }
        // Upper-case hex digits are accepted: they name the same digest.
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BundleError::Invalid(format!(
                "plugin `{name}`: sha256 `{}` is not 64 hex digits",
                printable(&self.sha256, 80)
            )));
        }
        let wasm = read(&self.file)?;
        let found = Sha256::of(&wasm);
        if !found.to_string().eq_ignore_ascii_case(&self.sha256) {
            return Err(BundleError::HashMismatch {
                plugin: name.to_owned(),
                file: self.file.clone(),
                expected: self.sha256.clone(),
                found,
            });
        }
        Ok((hooks, wasm))
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

/// Largest manifest read, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Reads a bundle file: a regular file (or a link to one), never a device, a pipe or a
/// directory, at most `max` bytes (checked before reading, and again while reading, in
/// case it grows).
///
/// # Errors
/// [`BundleError::NotAFile`], [`BundleError::FileTooLarge`], [`BundleError::Io`].
pub fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, BundleError> {
    use std::io::Read as _;
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || BundleError::FileTooLarge {
        path: path.to_path_buf(),
        max,
    };
    // `metadata` follows links: what counts is what the link points to. Checked before
    // opening, as opening a pipe would block until a writer came.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(BundleError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > max as u64 {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // The same check on what was opened, in case the path changed in between.
    if !file.metadata().map_err(io)?.is_file() {
        return Err(BundleError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(max).min(max));
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A loaded, validated bundle: its plugins, ready to call, and its compiled role table.
#[derive(Debug)]
pub struct Bundle {
    name: String,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    roles: RoleTable,
    voucher: Option<Arc<LoadedPlugin>>,
    notify: Vec<Arc<LoadedPlugin>>,
    rules: BTreeMap<String, Arc<LoadedPlugin>>,
}

impl Bundle {
    /// Loads the bundle in `dir` (its `bundle.toml` and the files it names).
    ///
    /// # Errors
    /// See [`BundleError`].
    pub fn load(runtime: &Arc<Runtime>, dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join(MANIFEST);
        let text = read_capped(&path, MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(text).map_err(|_| BundleError::Manifest {
            path: path.clone(),
            reason: "not UTF-8".into(),
        })?;
        let manifest = Manifest::parse(&text).map_err(|reason| BundleError::Manifest { path, reason })?;
        let max = runtime.limits().max_module_bytes;
        Bundle::from_manifest(runtime, &manifest, |file| read_capped(&dir.join(file), max))
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
        if manifest.bundle.name.is_empty() || !is_printable(&manifest.bundle.name, 64) {
            return Err(BundleError::Invalid(format!(
                "bundle name `{}` must be 1 to 64 printable bytes",
                printable(&manifest.bundle.name, 64)
            )));
        }
        if !SUPPORTED_ABI_VERSIONS.contains(&manifest.bundle.abi) {
            return Err(BundleError::Invalid(format!(
                "bundle `{}` targets ABI version {}, this host speaks {}",
                manifest.bundle.name,
                manifest.bundle.abi,
                crate::runtime::supported_versions()
            )));
        }
        // First every hash, so a tampered bundle compiles nothing.
        let mut binaries = Vec::with_capacity(manifest.plugins.len());
        for (name, entry) in &manifest.plugins {
            let (hooks, wasm) = entry.verify(name, &mut read)?;
            binaries.push((name, entry, hooks, wasm));
        }
        let bundle_name = &manifest.bundle.name;
        let mut plugins = BTreeMap::new();
        let mut voucher: Option<Arc<LoadedPlugin>> = None;
        let mut notify = Vec::new();
        let mut rules = BTreeMap::new();
        let mut roles_plugin: Option<(&String, Arc<LoadedPlugin>)> = None;
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
                    // A door rule's passage and door_config hooks are called for the
                    // doors that attach the rule; declaring them only makes the host
                    // check they are exported.
                    Hook::Passage | Hook::DoorConfig => {}
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
    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }

    /// The plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = (&str, &Arc<LoadedPlugin>)> {
        self.plugins.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The names of its door rules.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }

    /// The door-rule plugin with this name.
    #[must_use]
    pub fn rule(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.rules.get(name)
    }

    /// Asks the voucher plugin about a write. Without a voucher plugin, every write is
    /// allowed.
    ///
    /// # Errors
    /// The plugin failed; the caller must refuse the write (a voucher fails closed).
    pub fn voucher(&self, input: &VoucherInput) -> Result<VoucherVerdict, PluginError> {
        match &self.voucher {
            Some(p) => Ok(match p.call(Hook::Voucher, input)? {
                VoucherVerdict::Allow => VoucherVerdict::Allow,
                // Still a deny, with a message capped and printable.
                VoucherVerdict::Deny { message } => VoucherVerdict::Deny {
                    message: printable(&message, MAX_REASON),
                },
            }),
            None => Ok(VoucherVerdict::Allow),
        }
    }

    /// Whether a notify plugin of the bundle speaks an ABI version that names `kind`, so
    /// that [`Bundle::notify`] can ask it about an event of that kind.
    #[must_use]
    pub fn notifies(&self, kind: EventKind) -> bool {
        self.notify.iter().any(|p| p.abi_version() >= kind.since_abi())
    }

    /// The notifications one event produces, from every notify plugin in turn. A plugin
    /// whose ABI version does not name the event's kind is not asked; one that does not
    /// name some enabled kind sees the enabled list without it (it could not decode it).
    ///
    /// # Errors
    /// The first plugin that failed.
    pub fn notify(&self, input: &NotifyInput) -> Result<Vec<Notification>, PluginError> {
        let mut out = Vec::new();
        for p in &self.notify {
            let version = p.abi_version();
            if version < input.event.kind.since_abi() {
                continue;
            }
            let notifications = if input.settings.enabled.iter().all(|k| k.since_abi() <= version) {
                p.call::<_, Vec<Notification>>(Hook::Notify, input)?
            } else {
                let mut older = input.clone();
                older.settings.enabled.retain(|k| k.since_abi() <= version);
                p.call::<_, Vec<Notification>>(Hook::Notify, &older)?
            };
            check_notifications(&notifications)?;
            out.extend(notifications);
        }
        Ok(out)
    }
}

/// Most notifications one notify plugin may answer for one event.
pub const MAX_NOTIFICATIONS: usize = 16;
/// Largest notification subject, in bytes.
pub const MAX_SUBJECT: usize = 256;
/// Largest notification body, in bytes.
pub const MAX_BODY: usize = 64 << 10;
/// Largest recipient address, in bytes.
pub const MAX_ADDRESS: usize = 320;

/// Refuses a notify answer over any of its caps.
fn check_notifications(notifications: &[Notification]) -> Result<(), PluginError> {
    let over = |what, count, max| {
        if count > max {
            Err(PluginError::OutputLimit { what, count, max })
        } else {
            Ok(())
        }
    };
    over("notifications for one event", notifications.len(), MAX_NOTIFICATIONS)?;
    for n in notifications {
        over("bytes in a notification's subject", n.subject.len(), MAX_SUBJECT)?;
        over("bytes in a notification's body", n.body.len(), MAX_BODY)?;
        over("bytes in a recipient's address", n.recipient.address.len(), MAX_ADDRESS)?;
    }
    Ok(())
}

impl LoadedPlugin {
    /// The door-rule hook, for either ABI version (a version 1 answer keeps the door's
    /// and the site's states).
    ///
    /// # Errors
    /// As [`LoadedPlugin::call`].
    pub fn door_rule(&self, input: &DoorRuleInput<'_>) -> Result<DoorRuleOutput, PluginError> {
        let mut out: DoorRuleOutput = if self.abi_version() >= 2 {
            self.call(Hook::DoorRule, input)?
        } else {
            // Version 1's output: the verdict and the person's state only.
            let (verdict, state): (RuleVerdict, StateUpdate) = self.call(Hook::DoorRule, input)?;
            DoorRuleOutput {
                verdict,
                state,
                door_state: StateUpdate::Keep,
                site_state: StateUpdate::Keep,
                obligations: Vec::new(),
            }
        };
        for state in [&out.state, &out.door_state, &out.site_state] {
            if let StateUpdate::Set(bytes) = state
                && bytes.len() > MAX_RULE_STATE
            {
                return Err(PluginError::StateTooLarge {
                    len: bytes.len(),
                    max: MAX_RULE_STATE,
                });
            }
        }
        check_obligations(&mut out.obligations)?;
        if let RuleVerdict::Deny { reason } = &mut out.verdict {
            // Still a deny, with a reason capped and printable, as on the decision path.
            *reason = printable(reason, MAX_REASON);
        }
        Ok(out)
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
        let bundle = Arc::new(bundle);
        PolicyHost {
            runtime,
            rules: DoorRules::for_bundle(Arc::clone(&bundle)),
            bundle: ArcSwap::new(bundle),
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
    /// See [`BundleError`] and [`PolicyHost::swap`].
    pub fn swap_dir(&self, dir: &Path) -> Result<Arc<Bundle>, BundleError> {
        let bundle = Bundle::load(&self.runtime, dir)?;
        self.swap(bundle)
    }

    /// Swaps in an already validated bundle; answers the one swapped out.
    ///
    /// # Errors
    /// [`BundleError::RuleStillAttached`] when the bundle lacks a door rule that a door
    /// attaches (the running bundle stays; detach the rule first);
    /// [`BundleError::DoorConfigRefused`] when one of its rules refuses a door's
    /// configuration.
    pub fn swap(&self, bundle: Bundle) -> Result<Arc<Bundle>, BundleError> {
        let bundle = Arc::new(bundle);
        self.rules
            .swap_checked(&bundle, || self.bundle.swap(Arc::clone(&bundle)))
    }

    /// Swaps in a bundle whatever the doors attach; answers the one swapped out. For a
    /// node applying an activation the change log already holds: the writer checked it
    /// against the stored chains, and refusing it here would only leave this node on
    /// another bundle than its peers. An attached rule the bundle lacks, or whose
    /// configuration it would refuse, fails at each decision, so the door's fail mode
    /// decides; no door loses its rule meanwhile.
    pub fn adopt(&self, bundle: Bundle) -> Arc<Bundle> {
        let bundle = Arc::new(bundle);
        self.rules
            .swap_unchecked(&bundle, || self.bundle.swap(Arc::clone(&bundle)))
    }

    /// Tells the door's rules of a passage (what actually happened, as an IQ reports
    /// it), with the current bundle; answers the rules that failed.
    #[must_use]
    pub fn passage(&self, passage: &Passage) -> Vec<(Arc<str>, PluginError)> {
        let bundle = self.bundle.load();
        self.rules.passage(&bundle, passage)
    }

    /// Runs the door's rule, if any, on the core's decision, with the current bundle.
    #[must_use]
    pub fn decide(&self, decision: Decision, ctx: &DoorContext<'_>) -> RuledDecision {
        let bundle = self.bundle.load();
        self.rules.apply(&bundle, &self.hours, decision, ctx)
    }

    /// The default bundle's directory under `root` (a Keyway checkout or install
    /// root): `<root>/policies/default`. The library builds in no path of its own: the
    /// binary decides what `root` is.
    #[must_use]
    pub fn default_bundle_dir_in(root: &Path) -> PathBuf {
        root.join(DEFAULT_BUNDLE_DIR)
    }
}
