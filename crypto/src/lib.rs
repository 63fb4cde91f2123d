//! Sotto's protocol core. Pure code: no I/O, no clocks, no global randomness — every operation that
//! needs randomness takes an RNG, so tests are deterministic. Builds for `wasm32-unknown-unknown`.
//!
//! The full specification (every key, KDF label, nonce and byte) is `docs/protocol.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod attachment;
pub(crate) mod codec;
pub mod fingerprint;
pub mod keys;
pub mod pqxdh;
pub mod ratchet;
pub mod sender_key;
pub mod session;
pub use codec::DecodeError;
