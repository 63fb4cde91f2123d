//! Sender Keys: one ciphertext per group message, whatever the group's size.
//!
//! Every sending device of a group owns an outbound [`SenderKeyState`]: a symmetric hash chain (one
//! message key per message, the chain only ever moves forward) and an Ed25519 signing key. It hands a
//! [`SenderKeyDistributionMessage`] (the chain key at the current iteration and the public signing
//! key) to every other member device over their pairwise 1:1 sessions. Each receiving device keeps a
//! [`SenderKeyRecord`] per (group, sender device) and decrypts that sender's [`SenderKeyMessage`]s
//! with it.
//!
//! ```text
//!   sender device                                   member device
//!   SenderKeyState ── distribution_message() ──▶ 1:1 session ──▶ SenderKeyRecord::process_distribution
//!        │ encrypt(plaintext)                                          │
//!        └──── SenderKeyMessage (one ciphertext, relay fans out) ────▶ decrypt(message)
//! ```
//!
//! Properties (details and the security argument in `docs/protocol/sender-keys.md`):
//! - forward secrecy within a chain: a message key is derived from the chain key by HMAC and the chain
//!   key is then replaced by a one-way step, so a stolen record cannot decrypt earlier messages;
//! - a late joiner that receives a distribution at iteration `N` decrypts messages `N..` only;
//! - every message is signed, so members (who all hold the chain key) cannot forge each other's
//!   messages, and a tampered message is rejected before any state changes;
//! - replays are rejected, out-of-order delivery works within [`MAX_FORWARD_JUMP`] and
//!   [`MAX_SKIPPED_MESSAGE_KEYS`], and a failed decryption leaves the record unchanged;
//! - post-compromise security comes from rotation: [`SenderKeyState::rotate`] starts a fresh chain
//!   (new chain id, chain key and signing key), which the application does whenever membership
//!   shrinks.
//!
//! ```
//! use rand_chacha::rand_core::SeedableRng;
//! use sotto_crypto::sender_key::{GroupId, SenderKeyRecord, SenderKeyState, SenderKeyDistributionMessage, SenderKeyMessage};
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
//! let group = GroupId::new(b"group-42".to_vec()).unwrap();
//!
//! // Alice's device creates its outbound state and sends the distribution over 1:1 sessions.
//! let mut alice = SenderKeyState::new(group.clone(), &mut rng);
//! let distribution = alice.distribution_message().to_bytes();
//!
//! // Bob's device installs it in the record it keeps for (group, Alice's device).
//! let mut from_alice = SenderKeyRecord::new(group);
//! from_alice
//!     .process_distribution(&SenderKeyDistributionMessage::from_bytes(&distribution).unwrap())
//!     .unwrap();
//!
//! // One ciphertext for the whole group.
//! let wire = alice.encrypt(b"hello group").unwrap().to_bytes();
//! let plaintext = from_alice.decrypt(&SenderKeyMessage::from_bytes(&wire).unwrap()).unwrap();
//! assert_eq!(plaintext, b"hello group");
//! ```

mod chain;
mod message;
mod record;
mod state;

pub use message::{SenderKeyDistributionMessage, SenderKeyMessage};
pub use record::SenderKeyRecord;
pub use state::SenderKeyState;

use crate::DecodeError;

/// Format version of every sender-key encoding (messages, distributions, states, records).
pub const VERSION: u8 = 1;

/// The most messages a receiver will skip forward in one step (a larger gap is rejected).
pub const MAX_FORWARD_JUMP: u32 = 25_000;

/// The most skipped message keys a receiver keeps per chain; beyond it the oldest are dropped.
pub const MAX_SKIPPED_MESSAGE_KEYS: usize = 2_000;

/// The most chains (states) a receiver keeps per sender; a new one evicts the oldest.
pub const MAX_STATES_PER_SENDER: usize = 5;

/// The longest group id accepted, in bytes.
pub const MAX_GROUP_ID_LEN: usize = 64;

/// The longest plaintext a [`SenderKeyMessage`] carries (the relay's envelope cap is 64 KiB).
pub const MAX_PLAINTEXT_LEN: usize = 60 * 1024;

/// The opaque id of a group, as the application names it (e.g. the 16 bytes of a UUID).
///
/// It is bound into every message's associated data, so a message cannot be moved to another group.
/// Group ids are not secret: the relay routes by them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupId(Box<[u8]>);

