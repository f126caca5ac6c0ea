//! Starting and stopping `keyway serve`, and reading what it prints.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The repository's default policy bundle.
pub fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/default")
}

/// A running `keyway serve`.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    pub data_dir: Option<tempfile::TempDir>,
    pub lines: mpsc::Receiver<String>,
}

impl Server {
    /// Start `keyway serve` on a fresh data directory, on a free port, with extra flags,
    /// and wait until it says it is ready.
    pub fn start(extra: &[&str]) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        Self::start_in(data_dir, extra)
    }

    pub fn start_in(data_dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let path = data_dir.path().to_owned();
        let mut server = Self::start_at(&path, extra);
        server.data_dir = Some(data_dir);
        server
    }

    /// Start `keyway serve` with its data in `data` (which the caller owns).
    pub fn start_at(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyway"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--http-addr")
            .arg("127.0.0.1:0")
            .args(["--link-control-addr", "127.0.0.1:0", "--link-bulk-addr", "127.0.0.1:0"])
            .arg("--bundle")
            .arg(bundle_dir())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut seen = Vec::new();
        let url = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("keyway serve did not get ready; it printed: {seen:#?}"));
            if let Some(rest) = line.strip_prefix("keyway is ready at ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            seen.push(line);
        };
        Server {
            child,
            url,
            data: data.to_owned(),
            data_dir: None,
            lines,
        }
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        let mut printed = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            printed.push(line);
        }
        (status, printed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client for the tests.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub const PASSWORD: &str = "Correct-Horse-1";

/// A signed-in caller of the API.
pub struct Admin {
    pub url: String,
    pub http: reqwest::blocking::Client,
    pub token: String,
}

impl Admin {
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }
}

/// An owner's session on a fresh site with a voucher (the operator, made on the command
/// line, issues it).
pub fn owner_with_voucher(server: &Server, max_users: u32) -> (Admin, u64) {
    owner_with_voucher_on(server, max_users, &[])
}

/// The operator's session (made by [`owner_with_voucher`]).
pub fn operator_token(server: &Server) -> String {
    let r = client()
        .post(format!("{}/v1/sessions", server.url))
        .json(&json!({"email": "op@example.org", "password": PASSWORD}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().unwrap()["token"].as_str().unwrap().to_owned()
}

/// [`owner_with_voucher`], with `admin_args` for `keyway admin create-operator` (e.g. the
/// server's `--database-url`).
pub fn owner_with_voucher_on(server: &Server, max_users: u32, admin_args: &[&str]) -> (Admin, u64) {
    let http = client();
    let account = json!({"email": "owner@example.com", "password": PASSWORD});
    assert_eq!(
        http.post(format!("{}/v1/accounts", server.url))
            .json(&account)
            .send()
            .unwrap()
            .status(),
        201
    );
    let r = http
        .post(format!("{}/v1/sessions", server.url))
        .json(&account)
        .send()
        .unwrap();
    let token = r.json::<Value>().unwrap()["token"].as_str().unwrap().to_owned();
    let owner = Admin {
        url: server.url.clone(),
        http,
        token,
    };
    let site = owner.ok("POST", "/v1/sites", Some(json!({"name": "HQ", "time_zone": "UTC"})))["site"]["id"]
        .as_u64()
        .unwrap();
    // People need a voucher: the operator (made on the command line) issues one.
    let mut make_operator = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["admin", "create-operator", "--email", "op@example.org", "--data-dir"])
        .arg(server.data())
        .arg("--bundle")
        .arg(bundle_dir())
        .args(admin_args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = make_operator.stdin.take().unwrap();
        writeln!(stdin, "{PASSWORD}").unwrap();
    }
    assert!(make_operator.wait().unwrap().success());
    let op = json!({"email": "op@example.org", "password": PASSWORD});
    let r = owner
        .http
        .post(format!("{}/v1/sessions", server.url))
        .json(&op)
        .send()
        .unwrap();
    let operator = Admin {
        url: server.url.clone(),
        http: client(),
        token: r.json::<Value>().unwrap()["token"].as_str().unwrap().to_owned(),
    };
    operator.ok(
        "POST",
        "/v1/vouchers",
        Some(json!({"code": "IQ-E2E", "max_users": max_users, "max_app_users": 10})),
    );
    owner.ok(
        "POST",
        &format!("/v1/sites/{site}/voucher"),
        Some(json!({"code": "IQ-E2E"})),
    );
    (owner, site)
}
