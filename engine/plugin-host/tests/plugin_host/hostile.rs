//! Hostile plugins: each yields a clear error within its budget, and the host goes on
//! serving (the same plugin, on a fresh instance, and another plugin both answer).

use crate::common::{runtime, wat_module, wat_plugin, wat_plugin_with};
use keyway_plugin_host::sdk::{Hook, Notification, testing::door_input};
use keyway_plugin_host::{Plugin, PluginError, Runtime};
use keyway_sdk::Config;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every hostile call must fail within this (fuel, memory and stack caps all bite far
/// sooner; this only guards against a hang).
const BUDGET: Duration = Duration::from_secs(5);

fn load(runtime: &Arc<Runtime>, wasm: &[u8]) -> Result<Plugin, PluginError> {
    runtime.load("fixture", wasm, &[], &Config::new())
}

fn good_call(plugin: &Plugin) {
    let out: Vec<Notification> = plugin.call(Hook::Notify, &()).unwrap();
    assert!(out.is_empty());
}

#[test]
fn call_time_attacks() {
    let runtime = runtime();
    let bystander = load(&runtime, &wat_plugin("")).unwrap();
    // (case, door_rule body, expected error)
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "infinite loop",
            "",
            r#"(func (export "keyway_door_rule") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
            "ran out of fuel after 10000000 units (an endless loop?)",
        ),
        (
            "memory-growth bomb",
            "",
            r#"(func (export "keyway_door_rule") (param i32 i32) (result i64)
                (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0))"#,
            "exceeded the memory cap of 16777216 bytes",
        ),
        (
            "deep recursion",
            "",
            r#"(func $r (param i32) (result i32) (call $r (i32.add (local.get 0) (i32.const 1))))
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (drop (call $r (i32.const 0))) (i64.const 0))"#,
            "wasm stack overflow (the cap is 262144 bytes; deep recursion?)",
        ),
        (
            "trap",
            "",
            r#"(func (export "keyway_door_rule") (param i32 i32) (result i64) unreachable)"#,
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            "huge output",
            "",
            r#"(func (export "keyway_door_rule") (param i32 i32) (result i64) (i64.const 0x7fffffff))"#,
            "output of 2147483647 bytes exceeds the cap of 1048576 bytes",
        ),
        (
            "output pointer out of bounds",
            "",
            r#"(func (export "keyway_door_rule") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 0xffff0000) (i64.const 32)) (i64.const 16)))"#,
            "output buffer out of bounds: 16 bytes at 4294901760, memory holds 131072 bytes",
        ),
        (
            "trap after logging",
            r#"(import "keyway" "log" (func $log (param i32 i32)))"#,
            r#"(data (i32.const 64) "panic: boom")
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (call $log (i32.const 64) (i32.const 11)) unreachable)"#,
            "trapped: wasm trap: wasm `unreachable` instruction executed (plugin log: panic: boom)",
        ),
    ];
    for (case, imports, body, expected) in cases {
        let plugin = load(&runtime, &wat_plugin_with(imports, body)).unwrap();
        let start = Instant::now();
        let err = plugin.door_rule(&door_input(1, Some(1))).unwrap_err();
        assert!(start.elapsed() < BUDGET, "{case}: took {:?}", start.elapsed());
        assert_eq!(err.to_string(), expected, "{case}");
        assert!(err.discards_instance(), "{case}");
        // The host goes on serving: the same plugin on a fresh instance, and another one.
        good_call(&plugin);
        good_call(&bystander);
        // And the hostile hook fails the same way again, not worse.
        assert_eq!(
            plugin.door_rule(&door_input(1, Some(1))).unwrap_err().to_string(),
            expected,
            "{case} again"
        );
    }
}

#[test]
fn load_time_attacks() {
    let runtime = runtime();
    let good = wat_plugin("");
    let truncated = &good[..good.len() / 2];
    let header = r#"
        (func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "keyway_dealloc") (param i32 i32))
        (func (export "keyway_configure") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong ABI version",
            wat_module(&format!(
                r#"(func (export "keyway_abi_version") (result i32) (i32.const 2)) {header}"#
            )),
            "plugin speaks ABI version 2, this host speaks 1",
        ),
        (
            "missing export",
            wat_module(r#"(func (export "keyway_abi_version") (result i32) (i32.const 1))"#),
            "export `keyway_alloc` is missing or has the wrong type: not exported",
        ),
        (
            "WASI import",
            wat_plugin_with(
                r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
                "",
            ),
            "import `wasi_snapshot_preview1::fd_write` is not part of Keyway's host ABI \
             (plugins may import only `keyway::log`)",
        ),
        (
            "keyway import with the wrong type",
            wat_plugin_with(r#"(import "keyway" "log" (func (param i64)))"#, ""),
            "import `keyway::log` is not part of Keyway's host ABI (plugins may import only `keyway::log`)",
        ),
        (
            "not wasm",
            b"#!/bin/sh\necho pwned\n".to_vec(),
            "not a WebAssembly module (no `\\0asm` header)",
        ),
        ("empty", Vec::new(), "not a WebAssembly module (no `\\0asm` header)"),
    ];
    for (case, wasm, expected) in cases {
        let err = load(&runtime, &wasm).unwrap_err();
        assert_eq!(err.to_string(), expected, "{case}");
    }
    let err = load(&runtime, truncated).unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidModule { reason } if reason.contains("unexpected end")),
        "truncated: {err}"
    );
    // The runtime still loads and serves a good plugin.
    good_call(&load(&runtime, &good).unwrap());
}

