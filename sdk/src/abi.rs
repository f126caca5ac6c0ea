//! The guest side of the ABI: allocation, configuration and hook dispatch.
//!
//! [`export_plugin!`](crate::export_plugin) generates the `keyway_*` exports, which call
//! the functions here. Everything that touches raw pointers lives in this module; the
//! rest of the SDK, and every plugin, is safe code. See `sdk/ABI.md` for the contract.
//!
//! A door rule runs on every decision at its door, so a call should not touch the
//! allocator: inputs and outputs up to [`SCRATCH_LEN`] bytes go through two buffers
//! allocated once per instance and lent to one call at a time (the host calls an
//! instance from one thread, one call after the other). Larger ones, or a buffer asked
//! for while the scratch one is still lent, come from the heap as before; the ABI is the
//! same either way.

#![expect(
    unsafe_code,
    reason = "the guest ABI moves buffers across the boundary by raw pointer"
)]

use crate::{Config, Hook, Plugin, Sink, dispatch_to, encode};
use std::alloc::{Layout, alloc, dealloc};
use std::any::Any;
use std::cell::{Cell, RefCell};

/// The ABI version this SDK implements; `keyway_abi_version` returns it.
pub use keyway_abi::ABI_VERSION;

/// Inputs and outputs up to this many bytes use the per-instance scratch buffers.
pub const SCRATCH_LEN: usize = 1024;

/// A buffer of [`SCRATCH_LEN`] bytes, allocated on first use and kept for the
/// instance's life, lent to one call at a time.
struct Scratch {
    ptr: Cell<usize>,
    lent: Cell<bool>,
}

impl Scratch {
    const fn new() -> Self {
        Scratch {
            ptr: Cell::new(0),
            lent: Cell::new(false),
        }
    }

    /// The buffer's address, if it is free and `len` bytes fit; 0 otherwise.
    fn lend(&self, len: usize) -> usize {
        if len > SCRATCH_LEN || self.lent.get() {
            return 0;
        }
        let mut ptr = self.ptr.get();
        if ptr == 0 {
            ptr = heap_alloc(SCRATCH_LEN);
            if ptr == 0 {
                return 0;
            }
            self.ptr.set(ptr);
        }
        self.lent.set(true);
        ptr
    }

    /// Takes the buffer back if `ptr` is it; false for any other address.
    fn give_back(&self, ptr: usize) -> bool {
        let mine = self.lent.get() && ptr == self.ptr.get();
        if mine {
            self.lent.set(false);
        }
        mine
    }
}

thread_local! {
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    static INPUT: Scratch = const { Scratch::new() };
    static OUTPUT: Scratch = const { Scratch::new() };
}

fn heap_alloc(len: usize) -> usize {
    match Layout::from_size_align(len, 1) {
        // SAFETY: callers never ask for zero bytes, so the layout has a non-zero size.
        Ok(layout) if len != 0 => unsafe { alloc(layout) as usize },
        _ => 0,
    }
}

/// `keyway_alloc`: a buffer of `len` bytes the host may write into. Returns 0 when out of
/// memory. A zero-length request answers a dangling, never-dereferenced address (1).
#[must_use]
pub fn guest_alloc(len: usize) -> usize {
    if len == 0 {
        return 1;
    }
    match INPUT.with(|s| s.lend(len)) {
        0 => heap_alloc(len),
        ptr => ptr,
    }
}

/// `keyway_dealloc`: frees a buffer from [`guest_alloc`] or a hook's output.
///
/// # Safety
/// `ptr` and `len` must describe a live buffer from this allocator, freed once.
pub unsafe fn guest_dealloc(ptr: usize, len: usize) {
    if len == 0 || ptr == 0 {
        return;
    }
    // A scratch buffer is a live heap block, so no other buffer shares its address.
    if INPUT.with(|s| s.give_back(ptr)) || OUTPUT.with(|s| s.give_back(ptr)) {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(len, 1) {
        // SAFETY: the caller guarantees the buffer came from `guest_alloc` (or
        // `leak_output`) with this very length, hence this layout.
        unsafe { dealloc(ptr as *mut u8, layout) }
    }
}

/// Takes ownership of an input buffer the host filled, and frees it after `f`.
///
/// # Safety
/// `ptr`/`len` must come from [`guest_alloc`], filled by the host, and not be used again.
unsafe fn with_input<R>(ptr: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
    if len == 0 {
        return f(&[]);
    }
    // SAFETY: the host wrote `len` bytes at `ptr`, a live allocation of that size.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    let out = f(input);
    // SAFETY: same buffer, freed exactly once, after its last use.
    unsafe { guest_dealloc(ptr, len) };
    out
}

/// Packs an output's address and length into one `i64` (address in the high 32 bits).
fn pack(ptr: usize, len: usize) -> u64 {
    ((ptr as u64) << 32) | (len as u64 & 0xffff_ffff)
}

/// Hands an output buffer to the host. The host frees it with `keyway_dealloc`.
fn leak_output(bytes: Vec<u8>) -> u64 {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed) as *mut u8 as usize;
    pack(ptr, len)
}

