//! Hostile plugins: each yields a clear error within its budget, and the host goes on
//! serving (the same plugin, on a fresh instance, and another plugin both answer).

use crate::common::{runtime, wat_module, wat_plugin, wat_plugin_with};
use keyway_core::{Decision, DoorId, Effect, GroupId, PersonId, Reason, Revision, SiteId};
use keyway_plugin_host::bundle::read_capped;
use keyway_plugin_host::{
    Bundle, DoorContext, FailMode, Limits, LoadedPlugin, PluginError, PolicyHost, Runtime, StateScope,
};
use keyway_sdk::{Config, RoleTableDef, RuleVerdict};
use keyway_sdk::{Hook, Notification, testing::door_input};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most a module at the limits may take to compile. About a second on an idle
/// 2-core machine, up to 6 s with the test suite and other builds competing for the
/// cores; without the limits, a module of 100,000 small functions took many seconds even
/// on an idle machine.
const COMPILE_BUDGET: Duration = Duration::from_secs(30);

/// The fuel error for a call that ran out in `during`.
fn fuel(during: &str) -> String {
    format!(
        "ran out of fuel in {during}: the fuel limit is 10000000 units per call, a fresh instance's set-up and host calls included"
    )
}

/// Every hostile call must fail within this (fuel, memory and stack caps all bite far
/// sooner; this only guards against a hang).
const BUDGET: Duration = Duration::from_secs(5);

fn load(runtime: &Arc<Runtime>, wasm: &[u8]) -> Result<LoadedPlugin, PluginError> {
    runtime.load("fixture", wasm, &[], &Config::new())
}

fn good_call(plugin: &LoadedPlugin) {
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
            &fuel("`keyway_door_rule`"),
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
                r#"(func (export "keyway_abi_version") (result i32) (i32.const 5)) {header}"#
            )),
            "plugin speaks ABI version 5, this host speaks versions 1, 2, 3, 4",
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
            "import `keyway::log` has type `(func (param i64))`, the host ABI's is `(func (param i32 i32))`",
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
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "infinite loop in keyway_configure",
            module(
                2,
                version,
                alloc,
                r#"(func (export "keyway_configure") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
            ),
            &fuel("`keyway_configure`"),
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
            &fuel("`keyway_alloc`"),
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
    let err = plugin.call::<_, RoleTableDef>(Hook::Roles, &()).unwrap_err();
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

/// A runtime with default limits but these changes.
fn runtime_with(change: impl FnOnce(&mut Limits)) -> Arc<Runtime> {
    let mut limits = Limits::default();
    change(&mut limits);
    Arc::new(Runtime::new(limits).unwrap())
}

/// `count` copies of `item`, for modules built to break a count limit.
fn repeat(item: &str, count: usize) -> String {
    item.repeat(count)
}

