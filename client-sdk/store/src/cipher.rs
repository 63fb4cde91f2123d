//! [`StoreCipher`]: the two keys every backend's rows are protected with, and the blob that keeps
//! them wrapped under the app's key or the user's passphrase.
//!
//! The byte layout of everything here is specified in `docs/store-format.md`; the constants below
//! are the labels it lists.

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Version byte that opens every sealed value and every wrapped-key blob.
pub const FORMAT_VERSION: u8 = 1;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SALT_LEN: usize = 16;
/// Both keys, encryption key then MAC key: what a wrapped blob encrypts.
const EXPORT_LEN: usize = 2 * KEY_LEN;

const LABEL_KEY_HASH: &[u8] = b"sotto-store/v1/key-hash";
const LABEL_VALUE: &[u8] = b"sotto-store/v1/value";
const LABEL_WRAP: &[u8] = b"sotto-store/v1/wrap";
const LABEL_WRAP_KEY: &[u8] = b"sotto-store/v1/wrap-key";

const KIND_RAW_KEY: u8 = 1;
const KIND_PASSPHRASE: u8 = 2;

/// Length of a sealed value's framing: version byte, nonce and tag around the ciphertext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// What can go wrong wrapping, unwrapping, or opening a sealed value.
///
/// Unwrapping cannot tell a wrong key from a damaged blob: both fail the same authentication
/// check and both are [`StoreCipherError::WrongKey`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreCipherError {
    /// The key or passphrase does not open the wrapped blob (or the blob was altered).
    #[error("wrong store key or passphrase")]
    WrongKey,
    /// The blob was wrapped the other way (a raw key where a passphrase was given, or the reverse).
    #[error("the store key was wrapped with a {expected}, not a {given}")]
    WrongKeyKind {
        /// How the blob was wrapped.
        expected: &'static str,
        /// What was given to unwrap it.
        given: &'static str,
    },
    /// The blob or sealed value is too short or its framing is inconsistent.
    #[error("malformed store cipher data")]
    Malformed,
    /// The first byte names a format this build does not know.
    #[error("unsupported store format version {0}")]
    UnsupportedVersion(u8),
    /// Argon2id parameters outside the bounds in [`PassphraseParams::validate`].
    #[error("passphrase key derivation parameters out of bounds")]
    KdfParams,
    /// A sealed value failed authentication: altered, or moved to another key or table.
    #[error("sealed value failed authentication")]
    Tampered,
}

/// Argon2id cost parameters for passphrase wrapping. They are stored in the blob, so a store
/// opens with whatever parameters it was wrapped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassphraseParams {
    /// Memory in KiB (Argon2 `m`).
    pub memory_kib: u32,
    /// Passes over memory (Argon2 `t`).
    pub iterations: u32,
    /// Lanes (Argon2 `p`).
    pub parallelism: u32,
}

impl PassphraseParams {
    /// Upper bound on memory accepted from a blob (256 MiB): a planted blob cannot make opening
    /// the store exhaust the device.
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    /// Upper bound on passes accepted from a blob.
    pub const MAX_ITERATIONS: u32 = 16;
    /// Upper bound on lanes accepted from a blob.
    pub const MAX_PARALLELISM: u32 = 16;

