//! The wasmtime side: one [`Runtime`] (engine, linker, compiled-module cache) loads
//! [`Plugin`]s, and each plugin calls its hooks within [`Limits`].
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
use keyway_sdk::{ABI_VERSION, Config, Hook, HookResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::{
    Caller, Engine, ExternType, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, ValType,
};

/// What one call may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Wasm stack cap, in bytes.
    pub stack_bytes: usize,
    /// Largest input the host sends, in bytes.
    pub max_input: usize,
    /// Largest output the host accepts, in bytes.
    pub max_output: usize,
    /// Idle instances kept per plugin.
    pub pool_size: usize,
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
        }
    }
}

/// Most bytes of `keyway::log` output kept per call.
const MAX_LOG: usize = 2048;

/// Per-store host data: the limiter and the plugin's log.
struct HostState {
    limits: Limiter,
    log: String,
}

/// [`StoreLimits`] that remembers it refused a growth, and turns the refusal into a trap
/// (a Rust guest would abort on allocation failure anyway, and a trap is reported now,
/// not after the guest has spun on a failed `memory.grow` until its fuel runs out).
struct Limiter {
    inner: StoreLimits,
    memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.memory_refused = true;
            wasmtime::bail!("memory growth to {desired} bytes refused");
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
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

    /// How many modules were compiled (not found in a cache) since start.
    #[must_use]
    pub fn compiled_count(&self) -> usize {
        self.cache.compiled_count()
    }

    /// Compiles (once) and validates a plugin, instantiates it, checks its ABI version
    /// and configures it. `hooks` are the hooks it must export.
    ///
    /// # Errors
    /// Not wasm, invalid, a forbidden import, a missing export or hook, a wrong ABI
    /// version, or the plugin refusing its config.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        hooks: &[Hook],
        config: &Config,
    ) -> Result<Plugin, PluginError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(PluginError::NotWasm);
        }
        let sha256 = Sha256::of(wasm);
        let module = self.cache.get_or_compile(&self.engine, sha256, wasm)?;
        check_imports(&module)?;
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
        let plugin = Plugin {
            name: name.into(),
            sha256,
            runtime: Arc::clone(self),
            pre,
            config,
            pool: Mutex::new(Vec::new()),
        };
        // Instantiate once now: the ABI version and the config are checked at load.
        let slot = plugin.instantiate()?;
        plugin.release(slot);
        Ok(plugin)
    }
}