/// Loading costs are bounded: each limit on what a module declares is checked before
/// anything is compiled (so a refused module compiles nothing and is not cached), and
/// the error names the limit.
#[test]
fn loading_costs_are_bounded() {
    let runtime = runtime();
    let good = wat_plugin("");
    let mut with_customs = good.clone();
    for _ in 0..33 {
        // A custom section: id 0, 2 bytes: a 1-byte name `x`.
        with_customs.extend_from_slice(&[0, 2, 1, b'x']);
    }
    let mut component = b"\0asm".to_vec();
    component.extend_from_slice(&[0x0d, 0x00, 0x01, 0x00]);
    // (case, module, expected error)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "2,001 tiny functions",
            wat_plugin(&repeat("(func)", 1_996)),
            // The skeleton has 5 functions of its own.
            "module declares 2001 functions, over the limit of 2000",
        ),
        (
            "a function body over 256 KiB",
            wat_plugin(&format!("(func {})", repeat("(drop (i32.const 0))", 90_000))),
            "a function body of 270002 bytes exceeds the function size limit of 262144 bytes",
        ),
        (
            "1,001 globals",
            wat_plugin(&repeat("(global i32 (i32.const 0))", 1_001)),
            "module declares 1001 globals, over the limit of 1000",
        ),
        (
            "a table of 20,000 elements",
            wat_plugin("(table 20000 funcref)"),
            "module declares 20000 table elements, over the limit of 10000",
        ),
        (
            "1,001 data segments",
            wat_plugin(&repeat(r#"(data (i32.const 0) "x")"#, 1_001)),
            "module declares 1003 data segments, over the limit of 1000",
        ),
        (
            "33 custom sections",
            with_customs,
            "module declares 33 custom sections, over the limit of 32",
        ),
        (
            "a component",
            component,
            "a WebAssembly component, not a core module (see sdk/ABI.md)",
        ),
        (
            "a forbidden import, refused before compiling",
            wat_plugin_with(r#"(import "env" "abort" (func))"#, ""),
            "import `env::abort` is not part of Keyway's host ABI (plugins may import only `keyway::log`)",
        ),
    ];
    for (case, wasm, expected) in cases {
        let compiled = runtime.compiled_count();
        let start = Instant::now();
        let err = load(&runtime, &wasm).unwrap_err();
        assert_eq!(err.to_string(), expected, "{case}");
        assert!(start.elapsed() < BUDGET, "{case}: took {:?}", start.elapsed());
        assert_eq!(runtime.compiled_count(), compiled, "{case}: nothing was compiled");
    }
    assert_eq!(runtime.cached_modules(), 0, "refused modules are not cached");

    // The module size limit, on a runtime that allows only small modules.
    let small = runtime_with(|l| l.max_module_bytes = 100);
    let err = load(&small, &good).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "module of {} bytes exceeds the module size limit of 100 bytes",
            good.len()
        )
    );

    // A module that compiles but is refused later (its configure fails) costs a compile
    // each time it is tried, and stays in no cache; a module that loads is cached once.
    let refuses = wat_plugin(
        r#"(data (i32.const 80) "\01\02no")
           (func (export "keyway_configure") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 80) (i64.const 32)) (i64.const 4)))"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let on_disk = Arc::new(Runtime::new(Limits::default()).unwrap().with_cache_dir(dir.path()));
    for attempt in 1..=2 {
        let err = load(&on_disk, &refuses).unwrap_err();
        assert_eq!(err.to_string(), "plugin error: no");
        assert_eq!(on_disk.compiled_count(), attempt);
        assert_eq!(on_disk.cached_modules(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing on disk");
    }
    good_call(&load(&on_disk, &good).unwrap());
    good_call(&load(&on_disk, &good).unwrap());
    assert_eq!((on_disk.compiled_count(), on_disk.cached_modules()), (3, 1));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "one module on disk");

    // At the limits, the costliest modules to compile still compile within the budget:
    // as many functions as allowed, or functions as large as allowed, filling the module
    // size limit with code Cranelift cannot optimise away.
    let code = |reps: usize| {
        format!(
            "(func (local i32) {})",
            repeat("(local.set 0 (i32.add (local.get 0) (i32.const 1)))", reps)
        )
    };
    let costly = [
        ("1,995 functions of 980 bytes", wat_plugin(&repeat(&code(140), 1_995))),
        ("8 functions of 253 KiB", wat_plugin(&repeat(&code(37_000), 8))),
    ];
    for (case, wasm) in costly {
        assert!(wasm.len() <= Limits::default().max_module_bytes, "{case}");
        let start = Instant::now();
        good_call(&load(&runtime, &wasm).unwrap());
        assert!(start.elapsed() < COMPILE_BUDGET, "{case}: took {:?}", start.elapsed());
    }
}

