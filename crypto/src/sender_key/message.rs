//! The two sender-key messages and their encodings.
//!
//! ```text
//! SenderKeyMessage (signed, fanned out by the relay)
//!   u8 version = 1 | u8 tag = 0x21 | u32 chain id | u32 iteration
//!   | u32 n | n bytes AES-256-GCM ciphertext (plaintext + 16-byte tag) | 64 bytes Ed25519 signature
//!   signature = Ed25519("Sotto v1 SenderKeyMessage signature" | SHA-256(all bytes before it))
//!
//! SenderKeyDistributionMessage (secret, sent over 1:1 sessions)
//!   u8 version = 1 | u8 tag = 0x20 | u32 len + group id | u32 chain id | u32 iteration
//!   | 32 bytes chain key | 32 bytes Ed25519 public signing key
//! ```

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::chain::{ChainKey, MessageKeys};
use super::{read_chain_head, write_chain_head, GroupId, MAX_PLAINTEXT_LEN, VERSION};
use crate::codec::{Reader, Writer};
use crate::DecodeError;

/// Type tag of a [`SenderKeyDistributionMessage`].
pub(crate) const DISTRIBUTION_TAG: u8 = 0x20;
/// Type tag of a [`SenderKeyMessage`].
pub(crate) const MESSAGE_TAG: u8 = 0x21;

/// Prefix of the signed input, `SIG_LABEL | SHA-256(message without its signature)`.
const SIG_LABEL: &[u8] = b"Sotto v1 SenderKeyMessage signature";
const SIG_INPUT_LEN: usize = SIG_LABEL.len() + 32;

/// What the Ed25519 signature of a message covers: the label and the SHA-256 of every byte of the
/// message before the signature. Hashing first with SHA-256 (hardware-accelerated on common CPUs)
/// replaces three SHA-512 passes over the whole message inside Ed25519 with short ones.
fn signing_input(signed: &[u8]) -> [u8; SIG_INPUT_LEN] {
    let mut input = [0u8; SIG_INPUT_LEN];
    let (label, digest) = input.split_at_mut(SIG_LABEL.len());
    label.copy_from_slice(SIG_LABEL);
    digest.copy_from_slice(&Sha256::digest(signed));
    input
}

const AEAD_TAG_LEN: usize = 16;
const SIGNATURE_LEN: usize = 64;
/// version, tag, chain id, iteration, ciphertext length.
const HEADER_LEN: usize = 1 + 1 + 4 + 4 + 4;
const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + AEAD_TAG_LEN;

/// One encrypted, signed group message. Not secret; safe to log by size.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKeyMessage {
    chain_id: u32,
    iteration: u32,
    /// The complete encoding; the signature covers (a hash of) all of it but its last 64 bytes.
    encoded: Vec<u8>,
}

impl core::fmt::Debug for SenderKeyMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            chain_id,
            iteration,
            encoded,
        } = self;
        f.debug_struct("SenderKeyMessage")
            .field("chain_id", chain_id)
            .field("iteration", iteration)
            .field("len", &encoded.len())
            .finish()
    }
}

/// The associated data of every sender-key AEAD:
/// `u8 version | u8 tag | u32 chain id | u32 iteration | u32 len + group id`.
fn associated_data(group: &GroupId, chain_id: u32, iteration: u32) -> Vec<u8> {
    let mut w = Writer::with_capacity(14 + group.as_bytes().len());
    w.u8(VERSION).u8(MESSAGE_TAG).u32(chain_id).u32(iteration);
    group.encode(&mut w);
    w.into_vec()
}

impl SenderKeyMessage {
    /// Encrypts and signs (the caller checked the plaintext length).
    pub(crate) fn seal(
        group: &GroupId,
        chain_id: u32,
        iteration: u32,
        keys: &MessageKeys,
        plaintext: &[u8],
        signing_key: &SigningKey,
    ) -> Self {
        let ct_len = plaintext.len() + AEAD_TAG_LEN;
        let mut w = Writer::with_capacity(HEADER_LEN + ct_len + SIGNATURE_LEN);
        // The length fits: plaintexts are capped at MAX_PLAINTEXT_LEN.
        w.u8(VERSION)
            .u8(MESSAGE_TAG)
            .u32(chain_id)
            .u32(iteration)
            .u32(u32::try_from(ct_len).unwrap_or(u32::MAX))
            .fixed(plaintext);
        let mut encoded = w.into_vec();
        let ad = associated_data(group, chain_id, iteration);
        let cipher = Aes256Gcm::new((&*keys.key).into());
        let body = encoded.get_mut(HEADER_LEN..).unwrap_or_default();
        #[allow(clippy::expect_used)]
        let tag = cipher
            .encrypt_in_place_detached((&keys.nonce).into(), &ad, body)
            .expect("AES-GCM refuses only inputs above 64 GiB; plaintexts are capped at 60 KiB");
        encoded.extend_from_slice(&tag);
        let signature = signing_key.sign(&signing_input(&encoded));
        encoded.extend_from_slice(&signature.to_bytes());
        Self {
            chain_id,
            iteration,
            encoded,
        }
    }

