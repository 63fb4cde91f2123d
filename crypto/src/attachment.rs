//! The attachment cipher: a fresh key per file, streaming chunked AEAD (AES-256-GCM in the STREAM
//! construction), and a SHA-256 digest of the ciphertext that the sender puts in the message.
//!
//! ```text
//! blob   = header || chunk_0 || chunk_1 || ... || chunk_last
//! header = u8 version = 1 | u8 tag = 0x30 | 32-byte random salt                      (34 bytes)
//! okm    = HKDF-SHA256(salt = header salt, ikm = attachment key,
//!                      info = "Sotto v1 Attachment chunk keys", L = 39)
//! aes key = okm[0..32], nonce prefix = okm[32..39]
//! chunk_i = AES-256-GCM(aes key, nonce_i, aad = empty, plaintext_i) || 16-byte tag
//! nonce_i = nonce prefix (7) | u32 big-endian i | 0x01 if this is the last chunk else 0x00
//! plaintext_i is CHUNK_SIZE (64 KiB) bytes, except the last: 0..=CHUNK_SIZE (0 only if the file is empty)
//! digest = SHA-256(blob)
//! ```
//!
//! The chunk index in the nonce makes a reordered or dropped chunk fail, the last-chunk flag makes a
//! blob cut at a chunk boundary fail (its new final chunk was sealed as "not last") and makes anything
//! appended after the real last chunk fail (that chunk was sealed as "last"). The digest binds the
//! message to exactly one blob, even against a holder of the key who could seal a different one.
//!
//! [`Encryptor`] and [`Decryptor`] are sans-IO and hold at most one chunk, so a 50 MB file costs
//! about 64 KiB of memory whatever its size; [`encrypt_stream`] and [`decrypt_stream`] drive them over
//! `std::io`. Decrypted chunks are released as they verify, but the stream as a whole is only known to
//! be the sender's when [`Decryptor::finish`] returns `Ok`: write the output somewhere provisional and
//! discard it on any error.
//!
//! AES-256-GCM comes from `ring` on native targets and from RustCrypto's `aes-gcm` on `wasm32` (one
//! private module chooses; both produce the same bytes). The attachment key and this module's copies
//! of the derived chunk key are wiped; neither implementation wipes its expanded key schedule (which
//! begins with the chunk key itself) on drop. See `docs/protocol/attachments.md`.
//!
//! ```
//! use rand_chacha::rand_core::SeedableRng;
//! use sotto_crypto::attachment::{AttachmentKey, Decryptor, Encryptor};
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let key = AttachmentKey::generate(&mut rng);
//! let mut blob = Vec::new();
//! let mut encryptor = Encryptor::new(&key, &mut rng);
//! encryptor.push(b"a picture", &mut blob).unwrap();
//! let digest = encryptor.finish(&mut blob).unwrap();
//!
//! // The key and digest travel in the (end-to-end encrypted) message; the blob goes to the store.
//! let mut decryptor = Decryptor::new(&key, &digest);
//! let mut plaintext = Vec::new();
//! decryptor.push(&blob, &mut plaintext).unwrap();
//! decryptor.finish(&mut plaintext).unwrap();
//! assert_eq!(plaintext, b"a picture");
//! ```

use std::io::{Read, Write};

use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use backend::{ChunkAead, PlatformAead};

mod backend;

/// Format version of the attachment blob.
pub const VERSION: u8 = 1;
/// Type tag of the attachment blob header.
const HEADER_TAG: u8 = 0x30;
/// Plaintext bytes per chunk (all but the last chunk are exactly this long).
pub const CHUNK_SIZE: usize = 64 * 1024;
/// AES-GCM tag bytes per chunk.
pub const TAG_LEN: usize = 16;
/// Length of the random salt in the header.
pub const SALT_LEN: usize = 32;
/// Length of the header: version, tag, salt.
pub const HEADER_LEN: usize = 2 + SALT_LEN;
/// HKDF info deriving the chunk key and nonce prefix.
const CHUNK_KEYS_INFO: &[u8] = b"Sotto v1 Attachment chunk keys";
const NONCE_PREFIX_LEN: usize = 7;
const SEALED_CHUNK: usize = CHUNK_SIZE + TAG_LEN;
/// The largest drained output buffer that trades places with a chunk buffer (see `Sealer::seal`):
/// a larger one was sized by the caller for the whole output, and stays with the caller.
const MAX_TRADED_CAPACITY: usize = 4 * SEALED_CHUNK;