/// Bundle files are read with a cap, and only when they are regular files: never a
/// device, a pipe or a directory, nor a link to one.
#[test]
fn bundle_files_are_read_with_care() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("small"), b"12345").unwrap();
    std::fs::write(path("large"), vec![0u8; 4097]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", path("zero")).unwrap();
    std::os::unix::fs::symlink(path("small"), path("link")).unwrap();
    std::fs::create_dir(path("dir")).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(path("fifo")).status();
    // (file, expected: the bytes, or the error)
    let mut cases: Vec<(&str, Result<&[u8], String>)> = vec![
        ("small", Ok(b"12345")),
        ("link", Ok(b"12345")),
        (
            "large",
            Err(format!(
                "`{}` is larger than the limit of 4096 bytes",
                path("large").display()
            )),
        ),
        (
            "zero",
            Err(format!("`{}` is not a regular file", path("zero").display())),
        ),
        ("dir", Err(format!("`{}` is not a regular file", path("dir").display()))),
    ];
    if fifo.is_ok_and(|s| s.success()) {
        cases.push((
            "fifo",
            Err(format!("`{}` is not a regular file", path("fifo").display())),
        ));
    }
    for (file, expected) in cases {
        let start = Instant::now();
        let got = read_capped(&path(file), 4096).map_err(|e| e.to_string());
        assert_eq!(got.as_deref(), expected.as_deref(), "{file}");
        assert!(start.elapsed() < BUDGET, "{file}");
    }
    // Through a bundle: a `.wasm` that links to a device is refused before it is read.
    let bundle = crate::bundle::edited_bundle(|t| t);
    let wasm = bundle.path().join("anti-passback.wasm");
    std::fs::remove_file(&wasm).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &wasm).unwrap();
    let err = Bundle::load(&runtime(), bundle.path()).unwrap_err();
    assert_eq!(err.to_string(), format!("`{}` is not a regular file", wasm.display()));
}

/// Fuel bounds the time of a call: host calls cost fuel too, and one budget pays for the
/// whole call, a fresh instance's set-up included, so a plugin that traps on every call
/// (and so is set up again for every call) still spends one budget per call.
#[test]
fn fuel_bounds_time() {
    let runtime = runtime();
    let log = r#"(import "keyway" "log" (func $log (param i32 i32)))"#;
    // Logging 2 KiB in an endless loop runs out of fuel like computing in one.
    let flood = load(
        &runtime,
        &wat_plugin_with(
            log,
            r#"(func (export "keyway_door_rule") (param i32 i32) (result i64)
                (loop $l (call $log (i32.const 0) (i32.const 2048)) (br $l)) (i64.const 0))"#,
        ),
    )
    .unwrap();
    let start = Instant::now();
    let err = flood.door_rule(&door_input(1, Some(1))).unwrap_err();
    assert_eq!(err.to_string(), fuel("`keyway_door_rule`"));
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());

    // The log keeps 64 calls and says how many more there were.
    let chatty = load(
        &runtime,
        &wat_plugin_with(
            log,
            r#"(data (i32.const 64) "x")
               (func (export "keyway_door_rule") (param i32 i32) (result i64) (local $i i32)
                (loop $l
                  (call $log (i32.const 64) (i32.const 1))
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
                unreachable)"#,
        ),
    )
    .unwrap();
    let err = chatty.door_rule(&door_input(1, Some(1))).unwrap_err();
    let kept = vec!["x"; 64].join("; ");
    assert_eq!(
        err.to_string(),
        format!(
            "trapped: wasm trap: wasm `unreachable` instruction executed (plugin log: {kept} [36 more log calls not kept])"
        )
    );

    // `keyway_configure` and the hook each spin for about 60% of a budget, and the hook
    // then traps. On the instance made at load (a full budget for the call) the trap is
    // reached; every later call needs a fresh instance, whose set-up draws on the same
    // budget, so the hook runs out of fuel before it traps.
    let spin = |n: u32| {
        format!(
            "(local $i i32) (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1))) \
             (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))"
        )
    };
    let greedy = load(
        &runtime,
        &wat_module(&format!(
            r#"(func (export "keyway_abi_version") (result i32) (i32.const 1))
               (func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))
               (func (export "keyway_dealloc") (param i32 i32))
               (func (export "keyway_configure") (param i32 i32) (result i64) {}
                (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))
               (func (export "keyway_door_rule") (param i32 i32) (result i64) {} unreachable)"#,
            spin(800_000),
            spin(800_000)
        )),
    )
    .unwrap();
    let err = greedy.door_rule(&door_input(1, Some(1))).unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "first call: {err}");
    for call in 2..=4 {
        let err = greedy.door_rule(&door_input(1, Some(1))).unwrap_err();
        assert_eq!(err.to_string(), fuel("`keyway_door_rule`"), "call {call}");
    }

    // Data segments are copied at instantiation without drawing on the fuel budget: 1.5
    // MiB of them (near the module size limit) load and answer.
    let data = wat::parse_str(format!(
        r#"(module (memory (export "memory") 32)
            (data (i32.const 16) "\00")
            (data (i32.const 48) "\00\00")
            (data (i32.const 65536) "{}")
            (func (export "keyway_abi_version") (result i32) (i32.const 1))
            (func (export "keyway_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "keyway_dealloc") (param i32 i32))
            (func (export "keyway_configure") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))
            (func (export "keyway_notify") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 2))))"#,
        "x".repeat(3 << 19)
    ))
    .unwrap();
    good_call(&load(&runtime, &data).unwrap());
    // A start function that never ends: the error says it was instantiation.
    let start_loop = wat_plugin("(func $forever (loop $l (br $l))) (start $forever)");
    let err = load(&runtime, &start_loop).unwrap_err();
    assert_eq!(
        err.to_string(),
        fuel("instantiation (data segments and start function)")
    );
}

