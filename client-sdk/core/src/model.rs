//! What the app sees: conversations, messages, receipts and events. Plain records, no generics,
//! no lifetimes, so they map one to one onto Kotlin/Swift/JS records.

use serde::{Deserialize, Serialize};

/// A conversation: with one user, or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum ConversationId {
    /// 1:1 with this user id.
    Direct(String),
    /// The group with this relay group id.
    Group(String),
}

impl ConversationId {
    /// The store's partition key for this conversation's rows.
    pub fn key(&self) -> Vec<u8> {
        match self {
            Self::Direct(u) => format!("d:{u}").into_bytes(),
            Self::Group(g) => format!("g:{g}").into_bytes(),
        }
    }
}

impl core::fmt::Display for ConversationId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Direct(u) => write!(f, "user {u}"),
            Self::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// Where an outgoing message stands (incoming messages are [`MessageStatus::Received`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MessageStatus {
    /// Queued on this device, not yet accepted by the relay.
    Pending,
    /// Accepted (stored) by the relay.
    Sent,
    /// At least one recipient device acked it (relay receipt).
    Delivered,
    /// The recipient read it (end-to-end encrypted receipt).
    Read,
    /// Given up; see the `SendFailed` event.
    Failed,
    /// A message another user sent.
    Received,
}

/// An attachment as a message carries it: the blob's id on the relay plus what opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentPointer {
    /// The relay's attachment id.
    pub attachment_id: String,
    /// The 32-byte attachment key, hex. Secret: it travels only inside encrypted messages and the
    /// encrypted store.
    pub key: String,
    /// The SHA-256 digest of the encrypted blob, hex.
    pub digest: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// File name the sender gave.
    pub file_name: String,
    /// MIME type the sender gave.
    pub content_type: String,
}

/// One message of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The sender's message id (random, 32 hex digits); unique per sender.
    pub id: String,
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Who wrote it.
    pub sender_user_id: String,
    /// From which of the sender's devices.
    pub sender_device_id: u32,
    /// Whether this account wrote it (on this or another own device).
    pub outgoing: bool,
    /// The sender's clock, milliseconds (clamped to the relay's time for incoming messages).
    pub sent_at: u64,
    /// The relay's acceptance time, once known.
    pub server_timestamp: Option<u64>,
    /// The text, if any.
    pub text: Option<String>,
    /// The attachment, if any.
    pub attachment: Option<AttachmentPointer>,
    /// Status (for outgoing messages: pending/sent/failed; delivered/read come from receipts).
    pub status: MessageStatus,
    /// Position in the conversation: the history cursor.
    pub sort: u64,
}

/// The last message of a conversation, for the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePreview {
    /// The message id.
    pub id: String,
    /// Its sender.
    pub sender_user_id: String,
    /// Its text, or the attachment's file name.
    pub text: String,
    /// Its time.
    pub sent_at: u64,
}

/// A conversation for the conversation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// Which conversation.
    pub id: ConversationId,
    /// A group's name (from its encrypted metadata); none for 1:1.
    pub name: Option<String>,
    /// The newest message.
    pub last_message: Option<MessagePreview>,
    /// Messages received and not yet marked read.
    pub unread_count: u32,
    /// Sort key of the newest message.
    pub last_sort: u64,
    /// Ids of the unread incoming messages (oldest first, bounded), for the read receipt.
    #[serde(default)]
    pub unread_ids: Vec<(String, String)>,
}

/// A receipt for an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReceiptKind {
    /// The relay says a recipient device acked it.
    Delivered,
    /// The recipient says (end to end) it read it.
    Read,
}

/// One receipt row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The message.
    pub message_id: String,
    /// Who.
    pub user_id: String,
    /// Which device (0 for a read receipt, which is per user).
    pub device_id: u32,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// When this device learned it (ms).
    pub at: u64,
}

/// Why a send was given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum SendFailure {
    /// The relay does not know the recipient.
    UnknownUser,
    /// The recipient has no device whose keys verify against its identity.
    NoVerifiedDevices,
    /// The relay keeps listing devices that cannot be verified (or keeps refusing the device
    /// list): nothing was sent to them.
    DeviceListUnresolved,
    /// The relay refused the message (`code` as it said).
    Rejected {
        /// The relay's error code.
        code: String,
    },
    /// The relay's answers could not be understood.
    BadRelayAnswer,
}

