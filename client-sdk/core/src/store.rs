//! The core's tables, as plaintext store operations.
//!
//! The core keeps its working state (identity, prekeys, sessions, contacts, conversations, the
//! outbox) in memory and describes every change as [`StoreOp`]s. The runtime commits them, all
//! or nothing, to `sotto_store::EncryptedStore` (which hashes partitions and seals values), and
//! only then acks the envelopes that caused them. At start the runtime scans the tables back
//! into [`Client::restore`](crate::Client::restore). Every value carries its own key, since a
//! scan returns partitions only as hashes. History (the `messages` table) stays in the store
//! and is paged from it; the layout is in `docs/sdk.md`.

use zeroize::Zeroizing;

/// Table names.
pub mod tables {
    /// The account: ids, identity key pair, counters. One row.
    pub const ACCOUNT: &str = "account";
    /// Own prekey secrets, one row per key.
    pub const PREKEYS: &str = "prekeys";
    /// One session record per peer device.
    pub const SESSIONS: &str = "sessions";
    /// Contacts: pinned identity, verified flag.
    pub const CONTACTS: &str = "contacts";
    /// Conversation summaries.
    pub const CONVERSATIONS: &str = "conversations";
    /// Messages, partitioned by conversation, sorted by position.
    pub const MESSAGES: &str = "messages";
    /// Delivery and read receipts, partitioned by message id.
    pub const RECEIPTS: &str = "receipts";
    /// Ids of messages already processed (dedup across restarts and replays).
    pub const SEEN: &str = "seen";
    /// Messages not yet accepted by the relay.
    pub const OUTBOX: &str = "outbox";
    /// Envelopes held until the app approves a changed identity.
    pub const QUARANTINE: &str = "quarantine";
    /// Groups: verified roster, roles, name and description.
    pub const GROUPS: &str = "groups";
    /// Own sender-key state per group.
    pub const SENDER_KEYS_OWN: &str = "sender_keys_own";
    /// Received sender keys per (group, sender device).
    pub const SENDER_KEYS: &str = "sender_keys";

    /// Every table [`Client::restore`](crate::Client::restore) reads (all but messages and
    /// receipts, which are paged).
    pub const RESTORED: &[&str] = &[
        ACCOUNT,
        PREKEYS,
        SESSIONS,
        CONTACTS,
        CONVERSATIONS,
        SEEN,
        OUTBOX,
        QUARANTINE,
        GROUPS,
        SENDER_KEYS_OWN,
        SENDER_KEYS,
    ];
}

/// One change, in plaintext; the encrypted store hashes `partition` and seals `value`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or replace a row.
    Put {
        /// Table.
        table: &'static str,
        /// Partition key.
        partition: Vec<u8>,
        /// Sort key inside the partition.
        sort: u64,
        /// Value (may hold secrets: wiped when dropped).
        value: Zeroizing<Vec<u8>>,
    },
    /// Delete a row.
    Delete {
        /// Table.
        table: &'static str,
        /// Partition key.
        partition: Vec<u8>,
        /// Sort key.
        sort: u64,
    },
}

impl core::fmt::Debug for StoreOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Put {
                table,
                partition: _,
                sort,
                value,
            } => f
                .debug_struct("Put")
                .field("table", table)
                .field("sort", sort)
                .field("value_len", &value.len())
                .finish_non_exhaustive(),
            Self::Delete {
                table,
                partition: _,
                sort,
            } => f
                .debug_struct("Delete")
                .field("table", table)
                .field("sort", sort)
                .finish_non_exhaustive(),
        }
    }
}

/// Decodes one stored message row.
pub fn decode_message(value: &[u8]) -> Result<crate::Message, serde_json::Error> {
    serde_json::from_slice(value)
}

/// Decodes one stored receipt row.
pub fn decode_receipt(value: &[u8]) -> Result<crate::Receipt, serde_json::Error> {
    serde_json::from_slice(value)
}

/// The receipts partition of a message.
pub fn receipts_partition(message_id: &str) -> Vec<u8> {
    message_id.as_bytes().to_vec()
}

/// Applies receipts to a page of messages: an outgoing message is delivered once any receipt
/// says so and read once a read receipt exists.
pub fn apply_receipts(message: &mut crate::Message, receipts: &[crate::Receipt]) {
    if !message.outgoing || matches!(message.status, crate::MessageStatus::Failed) {
        return;
    }
    if receipts.iter().any(|r| r.kind == crate::ReceiptKind::Read) {
        message.status = crate::MessageStatus::Read;
    } else if receipts
        .iter()
        .any(|r| r.kind == crate::ReceiptKind::Delivered)
    {
        message.status = crate::MessageStatus::Delivered;
    }
}