    /// Checks the parameters against Argon2's own minimums and this crate's maximums.
    pub fn validate(&self) -> Result<(), StoreCipherError> {
        let ok = (1..=Self::MAX_PARALLELISM).contains(&self.parallelism)
            && (1..=Self::MAX_ITERATIONS).contains(&self.iterations)
            && self.memory_kib >= 8 * self.parallelism
            && self.memory_kib <= Self::MAX_MEMORY_KIB;
        if ok {
            Ok(())
        } else {
            Err(StoreCipherError::KdfParams)
        }
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, StoreCipherError> {
        self.validate()?;
        let params = argon2::Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|_| StoreCipherError::KdfParams)?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

impl Default for PassphraseParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended setting with the lane count cut
    /// to one, because neither the browser build nor the `argon2` crate computes lanes in
    /// parallel, so more lanes would cost the user time without costing an attacker any.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// The store's two keys: one seals values (AES-256-GCM-SIV), one hashes lookup keys
/// (HMAC-SHA256). Every backend stores what these produce, so the format is the same everywhere.
///
/// No `Debug` that shows key bytes; both keys are zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct StoreCipher {
    encryption_key: Box<[u8; KEY_LEN]>,
    mac_key: Box<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for StoreCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            encryption_key: _,
            mac_key: _,
        } = self;
        f.debug_struct("StoreCipher").finish_non_exhaustive()
    }
}

