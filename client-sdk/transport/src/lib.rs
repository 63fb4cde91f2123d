//! The client's native link to a relay: typed REST calls ([`RelayClient`]) and the WebSocket
//! ([`Connection`]), over rustls with the ring provider.
//!
//! ```text
//!  SDK runtime ── RelayClient::send_message(&SendMessageRequest) ──▶ POST /api/messages/send
//!              ◀─ Ok(SendMessageResponse) | Err(TransportError::Relay { status, code, .. })
//!                                         | Err(TransportError::Unreachable)
//!
//!  Connection::open(&client.with_token(t), config) ── task ──▶ GET /ws (Authorization: Bearer)
//!     next_event(): Connecting → Connected → Frame(ServerFrame)* → Disconnected { retry_in }
//!     ack(&[seq]) / send(ClientFrame) ──────────────────────────▶ text frames
//! ```
//!
//! Request and answer types are those of [`sotto_wire`]; the routes are specified in
//! `docs/api.md`. Every non-2xx answer becomes [`TransportError::Relay`] with the relay's JSON
//! error parsed (and `Retry-After` for 429); a relay that cannot be reached is
//! [`TransportError::Unreachable`]. Attachments stream in both directions.
//!
//! ```no_run
//! # async fn example() -> Result<(), sotto_transport::TransportError> {
//! use sotto_transport::{Connection, ConnectionConfig, ConnectionEvent, RelayClient};
//! use sotto_wire::{LoginRequest, ServerFrame};
//!
//! let relay = RelayClient::new("https://relay.example")?;
//! let login = relay
//!     .login(&LoginRequest { username: "alice".into(), password: "…".into(), registration_id: 7 })
//!     .await?;
//! let relay = relay.with_token(&login.token);
//! let mut ws = Connection::open(&relay, ConnectionConfig::default());
//! while let Some(event) = ws.next_event().await {
//!     if let ConnectionEvent::Frame(ServerFrame::Envelope(envelope)) = event {
//!         // … decrypt and store, then:
//!         ws.ack(&[envelope.seq]).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod client;
mod connection;
mod error;
mod tls;

pub use client::{AttachmentDownload, RelayClient, RelayClientBuilder, MAX_JSON_ANSWER};
pub use connection::{
    Backoff, Connection, ConnectionConfig, ConnectionEvent, ConnectionHandle, ConnectionState,
    DisconnectReason, MAX_ACK_IDS,
};
pub use error::{RelayErrorDetails, TransportError};