/// The blob length for a plaintext of `plaintext_len` bytes (for the upload's Content-Length).
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    let chunk = CHUNK_SIZE as u64;
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
}

/// The random key of one attachment. Secret: it travels only inside an end-to-end encrypted message.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AttachmentKey(Box<[u8; 32]>);

impl core::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttachmentKey").finish_non_exhaustive()
    }
}

impl AttachmentKey {
    /// A fresh key; use one per attachment.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = Box::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// A key taken out of a decrypted message.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Box::new(*bytes))
    }

    /// The key bytes, to put in the outgoing message; the returned copy wipes itself when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0)
    }

    /// The AES-256-GCM cipher and nonce prefix for the blob with this header salt.
    fn chunk_cipher<A: ChunkAead>(&self, salt: &[u8; SALT_LEN]) -> (A, [u8; NONCE_PREFIX_LEN]) {
        let mut okm = Zeroizing::new([0u8; 32 + NONCE_PREFIX_LEN]);
        // HKDF-Expand refuses only outputs above 255 blocks; this is two.
        #[allow(clippy::expect_used)]
        Hkdf::<Sha256>::new(Some(salt), self.0.as_slice())
            .expand(CHUNK_KEYS_INFO, okm.as_mut())
            .expect("39 bytes is a valid HKDF-SHA256 output length");
        // Splits the 39 bytes into the 32-byte key and the 7-byte prefix, checked at compile time.
        let [key @ .., p0, p1, p2, p3, p4, p5, p6] = &*okm;
        (A::new(key), [*p0, *p1, *p2, *p3, *p4, *p5, *p6])
    }
}

/// SHA-256 of the whole blob. Not secret; compared in constant time.
#[derive(Clone, Copy, Debug, Eq)]
pub struct AttachmentDigest(pub [u8; 32]);

impl PartialEq for AttachmentDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl AttachmentDigest {
    /// Hashes a complete blob (e.g. to check a download before decrypting it).
    pub fn of(blob: &[u8]) -> Self {
        Self(Sha256::digest(blob).into())
    }
}

fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    let (p, rest) = n.split_at_mut(NONCE_PREFIX_LEN);
    p.copy_from_slice(prefix);
    let (counter, flag) = rest.split_at_mut(4);
    counter.copy_from_slice(&index.to_be_bytes());
    flag.copy_from_slice(&[u8::from(last)]);
    n
}

/// Why encryption stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentEncryptError {
    /// The file would need more than 2^32 chunks (256 TiB).
    #[error("attachment too large for one stream")]
    TooLong,
}

/// Why decryption stopped. After any error the output so far must be discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentDecryptError {
    /// The header names a version or type this build does not know.
    #[error("unsupported attachment header")]
    UnsupportedHeader,
    /// The blob ended before a header and a final chunk.
    #[error("attachment is truncated")]
    Truncated,
    /// A chunk failed authentication: tampered, reordered, cut at a chunk boundary or extended.
    #[error("attachment chunk {index} failed authentication")]
    ChunkRejected {
        /// The index of the chunk that failed.
        index: u32,
    },
    /// The blob is not the one the message named.
    #[error("attachment digest does not match")]
    DigestMismatch,
    /// A previous call already failed.
    #[error("the decryptor already failed")]
    Failed,
}

/// Encrypts one attachment incrementally. Memory: one chunk.
pub struct Encryptor(Sealer<PlatformAead>);

impl core::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Encryptor")
            .field("chunks_sealed", &self.0.index)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Starts a blob under `key` with a fresh random salt.
    pub fn new(key: &AttachmentKey, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self(Sealer::new(key, rng))
    }

    /// Encrypts more of the file, appending whatever ciphertext is ready to `out` (the caller drains
    /// `out` as it likes; this keeps at most one chunk of plaintext back). When `out` is empty, a
    /// ready chunk is encrypted where it was collected and `out` takes over that buffer: the same
    /// bytes, one copy fewer.
    pub fn push(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AttachmentEncryptError> {
        self.0.push(plaintext, out)
    }

    /// Seals the last chunk onto `out` and returns the blob's digest for the message.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<AttachmentDigest, AttachmentEncryptError> {
        self.0.finish(out)
    }
}

