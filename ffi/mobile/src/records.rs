//! The records and enums the app sees: plain data, copied across the boundary.

/// How to reach the relay and unlock the store.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientConfig {
    /// The relay, `https://relay.example` (or `http://127.0.0.1:PORT` in development).
    pub server_url: String,
    /// The SQLite store file (created if missing); none keeps the store in memory.
    pub store_path: Option<String>,
    /// What unlocks the store.
    pub store_key: StoreKey,
    /// What to do when a contact's identity changes.
    pub identity_policy: IdentityPolicy,
}

/// What unlocks the store. No Debug output of the secret.
#[derive(Clone, uniffi::Enum)]
pub enum StoreKey {
    /// A 32-byte key the app keeps in the OS keychain.
    Key {
        /// Exactly 32 bytes.
        bytes: Vec<u8>,
    },
    /// A passphrase, stretched with Argon2id.
    Passphrase {
        /// Not empty.
        passphrase: String,
    },
    /// A passphrase with cheap Argon2id parameters: tests only.
    InsecureTestPassphrase {
        /// Not empty.
        passphrase: String,
    },
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Key { .. } => "StoreKey::Key(..)",
            Self::Passphrase { .. } => "StoreKey::Passphrase(..)",
            Self::InsecureTestPassphrase { .. } => "StoreKey::InsecureTestPassphrase(..)",
        })
    }
}

/// What to do when a contact's identity key changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum IdentityPolicy {
    /// Hold messages to and from the new identity until `approve_identity` (the safe default).
    RequireApproval,
    /// Accept it, tell the app (`Event.IdentityChanged`) and carry on.
    AcceptAndNotify,
}

/// A conversation: with one user, or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ConversationId {
    /// 1:1 with this user.
    Direct {
        /// The other user's id.
        user_id: String,
    },
    /// A group.
    Group {
        /// The relay's group id.
        group_id: String,
    },
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MessageStatus {
    /// Queued here, not yet accepted by the relay.
    Pending,
    /// Accepted by the relay.
    Sent,
    /// A recipient device got it.
    Delivered,
    /// The recipient read it.
    Read,
    /// Given up (see `Event.SendFailed`).
    Failed,
    /// Someone else sent it.
    Received,
}

/// An attachment a message carries. `key` opens the blob: keep it as secret as the message
/// (it is left out of Debug output).
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct Attachment {
    /// The relay's attachment id.
    pub attachment_id: String,
    /// The 32-byte attachment key, hex.
    pub key: String,
    /// SHA-256 of the encrypted blob, hex.
    pub digest: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// The sender's file name.
    pub file_name: String,
    /// The sender's MIME type.
    pub content_type: String,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("attachment_id", &self.attachment_id)
            .field("size", &self.size)
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// The sender's message id (32 hex digits).
    pub id: String,
    /// Its conversation.
    pub conversation: ConversationId,
    /// Who wrote it.
    pub sender_user_id: String,
    /// From which of the sender's devices.
    pub sender_device_id: u32,
    /// Whether this account wrote it.
    pub outgoing: bool,
    /// The sender's clock (ms).
    pub sent_at: u64,
    /// The relay's acceptance time (ms), once known.
    pub server_timestamp: Option<u64>,
    /// The text, if any.
    pub text: Option<String>,
    /// The attachment, if any.
    pub attachment: Option<Attachment>,
    /// Its status.
    pub status: MessageStatus,
    /// Position in the conversation (the history cursor).
    pub sort: u64,
}

/// A conversation's newest message, for the list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessagePreview {
    /// The message id.
    pub id: String,
    /// Its sender.
    pub sender_user_id: String,
    /// Its text, or the attachment's file name.
    pub text: String,
    /// Its time (ms).
    pub sent_at: u64,
}

/// A conversation for the list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Conversation {
    /// Which conversation.
    pub id: ConversationId,
    /// A group's name; none for 1:1.
    pub name: Option<String>,
    /// The newest message.
    pub last_message: Option<MessagePreview>,
    /// Received and not yet marked read.
    pub unread_count: u32,
    /// Sort key of the newest message.
    pub last_sort: u64,
}

/// A message the relay accepted.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SentMessage {
    /// Its id.
    pub id: String,
    /// When the relay accepted it (ms).
    pub server_timestamp: u64,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HistoryPage {
    /// Newest first.
    pub messages: Vec<Message>,
    /// Pass as `before` for the next (older) page; none on the last page.
    pub next_cursor: Option<u64>,
}

/// One device of this account.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Device {
    /// Its id.
    pub device_id: u32,
    /// When it was created (ms).
    pub created_at: u64,
    /// Whether it is this device.
    pub this_device: bool,
}

