//! The wasmtime side: one [`Runtime`] (engine, linker, compiled-module cache) loads
//! [`LoadedPlugin`]s, and each plugin calls its hooks within [`Limits`].
//!
//! Architecture Invariant: a plugin can do no IO. At load, every import is checked
//! against the host ABI (only `keyway::log`); anything else, WASI included, is refused
//! with an error naming it.
//!
//! Architecture Invariant: every call runs under a fuel budget, a memory cap, a stack
//! cap, and input/output caps. An instance that traps or breaks a limit is dropped and
//! never reused; the next call gets a fresh one from the [`InstancePre`].

use crate::cache::ModuleCache;
use crate::error::PluginError;
use crate::sha::Sha256;
use crate::text::printable;
use crate::validate;
use keyway_abi::{Config, Hook, HookResult, SUPPORTED_ABI_VERSIONS};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::{
    Caller, Engine, ExternType, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, Trap, TypedFunc, ValType,
};

/// What loading a module, and one call, may use. Each limit's error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (roughly one unit per wasm instruction). One budget pays for the
    /// whole call: a fresh instance's instantiation and `keyway_configure` when the pool
    /// had none, `keyway_alloc`, the hook and its `keyway::log` calls.
    pub fuel: u64,
    /// Linear memory cap per instance, in bytes; tables count against it too (8 bytes an
    /// element).
    pub memory_bytes: usize,
    /// Wasm stack cap, in bytes.
    pub stack_bytes: usize,
    /// Largest input the host sends, in bytes.
    pub max_input: usize,
    /// Largest output the host accepts, in bytes.
    pub max_output: usize,
    /// Idle instances kept per plugin.
    pub pool_size: usize,
    /// Largest module the host reads or compiles, in bytes (a bundle's `.wasm` files are
    /// read with this cap).
    pub max_module_bytes: usize,
    /// Most functions (defined and imported) a module may declare.
    pub max_functions: u32,
    /// Largest function body, in bytes.
    pub max_function_bytes: usize,
    /// Most globals a module may declare.
    pub max_globals: u32,
    /// Most table elements, declared or grown, per instance.
    pub max_table_elements: u32,
    /// Most data segments a module may declare (their bytes are capped by
    /// `memory_bytes`).
    pub max_data_segments: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            stack_bytes: 256 << 10,
            max_input: 1 << 20,
            max_output: 1 << 20,
            pool_size: 8,
            // Compile time follows the amount of real code: at these caps (2 MiB of code,
            // 2,000 functions) Cranelift takes about a second on a busy 2-core machine.
            // The standard plugins are about 60 KiB and 140 functions.
            max_module_bytes: 2 << 20,
            max_functions: 2_000,
            max_function_bytes: 256 << 10,
            max_globals: 1_000,
            max_table_elements: 10_000,
            max_data_segments: 1_000,
        }
    }
}

/// Most bytes of `keyway::log` output kept per call.
pub const MAX_LOG: usize = 2048;

/// Most `keyway::log` calls per call whose text is kept; later ones cost their fuel and
/// are counted, not read.
pub const MAX_LOG_CALLS: u32 = 64;

/// Fuel one `keyway::log` call costs on top of one unit per byte it asks the host to read:
/// a plugin logging in a loop runs out of fuel as fast as one computing in a loop.
pub const LOG_CALL_FUEL: u64 = 1_000;

/// Bytes a table element counts against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Per-store host data: the limiter and the plugin's log.
struct HostState {
    limits: Limiter,
    log: String,
    log_calls: u32,
}

/// The store's resource limiter: linear memory and tables share one cap, and a refused
/// growth becomes a trap (a Rust guest would abort on allocation failure anyway, and a
/// trap is reported now, not after the guest has spun on a failed `memory.grow` until its
/// fuel runs out). It remembers which limit it enforced, for the error.
struct Limiter {
    memory_cap: usize,
    max_table_elements: usize,
    memory: usize,
    table_elements: usize,
    refused: Option<Refused>,
}

#[derive(Clone, Copy, Debug)]
enum Refused {
    Memory,
    Table,
}

impl Limiter {
    fn new(limits: &Limits) -> Self {
        Limiter {
            memory_cap: limits.memory_bytes,
            max_table_elements: limits.max_table_elements as usize,
            memory: 0,
            table_elements: 0,
            refused: None,
        }
    }

