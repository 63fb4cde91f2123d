//! The transport against the real relay binary (`sotto-server`) on a loopback port with a
//! temporary SQLite file: REST routes, relay errors, the WebSocket, reconnects, attachments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

mod attachments;
mod errors;
mod messaging;
mod reconnect;
mod routes;
mod tls;
