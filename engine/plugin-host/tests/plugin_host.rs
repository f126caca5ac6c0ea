//! The plugin host's integration tests: one binary, one module per concern.
//!
//! The standard plugins are loaded from the committed `policies/default` bundle, so these
//! tests also prove the committed `.wasm` files work. Hostile plugins are WAT fixtures.

#![expect(clippy::unwrap_used, reason = "tests")]

#[path = "plugin_host/abi_doc.rs"]
mod abi_doc;
#[path = "plugin_host/bundle.rs"]
mod bundle;
#[path = "plugin_host/common.rs"]
mod common;
#[path = "plugin_host/door_config.rs"]
mod door_config;
#[path = "plugin_host/hostile.rs"]
mod hostile;
#[path = "plugin_host/roles.rs"]
mod roles;
#[path = "plugin_host/rules.rs"]
mod rules;
#[path = "plugin_host/scoped.rs"]
mod scoped;
#[path = "plugin_host/swap.rs"]
mod swap;
