//! Compiled modules: each `.wasm` is compiled once per process (keyed by its SHA-256),
//! and optionally precompiled to disk, keyed by the SHA-256 and by the engine's
//! compatibility hash (`Engine::precompile_compatibility_hash`), so a restart or an
//! upgraded wasmtime never loads code compiled for another engine.
//!
//! Only modules that loaded (validated, instantiated, configured) are kept, in memory or
//! on disk: a refused module costs its compile once per attempt and nothing after.
//!
//! API Boundary: the cache directory must be trusted like the binary itself: its files
//! are loaded as native code. Files are written whole, then renamed into place.

use crate::error::PluginError;
use crate::sha::Sha256;
use crate::text::printable;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use wasmtime::{Engine, Module};

pub(crate) struct ModuleCache {
    compat: u64,
    dir: Option<PathBuf>,
    modules: Mutex<HashMap<Sha256, Module>>,
    compiled: AtomicUsize,
}

impl ModuleCache {
    pub(crate) fn new(engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ModuleCache {
            compat: hasher.finish(),
            dir: None,
            modules: Mutex::new(HashMap::new()),
            compiled: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_dir(&mut self, dir: PathBuf) {
        self.dir = Some(dir);
    }

    pub(crate) fn compatibility_key(&self) -> u64 {
        self.compat
    }

    pub(crate) fn compiled_count(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    fn path(&self, dir: &Path, sha: Sha256) -> PathBuf {
        dir.join(format!("{sha}-{:016x}.cwasm", self.compat))
    }

    /// The module compiled for `sha`, if one loaded before.
    pub(crate) fn get(&self, sha: Sha256) -> Option<Module> {
        self.modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&sha)
            .cloned()
    }

    /// The module for `wasm`: from the on-disk cache when it has it, else compiled. It is
    /// not kept: the caller [`insert`](ModuleCache::insert)s it once it loaded, so a
    /// module that is refused never stays in memory or on disk.
    pub(crate) fn compile(&self, engine: &Engine, sha: Sha256, wasm: &[u8]) -> Result<Module, PluginError> {
        let from_disk = self
            .dir
            .as_deref()
            .and_then(|dir| load_precompiled(engine, &self.path(dir, sha)));
        if let Some(module) = from_disk {
            return Ok(module);
        }
        let module = Module::from_binary(engine, wasm).map_err(|e| PluginError::InvalidModule {
            reason: printable(&format!("{e:#}"), 512),
        })?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(module)
    }

    /// Keeps a module that loaded, in memory and (when there is a cache directory and it
    /// is not there yet) on disk.
    pub(crate) fn insert(&self, sha: Sha256, module: &Module) {
        if let Some(dir) = &self.dir {
            let path = self.path(dir, sha);
            if !path.is_file() {
                // The cache is an optimisation: failing to write it is not an error.
                let _ = store_precompiled(module, dir, &path);
            }
        }
        self.modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha, module.clone());
    }

    /// How many modules are kept in memory.
    pub(crate) fn len(&self) -> usize {
        self.modules.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[expect(
    unsafe_code,
    reason = "loading precompiled native code is inherently unsafe in wasmtime"
)]
fn load_precompiled(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: the file was written by `store_precompiled` from `Module::serialize`, in a
    // directory the operator trusts (see the module docs), under a name carrying the
    // wasm's SHA-256 and this engine's compatibility hash; wasmtime also checks its
    // header against the engine and refuses a mismatch, which falls back to compiling.
    unsafe { Module::deserialize_file(engine, path) }.ok()
}

fn store_precompiled(module: &Module, dir: &Path, path: &Path) -> std::io::Result<()> {
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
