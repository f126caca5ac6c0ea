//! `keyway bundle check|hash|try|build`, run as an integrator runs them: the real binary
//! on the default bundle, on hostile copies of it (missing files, truncated modules,
//! wrong hashes, unknown manifest keys, bad config), on the committed example of badge
//! events, and on a plugin crate outside the workspace.

use crate::e2e::support::bundle_dir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run printed and how it ended.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn keyway(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A copy of the default bundle, edited: `manifest` rewrites its bundle.toml, `files`
/// its directory (after the manifest is written).
fn hostile_copy(manifest: impl Fn(&str) -> String, files: impl Fn(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bundle_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join("bundle.toml")).unwrap();
    std::fs::write(dir.path().join("bundle.toml"), manifest(&text)).unwrap();
    files(dir.path());
    dir
}

fn sha256_hex(bytes: &[u8]) -> String {
    keyway_plugin_host::Sha256::of(bytes).to_string()
}

/// The `sha256 = "..."` line that follows `file = "<file>"` in the default manifest.
fn pinned(manifest: &str, file: &str) -> String {
    let after = manifest.split(&format!("file = \"{file}\"")).nth(1).unwrap();
    let line = after.lines().find(|l| l.starts_with("sha256")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn check_accepts_the_default_bundle() {
    let run = keyway(&["bundle", "check", path_str(&bundle_dir())]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    for expected in [
        "bundle `default` (abi = 4)",
        "plugin `two-person`: two-person.wasm",
        "ABI version 4, hooks [\"door_rule\", \"door_config\"]",
        "plugin `occupancy`: occupancy.wasm",
        "hooks [\"door_rule\", \"passage\"]",
        "config: `max`; `keyway_configure` accepted them",
        "role table: ",
        "door rules: `anti-passback`, `business-hours`, `occupancy`, `two-person`",
        "ok: bundle `default` loads (7 plugins, 0 warnings)",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
}

/// Each hostile bundle is refused with an error naming what is wrong; `check` lists
/// every problem, not only the first.
#[test]
fn check_refuses_hostile_bundles() {
    let manifest = std::fs::read_to_string(bundle_dir().join("bundle.toml")).unwrap();
    let apb_sha = pinned(&manifest, "anti-passback.wasm");
    let truncated = |dir: &Path| {
        let wasm = std::fs::read(dir.join("anti-passback.wasm")).unwrap();
        let half = &wasm[..wasm.len() / 2];
        std::fs::write(dir.join("anti-passback.wasm"), half).unwrap();
        // The manifest pins the truncated bytes: only the module itself is wrong.
        let text = std::fs::read_to_string(dir.join("bundle.toml")).unwrap();
        std::fs::write(dir.join("bundle.toml"), text.replace(&apb_sha, &sha256_hex(half))).unwrap();
    };
    let same = |t: &str| t.to_owned();
    let nothing = |_: &Path| {};
    // (case, the bundle, what the output must say)
    let cases: Vec<(&str, tempfile::TempDir, Vec<String>)> = vec![
        (
            "manifest missing",
            hostile_copy(same, |d| std::fs::remove_file(d.join("bundle.toml")).unwrap()),
            vec!["cannot read `".into(), "bundle.toml`".into()],
        ),
        (
            "unknown key in [bundle]",
            hostile_copy(|t| t.replace("abi = 4", "abi = 4\ncolour = \"red\""), nothing),
            vec!["invalid manifest".into(), "unknown field `colour`".into()],
        ),
        (
            "unknown key in a plugin entry",
            hostile_copy(
                |t| t.replace("hooks = [\"voucher\"]", "hooks = [\"voucher\"]\nsha512 = \"00\""),
                nothing,
            ),
            vec!["unknown field `sha512`".into()],
        ),
        (
            "wrong hash",
            hostile_copy(|t| t.replace(&apb_sha, &"0".repeat(64)), nothing),
            vec![format!(
                "plugin `anti-passback`: `anti-passback.wasm` has sha256 {apb_sha}, the manifest pins {}",
                "0".repeat(64)
            )],
        ),
        (
            "module missing",
            hostile_copy(same, |d| std::fs::remove_file(d.join("two-person.wasm")).unwrap()),
            vec!["error: cannot read `".into(), "two-person.wasm`".into()],
        ),
        (
            "truncated module",
            hostile_copy(same, truncated),
            vec!["error: plugin `anti-passback`: ".into(), "invalid".into()],
        ),
        (
            "unknown config key",
            hostile_copy(|t| t.replace("window_s = 30", "window = 30"), nothing),
            vec![
                "error: plugin `two-person`: ".into(),
                "unknown config key `window` (known: `window_s`)".into(),
            ],
        ),
        (
            "two problems at once",
            hostile_copy(
                |t| {
                    t.replace(&apb_sha, &"f".repeat(64))
                        .replace("hooks = [\"notify\"]", "hooks = [\"notify\", \"on_tuesdays\"]")
                },
                nothing,
            ),
            vec![
                "error: plugin `anti-passback`: `anti-passback.wasm` has sha256".into(),
                "error: plugin `notify-owner`: unknown hook `on_tuesdays`".into(),
                "2 problem(s)".into(),
            ],
        ),
    ];
    for (case, dir, expected) in cases {
        let run = keyway(&["bundle", "check", path_str(dir.path())]);
        assert!(!run.ok, "{case}: accepted:\n{}", run.stdout);
        let said = format!("{}{}", run.stdout, run.stderr);
        for text in expected {
            assert!(said.contains(&text), "{case}: missing {text:?} in:\n{said}");
        }
    }
    let run = keyway(&["bundle", "check", "no/such/bundle"]);
    assert!(!run.ok);
    assert_eq!(run.stderr.trim(), "error: `no/such/bundle` is not a directory");
}

#[test]
fn hash_prints_the_manifest_lines() {
    let manifest = std::fs::read_to_string(bundle_dir().join("bundle.toml")).unwrap();
    let run = keyway(&["bundle", "hash", path_str(&bundle_dir().join("occupancy.wasm"))]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "[plugins.occupancy]\nfile = \"occupancy.wasm\"\nsha256 = \"{}\"\nhooks = [\"door_rule\", \"passage\", \"door_config\"]\n",
            pinned(&manifest, "occupancy.wasm")
        )
    );
    // A directory: every .wasm in it, each line as the manifest pins it.
    let run = keyway(&["bundle", "hash", path_str(&bundle_dir())]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.matches("[plugins.").count(), 7);
    for line in manifest.lines().filter(|l| l.starts_with("sha256 = ")) {
        assert!(run.stdout.contains(line), "{line} not printed");
    }
    // Not a module, a truncated one, nothing at all.
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(bundle_dir().join("occupancy.wasm")).unwrap();
    std::fs::write(dir.path().join("half.wasm"), &wasm[..wasm.len() / 2]).unwrap();
    std::fs::write(dir.path().join("text.wasm"), "hello").unwrap();
    for (file, expected) in [
        ("half.wasm", "half.wasm`: invalid"),
        ("text.wasm", "not a WebAssembly module"),
        ("none.wasm", "cannot read"),
    ] {
        let run = keyway(&["bundle", "hash", path_str(&dir.path().join(file))]);
        assert!(!run.ok, "{file}");
        assert!(run.stderr.contains(expected), "{file}: {}", run.stderr);
    }
}

/// The committed example: each badge's effect, reason code and who ruled, in order.
#[test]
fn try_runs_the_example_events() {
    let run = keyway(&[
        "bundle",
        "try",
        path_str(&bundle_dir()),
        "--events",
        "sdk/examples/badges.toml",
    ]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('#')).collect();
    // (event, what its line says)
    let expected = [
        (1, "deny   rule_denied (rule `two-person`): denied by rule `two-person`"),
        (
            2,
            "allow  granted (core): granted by `group:1` at any time; allowed by rule `two-person`",
        ),
        (3, "deny   rule_denied (rule `two-person`)"),
        (4, "deny   no_right (core)"),
        (5, "allow  granted (core)"),
        (6, "passage: the door opened"),
        (
            7,
            "deny   rule_denied (rule `anti-passback`): denied by rule `anti-passback`",
        ),
        (8, "allow  granted (core)"),
        (9, "allow  granted (core)"),
        (10, "allow  granted (core)"),
        (11, "passage: the door opened"),
        (12, "allow  granted (core)"),
        (13, "deny   rule_denied (rule `two-person`)"),
        (14, "deny   rule_denied (rule `two-person`)"),
        (15, "allow  granted (core)"),
    ];
    assert_eq!(lines.len(), expected.len(), "{}", run.stdout);
    for ((n, text), line) in expected.iter().zip(&lines) {
        assert!(line.starts_with(&format!("#{n} ")), "{line}");
        assert!(line.contains(text), "event {n}: {text:?} not in {line:?}");
    }
    assert!(
        run.stdout.contains("13 badges: 7 allowed, 6 denied; 2 passages"),
        "{}",
        run.stdout
    );
}

#[test]
fn try_refuses_bad_events_and_runs_a_generated_population() {
    let dir = tempfile::tempdir().unwrap();
    let at = "at = \"2026-11-23T09:00:00+01:00\"";
    // (file, what the error says)
    let cases = [
        (
            format!("[[events]]\n{at}\ndoor = 1\nsmell = 3\n"),
            "unknown field `smell`",
        ),
        (
            "[[events]]\nat = \"yesterday\"\ndoor = 1\n".to_owned(),
            "event 1: `at` = `yesterday`",
        ),
        (
            format!("[[events]]\n{at}\ndoor = 1\ncore = \"maybe\"\n"),
            "core reason `maybe` is not one of",
        ),
        (
            format!("[[events]]\n{at}\ndoor = 1\npassage = \"ajar\"\n"),
            "passage `ajar` is not `opened` or `shut`",
        ),
        (
            "[doors]\n1 = [\"no-such-rule\"]\n".to_owned(),
            "door 1: bundle `default` has no door rule `no-such-rule`",
        ),
        (
            "time_zone = \"Mars/Olympus\"\n".to_owned(),
            "`Mars/Olympus` is not an IANA time zone",
        ),
        (
            format!("[[events]]\n{at}\ndoor = 1\nkind = \"fingerprint\"\n"),
            "kind `fingerprint` is not tag, digital_key or pin",
        ),
        (
            "[doors]\n1 = [\"two-person\"]\n[door_config.1.two-person]\nwindow_s = 0\n".to_owned(),
            "door 1: the configuration of rule `two-person` for door 1 is refused: plugin error: `window_s` must be 1 to 3600 seconds, found 0",
        ),
        (
            "[doors]\n1 = [\"anti-passback\"]\n[door_config.1.anti-passback]\nx = 1\n".to_owned(),
            "it takes no per-door configuration",
        ),
        (
            "[doors]\n1 = [\"two-person\"]\n[door_config.1.occupancy]\nmax = 1\n".to_owned(),
            "`[door_config.1.occupancy]`: door 1's chain has no rule `occupancy`",
        ),
        (
            "[door_config.2.occupancy]\nmax = 1\n".to_owned(),
            "`[door_config.2]`: `[doors]` gives door `2` no chain",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let run = keyway(&["bundle", "try", path_str(&bundle_dir()), "--events", path_str(&file)]);
        assert!(!run.ok, "case {i} accepted");
        assert!(
            run.stderr.contains(expected),
            "case {i}: {expected:?} not in {}",
            run.stderr
        );
    }
    let run = keyway(&[
        "bundle",
        "try",
        path_str(&bundle_dir()),
        "--generate",
        "--rule",
        "anti-passback",
        "--rule",
        "occupancy:safe",
        "--requests",
        "12",
    ]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with('#')).count(),
        12,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("every door runs: anti-passback, occupancy:safe"));
    assert!(run.stdout.contains("12 badges: "));
}

/// A plugin crate outside the workspace, with no dependency, built twice in two target
/// directories: the same bytes, whose manifest entry `build` prints and `check` accepts
/// in a bundle.
#[test]
fn build_is_reproducible_outside_the_workspace() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-unknown-unknown")
        })
        .unwrap_or(false);
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the wasm32-unknown-unknown target (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: build_is_reproducible_outside_the_workspace needs `rustup target add wasm32-unknown-unknown`"
        );
        return;
    }
    let krate = tempfile::tempdir().unwrap();
    std::fs::create_dir(krate.path().join("src")).unwrap();
    std::fs::write(
        krate.path().join("Cargo.toml"),
        "[package]\nname = \"tiny-rule\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
    )
    .unwrap();
    // Pinned as the guide says, to the toolchain this repository uses.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rust-toolchain.toml"),
        krate.path().join("rust-toolchain.toml"),
    )
    .unwrap();
    // ABI version 1 in plain Rust, no SDK: a door rule that always abstains.
    std::fs::write(
        krate.path().join("src/lib.rs"),
        r#"
static OK: [u8; 1] = [0];
static ABSTAIN: [u8; 3] = [0, 2, 0];
#[unsafe(no_mangle)]
pub extern "C" fn keyway_abi_version() -> i32 { 1 }
#[unsafe(no_mangle)]
pub extern "C" fn keyway_alloc(len: i32) -> i32 {
    Box::leak(vec![0u8; len.max(1) as usize].into_boxed_slice()).as_mut_ptr() as i32
}
#[unsafe(no_mangle)]
pub extern "C" fn keyway_dealloc(_ptr: i32, _len: i32) {}
#[unsafe(no_mangle)]
pub extern "C" fn keyway_configure(_ptr: i32, _len: i32) -> i64 { ((OK.as_ptr() as i64) << 32) | 1 }
#[unsafe(no_mangle)]
pub extern "C" fn keyway_door_rule(_ptr: i32, _len: i32) -> i64 { ((ABSTAIN.as_ptr() as i64) << 32) | 3 }
"#,
    )
    .unwrap();
    let bundle = hostile_copy(|t| t.to_owned(), |_| {});
    let mut built: Vec<(PathBuf, String)> = Vec::new();
    for target in ["one", "two"] {
        let target_dir = krate.path().join(format!("target-{target}"));
        let run = keyway(&[
            "bundle",
            "build",
            path_str(krate.path()),
            "--target-dir",
            path_str(&target_dir),
            "--out",
            path_str(bundle.path()),
        ]);
        assert!(run.ok, "{}{}", run.stdout, run.stderr);
        let wasm = bundle.path().join("tiny_rule.wasm");
        assert!(
            run.stdout.contains(&format!("built {}", wasm.display())),
            "{}",
            run.stdout
        );
        built.push((wasm.clone(), run.stdout.clone()));
        let bytes = std::fs::read(&wasm).unwrap();
        assert!(
            run.stdout.contains(&format!(
                "[plugins.tiny-rule]\nfile = \"tiny_rule.wasm\"\nsha256 = \"{}\"\nhooks = [\"door_rule\"]\n",
                sha256_hex(&bytes)
            )),
            "{}",
            run.stdout
        );
        // No path of this machine in the bytes.
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(path_str(krate.path())),
            "the crate's path leaked into the .wasm"
        );
    }
    assert_eq!(built[0].1, built[1].1, "two builds, two different results");
    // The entry `build` printed goes into the manifest as is, and the bundle loads.
    let entry = built[0].1.split_once('\n').unwrap().1;
    let manifest = std::fs::read_to_string(bundle.path().join("bundle.toml")).unwrap();
    std::fs::write(bundle.path().join("bundle.toml"), format!("{manifest}\n{entry}")).unwrap();
    let run = keyway(&["bundle", "check", path_str(bundle.path())]);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("plugin `tiny-rule`: tiny_rule.wasm"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("door rules: `anti-passback`, `business-hours`, `occupancy`, `tiny-rule`, `two-person`")
    );

    let run = keyway(&["bundle", "build", path_str(bundle.path())]);
    assert!(!run.ok);
    assert!(run.stderr.contains("has no Cargo.toml"), "{}", run.stderr);
}
