//! End-to-end: the real relay binary, real SDK clients, real sockets, SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod attachments;
mod cli;
mod common;
mod direct;
mod groups;
mod resilience;
