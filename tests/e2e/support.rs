//! Starting and stopping `keyway serve`, and reading what it prints.

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
