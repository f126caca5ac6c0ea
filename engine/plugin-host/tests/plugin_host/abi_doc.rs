//! `sdk/ABI.md` is accurate: its minimal WAT plugin loads and answers as documented.

use crate::common::runtime;
use keyway_sdk::Hook;
use keyway_sdk::testing::door_input;
use keyway_sdk::{Config, DoorRuleOutput};

const ABI_MD: &str = include_str!("../../../../sdk/ABI.md");

#[test]
fn abi_md_example_plugin_works() {
    let start = ABI_MD.find("```wat\n").unwrap() + "```wat\n".len();
    let end = start + ABI_MD[start..].find("```").unwrap();
    let wasm = wat::parse_str(&ABI_MD[start..end]).unwrap();
    let plugin = runtime()
        .load("abi-md", &wasm, &[Hook::DoorRule], &Config::new())
        .unwrap();
    // Many calls: the example's allocator must hold up.
    for _ in 0..2000 {
        assert_eq!(
            plugin.door_rule(&door_input(1, Some(2))).unwrap(),
            DoorRuleOutput::abstain()
        );
    }
}

const GUIDE: &str = include_str!("../../../../sdk/README.md");

/// The guide's door rule in plain WAT (ABI version 2) loads in the host, answers as the
/// guide says (allow a known person, deny a credential of nobody), in a bundle too.
#[test]
fn guide_wat_rule_works() {
    let start = GUIDE.find("```wat\n").unwrap() + "```wat\n".len();
    let end = start + GUIDE[start..].find("```").unwrap();
    let wasm = wat::parse_str(&GUIDE[start..end]).unwrap();
    let plugin = runtime()
        .load("known-people", &wasm, &[Hook::DoorRule], &Config::new())
        .unwrap();
    assert_eq!(plugin.abi_version(), 2);
    // Doors whose id takes 1 to 5 varint bytes: the rule skips the door's varint.
    for door in [1, 200, 70_000, u32::MAX - 1] {
        for _ in 0..500 {
            assert_eq!(
                plugin.door_rule(&door_input(door, Some(7))).unwrap(),
                DoorRuleOutput::allow(),
                "door {door}"
            );
            assert_eq!(
                plugin.door_rule(&door_input(door, None)).unwrap(),
                DoorRuleOutput::deny("unknown person"),
                "door {door}"
            );
        }
    }
    // In a bundle, through `keyway bundle`'s path: the manifest entry of the guide.
    let sha = keyway_plugin_host::Sha256::of(&wasm);
    let dir = crate::bundle::edited_bundle(|t| {
        format!(
            "{t}\n[plugins.known-people]\nfile = \"known-people.wasm\"\nsha256 = \"{sha}\"\nhooks = [\"door_rule\"]\n"
        )
    });
    std::fs::write(dir.path().join("known-people.wasm"), &wasm).unwrap();
    let bundle = keyway_plugin_host::Bundle::load(&runtime(), dir.path()).unwrap();
    assert!(bundle.rule("known-people").is_some());
}

/// The guide's complete manifest example parses as a manifest (every key it lists is a
/// key the host knows), and one more key is refused with its name.
#[test]
fn guide_manifest_example_parses() {
    let start = GUIDE.find("```toml\n[bundle]\n").unwrap() + "```toml\n".len();
    let end = start + GUIDE[start..].find("```").unwrap();
    let text = &GUIDE[start..end];
    let manifest = keyway_plugin_host::Manifest::parse(text).unwrap();
    assert_eq!(manifest.bundle.name, "vault");
    let entry = &manifest.plugins["vault-rule"];
    assert_eq!(
        (
            entry.hooks.as_slice(),
            entry.config.get("window_s").and_then(toml::Value::as_integer)
        ),
        (&["door_rule".to_owned()][..], Some(20))
    );
    // The upper-case sha256 of the example is accepted (it is that of an empty file).
    let (_, bytes) = entry.verify("vault-rule", |_| Ok(Vec::new())).unwrap();
    assert!(bytes.is_empty());
    let err = keyway_plugin_host::Manifest::parse(&text.replace("abi = 4", "abi = 4\ncolour = 1")).unwrap_err();
    assert!(err.contains("unknown field `colour`"), "{err}");
}