/// What a plugin answers is capped where the host keeps it: deny reasons and its own
/// error messages are cut (a deny stays a deny), notify answers over a cap are refused,
/// and tables count against the memory cap.
#[test]
fn outputs_are_capped_and_counted() {
    let runtime = runtime();
    // A 1000-byte deny reason: Ok, Deny (1), the reason's varint length 1000 (e8 07).
    let long = "\u{1b}".to_owned() + &"a".repeat(999);
    let deny = load(
        &runtime,
        &wat_plugin(&format!(
            r#"(data (i32.const 4096) "\00\01\e8\07{}\00")
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const 1005)))"#,
            long.replace('\u{1b}', "\\1b")
        )),
    )
    .unwrap();
    let out = deny.door_rule(&door_input(1, Some(1))).unwrap();
    let RuleVerdict::Deny { reason } = out.verdict else {
        panic!("{out:?}")
    };
    assert_eq!(reason, format!("\\u{{1b}}{} [... 744 bytes cut]", "a".repeat(255)));
    // A 1000-byte error message of its own: Err (1), length 1000.
    let failing = load(
        &runtime,
        &wat_plugin(&format!(
            r#"(data (i32.const 4096) "\01\e8\07{}")
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const 1003)))"#,
            "b".repeat(1000)
        )),
    )
    .unwrap();
    let err = failing.door_rule(&door_input(1, Some(1))).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("plugin error: {} [... 488 bytes cut]", "b".repeat(512))
    );

    // Seventeen empty notifications: Ok, 17, then each: person 1, "", Email, "", "".
    let notifications = format!("\\00\\11{}", "\\01\\00\\00\\00\\00".repeat(17));
    let bundle = crate::bundle::edited_bundle(|t| t);
    let flood = wat_plugin(&format!(
        r#"(data (i32.const 256) "{notifications}")
           (func (export "keyway_notify") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 256) (i64.const 32)) (i64.const 87)))"#
    ));
    let sha = keyway_plugin_host::Sha256::of(&flood);
    std::fs::write(bundle.path().join("flood.wasm"), &flood).unwrap();
    let manifest = bundle.path().join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).unwrap()
        + &format!("\n[plugins.flood]\nfile = \"flood.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"notify\"]\n");
    std::fs::write(&manifest, text).unwrap();
    let loaded = Bundle::load(&runtime, bundle.path()).unwrap();
    let err = loaded.notify(&notify_input()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "answered 17 notifications for one event, over the limit of 16"
    );

    // Tables: growing past the element limit, or past the memory cap with the linear
    // memory, is refused like memory growth.
    let grow = |n: u32| {
        wat_plugin(&format!(
            r#"(table $t 1 funcref)
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (drop (table.grow $t (ref.null func) (i32.const {n}))) (i64.const 0))"#
        ))
    };
    let err = load(&runtime, &grow(20_000))
        .unwrap()
        .door_rule(&door_input(1, None))
        .unwrap_err();
    assert_eq!(err.to_string(), "exceeded the table limit of 10000 elements");
    // 2 pages of memory (128 KiB) plus 9,000 elements (72,000 bytes) exceed 192 KiB.
    let tight = runtime_with(|l| l.memory_bytes = 192 << 10);
    let err = load(&tight, &grow(9_000))
        .unwrap()
        .door_rule(&door_input(1, None))
        .unwrap_err();
    assert_eq!(err.to_string(), "exceeded the memory cap of 196608 bytes");
}