impl StoreCipher {
    /// Two fresh random keys.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut cipher = Self {
            encryption_key: Box::new([0u8; KEY_LEN]),
            mac_key: Box::new([0u8; KEY_LEN]),
        };
        rng.fill_bytes(cipher.encryption_key.as_mut_slice());
        rng.fill_bytes(cipher.mac_key.as_mut_slice());
        cipher
    }

    fn from_export(bytes: &[u8; EXPORT_LEN]) -> Self {
        let mut cipher = Self {
            encryption_key: Box::new([0u8; KEY_LEN]),
            mac_key: Box::new([0u8; KEY_LEN]),
        };
        let (enc, mac) = bytes.split_at(KEY_LEN);
        cipher.encryption_key.copy_from_slice(enc);
        cipher.mac_key.copy_from_slice(mac);
        cipher
    }

    fn export(&self) -> Zeroizing<[u8; EXPORT_LEN]> {
        let mut out = Zeroizing::new([0u8; EXPORT_LEN]);
        let (enc, mac) = out.split_at_mut(KEY_LEN);
        enc.copy_from_slice(self.encryption_key.as_slice());
        mac.copy_from_slice(self.mac_key.as_slice());
        out
    }

    /// Exports both keys wrapped under a 32-byte key the app holds (e.g. from the OS keychain).
    /// The wrapping key is derived from `key` with HKDF-SHA256, so the app's key is never used
    /// directly as an AEAD key.
    pub fn wrap_with_key(&self, key: &[u8; 32], rng: &mut (impl RngCore + CryptoRng)) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.wrap_with_key_parts(key, &nonce)
    }

    pub(crate) fn wrap_with_key_parts(&self, key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let header = [FORMAT_VERSION, KIND_RAW_KEY];
        let wrapping_key = raw_wrapping_key(key);
        self.wrap(&header, &wrapping_key, nonce)
    }

    /// Exports both keys wrapped under a key derived from `passphrase` with Argon2id at the
    /// [default](PassphraseParams::default) cost; a fresh salt and the parameters go into the blob.
    pub fn wrap_with_passphrase(
        &self,
        passphrase: &str,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>, StoreCipherError> {
        self.wrap_with_passphrase_params(passphrase, PassphraseParams::default(), rng)
    }

    /// [`wrap_with_passphrase`](Self::wrap_with_passphrase) at a chosen Argon2id cost.
    pub fn wrap_with_passphrase_params(
        &self,
        passphrase: &str,
        params: PassphraseParams,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>, StoreCipherError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut nonce);
        self.wrap_with_passphrase_parts(passphrase, params, &salt, &nonce)
    }

    pub(crate) fn wrap_with_passphrase_parts(
        &self,
        passphrase: &str,
        params: PassphraseParams,
        salt: &[u8; SALT_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, StoreCipherError> {
        let header = passphrase_header(params, salt);
        let wrapping_key = passphrase_wrapping_key(passphrase, params, salt)?;
        Ok(self.wrap(&header, &wrapping_key, nonce))
    }

    fn wrap(
        &self,
        header: &[u8],
        wrapping_key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Vec<u8> {
        let aead = Aes256GcmSiv::new(wrapping_key.into());
        let mut body = Zeroizing::new(self.export().to_vec());
        let ad = [LABEL_WRAP, header].concat();
        let tag = match aead.encrypt_in_place_detached(Nonce::from_slice(nonce), &ad, &mut body) {
            Ok(tag) => tag,
            // AES-GCM-SIV refuses only plaintexts over 2^36 bytes; this one is 64.
            Err(_) => unreachable_tag(&mut body),
        };
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + EXPORT_LEN + TAG_LEN);
        out.extend_from_slice(header);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a blob from [`wrap_with_key`](Self::wrap_with_key).
    pub fn unwrap_with_key(blob: &[u8], key: &[u8; 32]) -> Result<Self, StoreCipherError> {
        let kind = blob_kind(blob)?;
        if kind != KIND_RAW_KEY {
            return Err(StoreCipherError::WrongKeyKind {
                expected: "passphrase",
                given: "raw key",
            });
        }
        let (header, rest) = blob.split_at(2);
        let wrapping_key = raw_wrapping_key(key);
        Self::unwrap(header, rest, &wrapping_key)
    }

    /// Opens a blob from [`wrap_with_passphrase`](Self::wrap_with_passphrase), with the Argon2id
    /// parameters and salt the blob carries (refused if out of [bounds](PassphraseParams::validate)).
    pub fn unwrap_with_passphrase(blob: &[u8], passphrase: &str) -> Result<Self, StoreCipherError> {
        let kind = blob_kind(blob)?;
        if kind != KIND_PASSPHRASE {
            return Err(StoreCipherError::WrongKeyKind {
                expected: "raw key",
                given: "passphrase",
            });
        }
        let header_len = 2 + 12 + SALT_LEN;
        if blob.len() < header_len {
            return Err(StoreCipherError::Malformed);
        }
        let (header, rest) = blob.split_at(header_len);
        let (params, salt) = parse_passphrase_header(header)?;
        let wrapping_key = passphrase_wrapping_key(passphrase, params, &salt)?;
        Self::unwrap(header, rest, &wrapping_key)
    }

    /// Tells how a blob was wrapped, without opening it.
    pub fn blob_uses_passphrase(blob: &[u8]) -> Result<bool, StoreCipherError> {
        Ok(blob_kind(blob)? == KIND_PASSPHRASE)
    }

    fn unwrap(
        header: &[u8],
        rest: &[u8],
        wrapping_key: &[u8; KEY_LEN],
    ) -> Result<Self, StoreCipherError> {
        if rest.len() != NONCE_LEN + EXPORT_LEN + TAG_LEN {
            return Err(StoreCipherError::Malformed);
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(EXPORT_LEN);
        let mut plain = Zeroizing::new([0u8; EXPORT_LEN]);
        plain.copy_from_slice(body);
        let aead = Aes256GcmSiv::new(wrapping_key.into());
        let ad = [LABEL_WRAP, header].concat();
        aead.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &ad,
            plain.as_mut_slice(),
            tag.into(),
        )
        .map_err(|_| StoreCipherError::WrongKey)?;
        Ok(Self::from_export(&plain))
    }

    /// Keyed hash of a lookup key, domain-separated by table: equal `(table, key)` give equal
    /// hashes, and without the MAC key nothing about `key` can be learnt or tested.
    pub fn hash_key(&self, table: &str, key: &[u8]) -> [u8; 32] {
        // `new_from_slice` accepts any length for HMAC; 32 bytes cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_slice()) {
            Ok(mac) => mac,
            Err(_) => return [0u8; 32],
        };
        mac.update(LABEL_KEY_HASH);
        mac.update(&len_prefix(table.len()));
        mac.update(table.as_bytes());
        mac.update(key);
        mac.finalize().into_bytes().into()
    }

    /// AEAD-seals a value under a fresh random nonce. `table` and `key_hash` are bound as
    /// associated data, so the value opens only under the same table and key.
    pub fn seal(
        &self,
        table: &str,
        key_hash: &[u8],
        plaintext: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let aead = Aes256GcmSiv::new(self.encryption_key.as_slice().into());
        let ad = value_ad(table, key_hash);
        let tag = match out.get_mut(1 + NONCE_LEN..) {
            Some(body) => {
                match aead.encrypt_in_place_detached(Nonce::from_slice(&nonce), &ad, body) {
                    Ok(tag) => tag,
                    // Only plaintexts over 2^36 bytes are refused; nothing in memory is that long.
                    Err(_) => unreachable_tag(body),
                }
            }
            None => unreachable_tag(&mut []),
        };
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a value from [`seal`](Self::seal) with the same `table` and `key_hash`.
    pub fn open(
        &self,
        table: &str,
        key_hash: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreCipherError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(StoreCipherError::Malformed);
        };
        if version != FORMAT_VERSION {
            return Err(StoreCipherError::UnsupportedVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreCipherError::Malformed);
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = Zeroizing::new(body.to_vec());
        let aead = Aes256GcmSiv::new(self.encryption_key.as_slice().into());
        let ad = value_ad(table, key_hash);
        aead.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &ad,
            plain.as_mut_slice(),
            tag.into(),
        )
        .map_err(|_| StoreCipherError::Tampered)?;
        Ok(plain)
    }
}

/// The AEAD's only refusal is a plaintext over 2^36 bytes, which no caller here can reach. Should
/// it happen, the still-plaintext body is wiped and a zero tag written: the value then fails to
/// open later instead of reaching the backend readable.
fn unreachable_tag(body: &mut [u8]) -> aes_gcm_siv::Tag {
    body.zeroize();
    aes_gcm_siv::Tag::default()
}

fn len_prefix(len: usize) -> [u8; 4] {
    // Tables are short names and key hashes 32 or 40 bytes; saturating keeps this total.
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

fn value_ad(table: &str, key_hash: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(LABEL_VALUE.len() + 1 + 8 + table.len() + key_hash.len());
    ad.extend_from_slice(LABEL_VALUE);
    ad.push(FORMAT_VERSION);
    ad.extend_from_slice(&len_prefix(table.len()));
    ad.extend_from_slice(table.as_bytes());
    ad.extend_from_slice(&len_prefix(key_hash.len()));
    ad.extend_from_slice(key_hash);
    ad
}

fn blob_kind(blob: &[u8]) -> Result<u8, StoreCipherError> {
    match blob {
        [FORMAT_VERSION, kind @ (KIND_RAW_KEY | KIND_PASSPHRASE), ..] => Ok(*kind),
        [FORMAT_VERSION, ..] | [] => Err(StoreCipherError::Malformed),
        [version, ..] => Err(StoreCipherError::UnsupportedVersion(*version)),
    }
}

fn raw_wrapping_key(key: &[u8; 32]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    let hk = Hkdf::<Sha256>::new(None, key);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    if hk.expand(LABEL_WRAP_KEY, out.as_mut_slice()).is_err() {
        out.zeroize();
    }
    out
}

fn passphrase_header(params: PassphraseParams, salt: &[u8; SALT_LEN]) -> Vec<u8> {
    let mut header = Vec::with_capacity(2 + 12 + SALT_LEN);
    header.push(FORMAT_VERSION);
    header.push(KIND_PASSPHRASE);
    header.extend_from_slice(&params.memory_kib.to_be_bytes());
    header.extend_from_slice(&params.iterations.to_be_bytes());
    header.extend_from_slice(&params.parallelism.to_be_bytes());
    header.extend_from_slice(salt);
    header
}

fn parse_passphrase_header(
    header: &[u8],
) -> Result<(PassphraseParams, [u8; SALT_LEN]), StoreCipherError> {
    let word = |at: usize| -> Result<u32, StoreCipherError> {
        header
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or(StoreCipherError::Malformed)
    };
    let params = PassphraseParams {
        memory_kib: word(2)?,
        iterations: word(6)?,
        parallelism: word(10)?,
    };
    let salt = header
        .get(14..14 + SALT_LEN)
        .and_then(|b| <[u8; SALT_LEN]>::try_from(b).ok())
        .ok_or(StoreCipherError::Malformed)?;
    Ok((params, salt))
}

fn passphrase_wrapping_key(
    passphrase: &str,
    params: PassphraseParams,
    salt: &[u8; SALT_LEN],
) -> Result<Zeroizing<[u8; KEY_LEN]>, StoreCipherError> {
    let argon2 = params.argon2()?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    argon2
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut_slice())
        .map_err(|_| StoreCipherError::KdfParams)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Cheap parameters so debug-build tests stay fast; the default is exercised once.
    pub(crate) const FAST: PassphraseParams = PassphraseParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let mut rng = rng();
        let cipher = StoreCipher::generate(&mut rng);
        let h = cipher.hash_key("messages", b"conv-1");
        let sealed = cipher.seal("messages", &h, b"hello", &mut rng);
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 5);
        assert_eq!(
            cipher.open("messages", &h, &sealed).unwrap().as_slice(),
            b"hello"
        );
        let other = cipher.hash_key("messages", b"conv-2");
        assert!(matches!(
            cipher.open("messages", &other, &sealed),
            Err(StoreCipherError::Tampered)
        ));
        assert!(matches!(
            cipher.open("contacts", &h, &sealed),
            Err(StoreCipherError::Tampered)
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            cipher.open("messages", &h, &flipped),
            Err(StoreCipherError::Tampered)
        ));
        assert!(matches!(
            cipher.open("messages", &h, &sealed[..10]),
            Err(StoreCipherError::Malformed)
        ));
        let mut v2 = sealed;
        v2[0] = 2;
        assert!(matches!(
            cipher.open("messages", &h, &v2),
            Err(StoreCipherError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn another_cipher_cannot_open() {
        let mut rng = rng();
        let a = StoreCipher::generate(&mut rng);
        let b = StoreCipher::generate(&mut rng);
        let h = a.hash_key("t", b"k");
        let sealed = a.seal("t", &h, b"secret", &mut rng);
        assert!(b.open("t", &h, &sealed).is_err());
    }

    #[test]
    fn seal_uses_fresh_nonces() {
        let mut rng = rng();
        let cipher = StoreCipher::generate(&mut rng);
        let h = cipher.hash_key("t", b"k");
        let a = cipher.seal("t", &h, b"same", &mut rng);
        let b = cipher.seal("t", &h, b"same", &mut rng);
        assert_ne!(a, b);
    }

    #[test]
    fn hash_key_is_keyed_and_domain_separated() {
        let mut rng = rng();
        let a = StoreCipher::generate(&mut rng);
        let b = StoreCipher::generate(&mut rng);
        assert_eq!(a.hash_key("t", b"k"), a.hash_key("t", b"k"));
        assert_ne!(a.hash_key("t", b"k"), b.hash_key("t", b"k"));
        assert_ne!(a.hash_key("t", b"k"), a.hash_key("u", b"k"));
        // The length prefix keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(a.hash_key("ab", b"c"), a.hash_key("a", b"bc"));
    }

    #[test]
    fn wrap_with_key_round_trip_and_wrong_key() {
        let mut rng = rng();
        let cipher = StoreCipher::generate(&mut rng);
        let key = [9u8; 32];
        let blob = cipher.wrap_with_key(&key, &mut rng);
        assert_eq!(blob.len(), 2 + NONCE_LEN + EXPORT_LEN + TAG_LEN);
        let back = StoreCipher::unwrap_with_key(&blob, &key).unwrap();
        assert_eq!(back.hash_key("t", b"k"), cipher.hash_key("t", b"k"));
        assert!(matches!(
            StoreCipher::unwrap_with_key(&blob, &[8u8; 32]),
            Err(StoreCipherError::WrongKey)
        ));
        let mut bad = blob.clone();
        bad[5] ^= 1;
        assert!(matches!(
            StoreCipher::unwrap_with_key(&bad, &key),
            Err(StoreCipherError::WrongKey)
        ));
        assert!(matches!(
            StoreCipher::unwrap_with_key(&blob[..20], &key),
            Err(StoreCipherError::Malformed)
        ));
        assert!(matches!(
            StoreCipher::unwrap_with_passphrase(&blob, "x"),
            Err(StoreCipherError::WrongKeyKind { .. })
        ));
    }

    #[test]
    fn wrap_with_passphrase_round_trip_and_wrong_passphrase() {
        let mut rng = rng();
        let cipher = StoreCipher::generate(&mut rng);
        let blob = cipher
            .wrap_with_passphrase_params("correct horse", FAST, &mut rng)
            .unwrap();
        let back = StoreCipher::unwrap_with_passphrase(&blob, "correct horse").unwrap();
        assert_eq!(back.hash_key("t", b"k"), cipher.hash_key("t", b"k"));
        assert!(matches!(
            StoreCipher::unwrap_with_passphrase(&blob, "correct horsf"),
            Err(StoreCipherError::WrongKey)
        ));
        // Lowering the cost in the header changes the derived key and the associated data.
        let mut cheaper = blob.clone();
        cheaper[9] = 0;
        cheaper[5] = 32;
        assert!(StoreCipher::unwrap_with_passphrase(&cheaper, "correct horse").is_err());
        assert!(matches!(
            StoreCipher::unwrap_with_key(&blob, &[0; 32]),
            Err(StoreCipherError::WrongKeyKind { .. })
        ));
    }

    #[test]
    fn default_passphrase_params_round_trip() {
        let mut rng = rng();
        let cipher = StoreCipher::generate(&mut rng);
        let blob = cipher.wrap_with_passphrase("pass", &mut rng).unwrap();
        let back = StoreCipher::unwrap_with_passphrase(&blob, "pass").unwrap();
        assert_eq!(back.hash_key("t", b"k"), cipher.hash_key("t", b"k"));
    }

    #[test]
    fn blob_params_are_bounded() {
        let mut rng = rng();
        let cipher = StoreCipher::generate(&mut rng);
        let blob = cipher
            .wrap_with_passphrase_params("p", FAST, &mut rng)
            .unwrap();
        let mut huge = blob.clone();
        huge[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            StoreCipher::unwrap_with_passphrase(&huge, "p"),
            Err(StoreCipherError::KdfParams)
        ));
        let too_many_passes = PassphraseParams {
            iterations: 1000,
            ..FAST
        };
        assert!(cipher
            .wrap_with_passphrase_params("p", too_many_passes, &mut rng)
            .is_err());
    }

    #[test]
    fn unknown_versions_and_kinds_are_refused() {
        assert!(matches!(
            StoreCipher::unwrap_with_key(&[], &[0; 32]),
            Err(StoreCipherError::Malformed)
        ));
        assert!(matches!(
            StoreCipher::unwrap_with_key(&[7, 1, 0, 0], &[0; 32]),
            Err(StoreCipherError::UnsupportedVersion(7))
        ));
        assert!(matches!(
            StoreCipher::unwrap_with_key(&[1, 9, 0, 0], &[0; 32]),
            Err(StoreCipherError::Malformed)
        ));
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let cipher = StoreCipher::from_export(&[0xAB; EXPORT_LEN]);
        let shown = format!("{cipher:?}");
        assert_eq!(shown, "StoreCipher { .. }");
        assert!(!shown.to_lowercase().contains("ab"));
    }
}
