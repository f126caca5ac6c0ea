//! Bundles: the default bundle loads and answers; every broken bundle is refused with a
//! reason; compiled modules are cached.

use crate::common::{default_bundle, default_dir, runtime, wat_plugin};
use keyway_plugin_host::{Bundle, Limits, Runtime};
use keyway_sdk::{
    Channel, Counted, Counts, Event, EventKind, IssuedVoucher, NotificationSettings, NotifyInput, Recipient,
    VoucherInput, VoucherTerms, VoucherVerdict,
};
use std::path::Path;
use std::sync::Arc;

/// A copy of the default bundle in a temp dir, with `edit` applied to its manifest.
pub fn edited_bundle(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(default_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let manifest = dir.path().join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, edit(text)).unwrap();
    dir
}

#[test]
fn default_bundle_answers() {
    let bundle = default_bundle(&runtime());
    assert_eq!(bundle.name(), "default");
    let names: Vec<&str> = bundle.plugins().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "anti-passback",
            "business-hours",
            "notify-owner",
            "occupancy",
            "roles-standard",
            "two-person",
            "voucher-standard"
        ]
    );
    assert!(bundle.rule("anti-passback").is_some() && bundle.rule("business-hours").is_some());

    let voucher = |tier: &str, people: u32, delta: i32| VoucherInput {
        voucher: VoucherTerms {
            tier: tier.into(),
            valid_until: None,
        },
        counts: Counts {
            people,
            app_users: 0,
            doors: 0,
            iqs: 0,
        },
        change: Counted::People,
        delta,
        at_unix: 1_800_000_000,
        issued: None,
    };
    let cases = [
        (voucher("starter", 49, 1), VoucherVerdict::Allow),
        (
            voucher("starter", 50, 1),
            VoucherVerdict::Deny {
                message: "the site is full: the `starter` voucher allows 50 users and the site has 50; \
                          remove some or upgrade the voucher"
                    .into(),
            },
        ),
        (voucher("starter", 50, -1), VoucherVerdict::Allow),
        (voucher("enterprise", 1_000_000, 1), VoucherVerdict::Allow),
    ];
    for (input, expected) in cases {
        assert_eq!(bundle.voucher(&input).unwrap(), expected, "{input:?}");
    }
    // ABI version 3: a voucher's own caps reach the plugin, behind the older fields.
    let mut issued = voucher("", 10, 1);
    issued.issued = Some(IssuedVoucher {
        code: "X-1".into(),
        max_users: 10,
        max_app_users: 0,
    });
    assert_eq!(
        bundle.voucher(&issued).unwrap(),
        VoucherVerdict::Deny {
            message: "the site is full: voucher `X-1` allows 10 users (`max_users`) and the site has 10; \
                      remove some or redeem a larger voucher"
                .into()
        }
    );
    issued.counts.people = 9;
    assert_eq!(bundle.voucher(&issued).unwrap(), VoucherVerdict::Allow);

    let notify = |kind| NotifyInput {
        event: Event {
            kind,
            at_unix: 1_800_000_000,
            door: Some((1, "Front".into())),
            person: None,
            detail: String::new(),
        },
        settings: NotificationSettings {
            site_name: "HQ".into(),
            owner: Recipient {
                person: 1,
                address: "owner@example.com".into(),
            },
            channel: Channel::Push,
            enabled: vec![EventKind::DoorForced],
        },
    };
    let out = bundle.notify(&notify(EventKind::DoorForced)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].recipient.person, out[0].subject.as_str()),
        (1, "HQ: door forced open at Front")
    );
    assert!(bundle.notify(&notify(EventKind::EntryGranted)).unwrap().is_empty());
    // Tamper is ABI version 3's; the standard notify plugin speaks it.
    let mut tamper = notify(EventKind::Tamper);
    tamper.settings.enabled.push(EventKind::Tamper);
    assert!(bundle.notifies(EventKind::Tamper));
    let out = bundle.notify(&tamper).unwrap();
    assert_eq!(
        out.iter().map(|n| n.subject.as_str()).collect::<Vec<_>>(),
        ["HQ: tamper alarm at Front"]
    );

    // Inputs and outputs on both sides of the SDK's 1 KiB scratch buffers, interleaved on
    // the same instances: each answer carries its own detail, whichever way it travelled.
    for (i, len) in [0, 900, 1100, 5000, 10, 1000, 1030, 0, 20_000, 3]
        .into_iter()
        .enumerate()
    {
        let mut input = notify(EventKind::DoorForced);
        input.event.detail = char::from(b'a' + u8::try_from(i).unwrap()).to_string().repeat(len);
        let out = bundle.notify(&input).unwrap();
        let tail = if len == 0 {
            "(unix time 1800000000)".to_owned()
        } else {
            format!("(unix time 1800000000): {}", input.event.detail)
        };
        assert!(out[0].body.ends_with(&tail), "detail of {len} bytes");
    }
}