/// Errors say exactly what was wrong, printably: names with control or invisible
/// characters are escaped, a wrongly typed import is told its type, and a decision's
/// text never reads as allowed when it was denied.
#[test]
fn errors_are_exact_and_printable() {
    let runtime = runtime();
    // (case, imports, expected error)
    let cases = [
        (
            "escape sequences and a right-to-left override in an import's name",
            r#"(import "env\1b[2J" "fd\e2\80\aewrite" (func))"#,
            "import `env\\u{1b}[2J::fd\\u{202e}write` is not part of Keyway's host ABI (plugins may import only `keyway::log`)",
        ),
        (
            "keyway::log imported as a global",
            r#"(import "keyway" "log" (global i32))"#,
            "import `keyway::log` has type `a global`, the host ABI's is `(func (param i32 i32))`",
        ),
        (
            "keyway::log with a result",
            r#"(import "keyway" "log" (func (param i32 i32) (result i32)))"#,
            "import `keyway::log` has type `(func (param i32 i32) (result i32))`, the host ABI's is `(func (param i32 i32))`",
        ),
    ];
    for (case, imports, expected) in cases {
        let err = load(&runtime, &wat_plugin_with(imports, "")).unwrap_err();
        assert_eq!(err.to_string(), expected, "{case}");
    }
    // A log with a terminal escape and a newline is printed escaped.
    let plugin = load(
        &runtime,
        &wat_plugin_with(
            r#"(import "keyway" "log" (func $log (param i32 i32)))"#,
            r#"(data (i32.const 64) "\1b[31mred\nline")
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (call $log (i32.const 64) (i32.const 13)) unreachable)"#,
        ),
    )
    .unwrap();
    let err = plugin.door_rule(&door_input(1, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trapped: wasm trap: wasm `unreachable` instruction executed (plugin log: \\u{1b}[31mred\\u{a}line)"
    );
    // A hook export with the wrong signature is named at load.
    let err = load(
        &runtime,
        &wat_plugin(r#"(func (export "keyway_door_rule") (param i32) (result i64) (i64.const 0))"#),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "export `keyway_door_rule` is missing or has the wrong type: wrong signature, see sdk/ABI.md"
    );
}

/// Decoding is strict: an answer with trailing bytes or in a non-canonical encoding is
/// refused, and `keyway_alloc` answering 0 is refused for every length, as ABI.md says.
#[test]
fn decoding_is_strict() {
    let runtime = runtime();
    let answer = |bytes: &str, len: u32| {
        wat_plugin(&format!(
            r#"(data (i32.const 256) "{bytes}")
               (func (export "keyway_door_rule") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 256) (i64.const 32)) (i64.const {len})))"#
        ))
    };
    // (case, answer bytes, length, expected: the verdict, or the error)
    let cases: [(&str, &str, u32, Result<RuleVerdict, &str>); 5] = [
        ("canonical abstain", "\\00\\02\\00", 3, Ok(RuleVerdict::Abstain)),
        (
            "a trailing byte",
            "\\00\\02\\00\\00",
            4,
            Err("cannot decode the plugin's output: 1 trailing bytes after the answer"),
        ),
        (
            "an overlong varint for the verdict",
            "\\00\\82\\00\\00",
            4,
            Err(
                "cannot decode the plugin's output: not the canonical encoding: 4 bytes where the canonical one has 3 (an overlong varint?)",
            ),
        ),
        (
            "an overlong length for the deny reason",
            "\\00\\01\\81\\00x\\00",
            6,
            Err(
                "cannot decode the plugin's output: not the canonical encoding: 6 bytes where the canonical one has 5 (an overlong varint?)",
            ),
        ),
        (
            "a bool that is neither 0 nor 1 (the Result tag is 2)",
            "\\02\\02\\00",
            3,
            Err("cannot decode the plugin's output: Serde Deserialization Error"),
        ),
    ];
    for (case, bytes, len, expected) in cases {
        let plugin = load(&runtime, &answer(bytes, len)).unwrap();
        let got = plugin.door_rule(&door_input(1, None));
        match expected {
            Ok(verdict) => assert_eq!(got.unwrap().verdict, verdict, "{case}"),
            Err(message) => assert_eq!(got.unwrap_err().to_string(), message, "{case}"),
        }
    }
    // `keyway_alloc(0)` must not answer 0 (the roles hook's input is empty).
    let zero = load(
        &runtime,
        &wat_plugin(
            r#"(func (export "keyway_alloc") (param i32) (result i32)
                (select (i32.const 1024) (i32.const 0) (local.get 0)))
               (data (i32.const 96) "\00\00")
               (func (export "keyway_roles") (param i32 i32) (result i64)
                (i64.or (i64.shl (i64.const 96) (i64.const 32)) (i64.const 2)))"#,
        ),
    );
    let err = zero.unwrap().call::<_, RoleTableDef>(Hook::Roles, &()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`keyway_alloc(0)` answered 0; it must answer a non-zero address, for an empty buffer too"
    );
}

