//! Relay integration tests. Every test runs on SQLite and on PostgreSQL (`both!`), each on a fresh
//! database; PostgreSQL comes from `SOTTO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and its absence fails the tests loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

mod accounts;
mod attachments;
mod bad_input;
mod cluster;
mod consent;
mod crash;
mod groups;
mod invitations;
mod keys;
mod limits;
mod linking;
mod logs;
mod messages;
mod openapi;
mod ops;
mod presence;
mod races;
mod shutdown;
mod support;
mod transport;
mod ws;
