//! The role table, compiled from the roles plugin's answer into bitmasks.
//!
//! Architecture Invariant: no WASM runs on the request path. The roles hook runs once,
//! when a bundle loads; the API and the core consult these masks: a capability check is
//! one shift and one AND. An unknown role has no capability and may grant nothing.

use crate::error::RoleTableError;
use crate::text::{is_printable, printable};
use keyway_abi::RoleTableDef;
use keyway_abi::capabilities::WELL_KNOWN;
use keyway_core::{RoleFlags, RoleId};

/// One capability: a bit in a role's mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capability(u8);

impl Capability {
    /// `people.invite`.
    pub const PEOPLE_INVITE: Capability = Capability(0);
    /// `people.block`.
    pub const PEOPLE_BLOCK: Capability = Capability(1);
    /// `rights.grant`.
    pub const RIGHTS_GRANT: Capability = Capability(2);
    /// `entries.read_all`.
    pub const ENTRIES_READ_ALL: Capability = Capability(3);
    /// `entries.read_own`.
    pub const ENTRIES_READ_OWN: Capability = Capability(4);
    /// `site.transfer_ownership`.
    pub const SITE_TRANSFER_OWNERSHIP: Capability = Capability(5);
    /// `iq.reset_pin`.
    pub const IQ_RESET_PIN: Capability = Capability(6);
    /// `iq.reset`.
    pub const IQ_RESET: Capability = Capability(7);
    /// `door.remote_open`.
    pub const DOOR_REMOTE_OPEN: Capability = Capability(8);
    /// `door.lockdown`.
    pub const DOOR_LOCKDOWN: Capability = Capability(9);
    /// `notifications.configure`.
    pub const NOTIFICATIONS_CONFIGURE: Capability = Capability(10);

    /// The bit index.
    #[must_use]
    pub const fn bit(self) -> u8 {
        self.0
    }

