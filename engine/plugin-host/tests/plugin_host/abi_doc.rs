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
