//! The server's own behaviour: health, metrics, hardening, configuration errors, and a
//! clean shutdown.

use super::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn health_metrics_and_clean_shutdown() {
    let server = Server::start(&[]);
    let http = client();
    let live = http.get(format!("{}/livez", server.url)).send().unwrap();
    assert_eq!(live.status(), 200);
    let ready = http.get(format!("{}/readyz", server.url)).send().unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http.get(format!("{}/metrics", server.url)).send().unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().unwrap();
    for name in [
        "keyway_revision_applied",
        "keyway_follower_lag",
        "keyway_entries_queue_depth",
        "keyway_entries_committed_total{writer=\"main\"}",
        "keyway_entries_committed_total{writer=\"background\"}",
        "keyway_notification_outbox_depth",
        "keyway_notifications_sent_total{channel=\"webhook\"}",
        "keyway_notification_failures_total{channel=\"email\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // The database and its schema were created in the data directory on first start.
    assert!(server.data().join("keyway.db").is_file());
    let (status, printed) = server.terminate();
    assert!(status.success(), "exit {status:?}: {printed:#?}");
    assert!(
        printed
            .iter()
            .any(|l| l.contains("entries flushed and the database closed")),
        "{printed:#?}"
    );
}

#[test]
fn slow_headers_oversized_bodies_and_no_cors_by_default() {
    let server = Server::start(&["--header-timeout-secs", "1", "--max-body-bytes", "1024"]);
    let addr = server.url.trim_start_matches("http://").to_owned();

    // A client that never finishes its headers is cut off after the header timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the slow client was held {:?}",
        started.elapsed()
    );

    let http = client();
    // A body over the limit is refused before it is read whole.
    let big = http
        .post(format!("{}/v1/sites", server.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .unwrap();
    assert_eq!(big.status(), 413);
    // No CORS headers unless origins are configured.
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/livez", server.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
    // The server is still up.
    assert_eq!(http.get(format!("{}/livez", server.url)).send().unwrap().status(), 200);
}

#[test]
fn cors_only_for_configured_origins() {
    let server = Server::start(&["--cors-origins", "https://admin.example"]);
    let http = client();
    let allowed = http
        .get(format!("{}/livez", server.url))
        .header("origin", "https://admin.example")
        .send()
        .unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("https://admin.example".to_owned())
    );
    let other = http
        .get(format!("{}/livez", server.url))
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn bad_configuration_fails_at_start_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["--database-url", "mysql://x"], "--database-url must start with"),
        (&["--bundle", "/nonexistent/bundle"], "no policy bundle at"),
        (&["--max-body-bytes", "lots"], "invalid value"),
        (&["--max-connections", "0"], "invalid value"),
    ];
    for (args, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--link-control-addr", "127.0.0.1:0", "--link-bulk-addr", "127.0.0.1:0"])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
