//! Doors in operation and the entries log against the real process: a remote opening of
//! a door no IQ carries is logged and reported as not delivered, the CSV export streams
//! every entry, and the live stream (Server-Sent Events) delivers new entries and
//! resumes from `Last-Event-ID` after a reconnect.

use super::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

const PASSWORD: &str = "Correct-Horse-1";

struct Owner {
    url: String,
    http: reqwest::blocking::Client,
    token: String,
    site: u64,
}

impl Owner {
    fn sign_up(url: &str) -> Owner {
        let http = client();
        let account = json!({"email": "owner@example.com", "password": PASSWORD});
        let r = http.post(format!("{url}/v1/accounts")).json(&account).send().unwrap();
        assert_eq!(r.status(), 201);
        let r = http.post(format!("{url}/v1/sessions")).json(&account).send().unwrap();
        assert_eq!(r.status(), 201);
        let token = r.json::<Value>().unwrap()["token"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{url}/v1/sites"))
            .bearer_auth(&token)
            .json(&json!({"name": "HQ", "time_zone": "Europe/Madrid"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        let site = r.json::<Value>().unwrap()["site"]["id"].as_u64().unwrap();
        Owner {
            url: url.to_owned(),
            http,
            token,
            site,
        }
    }

    fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.post(format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn decide(&self, door: u64, tag: &str) {
        let (status, v) = self.post(
            "/v1/decide",
            Some(json!({"site": self.site, "door": door, "credential": {"kind": "tag", "value": tag}})),
        );
        assert_eq!(status, 200, "{v}");
    }

    /// Open the live stream with `last_event_id`; its lines arrive on the channel.
    fn stream(&self, query: &str, last_event_id: &str) -> mpsc::Receiver<String> {
        let response = self
            .http
            .get(format!("{}/v1/sites/{}/events{query}", self.url, self.site))
            .bearer_auth(&self.token)
            .header("last-event-id", last_event_id)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(response).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// The ids of the next `n` `entry` events read from `lines`.
fn next_entries(lines: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut event = String::new();
    while ids.len() < n {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no event within 10 s; got {ids:?}"));
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(id) = line.strip_prefix("id: ")
            && event == "entry"
        {
            ids.push(id.to_owned());
        }
    }
    ids
}

#[test]
fn remote_open_csv_export_and_live_stream() {
    let server = Server::start(&[]);
    let owner = Owner::sign_up(&server.url);
    let site = owner.site;
    let (status, v) = owner.post(&format!("/v1/sites/{site}/doors"), Some(json!({"name": "Front"})));
    assert_eq!(status, 201, "{v}");
    let door = v["door"]["id"].as_u64().unwrap();

    // The link runs in this process, but no IQ carries the door: not delivered, logged.
    let (status, v) = owner.post(&format!("/v1/sites/{site}/doors/{door}/remote-open"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("IQ"), "{v}");

    for tag in ["01020304", "05060708", "090a0b0c"] {
        owner.decide(door, tag);
    }

    // The live stream from the start of the log: the four entries so far, then a new one.
    let lines = owner.stream("", "0.0");
    let first = next_entries(&lines, 4);
    owner.decide(door, "0d0e0f10");
    let fifth = next_entries(&lines, 1);
    assert!(fifth[0] > first[3], "{first:?} then {fifth:?}");
    drop(lines);
    // Reconnecting after the fourth gives the fifth (and nothing else) again.
    let again = owner.stream("?follow=false", &first[3]);
    let resumed: Vec<String> = again.iter().collect();
    let ids: Vec<&str> = resumed.iter().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids, [fifth[0].as_str()], "{resumed:#?}");

    // The CSV export: a header and five entries, the remote opening among them.
    let r = owner
        .http
        .get(format!("{}/v1/sites/{site}/entries/export", owner.url))
        .bearer_auth(&owner.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = r.text().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6, "{csv}");
    assert!(lines[0].starts_with("id,site,at,door"), "{csv}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",remote,refused,remote_open_not_delivered,")),
        "{csv}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("unknown_credential")).count(),
        4,
        "{csv}"
    );

    let (status, printed) = server.terminate();
    assert!(status.success(), "exit {status:?}: {printed:#?}");
}