impl GroupId {
    /// A group id of 1 to [`MAX_GROUP_ID_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, InvalidGroupId> {
        let bytes: Vec<u8> = bytes.into();
        if bytes.is_empty() || bytes.len() > MAX_GROUP_ID_LEN {
            return Err(InvalidGroupId(bytes.len()));
        }
        Ok(Self(bytes.into_boxed_slice()))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn encode(&self, w: &mut crate::codec::Writer) {
        w.bytes(&self.0);
    }

    pub(crate) fn decode(r: &mut crate::codec::Reader<'_>) -> Result<Self, DecodeError> {
        Self::new(r.bytes(MAX_GROUP_ID_LEN)?).map_err(|_| DecodeError::InvalidValue("group id"))
    }
}

/// Writes the head a distribution and a stored state share:
/// `u8 version | u8 tag | u32 len + group id | u32 chain id | u32 iteration | 32 chain key`.
/// The caller appends the signing key (public or secret) and must wipe the buffer.
pub(crate) fn write_chain_head(
    tag: u8,
    group_id: &GroupId,
    chain_id: u32,
    chain_key: &chain::ChainKey,
) -> crate::codec::Writer {
    let mut w = crate::codec::Writer::with_capacity(2 + 4 + group_id.as_bytes().len() + 8 + 64);
    w.u8(VERSION).u8(tag);
    group_id.encode(&mut w);
    w.u32(chain_id)
        .u32(chain_key.iteration())
        .fixed(chain_key.key_bytes());
    w
}

/// Reads what [`write_chain_head`] writes.
pub(crate) fn read_chain_head(
    r: &mut crate::codec::Reader<'_>,
    tag: u8,
) -> Result<(GroupId, u32, chain::ChainKey), DecodeError> {
    r.version(VERSION)?;
    r.tag(tag)?;
    let group_id = GroupId::decode(r)?;
    let chain_id = r.u32()?;
    let iteration = r.u32()?;
    let key = zeroize::Zeroizing::new(r.array::<{ chain::KEY_LEN }>()?);
    Ok((group_id, chain_id, chain::ChainKey::new(&key, iteration)))
}

/// A group id was empty or longer than [`MAX_GROUP_ID_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a group id must be 1 to {MAX_GROUP_ID_LEN} bytes, got {0}")]
pub struct InvalidGroupId(pub usize);

/// Why [`SenderKeyState::encrypt`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderKeyEncryptError {
    /// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("plaintext of {0} bytes exceeds the maximum of {MAX_PLAINTEXT_LEN}")]
    PlaintextTooLong(usize),
    /// The chain reached its last iteration; [`SenderKeyState::rotate`] starts a new one.
    #[error("the sender-key chain is exhausted; rotate it")]
    ChainExhausted,
}

/// Why [`SenderKeyRecord::decrypt`] failed. The record is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderKeyDecryptError {
    /// No distribution for this chain was received (or its state was evicted).
    #[error("no sender-key state for chain {0:#010x}")]
    UnknownChain(u32),
    /// The signature does not verify under the chain's signing key.
    #[error("invalid sender-key message signature")]
    BadSignature,
    /// This iteration was already decrypted, or its key was evicted as too old.
    #[error("message {iteration} was already received or its key is no longer kept")]
    Replay {
        /// The message's iteration.
        iteration: u32,
    },
    /// The message precedes the iteration at which this device received the chain (late joiner).
    #[error("message {iteration} precedes this device's first iteration {first}")]
    BeforeJoin {
        /// The message's iteration.
        iteration: u32,
        /// The first iteration this device can decrypt.
        first: u32,
    },
    /// The message is more than [`MAX_FORWARD_JUMP`] iterations ahead of the chain.
    #[error("message {iteration} is too far ahead of the chain at {current}")]
    TooFarAhead {
        /// The message's iteration.
        iteration: u32,
        /// The chain's current iteration.
        current: u32,
    },
    /// The signature verified but the ciphertext did not (wrong group, or a broken sender).
    #[error("sender-key message failed to decrypt")]
    DecryptionFailed,
}

/// Why [`SenderKeyRecord::process_distribution`] refused a distribution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessDistributionError {
    /// The distribution names a different group than the record.
    #[error("the distribution is for another group")]
    GroupMismatch,
}
