//! `ApiConfig`: what the binary tells the API (public URL, mail, sessions, rate limits,
//! CORS, timeouts, body size, webhooks).

use std::path::PathBuf;
use std::time::Duration;

/// A rate limit: `burst` attempts at once, then one more every `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts allowed at once (at least 1).
    pub burst: u32,
    /// The time it takes to earn one more attempt.
    pub per: Duration,
}

/// The API's configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The public base URL of this instance, without a trailing slash, used to build the
    /// links sent by e-mail (password reset, invitations), e.g. `https://keyway.example.com`.
    pub public_url: String,
    /// An SMTP relay URL for `lettre`, `smtp://host[:port]` (plain SMTP to a relay on a
    /// trusted network, e.g. a local MTA; port 25 by default). When `None`,
    /// mails are appended to [`ApiConfig::mail_file`] instead.
    pub smtp_relay: Option<String>,
    /// The file mails are appended to when no relay is configured (normally
    /// `<data dir>/mail.log`).
    pub mail_file: PathBuf,
    /// The sender address of every mail.
    pub mail_from: String,
    /// How long a session lasts after signing in.
    pub session_lifetime: Duration,
    /// How long a password-reset link works.
    pub reset_lifetime: Duration,
    /// How long an invitation link works.
    pub invitation_lifetime: Duration,
    /// Sign-in attempts, per account and per client address.
    pub login_limit: RateLimit,
    /// Password-reset requests, per account and per client address.
    pub reset_limit: RateLimit,
    /// Origins allowed to call the API from a browser; empty means no CORS layer at all.
    pub cors_origins: Vec<String>,
    /// How long one request may take before it is answered 408.
    pub request_timeout: Duration,
    /// The largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The longest a decision waits for `at_least_revision`.
    pub revision_wait: Duration,
    /// Whether the session cookie carries `Secure` (turn off only for plain-HTTP tests).
    pub secure_cookie: bool,
    /// The most requests in one `POST /v1/decide/batch`.
    pub max_batch: usize,
    /// What an IQ installer is told beside an enrolment code; `None` when this server
    /// runs no IQ link.
    pub link: Option<LinkAdvert>,
    /// Whether webhooks may point at loopback, private and link-local addresses. Off by
    /// default: a site admin must not reach into the network Keyway runs in.
    pub webhook_allow_private: bool,
    /// How long one webhook delivery may take.
    pub webhook_timeout: Duration,
    /// How often the notification worker looks for due work when it found none.
    pub notify_poll: Duration,
}

/// Where IQs reach this server's link, as told to installers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkAdvert {
    /// The link CA's certificate (DER), written by the link at its first start; read
    /// when a code is issued.
    pub ca_file: PathBuf,
    pub control_port: u16,
    pub bulk_port: u16,
    /// The host names in the server's certificate.
    pub server_names: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: "http://127.0.0.1:8080".to_owned(),
            smtp_relay: None,
            mail_file: PathBuf::from("mail.log"),
            mail_from: "keyway@localhost".to_owned(),
            session_lifetime: Duration::from_secs(12 * 3600),
            reset_lifetime: Duration::from_secs(3600),
            invitation_lifetime: Duration::from_secs(7 * 24 * 3600),
            login_limit: RateLimit {
                burst: 5,
                per: Duration::from_secs(60),
            },
            reset_limit: RateLimit {
                burst: 3,
                per: Duration::from_secs(300),
            },
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            revision_wait: Duration::from_secs(2),
            secure_cookie: true,
            max_batch: 1000,
            link: None,
            webhook_allow_private: false,
            webhook_timeout: Duration::from_secs(10),
            notify_poll: Duration::from_secs(1),
        }
    }
}