    fn table_bytes(elements: usize) -> usize {
        elements.saturating_mul(TABLE_ELEMENT_BYTES)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self
            .memory
            .saturating_sub(current)
            .saturating_add(desired)
            .saturating_add(Limiter::table_bytes(self.table_elements));
        if total > self.memory_cap {
            self.refused = Some(Refused::Memory);
            wasmtime::bail!("memory growth to {desired} bytes refused");
        }
        self.memory = self.memory.saturating_sub(current).saturating_add(desired);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let elements = self.table_elements.saturating_sub(current).saturating_add(desired);
        if elements > self.max_table_elements {
            self.refused = Some(Refused::Table);
            wasmtime::bail!("table growth to {desired} elements refused");
        }
        if self.memory.saturating_add(Limiter::table_bytes(elements)) > self.memory_cap {
            self.refused = Some(Refused::Memory);
            wasmtime::bail!("table growth to {desired} elements refused");
        }
        self.table_elements = elements;
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The engine every plugin is compiled for, its linker (the host ABI) and the cache of
/// compiled modules. Create one per process and share it.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache: ModuleCache,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with these limits, compiling with Cranelift, caching compiled modules in
    /// memory only.
    ///
    /// # Errors
    /// When wasmtime cannot build its engine for this machine.
    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        config.max_wasm_stack(limits.stack_bytes);
        let engine = Engine::new(&config).map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("keyway", "log", host_log)
            .map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
        Ok(Runtime {
            cache: ModuleCache::new(&engine),
            engine,
            linker,
            limits,
        })
    }

    /// The same runtime, also keeping precompiled modules in `dir` (a directory the
    /// operator trusts: its files are loaded as native code).
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache.set_dir(dir.into());
        self
    }

    /// The limits every call runs under.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The on-disk cache key: a hash of the engine's precompile compatibility hash.
    #[must_use]
    pub fn compatibility_key(&self) -> u64 {
        self.cache.compatibility_key()
    }

    /// How many compiled modules are kept in memory (only modules that loaded are).
    #[must_use]
    pub fn cached_modules(&self) -> usize {
        self.cache.len()
    }

    /// How many modules were compiled (not found in a cache) since start.
    #[must_use]
    pub fn compiled_count(&self) -> usize {
        self.cache.compiled_count()
    }

    /// The hooks a module exports, after the cheap checks [`Runtime::load`] makes first
    /// (size, imports, counts), without compiling it: what `keyway bundle hash` lists
    /// in a manifest entry.
    ///
    /// # Errors
    /// Not wasm, over a limit, invalid, or a forbidden or wrongly typed import.
    pub fn exported_hooks(&self, wasm: &[u8]) -> Result<Vec<Hook>, PluginError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(PluginError::NotWasm);
        }
        // In the ABI's order, whatever the module's: what `keyway bundle hash` prints.
        let mut hooks = validate::check(wasm, &self.limits)?;
        hooks.sort_by_key(|hook| Hook::ALL.iter().position(|h| h == hook));
        Ok(hooks)
    }

    /// Validates a plugin cheaply (size, imports, counts; see [`Limits`]), compiles it
    /// (once per process: a module that loaded is cached by its SHA-256, one that failed
    /// is not), instantiates it, checks its ABI version and configures it. `hooks` are
    /// the hooks it must export.
    ///
    /// # Errors
    /// Not wasm, over a limit, invalid, a forbidden or wrongly typed import, a missing
    /// export or hook, a wrong ABI version, or the plugin refusing its config.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        hooks: &[Hook],
        config: &Config,
    ) -> Result<LoadedPlugin, PluginError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(PluginError::NotWasm);
        }
        let sha256 = Sha256::of(wasm);
        let cached = self.cache.get(sha256);
        let was_cached = cached.is_some();
        let module = match cached {
            Some(module) => module,
            None => {
                // Cheap checks first: a module that would be refused costs a parse only.
                validate::check(wasm, &self.limits)?;
                self.cache.compile(&self.engine, sha256, wasm)?
            }
        };
        check_exports(&module)?;
        for hook in hooks {
            if !matches!(module.get_export(hook.export_name()), Some(ExternType::Func(_))) {
                return Err(PluginError::HookNotExported {
                    hook: hook.name(),
                    export: hook.export_name(),
                });
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
        let config = postcard::to_allocvec(config).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
        let plugin = LoadedPlugin {
            name: name.into(),
            sha256,
            runtime: Arc::clone(self),
            pre,
            config,
            pool: Mutex::new(Vec::new()),
            abi: std::sync::OnceLock::new(),
        };
        // Instantiate once now: the ABI version and the config are checked at load.
        let slot = plugin.instantiate()?;
        plugin.release(slot);
        if !was_cached {
            self.cache.insert(sha256, &module);
        }
        Ok(plugin)
    }
}