    const fn mask(self) -> u64 {
        1 << self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CompiledRole {
    name: String,
    rank: u8,
    capabilities: u64,
    grant: u64,
    revoke: u64,
    transfer_to: u64,
    lockdown_exempt: bool,
    max_holders: Option<u32>,
}

/// The compiled role table. Role ids are below 64, so sets of roles are `u64` masks too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleTable {
    roles: Vec<Option<CompiledRole>>,
    capability_names: Vec<String>,
}

pub(crate) fn valid_capability(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Longest role name, in bytes.
pub const MAX_ROLE_NAME: usize = 64;

impl RoleTable {
    /// Compiles a plugin's answer.
    ///
    /// # Errors
    /// An empty table, an empty, unprintable or over-long role name, an id of 64 or more, a duplicate id or name, a reference to an
    /// unknown role, a malformed capability name, more than 64 capabilities.
    pub fn compile(def: &RoleTableDef) -> Result<RoleTable, RoleTableError> {
        if def.roles.is_empty() {
            return Err(RoleTableError::Empty);
        }
        let mut ids = 0u64;
        for role in &def.roles {
            if role.name.is_empty() || !is_printable(&role.name, MAX_ROLE_NAME) {
                return Err(RoleTableError::BadName {
                    name: printable(&role.name, MAX_ROLE_NAME),
                });
            }
            if role.id >= 64 {
                return Err(RoleTableError::IdTooLarge {
                    name: role.name.clone(),
                    id: role.id,
                });
            }
            if ids & (1 << role.id) != 0 {
                return Err(RoleTableError::DuplicateId { id: role.id });
            }
            if def.roles.iter().filter(|r| r.name == role.name).count() > 1 {
                return Err(RoleTableError::DuplicateName {
                    name: role.name.clone(),
                });
            }
            ids |= 1 << role.id;
        }
        let mut capability_names: Vec<String> = WELL_KNOWN.iter().map(|s| (*s).to_owned()).collect();
        let mut roles: Vec<Option<CompiledRole>> =
            vec![None; usize::from(def.roles.iter().map(|r| r.id).max().unwrap_or(0)) + 1];
        for role in &def.roles {
            let mut capabilities = 0u64;
            for name in &role.capabilities {
                if !valid_capability(name) {
                    return Err(RoleTableError::BadCapability {
                        role: role.name.clone(),
                        name: printable(name, MAX_ROLE_NAME),
                    });
                }
                let bit = match capability_names.iter().position(|c| c == name) {
                    Some(bit) => bit,
                    None if capability_names.len() < 64 => {
                        capability_names.push(name.clone());
                        capability_names.len() - 1
                    }
                    None => return Err(RoleTableError::TooManyCapabilities { name: name.clone() }),
                };
                capabilities |= 1 << bit;
            }
            let set = |field: &'static str, list: &[u16]| -> Result<u64, RoleTableError> {
                list.iter().try_fold(0u64, |acc, &id| {
                    if id < 64 && ids & (1 << id) != 0 {
                        Ok(acc | 1 << id)
                    } else {
                        Err(RoleTableError::UnknownRole {
                            role: role.name.clone(),
                            field,
                            id,
                        })
                    }
                })
            };
            let compiled = CompiledRole {
                name: role.name.clone(),
                rank: role.rank,
                capabilities,
                grant: set("may_grant", &role.may_grant)?,
                revoke: set("may_revoke", &role.may_revoke)?,
                transfer_to: set("transfer_ownership_to", &role.transfer_ownership_to)?,
                lockdown_exempt: role.lockdown_exempt,
                max_holders: role.max_holders,
            };
            if let Some(slot) = roles.get_mut(usize::from(role.id)) {
                *slot = Some(compiled);
            }
        }
        Ok(RoleTable {
            roles,
            capability_names,
        })
    }

    fn role(&self, id: RoleId) -> Option<&CompiledRole> {
        self.roles.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    fn in_mask(mask: u64, id: RoleId) -> bool {
        id.0 < 64 && mask & (1 << id.0) != 0
    }

    /// The capability with this name (well-known, or declared by the roles plugin).
    #[must_use]
    pub fn capability(&self, name: &str) -> Option<Capability> {
        self.capability_names
            .iter()
            .position(|c| c == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(Capability)
    }

    /// The name of a capability.
    #[must_use]
    pub fn capability_name(&self, capability: Capability) -> Option<&str> {
        self.capability_names.get(usize::from(capability.0)).map(String::as_str)
    }

    /// Whether `role` has `capability`.
    #[must_use]
    pub fn can(&self, role: RoleId, capability: Capability) -> bool {
        self.capabilities(role) & capability.mask() != 0
    }

    /// The capability mask of `role` (0 for an unknown role).
    #[must_use]
    pub fn capabilities(&self, role: RoleId) -> u64 {
        self.role(role).map_or(0, |r| r.capabilities)
    }

    /// Whether a holder of `actor` may grant `target` to someone.
    #[must_use]
    pub fn may_grant(&self, actor: RoleId, target: RoleId) -> bool {
        self.role(actor).is_some_and(|r| Self::in_mask(r.grant, target))
    }

    /// Whether a holder of `actor` may revoke `target` from someone.
    #[must_use]
    pub fn may_revoke(&self, actor: RoleId, target: RoleId) -> bool {
        self.role(actor).is_some_and(|r| Self::in_mask(r.revoke, target))
    }

    /// Whether a holder of `actor` may transfer the site's ownership to a holder of
    /// `target`.
    #[must_use]
    pub fn may_transfer_ownership(&self, actor: RoleId, target: RoleId) -> bool {
        self.can(actor, Capability::SITE_TRANSFER_OWNERSHIP)
            && self.role(actor).is_some_and(|r| Self::in_mask(r.transfer_to, target))
    }

    /// Whether holders of `role` pass doors under lockdown.
    #[must_use]
    pub fn is_lockdown_exempt(&self, role: RoleId) -> bool {
        self.role(role).is_some_and(|r| r.lockdown_exempt)
    }

    /// The lockdown-exempt roles, in id order.
    #[must_use]
    pub fn lockdown_exempt_roles(&self) -> Vec<RoleId> {
        self.ids().filter(|&id| self.is_lockdown_exempt(id)).collect()
    }

    /// The flags the core's snapshot takes (`Record::Roles`).
    #[must_use]
    pub fn role_flags(&self) -> RoleFlags {
        RoleFlags {
            lockdown_exempt: self.lockdown_exempt_roles(),
        }
    }

    /// The rank of `role`.
    #[must_use]
    pub fn rank(&self, role: RoleId) -> Option<u8> {
        self.role(role).map(|r| r.rank)
    }

    /// The name of `role`.
    #[must_use]
    pub fn name(&self, role: RoleId) -> Option<&str> {
        self.role(role).map(|r| r.name.as_str())
    }

    /// The role with this name.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<RoleId> {
        self.ids().find(|&id| self.name(id) == Some(name))
    }

    /// How many people may hold `role` on a site; `None` for no limit (or no such role).
    #[must_use]
    pub fn max_holders(&self, role: RoleId) -> Option<u32> {
        self.role(role).and_then(|r| r.max_holders)
    }

    /// The role ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = RoleId> + '_ {
        self.roles
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .filter_map(|(i, _)| u16::try_from(i).ok().map(RoleId))
    }
}
