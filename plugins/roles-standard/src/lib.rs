//! The standard role table, as the site-operator FAQ describes it.
//!
//! | id | role        | rank | notes |
//! |----|-------------|------|-------|
//! | 0  | owner       | 40   | one per site; transfers ownership, only to a site admin; resets IQs |
//! | 1  | site_admin  | 30   | resets a person's PIN for an IQ; sees all entries |
//! | 2  | super_user  | 20   | grants rights to super users and basic users; unlimited in number |
//! | 3  | basic_user  | 10   | sees only their own entries |
//!
//! The owner and site admins are lockdown-exempt, so they still pass doors in lockdown.

use keyway_sdk::capabilities::{
    DOOR_LOCKDOWN, DOOR_REMOTE_OPEN, ENTRIES_READ_ALL, ENTRIES_READ_OWN, IQ_RESET, IQ_RESET_PIN,
    NOTIFICATIONS_CONFIGURE, PEOPLE_BLOCK, PEOPLE_INVITE, RIGHTS_GRANT, SITE_TRANSFER_OWNERSHIP,
};
use keyway_sdk::{Config, HookResult, Plugin, RoleDef, RoleTableDef};

/// The owner's role id.
pub const OWNER: u16 = 0;
/// The site admin's role id.
pub const SITE_ADMIN: u16 = 1;
/// The super user's role id.
pub const SUPER_USER: u16 = 2;
/// The basic user's role id.
pub const BASIC_USER: u16 = 3;

/// The plugin. It takes no config.
#[derive(Debug)]
pub struct RolesStandard;

impl Plugin for RolesStandard {
    fn configure(config: &Config) -> HookResult<Self> {
        match config.values.keys().next() {
            Some(key) => Err(format!("roles-standard takes no config, found `{key}`")),
            None => Ok(RolesStandard),
        }
    }

    fn roles(&self) -> HookResult<RoleTableDef> {
        Ok(table())
    }
}

keyway_sdk::export_plugin!(RolesStandard, roles);

fn caps(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The standard table.
#[must_use]
pub fn table() -> RoleTableDef {
    let staff = [
        PEOPLE_INVITE,
        PEOPLE_BLOCK,
        RIGHTS_GRANT,
        ENTRIES_READ_ALL,
        ENTRIES_READ_OWN,
        IQ_RESET_PIN,
        DOOR_REMOTE_OPEN,
        DOOR_LOCKDOWN,
    ];
    let mut owner = staff.to_vec();
    owner.extend([SITE_TRANSFER_OWNERSHIP, IQ_RESET, NOTIFICATIONS_CONFIGURE]);
    RoleTableDef {
        roles: vec![
            RoleDef {
                id: OWNER,
                name: "owner".into(),
                rank: 40,
                capabilities: caps(&owner),
                may_grant: vec![SITE_ADMIN, SUPER_USER, BASIC_USER],
                may_revoke: vec![SITE_ADMIN, SUPER_USER, BASIC_USER],
                transfer_ownership_to: vec![SITE_ADMIN],
                lockdown_exempt: true,
                max_holders: Some(1),
            },
            RoleDef {
                id: SITE_ADMIN,
                name: "site_admin".into(),
                rank: 30,
                capabilities: caps(&staff),
                may_grant: vec![SITE_ADMIN, SUPER_USER, BASIC_USER],
                may_revoke: vec![SITE_ADMIN, SUPER_USER, BASIC_USER],
                transfer_ownership_to: vec![],
                lockdown_exempt: true,
                max_holders: None,
            },
            RoleDef {
                id: SUPER_USER,
                name: "super_user".into(),
                rank: 20,
                capabilities: caps(&[RIGHTS_GRANT, ENTRIES_READ_ALL, ENTRIES_READ_OWN]),
                may_grant: vec![SUPER_USER, BASIC_USER],
                may_revoke: vec![SUPER_USER, BASIC_USER],
                transfer_ownership_to: vec![],
                lockdown_exempt: false,
                max_holders: None,
            },
            RoleDef {
                id: BASIC_USER,
                name: "basic_user".into(),
                rank: 10,
                capabilities: caps(&[ENTRIES_READ_OWN]),
                may_grant: vec![],
                may_revoke: vec![],
                transfer_ownership_to: vec![],
                lockdown_exempt: false,
                max_holders: None,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::testing::Harness;

    fn role(t: &RoleTableDef, id: u16) -> &RoleDef {
        t.roles.iter().find(|r| r.id == id).unwrap()
    }

    #[test]
    fn faq_rules_hold() {
        let t = Harness::<RolesStandard>::new(Config::new()).unwrap().roles().unwrap();
        let has = |id, cap: &str| role(&t, id).capabilities.iter().any(|c| c == cap);
        // (role, capability, expected)
        let cases = [
            (OWNER, SITE_TRANSFER_OWNERSHIP, true),
            (SITE_ADMIN, SITE_TRANSFER_OWNERSHIP, false),
            (SUPER_USER, SITE_TRANSFER_OWNERSHIP, false),
            (OWNER, IQ_RESET, true),
            (SITE_ADMIN, IQ_RESET, false),
            (SITE_ADMIN, IQ_RESET_PIN, true),
            (SUPER_USER, IQ_RESET_PIN, false),
            (BASIC_USER, ENTRIES_READ_ALL, false),
            (BASIC_USER, ENTRIES_READ_OWN, true),
            (SUPER_USER, ENTRIES_READ_ALL, true),
            (SITE_ADMIN, ENTRIES_READ_ALL, true),
            (SUPER_USER, RIGHTS_GRANT, true),
            (BASIC_USER, RIGHTS_GRANT, false),
        ];
        for (id, cap, expected) in cases {
            assert_eq!(has(id, cap), expected, "role {id} {cap}");
        }
        assert_eq!(role(&t, SUPER_USER).may_grant, vec![SUPER_USER, BASIC_USER]);
        assert_eq!(role(&t, SUPER_USER).max_holders, None, "super users are unlimited");
        assert_eq!(role(&t, OWNER).max_holders, Some(1));
        assert_eq!(role(&t, OWNER).transfer_ownership_to, vec![SITE_ADMIN]);
        let exempt: Vec<u16> = t.roles.iter().filter(|r| r.lockdown_exempt).map(|r| r.id).collect();
        assert_eq!(exempt, vec![OWNER, SITE_ADMIN]);
    }

    #[test]
    fn rejects_config() {
        let err = Harness::<RolesStandard>::new(Config::new().with("x", 1)).unwrap_err();
        assert_eq!(err, "roles-standard takes no config, found `x`");
    }
}
