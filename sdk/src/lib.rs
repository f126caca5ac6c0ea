//! Keyway's plugin SDK: what a policy plugin depends on.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`] and built
//! for `wasm32-unknown-unknown`. The host calls its hooks with postcard-encoded inputs;
//! the SDK decodes them, calls your methods and encodes the answers. The same code runs
//! natively under [`testing::Harness`], so plugins are unit-tested with `cargo test`.
//!
//! ```
//! use keyway_sdk::{Config, DoorRuleInput, DoorRuleOutput, HookResult, Plugin};
//!
//! /// Shuts door 13, whatever the core says.
//! struct NoThirteen;
//!
//! impl Plugin for NoThirteen {
//!     fn configure(_config: &Config) -> HookResult<Self> {
//!         Ok(NoThirteen)
//!     }
//!
//!     fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
//!         Ok(if input.door == 13 { DoorRuleOutput::deny("door 13 is unlucky") } else { DoorRuleOutput::abstain() })
//!     }
//! }
//!
//! keyway_sdk::export_plugin!(NoThirteen, door_rule);
//!
//! let harness = keyway_sdk::testing::Harness::<NoThirteen>::new(Config::new())?;
//! let out = harness.door_rule(&keyway_sdk::testing::door_input(13, Some(1)))?;
//! assert_eq!(out, DoorRuleOutput::deny("door 13 is unlucky"));
//! # Ok::<(), String>(())
//! ```
//!
//! See `sdk/README.md` for the guide and `sdk/ABI.md` for the binary contract.

pub mod abi;
pub mod testing;

/// The guide, `sdk/README.md`, as a doc test: every Rust block in it compiles (and
/// `tests/sdk.rs` checks each is a verbatim excerpt of the plugin it shows).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
#[derive(Debug)]
pub struct Guide;

// The wire types live in `keyway-abi`, shared with the host; plugins keep naming them
// through this crate.
pub use keyway_abi::capabilities;
pub use keyway_abi::*;

#[doc(hidden)]
pub use postcard as __postcard;

/// A policy plugin. Implement `configure` and the hooks you export; the others answer an
/// error if ever called.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its manifest config. Called once per instance.
    ///
    /// # Errors
    /// A message naming what is wrong with the config; the bundle then fails to load.
    fn configure(config: &Config) -> HookResult<Self>;

    /// The role table.
    ///
    /// # Errors
    /// Any message; the bundle then fails to load.
    fn roles(&self) -> HookResult<RoleTableDef> {
        Err(not_exported(Hook::Roles))
    }

    /// Whether a write that changes a counted thing may go ahead.
    ///
    /// # Errors
    /// Any message; the API then refuses the write (a voucher fails closed).
    fn voucher(&self, input: &VoucherInput) -> HookResult<VoucherVerdict> {
        let _ = input;
        Err(not_exported(Hook::Voucher))
    }

    /// The notifications one event produces.
    ///
    /// # Errors
    /// Any message; the host logs it and drops the event's notifications.
    fn notify(&self, input: &NotifyInput) -> HookResult<Vec<Notification>> {
        let _ = input;
        Err(not_exported(Hook::Notify))
    }

    /// A door rule's verdict on one decision.
    ///
    /// # Errors
    /// Any message; the door's fail mode then decides (fail-secure denies).
    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        let _ = input;
        Err(not_exported(Hook::DoorRule))
    }

    /// (v2) A passage at a door that attaches this rule: what actually happened. Export
    /// it (`export_plugin!(MyRule, door_rule, passage)`) to count what happened rather
    /// than what was decided.
    ///
    /// # Errors
    /// Any message; the host logs it and leaves the states as they were.
    fn passage(&self, input: &PassageInput<'_>) -> HookResult<PassageOutput> {
        let _ = input;
        Err(not_exported(Hook::Passage))
    }

    /// (v4) Whether a door may attach this rule with `config`, its own settings for that
    /// door (which then arrive in [`DoorRuleInput::door_config`]). Export it
    /// (`export_plugin!(MyRule, door_rule, door_config)`) to take per-door settings: the
    /// host refuses any per-door configuration for a rule that does not, and refuses the
    /// attachment when this answers an error.
    ///
    /// # Errors
    /// A message naming what is wrong, shown to the admin who attached the rule.
    fn door_config(&self, config: &Config) -> HookResult<()> {
        let _ = config;
        Err(not_exported(Hook::DoorConfig))
    }
}

pub(crate) fn not_exported(hook: Hook) -> String {
    format!("this plugin does not implement the `{}` hook", hook.name())
}

/// Runs `hook` on `plugin` with a postcard-encoded input, and answers the
/// postcard-encoded [`HookResult`]. The native harness uses it; the wasm exports take the
/// same path but encode into a buffer they reuse.
#[must_use]
pub fn dispatch<P: Plugin>(plugin: &P, hook: Hook, input: &[u8]) -> Vec<u8> {
    dispatch_to(plugin, hook, input, ToVec)
}