/// `keyway::log`: charged in fuel, kept up to [`MAX_LOG`] bytes and [`MAX_LOG_CALLS`]
/// calls per call.
fn host_log(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let len = len as u32 as usize;
    let cost = LOG_CALL_FUEL.saturating_add(len.min(MAX_LOG) as u64);
    let fuel = caller.get_fuel()?;
    if fuel < cost {
        caller.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    caller.set_fuel(fuel - cost)?;
    caller.data_mut().log_calls = caller.data().log_calls.saturating_add(1);
    if caller.data().log_calls > MAX_LOG_CALLS {
        return Ok(());
    }
    let Some(wasmtime::Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(());
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let room = MAX_LOG.saturating_sub(state.log.len());
    if room == 0 {
        return Ok(());
    }
    let start = ptr as u32 as usize;
    let end = start.saturating_add(len.min(room));
    let Some(bytes) = data.get(start..end) else {
        return Ok(());
    };
    if !state.log.is_empty() {
        state.log.push_str("; ");
    }
    let text = String::from_utf8_lossy(bytes);
    state.log.push_str(&text);
    Ok(())
}

fn check_exports(module: &Module) -> Result<(), PluginError> {
    let bad = |export: &str, reason: &str| PluginError::BadExport {
        export: export.to_owned(),
        reason: reason.to_owned(),
    };
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(_) => return Err(bad("memory", "must be a 32-bit, unshared memory")),
        None => return Err(bad("memory", "not exported")),
    }
    // (name, params, results) for every required export; every parameter and result is
    // an i32 except the hooks' i64 answer.
    let required: [(&str, &[ValType], &[ValType]); 4] = [
        ("keyway_abi_version", &[], &[ValType::I32]),
        ("keyway_alloc", &[ValType::I32], &[ValType::I32]),
        ("keyway_dealloc", &[ValType::I32, ValType::I32], &[]),
        ("keyway_configure", &[ValType::I32, ValType::I32], &[ValType::I64]),
    ];
    let (hook_params, hook_results) = ([ValType::I32, ValType::I32], [ValType::I64]);
    let hooks = Hook::ALL.map(|h| (h.export_name(), &hook_params[..], &hook_results[..]));
    for (name, params, results) in required {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if same(f.params(), params) && same(f.results(), results) => {}
            Some(_) => return Err(bad(name, "wrong signature, see sdk/ABI.md")),
            None => return Err(bad(name, "not exported")),
        }
    }
    for (name, params, results) in hooks {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if same(f.params(), params) && same(f.results(), results) => {}
            None => {}
            Some(_) => return Err(bad(name, "wrong signature, see sdk/ABI.md")),
        }
    }
    Ok(())
}

/// Whether wasmtime's value types are exactly these numeric ones.
fn same(found: impl ExactSizeIterator<Item = ValType>, expected: &[ValType]) -> bool {
    found.len() == expected.len() && found.zip(expected).all(|(f, e)| ValType::eq(&f, e))
}

/// A live instance with its store and exports.
struct Slot {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    dealloc: TypedFunc<(i32, i32), ()>,
    hooks: [Option<TypedFunc<(i32, i32), i64>>; Hook::ALL.len()],
    configure: TypedFunc<(i32, i32), i64>,
}

/// Which export a round trip calls.
#[derive(Clone, Copy, Debug)]
enum Export {
    Configure,
    Hook(Hook),
}

