//! The node's one integration-test binary: the decision pipeline, the change feed, and
//! policy state across two nodes.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod node {
    pub mod feed;
    pub mod pipeline;
    pub mod policy;
    pub mod support;
}
