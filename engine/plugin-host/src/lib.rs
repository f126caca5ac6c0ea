//! Keyway's WebAssembly plugin host.
//!
//! Integrators change Keyway's policy with sandboxed plugins (see `sdk/`). This crate
//! loads them with wasmtime (Cranelift), calls their hooks within strict limits, compiles
//! the roles plugin's answer into bitmasks, runs per-door rules on the decision path, and
//! swaps whole policy bundles atomically.
//!
//! Code map:
//! - `validate`: cheap checks of a module before it is compiled (size, imports, counts),
//!   so loading costs are bounded.
//! - [`runtime`]: the engine, the host ABI (imports allowed: `keyway::log` only), limits
//!   per call, instance pools, strict decoding of answers; [`LoadedPlugin::call`] is one
//!   hook round trip.
//! - `cache`: compile once per process (only modules that loaded are kept); optional
//!   precompiled cache on disk, keyed by the engine's compatibility hash.
//! - `text`: caps and escapes the text a plugin controls before it is printed or kept.
//! - [`roles`]: [`RoleTable`], the capability and grant bitmasks.
//! - [`rules`]: [`DoorRules`], rule chains per door, fail-secure/fail-safe per attachment,
//!   per-person rule state, attachments kept consistent with the running bundle.
//! - [`hours`]: [`OpeningHours`], each site's opening hours, evaluated for door rules.
//! - [`bundle`]: the manifest, hash verification, [`Bundle`] and [`PolicyHost`] (hot swap).
//!
//! ```no_run
//! use keyway_plugin_host::{Limits, PolicyHost, Runtime};
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! let runtime = Arc::new(Runtime::new(Limits::default())?);
//! let host = PolicyHost::load(runtime, &PolicyHost::default_bundle_dir_in(Path::new(".")))?;
//! let roles = host.bundle().roles().role_flags();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
mod cache;
mod error;
pub mod hours;
pub mod roles;
pub mod rules;
pub mod runtime;
mod sha;
mod text;
mod validate;

pub use bundle::{Bundle, Manifest, PolicyHost};
pub use error::{BundleError, PluginError, RoleTableError};
pub use hours::OpeningHours;
pub use roles::{Capability, RoleTable};
pub use rules::{
    AttachError, DoorContext, DoorRules, FailMode, MAX_DOOR_CONFIG, Passage, RuleLink, RuleOutcome, RuleTrace,
    RuledDecision, Ruling, StateScope, check_door_config,
};
pub use runtime::{Limits, LoadedPlugin, Runtime};
pub use sha::Sha256;

/// The wire types the host shares with plugins (`keyway-abi`).
pub use keyway_abi as abi;
/// Which way a reader faces: part of [`DoorContext`].
pub use keyway_abi::Direction;
