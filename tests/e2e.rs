//! End-to-end tests: the real `keyway serve` process, started on a temporary data
//! directory, driven over HTTP as a site operator would. One test binary for the root
//! package (it uses the binary cargo built for this same test profile, so the workspace
//! is built once).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod e2e {
    pub mod bundle;
    pub mod import;
    pub mod iqs;
    pub mod server;
    pub mod siteops;
    pub mod stories;
    pub mod support;
    pub mod tour;
    pub mod two_nodes;
}
