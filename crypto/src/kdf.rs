//! The symmetric chain step shared by the Double Ratchet's sending and receiving chains and by
//! Sender Key chains (`KDF_CK` in `docs/protocol.md`):
//!
//! - message key seed `HMAC-SHA256(CK, 0x01)`,
//! - next chain key `HMAC-SHA256(CK, 0x02)`.
//!
//! Both protocols expand the seed differently (each with its own HKDF label), so only the step
//! itself lives here. Outputs are written straight into the caller's (boxed, self-wiping) buffer.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// HMAC input byte that derives a message key seed from a chain key.
pub(crate) const MESSAGE_SEED_BYTE: u8 = 0x01;
/// HMAC input byte that derives the next chain key.
pub(crate) const CHAIN_STEP_BYTE: u8 = 0x02;

/// `out = HMAC-SHA256(key, [byte])`.
pub(crate) fn hmac_byte(key: &[u8; 32], byte: u8, out: &mut [u8; 32]) {
    // RFC 2104 zero-pads a key shorter than the 64-byte block, so keying with the padded block is
    // exactly HMAC under `key`, and needs no fallible length check.
    let mut block = Zeroizing::new([0u8; 64]);
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&(*block).into());
    mac.update(&[byte]);
    let mut tag = mac.finalize().into_bytes();
    out.copy_from_slice(&tag);
    tag.zeroize();
}

/// Writes the message key seed of `chain_key`'s position into `out`.
pub(crate) fn message_seed(chain_key: &[u8; 32], out: &mut [u8; 32]) {
    hmac_byte(chain_key, MESSAGE_SEED_BYTE, out);
}

/// Writes the chain key one step after `chain_key` into `out`.
pub(crate) fn next_chain_key(chain_key: &[u8; 32], out: &mut [u8; 32]) {
    hmac_byte(chain_key, CHAIN_STEP_BYTE, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_key_matches_the_keyed_mac() {
        for (key, byte) in [
            ([0x42u8; 32], MESSAGE_SEED_BYTE),
            ([7u8; 32], CHAIN_STEP_BYTE),
        ] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            mac.update(&[byte]);
            let expected: [u8; 32] = mac.finalize().into_bytes().into();
            let mut out = [0u8; 32];
            hmac_byte(&key, byte, &mut out);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn seed_and_next_differ() {
        let (mut seed, mut next) = ([0u8; 32], [0u8; 32]);
        message_seed(&[1; 32], &mut seed);
        next_chain_key(&[1; 32], &mut next);
        assert_ne!(seed, next);
    }
}
