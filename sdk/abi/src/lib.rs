//! Keyway's plugin wire types: what the plugin host and a plugin share.
//!
//! The hooks ([`Hook`]), the ABI version ([`ABI_VERSION`]), every hook's input and output,
//! and a plugin's configuration ([`Config`]). Both sides encode them with postcard, as
//! `sdk/ABI.md` specifies. This crate has no guest code (no allocator, no exports) and no
//! host code (no wasmtime): the host (`keyway-plugin-host`) and the guest SDK
//! (`keyway-sdk`, which re-exports all of it) each depend on it, and on nothing of the
//! other.

pub mod capabilities;
mod config;
mod types;

pub use config::{Config, Value};
pub use types::*;

/// The ABI version this crate describes; a plugin built with it returns it from
/// `keyway_abi_version`. Version 2 adds per-door and per-site state and the door's site
/// to door rules (fields appended to `DoorRuleInput` and `DoorRuleOutput`); version 3
/// adds the event kind [`EventKind::Tamper`] to notify, offered to version 3 plugins only,
/// and a voucher's own caps ([`VoucherInput::issued`]) to the voucher hook's input;
/// version 4 adds the credential's kind, the person's groups and the attachment's own
/// configuration to door rules (fields appended to `DoorRuleInput`), and the optional
/// [`Hook::DoorConfig`], which checks that configuration when a door attaches the rule.
pub const ABI_VERSION: i32 = 4;

/// Every ABI version a host built with this crate speaks: plugins of every earlier
/// version load and behave as before.
pub const SUPPORTED_ABI_VERSIONS: [i32; 4] = [1, 2, 3, 4];

/// The hooks a plugin may export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `keyway_roles`: the role table, once per bundle load.
    Roles,
    /// `keyway_voucher`: may this write change the counts?
    Voucher,
    /// `keyway_notify`: notifications for one event.
    Notify,
    /// `keyway_door_rule`: a per-decision rule on the doors that attach it.
    DoorRule,
    /// `keyway_passage` (v2, optional for a door rule): what actually happened at a door
    /// that attaches the rule, after the decision.
    Passage,
    /// `keyway_door_config` (v4, optional for a door rule): is this per-door
    /// configuration one the rule accepts? Called when a door attaches the rule, and
    /// when a bundle is swapped in, for each door that attaches it.
    DoorConfig,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 6] = [
        Hook::Roles,
        Hook::Voucher,
        Hook::Notify,
        Hook::DoorRule,
        Hook::Passage,
        Hook::DoorConfig,
    ];

    /// The name of the wasm export.
    #[must_use]
    pub const fn export_name(self) -> &'static str {
        match self {
            Hook::Roles => "keyway_roles",
            Hook::Voucher => "keyway_voucher",
            Hook::Notify => "keyway_notify",
            Hook::DoorRule => "keyway_door_rule",
            Hook::Passage => "keyway_passage",
            Hook::DoorConfig => "keyway_door_config",
        }
    }

    /// The name used in manifests (`hooks = ["door_rule"]`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Roles => "roles",
            Hook::Voucher => "voucher",
            Hook::Notify => "notify",
            Hook::DoorRule => "door_rule",
            Hook::Passage => "passage",
            Hook::DoorConfig => "door_config",
        }
    }

    /// The hook with this manifest name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }
}
