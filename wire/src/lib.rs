//! Wire types shared by the Sotto relay and its clients.
//!
//! Everything here is plain data: JSON field names are camelCase, binary values (keys, signatures,
//! ciphertext) are standard base64 with padding ([`Base64`]), times are milliseconds since the Unix
//! epoch, user ids are UUID strings and device ids are small integers starting at 1.
//!
//! ```text
//!  client                                  relay
//!    │ POST /api/users/register ───────────▶ account
//!    │ POST /api/users/login ──────────────▶ device 1 + bearer token
//!    │ PUT  /api/keys ─────────────────────▶ identity, signed prekey, one-time + KEM prekeys
//!    │ GET  /api/keys/{userId} ────────────▶ one bundle per device (one-time keys claimed once)
//!    │ POST /api/messages/send ────────────▶ one envelope per device, committed, then "accepted"
//!    │ WS   /ws ◀──────────────── ServerFrame::Envelope … ClientFrame::Ack { ids } ──▶ deleted
//!    │ POST /api/groups/{id}/messages ─────▶ one stored ciphertext, a reference per member device
//!    │ POST /api/messages/ephemeral ───────▶ typing: to connected devices only, never stored
//!    │ POST /api/attachments ──────────────▶ opaque blob (streamed), GET by unguessable id
//!    │ POST /api/provisioning … /api/devices/link ──▶ a new device linked from an existing one
//! ```
//!
//! A round trip through JSON:
//!
//! ```
//! use sotto_wire::{Base64, ClientFrame, OutgoingMessage, SendMessageRequest};
//!
//! let request = SendMessageRequest {
//!     recipient_id: "7d4e0b9c-2f0a-4c5e-9a3b-1f2e3d4c5b6a".into(),
//!     client_message_id: "m-1".into(),
//!     messages: vec![OutgoingMessage {
//!         device_id: 1,
//!         registration_id: 4242,
//!         content: Base64(vec![1, 2, 3]),
//!     }],
//!     sync_messages: vec![],
//! };
//! let json = serde_json::to_string(&request).unwrap();
//! assert!(json.contains(r#""recipientId":"7d4e0b9c-2f0a-4c5e-9a3b-1f2e3d4c5b6a""#));
//! assert!(json.contains(r#""content":"AQID""#));
//! let back: SendMessageRequest = serde_json::from_str(&json).unwrap();
//! assert_eq!(back, request);
//!
//! let ack: ClientFrame = serde_json::from_str(r#"{"type":"ack","data":{"ids":[1,2]}}"#).unwrap();
//! assert_eq!(ack, ClientFrame::Ack { ids: vec![1, 2] });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod attachments;
mod groups;
mod linking;
mod presence;

pub use attachments::*;
pub use groups::*;
pub use linking::*;
pub use presence::*;

/// Bytes carried as a standard, padded base64 string in JSON.
///
/// `Debug` prints only the length: these are usually ciphertext or keys, and logs must not hold them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64(pub Vec<u8>);

impl Base64 {
    /// The decoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Takes the decoded bytes out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Base64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Base64 {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Base64 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .content_encoding("base64")
            .description(Some("bytes as standard base64 with padding"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Base64 {}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Base64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a standard base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Base64, E> {
                STANDARD
                    .decode(v)
                    .map(Base64)
                    .map_err(|_| E::custom("invalid base64"))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Every non-2xx answer of the relay: a stable machine-readable `code` and a human `message`.
///
/// Some answers carry details next to the two fields: see [`MismatchedDevices`] (409 on send) and
/// [`StaleDevices`] (410 on send).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable identifier, e.g. `invalid_json`, `unauthorized`, `mismatched_devices`.
    pub code: String,
    /// Human readable explanation; never contains internal error details.
    pub message: String,
}

/// An owned device address, as carried in error details.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    /// The user id.
    pub user_id: String,
    /// The device id.
    pub device_id: u32,
}

/// 409 `mismatched_devices` on send: the ciphertext set does not match the current devices.
/// The client fetches bundles for `missingDevices`, drops sessions of `extraDevices`, and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MismatchedDevices {
    /// Always `mismatched_devices`.
    pub code: String,
    /// Human readable explanation.
    pub message: String,
    /// Current devices the request has no ciphertext for.
    pub missing_devices: Vec<DeviceRef>,
    /// Devices in the request that do not exist (any more).
    pub extra_devices: Vec<DeviceRef>,
}

/// 410 `stale_devices` on send: these devices were re-registered (their registration id changed);
/// the client must fetch their new bundles, start new sessions and retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StaleDevices {
    /// Always `stale_devices`.
    pub code: String,
    /// Human readable explanation.
    pub message: String,
    /// Devices whose registration id differs from the one in the request.
    pub stale_devices: Vec<DeviceRef>,
}