/// Where a hook's encoded answer goes: each hook has its own output type, so this is a
/// trait with a generic method rather than a closure.
pub(crate) trait Sink {
    /// What the sink answers.
    type Out;
    /// Takes one hook's result.
    fn put<T: serde::Serialize>(self, result: &HookResult<T>) -> Self::Out;
}

/// Encodes into a fresh vector.
struct ToVec;

impl Sink for ToVec {
    type Out = Vec<u8>;

    fn put<T: serde::Serialize>(self, result: &HookResult<T>) -> Vec<u8> {
        encode(result)
            .or_else(|e| encode(&Err::<(), String>(format!("cannot encode the output: {e}"))))
            .unwrap_or_default()
    }
}

/// Decodes the input (borrowing from it where the type allows), runs the hook and hands
/// the result to `sink`.
pub(crate) fn dispatch_to<P: Plugin, S: Sink>(plugin: &P, hook: Hook, input: &[u8], sink: S) -> S::Out {
    fn run<'de, I: serde::Deserialize<'de>, O>(input: &'de [u8], f: impl FnOnce(&I) -> HookResult<O>) -> HookResult<O> {
        match postcard::from_bytes::<I>(input) {
            Ok(i) => f(&i),
            Err(e) => Err(format!("cannot decode the input: {e}")),
        }
    }
    match hook {
        Hook::Roles => sink.put(&run(input, |(): &()| plugin.roles())),
        Hook::Voucher => sink.put(&run(input, |i| plugin.voucher(i))),
        Hook::Notify => sink.put(&run(input, |i| plugin.notify(i))),
        Hook::DoorRule => sink.put(&run(input, |i: &DoorRuleInput<'_>| plugin.door_rule(i))),
        Hook::Passage => sink.put(&run(input, |i: &PassageInput<'_>| plugin.passage(i))),
        Hook::DoorConfig => sink.put(&run(input, |i: &Config| plugin.door_config(i))),
    }
}

/// Encodes into a buffer of exactly the encoded size: on the guest, the output is handed
/// over without a reallocation (growing, then shrinking to fit).
pub(crate) fn encode<T: serde::Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let mut buf = vec![0u8; postcard::experimental::serialized_size(value)?];
    postcard::to_slice(value, &mut buf)?;
    Ok(buf)
}

/// Exports a [`Plugin`] type and the hooks it implements, as wasm functions.
///
/// ```
/// # use keyway_sdk::{Config, HookResult, Plugin, RoleTableDef};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     fn configure(_: &Config) -> HookResult<Self> { Ok(MyPlugin) }
/// #     fn roles(&self) -> HookResult<RoleTableDef> { Ok(RoleTableDef::default()) }
/// # }
/// keyway_sdk::export_plugin!(MyPlugin, roles, door_rule);
/// ```
///
/// Hooks are any of `roles`, `voucher`, `notify`, `door_rule`, `passage`, `door_config`. On
/// targets other than wasm32 the macro expands to nothing, so the crate builds and tests
/// natively.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty $(, $hook:ident)* $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[expect(unsafe_code, reason = "wasm exports are unmangled symbols reading buffers the host hands over")]
        pub mod __keyway_exports {
            use super::*;

            #[unsafe(no_mangle)]
            pub extern "C" fn keyway_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn keyway_alloc(len: i32) -> i32 {
                $crate::abi::guest_alloc(len as u32 as usize) as i32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn keyway_dealloc(ptr: i32, len: i32) {
                // SAFETY: the ABI only lets the host free buffers it was handed.
                unsafe { $crate::abi::guest_dealloc(ptr as u32 as usize, len as u32 as usize) }
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn keyway_configure(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host passes a buffer from `keyway_alloc` that it filled.
                unsafe { $crate::abi::guest_configure::<$plugin>(ptr as u32 as usize, len as u32 as usize) as i64 }
            }

            $( $crate::__export_hook!($plugin, $hook); )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    ($plugin:ty, roles) => {
        $crate::__export_hook!(@fn $plugin, keyway_roles, Roles);
    };
    ($plugin:ty, voucher) => {
        $crate::__export_hook!(@fn $plugin, keyway_voucher, Voucher);
    };
    ($plugin:ty, notify) => {
        $crate::__export_hook!(@fn $plugin, keyway_notify, Notify);
    };
    ($plugin:ty, door_rule) => {
        $crate::__export_hook!(@fn $plugin, keyway_door_rule, DoorRule);
    };
    ($plugin:ty, passage) => {
        $crate::__export_hook!(@fn $plugin, keyway_passage, Passage);
    };
    ($plugin:ty, door_config) => {
        $crate::__export_hook!(@fn $plugin, keyway_door_config, DoorConfig);
    };
    (@fn $plugin:ty, $name:ident, $hook:ident) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host passes a buffer from `keyway_alloc` that it filled.
            unsafe { $crate::abi::guest_call::<$plugin>($crate::Hook::$hook, ptr as u32 as usize, len as u32 as usize) as i64 }
        }
    };
}
