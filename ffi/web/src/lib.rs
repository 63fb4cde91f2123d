//! Sotto in the browser: the client SDK's sans-IO core (`sotto-client-core`) with a browser
//! runtime and an encrypted IndexedDB store, behind a JS/TS API built with wasm-bindgen.
//!
//! ```text
//!   page ──▶ SottoClient.sendText / markRead / history / createGroup …  onEvent(listener) ──▶ page
//!              │                                                          ▲
//!              ▼                                                          │
//!      ┌──────────── core (RefCell, never borrowed across an await) ──────┴────────┐
//!      │ handle_envelope / handle_response / handle_timeout → writes, acks,         │
//!      │ requests, events                                                           │
//!      └──┬──────────────────────┬────────────────────────┬────────────────────────┘
//!         │ 1. writes committed  │ 2. acks (only after     │ requests
//!         ▼    in one IndexedDB  ▼    the commit)          ▼
//!   EncryptedStore over        WebSocket (browser's):     fetch: answers back into
//!   IndexedDB (sealed rows)    frames in, acks out,       the core
//!                              reconnect with backoff
//! ```
//!
//! Randomness comes from the browser's `crypto.getRandomValues` (getrandom's `js` backend), time
//! from `Date.now()`, timers from `setTimeout`. Everything here is single-threaded.
//!
//! Only `wasm32` builds have anything in them; on other targets the crate is empty.
#![cfg_attr(target_arch = "wasm32", deny(missing_docs))]
#![forbid(unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod events;
#[cfg(target_arch = "wasm32")]
pub mod idb;
#[cfg(target_arch = "wasm32")]
mod net;
#[cfg(target_arch = "wasm32")]
mod runtime;

#[cfg(target_arch = "wasm32")]
pub use api::{PendingLink, SottoClient, MAX_ATTACHMENT_BYTES};

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A conversation: with one user, or a group. */
export type ConversationId = { kind: "direct"; id: string } | { kind: "group"; id: string };

export type MessageStatus = "pending" | "sent" | "delivered" | "read" | "failed" | "received";

export interface AttachmentPointer {
  attachmentId: string;
  /** The attachment key (hex). Secret: keep it inside the app. */
  key: string;
  digest: string;
  size: number;
  fileName: string;
  contentType: string;
}

export interface Message {
  id: string;
  conversation: ConversationId;
  senderUserId: string;
  senderDeviceId: number;
  outgoing: boolean;
  sentAt: number;
  serverTimestamp: number | null;
  text: string | null;
  attachment: AttachmentPointer | null;
  status: MessageStatus;
  /** Position in the conversation (a 64-bit number as a decimal string): the history cursor. */
  sort: string;
}

export interface MessagePreview { id: string; senderUserId: string; text: string; sentAt: number; }

export interface Conversation {
  id: ConversationId;
  name: string | null;
  lastMessage: MessagePreview | null;
  unreadCount: number;
  lastSort: string;
}

export interface HistoryPage { messages: Message[]; nextCursor: string | null; }
export interface SentMessage { id: string; serverTimestamp: number; }
export interface SafetyNumber { display: string; qrPayload: string; verified: boolean; }
export interface Device { deviceId: number; createdAt: number; thisDevice: boolean; }
export interface Presence { userId: string; status: "online" | "away" | "offline"; lastSeen: number | null; }
export interface UserProfile { userId: string; username: string; }
export interface GroupMember { userId: string; admin: boolean; }
export interface Group { groupId: string; name: string; description: string; avatar: AttachmentPointer | null; members: GroupMember[]; revision: number; active: boolean; }
export interface GroupInvitation { groupId: string; fromUserId: string; invitedAt: number; }

export interface StoreOptions {
  /** IndexedDB database name (default "sotto"). */
  name?: string;
  /** Keep nothing: an in-memory store. */
  memory?: boolean;
  /** Unlocks the store (Argon2id). */
  passphrase: string;
  /** Test-only Argon2id cost. Never for real profiles. */
  insecureFastKdf?: boolean;
}
export type IdentityPolicy = "requireApproval" | "acceptAndNotify";
export interface LoginOptions {
  serverUrl: string; username: string; password: string; store: StoreOptions;
  identityPolicy?: IdentityPolicy;
}
export interface OpenOptions { store: StoreOptions; identityPolicy?: IdentityPolicy; }

export type SendFailure =
  | "unknownUser" | "noVerifiedDevices" | "deviceListUnresolved" | { rejected: { code: string } } | "badRelayAnswer";

export type SottoEvent =
  | { type: "message"; message: Message }
  | { type: "messageSent"; conversation: ConversationId; messageId: string; serverTimestamp: number }
  | { type: "sendFailed"; conversation: ConversationId; messageId: string; reason: SendFailure }
  | { type: "delivered"; messageId: string; userId: string; deviceId: number }
  | { type: "read"; conversation: ConversationId; messageIds: string[]; userId: string }
  | { type: "conversationUpdated"; conversation: Conversation }
  | { type: "identityChanged"; userId: string; wasVerified: boolean; needsApproval: boolean }
  | { type: "untrustedDevice"; userId: string; deviceId: number }
  | { type: "decryptionFailed"; userId: string; deviceId: number; reason: string }
  | { type: "typing"; conversation: ConversationId; userId: string; typing: boolean }
  | { type: "presence"; userId: string; status: "online" | "away" | "offline"; lastSeen: number | null }
  | { type: "groupChanged"; groupId: string }
  | { type: "unverifiedGroupMember"; groupId: string; userId: string }
  | { type: "groupInvitation"; groupId: string; fromUserId: string; name: string }
  | { type: "deviceLinked"; deviceId: number }
  | { type: "connection"; state: "connecting" | "connected" | "caughtUp" | "disconnected" | "closed" }
  | { type: "storeFailed"; reason: string };

/**
 * Every rejected Promise and thrown call gives a `SottoError`: an `Error` whose `name` is
 * "SottoError" and whose `code` says what went wrong.
 */
export interface SottoError extends Error {
  name: "SottoError";
  code:
    | "invalidUrl" | "invalidArgument" | "unreachable" | "rateLimited" | "rejected" | "store"
    | "wrongPassphrase" | "noAccount" | "profileExists" | "usernameTaken" | "invalidCredentials"
    | "deviceExists" | "invalidText" | "invalidRecipient" | "unknownUser" | "noVerifiedDevices"
    | "deviceListUnresolved" | "stopped" | "noSession" | "unknownContact" | "nothingPending"
    | "unknownDevice" | "tooLarge" | "corrupt" | "unknownAttachment" | "unknownGroup" | "notAdmin"
    | "invalidName" | "invalidMembers" | "unknownMember" | "groupFull" | "lastAdmin" | "linkTimedOut";
}
"#;