/// The encryptor over one AES-GCM implementation.
struct Sealer<A> {
    cipher: A,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    header: Option<[u8; HEADER_LEN]>,
    index: u32,
    /// Plaintext of the chunk being filled; sealed once more input shows it is not the last.
    pending: Zeroizing<Vec<u8>>,
    hasher: Sha256,
}

impl<A: ChunkAead> Sealer<A> {
    fn new(key: &AttachmentKey, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let (cipher, nonce_prefix) = key.chunk_cipher(&salt);
        let mut header = [0u8; HEADER_LEN];
        let (head, header_salt) = header.split_at_mut(2);
        head.copy_from_slice(&[VERSION, HEADER_TAG]);
        header_salt.copy_from_slice(&salt);
        Self {
            cipher,
            nonce_prefix,
            header: Some(header),
            index: 0,
            // Room for the tag too: this buffer becomes the caller's output when it is sealed.
            pending: Zeroizing::new(Vec::with_capacity(SEALED_CHUNK)),
            hasher: Sha256::new(),
        }
    }

    fn emit_header(&mut self, out: &mut Vec<u8>) {
        if let Some(header) = self.header.take() {
            self.hasher.update(header);
            out.extend_from_slice(&header);
        }
    }

    /// Seals `pending` as chunk `self.index` onto `out`.
    fn seal(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), AttachmentEncryptError> {
        let start = out.len();
        if start == 0 && out.capacity() <= MAX_TRADED_CAPACITY {
            // The caller drained `out`: encrypt the pending buffer where it is and hand it over,
            // keeping the caller's empty one for the next chunk, instead of copying 64 KiB. The
            // reservation happens while it is empty, so no plaintext is ever left behind by a
            // reallocation.
            core::mem::swap(&mut *self.pending, out);
            self.pending.reserve(SEALED_CHUNK);
        } else {
            out.extend_from_slice(&self.pending);
            self.pending.clear();
        }
        let nonce = nonce(&self.nonce_prefix, self.index, last);
        // AES-GCM refuses only inputs above 64 GiB; chunks are 64 KiB.
        let sealed = self
            .cipher
            .seal(nonce, out.get_mut(start..).unwrap_or_default());
        let Ok(tag) = sealed else {
            out.get_mut(start..).unwrap_or_default().zeroize();
            out.truncate(start);
            return Err(AttachmentEncryptError::TooLong);
        };
        out.extend_from_slice(&tag);
        self.hasher.update(out.get(start..).unwrap_or_default());
        if !last {
            self.index = self
                .index
                .checked_add(1)
                .ok_or(AttachmentEncryptError::TooLong)?;
        }
        Ok(())
    }

    fn push(
        &mut self,
        mut plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AttachmentEncryptError> {
        self.emit_header(out);
        while !plaintext.is_empty() {
            if self.pending.len() == CHUNK_SIZE {
                self.seal(false, out)?;
            }
            let take = (CHUNK_SIZE - self.pending.len()).min(plaintext.len());
            let (now, later) = plaintext.split_at(take);
            self.pending.extend_from_slice(now);
            plaintext = later;
        }
        Ok(())
    }

    fn finish(mut self, out: &mut Vec<u8>) -> Result<AttachmentDigest, AttachmentEncryptError> {
        self.emit_header(out);
        self.seal(true, out)?;
        Ok(AttachmentDigest(self.hasher.finalize().into()))
    }
}

/// Decrypts one attachment incrementally, checking every chunk and, at the end, the digest.
pub struct Decryptor(Opener<PlatformAead>);

impl core::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decryptor")
            .field("chunks_opened", &self.0.index)
            .field("failed", &self.0.failed)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Prepares to decrypt the blob a message named by `key` and `digest`.
    pub fn new(key: &AttachmentKey, digest: &AttachmentDigest) -> Self {
        Self(Opener::new(key, digest))
    }