impl Export {
    const fn hook_name(self) -> &'static str {
        match self {
            Export::Configure => "configure",
            Export::Hook(hook) => hook.name(),
        }
    }

    const fn export_name(self) -> &'static str {
        match self {
            Export::Configure => "keyway_configure",
            Export::Hook(hook) => hook.export_name(),
        }
    }

    /// The export's name in backticks, for errors.
    const fn quoted_name(self) -> &'static str {
        match self {
            Export::Configure => "`keyway_configure`",
            Export::Hook(Hook::Roles) => "`keyway_roles`",
            Export::Hook(Hook::Voucher) => "`keyway_voucher`",
            Export::Hook(Hook::Notify) => "`keyway_notify`",
            Export::Hook(Hook::DoorRule) => "`keyway_door_rule`",
            Export::Hook(Hook::Passage) => "`keyway_passage`",
            Export::Hook(Hook::DoorConfig) => "`keyway_door_config`",
        }
    }
}

const fn hook_index(hook: Hook) -> usize {
    match hook {
        Hook::Roles => 0,
        Hook::Voucher => 1,
        Hook::Notify => 2,
        Hook::DoorRule => 3,
        Hook::Passage => 4,
        Hook::DoorConfig => 5,
    }
}

/// The ABI versions this host speaks, for errors: `versions 1, 2, 3, 4`.
pub(crate) fn supported_versions() -> String {
    let versions: Vec<String> = SUPPORTED_ABI_VERSIONS.iter().map(i32::to_string).collect();
    format!("versions {}", versions.join(", "))
}

