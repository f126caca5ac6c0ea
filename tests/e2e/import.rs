//! `keyway import` against the real process: the documented example file imports as the
//! guide says, a dry run writes nothing, running the file again changes nothing, a refused
//! row gives exit status 2 with its reason in the report, rows too big for one request
//! are sent in several, and a file with an unknown column stops before anything is sent.

use super::support::*;
use serde_json::json;
use std::path::Path;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/import-example.csv")
}

/// Runs `keyway import FILE --site SITE EXTRA...`: (exit code, report, summary).
fn import(server: &Server, owner: &Admin, site: u64, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["import", "--site", &site.to_string()])
        .arg(file)
        .args(extra)
        .env("KEYWAY_URL", &server.url)
        .env("KEYWAY_TOKEN", &owner.token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The outcome column of a report, in row order.
fn outcomes(report: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_reader(report.as_bytes());
    reader
        .records()
        .map(|r| r.unwrap().get(2).unwrap().to_owned())
        .collect()
}

#[test]
fn keyway_import_reads_the_example_file_once() {
    let server = Server::start(&[]);
    let (owner, site) = owner_with_voucher(&server, 10);
    let door = owner.ok(
        "POST",
        &format!("/v1/sites/{site}/doors"),
        Some(json!({"name": "Front"})),
    )["door"]["id"]
        .clone();
    for group in ["Staff", "Lab"] {
        owner.ok(
            "POST",
            &format!("/v1/sites/{site}/groups"),
            Some(json!({"name": group, "doors": [door]})),
        );
    }
    let people = |owner: &Admin| owner.ok("GET", &format!("/v1/sites/{site}/people"), None)["items"].clone();

    let (code, report, summary) = import(&server, &owner, site, &example(), &["--dry-run"]);
    assert_eq!(code, 0, "{summary}\n{report}");
    assert_eq!(outcomes(&report), ["created"; 4], "{report}");
    assert!(summary.contains("dry run, nothing written: 4 created"), "{summary}");
    assert_eq!(people(&owner), json!([]));

    let (code, report, summary) = import(&server, &owner, site, &example(), &[]);
    assert_eq!(code, 0, "{summary}\n{report}");
    assert_eq!(outcomes(&report), ["created"; 4], "{report}");
    let names: Vec<String> = people(&owner)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "Ada Lovelace",
            "Charles Babbage",
            "Grace Hopper",
            "Hopper, Grace (visitor)"
        ]
    );
    // Grace's tag opens the door of her groups.
    let v = owner.ok(
        "POST",
        "/v1/decide",
        Some(json!({"site": site, "door": door, "credential": {"kind": "tag", "value": "04c0ffee"}})),
    );
    assert_eq!(v["effect"], "allow", "{v}");

    let (code, report, summary) = import(&server, &owner, site, &example(), &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(outcomes(&report), ["skipped"; 4], "{report}");
    assert_eq!(people(&owner).as_array().unwrap().len(), 4);

    // A refused row: exit status 2, the reason in the report, the good row imported.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("more.csv");
    std::fs::write(
        &file,
        "name,external_id,groups\nLin,E-2001,Staff\nMo,E-2002,Kitchen\nNed,E-2003,Staff,extra\n",
    )
    .unwrap();
    let (code, report, summary) = import(&server, &owner, site, &file, &[]);
    assert_eq!(code, 2, "{summary}\n{report}");
    assert_eq!(outcomes(&report), ["created", "refused", "refused"], "{report}");
    assert!(report.contains("the site has no group named `Kitchen`"), "{report}");
    assert!(report.contains("the row has 4 fields, the header 3"), "{report}");
    assert!(
        summary.contains("1 created, 0 updated, 0 skipped, 2 refused"),
        "{summary}"
    );

    // Rows long enough that 300 of them pass the server's 1 MiB body limit: the command
    // splits the batch by size, and each row is judged (refused: no such groups).
    let long_groups = vec!["g".repeat(190); 32].join(";");
    let mut big = String::from("external_id,name,groups\n");
    for i in 0..300 {
        big.push_str(&format!("L-{i},{},{long_groups}\n", "n".repeat(200)));
    }
    std::fs::write(&file, big).unwrap();
    let (code, report, summary) = import(&server, &owner, site, &file, &[]);
    assert_eq!(code, 2, "{summary}");
    assert_eq!(outcomes(&report), vec!["refused"; 300]);
    assert!(
        summary.contains("0 created, 0 updated, 0 skipped, 300 refused"),
        "{summary}"
    );

    // An unknown column: nothing sent.
    std::fs::write(&file, "external_id,name,badge\nE-3001,Oz,1\n").unwrap();
    let (code, _, summary) = import(&server, &owner, site, &file, &[]);
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains("unknown column `badge`"), "{summary}");
    assert_eq!(people(&owner).as_array().unwrap().len(), 5);
    let (status, _) = server.terminate();
    assert!(status.success());
}