// ---------------------------------------------------------------------------------------------
// Accounts

/// `POST /api/users/register`. Username 3-20 characters of `[A-Za-z0-9_]`, a plausible e-mail
/// address (≤ 254 bytes), a password of 8-256 bytes. Answer: 201 [`RegisterResponse`]; 409
/// `username_taken`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    /// Login name, unique, case-sensitive.
    pub username: String,
    /// Contact address (kept, not verified by the relay).
    pub email: String,
    /// Password; hashed with argon2id, never stored or logged in clear.
    pub password: String,
}

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            username,
            email,
            password: _,
        } = self;
        f.debug_struct("RegisterRequest")
            .field("username", username)
            .field("email", email)
            .finish_non_exhaustive()
    }
}

/// Answer to [`RegisterRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// The new account's id (a UUID).
    pub user_id: String,
}

/// `POST /api/users/login`: creates the account's first device and its bearer token. An account
/// that already has a device answers 409 `device_exists` (further devices are linked from an existing
/// one). Wrong username or password: 401 `invalid_credentials`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Random value chosen by the device at install time (1..=16380 in Signal; any non-zero u32 here).
    /// A device that re-registers picks a new one, so peers can tell its old sessions are stale.
    pub registration_id: u32,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            username,
            password: _,
            registration_id,
        } = self;
        f.debug_struct("LoginRequest")
            .field("username", username)
            .field("registration_id", registration_id)
            .finish_non_exhaustive()
    }
}

/// Answer to [`LoginRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// The account's id.
    pub user_id: String,
    /// The new device's id.
    pub device_id: u32,
    /// Bearer token for this device: `Authorization: Bearer <token>` (or `/ws?token=<token>`).
    pub token: String,
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            user_id,
            device_id,
            token: _,
        } = self;
        f.debug_struct("LoginResponse")
            .field("user_id", user_id)
            .field("device_id", device_id)
            .finish_non_exhaustive()
    }
}

/// One device as listed by `GET /api/users/{userId}/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Device id, starting at 1.
    pub device_id: u32,
    /// The device's current registration id.
    pub registration_id: u32,
    /// When the device was created (ms since the epoch).
    pub created_at: u64,
}

/// Answer of `GET /api/users/{userId}/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceList {
    /// The user id asked for.
    pub user_id: String,
    /// Every current device, by device id.
    pub devices: Vec<DeviceInfo>,
}

/// Answer of `GET /api/usernames/{username}` and `GET /api/users/{userId}/profile`: who an account
/// is. The username is spelled as it was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    /// The account's user id.
    pub user_id: String,
    /// Its username, as registered.
    pub username: String,
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A one-time EC prekey (X25519 public key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreKey {
    /// Client-chosen id, unique per device and key type.
    pub key_id: u32,
    /// The public key bytes.
    pub public_key: Base64,
}

/// A prekey signed by the account identity key: the signed EC prekey, or an ML-KEM-768 prekey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedPreKey {
    /// Client-chosen id, unique per device and key type.
    pub key_id: u32,
    /// The public key bytes.
    pub public_key: Base64,
    /// Signature by the identity key, verified by the relay on upload.
    pub signature: Base64,
}

