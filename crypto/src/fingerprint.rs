//! Safety numbers: a 60-digit number and a QR payload two users compare to check, out of band, that
//! each holds the other's real identity key (and that the relay did not substitute one).
//!
//! ```text
//! for each party (identity key K = IdentityKey::to_bytes(), 65 bytes; stable id S = UTF-8 bytes):
//!   h_0     = SHA-512("Sotto v1 SafetyNumber" | u16 BE version = 1 | u32 len | K | u32 len | S)
//!   h_{i+1} = SHA-512(h_i | K)                      for i in 0..5200
//!   fingerprint = h_5200[0..32]
//!   digits      = for each 5-byte group g of h_5200[0..30]: u40 BE (g) mod 100000, as 5 digits
//! the two parties are ordered by fingerprint (bytewise, smaller first), so both sides agree:
//!   safety number = digits(first) | digits(second)                               (60 digits)
//!   QR payload    = u8 version = 1 | u8 tag = 0x40 | fingerprint(first) | fingerprint(second)
//! ```
//!
//! The iteration count makes a search for a second identity key whose fingerprint collides with a
//! victim's 5200 times as expensive per candidate; the stable id is hashed in so a key cannot be
//! replayed under another account. Details: `docs/protocol/safety-numbers.md`.
//!
//! ```
//! use rand_chacha::rand_core::SeedableRng;
//! use sotto_crypto::fingerprint::SafetyNumber;
//! use sotto_crypto::keys::IdentityKeyPair;
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
//! let (alice, bob) = (IdentityKeyPair::generate(&mut rng), IdentityKeyPair::generate(&mut rng));
//! let on_alice = SafetyNumber::new("alice", &alice.public(), "bob", &bob.public());
//! let on_bob = SafetyNumber::new("bob", &bob.public(), "alice", &alice.public());
//! assert_eq!(on_alice.digits(), on_bob.digits());
//! assert_eq!(on_alice.digits().len(), 60);
//! assert!(on_bob.matches_qr(&on_alice.qr_payload()).unwrap());
//! ```

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::codec::{Reader, Writer};
use crate::keys::IdentityKey;
use crate::DecodeError;

/// Version of the safety-number computation and of the QR payload.
pub const VERSION: u8 = 1;
/// SHA-512 iterations per party.
pub const ITERATIONS: u32 = 5200;
/// Domain-separation label of the first hash.
const LABEL: &[u8] = b"Sotto v1 SafetyNumber";
/// Type tag of the QR payload.
const QR_TAG: u8 = 0x40;
/// Bytes of each party's fingerprint in the QR payload.
pub const FINGERPRINT_LEN: usize = 32;
/// Length of the QR payload.
pub const QR_PAYLOAD_LEN: usize = 2 + 2 * FINGERPRINT_LEN;

/// One party's iterated hash.
fn party_hash(stable_id: &str, key: &IdentityKey) -> [u8; 64] {
    let key = key.to_bytes();
    let mut w = Writer::new();
    w.fixed(LABEL)
        .u16(u16::from(VERSION))
        .bytes(&key)
        .bytes(stable_id.as_bytes());
    let mut hash: [u8; 64] = Sha512::digest(w.into_vec()).into();
    for _ in 0..ITERATIONS {
        let mut h = Sha512::new();
        h.update(hash);
        h.update(&key);
        hash = h.finalize().into();
    }
    hash
}

/// Thirty digits from the first 30 bytes: six groups of five bytes, each `u40 mod 100000`.
fn digits(hash: &[u8; 64], out: &mut String) {
    for group in hash.chunks_exact(5).take(6) {
        let n = group.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", n % 100_000));
    }
}

/// Why a scanned QR payload could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrCompareError {
    /// The scanned code is not a Sotto safety-number payload of a version this build knows (the
    /// other side may run a different version: compare the digits instead).
    #[error("unreadable safety-number QR payload: {0}")]
    Unreadable(#[from] DecodeError),
}

/// The safety number of a conversation between two identities. Both sides compute the same one.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    /// `fingerprint(first) | fingerprint(second)`.
    fingerprints: [u8; 2 * FINGERPRINT_LEN],
}

impl core::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("SafetyNumber").field(&self.digits).finish()
    }
}

impl SafetyNumber {
    /// Computes the safety number from this device's account (stable id and identity key) and the
    /// peer's. The argument order does not matter to the result.
    pub fn new(
        local_id: &str,
        local_key: &IdentityKey,
        remote_id: &str,
        remote_key: &IdentityKey,
    ) -> Self {
        let local = party_hash(local_id, local_key);
        let remote = party_hash(remote_id, remote_key);
        let (first, second) = if local[..FINGERPRINT_LEN] <= remote[..FINGERPRINT_LEN] {
            (local, remote)
        } else {
            (remote, local)
        };
        let mut digit_string = String::with_capacity(60);
        digits(&first, &mut digit_string);
        digits(&second, &mut digit_string);
        let mut fingerprints = [0u8; 2 * FINGERPRINT_LEN];
        let (a, b) = fingerprints.split_at_mut(FINGERPRINT_LEN);
        a.copy_from_slice(first.get(..FINGERPRINT_LEN).unwrap_or_default());
        b.copy_from_slice(second.get(..FINGERPRINT_LEN).unwrap_or_default());
        Self {
            digits: digit_string,
            fingerprints,
        }
    }

    /// The 60 digits, no separators.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The digits in twelve groups of five, separated by spaces, for display.
    pub fn display(&self) -> String {
        let groups: Vec<&str> = (0..12)
            .filter_map(|i| self.digits.get(i * 5..i * 5 + 5))
            .collect();
        groups.join(" ")
    }

    /// The bytes to encode in the QR code shown to the peer.
    pub fn qr_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(QR_PAYLOAD_LEN);
        w.u8(VERSION).u8(QR_TAG).fixed(&self.fingerprints);
        w.into_vec()
    }

    /// Whether a QR payload scanned from the peer's screen shows the same two identities as ours.
    /// The fingerprints are compared in constant time.
    pub fn matches_qr(&self, scanned: &[u8]) -> Result<bool, QrCompareError> {
        let mut r = Reader::new(scanned);
        r.version(VERSION)?;
        r.tag(QR_TAG)?;
        let theirs = r.array::<{ 2 * FINGERPRINT_LEN }>()?;
        r.finish()?;
        Ok(self.fingerprints.ct_eq(&theirs).into())
    }
}
