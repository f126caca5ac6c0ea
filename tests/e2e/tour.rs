//! The README's five-minute tour, run as written (with `curl` and `jq`) against the real
//! server: only the server's address and the command that runs `keyway` are substituted.

use super::support::*;
use std::process::Command;

fn tour_script(url: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- tour:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- tour:end -->").next())
        .expect("README has a tour block");
    let body = block.trim().trim_start_matches("```sh").trim_end_matches("```");
    assert!(body.contains("KW=http://127.0.0.1:8080"), "the tour sets KW");
    format!(
        "set -euo pipefail\n{}",
        body.replace("KW=http://127.0.0.1:8080", &format!("KW={url}"))
            .replace("cargo run --release --", env!("CARGO_BIN_EXE_keyway"))
    )
}

#[test]
fn the_readme_tour_works_as_written() {
    if Command::new("jq").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "jq is missing in CI (.ci/run installs it)"
        );
        eprintln!("\n*** SKIPPED: the README tour needs jq, which is not installed ***\n");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("keyway-data");
    let server = Server::start_at(&data, &[]);
    let out = Command::new("bash")
        .arg("-c")
        .arg(tour_script(&server.url))
        .current_dir(work.path())
        .env("KEYWAY_BUNDLE", bundle_dir())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the tour failed:\n{stdout}\n{stderr}");
    for expected in [
        "operator op@example.org created (account 1)",
        "a password needs an uppercase letter",
        "\"role_name\":\"site_admin\"",
        "\"effect\":\"allow\",\"reason\":\"granted\"",
        "\"effect\":\"deny\",\"reason\":\"outside_schedule\"",
        "\"allowed\":false,\"reason\":\"outside_schedule\"",
    ] {
        let found = stdout.contains(expected) || stdout.replace(" ", "").contains(&expected.replace(" ", ""));
        assert!(found, "the tour did not print `{expected}`:\n{stdout}");
    }
    let entries = stdout.matches("{\"at\":").count();
    assert_eq!(entries, 2, "two entries in the log:\n{stdout}");
    drop(server);
}
