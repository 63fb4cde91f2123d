//! The attachment cipher: round trips, STREAM tamper detection, digest, constant memory, vectors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sotto_crypto::attachment::{
    ciphertext_len, decrypt_stream, encrypt_stream, AttachmentDecryptError, AttachmentDigest,
    AttachmentKey, AttachmentStreamError, Decryptor, Encryptor, CHUNK_SIZE, HEADER_LEN, TAG_LEN,
};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Encrypts `plaintext` pushing it in pieces of `step` bytes.
fn encrypt(
    key: &AttachmentKey,
    seed: u64,
    plaintext: &[u8],
    step: usize,
) -> (Vec<u8>, AttachmentDigest) {
    let mut blob = Vec::new();
    let mut e = Encryptor::new(key, &mut rng(seed));
    for piece in plaintext.chunks(step.max(1)) {
        e.push(piece, &mut blob).unwrap();
    }
    let digest = e.finish(&mut blob).unwrap();
    (blob, digest)
}

fn decrypt(
    key: &AttachmentKey,
    digest: &AttachmentDigest,
    blob: &[u8],
    step: usize,
) -> Result<Vec<u8>, AttachmentDecryptError> {
    let mut out = Vec::new();
    let mut d = Decryptor::new(key, digest);
    for piece in blob.chunks(step.max(1)) {
        d.push(piece, &mut out)?;
    }
    d.finish(&mut out)?;
    Ok(out)
}

/// Decrypts as an attacker who also replaced the digest in the message would: only the STREAM
/// construction stands in the way.
fn decrypt_with_own_digest(
    key: &AttachmentKey,
    blob: &[u8],
) -> Result<Vec<u8>, AttachmentDecryptError> {
    decrypt(key, &AttachmentDigest::of(blob), blob, 4096)
}

#[test]
fn round_trips_at_every_boundary_and_push_size() {
    let key = AttachmentKey::generate(&mut rng(1));
    for len in [
        0,
        1,
        15,
        16,
        17,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        3 * CHUNK_SIZE,
        3 * CHUNK_SIZE + 17,
    ] {
        let plaintext = pattern(len);
        for step in [1000, CHUNK_SIZE] {
            let (blob, digest) = encrypt(&key, len as u64, &plaintext, step);
            assert_eq!(blob.len() as u64, ciphertext_len(len as u64), "len {len}");
            assert_eq!(digest, AttachmentDigest::of(&blob));
            for dstep in [1 + len / 7, CHUNK_SIZE + TAG_LEN] {
                assert_eq!(
                    decrypt(&key, &digest, &blob, dstep).unwrap(),
                    plaintext,
                    "len {len}"
                );
            }
        }
    }
    // Byte-at-a-time pushes on both sides.
    let plaintext = pattern(300);
    let (blob, digest) = encrypt(&key, 9, &plaintext, 1);
    assert_eq!(decrypt(&key, &digest, &blob, 1).unwrap(), plaintext);
}

#[test]
fn fresh_salt_per_blob() {
    let key = AttachmentKey::generate(&mut rng(2));
    let (a, _) = encrypt(&key, 1, b"same", 4);
    let (b, _) = encrypt(&key, 2, b"same", 4);
    assert_ne!(a[2..HEADER_LEN], b[2..HEADER_LEN]);
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
}

const SEALED: usize = CHUNK_SIZE + TAG_LEN;

fn three_chunk_blob() -> (AttachmentKey, Vec<u8>, AttachmentDigest) {
    let key = AttachmentKey::generate(&mut rng(3));
    let (blob, digest) = encrypt(&key, 3, &pattern(2 * CHUNK_SIZE + 100), 10_000);
    assert_eq!(blob.len(), HEADER_LEN + 2 * SEALED + 100 + TAG_LEN);
    (key, blob, digest)
}