fn host_log(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) {
    let Some(wasmtime::Extern::Memory(memory)) = caller.get_export("memory") else {
        return;
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let start = ptr as u32 as usize;
    let end = start.saturating_add(len as u32 as usize);
    let Some(bytes) = data.get(start..end) else {
        return;
    };
    let room = MAX_LOG.saturating_sub(state.log.len());
    if room == 0 {
        return;
    }
    if !state.log.is_empty() {
        state.log.push_str("; ");
    }
    let text = String::from_utf8_lossy(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    state.log.push_str(&text);
}

fn check_imports(module: &Module) -> Result<(), PluginError> {
    for import in module.imports() {
        let allowed = import.module() == "keyway"
            && import.name() == "log"
            && matches!(import.ty(), ExternType::Func(f)
                if f.params().len() == 2
                    && f.params().all(|p| matches!(p, ValType::I32))
                    && f.results().len() == 0);
        if !allowed {
            return Err(PluginError::ForbiddenImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
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
    let required = [
        ("keyway_abi_version", 0, 1),
        ("keyway_alloc", 1, 1),
        ("keyway_dealloc", 2, 0),
        ("keyway_configure", 2, 1),
    ];
    for (name, params, results) in required {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if f.params().len() == params && f.results().len() == results => {}
            Some(_) => return Err(bad(name, "wrong signature, see sdk/ABI.md")),
            None => return Err(bad(name, "not exported")),
        }
    }
    Ok(())
}

/// A live instance with its store and exports.
struct Slot {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    dealloc: TypedFunc<(i32, i32), ()>,
    hooks: [Option<TypedFunc<(i32, i32), i64>>; 4],
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
}

const fn hook_index(hook: Hook) -> usize {
    match hook {
        Hook::Roles => 0,
        Hook::Voucher => 1,
        Hook::Notify => 2,
        Hook::DoorRule => 3,
    }
}

/// A loaded plugin: its module compiled once, pre-linked, with a pool of idle instances.
/// Calls may come from any thread; each takes an instance from the pool (or makes one).
pub struct Plugin {
    name: Arc<str>,
    sha256: Sha256,
    runtime: Arc<Runtime>,
    pre: InstancePre<HostState>,
    config: Vec<u8>,
    pool: Mutex<Vec<Slot>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Plugin {
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

    /// Idle instances in the pool (for tests and metrics).
    #[must_use]
    pub fn idle_instances(&self) -> usize {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn instantiate(&self) -> Result<Slot, PluginError> {
        let limits = self.runtime.limits;
        let state = HostState {
            limits: Limiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .instances(1)
                    .memories(1)
                    .tables(4)
                    .table_elements(10_000)
                    .build(),
                memory_refused: false,
            },
            log: String::new(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store, limits))?;
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
        let mut hooks = [None, None, None, None];
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
        let found = version.call(&mut store, ()).map_err(|e| classify(e, &store, limits))?;
        if found != ABI_VERSION {
            return Err(PluginError::AbiVersion {
                found,
                expected: ABI_VERSION,
            });
        }
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

    /// As [`Plugin::call_raw`], but hands the raw output to `read` where it lies, in the
    /// plugin's memory, before the plugin frees it: the caller decodes (or copies) only
    /// what it needs, and the round trip itself allocates nothing on the host.
    ///
    /// # Errors
    /// As [`Plugin::call_raw`]. `read` runs only when the plugin answered within bounds;
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
        let mut slot = match popped {
            Some(slot) => slot,
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
    /// As [`Plugin::call_raw`], plus [`PluginError::Decode`] and the plugin's own
    /// [`PluginError::Guest`] error.
    pub fn call<I: Serialize, O: DeserializeOwned>(&self, hook: Hook, input: &I) -> Result<O, PluginError> {
        let bytes = postcard::to_allocvec(input).map_err(|e| PluginError::Decode { reason: e.to_string() })?;
        self.call_raw_with(hook, &bytes, decode)?
    }
}

fn decode<O: DeserializeOwned>(bytes: &[u8]) -> Result<O, PluginError> {
    match postcard::from_bytes::<HookResult<O>>(bytes) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(message)) => Err(PluginError::Guest { message }),
        Err(e) => Err(PluginError::Decode { reason: e.to_string() }),
    }
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
        self.store
            .set_fuel(limits.fuel)
            .map_err(|e| PluginError::Instantiate { reason: e.to_string() })?;
        let len = i32::try_from(input.len()).map_err(|_| PluginError::InputTooLarge {
            len: input.len(),
            max: limits.max_input,
        })?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| classify(e, &self.store, limits))?;
        let start = ptr as u32 as usize;
        let memory_len = self.memory.data_size(&self.store);
        if ptr == 0 && len != 0 {
            return Err(PluginError::OutOfBounds {
                what: "input buffer (keyway_alloc answered 0)",
                ptr: 0,
                len: input.len(),
                memory: memory_len,
            });
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
            .map_err(|e| classify(e, &self.store, limits))?;
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
            .map_err(|e| classify(e, &self.store, limits))?;
        Ok(out)
    }
}

/// Names what went wrong in a failed call.
fn classify(error: wasmtime::Error, store: &Store<HostState>, limits: Limits) -> PluginError {
    let state = store.data();
    if state.limits.memory_refused {
        return PluginError::MemoryLimit {
            limit: limits.memory_bytes,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::FuelExhausted { fuel: limits.fuel },
        Some(Trap::StackOverflow) => PluginError::StackOverflow {
            limit: limits.stack_bytes,
        },
        Some(trap) => PluginError::Trap {
            trap: trap.to_string(),
            log: state.log.clone(),
        },
        None => PluginError::Trap {
            trap: error.to_string(),
            log: state.log.clone(),
        },
    }
}