/// A loaded plugin: its module compiled once, pre-linked, with a pool of idle instances.
/// Calls may come from any thread; each takes an instance from the pool (or makes one).
pub struct LoadedPlugin {
    name: Arc<str>,
    sha256: Sha256,
    runtime: Arc<Runtime>,
    pre: InstancePre<HostState>,
    config: Vec<u8>,
    pool: Mutex<Vec<Slot>>,
    /// The ABI version its first instance answered.
    abi: std::sync::OnceLock<i32>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The plugin's name in its bundle.
    #[must_use]
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The SHA-256 of its `.wasm`.
    #[must_use]
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }

    /// The ABI version it speaks (1 to 4), as `keyway_abi_version` answered at load.
    #[must_use]
    pub fn abi_version(&self) -> i32 {
        self.abi.get().copied().unwrap_or(1)
    }

    /// Whether its module exports `hook` (a door rule's `keyway_passage` is optional).
    #[must_use]
    pub fn exports(&self, hook: Hook) -> bool {
        matches!(
            self.pre.module().get_export(hook.export_name()),
            Some(ExternType::Func(_))
        )
    }

    /// Idle instances in the pool (for tests and metrics).
    #[must_use]
    pub fn idle_instances(&self) -> usize {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// A fresh, configured instance. Its store starts with one call's fuel, which
    /// instantiation, `keyway_abi_version` and `keyway_configure` draw from; what is left
    /// pays for the call that needed the instance (see [`LoadedPlugin::call_raw_with`]).
    fn instantiate(&self) -> Result<Slot, PluginError> {
        let limits = self.runtime.limits;
        let state = HostState {
            limits: Limiter::new(&limits),
            log: String::new(),
            log_calls: 0,
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, limits, "instantiation (data segments and start function)"))?;
        let bad = |export: &str, e: wasmtime::Error| PluginError::BadExport {
            export: export.to_owned(),
            reason: e.to_string(),
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginError::BadExport {
                export: "memory".into(),
                reason: "not a memory".into(),
            })?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "keyway_abi_version")
            .map_err(|e| bad("keyway_abi_version", e))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "keyway_alloc")
            .map_err(|e| bad("keyway_alloc", e))?;
        let dealloc = instance
            .get_typed_func::<(i32, i32), ()>(&mut store, "keyway_dealloc")
            .map_err(|e| bad("keyway_dealloc", e))?;
        let configure = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "keyway_configure")
            .map_err(|e| bad("keyway_configure", e))?;
        let mut hooks = [const { None }; Hook::ALL.len()];
        for hook in Hook::ALL {
            if instance.get_func(&mut store, hook.export_name()).is_some() {
                let f = instance
                    .get_typed_func::<(i32, i32), i64>(&mut store, hook.export_name())
                    .map_err(|e| bad(hook.export_name(), e))?;
                if let Some(h) = hooks.get_mut(hook_index(hook)) {
                    *h = Some(f);
                }
            }
        }
        let found = version
            .call(&mut store, ())
            .map_err(|e| classify(e, &store, limits, "`keyway_abi_version`"))?;
        // Every instance of a module must speak the version the first one did.
        let expected = self.abi.get().copied();
        if !SUPPORTED_ABI_VERSIONS.contains(&found) || expected.is_some_and(|v| v != found) {
            return Err(PluginError::AbiVersion {
                found,
                expected: expected.map_or_else(supported_versions, |v| v.to_string()),
            });
        }
        let _ = self.abi.set(found);
        let mut slot = Slot {
            store,
            memory,
            alloc,
            dealloc,
            hooks,
            configure,
        };
        slot.round_trip(Export::Configure, &self.config, limits, decode::<()>)??;
        Ok(slot)
    }

    fn release(&self, slot: Slot) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.runtime.limits.pool_size {
            pool.push(slot);
        }
    }

    /// Calls `hook` with raw bytes and answers the raw output (a postcard
    /// `HookResult`), within the limits. A misbehaving instance is discarded.
    ///
    /// # Errors
    /// Any limit broken, any trap, a missing hook.
    pub fn call_raw(&self, hook: Hook, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.call_raw_with(hook, input, <[u8]>::to_vec)
    }

    /// As [`LoadedPlugin::call_raw`], but hands the raw output to `read` where it lies, in the
    /// plugin's memory, before the plugin frees it: the caller decodes (or copies) only
    /// what it needs, and the round trip itself allocates nothing on the host.
    ///
    /// # Errors
    /// As [`LoadedPlugin::call_raw`]. `read` runs only when the plugin answered within bounds;
    /// if freeing the output then fails, the call fails and `read`'s answer is dropped.
    pub fn call_raw_with<R>(&self, hook: Hook, input: &[u8], read: impl FnOnce(&[u8]) -> R) -> Result<R, PluginError> {
        let limits = self.runtime.limits;
        if input.len() > limits.max_input {
            return Err(PluginError::InputTooLarge {
                len: input.len(),
                max: limits.max_input,
            });
        }
        let popped = self.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        // One budget per call: a pooled instance gets a full one; a fresh one keeps what
        // its instantiation and configuration left, so a plugin that traps on every call
        // (and so is instantiated for every call) still spends one budget per call.
        let mut slot = match popped {
            Some(mut slot) => {
                slot.store
                    .set_fuel(limits.fuel)
                    .map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
                slot
            }
            None => self.instantiate()?,
        };
        if !matches!(slot.hooks.get(hook_index(hook)), Some(Some(_))) {
            self.release(slot);
            return Err(PluginError::HookNotExported {
                hook: hook.name(),
                export: hook.export_name(),
            });
        }
        match slot.round_trip(Export::Hook(hook), input, limits, read) {
            Ok(out) => {
                self.release(slot);
                Ok(out)
            }
            Err(e) => {
                if !e.discards_instance() {
                    self.release(slot);
                }
                Err(e)
            }
        }
    }

    /// Calls `hook` with a typed input and decodes its typed answer.
    ///
    /// # Errors
    /// As [`LoadedPlugin::call_raw`], plus [`PluginError::Decode`] and the plugin's own
    /// [`PluginError::Guest`] error.
    pub fn call<I: Serialize, O: DeserializeOwned + Serialize>(&self, hook: Hook, input: &I) -> Result<O, PluginError> {
        let bytes = postcard::to_allocvec(input).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
        self.call_raw_with(hook, &bytes, decode)?
    }
}

fn decode<O: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<O, PluginError> {
    match decode_strict::<HookResult<O>>(bytes)? {
        Ok(out) => Ok(out),
        Err(message) => Err(guest_error(&message)),
    }
}

/// Most bytes of a plugin's own error message kept (the rest is cut, and said so).
pub const MAX_MESSAGE: usize = 512;

/// A plugin's own error, capped and printable.
pub(crate) fn guest_error(message: &str) -> PluginError {
    PluginError::Guest {
        message: printable(message, MAX_MESSAGE),
    }
}

