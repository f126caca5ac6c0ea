//! Shared fixtures: runtimes, the default bundle, and a WAT plugin skeleton.

use keyway_plugin_host::{Bundle, Limits, PolicyHost, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(Limits::default()).unwrap())
}

/// The committed default bundle: the workspace root is two levels above this crate.
pub fn default_dir() -> PathBuf {
    PolicyHost::default_bundle_dir_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

pub fn default_bundle(runtime: &Arc<Runtime>) -> Bundle {
    Bundle::load(runtime, &default_dir()).unwrap()
}

/// A plugin in WAT: memory of 2 pages, `keyway_alloc` always answers 1024 (one call at a
/// time), `keyway_configure` answers `Ok(())`, `keyway_notify` answers `Ok(vec![])`, and
/// `extra` adds exports, or overrides these (an export `extra` defines replaces the
/// skeleton's).
pub fn wat_plugin(extra: &str) -> Vec<u8> {
    wat_plugin_with("", extra)
}

/// [`wat_plugin`] with imports (which WAT wants before any definition).
pub fn wat_plugin_with(imports: &str, extra: &str) -> Vec<u8> {
    let skeleton = [
        (
            "keyway_abi_version",
            r#"(func (export "keyway_abi_version") (result i32) (i32.const 1))"#,
        ),
        (
            "keyway_alloc",
            r#"(func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))"#,
        ),
        ("keyway_dealloc", r#"(func (export "keyway_dealloc") (param i32 i32))"#),
        (
            "keyway_configure",
            r#"(func (export "keyway_configure") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))"#,
        ),
        (
            "keyway_notify",
            r#"(func (export "keyway_notify") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 2)))"#,
        ),
    ];
    let mut body = String::new();
    for (name, func) in skeleton {
        if !extra.contains(&format!("(export \"{name}\")")) {
            body.push_str(func);
            body.push('\n');
        }
    }
    body.push_str(extra);
    wat_module_with(imports, &body)
}

/// A module with `memory` (2 pages), the `Ok` bytes at 16 and 48, and `body`.
pub fn wat_module(body: &str) -> Vec<u8> {
    wat_module_with("", body)
}

/// [`wat_module`] with imports.
pub fn wat_module_with(imports: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            {imports}
            (memory (export "memory") 2)
            (data (i32.const 16) "\00")
            (data (i32.const 48) "\00\00")
            {body})"#
    ))
    .unwrap()
}
