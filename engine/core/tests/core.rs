//! The integration tests of `keyway-core`: one binary, one module per concern.
//!
//! - `reasons`: one table per decision reason, on the `office` fixture.
//! - `time`: schedules on a site's wall clock: DST switches, periods crossing midnight,
//!   date ranges, holidays.
//! - `changes`: every change is visible to the next decision; compaction and
//!   `records()` round-trips keep decisions identical.
//! - `iq_load`: the tags and remote users an IQ holds.
//! - `bad_input`: malformed requests are denied with a reason, never a panic; malformed
//!   records and changes are refused with their specific error and leave nothing behind.
//! - `tables`: ids spread up to `MAX_ID` decide like dense ones, in memory that follows
//!   the live entities; the per-entity reads give back the records.
//! - `publish`: the `SnapshotCell` under concurrent readers, a writer and compactions.
//! - `reference` + `differential`: a naive evaluator written from the specification,
//!   compared with the core on random sites and random sequences of changes.
//!
//! Tables go through one `check`-style helper per module, in the style of rust-analyzer:
//! each row is an input and the rendered decision it must give. The modules live in
//! `tests/core/`, so that Cargo builds this one binary from them.

#![expect(
    clippy::panic,
    reason = "helpers fail loudly with context; clippy's allow-panic-in-tests only covers #[test] functions"
)]

#[path = "core/bad_input.rs"]
mod bad_input;
#[path = "core/changes.rs"]
mod changes;
#[path = "core/differential.rs"]
mod differential;
#[path = "core/fixture.rs"]
mod fixture;
#[path = "core/iq_load.rs"]
mod iq_load;
#[path = "core/publish.rs"]
mod publish;
#[path = "core/reasons.rs"]
mod reasons;
#[path = "core/reference.rs"]
mod reference;
#[path = "core/tables.rs"]
mod tables;
#[path = "core/time.rs"]
mod time;