    /// Decodes a message received from the relay. Checks the shape only; [`super::SenderKeyRecord`]
    /// checks the signature and decrypts.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version(VERSION)?;
        r.tag(MESSAGE_TAG)?;
        let chain_id = r.u32()?;
        let iteration = r.u32()?;
        let ciphertext = r.bytes(MAX_CIPHERTEXT_LEN)?;
        if ciphertext.len() < AEAD_TAG_LEN {
            return Err(DecodeError::InvalidValue("ciphertext"));
        }
        r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        Ok(Self {
            chain_id,
            iteration,
            encoded: bytes.to_vec(),
        })
    }

    /// The encoding sent to the relay.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encoded.clone()
    }

    /// The encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The id of the chain (the sender's current distribution) that encrypted this message.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The message's position in its chain.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The signed part and the signature.
    fn split_signature(&self) -> (&[u8], &[u8; SIGNATURE_LEN]) {
        // `from_bytes` and `seal` both guarantee a trailing signature; an empty split cannot verify.
        self.encoded
            .split_last_chunk::<SIGNATURE_LEN>()
            .unwrap_or((&[], &[0; SIGNATURE_LEN]))
    }

    /// Whether the signature verifies (strict Ed25519: no small-order keys, canonical `s`).
    pub(crate) fn verify(&self, key: &VerifyingKey) -> bool {
        let (signed, signature) = self.split_signature();
        key.verify_strict(&signing_input(signed), &Signature::from_bytes(signature))
            .is_ok()
    }

    /// Decrypts with `keys`; `None` if the AEAD rejects it.
    pub(crate) fn open(&self, group: &GroupId, keys: &MessageKeys) -> Option<Vec<u8>> {
        let (signed, _) = self.split_signature();
        let ciphertext = signed.get(HEADER_LEN..)?;
        let (body, tag) = ciphertext.split_last_chunk::<AEAD_TAG_LEN>()?;
        let mut plaintext = body.to_vec();
        let ad = associated_data(group, self.chain_id, self.iteration);
        Aes256Gcm::new((&*keys.key).into())
            .decrypt_in_place_detached((&keys.nonce).into(), &ad, &mut plaintext, tag.into())
            .ok()?;
        Some(plaintext)
    }
}

/// What a member needs to decrypt a sender's chain from its current iteration on: the chain key and
/// the public signing key. Secret: send it only inside an end-to-end encrypted 1:1 session, and only
/// to devices of announced group members.
#[derive(Clone)]
pub struct SenderKeyDistributionMessage {
    pub(crate) group_id: GroupId,
    pub(crate) chain_id: u32,
    pub(crate) chain_key: ChainKey,
    pub(crate) signing_key: VerifyingKey,
}

impl core::fmt::Debug for SenderKeyDistributionMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            group_id,
            chain_id,
            chain_key,
            signing_key: _,
        } = self;
        f.debug_struct("SenderKeyDistributionMessage")
            .field("group_id", group_id)
            .field("chain_id", chain_id)
            .field("iteration", &chain_key.iteration())
            .finish_non_exhaustive()
    }
}

impl SenderKeyDistributionMessage {
    /// The encoding, to be sent inside a 1:1 session. Holds the chain key: wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = write_chain_head(
            DISTRIBUTION_TAG,
            &self.group_id,
            self.chain_id,
            &self.chain_key,
        );
        w.fixed(self.signing_key.as_bytes());
        w.into_zeroizing()
    }

    /// Decodes a distribution taken out of a 1:1 session.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (group_id, chain_id, chain_key) = read_chain_head(&mut r, DISTRIBUTION_TAG)?;
        let signing_key = VerifyingKey::from_bytes(&r.array()?)
            .map_err(|_| DecodeError::InvalidValue("signing key"))?;
        r.finish()?;
        Ok(Self {
            group_id,
            chain_id,
            chain_key,
            signing_key,
        })
    }

    /// The group this distribution belongs to.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The chain's id.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The first iteration the receiver will be able to decrypt.
    pub fn iteration(&self) -> u32 {
        self.chain_key.iteration()
    }

    /// The sender's public signing key for this chain.
    pub fn signing_key(&self) -> [u8; 32] {
        self.signing_key.to_bytes()
    }
}