#[test]
fn truncation_is_detected() {
    let (key, blob, digest) = three_chunk_blob();
    // Cut exactly after a chunk: the new final chunk was sealed as "not last".
    for chunks in 1..=2 {
        let cut = &blob[..HEADER_LEN + chunks * SEALED];
        assert_eq!(
            decrypt_with_own_digest(&key, cut),
            Err(AttachmentDecryptError::ChunkRejected {
                index: chunks as u32 - 1
            })
        );
        assert_eq!(
            decrypt(&key, &digest, cut, 4096),
            Err(AttachmentDecryptError::DigestMismatch)
        );
    }
    // Cuts anywhere else.
    for cut in [
        0,
        1,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + TAG_LEN - 1,
        HEADER_LEN + 10,
        blob.len() - 1,
    ] {
        assert!(
            decrypt_with_own_digest(&key, &blob[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert_eq!(
        decrypt_with_own_digest(&key, &blob[..HEADER_LEN - 1]),
        Err(AttachmentDecryptError::Truncated)
    );
}

#[test]
fn reordering_is_detected() {
    let (key, blob, _) = three_chunk_blob();
    let mut swapped = blob.clone();
    let (c0, c1) = (HEADER_LEN, HEADER_LEN + SEALED);
    swapped[c0..c0 + SEALED].copy_from_slice(&blob[c1..c1 + SEALED]);
    swapped[c1..c1 + SEALED].copy_from_slice(&blob[c0..c0 + SEALED]);
    assert_eq!(
        decrypt_with_own_digest(&key, &swapped),
        Err(AttachmentDecryptError::ChunkRejected { index: 0 })
    );
}

#[test]
fn extension_is_detected() {
    let (key, blob, digest) = three_chunk_blob();
    // Appending a copy of a full chunk, or a single byte, after the real last chunk.
    let mut extended = blob.clone();
    extended.extend_from_slice(&blob[HEADER_LEN..HEADER_LEN + SEALED]);
    assert!(matches!(
        decrypt_with_own_digest(&key, &extended),
        Err(AttachmentDecryptError::ChunkRejected { .. })
    ));
    let mut one_more = blob.clone();
    one_more.push(0);
    assert!(decrypt_with_own_digest(&key, &one_more).is_err());
    assert_eq!(
        decrypt(&key, &digest, &one_more, 4096),
        Err(AttachmentDecryptError::DigestMismatch)
    );
    // A whole blob with a final chunk that exactly fills a chunk: appending one more full chunk.
    let (full, _) = encrypt(&key, 4, &pattern(CHUNK_SIZE), CHUNK_SIZE);
    let mut grown = full.clone();
    grown.extend_from_slice(&full[HEADER_LEN..]);
    assert_eq!(
        decrypt_with_own_digest(&key, &grown),
        Err(AttachmentDecryptError::ChunkRejected { index: 0 })
    );
}

#[test]
fn any_flipped_bit_is_detected() {
    let key = AttachmentKey::generate(&mut rng(5));
    let (blob, digest) = encrypt(&key, 5, b"short document", 100);
    for i in 0..blob.len() {
        for bit in 0..8 {
            let mut bad = blob.clone();
            bad[i] ^= 1 << bit;
            assert!(
                decrypt_with_own_digest(&key, &bad).is_err(),
                "flip {i}.{bit}"
            );
            assert!(decrypt(&key, &digest, &bad, 7).is_err(), "flip {i}.{bit}");
        }
    }
    // Flips in every chunk of a multi-chunk blob.
    let (key, blob, _) = three_chunk_blob();
    for at in [
        HEADER_LEN + 5,
        HEADER_LEN + SEALED - 1,
        HEADER_LEN + SEALED + 77,
        blob.len() - 1,
    ] {
        let mut bad = blob.clone();
        bad[at] ^= 0x80;
        assert!(matches!(
            decrypt_with_own_digest(&key, &bad),
            Err(AttachmentDecryptError::ChunkRejected { .. })
        ));
    }
}

#[test]
fn wrong_key_wrong_digest_bad_header_and_poisoning() {
    let (key, blob, digest) = three_chunk_blob();
    let other = AttachmentKey::generate(&mut rng(6));
    assert_eq!(
        decrypt(&other, &digest, &blob, 4096),
        Err(AttachmentDecryptError::ChunkRejected { index: 0 })
    );
    let mut wrong = digest;
    wrong.0[31] ^= 1;
    assert_eq!(
        decrypt(&key, &wrong, &blob, 4096),
        Err(AttachmentDecryptError::DigestMismatch)
    );
    let mut bad_version = blob.clone();
    bad_version[0] = 2;
    assert_eq!(
        decrypt_with_own_digest(&key, &bad_version),
        Err(AttachmentDecryptError::UnsupportedHeader)
    );
    // After a failure the decryptor refuses everything.
    let mut d = Decryptor::new(&other, &digest);
    let mut out = Vec::new();
    assert!(d.push(&blob, &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(d.push(b"", &mut out), Err(AttachmentDecryptError::Failed));
    assert_eq!(d.finish(&mut out), Err(AttachmentDecryptError::Failed));
}

#[test]
fn key_round_trip_and_debug_hides_it() {
    let key = AttachmentKey::generate(&mut rng(7));
    let bytes = key.to_bytes();
    let again = AttachmentKey::from_bytes(&bytes);
    let (blob, digest) = encrypt(&key, 7, b"x", 1);
    assert_eq!(decrypt(&again, &digest, &blob, 1).unwrap(), b"x");
    let shown = format!("{key:?} {:?}", Encryptor::new(&key, &mut rng(1)));
    assert!(!shown.contains(&hex::encode(*bytes)));
    assert!(!shown.contains(&format!("{:?}", &bytes[..4])));
}

/// A reader that produces `len` pattern bytes without holding them.
struct PatternReader {
    at: usize,
    len: usize,
}

impl std::io::Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // The pattern repeats every 251 bytes: copy from a precomputed stretch of it.
        static STRETCH: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let stretch = STRETCH.get_or_init(|| pattern(251 * 256));
        let offset = self.at % 251;
        let n = buf
            .len()
            .min(self.len - self.at)
            .min(stretch.len() - offset);
        buf[..n].copy_from_slice(&stretch[offset..offset + n]);
        self.at += n;
        Ok(n)
    }
}

/// A writer that only hashes what it is given.
#[derive(Default)]
struct HashingWriter(sha2::Sha256, u64);

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Peak resident memory of this process (Linux), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Streams `len` bytes through encryption then decryption without ever holding the file, and
/// checks that peak memory grew by far less than the file.
fn stream_in_constant_memory(len: usize) {
    let key = AttachmentKey::generate(&mut rng(8));
    let before = peak_rss_kib();
    // Encrypt into a writer that keeps only the ciphertext's hash; then encrypt again (same seed,
    // same salt) into the decryptor through a pipe-like adapter.
    let mut sink = HashingWriter::default();
    let digest =
        encrypt_stream(&key, &mut rng(9), PatternReader { at: 0, len }, &mut sink).unwrap();
    assert_eq!(sink.1, ciphertext_len(len as u64));
    assert_eq!(digest.0, <[u8; 32]>::from(sha2::Digest::finalize(sink.0)));

    struct DecryptingWriter(Decryptor, HashingWriter, Vec<u8>);
    impl std::io::Write for DecryptingWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .push(buf, &mut self.2)
                .map_err(std::io::Error::other)?;
            self.1.write(&self.2)?;
            self.2.clear();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut decrypting = DecryptingWriter(
        Decryptor::new(&key, &digest),
        HashingWriter::default(),
        Vec::new(),
    );
    encrypt_stream(
        &key,
        &mut rng(9),
        PatternReader { at: 0, len },
        &mut decrypting,
    )
    .unwrap();
    let DecryptingWriter(decryptor, mut plain, mut tail) = decrypting;
    decryptor.finish(&mut tail).unwrap();
    std::io::Write::write_all(&mut plain, &tail).unwrap();
    assert_eq!(plain.1, len as u64);
    let mut expected = HashingWriter::default();
    std::io::copy(&mut PatternReader { at: 0, len }, &mut expected).unwrap();
    assert_eq!(
        sha2::Digest::finalize(plain.0),
        sha2::Digest::finalize(expected.0)
    );

    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        let grown_kib = after.saturating_sub(before);
        println!("peak memory grew by {grown_kib} KiB while streaming {len} bytes twice");
        // Holding the file would cost `len` bytes; streaming costs a few chunks.
        assert!(
            grown_kib * 1024 < (len as u64) / 2,
            "peak memory grew by {grown_kib} KiB"
        );
    }
}

#[test]
fn streams_4_mb_in_constant_memory() {
    stream_in_constant_memory(4 * 1024 * 1024);
}

/// The full-size case (50 MB, the product's attachment limit); run with `--ignored --release`.
#[test]
#[ignore = "50 MB; run in release"]
fn streams_50_mb_in_constant_memory() {
    stream_in_constant_memory(50 * 1000 * 1000);
}

#[test]
fn stream_helpers_round_trip_and_report_errors() {
    let key = AttachmentKey::generate(&mut rng(10));
    let plaintext = pattern(3 * CHUNK_SIZE + 5);
    let mut blob = Vec::new();
    let digest = encrypt_stream(&key, &mut rng(11), &plaintext[..], &mut blob).unwrap();
    let mut out = Vec::new();
    decrypt_stream(&key, &digest, &blob[..], &mut out).unwrap();
    assert_eq!(out, plaintext);
    blob.pop();
    assert!(matches!(
        decrypt_stream(&key, &digest, &blob[..], &mut Vec::new()),
        Err(AttachmentStreamError::Decrypt(_))
    ));
}

/// Known-answer vectors: `crypto/vectors/attachment.json`, regenerated with
/// `SOTTO_REGENERATE_VECTORS=1 cargo test -p sotto-crypto --test attachment`.
mod vectors {
    use super::*;
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use serde_json::{json, Value};

    const VECTORS: &str = "attachment.json";

    /// (name, plaintext length): plaintext byte i is `i mod 251`.
    const CASES: [(&str, usize); 4] = [
        ("empty", 0),
        ("short", 33),
        ("one full chunk", CHUNK_SIZE),
        ("two chunks and a partial", 2 * CHUNK_SIZE + 100),
    ];

    fn generate() -> Value {
        let mut r = rng(0xa77a);
        let cases: Vec<Value> = CASES
            .iter()
            .map(|(name, len)| {
                let key = AttachmentKey::generate(&mut r);
                let mut blob = Vec::new();
                let mut e = Encryptor::new(&key, &mut r);
                e.push(&pattern(*len), &mut blob).unwrap();
                let digest = e.finish(&mut blob).unwrap();
                let tags: Vec<String> = blob[HEADER_LEN..]
                    .chunks(CHUNK_SIZE + TAG_LEN)
                    .map(|c| hex::encode(&c[c.len() - TAG_LEN..]))
                    .collect();
                let mut case = json!({
                    "name": name,
                    "plaintext_len": len,
                    "key": hex::encode(*key.to_bytes()),
                    "header": hex::encode(&blob[..HEADER_LEN]),
                    "chunk_tags": tags,
                    "ciphertext_len": blob.len(),
                    "digest": hex::encode(digest.0),
                });
                if blob.len() <= 256 {
                    case["blob"] = json!(hex::encode(&blob));
                }
                case
            })
            .collect();
        json!({
            "description": "Attachment cipher v1 (docs/protocol/attachments.md). Plaintext byte i is i mod 251. Generated from ChaCha20Rng::seed_from_u64(0xa77a): per case, AttachmentKey::generate draws 32 key bytes, then Encryptor::new draws the 32-byte salt.",
            "chunk_size": CHUNK_SIZE,
            "cases": cases,
        })
    }

    #[test]
    fn vectors_match_the_committed_file() {
        common::check_committed_vectors(VECTORS, &generate());
    }

    /// Rebuilds every blob from the key, header and plaintext using only the specification and
    /// the primitives, and checks tags, length and digest against the committed values.
    #[test]
    fn vectors_follow_the_specification() {
        let v: Value = common::load_vectors(VECTORS);
        for case in v["cases"].as_array().unwrap() {
            let key = hex::decode(case["key"].as_str().unwrap()).unwrap();
            let header = hex::decode(case["header"].as_str().unwrap()).unwrap();
            assert_eq!(&header[..2], &[1, 0x30]);
            let mut okm = [0u8; 39];
            hkdf::Hkdf::<sha2::Sha256>::new(Some(&header[2..]), &key)
                .expand(b"Sotto v1 Attachment chunk keys", &mut okm)
                .unwrap();
            let cipher = aes_gcm::Aes256Gcm::new_from_slice(&okm[..32]).unwrap();
            let plaintext = pattern(case["plaintext_len"].as_u64().unwrap() as usize);
            let pieces: Vec<&[u8]> = if plaintext.is_empty() {
                vec![&[]]
            } else {
                plaintext.chunks(CHUNK_SIZE).collect()
            };
            let mut blob = header.clone();
            let mut tags = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                let mut nonce = [0u8; 12];
                nonce[..7].copy_from_slice(&okm[32..]);
                nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
                nonce[11] = u8::from(i + 1 == pieces.len());
                let mut buf = piece.to_vec();
                let tag = cipher
                    .encrypt_in_place_detached(&nonce.into(), b"", &mut buf)
                    .unwrap();
                blob.extend_from_slice(&buf);
                blob.extend_from_slice(&tag);
                tags.push(Value::from(hex::encode(tag)));
            }
            assert_eq!(Value::from(tags), case["chunk_tags"]);
            assert_eq!(blob.len() as u64, case["ciphertext_len"].as_u64().unwrap());
            assert_eq!(
                hex::encode(AttachmentDigest::of(&blob).0),
                case["digest"].as_str().unwrap()
            );
            if let Some(b) = case.get("blob") {
                assert_eq!(hex::encode(&blob), b.as_str().unwrap());
            }
            let digest = AttachmentDigest(
                hex::decode(case["digest"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            );
            let key = AttachmentKey::from_bytes(&key.try_into().unwrap());
            assert_eq!(decrypt(&key, &digest, &blob, 10_000).unwrap(), plaintext);
        }
    }
}

#[test]
fn random_blobs_never_panic() {
    let key = AttachmentKey::generate(&mut rng(12));
    let mut r = rng(13);
    for len in [0usize, 1, 33, 34, 50, 51, 200, SEALED + HEADER_LEN + 1] {
        let mut junk = vec![0u8; len];
        r.fill_bytes(&mut junk);
        if len > 2 {
            junk[0] = 1;
            junk[1] = 0x30;
        }
        assert!(decrypt_with_own_digest(&key, &junk).is_err());
    }
}
