//! Sotto's native client: the sans-IO core ([`sotto_client_core`]) driven by tokio against a real
//! relay, with the encrypted store ([`sotto_store`]) underneath, behind an async API of plain
//! records that binds cleanly to Kotlin, Swift and JS.
//!
//! ```text
//!   app ──▶ SottoClient::send_text / mark_read / history / …        ClientEvent stream ──▶ app
//!              │                                                         ▲
//!              ▼                                                         │
//!      ┌──────────────── core (std Mutex, never held across .await) ─────┴──────┐
//!      │ handle_envelope / handle_response / handle_timeout → writes, acks,     │
//!      │ requests, events                                                       │
//!      └──┬─────────────────────┬──────────────────────┬───────────────────────┘
//!         │ 1. writes           │ 2. acks (only after   │ requests
//!         ▼    committed, all   ▼    the commit)        ▼
//!   EncryptedStore (SQLite    WebSocket task:        HTTP tasks (reqwest, rustls):
//!   or memory, sealed rows)   frames in, acks out,   answers back into the core
//!                             reconnect + backoff
//! ```
//!
//! Every input to the core is followed by one *drain* under a commit lock: the store changes it
//! caused are committed in order, then its acks go to the relay, then its requests start and its
//! events reach the app. An envelope whose effect is not committed is never acked, so a crash
//! at any point loses nothing: the relay redelivers and the core drops duplicates by message id.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attachments;
mod http;
mod runtime;
mod storage;

use std::path::PathBuf;

pub use attachments::{AttachmentError, MAX_ATTACHMENT_BYTES};
pub use runtime::{PendingLink, SottoClient};
pub use sotto_client_core::linking::PROVISIONING_INFO;
pub use sotto_client_core::{
    AttachmentPointer, Conversation, ConversationId, Event, GroupInfo, GroupMemberInfo,
    IdentityPolicy, Message, MessagePreview, MessageStatus, ReceiptKind, SafetyNumberInfo,
    SendFailure,
};

/// Where the encrypted store lives.
#[derive(Clone)]
pub enum StoreLocation {
    /// In memory (tests, throwaway sessions): gone when the client is dropped.
    Memory,
    /// An SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A backend the caller made (a shared in-memory one in tests, a platform store).
    Backend(std::sync::Arc<dyn sotto_store::Backend>),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Backend(_) => f.write_str("Backend(..)"),
        }
    }
}

/// What unlocks the store.
#[derive(Clone)]
pub enum StoreSecret {
    /// A 32-byte key the app keeps (OS keychain).
    Key([u8; 32]),
    /// A passphrase (stretched with Argon2id).
    Passphrase(String),
    /// A passphrase with cheap Argon2id parameters, for tests only.
    InsecureTestPassphrase(String),
}

impl std::fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Key(_) => "StoreSecret::Key(..)",
            Self::Passphrase(_) => "StoreSecret::Passphrase(..)",
            Self::InsecureTestPassphrase(_) => "StoreSecret::InsecureTestPassphrase(..)",
        })
    }
}

/// How to run a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The relay, `http://127.0.0.1:7700` or `https://relay.example`.
    pub server_url: String,
    /// The store.
    pub store: StoreLocation,
    /// Its key.
    pub store_secret: StoreSecret,
    /// What to do when a contact's identity changes.
    pub identity_policy: IdentityPolicy,
}

/// The connection to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting (or waiting to reconnect).
    Connecting,
    /// Connected; the backlog is being delivered.
    Connected,
    /// The backlog present at connect has been delivered.
    CaughtUp,
    /// Lost; reconnecting with backoff.
    Disconnected,
    /// The relay removed this device or another connection replaced it: no more reconnects.
    Closed,
}

/// Everything the client tells the app, on one stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // events are moved once, from the runtime to the app
pub enum ClientEvent {
    /// Messages, receipts, typing, presence, identity and group changes.
    Event(Event),
    /// The connection changed.
    Connection(ConnectionState),
    /// The store failed; the client stopped processing (nothing was acked that is not stored).
    StoreFailed(String),
}

/// A sent message, accepted by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Its id.
    pub id: String,
    /// When the relay accepted it (ms).
    pub server_timestamp: u64,
}

