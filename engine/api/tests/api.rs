//! keyway-api's one integration-test binary: the app driven with `oneshot` on a real node
//! over a temporary SQLite database with the default bundle.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

mod support;

mod bad_input;
mod matrix;
mod stories;