/// What the core tells the app. One stream for everything.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message arrived, or this account sent one on another device.
    Message(Message),
    /// The relay accepted an outgoing message.
    MessageSent {
        /// Its conversation.
        conversation: ConversationId,
        /// Its id.
        message_id: String,
        /// The relay's time.
        server_timestamp: u64,
    },
    /// An outgoing message was given up.
    SendFailed {
        /// Its conversation.
        conversation: ConversationId,
        /// Its id.
        message_id: String,
        /// Why.
        reason: SendFailure,
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
    /// A recipient read messages (or this account read a conversation on another device).
    Read {
        /// The conversation.
        conversation: ConversationId,
        /// The messages read.
        message_ids: Vec<String>,
        /// Who read them.
        user_id: String,
    },
    /// A conversation's unread count or last message changed.
    ConversationUpdated(Conversation),
    /// A contact's identity key differs from the pinned one. With
    /// [`IdentityPolicy::RequireApproval`](crate::IdentityPolicy) nothing is sent to or accepted
    /// from the new identity until the app calls `approve_identity`.
    IdentityChanged {
        /// The contact.
        user_id: String,
        /// Whether the old identity had been marked verified.
        was_verified: bool,
        /// Whether sending now waits for the app's approval.
        needs_approval: bool,
    },
    /// The relay listed a device whose keys are not signed by the account's identity: it gets
    /// nothing.
    UntrustedDevice {
        /// The account.
        user_id: String,
        /// The device the relay claimed.
        device_id: u32,
    },
    /// An envelope could not be decrypted or made no sense; it was dropped.
    DecryptionFailed {
        /// The claimed sender.
        user_id: String,
        /// The claimed device.
        device_id: u32,
        /// Why, for logs (no secret content).
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
    Presence {
        /// Who.
        user_id: String,
        /// "online", "away" or "offline".
        status: String,
        /// Last seen (ms), when offline.
        last_seen: Option<u64>,
    },
    /// A group's verified state changed (membership, name, description).
    GroupChanged {
        /// The group.
        group_id: String,
    },
    /// The relay lists a member no admin announced end to end: it gets the ciphertext but no key.
    UnverifiedGroupMember {
        /// The group.
        group_id: String,
        /// The member only the relay claims.
        user_id: String,
    },
    /// A group invitation from someone: accept it with `join_group`.
    GroupInvitation {
        /// The group.
        group_id: String,
        /// Who invited.
        from_user_id: String,
        /// The group's name from the invitation.
        name: String,
    },
    /// A new device of this account, signed by its identity, became known to this device (when a
    /// send finds it in the relay's device list: the first send after the link).
    DeviceLinked {
        /// Its id.
        device_id: u32,
    },
}

/// A safety number and the QR payload for comparing identities out of band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumberInfo {
    /// The 60 digits, grouped in twelve blocks of five.
    pub display: String,
    /// The QR code's payload.
    pub qr_payload: Vec<u8>,
    /// Whether the contact is marked verified.
    pub verified: bool,
}

/// A member of a group's verified roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberInfo {
    /// The member's user id.
    pub user_id: String,
    /// Whether the member is an admin.
    pub admin: bool,
}

/// A group as this device knows it: the roster and name announced end to end by an admin (the
/// relay's own membership list is used for routing only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    /// The relay's group id.
    pub group_id: String,
    /// The name (end-to-end encrypted; never sent to the relay in the clear).
    pub name: String,
    /// The description (0-500 characters; end to end only, like the name).
    pub description: String,
    /// The group's picture, an image attachment (download it like any attachment).
    pub avatar: Option<AttachmentPointer>,
    /// The verified roster, this account included while it is a member.
    pub members: Vec<GroupMemberInfo>,
    /// The end-to-end revision of the roster (grows with every admin change).
    pub revision: u64,
    /// Whether this account is still a member (false after leaving or being removed).
    pub active: bool,
}
