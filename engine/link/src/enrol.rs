//! One-time enrolment codes (PROTOCOL.md 2.2). The store defines them, so the HTTP API
//! that makes them and the link that redeems them share one hash; they are re-exported
//! here for IQ implementers and tests.

pub use keyway_store::enrolment_code::{CODE_LEN, hash_code, new_code, normalize};
