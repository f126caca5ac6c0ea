//! keyway-api's one integration-test binary: the app driven with `oneshot` on a real node
//! over a temporary SQLite database with the default bundle.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

#[path = "api/support.rs"]
mod support;

#[path = "api/bad_input.rs"]
mod bad_input;
#[path = "api/bundles.rs"]
mod bundles;
#[path = "api/chains.rs"]
mod chains;
#[path = "api/differential.rs"]
mod differential;
#[path = "api/import.rs"]
mod import;
#[path = "api/iqs.rs"]
mod iqs;
#[path = "api/matrix.rs"]
mod matrix;
#[path = "api/rule_state.rs"]
mod rule_state;
#[path = "api/siteops.rs"]
mod siteops;
#[path = "api/stories.rs"]
mod stories;
#[path = "api/webhooks.rs"]
mod webhooks;

/// The instant `seconds` after the epoch: tests write times as seconds.
fn t(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap()
}