    /// Feeds more of the blob, appending verified plaintext to `out`. Holds back at most one chunk.
    /// When `out` is empty, a ready chunk is decrypted where it was collected and `out` takes over
    /// that buffer: the same bytes, one copy fewer.
    pub fn push(
        &mut self,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AttachmentDecryptError> {
        self.0.push(ciphertext, out)
    }

    /// Checks the digest and opens the last chunk onto `out`. Only after `Ok` here is the whole
    /// output the sender's file.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), AttachmentDecryptError> {
        self.0.finish(out)
    }
}

/// The decryptor over one AES-GCM implementation.
struct Opener<A> {
    key: AttachmentKey,
    expected: AttachmentDigest,
    /// Set once the header has been read.
    cipher: Option<(A, [u8; NONCE_PREFIX_LEN])>,
    index: u32,
    /// Header bytes, then ciphertext of the chunk being filled (at most one sealed chunk). Wiped
    /// when dropped: it trades places with the caller's drained output buffer, which may hold
    /// earlier plaintext in its spare capacity.
    pending: Zeroizing<Vec<u8>>,
    hasher: Sha256,
    failed: bool,
}

impl<A: ChunkAead> Opener<A> {
    fn new(key: &AttachmentKey, digest: &AttachmentDigest) -> Self {
        Self {
            key: key.clone(),
            expected: *digest,
            cipher: None,
            index: 0,
            pending: Zeroizing::new(Vec::with_capacity(SEALED_CHUNK)),
            hasher: Sha256::new(),
            failed: false,
        }
    }

    /// Opens `pending` (a whole sealed chunk) onto `out`.
    fn open(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), AttachmentDecryptError> {
        let index = self.index;
        let rejected = AttachmentDecryptError::ChunkRejected { index };
        let (cipher, prefix) = self
            .cipher
            .as_ref()
            .ok_or(AttachmentDecryptError::Truncated)?;
        let (body, tag) = self
            .pending
            .split_last_chunk::<TAG_LEN>()
            .ok_or(AttachmentDecryptError::Truncated)?;
        let tag = *tag;
        let body_len = body.len();
        let start = out.len();
        if start == 0 && out.capacity() <= MAX_TRADED_CAPACITY {
            // The caller drained `out`: decrypt the pending buffer where it is and hand it over,
            // keeping the caller's empty one for the next chunk, instead of copying 64 KiB.
            core::mem::swap(&mut *self.pending, out);
            out.truncate(body_len);
            self.pending.reserve(SEALED_CHUNK);
        } else {
            out.extend_from_slice(body);
        }
        self.pending.clear();
        let nonce = nonce(prefix, index, last);
        let opened = cipher.open(nonce, out.get_mut(start..).unwrap_or_default(), &tag);
        if opened.is_err() {
            out.get_mut(start..).unwrap_or_default().zeroize();
            out.truncate(start);
            return Err(rejected);
        }
        if !last {
            self.index = index.checked_add(1).ok_or(rejected)?;
        }
        Ok(())
    }

