//! The guest side of the ABI: allocation, configuration and hook dispatch.
//!
//! [`export_plugin!`](crate::export_plugin) generates the `keyway_*` exports, which call
//! the functions here. Everything that touches raw pointers lives in this module; the
//! rest of the SDK, and every plugin, is safe code. See `sdk/ABI.md` for the contract.

#![expect(
    unsafe_code,
    reason = "the guest ABI moves buffers across the boundary by raw pointer"
)]

use crate::{Config, Hook, Plugin, dispatch, encode};
use std::alloc::{Layout, alloc, dealloc};
use std::any::Any;
use std::cell::RefCell;

/// The ABI version this SDK implements; `keyway_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

thread_local! {
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// `keyway_alloc`: a buffer of `len` bytes the host may write into. Returns 0 when out of
/// memory. A zero-length request answers a dangling, never-dereferenced address (1).
#[must_use]
pub fn guest_alloc(len: usize) -> usize {
    if len == 0 {
        return 1;
    }
    match Layout::from_size_align(len, 1) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc(layout) as usize },
        Err(_) => 0,
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

/// Hands an output buffer to the host: packs its address and length into one `i64`
/// (address in the high 32 bits). The host frees it with `keyway_dealloc`.
fn leak_output(bytes: Vec<u8>) -> u64 {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed) as *mut u8 as usize;
    ((ptr as u64) << 32) | (len as u64 & 0xffff_ffff)
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
    let out = unsafe {
        with_input(ptr, len, |bytes| {
            PLUGIN.with(|slot| {
                let mut slot = slot.borrow_mut();
                if slot.is_none() {
                    match P::configure(&Config::default()) {
                        Ok(p) => *slot = Some(Box::new(p)),
                        Err(e) => return encode(&Err::<(), String>(e)).unwrap_or_default(),
                    }
                }
                match slot.as_ref().and_then(|p| p.downcast_ref::<P>()) {
                    Some(plugin) => dispatch(plugin, hook, bytes),
                    None => {
                        postcard::to_allocvec(&Err::<(), String>("plugin is not configured".into())).unwrap_or_default()
                    }
                }
            })
        })
    };
    leak_output(out)
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
