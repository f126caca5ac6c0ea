//! The integration tests of `keyway-link`: one binary, one module per concern.
//!
//! - `codec`: frames and messages: a proptest round trip of every message, arbitrary
//!   bytes, every size limit at and over, truncated and out-of-order frames, the
//!   extensibility rules, and the worked example of PROTOCOL.md byte for byte.
//! - `fake`: an in-memory `LinkBackend`.
//! - `node`: the link against a real node (`NodeBackend` on SQLite with the default
//!   bundle): enrolment, decisions, a block pushed and then denied, idempotent uploads,
//!   offline decisions against the core, door commands, refused certificates.
//! - `offline`: the IQ's offline store: one table of decisions, revocations, deltas, door
//!   modes.
//! - `session`: whole sessions over real TLS on 127.0.0.1: enrolment, decisions, pushes,
//!   entry uploads, refusals (codes, certificates, doors, garbage, oversized frames),
//!   heartbeats, offline lists, firmware, caps and shutdown.
//!
//! The modules live in `tests/link/`, so that Cargo builds this one binary from them.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers fail loudly with context; clippy's allow-*-in-tests only covers #[test] functions"
)]

#[path = "link/codec.rs"]
mod codec;
#[path = "link/fake.rs"]
mod fake;
#[path = "link/node.rs"]
mod node;
#[path = "link/offline.rs"]
mod offline;
#[path = "link/session.rs"]
mod session;

/// The instant `seconds` after the epoch: tests write times as seconds.
fn t(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap()
}
