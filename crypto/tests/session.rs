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
    mod converge;
    pub mod harness;
    mod props;
    mod ratchet;
    mod record;
    mod record_vectors;
    mod setup;
    mod trust;
    mod vectors;
}