/// `PUT /api/keys`: upload keys for the authenticated device. Every field is optional; a field that
/// is present replaces the stored keys of that type (one-time lists replace the whole list).
/// Signatures are checked against `identityKey` (or the stored one when absent). Answer: 204.
///
/// The identity key belongs to the account: it is set by the first upload and may only change while
/// the uploading device is the account's only device (409 `identity_key_mismatch` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeysUpload {
    /// The account identity public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<Base64>,
    /// The device's signed EC prekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_pre_key: Option<SignedPreKey>,
    /// One-time EC prekeys (at most 100 per upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_keys: Option<Vec<PreKey>>,
    /// One-time signed ML-KEM-768 prekeys (at most 100 per upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_pre_keys: Option<Vec<SignedPreKey>>,
    /// The last-resort ML-KEM-768 prekey, handed out when the one-time KEM keys run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_last_resort_key: Option<SignedPreKey>,
}

/// Answer of `GET /api/keys/count`: how many one-time keys of the device are left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyCount {
    /// One-time EC prekeys left.
    pub count: u32,
    /// One-time ML-KEM prekeys left (the last-resort key is not counted).
    pub kem_count: u32,
}

/// The prekeys of one device, as handed out to a peer starting a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceBundle {
    /// Device id.
    pub device_id: u32,
    /// Registration id, to be echoed in [`OutgoingMessage::registration_id`].
    pub registration_id: u32,
    /// The signed EC prekey.
    pub signed_pre_key: SignedPreKey,
    /// A one-time EC prekey, claimed for this fetch only; absent when none are left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_key: Option<PreKey>,
    /// A one-time KEM prekey, or the last-resort KEM prekey when none are left; absent only when the
    /// device never uploaded KEM keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_pre_key: Option<SignedPreKey>,
}

/// Answer of `GET /api/keys/{userId}` (every device) and `GET /api/keys/{userId}/{deviceId}`.
/// Devices that have not uploaded a signed prekey yet are left out; 404 when none is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PreKeyBundles {
    /// The user id.
    pub user_id: String,
    /// The account identity key.
    pub identity_key: Base64,
    /// One bundle per device.
    pub devices: Vec<DeviceBundle>,
}

// ---------------------------------------------------------------------------------------------
// Messages

/// One ciphertext for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutgoingMessage {
    /// Destination device id.
    pub device_id: u32,
    /// The registration id the sender's session was built for (from [`DeviceBundle`]).
    pub registration_id: u32,
    /// Opaque ciphertext (≤ 64 KiB by default).
    pub content: Base64,
}

/// `POST /api/messages/send`: one ciphertext for every device of `recipientId` in `messages`, and
/// one for every *other* device of the sender in `syncMessages`. When sending to oneself, `messages`
/// covers one's other devices and `syncMessages` must be empty.
///
/// Answers: 200 [`SendMessageResponse`]; 409 [`MismatchedDevices`]; 410 [`StaleDevices`];
/// 404 `unknown_user`; 413 `payload_too_large`. A retry with the same `clientMessageId` from the
/// same device stores nothing and returns the first answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessageRequest {
    /// The recipient user id.
    pub recipient_id: String,
    /// Client-chosen id, unique per sending device (1-64 bytes), for idempotent retries.
    pub client_message_id: String,
    /// One ciphertext per recipient device.
    pub messages: Vec<OutgoingMessage>,
    /// One ciphertext per other device of the sender.
    #[serde(default)]
    pub sync_messages: Vec<OutgoingMessage>,
}

/// Answer to [`SendMessageRequest`]: the envelopes are durably stored ("accepted").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageResponse {
    /// Relay-assigned id of this message (shared by its per-device envelopes).
    pub server_message_id: String,
    /// When the relay accepted it (ms since the epoch).
    pub server_timestamp: u64,
    /// True when this answer repeats an earlier acceptance of the same `clientMessageId`.
    #[serde(default)]
    pub duplicate: bool,
}

/// What a queued envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum EnvelopeKind {
    /// Ciphertext from another device.
    Message,
    /// Relay-generated: a recipient device acked the message `serverMessageId` sent by this account.
    /// `sourceUserId`/`sourceDeviceId` name the device that received it; there is no content.
    DeliveryReceipt,
    /// A group's shared Sender-Key ciphertext (`groupId` is set); stored once by the relay.
    GroupMessage,
    /// Relay-generated: a group's membership changed; `content` is a JSON [`GroupEvent`].
    GroupEvent,
}

