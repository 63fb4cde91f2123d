//! Sotto's client core: everything a client does with keys and messages, and nothing that
//! touches a socket, a clock, a file or the operating system's RNG.
//!
//! The runtime (native: `sotto-client`; web: next) pushes in what happened and pulls out what
//! to do, quinn-proto and matrix-sdk-crypto style:
//!
//! ```text
//!            handle_envelope(now, Envelope) ─┐         ┌─▶ poll_request()  → Request { id, RelayCall }
//!            handle_response(now, id, ans) ──┤         │       (runtime performs it, reports the
//!            handle_ephemeral / presence ────┤ Client  │        answer with handle_response)
//!            handle_timeout(now) ────────────┤ (state  ├─▶ take_writes()   → Vec<StoreOp>  commit first,
//!  app:      send_text / mark_read / typing ─┤ machine)│                      all or nothing
//!            approve_identity / set_verified ┘         ├─▶ take_acks()     → envelope seqs, acked only
//!                                                      │                      after that commit
//!                                                      └─▶ poll_event()    → Event for the app
//! ```
//!
//! Time comes in as milliseconds; randomness from a seeded ChaCha20 RNG the runtime seeds (from
//! the OS RNG; tests seed it fixed, so runs are reproducible). State lives in memory and every
//! change is also described as [`StoreOp`]s for the encrypted store ([`store`]); history is paged
//! from the store, not kept here.
//!
//! # Security decisions made here
//! - A peer's identity is pinned on first use; a bundle or pre-key message with another identity
//!   is refused before any state changes ([`trust`]), raises [`Event::IdentityChanged`] and, with
//!   [`IdentityPolicy::RequireApproval`] (the default), holds sends and incoming messages until
//!   the app approves.
//! - A device whose prekeys do not verify against the pinned identity gets nothing
//!   ([`Event::UntrustedDevice`]); answers about other users are ignored.
//! - Every content carries a sender-chosen id; duplicates and replays are dropped by it.
//!
//! # Example
//!
//! ```
//! use sotto_client_core::{Client, Config, NewAccount, RelayCall};
//!
//! let mut alice = Client::create(
//!     NewAccount { user_id: "alice".into(), device_id: 1, registration_id: 7, identity: None },
//!     Config::default(),
//!     1_764_000_000_000,
//!     [1; 32],
//! )?;
//! // The first request uploads the new device's prekeys.
//! let upload = alice.poll_request().expect("an upload");
//! assert!(matches!(upload.call, RelayCall::UploadKeys(_)));
//! // Sending to Bob first asks for bundles (own devices, then Bob's).
//! alice.send_text(1_764_000_000_001, "bob", "hi Bob")?;
//! let mut fetches = 0;
//! while let Some(r) = alice.poll_request() {
//!     if matches!(r.call, RelayCall::FetchBundles { .. }) { fetches += 1; }
//! }
//! assert_eq!(fetches, 2);
//! // Everything the client did is described for the store.
//! assert!(!alice.take_writes().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod keys;
pub mod linking;
pub mod model;
pub mod payload;
pub mod relay_http;
pub mod requests;
pub mod store;
pub mod trust;

pub use client::{
    Client, Config, CreateError, GroupError, IdentityError, IdentityPolicy, NewAccount,
    RestoreError, SendError, TypingError, MAX_GROUPS, MAX_GROUP_AVATAR_BYTES,
    MAX_GROUP_DESCRIPTION_CHARS, MAX_GROUP_MEMBERS, MAX_GROUP_NAME_CHARS, TYPING_TIMEOUT_MS,
};
pub use model::*;
pub use requests::{RelayAnswer, RelayCall, RelayFailure, Request, RequestId};
pub use store::StoreOp;
