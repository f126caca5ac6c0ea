//! The store's one integration-test binary: the conformance suite on both backends, the
//! admin records, the entries log, two nodes on one PostgreSQL, crash safety and faults.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod support;

mod accounts;
mod admin;
mod auth_cache;
mod conformance;
mod crash;
mod enrolment;
mod entries;
mod faults;
mod import;
mod incidents;
mod schema;
mod two_nodes;
mod webhooks;

/// The instant `seconds` after the epoch: tests write times as seconds.
fn t(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap()
}
