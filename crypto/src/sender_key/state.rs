//! The outbound side: one per (group, own device).

use ed25519_dalek::SigningKey;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::chain::{ChainKey, KEY_LEN};
use super::message::{SenderKeyDistributionMessage, SenderKeyMessage};
use super::{read_chain_head, write_chain_head, GroupId, SenderKeyEncryptError, MAX_PLAINTEXT_LEN};
use crate::codec::Reader;
use crate::DecodeError;

/// Type tag of a serialized [`SenderKeyState`].
const STATE_TAG: u8 = 0x22;

/// This device's sending chain for one group: chain id, chain key and signing key.
pub struct SenderKeyState {
    group_id: GroupId,
    chain_id: u32,
    chain_key: ChainKey,
    signing_key: Box<SigningKey>,
}

impl core::fmt::Debug for SenderKeyState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            group_id,
            chain_id,
            chain_key,
            signing_key: _,
        } = self;
        f.debug_struct("SenderKeyState")
            .field("group_id", group_id)
            .field("chain_id", chain_id)
            .field("iteration", &chain_key.iteration())
            .finish_non_exhaustive()
    }
}

impl SenderKeyState {
    /// A fresh chain for `group_id`: random chain id, chain key and signing key, at iteration 0.
    pub fn new(group_id: GroupId, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let chain_id = rng.next_u32();
        Self::with_chain_id(group_id, chain_id, rng)
    }

    fn with_chain_id(
        group_id: GroupId,
        chain_id: u32,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(key.as_mut());
        let signing_key = Box::new(SigningKey::generate(rng));
        Self {
            group_id,
            chain_id,
            chain_key: ChainKey::new(&key, 0),
            signing_key,
        }
    }

    /// Replaces the chain with a fresh one (new chain id, chain key and signing key). Call it when a
    /// member leaves or is removed, then send the new distribution to the remaining members only.
    pub fn rotate(&mut self, rng: &mut (impl RngCore + CryptoRng)) {
        let mut chain_id = rng.next_u32();
        while chain_id == self.chain_id {
            chain_id = rng.next_u32();
        }
        *self = Self::with_chain_id(self.group_id.clone(), chain_id, rng);
    }

    /// The group this state sends to.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The current chain's id.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The iteration the next message will carry.
    pub fn iteration(&self) -> u32 {
        self.chain_key.iteration()
    }

    /// The distribution for the current iteration: its receiver decrypts messages from now on only.
    pub fn distribution_message(&self) -> SenderKeyDistributionMessage {
        SenderKeyDistributionMessage {
            group_id: self.group_id.clone(),
            chain_id: self.chain_id,
            chain_key: self.chain_key.clone(),
            signing_key: self.signing_key.verifying_key(),
        }
    }

    /// Encrypts one group message and advances the chain (the message key is then gone).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<SenderKeyMessage, SenderKeyEncryptError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SenderKeyEncryptError::PlaintextTooLong(plaintext.len()));
        }
        let next = self
            .chain_key
            .next()
            .ok_or(SenderKeyEncryptError::ChainExhausted)?;
        let keys = self.chain_key.message_seed().keys();
        let message = SenderKeyMessage::seal(
            &self.group_id,
            self.chain_id,
            self.chain_key.iteration(),
            &keys,
            plaintext,
            &self.signing_key,
        );
        self.chain_key = next;
        Ok(message)
    }

    /// The serialized state for the device's store:
    /// `u8 version | u8 tag = 0x22 | group id | u32 chain id | u32 iteration | 32 chain key
    /// | 32 Ed25519 secret key`. Wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = write_chain_head(STATE_TAG, &self.group_id, self.chain_id, &self.chain_key);
        w.fixed(self.signing_key.as_bytes());
        w.into_zeroizing()
    }

    /// Restores a state written by [`SenderKeyState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (group_id, chain_id, chain_key) = read_chain_head(&mut r, STATE_TAG)?;
        let secret = Zeroizing::new(r.array::<32>()?);
        r.finish()?;
        Ok(Self {
            group_id,
            chain_id,
            chain_key,
            signing_key: Box::new(SigningKey::from_bytes(&secret)),
        })
    }
}