/// An edit of a manifest's text.
type Edit = Box<dyn FnOnce(String) -> String>;

fn load(dir: &Path) -> String {
    Bundle::load(&runtime(), dir).unwrap_err().to_string()
}

#[test]
fn broken_bundles_are_refused() {
    let zeros = "0".repeat(64);
    // (case, manifest edit, expected error, a prefix when the tail varies)
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "tampered hash",
            Box::new(|t: String| {
                let start = t.find("sha256 = \"").unwrap() + 10;
                format!("{}{}{}", &t[..start], "0".repeat(64), &t[start + 64..])
            }),
            "plugin `roles-standard`: `roles-standard.wasm` has sha256 ".into(),
        ),
        (
            "a bundle name with a terminal escape",
            Box::new(|t: String| t.replace("name = \"default\"", "name = \"evil\\u001b[2J\"")),
            "bundle name `evil\\u{1b}[2J` must be 1 to 64 printable bytes".into(),
        ),
        (
            "a sha256 that is not hex",
            Box::new(|t: String| {
                let start = t.find("sha256 = \"").unwrap() + 10;
                format!("{}{}{}", &t[..start], "g".repeat(64), &t[start + 64..])
            }),
            format!(
                "plugin `roles-standard`: sha256 `{}` is not 64 hex digits",
                "g".repeat(64)
            ),
        ),
        (
            "missing file",
            Box::new(|t: String| t.replace("file = \"notify-owner.wasm\"", "file = \"gone.wasm\"")),
            "cannot read `".into(),
        ),
        (
            "escaping path",
            Box::new(|t: String| t.replace("file = \"notify-owner.wasm\"", "file = \"../x.wasm\"")),
            "plugin `notify-owner`: file `../x.wasm` must be a printable name inside the bundle directory".into(),
        ),
        (
            "unknown hook",
            Box::new(|t: String| t.replace("hooks = [\"notify\"]", "hooks = [\"notfy\"]")),
            "plugin `notify-owner`: unknown hook `notfy` (known: roles, voucher, notify, door_rule, passage, door_config)".into(),
        ),
        (
            "hook not exported",
            Box::new(|t: String| t.replace("hooks = [\"notify\"]", "hooks = [\"notify\", \"door_rule\"]")),
            "plugin `notify-owner`: hook `door_rule` is not exported (no `keyway_door_rule`)".into(),
        ),
        (
            "no roles plugin",
            Box::new(|t: String| t.replace("hooks = [\"roles\"]", "hooks = []")),
            "bundle `default` has no plugin providing the `roles` hook".into(),
        ),
        (
            "config refused by the plugin",
            Box::new(|t: String| t.replace("open = \"08:00\"", "open = \"8 o'clock\"")),
            "plugin `business-hours`: plugin error: `open` must be a time like `08:30`, found `8 o'clock`".into(),
        ),
        (
            "wrong abi",
            Box::new(|t: String| t.replace("abi = 4", "abi = 5")),
            "bundle `default` targets ABI version 5, this host speaks versions 1, 2, 3, 4".into(),
        ),
        (
            "invalid toml",
            Box::new(|t: String| t.replace("[bundle]", "[bundle")),
            "invalid manifest `".into(),
        ),
        (
            "unknown field",
            Box::new(|t: String| t.replace("abi = 4", "abi = 4\nversion = 3")),
            "invalid manifest `".into(),
        ),
    ];
    for (case, edit, expected) in cases {
        let dir = edited_bundle(edit);
        let err = load(dir.path());
        assert!(err.starts_with(&expected), "{case}: {err}");
        if case == "tampered hash" {
            assert!(err.ends_with(&format!("the manifest pins {zeros}")), "{err}");
        }
    }
}

#[test]
fn corrupted_wasm_is_refused_by_its_hash() {
    let dir = edited_bundle(|t| t);
    let path = dir.path().join("roles-standard.wasm");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert!(load(dir.path()).starts_with("plugin `roles-standard`: `roles-standard.wasm` has sha256 "));
}