    fn push(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentDecryptError> {
        if self.failed {
            return Err(AttachmentDecryptError::Failed);
        }
        let result = self.push_inner(ciphertext, out);
        self.failed = result.is_err();
        result
    }

    fn push_inner(
        &mut self,
        mut ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AttachmentDecryptError> {
        self.hasher.update(ciphertext);
        if self.cipher.is_none() {
            let take = (HEADER_LEN - self.pending.len()).min(ciphertext.len());
            let (now, later) = ciphertext.split_at(take);
            self.pending.extend_from_slice(now);
            ciphertext = later;
            if self.pending.len() < HEADER_LEN {
                return Ok(());
            }
            self.read_header()?;
        }
        while !ciphertext.is_empty() {
            if self.pending.len() == SEALED_CHUNK {
                self.open(false, out)?;
            }
            let take = (SEALED_CHUNK - self.pending.len()).min(ciphertext.len());
            let (now, later) = ciphertext.split_at(take);
            self.pending.extend_from_slice(now);
            ciphertext = later;
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), AttachmentDecryptError> {
        let (head, salt) = self
            .pending
            .split_first_chunk::<2>()
            .ok_or(AttachmentDecryptError::Truncated)?;
        let salt: &[u8; SALT_LEN] = salt
            .try_into()
            .map_err(|_| AttachmentDecryptError::Truncated)?;
        if *head != [VERSION, HEADER_TAG] {
            return Err(AttachmentDecryptError::UnsupportedHeader);
        }
        self.cipher = Some(self.key.chunk_cipher(salt));
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self, out: &mut Vec<u8>) -> Result<(), AttachmentDecryptError> {
        if self.failed {
            return Err(AttachmentDecryptError::Failed);
        }
        if self.cipher.is_none() || self.pending.len() < TAG_LEN {
            return Err(AttachmentDecryptError::Truncated);
        }
        let digest = AttachmentDigest(self.hasher.clone().finalize().into());
        if digest != self.expected {
            return Err(AttachmentDecryptError::DigestMismatch);
        }
        self.open(true, out)
    }
}

/// Why a streaming helper stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentStreamError {
    /// Reading the input or writing the output failed.
    #[error("attachment I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Encryption failed.
    #[error(transparent)]
    Encrypt(#[from] AttachmentEncryptError),
    /// Decryption failed; discard what was written.
    #[error(transparent)]
    Decrypt(#[from] AttachmentDecryptError),
}

/// Drives `step` over `reader` one chunk-sized read at a time, writing its output to `writer`.
fn pump<E>(
    mut reader: impl Read,
    writer: &mut impl Write,
    mut step: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), E>,
) -> Result<(), AttachmentStreamError>
where
    AttachmentStreamError: From<E>,
{
    let mut input = vec![0u8; CHUNK_SIZE];
    let mut output = Vec::with_capacity(2 * SEALED_CHUNK);
    loop {
        let n = match reader.read(&mut input) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        step(input.get(..n).unwrap_or_default(), &mut output)?;
        writer.write_all(&output)?;
        output.clear();
    }
}

/// Encrypts everything `reader` yields into `writer` under a fresh salt; returns the digest.
pub fn encrypt_stream(
    key: &AttachmentKey,
    rng: &mut (impl RngCore + CryptoRng),
    reader: impl Read,
    mut writer: impl Write,
) -> Result<AttachmentDigest, AttachmentStreamError> {
    let mut encryptor = Encryptor::new(key, rng);
    pump(reader, &mut writer, |input, out| encryptor.push(input, out))?;
    let mut output = Vec::with_capacity(SEALED_CHUNK + HEADER_LEN);
    let digest = encryptor.finish(&mut output)?;
    writer.write_all(&output)?;
    writer.flush()?;
    Ok(digest)
}

/// Decrypts the blob `reader` yields into `writer`. On `Err`, discard everything written.
pub fn decrypt_stream(
    key: &AttachmentKey,
    digest: &AttachmentDigest,
    reader: impl Read,
    mut writer: impl Write,
) -> Result<(), AttachmentStreamError> {
    let mut decryptor = Decryptor::new(key, digest);
    pump(reader, &mut writer, |input, out| decryptor.push(input, out))?;
    let mut output = Vec::with_capacity(CHUNK_SIZE);
    decryptor.finish(&mut output)?;
    writer.write_all(&output)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_layout() {
        let n = nonce(&[1, 2, 3, 4, 5, 6, 7], 0x0a0b0c0d, true);
        assert_eq!(n, [1, 2, 3, 4, 5, 6, 7, 0x0a, 0x0b, 0x0c, 0x0d, 1]);
        assert_eq!(nonce(&[0; 7], 1, false)[11], 0);
    }

    #[test]
    fn ciphertext_len_matches_layout() {
        assert_eq!(ciphertext_len(0), 34 + 16);
        assert_eq!(ciphertext_len(1), 34 + 1 + 16);
        assert_eq!(ciphertext_len(CHUNK_SIZE as u64), 34 + 65536 + 16);
        assert_eq!(ciphertext_len(CHUNK_SIZE as u64 + 1), 34 + 65537 + 32);
    }

    /// A drained `out` trades places with the chunk buffer only if it is small: a buffer the caller
    /// sized for the whole blob stays the caller's, and the bytes are the same either way.
    #[test]
    fn only_small_drained_buffers_trade_places() {
        use rand_chacha::rand_core::SeedableRng;
        let key = AttachmentKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(30));
        let plaintext: Vec<u8> = (0..3 * CHUNK_SIZE + 5).map(|i| i as u8).collect();
        let mut blobs = Vec::new();
        for capacity in [0, MAX_TRADED_CAPACITY, MAX_TRADED_CAPACITY + 1] {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(31);
            let mut e = Encryptor::new(&key, &mut rng);
            let (mut blob, mut out) = (Vec::new(), Vec::with_capacity(capacity));
            e.push(&[], &mut out).unwrap();
            blob.extend_from_slice(&out);
            out.clear();
            let (buffer, mut traded) = (out.as_ptr(), false);
            for piece in plaintext.chunks(CHUNK_SIZE) {
                e.push(piece, &mut out).unwrap();
                traded |= out.as_ptr() != buffer;
                blob.extend_from_slice(&out);
                out.clear();
            }
            assert_eq!(
                traded,
                capacity <= MAX_TRADED_CAPACITY,
                "capacity {capacity}"
            );
            let digest = e.finish(&mut out).unwrap();
            blob.extend_from_slice(&out);

            let mut d = Decryptor::new(&key, &digest);
            let (mut opened, mut out) = (Vec::new(), Vec::with_capacity(capacity));
            let (buffer, mut traded) = (out.as_ptr(), false);
            for piece in blob.chunks(CHUNK_SIZE) {
                d.push(piece, &mut out).unwrap();
                traded |= out.as_ptr() != buffer;
                opened.extend_from_slice(&out);
                out.clear();
            }
            assert_eq!(
                traded,
                capacity <= MAX_TRADED_CAPACITY,
                "capacity {capacity}"
            );
            d.finish(&mut out).unwrap();
            opened.extend_from_slice(&out);
            assert_eq!(opened, plaintext);
            blobs.push(blob);
        }
        assert!(blobs.windows(2).all(|w| w[0] == w[1]));
    }

    /// The native build's AES-GCM (`ring`) against the portable one (RustCrypto, used on wasm32):
    /// whole blobs sealed by either open with the other, and STREAM's checks hold in both.
    #[cfg(not(target_arch = "wasm32"))]
    mod across_backends {
        use super::*;
        use backend::{RingAead, RustCryptoAead};
        use rand_chacha::rand_core::SeedableRng;
        use rand_chacha::ChaCha20Rng;

        const SEALED: usize = SEALED_CHUNK;

        fn pattern(len: usize) -> Vec<u8> {
            (0..len).map(|i| (i % 251) as u8).collect()
        }

        /// Seals `plaintext` pushed `step` bytes at a time, either draining the output after every
        /// call (as an upload does) or letting it accumulate.
        fn seal<A: ChunkAead>(
            key: &AttachmentKey,
            seed: u64,
            plaintext: &[u8],
            step: usize,
            drain: bool,
        ) -> (Vec<u8>, AttachmentDigest) {
            let mut sealer = Sealer::<A>::new(key, &mut ChaCha20Rng::seed_from_u64(seed));
            let (mut blob, mut out) = (Vec::new(), Vec::new());
            // Emits the header, so that even an empty file's only chunk meets a drained `out`.
            sealer.push(&[], &mut out).unwrap();
            if drain {
                blob.append(&mut out);
            }
            for piece in plaintext.chunks(step) {
                sealer.push(piece, &mut out).unwrap();
                if drain {
                    blob.append(&mut out);
                }
            }
            let digest = sealer.finish(&mut out).unwrap();
            blob.append(&mut out);
            (blob, digest)
        }

        fn open<A: ChunkAead>(
            key: &AttachmentKey,
            digest: &AttachmentDigest,
            blob: &[u8],
            step: usize,
            drain: bool,
        ) -> Result<Vec<u8>, AttachmentDecryptError> {
            let mut opener = Opener::<A>::new(key, digest);
            let (mut plaintext, mut out) = (Vec::new(), Vec::new());
            for piece in blob.chunks(step) {
                opener.push(piece, &mut out)?;
                if drain {
                    plaintext.append(&mut out);
                }
            }
            opener.finish(&mut out)?;
            plaintext.append(&mut out);
            Ok(plaintext)
        }

        /// Opens with both implementations, as someone who also replaced the digest would.
        fn open_with_both(
            key: &AttachmentKey,
            blob: &[u8],
        ) -> [Result<Vec<u8>, AttachmentDecryptError>; 2] {
            let digest = AttachmentDigest::of(blob);
            [
                open::<RingAead>(key, &digest, blob, 5000, true),
                open::<RustCryptoAead>(key, &digest, blob, 5000, true),
            ]
        }

        #[test]
        fn blobs_are_identical_and_open_with_the_other() {
            let key = AttachmentKey::generate(&mut ChaCha20Rng::seed_from_u64(20));
            for len in [
                0,
                1,
                15,
                16,
                17,
                CHUNK_SIZE - 1,
                CHUNK_SIZE,
                CHUNK_SIZE + 1,
                2 * CHUNK_SIZE,
                3 * CHUNK_SIZE + 17,
            ] {
                let plaintext = pattern(len);
                for (step, drain) in [(CHUNK_SIZE, true), (1000, true), (len.max(1), false)] {
                    let (fast, digest) = seal::<RingAead>(&key, 21, &plaintext, step, drain);
                    let (portable, other) =
                        seal::<RustCryptoAead>(&key, 21, &plaintext, step, !drain);
                    assert_eq!(fast, portable, "len {len}");
                    assert_eq!(digest, other);
                    assert_eq!(digest, AttachmentDigest::of(&fast));
                    assert_eq!(fast.len() as u64, ciphertext_len(len as u64));
                    for dstep in [SEALED, 4099] {
                        for drain in [true, false] {
                            let opened = open::<RustCryptoAead>(&key, &digest, &fast, dstep, drain);
                            assert_eq!(opened.as_deref(), Ok(&plaintext[..]), "len {len}");
                            let opened = open::<RingAead>(&key, &digest, &portable, dstep, drain);
                            assert_eq!(opened.as_deref(), Ok(&plaintext[..]), "len {len}");
                        }
                    }
                }
            }
        }

        #[test]
        fn both_reject_truncated_extended_and_reordered_streams() {
            let key = AttachmentKey::generate(&mut ChaCha20Rng::seed_from_u64(22));
            let (blob, _) = seal::<RingAead>(&key, 23, &pattern(2 * CHUNK_SIZE + 100), 7000, true);
            let (portable, _) =
                seal::<RustCryptoAead>(&key, 23, &pattern(2 * CHUNK_SIZE + 100), 7000, false);
            assert_eq!(blob, portable);
            let chunk = |i: usize| &blob[HEADER_LEN + i * SEALED..HEADER_LEN + (i + 1) * SEALED];
            let rejected = |index| Err(AttachmentDecryptError::ChunkRejected { index });

            // Cut after chunk 0 or 1: the new final chunk was sealed as "not last".
            for chunks in [1, 2] {
                let cut = &blob[..HEADER_LEN + chunks * SEALED];
                assert_eq!(
                    open_with_both(&key, cut),
                    [rejected(chunks as u32 - 1), rejected(chunks as u32 - 1)]
                );
            }
            // A cut inside the final chunk fails its tag.
            let cut = &blob[..blob.len() - 1];
            assert_eq!(open_with_both(&key, cut), [rejected(2), rejected(2)]);

            // A chunk appended after the real final chunk makes that one be opened as "not last".
            let mut extended = blob.clone();
            extended.extend_from_slice(chunk(0));
            assert_eq!(open_with_both(&key, &extended), [rejected(2), rejected(2)]);

            // Chunks 0 and 1 swapped.
            let mut reordered = blob[..HEADER_LEN].to_vec();
            reordered.extend_from_slice(chunk(1));
            reordered.extend_from_slice(chunk(0));
            reordered.extend_from_slice(&blob[HEADER_LEN + 2 * SEALED..]);
            assert_eq!(open_with_both(&key, &reordered), [rejected(0), rejected(0)]);

            // Untouched, both open it.
            let [a, b] = open_with_both(&key, &blob);
            assert_eq!(a.unwrap(), pattern(2 * CHUNK_SIZE + 100));
            assert_eq!(b.unwrap(), pattern(2 * CHUNK_SIZE + 100));
        }
    }
}