/// A history page.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Newest first.
    pub messages: Vec<Message>,
    /// Pass as `before` for the next (older) page; none when this was the last.
    pub next_cursor: Option<u64>,
}

/// Who an account is: its user id and its username (spelled as registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user id messages are addressed to.
    pub user_id: String,
    /// The username.
    pub username: String,
}

/// One device of this account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Its id.
    pub device_id: u32,
    /// When it was created (ms).
    pub created_at: u64,
    /// Whether it is this device.
    pub this_device: bool,
}

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    /// Who.
    pub user_id: String,
    /// "online", "away" or "offline".
    pub status: String,
    /// Last seen (ms), when offline.
    pub last_seen: Option<u64>,
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The server URL is not http(s)://…
    #[error("invalid server URL")]
    InvalidUrl,
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The username is taken.
    #[error("that username is taken")]
    UsernameTaken,
    /// The relay refused (code and message as it said, e.g. invalid_username).
    #[error("the relay refused: {0}")]
    Rejected(String),
}

/// Why login (or linking, or opening a profile) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The server URL is not http(s)://…
    #[error("invalid server URL")]
    InvalidUrl,
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// Wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The account already has a device: link this one from it instead.
    #[error("this account already has a device; link this one from it")]
    DeviceExists,
    /// The store could not be opened or written.
    #[error("store: {0}")]
    Store(String),
    /// The store key or passphrase is wrong.
    #[error("wrong store passphrase or key")]
    WrongStoreKey,
    /// The store holds no account (log in first).
    #[error("no account in this profile")]
    NoAccount,
    /// The relay refused.
    #[error("the relay refused: {0}")]
    Rejected(String),
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendTextError {
    /// The text is empty or over 1000 characters.
    #[error("a message is 1 to 1000 characters")]
    InvalidText,
    /// The recipient is not a valid user id, or (for a group) not a group this account is in.
    #[error("invalid recipient")]
    InvalidRecipient,
    /// A conversation is with someone else: this is this account.
    #[error("cannot send to yourself")]
    ToSelf,
    /// The message was given up (see the reason).
    #[error("not sent: {0:?}")]
    Failed(SendFailure),
    /// The client stopped.
    #[error("the client stopped")]
    Stopped,
}

/// Why a group operation failed. Nothing changed on this device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupOpError {
    /// This device knows no such group, or this account is not (or no longer) a member.
    #[error("unknown group")]
    UnknownGroup,
    /// Only admins may do this.
    #[error("only a group admin can do this")]
    NotAdmin,
    /// A group name must be 1 to 100 characters.
    #[error("a group name must be 1 to 100 characters")]
    InvalidName,
    /// A group description is at most 500 characters.
    #[error("a group description is at most 500 characters")]
    InvalidDescription,
    /// A group avatar is an image (image) of at most 5 MB.
    #[error("a group avatar is an image of at most 5 MB")]
    InvalidAvatar,
    /// A member id is invalid or this account, or too many members.
    #[error("invalid member list")]
    InvalidMembers,
    /// The relay does not know one of the users.
    #[error("unknown user")]
    UnknownUser,
    /// The user is not a member.
    #[error("not a member of this group")]
    UnknownMember,
    /// The group reached the relay's size limit.
    #[error("the group is full")]
    GroupFull,
    /// The last admin cannot step down.
    #[error("the last admin cannot step down")]
    LastAdmin,
    /// Too many group changes; try again later.
    #[error("too many group changes; try again later")]
    RateLimited,
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The relay refused for another reason.
    #[error("the relay refused: {0}")]
    Rejected(String),
}

/// Why a relay query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The relay cannot be reached.
    #[error("the relay cannot be reached")]
    Unreachable,
    /// The relay does not know this user or device.
    #[error("unknown user or device")]
    Unknown,
    /// The relay refused.
    #[error("the relay refused: {0}")]
    Rejected(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// Bad argument (limit, cursor, username).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Too many requests of this kind; try again later.
    #[error("too many requests; try again later")]
    RateLimited,
}

/// The SQLite backend for a profile file (WAL; a commit is durable when it returns).
async fn sqlite_backend(
    path: &std::path::Path,
) -> Result<std::sync::Arc<dyn sotto_store::Backend>, String> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let backend = sotto_store::sqlite::SqliteBackend::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(std::sync::Arc::new(backend))
}