/// Encodes a hook's result into the output scratch buffer when it fits and is free,
/// else into a heap buffer.
struct ToHost;

impl Sink for ToHost {
    type Out = u64;

    fn put<T: serde::Serialize>(self, result: &Result<T, String>) -> u64 {
        // One pass: encode straight into the whole scratch buffer; only an output that
        // does not fit is encoded again, on the heap.
        let ptr = OUTPUT.with(|s| s.lend(SCRATCH_LEN));
        if ptr != 0 {
            // SAFETY: the scratch buffer holds SCRATCH_LEN bytes, and it is lent to this
            // output alone until the host frees it.
            let buf = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, SCRATCH_LEN) };
            if let Ok(used) = postcard::to_slice(result, buf) {
                return pack(ptr, used.len());
            }
            OUTPUT.with(|s| s.give_back(ptr));
        }
        let bytes = encode(result)
            .or_else(|e| encode(&Err::<(), String>(format!("cannot encode the output: {e}"))))
            .unwrap_or_default();
        leak_output(bytes)
    }
}

/// `keyway_configure`: decodes the config and builds the plugin. Answers a
/// `HookResult<()>`.
///
/// # Safety
/// As for [`with_input`].
#[must_use]
pub unsafe fn guest_configure<P: Plugin>(ptr: usize, len: usize) -> u64 {
    install_panic_hook();
    // SAFETY: forwarded from the caller.
    let result: Result<(), String> = unsafe {
        with_input(ptr, len, |bytes| {
            let config: Config = postcard::from_bytes(bytes).map_err(|e| format!("cannot decode the config: {e}"))?;
            let plugin = P::configure(&config)?;
            PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
            Ok(())
        })
    };
    leak_output(encode(&result).unwrap_or_default())
}

/// `keyway_<hook>`: runs one hook on the configured plugin (configured with an empty
/// config if the host never called `keyway_configure`).
///
/// # Safety
/// As for [`with_input`].
#[must_use]
pub unsafe fn guest_call<P: Plugin>(hook: Hook, ptr: usize, len: usize) -> u64 {
    install_panic_hook();
    // SAFETY: forwarded from the caller.
    unsafe {
        with_input(ptr, len, |bytes| {
            PLUGIN.with(|slot| {
                let mut slot = slot.borrow_mut();
                if slot.is_none() {
                    match P::configure(&Config::default()) {
                        Ok(p) => *slot = Some(Box::new(p)),
                        Err(e) => return ToHost.put(&Err::<(), String>(e)),
                    }
                }
                match slot.as_ref().and_then(|p| p.downcast_ref::<P>()) {
                    Some(plugin) => dispatch_to(plugin, hook, bytes, ToHost),
                    None => ToHost.put(&Err::<(), String>("plugin is not configured".into())),
                }
            })
        })
    }
}

/// Sends a log line to the host (`keyway.log`). Natively, it goes to stderr.
pub fn log(message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "keyway")]
        unsafe extern "C" {
            #[link_name = "log"]
            fn host_log(ptr: i32, len: i32);
        }
        let len = message.len().min(i32::MAX as usize);
        // SAFETY: the host only reads `len` bytes at the address of a live string.
        unsafe { host_log(message.as_ptr() as i32, len as i32) }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("plugin: {message}");
    }
}

fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        use std::sync::Once;
        static ONCE: Once = Once::new();
        ONCE.call_once(|| std::panic::set_hook(Box::new(|info| log(&format!("panic: {info}")))));
    }
}
