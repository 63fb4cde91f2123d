//! Session integration tests: PQXDH setup, the Double Ratchet, the session record, known-answer
//! vectors and property tests. One binary, several modules.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

mod session {
    pub mod harness;
    mod props;
    mod ratchet;
    mod record;
    mod setup;
    mod trust;
    mod vectors;
}