/// Decodes a plugin's answer strictly: the whole of `bytes`, nothing after it, in
/// postcard's canonical encoding (shortest varints: the answer re-encodes to exactly as
/// many bytes). Postcard itself already refuses a bool or an option tag other than 0 and
/// 1, and invalid UTF-8.
pub(crate) fn decode_strict<'a, T: Deserialize<'a> + Serialize>(bytes: &'a [u8]) -> Result<T, PluginError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(PluginError::Decode {
            reason: format!("{} trailing bytes after the answer", rest.len()),
        });
    }
    let canonical =
        postcard::experimental::serialized_size(&value).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
    if canonical != bytes.len() {
        return Err(PluginError::Decode {
            reason: format!(
                "not the canonical encoding: {} bytes where the canonical one has {canonical} (an overlong varint?)",
                bytes.len()
            ),
        });
    }
    Ok(value)
}

impl Slot {
    /// Copies `input` in, calls `export`, hands the output to `read` in place and frees
    /// it.
    fn round_trip<R>(
        &mut self,
        export: Export,
        input: &[u8],
        limits: Limits,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, PluginError> {
        // Borrowed, not cloned: cloning a `TypedFunc` clones its registered type, which
        // measurably costs on the decision path.
        let func = match export {
            Export::Configure => Some(&self.configure),
            Export::Hook(hook) => self.hooks.get(hook_index(hook)).and_then(Option::as_ref),
        };
        let Some(func) = func else {
            return Err(PluginError::HookNotExported {
                hook: export.hook_name(),
                export: export.export_name(),
            });
        };
        self.store.data_mut().log.clear();
        self.store.data_mut().log_calls = 0;
        let len = i32::try_from(input.len()).map_err(|_| PluginError::InputTooLarge {
            len: input.len(),
            max: limits.max_input,
        })?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| classify(e, &self.store, limits, "`keyway_alloc`"))?;
        let start = ptr as u32 as usize;
        let memory_len = self.memory.data_size(&self.store);
        // ABI.md: `keyway_alloc` never answers 0, whatever the length.
        if ptr == 0 {
            return Err(PluginError::AllocFailed { len: input.len() });
        }
        if !input.is_empty() {
            self.memory
                .write(&mut self.store, start, input)
                .map_err(|_| PluginError::OutOfBounds {
                    what: "input buffer",
                    ptr: start,
                    len: input.len(),
                    memory: memory_len,
                })?;
        }
        let packed = func
            .call(&mut self.store, (ptr, len))
            .map_err(|e| classify(e, &self.store, limits, export.quoted_name()))?;
        let out_ptr = ((packed as u64) >> 32) as usize;
        let out_len = (packed as u64 & 0xffff_ffff) as usize;
        if out_len > limits.max_output {
            return Err(PluginError::OutputTooLarge {
                len: out_len,
                max: limits.max_output,
            });
        }
        let data = self.memory.data(&self.store);
        let out = read(
            data.get(out_ptr..out_ptr.saturating_add(out_len))
                .ok_or(PluginError::OutOfBounds {
                    what: "output buffer",
                    ptr: out_ptr,
                    len: out_len,
                    memory: data.len(),
                })?,
        );
        // Both halves of `packed` fit in 32 bits: checked above against the memory size.
        self.dealloc
            .call(&mut self.store, (out_ptr as i32, out_len as i32))
            .map_err(|e| classify(e, &self.store, limits, "`keyway_dealloc`"))?;
        Ok(out)
    }
}

/// Names what went wrong in a failed call, and the limit it broke; `during` is what was
/// running.
fn classify(error: wasmtime::Error, store: &Store<HostState>, limits: Limits, during: &'static str) -> PluginError {
    let state = store.data();
    match state.limits.refused {
        Some(Refused::Memory) => {
            return PluginError::MemoryLimit {
                limit: limits.memory_bytes,
            };
        }
        Some(Refused::Table) => {
            return PluginError::TableLimit {
                limit: limits.max_table_elements as usize,
            };
        }
        None => {}
    }
    let log = || {
        let dropped = state.log_calls.saturating_sub(MAX_LOG_CALLS);
        let mut log = printable(&state.log, MAX_LOG);
        if dropped > 0 {
            log.push_str(&format!(" [{dropped} more log calls not kept]"));
        }
        log
    };
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::FuelExhausted {
            fuel: limits.fuel,
            during,
        },
        Some(Trap::StackOverflow) => PluginError::StackOverflow {
            limit: limits.stack_bytes,
        },
        Some(trap) => PluginError::Trap {
            trap: trap.to_string(),
            log: log(),
        },
        None => PluginError::Trap {
            trap: printable(&error.to_string(), MAX_LOG),
            log: log(),
        },
    }
}
