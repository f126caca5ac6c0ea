//! An IQ's life against the real process: an admin registers it over HTTP and hands the
//! installer the enrolment answer; the IQ enrols with it on the link (verifying the
//! server against the CA certificate the answer carries), asks for decisions on the door
//! it was paired with, reports passages that anti-passback counts, fetches firmware the
//! operator uploaded, and shows up online in the API; the code works once; the owner's
//! reset closes its session and refuses its old certificate, and a new code enrols it
//! again.

use super::support::*;
use base64::Engine;
use keyway_core::{CredentialKind, Effect};
use keyway_link::message::DecideItem;
use keyway_link::{IqClient, IqClientConfig, IqCredentials};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const CAROL_TAG: &str = "04a2197c";

/// What an installer takes from the enrolment answer.
pub(super) struct Installer {
    code: String,
    control: SocketAddr,
    bulk: SocketAddr,
    server_name: String,
    ca_der: Vec<u8>,
}

pub(super) fn installer(enrolment: &Value) -> Installer {
    let link = &enrolment["link"];
    let pem = link["ca_certificate_pem"].as_str().unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let port = |key: &str| u16::try_from(link[key].as_u64().unwrap()).unwrap();
    let names: Vec<&str> = link["server_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"localhost"), "{link}");
    Installer {
        code: enrolment["code"].as_str().unwrap().to_owned(),
        control: SocketAddr::from(([127, 0, 0, 1], port("control_port"))),
        bulk: SocketAddr::from(([127, 0, 0, 1], port("bulk_port"))),
        server_name: "localhost".to_owned(),
        ca_der: base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
    }
}

impl Installer {
    pub(super) async fn enrol(&self) -> Result<IqCredentials, keyway_link::ClientError> {
        keyway_link::enrol(self.control, &self.server_name, &self.ca_der, &self.code).await
    }

    pub(super) async fn connect(&self, credentials: IqCredentials) -> Result<IqClient, keyway_link::ClientError> {
        let mut config = IqClientConfig::new(self.control, self.bulk, self.server_name.clone());
        config.firmware = "2.7.0".to_owned();
        IqClient::connect(config, credentials).await
    }
}

pub(super) fn tap(door: u32, tag: &str) -> DecideItem {
    DecideItem {
        door,
        kind: Some(CredentialKind::Tag),
        secret: hex::decode(tag).unwrap(),
        at: jiff::Timestamp::now().as_millisecond(),
        direction: keyway_node::Direction::Unknown,
    }
}

#[test]
fn an_iq_registered_over_http_enrols_decides_and_is_reset() {
    let server = Server::start(&[]);
    let (owner, site) = owner_with_voucher(&server, 10);
    let door = owner.ok(
        "POST",
        &format!("/v1/sites/{site}/doors"),
        Some(json!({"name": "Front"})),
    )["door"]["id"]
        .as_u64()
        .unwrap();
    let carol = owner.ok(
        "POST",
        &format!("/v1/sites/{site}/people"),
        Some(json!({"name": "Carol"})),
    )["person"]["id"]
        .as_u64()
        .unwrap();
    owner.ok(
        "POST",
        &format!("/v1/sites/{site}/credentials"),
        Some(json!({"kind": "tag", "value": CAROL_TAG, "person": carol})),
    );
    owner.ok(
        "POST",
        &format!("/v1/sites/{site}/groups"),
        Some(json!({"name": "Staff", "doors": [door], "members": [carol]})),
    );

    let registered = owner.ok(
        "POST",
        &format!("/v1/sites/{site}/iqs"),
        Some(json!({"name": "Lobby", "model": "IQ2", "serial": "SN-E2E-1"})),
    );
    let iq = registered["iq"]["id"].as_u64().unwrap();
    owner.ok(
        "PUT",
        &format!("/v1/sites/{site}/doors/{door}/iq"),
        Some(json!({ "iq": iq })),
    );
    let first = installer(&registered["enrolment"]);
    let door = u32::try_from(door).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (client, credentials) = runtime.block_on(async {
        let credentials = first.enrol().await.expect("the code from the API enrols the IQ");
        assert_eq!(u64::from(credentials.iq.0), iq);
        // The code works once.
        assert!(first.enrol().await.is_err(), "an enrolment code redeemed twice");
        let client = first.connect(credentials.clone()).await.unwrap();
        let decisions = client
            .decide(vec![tap(door, CAROL_TAG), tap(door, "0badbeef")])
            .await
            .unwrap();
        assert_eq!(decisions.items[0].effect, Effect::Allow, "{decisions:?}");
        assert_eq!(decisions.items[1].effect, Effect::Deny, "{decisions:?}");
        let list = client.fetch_offline_list().await.unwrap();
        assert_eq!(list.begin.tags, 1, "{:?}", list.begin);
        (client, credentials)
    });

    // Anti-passback attached over HTTP counts what the IQ reports happened (protocol
    // version 2): once Carol went in, a second entry is refused until she goes out.
    owner.ok(
        "PUT",
        &format!("/v1/sites/{site}/doors/{door}/rule"),
        Some(json!({"rule": "anti-passback"})),
    );
    runtime.block_on(async {
        let entry = || DecideItem {
            direction: keyway_node::Direction::Entry,
            ..tap(door, CAROL_TAG)
        };
        let passage = |id, direction| keyway_link::message::Passage {
            id,
            door,
            kind: Some(CredentialKind::Tag),
            secret: hex::decode(CAROL_TAG).unwrap(),
            at: jiff::Timestamp::now().as_millisecond(),
            direction,
            opened: true,
        };
        let reason = |d: keyway_link::message::Decisions| d.items[0].reason.clone();
        assert_eq!(reason(client.decide(vec![entry()]).await.unwrap()), "granted");
        client
            .report_passage(passage(1, keyway_node::Direction::Entry))
            .await
            .unwrap();
        assert_eq!(
            reason(client.decide(vec![entry()]).await.unwrap()),
            "rule:anti-passback"
        );
        client
            .report_passage(passage(2, keyway_node::Direction::Exit))
            .await
            .unwrap();
        assert_eq!(reason(client.decide(vec![entry()]).await.unwrap()), "granted");
    });

    // The API shows it enrolled and online, with what the link knows.
    let v = owner.ok("GET", &format!("/v1/sites/{site}/iqs/{iq}"), None);
    assert_eq!(v["enrolled"], true, "{v}");
    assert_eq!(v["online"], true, "{v}");
    assert_eq!(v["firmware_reported"], "2.7.0", "{v}");
    assert_eq!(v["doors"], json!([door]), "{v}");
    assert_eq!(v["offline_list"]["tags"], 1, "{v}");
    assert_eq!(v["offline_list"]["tags_left_out"], 0, "{v}");
    let (status, v) = owner.call("POST", &format!("/v1/sites/{site}/iqs/{iq}/enrolment-code"), None);
    assert_eq!((status, v["code"].as_str()), (409, Some("enrolled")), "{v}");

    // The operator uploads firmware from the command line (a wrong digest stores
    // nothing); the admin assigns it; the IQ fetches it on the bulk port.
    let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let file = server.data().join("iq2-3.1.0.bin");
    std::fs::write(&file, &image).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&image));
    let upload = |sha: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
            .args([
                "admin",
                "upload-firmware",
                "--model",
                "IQ2",
                "--version",
                "3.1.0",
                "--sha256",
                sha,
            ])
            .arg(&file)
            .arg("--data-dir")
            .arg(server.data())
            .arg("--bundle")
            .arg(bundle_dir())
            .output()
            .unwrap()
    };
    let refused = upload(&"0".repeat(64));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("sha256"),
        "{refused:?}"
    );
    assert_eq!(owner.ok("GET", "/v1/firmware", None)["items"], json!([]));
    let uploaded = upload(&digest);
    assert!(uploaded.status.success(), "{uploaded:?}");
    let files = owner.ok("GET", "/v1/firmware?model=IQ2", None);
    let firmware = files["items"][0]["id"].as_i64().unwrap();
    assert_eq!(files["items"][0]["sha256"], digest.as_str());
    let assigned = owner.ok(
        "PUT",
        &format!("/v1/sites/{site}/iqs/{iq}/firmware"),
        Some(json!({ "firmware": firmware })),
    );
    assert_eq!(assigned["offered"], true, "{assigned}");
    let mut client = client;
    let offer = runtime.block_on(async {
        loop {
            match client.next_event_within(Duration::from_secs(5)).await {
                Some(keyway_link::ClientEvent::Push {
                    message: keyway_link::Message::FirmwareAvailable(offer),
                    ..
                }) => break offer,
                Some(_) => {}
                None => panic!("the IQ was not offered its assigned firmware"),
            }
        }
    });
    assert_eq!((offer.version.as_str(), offer.size), ("3.1.0", image.len() as u64));
    assert_eq!(hex::encode(offer.sha256), digest);
    let fetched = runtime
        .block_on(client.fetch_firmware("3.1.0", Vec::new(), 16 * 1024))
        .unwrap();
    assert!(fetched == image, "the fetched image differs from the uploaded one");
    // The same image over HTTP with the offer's token: half, then the rest by a range.
    let token = offer
        .download_token
        .clone()
        .expect("the offer carries a download token");
    let url = format!("{}/v1/firmware/download", server.url);
    let http = super::support::client();
    let half = image.len() / 2;
    let first = http
        .get(&url)
        .bearer_auth(&token)
        .header("range", format!("bytes=0-{}", half - 1))
        .send()
        .unwrap();
    assert_eq!(first.status(), 206);
    let mut over_http = first.bytes().unwrap().to_vec();
    let rest = http
        .get(&url)
        .bearer_auth(&token)
        .header("range", format!("bytes={half}-"))
        .send()
        .unwrap();
    assert_eq!(rest.status(), 206);
    assert_eq!(rest.headers()["etag"].to_str().unwrap(), format!("\"{digest}\""));
    over_http.extend_from_slice(&rest.bytes().unwrap());
    assert!(over_http == image, "the image over HTTP differs from the uploaded one");
    let refused = http.get(&url).bearer_auth(&owner.token).send().unwrap();
    assert_eq!(refused.status(), 401, "a session is not a download token");

    // The owner resets it: the session closes now, the old certificate is refused, and
    // the new code enrols the device again.
    let reset = owner.ok("POST", &format!("/v1/sites/{site}/iqs/{iq}/reset"), None);
    assert_eq!(reset["sessions_closed"], 1, "{reset}");
    let again = installer(&reset["enrolment"]);
    runtime.block_on(async {
        let mut client = client;
        let mut closed = false;
        for _ in 0..50 {
            match client.next_event_within(Duration::from_millis(100)).await {
                Some(keyway_link::ClientEvent::Error(e)) => {
                    assert!(format!("{e:?}").to_lowercase().contains("revoked"), "{e:?}");
                    closed = true;
                    break;
                }
                Some(_) => {}
                None => {
                    if client.decide(vec![tap(door, CAROL_TAG)]).await.is_err() {
                        closed = true;
                        break;
                    }
                }
            }
        }
        assert!(closed, "the reset IQ's session stayed open");
        assert!(
            again.connect(credentials).await.is_err(),
            "a revoked certificate still connects"
        );
        let fresh = again.enrol().await.expect("the reset's code enrols the device again");
        let client = again.connect(fresh).await.unwrap();
        let decisions = client.decide(vec![tap(door, CAROL_TAG)]).await.unwrap();
        assert_eq!(decisions.items[0].effect, Effect::Allow);
        client.close().await;
    });
    let v = owner.ok("GET", &format!("/v1/sites/{site}/iqs/{iq}"), None);
    assert_eq!(v["enrolled"], true, "{v}");
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// `keyway iq-sim` against the real process: it registers its IQs, doors and people over
/// HTTP, enrols the IQs on the link, and its traffic is decided and logged.
#[test]
fn iq_sim_registers_enrols_and_decides() {
    let server = Server::start(&[]);
    let (owner, site) = owner_with_voucher(&server, 10);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args([
            "iq-sim",
            "--site",
            &site.to_string(),
            "--iqs",
            "3",
            "--doors-per-iq",
            "2",
        ])
        .args(["--people", "4", "--duration-secs", "2", "--batch", "4"])
        .env("KEYWAY_URL", &server.url)
        .env("KEYWAY_TOKEN", &owner.token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 IQs connected"), "{stdout}");
    assert!(!stdout.contains(&owner.token), "the token was printed");
    let decisions: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("3 IQs connected, "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(decisions > 0, "{stdout}");
    // Its IQs are enrolled with their doors, and its decisions are in the entries log:
    // the people's tags open, the unknown tag does not.
    let iqs = owner.ok("GET", &format!("/v1/sites/{site}/iqs"), None);
    let items = iqs["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{iqs}");
    for iq in items {
        assert_eq!(iq["enrolled"], true, "{iq}");
        assert_eq!(iq["doors"].as_array().unwrap().len(), 2, "{iq}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let entries = owner.ok("GET", &format!("/v1/sites/{site}/entries?limit=500"), None);
    let reasons: std::collections::BTreeSet<&str> = entries["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains("granted") && reasons.contains("unknown_credential"),
        "{reasons:?}"
    );
    // With network cuts: each IQ decides alone while away, is brought up to date when it
    // returns (by replay or a full list), and uploads what it decided; the node
    // acknowledges every entry.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["iq-sim", "--site", &site.to_string(), "--iqs", "2", "--people", "2"])
        .args(["--duration-secs", "4", "--outage-every-secs", "1", "--outage-secs", "1"])
        .env("KEYWAY_URL", &server.url)
        .env("KEYWAY_TOKEN", &owner.token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = stdout
        .lines()
        .find_map(|l| l.strip_prefix("offline: "))
        .unwrap_or_else(|| panic!("no offline summary: {stdout}"));
    let numbers: Vec<u64> = offline
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (alone, uploaded) = (numbers[0], numbers[2]);
    assert!(alone > 0, "{stdout}");
    assert_eq!(alone, uploaded, "every entry taken offline is acknowledged: {stdout}");
    assert!(stdout.contains("reconnections: "), "{stdout}");

    // Idle IQs hold only their control sessions, served by one push hub for the site,
    // as the server's metrics show while they are connected.
    let idle = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["iq-sim", "--site", &site.to_string(), "--iqs", "3", "--people", "2"])
        .args(["--duration-secs", "6", "--idle"])
        .env("KEYWAY_URL", &server.url)
        .env("KEYWAY_TOKEN", &owner.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = client();
    let gauge = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = http
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let seen = (
            gauge(&text, "keyway_link_sessions{port=\"control\"}"),
            gauge(&text, "keyway_link_sessions{port=\"bulk\"}"),
            gauge(&text, "keyway_link_push_hubs"),
        );
        if seen == (Some(3), Some(0), Some(1)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "3 idle control sessions, no bulk session, one hub: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = idle.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 IQs connected, 0 decisions"), "{stdout}");

    // A wrong token is refused before anything is sent to the link.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["iq-sim", "--site", &site.to_string(), "--iqs", "1"])
        .env("KEYWAY_URL", &server.url)
        .env("KEYWAY_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
}