fn notify_input() -> keyway_sdk::NotifyInput {
    use keyway_sdk::{Channel, Event, EventKind, NotificationSettings, NotifyInput, Recipient};
    NotifyInput {
        event: Event {
            kind: EventKind::DoorForced,
            at_unix: 0,
            door: None,
            person: None,
            detail: String::new(),
        },
        settings: NotificationSettings {
            site_name: "site".into(),
            owner: Recipient {
                person: 1,
                address: "owner@example.com".into(),
            },
            channel: Channel::Email,
            enabled: vec![EventKind::DoorForced],
        },
    }
}

/// The default bundle plus door rules given as (name, wasm).
fn bundle_with(rules: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = crate::bundle::edited_bundle(|t| t);
    let manifest = dir.path().join("bundle.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    for (name, wasm) in rules {
        let sha = keyway_plugin_host::Sha256::of(wasm);
        std::fs::write(dir.path().join(format!("{name}.wasm")), wasm).unwrap();
        text.push_str(&format!(
            "\n[plugins.{name}]\nfile = \"{name}.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\"]\n"
        ));
    }
    std::fs::write(&manifest, text).unwrap();
    dir
}

/// A door rule of ABI version `version` answering these bytes (written at 4096).
fn answering(version: u32, bytes: &str, len: usize) -> Vec<u8> {
    wat_plugin(&format!(
        r#"(func (export "keyway_abi_version") (result i32) (i32.const {version}))
           (data (i32.const 4096) "{bytes}")
           (func (export "keyway_door_rule") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const {len})))"#
    ))
}