/// The call-time attacks again, but where the host runs them while loading: in the exports
/// it calls before any hook (`keyway_abi_version`, `keyway_alloc` for the config,
/// `keyway_configure`) and in the module's own declarations. Loading must fail within
/// its budget with the same clear errors, and the host must go on serving.
#[test]
fn attacks_while_loading() {
    let runtime = runtime();
    let bystander = load(&runtime, &wat_plugin("")).unwrap();
    let ok_configure = r#"(func (export "keyway_configure") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))"#;
    let version = r#"(func (export "keyway_abi_version") (result i32) (i32.const 1))"#;
    let alloc = r#"(func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))"#;
    let dealloc = r#"(func (export "keyway_dealloc") (param i32 i32))"#;
    let module = |memory_pages: u32, version: &str, alloc: &str, configure: &str| {
        wat::parse_str(format!(
            r#"(module
                (memory (export "memory") {memory_pages})
                (data (i32.const 16) "\00")
                (func $r (param i32) (result i32) (call $r (i32.add (local.get 0) (i32.const 1))))
                {version} {alloc} {dealloc} {configure})"#
        ))
        .unwrap()
    };
    // (case, module, expected error)
    let cases = [
        (
            "infinite loop in keyway_configure",
            module(
                2,
                version,
                alloc,
                r#"(func (export "keyway_configure") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
            ),
            "ran out of fuel after 10000000 units (an endless loop?)",
        ),
        (
            "memory-growth bomb in keyway_configure",
            module(
                2,
                version,
                alloc,
                r#"(func (export "keyway_configure") (param i32 i32) (result i64)
                    (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0))"#,
            ),
            "exceeded the memory cap of 16777216 bytes",
        ),
        (
            "deep recursion in keyway_abi_version",
            module(
                2,
                r#"(func (export "keyway_abi_version") (result i32) (call $r (i32.const 0)))"#,
                alloc,
                ok_configure,
            ),
            "wasm stack overflow (the cap is 262144 bytes; deep recursion?)",
        ),
        (
            "infinite loop in keyway_alloc",
            module(
                2,
                version,
                r#"(func (export "keyway_alloc") (param i32) (result i32) (loop $l (br $l)) (i32.const 0))"#,
                ok_configure,
            ),
            "ran out of fuel after 10000000 units (an endless loop?)",
        ),
        (
            "input pointer out of bounds from keyway_alloc",
            module(
                2,
                version,
                r#"(func (export "keyway_alloc") (param i32) (result i32) (i32.const -16))"#,
                ok_configure,
            ),
            "input buffer out of bounds: 1 bytes at 4294967280, memory holds 131072 bytes",
        ),
        (
            "memory bomb declared up front (1024 pages, 64 MiB)",
            module(1024, version, alloc, ok_configure),
            "exceeded the memory cap of 16777216 bytes",
        ),
    ];
    for (case, wasm, expected) in cases {
        let start = Instant::now();
        let err = load(&runtime, &wasm).unwrap_err();
        assert!(start.elapsed() < BUDGET, "{case}: took {:?}", start.elapsed());
        assert_eq!(err.to_string(), expected, "{case}");
        // The host goes on serving: a plugin loaded before, and one loaded after.
        good_call(&bystander);
        good_call(&load(&runtime, &wat_plugin("")).unwrap());
    }
}

#[test]
fn declared_hook_must_be_exported() {
    let runtime = runtime();
    let err = runtime
        .load("fixture", &wat_plugin(""), &[Hook::DoorRule], &Config::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "hook `door_rule` is not exported (no `keyway_door_rule`)"
    );
}

#[test]
fn clean_errors_keep_the_instance() {
    let runtime = runtime();
    // Err("nope"): variant 1, then the string.
    let plugin = load(
        &runtime,
        &wat_plugin(
            r#"(data (i32.const 80) "\01\04nope")
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 80) (i64.const 32)) (i64.const 6)))
               (data (i32.const 96) "\00\07")
               (func (export "keyway_roles") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 96) (i64.const 32)) (i64.const 2)))"#,
        ),
    )
    .unwrap();
    let before = plugin.idle_instances();
    let err = plugin.door_rule(&door_input(1, None)).unwrap_err();
    assert_eq!(err.to_string(), "plugin error: nope");
    assert!(!err.discards_instance());
    assert_eq!(plugin.idle_instances(), before);
    // Garbage output: a decode error, the instance stays.
    let err = plugin
        .call::<_, keyway_sdk::RoleTableDef>(Hook::Roles, &())
        .unwrap_err();
    assert!(matches!(err, PluginError::Decode { .. }), "{err}");
    // An input over the cap never reaches the plugin.
    let big = vec![0u8; (1 << 20) + 1];
    let err = plugin.call_raw(Hook::Notify, &big).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input of 1048577 bytes exceeds the cap of 1048576 bytes"
    );
    good_call(&plugin);
    assert_eq!(plugin.idle_instances(), before, "no instance was discarded");
}
