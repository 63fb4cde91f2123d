//! Linking a new device over the relay's provisioning channel: the sealed box that carries the
//! account identity from the existing device to the new one (pure; every runtime uses it).
//!
//! ```text
//!  new device                                   existing device (same account)
//!  POST /api/provisioning → address
//!  ephemeral X25519 key pair (n, N)
//!  shows "address:hex(N)" (text or QR) ───────▶ link_device("address:hex(N)")
//!                                              POST /api/devices/linking-codes → code
//!                                              e, E ephemeral; k = HKDF(DH(e, N))
//!                                              PUT /api/provisioning/{address}
//!                                                  { E | nonce | AES-256-GCM_k(userId, identity, code) }
//!  GET /api/provisioning/{address}?waitSecs=30 ◀┘
//!  k = HKDF(DH(n, E)); opens it
//!  POST /api/devices/link { code } → deviceId, token; prekeys uploaded with the account identity
//! ```
//!
//! k = HKDF-SHA256(salt = none, ikm = X25519(e, N), info = "Sotto_Provisioning_v1" | E | N), the
//! associated data is the channel address. The relay sees only ciphertext.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The KDF label of the provisioning box.
pub const PROVISIONING_INFO: &[u8] = b"Sotto_Provisioning_v1";

/// What the existing device sends the new one (JSON inside the sealed box).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provision {
    /// The account.
    pub user_id: String,
    /// The account's identity key pair, hex (secret).
    pub identity: String,
    /// The relay's one-time linking code.
    pub code: String,
}

impl core::fmt::Debug for Provision {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provision")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Provision {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.identity);
    }
}

fn key(shared: &[u8; 32], sender: &[u8; 32], receiver: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut info = PROVISIONING_INFO.to_vec();
    info.extend_from_slice(sender);
    info.extend_from_slice(receiver);
    let mut k = Zeroizing::new([0u8; 32]);
    // A 32-byte output is always within HKDF's limit.
    let _ = Hkdf::<Sha256>::new(None, shared).expand(&info, &mut k[..]);
    k
}

/// Seals `plaintext` for the new device's public key.
pub fn seal(
    rng: &mut (impl RngCore + CryptoRng),
    receiver: &[u8; 32],
    address: &str,
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let e = StaticSecret::random_from_rng(&mut *rng);
    let big_e = PublicKey::from(&e).to_bytes();
    let shared = Zeroizing::new(e.diffie_hellman(&PublicKey::from(*receiver)).to_bytes());
    let k = key(&shared, &big_e, receiver);
    let cipher = Aes256Gcm::new_from_slice(&k[..]).ok()?;
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: address.as_bytes(),
            },
        )
        .ok()?;
    let mut out = big_e.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Some(out)
}

/// Opens a sealed box with the new device's secret.
pub fn open(secret: &StaticSecret, address: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let big_e: [u8; 32] = sealed.get(..32)?.try_into().ok()?;
    let nonce = sealed.get(32..44)?;
    let ct = sealed.get(44..)?;
    let me = PublicKey::from(secret).to_bytes();
    let shared = Zeroizing::new(secret.diffie_hellman(&PublicKey::from(big_e)).to_bytes());
    let k = key(&shared, &big_e, &me);
    let cipher = Aes256Gcm::new_from_slice(&k[..]).ok()?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: address.as_bytes(),
            },
        )
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng as _;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([9; 32]);
        let n = StaticSecret::random_from_rng(&mut rng);
        let big_n = PublicKey::from(&n).to_bytes();
        let mut sealed = seal(&mut rng, &big_n, "addr", b"identity").unwrap();
        assert_eq!(&open(&n, "addr", &sealed).unwrap()[..], b"identity");
        assert!(open(&n, "other", &sealed).is_none());
        sealed[40] ^= 1;
        assert!(open(&n, "addr", &sealed).is_none());
        assert!(open(&n, "addr", &sealed[..20]).is_none());
    }
}
