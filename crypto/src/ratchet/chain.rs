//! The symmetric half of the Double Ratchet: root, chain and message keys, and the AEAD.
//!
//! - `KDF_RK(rk, dh) = HKDF-SHA256(salt = rk, ikm = dh, info = "Sotto_Ratchet_v1")`, 64 bytes:
//!   the new root key, then the new chain key.
//! - `KDF_CK(ck)`: message key seed `HMAC-SHA256(ck, 0x01)`, next chain key `HMAC-SHA256(ck, 0x02)`
//!   (the step Sender Key chains share, in `crate::kdf`).
//! - Message keys: `HKDF-SHA256(salt = 32 zero bytes, ikm = seed, info = "Sotto_MessageKeys_v1")`,
//!   44 bytes: the AES-256-GCM key, then its 12-byte nonce. Each seed is used for exactly one
//!   message, so the derived nonce never repeats under a key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kdf;

pub(crate) const RATCHET_INFO: &[u8] = b"Sotto_Ratchet_v1";
pub(crate) const MESSAGE_KEYS_INFO: &[u8] = b"Sotto_MessageKeys_v1";

/// A 32-byte secret on the heap, wiped on drop. Used for root, chain and message-key seeds.
#[derive(Clone)]
pub(crate) struct Key32(Box<[u8; 32]>);

impl Drop for Key32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Key32 {}

impl Key32 {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        let mut bytes = bytes;
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// Copies 32 bytes straight into the box (no intermediate array to wipe). Shorter input
    /// leaves the remaining bytes zero; callers pass exactly 32.
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        let mut key = Box::new([0u8; 32]);
        for (k, b) in key.iter_mut().zip(bytes) {
            *k = *b;
        }
        Self(key)
    }

    /// A key written in place by `fill`, so the derived bytes never sit in a stack temporary.
    pub(crate) fn derive(fill: impl FnOnce(&mut [u8; 32])) -> Self {
        let mut key = Self(Box::new([0u8; 32]));
        fill(&mut key.0);
        key
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// HKDF-SHA256 into a fixed-size, self-wiping buffer.
pub(crate) fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; N]> {
    const { assert!(N <= 255 * 32, "HKDF-SHA256 output is limited to 8160 bytes") };
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = Zeroizing::new([0u8; N]);
    // Cannot fail: the length is checked at compile time above.
    if hk.expand_multi_info(info, okm.as_mut_slice()).is_err() {
        okm.zeroize();
    }
    okm
}

/// Splits a 64-byte KDF output into two keys.
pub(crate) fn split64(okm: &[u8; 64]) -> (Key32, Key32) {
    let (left, right) = okm.split_at(32);
    (Key32::from_slice(left), Key32::from_slice(right))
}

/// `KDF_RK`: a DH ratchet step's new root key and chain key.
pub(crate) fn kdf_rk(root_key: &Key32, dh_output: &[u8; 32]) -> (Key32, Key32) {
    let okm = hkdf::<64>(root_key.as_bytes(), dh_output, &[RATCHET_INFO]);
    split64(&okm)
}

/// `KDF_CK`: the message key seed for the current position and the next chain key.
pub(crate) fn chain_step(chain_key: &Key32) -> (Key32, Key32) {
    let seed = Key32::derive(|out| kdf::message_seed(chain_key.as_bytes(), out));
    let next = Key32::derive(|out| kdf::next_chain_key(chain_key.as_bytes(), out));
    (seed, next)
}

/// AES-256-GCM key and nonce for one message.
struct MessageKeys {
    cipher: Aes256Gcm,
    nonce: [u8; 12],
}

fn message_keys(seed: &Key32) -> MessageKeys {
    let okm = hkdf::<44>(&[0u8; 32], seed.as_bytes(), &[MESSAGE_KEYS_INFO]);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    let (k, n) = okm.split_at(32);
    key.copy_from_slice(k);
    nonce.copy_from_slice(n);
    MessageKeys {
        cipher: Aes256Gcm::new(&(*key).into()),
        nonce,
    }
}

/// Encrypts with the message key derived from `seed`. Fails only for plaintexts beyond GCM's limit.
pub(crate) fn seal(seed: &Key32, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let keys = message_keys(seed);
    keys.cipher
        .encrypt(
            (&keys.nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .ok()
}

/// Decrypts with the message key derived from `seed`; `None` when the tag does not verify.
pub(crate) fn open(seed: &Key32, aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let keys = message_keys(seed);
    keys.cipher
        .decrypt(
            (&keys.nonce).into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let seed = Key32::new([1; 32]);
        let ct = seal(&seed, b"ad", b"hello").unwrap();
        assert_eq!(open(&seed, b"ad", &ct).unwrap(), b"hello");
        assert!(open(&seed, b"ae", &ct).is_none());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&seed, b"ad", &bad).is_none());
    }
}
