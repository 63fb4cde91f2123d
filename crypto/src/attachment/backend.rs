//! The AES-256-GCM implementation under the attachment cipher, chosen per target.
//!
//! Everything above this module (framing, nonces, the STREAM flags, the digest) is shared; only the
//! sealing and opening of one chunk differs:
//!
//! - native targets: `ring` (BoringSSL's assembly: AES-NI, PCLMULQDQ, AVX2 and VAES/VPCLMULQDQ on
//!   x86_64, the ARMv8 crypto extensions on aarch64, chosen at run time);
//! - `wasm32`: RustCrypto `aes-gcm`, the AEAD the rest of the crate uses.
//!
//! Both compute the same function (the known-answer vectors and the cross-backend tests check it), so
//! a blob sealed by one opens with the other.
//!
//! Key material: the 32-byte chunk key reaches this module only as a borrow of a buffer that wipes
//! itself. Neither implementation wipes its expanded key (AES round keys, GHASH powers) when dropped:
//! `ring` keeps it in a type without a destructor, and `aes` is built without its `zeroize` feature.

use super::TAG_LEN;

/// A 96-bit AES-GCM nonce.
pub(super) type Nonce = [u8; 12];

/// The chunk failed authentication (or, when sealing, was longer than AES-GCM allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AeadFailure;

/// AES-256-GCM with empty associated data, in place, tag kept apart.
pub(super) trait ChunkAead: Sized {
    /// The cipher for one blob's chunk key.
    fn new(key: &[u8; 32]) -> Self;

    /// Encrypts `in_out` in place and returns its tag.
    fn seal(&self, nonce: Nonce, in_out: &mut [u8]) -> Result<[u8; TAG_LEN], AeadFailure>;

    /// Checks `tag` and decrypts `in_out` in place. On failure the contents of `in_out` are
    /// unspecified (the caller discards them).
    fn open(&self, nonce: Nonce, in_out: &mut [u8], tag: &[u8; TAG_LEN])
        -> Result<(), AeadFailure>;
}

/// The implementation this build uses.
#[cfg(not(target_arch = "wasm32"))]
pub(super) type PlatformAead = RingAead;
/// The implementation this build uses.
#[cfg(target_arch = "wasm32")]
pub(super) type PlatformAead = RustCryptoAead;

/// `ring`'s AES-256-GCM.
#[cfg(not(target_arch = "wasm32"))]
pub(super) struct RingAead(ring::aead::LessSafeKey);

#[cfg(not(target_arch = "wasm32"))]
impl ChunkAead for RingAead {
    fn new(key: &[u8; 32]) -> Self {
        // `UnboundKey::new` fails only for a key of the wrong length; the type rules that out.
        #[allow(clippy::expect_used)]
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .expect("32 bytes is an AES-256-GCM key");
        Self(ring::aead::LessSafeKey::new(key))
    }

    fn seal(&self, nonce: Nonce, in_out: &mut [u8]) -> Result<[u8; TAG_LEN], AeadFailure> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                in_out,
            )
            .map_err(|_| AeadFailure)?;
        tag.as_ref().try_into().map_err(|_| AeadFailure)
    }

    fn open(
        &self,
        nonce: Nonce,
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadFailure> {
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                ring::aead::Tag::from(*tag),
                in_out,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AeadFailure)
    }
}

/// RustCrypto's AES-256-GCM (`aes-gcm`). Compiled on native targets only for the tests that
/// check it against [`RingAead`].
#[cfg(any(test, target_arch = "wasm32"))]
pub(super) struct RustCryptoAead(aes_gcm::Aes256Gcm);

#[cfg(any(test, target_arch = "wasm32"))]
impl ChunkAead for RustCryptoAead {
    fn new(key: &[u8; 32]) -> Self {
        use aes_gcm::KeyInit;
        Self(aes_gcm::Aes256Gcm::new(key.into()))
    }

    fn seal(&self, nonce: Nonce, in_out: &mut [u8]) -> Result<[u8; TAG_LEN], AeadFailure> {
        use aes_gcm::aead::AeadInPlace;
        self.0
            .encrypt_in_place_detached(&nonce.into(), b"", in_out)
            .map(Into::into)
            .map_err(|_| AeadFailure)
    }

    fn open(
        &self,
        nonce: Nonce,
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadFailure> {
        use aes_gcm::aead::AeadInPlace;
        self.0
            .decrypt_in_place_detached(&nonce.into(), b"", in_out, tag.into())
            .map_err(|_| AeadFailure)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// Both implementations produce the same bytes and open each other's output, for lengths
    /// around AES and GHASH block boundaries and the assembly's wide strides.
    #[test]
    fn implementations_agree_chunk_by_chunk() {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(29).wrapping_add(3);
        }
        let (fast, portable) = (RingAead::new(&key), RustCryptoAead::new(&key));
        for len in [
            0usize, 1, 15, 16, 17, 63, 64, 255, 256, 257, 1000, 4096, 65535, 65536,
        ] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let nonce: Nonce = [len as u8, 1, 2, 3, 4, 5, 6, 0, 0, 0, 9, 1];
            let mut a = plaintext.clone();
            let mut b = plaintext.clone();
            let tag_a = fast.seal(nonce, &mut a).unwrap();
            let tag_b = portable.seal(nonce, &mut b).unwrap();
            assert_eq!((&a, tag_a), (&b, tag_b), "len {len}");

            portable.open(nonce, &mut a, &tag_a).unwrap();
            fast.open(nonce, &mut b, &tag_b).unwrap();
            assert_eq!(a, plaintext);
            assert_eq!(b, plaintext);

            // A wrong tag or nonce fails in both.
            let mut sealed = plaintext.clone();
            let tag = fast.seal(nonce, &mut sealed).unwrap();
            let mut bad_tag = tag;
            bad_tag[15] ^= 1;
            let mut bad_nonce = nonce;
            bad_nonce[11] ^= 1;
            for aead in [&fast as &dyn Check, &portable] {
                assert!(aead.rejects(nonce, &sealed, &bad_tag), "len {len}");
                assert!(aead.rejects(bad_nonce, &sealed, &tag), "len {len}");
            }
        }
    }

    trait Check {
        fn rejects(&self, nonce: Nonce, sealed: &[u8], tag: &[u8; TAG_LEN]) -> bool;
    }

    impl<A: ChunkAead> Check for A {
        fn rejects(&self, nonce: Nonce, sealed: &[u8], tag: &[u8; TAG_LEN]) -> bool {
            self.open(nonce, &mut sealed.to_vec(), tag) == Err(AeadFailure)
        }
    }
}
