//! The inbound side: one record per (group, sender device), holding up to
//! [`MAX_STATES_PER_SENDER`] chains of that sender.

use std::collections::VecDeque;

use ed25519_dalek::VerifyingKey;
use zeroize::Zeroizing;

use super::chain::{ChainKey, MessageSeed, KEY_LEN};
use super::message::{SenderKeyDistributionMessage, SenderKeyMessage};
use super::{
    GroupId, ProcessDistributionError, SenderKeyDecryptError, MAX_FORWARD_JUMP,
    MAX_SKIPPED_MESSAGE_KEYS, MAX_STATES_PER_SENDER, VERSION,
};
use crate::codec::{Reader, Writer};
use crate::DecodeError;

/// Type tag of a serialized [`SenderKeyRecord`].
const RECORD_TAG: u8 = 0x23;

/// One chain of the sender, as this device follows it.
#[derive(Clone)]
struct ReceiverChain {
    chain_id: u32,
    /// The iteration of the distribution this device received: nothing earlier is decryptable.
    first_iteration: u32,
    chain_key: ChainKey,
    signing_key: VerifyingKey,
    /// Seeds of skipped messages, ascending by iteration, all below `chain_key.iteration()`.
    skipped: VecDeque<MessageSeed>,
}

impl ReceiverChain {
    fn decrypt(
        &mut self,
        group: &GroupId,
        message: &SenderKeyMessage,
    ) -> Result<Vec<u8>, SenderKeyDecryptError> {
        // Authenticity first: nothing an outsider sends reaches the chain logic.
        if !message.verify(&self.signing_key) {
            return Err(SenderKeyDecryptError::BadSignature);
        }
        let iteration = message.iteration();
        let current = self.chain_key.iteration();
        if iteration < self.first_iteration {
            return Err(SenderKeyDecryptError::BeforeJoin {
                iteration,
                first: self.first_iteration,
            });
        }
        if iteration < current {
            let index = self
                .skipped
                .binary_search_by_key(&iteration, |s| s.iteration)
                .map_err(|_| SenderKeyDecryptError::Replay { iteration })?;
            let seed = self
                .skipped
                .get(index)
                .ok_or(SenderKeyDecryptError::Replay { iteration })?;
            let plaintext = message
                .open(group, &seed.keys())
                .ok_or(SenderKeyDecryptError::DecryptionFailed)?;
            self.skipped.remove(index);
            return Ok(plaintext);
        }
        let too_far = SenderKeyDecryptError::TooFarAhead { iteration, current };
        if iteration - current > MAX_FORWARD_JUMP {
            return Err(too_far);
        }
        // Walk a copy forward; the record changes only once the message has decrypted.
        let mut chain_key = self.chain_key.clone();
        let mut new_skipped = Vec::new();
        while chain_key.iteration() < iteration {
            // Of a long gap only the newest MAX_SKIPPED_MESSAGE_KEYS would survive eviction anyway.
            if (iteration - chain_key.iteration()) as usize <= MAX_SKIPPED_MESSAGE_KEYS {
                new_skipped.push(chain_key.message_seed());
            }
            chain_key = chain_key.next().ok_or(too_far.clone())?;
        }
        let next = chain_key.next().ok_or(too_far)?;
        let plaintext = message
            .open(group, &chain_key.message_seed().keys())
            .ok_or(SenderKeyDecryptError::DecryptionFailed)?;
        self.chain_key = next;
        self.skipped.extend(new_skipped);
        while self.skipped.len() > MAX_SKIPPED_MESSAGE_KEYS {
            self.skipped.pop_front();
        }
        Ok(plaintext)
    }
}

/// Everything this device keeps to decrypt one sender device's messages in one group.
#[derive(Clone)]
pub struct SenderKeyRecord {
    group_id: GroupId,
    /// Oldest first.
    chains: VecDeque<ReceiverChain>,
}

impl core::fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self { group_id, chains } = self;
        let summary: Vec<_> = chains
            .iter()
            .map(|c| (c.chain_id, c.chain_key.iteration(), c.skipped.len()))
            .collect();
        f.debug_struct("SenderKeyRecord")
            .field("group_id", group_id)
            .field("chains (id, iteration, skipped)", &summary)
            .finish_non_exhaustive()
    }
}

impl SenderKeyRecord {
    /// An empty record for one sender device in `group_id`.
    pub fn new(group_id: GroupId) -> Self {
        Self {
            group_id,
            chains: VecDeque::new(),
        }
    }

    /// The group of this record.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The ids of the chains kept, oldest first.
    pub fn chain_ids(&self) -> Vec<u32> {
        self.chains.iter().map(|c| c.chain_id).collect()
    }

    /// How many skipped message keys are kept for `chain_id` (0 for an unknown chain).
    pub fn skipped_message_keys(&self, chain_id: u32) -> usize {
        self.chains
            .iter()
            .find(|c| c.chain_id == chain_id)
            .map_or(0, |c| c.skipped.len())
    }

