//! Protocol tests: several cores and an in-memory relay on a virtual clock, deterministic.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::expect_used
)]

mod direct;
mod groups;
mod hostile;
mod net;
mod relay;