/// Scoped state (ABI version 2) is capped and decoded strictly, a rule can only write the
/// state of the door and site it is called for, and a chain where every rule traps costs
/// one budget per rule and ends by the attachments' fail modes.
#[test]
fn scoped_state_and_chains_hold_against_hostile_rules() {
    let runtime = runtime();
    let big = "\\07".repeat(1025);
    // (case, version, answer, its length, expected error)
    let cases = [
        (
            "a door state over 1 KiB",
            2,
            format!("\\00\\00\\00\\01\\81\\08{big}\\00\\00"),
            1033,
            "state of 1025 bytes exceeds the cap of 1024 bytes",
        ),
        (
            "a site state over 1 KiB",
            2,
            format!("\\00\\00\\00\\00\\01\\81\\08{big}\\00"),
            1033,
            "state of 1025 bytes exceeds the cap of 1024 bytes",
        ),
        (
            "a version 2 rule answering version 1's output",
            2,
            "\\00\\00\\00".to_owned(),
            3,
            "cannot decode the plugin's output: Hit the end of buffer, expected more data",
        ),
        (
            "a version 1 rule answering version 2's output",
            1,
            "\\00\\00\\00\\00\\00\\00".to_owned(),
            6,
            "cannot decode the plugin's output: 3 trailing bytes after the answer",
        ),
    ];
    for (case, version, bytes, len, expected) in cases {
        let plugin = load(&runtime, &answering(version, &bytes, len)).unwrap();
        let err = plugin.door_rule(&door_input(1, Some(1))).unwrap_err();
        assert_eq!(err.to_string(), expected, "{case}");
    }

    // A rule that always sets its door state to [7] (and no other state, no obligation):
    // the state
    // lands on the door it was called for, nowhere else.
    let setter = answering(2, "\\00\\00\\00\\01\\01\\07\\00\\00", 8);
    let trap = wat_plugin(r#"(func (export "keyway_door_rule") (param i32 i32) (result i64) unreachable)"#);
    let dir = bundle_with(&[
        ("setter", setter),
        ("trap-a", trap.clone()),
        ("trap-b", trap.clone()),
        ("trap-c", trap),
    ]);
    let host = PolicyHost::load(Arc::clone(&runtime), dir.path()).unwrap();
    let rules = host.door_rules();
    rules.attach(DoorId(1), "setter", FailMode::Secure).unwrap();
    let tz = jiff::tz::TimeZone::UTC;
    let ctx = |door: u32| DoorContext {
        door: DoorId(door),
        site: SiteId(1),
        role: None,
        kind: keyway_core::CredentialKind::Tag,
        groups: &[],
        direction: keyway_sdk::Direction::Unknown,
        at: jiff::Timestamp::UNIX_EPOCH,
        time_zone: &tz,
        holidays: None,
    };
    let granted = Decision {
        effect: Effect::Allow,
        reason: Reason::Granted {
            group: GroupId(1),
            schedule: None,
        },
        revision: Revision(1),
        credential: None,
        person: Some(PersonId(1)),
    };
    assert_eq!(host.decide(granted, &ctx(1)).effect, Effect::Allow);
    // (scope, the state expected there)
    let scopes = [
        (StateScope::Door(DoorId(1)), Some(vec![7])),
        (StateScope::Door(DoorId(2)), None),
        (StateScope::Site(SiteId(1)), None),
        (StateScope::Person(PersonId(1)), None),
    ];
    for (scope, expected) in scopes {
        assert_eq!(rules.scoped_state("setter", scope), expected, "{scope:?}");
    }

    // Chains where every rule traps: one budget per rule, and the attachments' fail
    // modes decide.
    // (chain, effect, reason code, rules that ran)
    type Chain<'a> = &'a [(&'a str, FailMode)];
    let chains: [(Chain<'_>, Effect, &str, usize); 2] = [
        (
            &[
                ("trap-a", FailMode::Safe),
                ("trap-b", FailMode::Safe),
                ("trap-c", FailMode::Safe),
            ],
            Effect::Allow,
            "rule_failed_open",
            3,
        ),
        (
            &[
                ("trap-a", FailMode::Safe),
                ("trap-b", FailMode::Secure),
                ("trap-c", FailMode::Secure),
            ],
            Effect::Deny,
            "rule_failed",
            2,
        ),
    ];
    for (chain, effect, code, ran) in chains {
        rules.set_chain(DoorId(3), chain).unwrap();
        let start = Instant::now();
        let d = host.decide(granted, &ctx(3));
        assert!(start.elapsed() < BUDGET, "{code}: took {:?}", start.elapsed());
        assert_eq!((d.effect, d.reason_code(), d.rules().count()), (effect, code, ran));
    }
}

/// Obligations (ABI version 2) are capped and checked, never change a verdict, and are
/// carried with the decision from every rule of a chain that ran.
#[test]
fn obligations_are_capped_and_carried() {
    let runtime = runtime();
    // An obligation `notify.guard` with detail `x`: 0c "notify.guard" 01 "x".
    let guard = "\\0cnotify.guard\\01x";
    let with = |obligations: &str, count: u8| format!("\\00\\00\\00\\00\\00\\{count:02x}{obligations}");
    // (case, answer, expected: the obligations kept, or the error)
    let cases: [(&str, String, Result<usize, &str>); 3] = [
        ("two obligations", with(&guard.repeat(2), 2), Ok(2)),
        (
            "five obligations",
            with(&guard.repeat(5), 5),
            Err("answered 5 obligations, over the limit of 4"),
        ),
        (
            "a kind that is not a lowercase dotted name",
            with("\\06Notify\\00", 1),
            Err(
                "cannot decode the plugin's output: obligation kind `Notify` is not a lowercase dotted name of at most 64 bytes",
            ),
        ),
    ];
    // The length of a WAT string: each `\xx` is one byte, any other character one byte.
    let wat_len = |bytes: &str| bytes.len() - 2 * bytes.matches('\\').count();
    for (case, bytes, expected) in cases {
        let plugin = load(&runtime, &answering(2, &bytes, wat_len(&bytes))).unwrap();
        let got = plugin.door_rule(&door_input(1, Some(1)));
        match expected {
            Ok(count) => assert_eq!(got.unwrap().obligations.len(), count, "{case}"),
            Err(message) => assert_eq!(got.unwrap_err().to_string(), message, "{case}"),
        }
    }
    // Through a chain: both rules' obligations are carried, in order; a deny stays a deny.
    let first = with(guard, 1);
    let second = format!("\\00\\01\\02no\\00\\00\\00\\01{guard}");
    let dir = bundle_with(&[
        ("first", answering(2, &first, wat_len(&first))),
        ("second", answering(2, &second, wat_len(&second))),
    ]);
    let host = PolicyHost::load(Arc::clone(&runtime), dir.path()).unwrap();
    host.door_rules()
        .set_chain(DoorId(1), &[("first", FailMode::Secure), ("second", FailMode::Secure)])
        .unwrap();
    let tz = jiff::tz::TimeZone::UTC;
    let ctx = DoorContext {
        door: DoorId(1),
        site: SiteId(1),
        role: None,
        kind: keyway_core::CredentialKind::Tag,
        groups: &[],
        direction: keyway_sdk::Direction::Unknown,
        at: jiff::Timestamp::UNIX_EPOCH,
        time_zone: &tz,
        holidays: None,
    };
    let granted = Decision {
        effect: Effect::Allow,
        reason: Reason::Granted {
            group: GroupId(1),
            schedule: None,
        },
        revision: Revision(1),
        credential: None,
        person: Some(PersonId(1)),
    };
    let d = host.decide(granted, &ctx);
    assert_eq!((d.effect, d.reason_code()), (Effect::Deny, "rule_denied"), "{d}");
    let kinds: Vec<&str> = d.obligations.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds, ["notify.guard", "notify.guard"]);
}
