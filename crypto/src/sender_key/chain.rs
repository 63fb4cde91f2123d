//! The symmetric chain: `CK_{i+1} = HMAC-SHA256(CK_i, 0x02)`, message seed `HMAC-SHA256(CK_i, 0x01)`
//! (the step the Double Ratchet shares, in `crate::kdf`), and the per-message AES-256-GCM key and
//! nonce expanded from the seed by HKDF-SHA256.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kdf;

/// HKDF info turning a message-key seed into an AES-256-GCM key and nonce.
pub(crate) const MESSAGE_KEYS_INFO: &[u8] = b"Sotto v1 SenderKey MessageKeys";

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;

/// A chain key and its iteration (the index of the next message key it yields).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey {
    key: Box<[u8; KEY_LEN]>,
    #[zeroize(skip)]
    iteration: u32,
}

impl ChainKey {
    pub(crate) fn new(key: &[u8; KEY_LEN], iteration: u32) -> Self {
        Self {
            key: Box::new(*key),
            iteration,
        }
    }

    pub(crate) fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The raw key bytes (written into distributions and records, both zeroized by their owners).
    pub(crate) fn key_bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The seed of message key number `self.iteration`.
    pub(crate) fn message_seed(&self) -> MessageSeed {
        let mut seed = MessageSeed {
            iteration: self.iteration,
            seed: Box::new([0u8; KEY_LEN]),
        };
        kdf::message_seed(&self.key, &mut seed.seed);
        seed
    }

    /// The chain key one iteration on, or `None` at the end of the chain.
    pub(crate) fn next(&self) -> Option<ChainKey> {
        let iteration = self.iteration.checked_add(1)?;
        let mut next = ChainKey {
            key: Box::new([0u8; KEY_LEN]),
            iteration,
        };
        kdf::next_chain_key(&self.key, &mut next.key);
        Some(next)
    }
}

/// The seed of one message key; what a receiver keeps for a skipped message.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageSeed {
    #[zeroize(skip)]
    pub(crate) iteration: u32,
    pub(crate) seed: Box<[u8; KEY_LEN]>,
}

impl MessageSeed {
    /// AES-256-GCM key (first 32 bytes) and nonce (next 12) of this message:
    /// `HKDF-SHA256-Expand(PRK = seed, info = MESSAGE_KEYS_INFO, L = 44)`. The seed is an HMAC-SHA256
    /// output, already a uniformly random 32-byte PRK, so HKDF-Extract is not needed (RFC 5869 §3.3).
    pub(crate) fn keys(&self) -> MessageKeys {
        let mut okm = Zeroizing::new([0u8; KEY_LEN + NONCE_LEN]);
        // A PRK must be at least one hash long (the seed is exactly one) and HKDF-Expand rejects only
        // outputs above 255 hash blocks (44 bytes is two).
        #[allow(clippy::expect_used)]
        Hkdf::<Sha256>::from_prk(self.seed.as_slice())
            .ok()
            .and_then(|hkdf| hkdf.expand(MESSAGE_KEYS_INFO, okm.as_mut()).ok())
            .expect("a 32-byte PRK and a 44-byte output are valid for HKDF-SHA256");
        let (key, nonce) = okm.split_at(KEY_LEN);
        let mut keys = MessageKeys {
            key: Box::new([0u8; KEY_LEN]),
            nonce: [0u8; NONCE_LEN],
        };
        keys.key.copy_from_slice(key);
        keys.nonce.copy_from_slice(nonce);
        keys
    }
}

/// One message's AEAD key and nonce, used exactly once.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKeys {
    pub(crate) key: Box<[u8; KEY_LEN]>,
    pub(crate) nonce: [u8; NONCE_LEN],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_steps_are_one_way_and_distinct() {
        let ck = ChainKey::new(&[1u8; 32], 0);
        let next = ck.next().unwrap();
        assert_eq!(next.iteration(), 1);
        assert_ne!(next.key_bytes(), ck.key_bytes());
        assert_ne!(*ck.message_seed().seed, *next.message_seed().seed);
        assert_ne!(*ck.message_seed().seed, *next.key_bytes());
        assert!(ChainKey::new(&[1u8; 32], u32::MAX).next().is_none());
    }
}