    /// Installs a sender's distribution (taken out of an authenticated 1:1 session from that sender).
    ///
    /// A distribution for a chain already held with the same signing key is a duplicate and changes
    /// nothing: the chain is never wound back, so a re-sent distribution cannot reopen used message
    /// keys. Otherwise the chain becomes the newest; beyond [`MAX_STATES_PER_SENDER`] the oldest goes.
    pub fn process_distribution(
        &mut self,
        distribution: &SenderKeyDistributionMessage,
    ) -> Result<(), ProcessDistributionError> {
        if distribution.group_id != self.group_id {
            return Err(ProcessDistributionError::GroupMismatch);
        }
        if let Some(index) = self
            .chains
            .iter()
            .position(|c| c.chain_id == distribution.chain_id)
        {
            if self
                .chains
                .get(index)
                .is_some_and(|c| c.signing_key == distribution.signing_key)
            {
                return Ok(());
            }
            self.chains.remove(index);
        }
        self.chains.push_back(ReceiverChain {
            chain_id: distribution.chain_id,
            first_iteration: distribution.chain_key.iteration(),
            chain_key: distribution.chain_key.clone(),
            signing_key: distribution.signing_key,
            skipped: VecDeque::new(),
        });
        while self.chains.len() > MAX_STATES_PER_SENDER {
            self.chains.pop_front();
        }
        Ok(())
    }

    /// Verifies and decrypts one message. On any error the record is unchanged.
    pub fn decrypt(
        &mut self,
        message: &SenderKeyMessage,
    ) -> Result<Vec<u8>, SenderKeyDecryptError> {
        let Self { group_id, chains } = self;
        chains
            .iter_mut()
            .find(|c| c.chain_id == message.chain_id())
            .ok_or(SenderKeyDecryptError::UnknownChain(message.chain_id()))?
            .decrypt(group_id, message)
    }

    /// The serialized record for the device's store. Wiped when dropped.
    ///
    /// ```text
    /// u8 version = 1 | u8 tag = 0x23 | u32 len + group id | u32 chain count (≤ 5), oldest first:
    ///   u32 chain id | u32 first iteration | u32 iteration | 32 chain key | 32 signing public key
    ///   | u32 skipped count (≤ 2000), ascending: u32 iteration | 32 message-key seed
    /// ```
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(VERSION).u8(RECORD_TAG);
        self.group_id.encode(&mut w);
        w.u32(self.chains.len() as u32);
        for c in &self.chains {
            w.u32(c.chain_id)
                .u32(c.first_iteration)
                .u32(c.chain_key.iteration())
                .fixed(c.chain_key.key_bytes())
                .fixed(c.signing_key.as_bytes())
                .u32(c.skipped.len() as u32);
            for s in &c.skipped {
                w.u32(s.iteration).fixed(s.seed.as_slice());
            }
        }
        w.into_zeroizing()
    }

    /// Restores a record written by [`SenderKeyRecord::to_bytes`], checking every invariant.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version(VERSION)?;
        r.tag(RECORD_TAG)?;
        let group_id = GroupId::decode(&mut r)?;
        let count = r.count(MAX_STATES_PER_SENDER)?;
        let mut chains: VecDeque<ReceiverChain> = VecDeque::with_capacity(count);
        for _ in 0..count {
            let chain_id = r.u32()?;
            let first_iteration = r.u32()?;
            let iteration = r.u32()?;
            let key = Zeroizing::new(r.array::<KEY_LEN>()?);
            let signing_key = VerifyingKey::from_bytes(&r.array()?)
                .map_err(|_| DecodeError::InvalidValue("signing key"))?;
            if first_iteration > iteration || chains.iter().any(|c| c.chain_id == chain_id) {
                return Err(DecodeError::InvalidValue("sender-key chain"));
            }
            let skipped_count = r.count(MAX_SKIPPED_MESSAGE_KEYS)?;
            let mut skipped: VecDeque<MessageSeed> = VecDeque::with_capacity(skipped_count);
            for _ in 0..skipped_count {
                let seed_iteration = r.u32()?;
                let in_order = skipped.back().is_none_or(|p| p.iteration < seed_iteration);
                if !in_order || seed_iteration < first_iteration || seed_iteration >= iteration {
                    return Err(DecodeError::InvalidValue("skipped message key"));
                }
                let mut seed = MessageSeed {
                    iteration: seed_iteration,
                    seed: Box::new([0u8; KEY_LEN]),
                };
                seed.seed.copy_from_slice(r.fixed(KEY_LEN)?);
                skipped.push_back(seed);
            }
            chains.push_back(ReceiverChain {
                chain_id,
                first_iteration,
                chain_key: ChainKey::new(&key, iteration),
                signing_key,
                skipped,
            });
        }
        r.finish()?;
        Ok(Self { group_id, chains })
    }
}
