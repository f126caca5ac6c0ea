//! The FAQ's stories against the real process, with a real webhook receiver: sign up
//! with a weak then a strong password, reset a forgotten password through the mail file,
//! create a site and redeem the operator's voucher, invite a site admin and a super user,
//! hit the user cap, transfer ownership, and receive the transfer as a signed webhook.

use super::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// One request a receiver took: its headers (lower-case names) and body.
type Received = (Vec<(String, String)>, String);

/// A webhook receiver on 127.0.0.1: each POST, answered 204.
fn receiver() -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                let (name, value) = trimmed.split_once(':').unwrap();
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send((headers, String::from_utf8(body).unwrap()));
        }
    });
    (url, rx)
}

/// The secret of the last link mailed to `to`.
/// Mail goes out off the request path: wait for it a little.
fn mailed_token(server: &Server, to: &str, nth: usize) -> String {
    for _ in 0..100 {
        let mail = std::fs::read_to_string(server.data().join("outbox.mail")).unwrap_or_default();
        let to_them: Vec<&str> = mail
            .split("\n.\n")
            .filter(|m| m.contains(&format!("To: {to}")))
            .collect();
        if let Some(letter) = to_them.get(nth) {
            let at = letter.rfind("token=").unwrap() + "token=".len();
            return letter[at..].chars().take_while(char::is_ascii_hexdigit).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no mail number {nth} to {to}");
}

fn session(server: &Server, email: &str, password: &str) -> Admin {
    let http = client();
    let r = http
        .post(format!("{}/v1/sessions", server.url))
        .json(&json!({"email": email, "password": password}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{email} signs in");
    let token = r.json::<Value>().unwrap()["token"].as_str().unwrap().to_owned();
    Admin {
        url: server.url.clone(),
        http,
        token,
    }
}

#[test]
fn faq_stories_end_with_a_signed_webhook() {
    let server = Server::start(&["--webhook-allow-private"]);
    let http = client();
    let sign_up = |email: &str, password: &str| {
        let r = http
            .post(format!("{}/v1/accounts", server.url))
            .json(&json!({"email": email, "password": password}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };

    // A weak password is refused, naming each broken rule; a strong one is taken.
    let (status, v) = sign_up("bob@example.com", "weakling");
    assert_eq!((status, v["code"].as_str()), (422, Some("weak_password")), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("uppercase") && message.contains("not a letter or a digit"),
        "{message}"
    );
    assert_eq!(sign_up("bob@example.com", PASSWORD).0, 201);
    assert_eq!(sign_up("carol@example.com", PASSWORD).0, 201);

    // Bob forgets his password: the link comes through the mail file and works once.
    let r = http
        .post(format!("{}/v1/password-resets", server.url))
        .json(&json!({"email": "bob@example.com"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let token = mailed_token(&server, "bob@example.com", 0);
    for (want, password) in [(204, "Bobs-New-Pass-2"), (422, "Bobs-Other-Pass-3")] {
        let r = http
            .post(format!("{}/v1/password-resets/confirm", server.url))
            .json(&json!({"token": token, "password": password}))
            .send()
            .unwrap();
        assert_eq!(r.status(), want, "the reset link works once");
    }
    let bob = session(&server, "bob@example.com", "Bobs-New-Pass-2");

    // Ana makes a site and redeems the operator's voucher of 2 users; a webhook listens.
    let (ana, site) = owner_with_voucher(&server, 2);
    let (hook_url, deliveries) = receiver();
    let created = ana.ok(
        "POST",
        &format!("/v1/sites/{site}/webhooks"),
        Some(json!({"url": hook_url, "events": ["ownership.*", "incident.*"]})),
    );
    let secret = created["secret"].as_str().unwrap().to_owned();

    // She invites Bob as a site admin and Carol as a super user; each accepts.
    let carol = session(&server, "carol@example.com", PASSWORD);
    for (who, email, role, nth) in [
        (&bob, "bob@example.com", "site_admin", 1),
        (&carol, "carol@example.com", "super_user", 0),
    ] {
        ana.ok(
            "POST",
            &format!("/v1/sites/{site}/invitations"),
            Some(json!({"email": email, "role": role})),
        );
        let accepted = who.ok(
            "POST",
            "/v1/invitations/accept",
            Some(json!({"token": mailed_token(&server, email, nth)})),
        );
        assert_eq!(accepted["role_name"], role, "{accepted}");
    }

    // The voucher's user cap: the third person is refused, naming the cap and the count.
    for name in ["Dani", "Eve"] {
        ana.ok("POST", &format!("/v1/sites/{site}/people"), Some(json!({"name": name})));
    }
    let (status, v) = ana.call(
        "POST",
        &format!("/v1/sites/{site}/people"),
        Some(json!({"name": "Finn"})),
    );
    assert_eq!((status, v["code"].as_str()), (422, Some("voucher_cap")), "{v}");
    assert!(v["message"].as_str().unwrap().contains('2'), "{v}");

    // Ownership goes to Bob, a site admin; Carol, a super user, could not take it.
    let transfer = format!("/v1/sites/{site}/transfer");
    let carol_id = carol.ok("GET", "/v1/me", None)["id"].clone();
    let (status, v) = ana.call("POST", &transfer, Some(json!({"account": carol_id})));
    assert_eq!((status, v["code"].as_str()), (422, Some("transfer_refused")), "{v}");
    let bob_id = bob.ok("GET", "/v1/me", None)["id"].clone();
    let moved = ana.ok("POST", &transfer, Some(json!({"account": bob_id})));
    assert_eq!(moved["former_owner"]["role_name"], "site_admin", "{moved}");

    // The receiver hears of it, signed with the endpoint's secret.
    let (headers, body) = deliveries
        .recv_timeout(Duration::from_secs(30))
        .expect("the transfer reaches the webhook");
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
    let signature = header(keyway_api::SIGNATURE_HEADER);
    let t: i64 = signature[2..signature.find(',').unwrap()].parse().unwrap();
    assert_eq!(
        signature,
        keyway_api::signature(&secret, t, &body),
        "the signature verifies"
    );
    assert!(header(keyway_api::DELIVERY_HEADER).parse::<i64>().is_ok());
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "ownership.transferred", "{event}");
    assert_eq!(event["site"], site);
    assert_eq!(event["data"]["to_account"], bob_id, "{event}");
    // The attempt is recorded once the receiver has answered: wait for it a little.
    let history_path = format!("/v1/sites/{site}/webhooks/{}/deliveries", created["webhook"]["id"]);
    let mut history = Value::Null;
    for _ in 0..100 {
        history = bob.ok("GET", &history_path, None);
        if !history["items"].as_array().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        history["items"][0]["succeeded"], true,
        "the new owner sees the history: {history}"
    );
}