#[test]
fn precompiled_cache_survives_a_restart() {
    let cache = tempfile::tempdir().unwrap();
    let first = Arc::new(Runtime::new(Limits::default()).unwrap().with_cache_dir(cache.path()));
    Bundle::load(&first, &default_dir()).unwrap();
    assert_eq!(first.compiled_count(), 7);
    // The same process never compiles a module twice.
    Bundle::load(&first, &default_dir()).unwrap();
    assert_eq!(first.compiled_count(), 7);
    let files = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(files, 7);
    let key = format!("{:016x}.cwasm", first.compatibility_key());
    for f in std::fs::read_dir(cache.path()).unwrap() {
        assert!(f.unwrap().file_name().to_string_lossy().ends_with(&key));
    }
    // A "restarted" process loads them precompiled, and they work.
    let second = Arc::new(Runtime::new(Limits::default()).unwrap().with_cache_dir(cache.path()));
    let bundle = Bundle::load(&second, &default_dir()).unwrap();
    assert_eq!(second.compiled_count(), 0);
    assert!(bundle.roles().lockdown_exempt_roles().len() == 2);
}

/// An upper-case sha256 names the same digest: it is accepted.
#[test]
fn upper_case_sha256_is_accepted() {
    let dir = edited_bundle(|t| {
        let start = t.find("sha256 = \"").unwrap() + 10;
        format!(
            "{}{}{}",
            &t[..start],
            t[start..start + 64].to_uppercase(),
            &t[start + 64..]
        )
    });
    let bundle = Bundle::load(&runtime(), dir.path()).unwrap();
    assert!(bundle.plugin("roles-standard").is_some());
}

/// An event kind a plugin's ABI version does not name is never sent to it: a version 1
/// notify plugin next to the standard one is not asked about tamper, and a bundle whose
/// only notify plugin is of version 1 says it cannot be told of tamper at all.
#[test]
fn event_kinds_reach_only_plugins_whose_abi_names_them() {
    let runtime = runtime();
    // Version 1 (the skeleton's), trapping whenever it is asked anything.
    let old = wat_plugin(r#"(func (export "keyway_notify") (param i32 i32) (result i64) unreachable)"#);
    let sha = keyway_plugin_host::Sha256::of(&old).to_string();
    let input = |kind, enabled: &[EventKind]| NotifyInput {
        event: Event {
            kind,
            at_unix: 1_800_000_000,
            door: None,
            person: None,
            detail: String::new(),
        },
        settings: NotificationSettings {
            site_name: "HQ".into(),
            owner: Recipient {
                person: 1,
                address: "owner@example.com".into(),
            },
            channel: Channel::Email,
            enabled: enabled.to_vec(),
        },
    };

    // Beside the standard plugin.
    let beside = edited_bundle(|t| {
        t + &format!("\n[plugins.old]\nfile = \"old.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"notify\"]\n")
    });
    std::fs::write(beside.path().join("old.wasm"), &old).unwrap();
    let bundle = Bundle::load(&runtime, beside.path()).unwrap();
    assert_eq!(bundle.plugin("old").unwrap().abi_version(), 1);
    let out = bundle.notify(&input(EventKind::Tamper, &[EventKind::Tamper])).unwrap();
    assert_eq!(out.len(), 1, "only the standard plugin answers: {out:?}");
    let err = bundle
        .notify(&input(
            EventKind::DoorForced,
            &[EventKind::DoorForced, EventKind::Tamper],
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("unreachable"),
        "the old plugin is asked of other kinds: {err}"
    );

    // Alone: the notify-owner entry points at the old module instead.
    let owner_sha =
        keyway_plugin_host::Sha256::of(&std::fs::read(default_dir().join("notify-owner.wasm")).unwrap()).to_string();
    let alone = edited_bundle(|t| t.replace(&owner_sha, &sha));
    std::fs::write(alone.path().join("notify-owner.wasm"), &old).unwrap();
    let bundle = Bundle::load(&runtime, alone.path()).unwrap();
    assert!(!bundle.notifies(EventKind::Tamper));
    assert!(bundle.notifies(EventKind::DoorForced));
    assert!(
        bundle
            .notify(&input(EventKind::Tamper, &[EventKind::Tamper]))
            .unwrap()
            .is_empty()
    );
}
