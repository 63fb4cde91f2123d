//! Fuzz targets for every `sotto-crypto` decoder of untrusted bytes. The entry points live in
//! `targets.rs`, which `crypto/tests/fuzz_corpus.rs` also compiles to replay the corpus on stable.
#![forbid(unsafe_code)]

pub mod targets;