/// A queued item of a device's mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Position in this device's mailbox (strictly increasing); ack with this id.
    pub seq: u64,
    /// What this is.
    pub kind: EnvelopeKind,
    /// Sending user (for receipts: the user whose device received the message).
    pub source_user_id: String,
    /// Sending device (for receipts: the device that acked).
    pub source_device_id: u32,
    /// The message id the relay gave the sender.
    pub server_message_id: String,
    /// The sender's client message id.
    pub client_message_id: String,
    /// When the relay accepted the message (ms since the epoch).
    pub server_timestamp: u64,
    /// Opaque ciphertext; absent for receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Base64>,
    /// The group, for [`EnvelopeKind::GroupMessage`] and [`EnvelopeKind::GroupEvent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

/// Answer of `GET /api/messages/unread`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnreadCount {
    /// Envelopes queued for the authenticated device.
    pub count: u64,
}

/// Answer of `GET /api/messages?after={seq}&limit={n}` (limit 1-100, default 100): queued
/// envelopes of the authenticated device in mailbox order. Fetching does not delete: ack with
/// `DELETE /api/messages/{seq}` or over the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EnvelopePage {
    /// Envelopes with `seq > after`, oldest first.
    pub envelopes: Vec<Envelope>,
    /// Pass as `after` for the next page; absent when this page is the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames (`/ws`): JSON text frames `{"type": …, "data": …}`.

/// Frames the relay sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
#[non_exhaustive]
pub enum ServerFrame {
    /// A queued envelope; ack it with [`ClientFrame::Ack`] once stored on the device.
    Envelope(Envelope),
    /// Everything queued when the connection opened has been sent (new envelopes keep coming).
    QueueEmpty,
    /// Answer to [`ClientFrame::Ping`].
    Pong,
    /// A frame was not understood or referred to unknown envelopes; the connection stays open
    /// unless the error says otherwise.
    Error(ErrorBody),
    /// A presence change of a user who shares a group with this device's user, or that this
    /// device subscribed to.
    Presence(UserStatus),
    /// An ephemeral envelope (typing): never stored, never acked.
    Ephemeral(EphemeralEnvelope),
}

/// Frames a device sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(
    tag = "type",
    content = "data",
    rename_all = "camelCase",
    deny_unknown_fields
)]
#[non_exhaustive]
pub enum ClientFrame {
    /// Delete these envelopes (by [`Envelope::seq`]) from the mailbox.
    Ack {
        /// Sequence numbers, at most 100 per frame.
        ids: Vec<u64>,
    },
    /// Application-level keepalive (WebSocket pings work too).
    Ping,
}

/// WebSocket close codes the relay uses (4000-4999 is the application range).
pub mod close_code {
    /// Another connection of the same device took over.
    pub const REPLACED: u16 = 4001;
    /// The client did not read or ack fast enough; its envelopes stay queued.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// Nothing heard from the client within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4003;
    /// The device was removed or its token revoked.
    pub const REVOKED: u16 = 4004;
    /// The relay is shutting down; reconnect later.
    pub const GOING_AWAY: u16 = 1001;
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` when the database answers.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rejects_garbage_and_debug_hides_bytes() {
        assert!(serde_json::from_str::<Base64>("\"!!\"").is_err());
        assert!(serde_json::from_str::<Base64>("12").is_err());
        let b: Base64 = serde_json::from_str("\"AQID\"").unwrap();
        assert_eq!(b.as_bytes(), &[1, 2, 3]);
        assert_eq!(format!("{b:?}"), "Base64(3 bytes)");
    }

    #[test]
    fn frames_are_tagged() {
        let f = ServerFrame::QueueEmpty;
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"queueEmpty"}"#
        );
        let p: ClientFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(p, ClientFrame::Ping);
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn secrets_not_in_debug() {
        let r = LoginRequest {
            username: "a".into(),
            password: "hunter22".into(),
            registration_id: 1,
        };
        assert!(!format!("{r:?}").contains("hunter22"));
        let r = LoginResponse {
            user_id: "u".into(),
            device_id: 1,
            token: "tok123".into(),
        };
        assert!(!format!("{r:?}").contains("tok123"));
    }
}
