//! Compiled modules: each `.wasm` is compiled once per process (keyed by its SHA-256),
//! and optionally precompiled to disk, keyed by the SHA-256 and by the engine's
//! compatibility hash (`Engine::precompile_compatibility_hash`), so a restart or an
//! upgraded wasmtime never loads code compiled for another engine.
//!
//! API Boundary: the cache directory must be trusted like the binary itself: its files
//! are loaded as native code. Files are written whole, then renamed into place.

use crate::error::PluginError;
use crate::sha::Sha256;
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

    pub(crate) fn get_or_compile(&self, engine: &Engine, sha: Sha256, wasm: &[u8]) -> Result<Module, PluginError> {
        if let Some(m) = self.modules.lock().unwrap_or_else(PoisonError::into_inner).get(&sha) {
            return Ok(m.clone());
        }
        let from_disk = self
            .dir
            .as_deref()
            .and_then(|dir| load_precompiled(engine, &self.path(dir, sha)));
        let module = match from_disk {
            Some(m) => m,
            None => {
                let m = Module::from_binary(engine, wasm).map_err(|e| PluginError::InvalidModule {
                    reason: format!("{e:#}"),
                })?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                if let Some(dir) = &self.dir {
                    // The cache is an optimisation: failing to write it is not an error.
                    let _ = store_precompiled(&m, dir, &self.path(dir, sha));
                }
                m
            }
        };
        self.modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha, module.clone());
        Ok(module)
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