/// Online, away or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PresenceStatus {
    /// Connected and active.
    Online,
    /// Connected, set away.
    Away,
    /// Not connected.
    Offline,
}

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Presence {
    /// Who.
    pub user_id: String,
    /// Their status.
    pub status: PresenceStatus,
    /// Last seen (ms), when offline.
    pub last_seen: Option<u64>,
}

/// Who an account is.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UserProfile {
    /// The user id messages are addressed to.
    pub user_id: String,
    /// The username, spelled as registered.
    pub username: String,
}

/// A safety number and its QR payload.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SafetyNumber {
    /// 60 digits in twelve blocks of five.
    pub display: String,
    /// What the QR code carries.
    pub qr_payload: Vec<u8>,
    /// Whether the contact is marked verified.
    pub verified: bool,
}

/// The connection to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Connecting, or waiting to reconnect.
    Connecting,
    /// Connected; the backlog is arriving.
    Connected,
    /// The backlog present at connect has arrived.
    CaughtUp,
    /// Lost; reconnecting with backoff.
    Disconnected,
    /// Removed or replaced by another connection: no more reconnects.
    Closed,
}

/// Why an outgoing message was given up.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SendFailure {
    /// The relay does not know the recipient.
    UnknownUser,
    /// The recipient has no device whose keys verify.
    NoVerifiedDevices,
    /// The relay keeps listing devices that cannot be verified.
    DeviceListUnresolved,
    /// The relay refused it.
    Rejected {
        /// The relay's error code.
        code: String,
    },
    /// The relay's answers made no sense.
    BadRelayAnswer,
    /// A reason this binding version does not know yet.
    Other {
        /// For logs.
        reason: String,
    },
}

/// Everything the client tells the app. Variant names differ from the record names on purpose:
/// Kotlin nests variants inside the sealed class, where `Message` would shadow the record.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Event {
    /// A message arrived, or this account sent one on another device.
    MessageReceived {
        /// The message.
        message: Message,
    },
    /// The relay accepted an outgoing message.
    MessageSent {
        /// Its conversation.
        conversation: ConversationId,
        /// Its id.
        message_id: String,
        /// The relay's time (ms).
        server_timestamp: u64,
    },
    /// An outgoing message was given up.
    SendFailed {
        /// Its conversation.
        conversation: ConversationId,
        /// Its id.
        message_id: String,
        /// Why.
        failure: SendFailure,
    },
    /// A recipient device got a message.
    Delivered {
        /// The message id.
        message_id: String,
        /// The recipient.
        user_id: String,
        /// Its device.
        device_id: u32,
    },
    /// A recipient read messages (or this account read them on another device).
    Read {
        /// The conversation.
        conversation: ConversationId,
        /// The messages read.
        message_ids: Vec<String>,
        /// Who read them.
        user_id: String,
    },
    /// A conversation's unread count or last message changed.
    ConversationUpdated {
        /// The conversation now.
        conversation: Conversation,
    },
    /// A contact's identity key changed.
    IdentityChanged {
        /// The contact.
        user_id: String,
        /// Whether the old identity had been verified.
        was_verified: bool,
        /// Whether sending waits for `approve_identity`.
        needs_approval: bool,
    },
    /// The relay listed a device not signed by the account's identity: it gets nothing.
    UntrustedDevice {
        /// The account.
        user_id: String,
        /// The device.
        device_id: u32,
    },
    /// An envelope could not be decrypted; it was dropped.
    DecryptionFailed {
        /// The claimed sender.
        user_id: String,
        /// The claimed device.
        device_id: u32,
        /// Why, for logs.
        reason: String,
    },
    /// A contact started or stopped typing.
    Typing {
        /// Where.
        conversation: ConversationId,
        /// Who.
        user_id: String,
        /// Started (true) or stopped.
        typing: bool,
    },
    /// A user's presence changed.
    PresenceChanged {
        /// The presence now.
        presence: Presence,
    },
    /// A group's state changed.
    GroupChanged {
        /// The group.
        group_id: String,
    },
    /// The relay lists a group member no admin announced: it gets no key.
    UnverifiedGroupMember {
        /// The group.
        group_id: String,
        /// The member.
        user_id: String,
    },
    /// An invitation to a group.
    GroupInvitation {
        /// The group.
        group_id: String,
        /// Who invited.
        from_user_id: String,
        /// The group's name.
        name: String,
    },
    /// A new device was linked to this account.
    DeviceLinked {
        /// Its id.
        device_id: u32,
    },
    /// The connection changed.
    ConnectionChanged {
        /// The state now.
        state: ConnectionState,
    },
    /// The store failed; the client stopped (nothing unstored was acknowledged).
    StoreFailed {
        /// For logs.
        reason: String,
    },
}
