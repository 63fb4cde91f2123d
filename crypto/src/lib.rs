//! Sotto's protocol core. Pure code: no I/O, no clocks, no global randomness — every operation that
//! needs randomness takes an RNG, so tests are deterministic. Builds for `wasm32-unknown-unknown`.
//!
//! The full specification (every key, KDF label, nonce and byte) is `docs/protocol.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub(crate) mod codec;
pub use codec::DecodeError;
