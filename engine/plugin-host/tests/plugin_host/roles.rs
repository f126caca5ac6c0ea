//! The standard role table drives capability checks; malformed tables are refused.

use crate::common::{default_bundle, runtime};
use keyway_core::RoleId;
use keyway_plugin_host::{Capability, RoleTable, RoleTableError};
use keyway_sdk::{RoleDef, RoleTableDef};

const OWNER: RoleId = RoleId(0);
const ADMIN: RoleId = RoleId(1);
const SUPER: RoleId = RoleId(2);
const BASIC: RoleId = RoleId(3);
const UNKNOWN: RoleId = RoleId(9);

#[test]
fn standard_capabilities() {
    let bundle = default_bundle(&runtime());
    let t = bundle.roles();
    // (role, capability, expected): the FAQ, line by line.
    let cases = [
        (OWNER, Capability::SITE_TRANSFER_OWNERSHIP, true),
        (ADMIN, Capability::SITE_TRANSFER_OWNERSHIP, false),
        (SUPER, Capability::SITE_TRANSFER_OWNERSHIP, false),
        (BASIC, Capability::SITE_TRANSFER_OWNERSHIP, false),
        (OWNER, Capability::IQ_RESET, true),
        (ADMIN, Capability::IQ_RESET, false),
        (ADMIN, Capability::IQ_RESET_PIN, true),
        (SUPER, Capability::IQ_RESET_PIN, false),
        (BASIC, Capability::ENTRIES_READ_ALL, false),
        (BASIC, Capability::ENTRIES_READ_OWN, true),
        (SUPER, Capability::ENTRIES_READ_ALL, true),
        (ADMIN, Capability::ENTRIES_READ_ALL, true),
        (SUPER, Capability::RIGHTS_GRANT, true),
        (BASIC, Capability::RIGHTS_GRANT, false),
        (OWNER, Capability::NOTIFICATIONS_CONFIGURE, true),
        (UNKNOWN, Capability::ENTRIES_READ_OWN, false),
    ];
    for (role, cap, expected) in cases {
        assert_eq!(t.can(role, cap), expected, "{role} {:?}", t.capability_name(cap));
    }
    assert_eq!(t.capability("iq.reset_pin"), Some(Capability::IQ_RESET_PIN));
    assert_eq!(t.capability("no.such"), None);
}

#[test]
fn standard_grants_and_transfers() {
    let bundle = default_bundle(&runtime());
    let t = bundle.roles();
    // (actor, target, may grant)
    let grants = [
        (SUPER, SUPER, true),
        (SUPER, BASIC, true),
        (SUPER, ADMIN, false),
        (SUPER, OWNER, false),
        (BASIC, BASIC, false),
        (ADMIN, SUPER, true),
        (OWNER, ADMIN, true),
        (OWNER, OWNER, false),
        (UNKNOWN, BASIC, false),
    ];
    for (actor, target, expected) in grants {
        assert_eq!(t.may_grant(actor, target), expected, "{actor} grants {target}");
        assert_eq!(t.may_revoke(actor, target), expected, "{actor} revokes {target}");
    }
    // Only the owner transfers ownership, and only to a site admin.
    for actor in [OWNER, ADMIN, SUPER, BASIC] {
        for target in [OWNER, ADMIN, SUPER, BASIC] {
            assert_eq!(
                t.may_transfer_ownership(actor, target),
                actor == OWNER && target == ADMIN,
                "{actor} -> {target}"
            );
        }
    }
    assert_eq!(t.max_holders(SUPER), None, "super users are unlimited");
    assert_eq!(t.max_holders(OWNER), Some(1));
    assert_eq!(t.lockdown_exempt_roles(), vec![OWNER, ADMIN]);
    assert_eq!(t.role_flags().lockdown_exempt, vec![OWNER, ADMIN]);
    assert_eq!(
        (t.rank(ADMIN), t.name(ADMIN), t.by_name("super_user")),
        (Some(30), Some("site_admin"), Some(SUPER))
    );
}

fn role(id: u16, name: &str) -> RoleDef {
    RoleDef {
        id,
        name: name.into(),
        ..RoleDef::default()
    }
}

#[test]
fn malformed_tables() {
    let with = |f: fn(&mut RoleDef)| {
        let mut r = role(1, "a");
        f(&mut r);
        RoleTableDef { roles: vec![r] }
    };
    let cases: Vec<(RoleTableDef, RoleTableError)> = vec![
        (RoleTableDef::default(), RoleTableError::Empty),
        (
            RoleTableDef {
                roles: vec![role(1, "admin\u{202e}nimda")],
            },
            RoleTableError::BadName {
                name: "admin\\u{202e}nimda".into(),
            },
        ),
        (
            RoleTableDef {
                roles: vec![role(1, "")],
            },
            RoleTableError::BadName { name: String::new() },
        ),
        (
            RoleTableDef {
                roles: vec![role(64, "big")],
            },
            RoleTableError::IdTooLarge {
                name: "big".into(),
                id: 64,
            },
        ),
        (
            RoleTableDef {
                roles: vec![role(1, "a"), role(1, "b")],
            },
            RoleTableError::DuplicateId { id: 1 },
        ),
        (
            RoleTableDef {
                roles: vec![role(1, "a"), role(2, "a")],
            },
            RoleTableError::DuplicateName { name: "a".into() },
        ),
        (
            with(|r| r.may_grant = vec![5]),
            RoleTableError::UnknownRole {
                role: "a".into(),
                field: "may_grant",
                id: 5,
            },
        ),
        (
            with(|r| r.capabilities = vec!["People.Invite".into()]),
            RoleTableError::BadCapability {
                role: "a".into(),
                name: "People.Invite".into(),
            },
        ),
        (
            with(|r| r.capabilities = (0..60).map(|i| format!("custom.c{i}")).collect()),
            RoleTableError::TooManyCapabilities {
                name: "custom.c53".into(),
            },
        ),
    ];
    for (def, expected) in cases {
        assert_eq!(RoleTable::compile(&def).unwrap_err(), expected);
    }
    let custom = with(|r| r.capabilities = vec!["custom.open_gate".into()]);
    let t = RoleTable::compile(&custom).unwrap();
    let cap = t.capability("custom.open_gate").unwrap();
    assert_eq!(cap.bit(), 11);
    assert!(t.can(RoleId(1), cap));
    assert!(!t.can(RoleId(1), Capability::PEOPLE_INVITE));
}
