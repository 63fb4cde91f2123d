//! Account identity keys and device prekeys.
//!
//! An account identity is two independent key pairs, as in Olm: an **Ed25519** key that signs prekeys
//! and an **X25519** key that takes part in PQXDH agreement. Keeping them separate avoids converting
//! one curve form into the other and keeps signature and Diffie-Hellman use of a key apart.
//!
//! Each device publishes, signed by the account identity:
//! - a [`SignedPreKey`] (X25519, rotated periodically),
//! - [`KemPreKey`]s (ML-KEM-768): many one-time keys plus one *last-resort* key used when the
//!   one-time keys run out,
//!
//! and, unsigned, a batch of [`OneTimePreKey`]s (X25519), each handed out at most once.
//!
//! # Encodings
//!
//! Public keys start with a type byte, which also versions the encoding:
//!
//! | type byte | key | total length |
//! |---|---|---|
//! | `0x01` | X25519 public key (32 bytes, RFC 7748 little-endian u) | 33 |
//! | `0x02` | ML-KEM-768 encapsulation key (FIPS 203, 1184 bytes) | 1185 |
//! | `0x10` | identity key: Ed25519 public key (32) then X25519 public key (32) | 65 |
//!
//! Prekey signatures are Ed25519 (RFC 8032, verified strictly: cofactorless, canonical `S`, `R` and
//! `A` not of small order) by the identity's signing key over
//!
//! ```text
//! "Sotto_PreKey_Signature_v1"  (25 ASCII bytes, no terminator)
//! key type                     (1 byte: 0x01 signed X25519 prekey, 0x02 ML-KEM-768 prekey)
//! key id                       (u32 big-endian)
//! public key                   (its typed encoding above: 33 or 1185 bytes)
//! ```
//!
//! Secret records for local storage start with version `0x01` and a record tag (`0x81` identity key
//! pair, `0x82` signed prekey, `0x83` one-time prekey, `0x84` KEM prekey); see `docs/protocol.md`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libcrux_ml_kem::mlkem768;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::codec::{Reader, Writer};
use crate::DecodeError;

/// Type byte of an encoded X25519 public key.
pub const KEY_TYPE_X25519: u8 = 0x01;
/// Type byte of an encoded ML-KEM-768 encapsulation key.
pub const KEY_TYPE_ML_KEM_768: u8 = 0x02;
/// Type byte of an encoded identity key.
pub const KEY_TYPE_IDENTITY: u8 = 0x10;
/// Length of an encoded X25519 public key.
pub const X25519_PUBLIC_KEY_LEN: usize = 33;
/// Length of an encoded ML-KEM-768 encapsulation key.
pub const KEM_PUBLIC_KEY_LEN: usize = 1 + 1184;
/// Length of an encoded identity key.
pub const IDENTITY_KEY_LEN: usize = 65;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Domain-separation label that starts every prekey signature message.
pub const PREKEY_SIGNATURE_LABEL: &[u8] = b"Sotto_PreKey_Signature_v1";

const RECORD_VERSION: u8 = 0x01;
const TAG_IDENTITY_KEY_PAIR: u8 = 0x81;
const TAG_SIGNED_PREKEY: u8 = 0x82;
const TAG_ONE_TIME_PREKEY: u8 = 0x83;
const TAG_KEM_PREKEY: u8 = 0x84;
const KEM_DECAPSULATION_KEY_LEN: usize = 2400;

/// An ML-KEM-768 encapsulation key (FIPS 203 `ek`, 1184 bytes), checked on decoding.
pub(crate) type KemEncapsulationKey = mlkem768::MlKem768PublicKey;

/// An ML-KEM-768 decapsulation key (FIPS 203 `dk`, 2400 bytes), wiped on drop.
pub(crate) struct KemDecapsulationKey(mlkem768::MlKem768PrivateKey);

impl KemDecapsulationKey {
    pub(crate) fn key(&self) -> &mlkem768::MlKem768PrivateKey {
        &self.0
    }

    /// The encapsulation key embedded in `dk` (`dk = dk_pke || ek || H(ek) || z`).
    fn encapsulation_key_bytes(&self) -> &[u8] {
        let dk = self.0.as_slice();
        dk.get(KEM_CPA_SECRET_KEY_LEN..KEM_CPA_SECRET_KEY_LEN + KEM_PUBLIC_KEY_LEN - 1)
            .unwrap_or_default()
    }
}

impl Drop for KemDecapsulationKey {
    fn drop(&mut self) {
        self.0[0..].zeroize();
    }
}

/// Length of `dk_pke`, the encoded secret vector at the start of an ML-KEM-768 `dk`.
const KEM_CPA_SECRET_KEY_LEN: usize = 1152;

/// Why a signature did not verify. Distinguishes only what the verifier can see publicly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signed public key is not a valid encoding of its key type.
    #[error("the signed public key is malformed: {0}")]
    MalformedKey(DecodeError),
    /// The signature is not 64 bytes.
    #[error("the signature is not {SIGNATURE_LEN} bytes")]
    MalformedSignature,
    /// The signature does not verify under the identity key.
    #[error("the signature does not verify")]
    Invalid,
}

/// Why a peer's [`PreKeyBundle`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The signed X25519 prekey's signature is bad.
    #[error("signed prekey: {0}")]
    SignedPreKey(SignatureError),
    /// The ML-KEM prekey's signature is bad.
    #[error("KEM prekey: {0}")]
    KemPreKey(SignatureError),
    /// The one-time X25519 prekey is not a valid public key.
    #[error("one-time prekey: {0}")]
    OneTimePreKey(DecodeError),
}

// The X25519 u-coordinates of small order (orders 1, 2, 4, 8) together with their non-canonical
// encodings that fit in 255 bits. A Diffie-Hellman with any of them gives the all-zero output.
const LOW_ORDER_POINTS: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Checks a raw 32-byte X25519 public key: canonical (top bit clear, u < p) and not of small order.
pub(crate) fn check_x25519_raw(u: &[u8; 32]) -> Result<X25519PublicKey, DecodeError> {
    let [first, middle @ .., last] = u;
    // p = 2^255 - 19 is ed ff .. ff 7f little-endian: u >= p iff the top byte is 0x7f, the middle
    // bytes are all 0xff and the lowest byte is at least 0xed.
    let non_canonical =
        *last & 0x80 != 0 || (*last == 0x7f && middle.iter().all(|b| *b == 0xff) && *first >= 0xed);
    if non_canonical {
        return Err(DecodeError::InvalidValue("non-canonical X25519 public key"));
    }
    if LOW_ORDER_POINTS.iter().any(|p| p == u) {
        return Err(DecodeError::InvalidValue("low-order X25519 public key"));
    }
    Ok(X25519PublicKey::from(*u))
}

/// Whether an Ed25519 point encoding is canonical: its y coordinate (the low 255 bits) is below
/// p = 2^255 - 19. (The only other non-canonical encodings, x = 0 with the sign bit set, are of
/// points of small order, which `is_weak` rejects.)
fn ed25519_canonical(bytes: &[u8; 32]) -> bool {
    let [first, middle @ .., last] = bytes;
    !(*last & 0x7f == 0x7f && middle.iter().all(|b| *b == 0xff) && *first >= 0xed)
}

/// Decodes a typed X25519 public key (33 bytes).
pub(crate) fn decode_x25519(bytes: &[u8]) -> Result<X25519PublicKey, DecodeError> {
    let mut r = Reader::new(bytes);
    r.tag(KEY_TYPE_X25519)?;
    let u = r.array::<32>()?;
    r.finish()?;
    check_x25519_raw(&u)
}

pub(crate) fn encode_x25519(key: &X25519PublicKey) -> [u8; X25519_PUBLIC_KEY_LEN] {
    let mut out = [0u8; X25519_PUBLIC_KEY_LEN];
    let (tag, rest) = out.split_at_mut(1);
    tag.fill(KEY_TYPE_X25519);
    rest.copy_from_slice(key.as_bytes());
    out
}

/// Decodes a typed ML-KEM-768 encapsulation key (1185 bytes), applying FIPS 203's modulus check.
pub(crate) fn decode_kem_public(bytes: &[u8]) -> Result<KemEncapsulationKey, DecodeError> {
    let mut r = Reader::new(bytes);
    r.tag(KEY_TYPE_ML_KEM_768)?;
    let raw = r.fixed(KEM_PUBLIC_KEY_LEN - 1)?;
    r.finish()?;
    let key = KemEncapsulationKey::try_from(raw)
        .map_err(|_| DecodeError::InvalidValue("ML-KEM-768 key length"))?;
    if !kem_coefficients_in_range(raw) {
        return Err(DecodeError::InvalidValue(
            "ML-KEM-768 key coefficient out of range",
        ));
    }
    Ok(key)
}

/// FIPS 203 section 7.2's modulus check on an encoded encapsulation key `t̂ || ρ`: every 12-bit
/// coefficient of `t̂` (two per three bytes, little-endian) is below q = 3329. This is the
/// standard's "`ByteEncode12(ByteDecode12(t̂)) = t̂`" without the round trip: decoding reduces
/// each coefficient mod q, so the bytes come back unchanged exactly when none is >= q.
fn kem_coefficients_in_range(raw: &[u8]) -> bool {
    coefficients_in_range(raw.get(..raw.len().saturating_sub(32)).unwrap_or_default())
}

/// Whether every 12-bit coefficient of a `ByteEncode12` string (two per three bytes,
/// little-endian) is below q = 3329.
fn coefficients_in_range(encoded: &[u8]) -> bool {
    const Q: u16 = 3329;
    encoded.chunks_exact(3).all(|c| match c {
        [b0, b1, b2] => {
            let low = u16::from(*b0) | (u16::from(*b1 & 0x0f) << 8);
            let high = u16::from(*b1 >> 4) | (u16::from(*b2) << 4);
            low < Q && high < Q
        }
        _ => false,
    })
}

pub(crate) fn encode_kem_public(key: &KemEncapsulationKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEM_PUBLIC_KEY_LEN);
    out.push(KEY_TYPE_ML_KEM_768);
    out.extend_from_slice(key.as_slice());
    out
}

/// The bytes a prekey signature covers (see the module docs).
pub fn prekey_signature_message(key_type: u8, key_id: u32, public_key: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(PREKEY_SIGNATURE_LABEL.len() + 5 + public_key.len());
    w.fixed(PREKEY_SIGNATURE_LABEL)
        .u8(key_type)
        .u32(key_id)
        .fixed(public_key);
    w.into_vec()
}

/// An account's secret identity: an Ed25519 signing key and an X25519 agreement key.
///
/// Both secrets live in boxes and are wiped when the pair is dropped. There is no `Clone`: a copy
/// of an identity is made only through [`IdentityKeyPair::to_bytes`], whose buffer wipes itself.
pub struct IdentityKeyPair {
    signing: Box<SigningKey>,
    agreement: Box<StaticSecret>,
    agreement_public: X25519PublicKey,
}

// Both secret fields wipe themselves when dropped (ed25519-dalek and x25519-dalek `zeroize`).
impl ZeroizeOnDrop for IdentityKeyPair {}

impl core::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            signing: _,
            agreement: _,
            agreement_public: _,
        } = self;
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl IdentityKeyPair {
    /// A fresh identity.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let signing = Box::new(SigningKey::generate(rng));
        let agreement = Box::new(StaticSecret::random_from_rng(&mut *rng));
        Self::from_parts(signing, agreement)
    }

    fn from_parts(signing: Box<SigningKey>, agreement: Box<StaticSecret>) -> Self {
        let agreement_public = X25519PublicKey::from(&*agreement);
        Self {
            signing,
            agreement,
            agreement_public,
        }
    }

    /// The public half, to publish and to pin.
    pub fn public(&self) -> IdentityKey {
        IdentityKey {
            signing: self.signing.verifying_key(),
            agreement: self.agreement_public,
        }
    }

    /// Signs `message` with the Ed25519 identity key.
    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    pub(crate) fn agreement(&self) -> &StaticSecret {
        &self.agreement
    }

    /// Secret storage encoding: `0x01 0x81 ed25519_seed[32] x25519_secret[32]` (66 bytes). The
    /// buffer wipes itself on drop; whoever copies it out must wipe the copy.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(66);
        let mut seed = self.signing.to_bytes();
        w.u8(RECORD_VERSION).u8(TAG_IDENTITY_KEY_PAIR).fixed(&seed);
        seed.zeroize();
        write_x25519_secret(&mut w, &self.agreement);
        w.into_zeroizing()
    }

    /// Decodes [`IdentityKeyPair::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let pair = Self::read(&mut r)?;
        r.finish()?;
        Ok(pair)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(RECORD_VERSION)?;
        r.tag(TAG_IDENTITY_KEY_PAIR)?;
        let mut seed = Zeroizing::new(r.array::<32>()?);
        let signing = Box::new(SigningKey::from_bytes(&seed));
        seed.zeroize();
        let agreement = read_x25519_secret(r)?;
        Ok(Self::from_parts(signing, agreement))
    }
}

/// An account's public identity: Ed25519 verification key plus X25519 agreement key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdentityKey {
    signing: VerifyingKey,
    agreement: X25519PublicKey,
}

impl IdentityKey {
    /// Decodes the 65-byte typed encoding (`0x10 ed25519[32] x25519[32]`). Rejects an Ed25519 key
    /// that does not decompress, is non-canonical or of small order, and an X25519 key that is
    /// non-canonical or of small order.
    ///
    /// The X25519 half must also be a point of the prime-order subgroup (on the curve, no
    /// small-order component), so each identity has exactly one encoding; that check costs one
    /// variable-time scalar multiplication.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let key = Self::read_stored(bytes)?;
        if !crate::ratchet::dh::is_prime_order_x25519(&key.agreement) {
            return Err(DecodeError::InvalidValue(
                "X25519 identity key not of prime order",
            ));
        }
        Ok(key)
    }

    /// [`IdentityKey::from_bytes`] for an encoding that may be that of a key the caller already
    /// holds (the peer's pinned identity): when `bytes` is exactly `known`'s encoding the result
    /// is a copy of `known`, which passed every check when it was decoded, so the prime-order
    /// check (one scalar multiplication) is not repeated. Any other encoding is fully checked.
    pub fn from_bytes_known(
        bytes: &[u8],
        known: Option<&IdentityKey>,
    ) -> Result<Self, DecodeError> {
        match known {
            Some(k) if k.to_bytes() == bytes => Ok(k.clone()),
            _ => Self::from_bytes(bytes),
        }
    }

    /// [`IdentityKey::from_bytes`] without the prime-order check, for keys read back from this
    /// crate's own storage encodings (every identity in them was fully checked when it arrived).
    pub(crate) fn read_stored(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.tag(KEY_TYPE_IDENTITY)?;
        let ed = r.array::<32>()?;
        let x = r.array::<32>()?;
        r.finish()?;
        let signing = VerifyingKey::from_bytes(&ed)
            .map_err(|_| DecodeError::InvalidValue("Ed25519 identity key"))?;
        if signing.is_weak() || !ed25519_canonical(&ed) {
            return Err(DecodeError::InvalidValue("Ed25519 identity key"));
        }
        let agreement = check_x25519_raw(&x)?;
        Ok(Self { signing, agreement })
    }

    /// The 65-byte typed encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(IDENTITY_KEY_LEN);
        out.push(KEY_TYPE_IDENTITY);
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.agreement.as_bytes());
        out
    }

    pub(crate) fn agreement(&self) -> &X25519PublicKey {
        &self.agreement
    }

    fn verify(
        &self,
        key_type: u8,
        key_id: u32,
        public_key: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let signature =
            Signature::from_slice(signature).map_err(|_| SignatureError::MalformedSignature)?;
        let message = prekey_signature_message(key_type, key_id, public_key);
        // The one Ed25519 rule of the crate (docs/protocol.md §1.4, as for Sender Keys): strict
        // RFC 8032 verification, cofactorless, canonical `S`, `R` and `A` not of small order
        // (`A` is also refused when decoded).
        self.signing
            .verify_strict(&message, &signature)
            .map_err(|_| SignatureError::Invalid)
    }

    /// Verifies a signed X25519 prekey: `public_key` is its 33-byte typed encoding, which must also
    /// be a valid (canonical, not small-order) key.
    pub fn verify_signed_prekey(
        &self,
        key_id: u32,
        public_key: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        decode_x25519(public_key).map_err(SignatureError::MalformedKey)?;
        self.verify(KEY_TYPE_X25519, key_id, public_key, signature)
    }

    /// Verifies an ML-KEM-768 prekey (one-time or last-resort): `public_key` is its 1185-byte typed
    /// encoding, which must also pass the FIPS 203 modulus check.
    pub fn verify_kem_prekey(
        &self,
        key_id: u32,
        public_key: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        decode_kem_public(public_key).map_err(SignatureError::MalformedKey)?;
        self.verify(KEY_TYPE_ML_KEM_768, key_id, public_key, signature)
    }
}

/// Checks an uploaded one-time X25519 prekey: the 33-byte typed encoding of a canonical key that is
/// not of small order. (One-time X25519 prekeys are not signed.)
pub fn validate_one_time_prekey(public_key: &[u8]) -> Result<(), DecodeError> {
    decode_x25519(public_key).map(|_| ())
}

fn read_signature(r: &mut Reader<'_>) -> Result<[u8; SIGNATURE_LEN], DecodeError> {
    r.array::<SIGNATURE_LEN>()
}

/// A signature as received from the relay: exactly 64 bytes.
fn signature_from_slice(signature: &[u8]) -> Result<[u8; SIGNATURE_LEN], DecodeError> {
    signature
        .try_into()
        .map_err(|_| DecodeError::InvalidValue("signature length"))
}

/// Starts a secret prekey record: `RECORD_VERSION | tag | id:u32`.
fn prekey_record_writer(capacity: usize, tag: u8, id: u32) -> Writer {
    let mut w = Writer::with_capacity(capacity);
    w.u8(RECORD_VERSION).u8(tag).u32(id);
    w
}

/// Reads the header [`prekey_record_writer`] writes and returns the id.
fn read_prekey_record_header(r: &mut Reader<'_>, tag: u8) -> Result<u32, DecodeError> {
    r.version(RECORD_VERSION)?;
    r.tag(tag)?;
    r.u32()
}

/// Appends the 32 secret bytes of `secret`, wiping the temporary copy.
fn write_x25519_secret(w: &mut Writer, secret: &StaticSecret) {
    let mut bytes = secret.to_bytes();
    w.fixed(&bytes);
    bytes.zeroize();
}

/// Reads 32 secret bytes into a boxed X25519 secret, wiping the copy read off the input.
fn read_x25519_secret(r: &mut Reader<'_>) -> Result<Box<StaticSecret>, DecodeError> {
    let bytes = Zeroizing::new(r.array::<32>()?);
    Ok(Box::new(StaticSecret::from(*bytes)))
}

/// A device's secret signed X25519 prekey.
pub struct SignedPreKey {
    id: u32,
    secret: Box<StaticSecret>,
    public: X25519PublicKey,
    signature: [u8; SIGNATURE_LEN],
}

impl ZeroizeOnDrop for SignedPreKey {}

impl core::fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            id,
            secret: _,
            public,
            signature: _,
        } = self;
        f.debug_struct("SignedPreKey")
            .field("id", id)
            .field("public", public)
            .finish_non_exhaustive()
    }
}

impl SignedPreKey {
    /// A fresh signed prekey with id `id`, signed by `identity`.
    pub fn generate(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        let secret = Box::new(StaticSecret::random_from_rng(rng));
        let public = X25519PublicKey::from(&*secret);
        let message = prekey_signature_message(KEY_TYPE_X25519, id, &encode_x25519(&public));
        let signature = identity.sign(&message).to_bytes();
        Self {
            id,
            secret,
            public,
            signature,
        }
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What the device uploads.
    pub fn public(&self) -> SignedPreKeyPublic {
        SignedPreKeyPublic {
            key_id: self.id,
            public_key: encode_x25519(&self.public),
            signature: self.signature,
        }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub(crate) fn public_key(&self) -> &X25519PublicKey {
        &self.public
    }

    /// Secret storage encoding: `0x01 0x82 id:u32 x25519_secret[32] signature[64]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = prekey_record_writer(102, TAG_SIGNED_PREKEY, self.id);
        write_x25519_secret(&mut w, &self.secret);
        w.fixed(&self.signature);
        w.into_zeroizing()
    }

    /// Decodes [`SignedPreKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let id = read_prekey_record_header(&mut r, TAG_SIGNED_PREKEY)?;
        let secret = read_x25519_secret(&mut r)?;
        let signature = read_signature(&mut r)?;
        r.finish()?;
        let public = X25519PublicKey::from(&*secret);
        Ok(Self {
            id,
            secret,
            public,
            signature,
        })
    }
}

/// The public view of a signed prekey, as uploaded and as found in a bundle.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedPreKeyPublic {
    key_id: u32,
    public_key: [u8; X25519_PUBLIC_KEY_LEN],
    signature: [u8; SIGNATURE_LEN],
}

impl SignedPreKeyPublic {
    /// Assembles a signed prekey received from the relay. Checks only shapes: the key must be a
    /// valid typed X25519 key and the signature 64 bytes; [`PreKeyBundle::verify`] checks the
    /// signature.
    pub fn new(key_id: u32, public_key: &[u8], signature: &[u8]) -> Result<Self, DecodeError> {
        decode_x25519(public_key)?;
        Ok(Self {
            key_id,
            public_key: public_key
                .try_into()
                .map_err(|_| DecodeError::InvalidValue("X25519 key length"))?,
            signature: signature_from_slice(signature)?,
        })
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The 33-byte typed public key, exactly the bytes [`IdentityKey::verify_signed_prekey`] takes.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The 64-byte Ed25519 signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A device's secret one-time X25519 prekey.
pub struct OneTimePreKey {
    id: u32,
    secret: Box<StaticSecret>,
    public: X25519PublicKey,
}

impl ZeroizeOnDrop for OneTimePreKey {}

impl core::fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            id,
            secret: _,
            public,
        } = self;
        f.debug_struct("OneTimePreKey")
            .field("id", id)
            .field("public", public)
            .finish_non_exhaustive()
    }
}

impl OneTimePreKey {
    /// A fresh one-time prekey with id `id`.
    pub fn generate(id: u32, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let secret = Box::new(StaticSecret::random_from_rng(rng));
        let public = X25519PublicKey::from(&*secret);
        Self { id, secret, public }
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What the device uploads.
    pub fn public(&self) -> OneTimePreKeyPublic {
        OneTimePreKeyPublic {
            key_id: self.id,
            public_key: encode_x25519(&self.public),
        }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub(crate) fn public_key(&self) -> &X25519PublicKey {
        &self.public
    }

    /// Secret storage encoding: `0x01 0x83 id:u32 x25519_secret[32]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = prekey_record_writer(38, TAG_ONE_TIME_PREKEY, self.id);
        write_x25519_secret(&mut w, &self.secret);
        w.into_zeroizing()
    }

    /// Decodes [`OneTimePreKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let id = read_prekey_record_header(&mut r, TAG_ONE_TIME_PREKEY)?;
        let secret = read_x25519_secret(&mut r)?;
        r.finish()?;
        let public = X25519PublicKey::from(&*secret);
        Ok(Self { id, secret, public })
    }
}

/// The public view of a one-time prekey.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OneTimePreKeyPublic {
    key_id: u32,
    public_key: [u8; X25519_PUBLIC_KEY_LEN],
}

impl OneTimePreKeyPublic {
    /// Assembles a one-time prekey received from the relay; the key must be valid.
    pub fn new(key_id: u32, public_key: &[u8]) -> Result<Self, DecodeError> {
        decode_x25519(public_key)?;
        Ok(Self {
            key_id,
            public_key: public_key
                .try_into()
                .map_err(|_| DecodeError::InvalidValue("X25519 key length"))?,
        })
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The 33-byte typed public key, exactly the bytes [`validate_one_time_prekey`] takes.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }
}

/// A device's secret ML-KEM-768 prekey: one-time, or the last-resort key reused until replaced.
pub struct KemPreKey {
    id: u32,
    last_resort: bool,
    secret: Box<KemDecapsulationKey>,
    public_key: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

// The decapsulation key wipes itself on drop.
impl ZeroizeOnDrop for KemPreKey {}

impl core::fmt::Debug for KemPreKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            id,
            last_resort,
            secret: _,
            public_key: _,
            signature: _,
        } = self;
        f.debug_struct("KemPreKey")
            .field("id", id)
            .field("last_resort", last_resort)
            .finish_non_exhaustive()
    }
}

impl KemPreKey {
    /// A fresh one-time KEM prekey with id `id`, signed by `identity`.
    pub fn generate(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        Self::generate_with(id, false, identity, rng)
    }

    /// A fresh last-resort KEM prekey with id `id`, signed by `identity`. It is used whenever the
    /// relay has no one-time KEM prekey left and is never consumed, only replaced.
    pub fn generate_last_resort(
        id: u32,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        Self::generate_with(id, true, identity, rng)
    }

    fn generate_with(
        id: u32,
        last_resort: bool,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        // FIPS 203 ML-KEM.KeyGen: the seeds d then z, 32 bytes each.
        let mut seeds = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(&mut seeds[..]);
        let (secret, public) = mlkem768::generate_key_pair(*seeds).into_parts();
        let secret = KemDecapsulationKey(secret);
        let public_key = encode_kem_public(&public);
        let message = prekey_signature_message(KEY_TYPE_ML_KEM_768, id, &public_key);
        let signature = identity.sign(&message).to_bytes();
        Self {
            id,
            last_resort,
            secret: Box::new(secret),
            public_key,
            signature,
        }
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether this is the last-resort key (never consumed by a session setup).
    pub fn is_last_resort(&self) -> bool {
        self.last_resort
    }

    /// What the device uploads.
    pub fn public(&self) -> KemPreKeyPublic {
        KemPreKeyPublic {
            key_id: self.id,
            public_key: self.public_key.clone(),
            signature: self.signature,
        }
    }

    pub(crate) fn secret(&self) -> &KemDecapsulationKey {
        &self.secret
    }

    /// The 1185-byte typed public key (what [`KemPreKey::public`] copies out).
    pub(crate) fn public_key_bytes(&self) -> &[u8] {
        &self.public_key
    }

    /// Secret storage encoding: `0x01 0x84 id:u32 last_resort:u8 decapsulation_key[2400]
    /// signature[64]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = prekey_record_writer(
            7 + KEM_DECAPSULATION_KEY_LEN + SIGNATURE_LEN,
            TAG_KEM_PREKEY,
            self.id,
        );
        w.bool(self.last_resort)
            .fixed(self.secret.0.as_slice())
            .fixed(&self.signature);
        w.into_zeroizing()
    }

    /// Decodes [`KemPreKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let id = read_prekey_record_header(&mut r, TAG_KEM_PREKEY)?;
        let last_resort = r.bool()?;
        let raw = r.fixed(KEM_DECAPSULATION_KEY_LEN)?;
        let signature = read_signature(&mut r)?;
        r.finish()?;
        let secret = Box::new(KemDecapsulationKey(
            mlkem768::MlKem768PrivateKey::try_from(raw)
                .map_err(|_| DecodeError::InvalidValue("ML-KEM-768 secret key length"))?,
        ));
        // FIPS 203 section 7.3 checks on a stored key: the embedded hash equals H(ek), and, as
        // on any encapsulation key, every coefficient of the embedded ek is canonical; and so is
        // every coefficient of dk_pke (the same 12-bit encoding).
        let dk_pke = raw.get(..KEM_CPA_SECRET_KEY_LEN).unwrap_or_default();
        let mut public_key = Vec::with_capacity(KEM_PUBLIC_KEY_LEN);
        public_key.push(KEY_TYPE_ML_KEM_768);
        public_key.extend_from_slice(secret.encapsulation_key_bytes());
        decode_kem_public(&public_key)?;
        if !coefficients_in_range(dk_pke)
            || !mlkem768::portable::validate_private_key_only(secret.key())
        {
            return Err(DecodeError::InvalidValue("ML-KEM-768 secret key"));
        }
        Ok(Self {
            id,
            last_resort,
            secret,
            public_key,
            signature,
        })
    }
}

/// The public view of a KEM prekey.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KemPreKeyPublic {
    key_id: u32,
    public_key: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl KemPreKeyPublic {
    /// Assembles a KEM prekey received from the relay. Checks only shapes (a valid typed ML-KEM-768
    /// key, a 64-byte signature); [`PreKeyBundle::verify`] checks the signature.
    pub fn new(key_id: u32, public_key: &[u8], signature: &[u8]) -> Result<Self, DecodeError> {
        if public_key.len() != KEM_PUBLIC_KEY_LEN
            || public_key.first() != Some(&KEY_TYPE_ML_KEM_768)
        {
            return Err(DecodeError::InvalidValue("ML-KEM-768 key"));
        }
        Ok(Self {
            key_id,
            public_key: public_key.to_vec(),
            signature: signature_from_slice(signature)?,
        })
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The 1185-byte typed public key, exactly the bytes [`IdentityKey::verify_kem_prekey`] takes.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The 64-byte Ed25519 signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A peer device's public prekey bundle as the relay hands it out. Untrusted until
/// [`PreKeyBundle::verify`] succeeds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PreKeyBundle {
    /// The account identity the bundle claims to belong to.
    pub identity_key: IdentityKey,
    /// The device's signed X25519 prekey.
    pub signed_prekey: SignedPreKeyPublic,
    /// A one-time X25519 prekey, when the relay still had one.
    pub one_time_prekey: Option<OneTimePreKeyPublic>,
    /// A one-time ML-KEM-768 prekey, or the last-resort one.
    pub kem_prekey: KemPreKeyPublic,
}

impl PreKeyBundle {
    /// Checks every signature in the bundle against its identity key and every key's encoding.
    pub fn verify(&self) -> Result<VerifiedBundle, BundleError> {
        let Self {
            identity_key,
            signed_prekey,
            one_time_prekey,
            kem_prekey,
        } = self;
        identity_key
            .verify_signed_prekey(
                signed_prekey.key_id,
                &signed_prekey.public_key,
                &signed_prekey.signature,
            )
            .map_err(BundleError::SignedPreKey)?;
        // Signature first: the (slower) full key decoding runs only on signed bytes.
        identity_key
            .verify(
                KEY_TYPE_ML_KEM_768,
                kem_prekey.key_id,
                &kem_prekey.public_key,
                &kem_prekey.signature,
            )
            .map_err(BundleError::KemPreKey)?;
        let kem_public = decode_kem_public(&kem_prekey.public_key)
            .map_err(|e| BundleError::KemPreKey(SignatureError::MalformedKey(e)))?;
        let signed_public = decode_x25519(&signed_prekey.public_key)
            .map_err(|e| BundleError::SignedPreKey(SignatureError::MalformedKey(e)))?;
        let one_time = match one_time_prekey {
            Some(otk) => Some((
                otk.key_id,
                decode_x25519(&otk.public_key).map_err(BundleError::OneTimePreKey)?,
            )),
            None => None,
        };
        Ok(VerifiedBundle {
            identity_key: identity_key.clone(),
            signed_prekey: (signed_prekey.key_id, signed_public),
            one_time_prekey: one_time,
            kem_prekey: (kem_prekey.key_id, Box::new(kem_public)),
            kem_prekey_bytes: kem_prekey.public_key.clone(),
        })
    }
}

/// A bundle whose signatures and keys have been checked; only [`PreKeyBundle::verify`] makes one.
#[derive(Clone)]
pub struct VerifiedBundle {
    pub(crate) identity_key: IdentityKey,
    pub(crate) signed_prekey: (u32, X25519PublicKey),
    pub(crate) one_time_prekey: Option<(u32, X25519PublicKey)>,
    pub(crate) kem_prekey: (u32, Box<KemEncapsulationKey>),
    pub(crate) kem_prekey_bytes: Vec<u8>,
}

impl core::fmt::Debug for VerifiedBundle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            identity_key,
            signed_prekey,
            one_time_prekey,
            kem_prekey,
            kem_prekey_bytes: _,
        } = self;
        f.debug_struct("VerifiedBundle")
            .field("identity_key", identity_key)
            .field("signed_prekey_id", &signed_prekey.0)
            .field("one_time_prekey_id", &one_time_prekey.as_ref().map(|k| k.0))
            .field("kem_prekey_id", &kem_prekey.0)
            .finish()
    }
}

impl VerifiedBundle {
    /// The identity the bundle was verified against.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }

    /// The signed prekey's id.
    pub fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey.0
    }

    /// The one-time prekey's id, if the bundle had one.
    pub fn one_time_prekey_id(&self) -> Option<u32> {
        self.one_time_prekey.as_ref().map(|k| k.0)
    }

    /// The KEM prekey's id.
    pub fn kem_prekey_id(&self) -> u32 {
        self.kem_prekey.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([7; 32])
    }

    #[test]
    fn low_order_points_give_zero_shared_secret() {
        let mut rng = rng();
        let secret = StaticSecret::random_from_rng(&mut rng);
        for p in LOW_ORDER_POINTS {
            assert!(!secret
                .diffie_hellman(&X25519PublicKey::from(p))
                .was_contributory());
            let mut typed = vec![KEY_TYPE_X25519];
            typed.extend_from_slice(&p);
            assert!(validate_one_time_prekey(&typed).is_err());
        }
        let good = OneTimePreKey::generate(1, &mut rng).public();
        validate_one_time_prekey(good.public_key()).unwrap();
        let mut high = good.public_key().to_vec();
        high[32] |= 0x80;
        assert!(validate_one_time_prekey(&high).is_err());
        assert!(validate_one_time_prekey(&good.public_key()[..32]).is_err());
        let mut wrong_type = good.public_key().to_vec();
        wrong_type[0] = KEY_TYPE_ML_KEM_768;
        assert!(validate_one_time_prekey(&wrong_type).is_err());
    }

    #[test]
    fn identity_round_trips_and_rejects_bad_keys() {
        let mut rng = rng();
        let pair = IdentityKeyPair::generate(&mut rng);
        let public = pair.public();
        let bytes = public.to_bytes();
        assert_eq!(bytes.len(), IDENTITY_KEY_LEN);
        assert_eq!(IdentityKey::from_bytes(&bytes).unwrap(), public);
        let restored = IdentityKeyPair::from_bytes(&pair.to_bytes()).unwrap();
        assert_eq!(restored.public(), public);

        let mut low = bytes.clone();
        low[33..].fill(0);
        assert!(IdentityKey::from_bytes(&low).is_err());
        let mut weak_ed = bytes.clone();
        weak_ed[1..33].fill(0);
        weak_ed[1] = 1; // the Edwards identity point
        assert!(IdentityKey::from_bytes(&weak_ed).is_err());
        assert!(IdentityKey::from_bytes(&bytes[..64]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(IdentityKey::from_bytes(&long).is_err());
    }

    #[test]
    fn prekeys_verify_and_round_trip() {
        let mut rng = rng();
        let id = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate(5, &id, &mut rng);
        let kem = KemPreKey::generate_last_resort(9, &id, &mut rng);
        let otk = OneTimePreKey::generate(11, &mut rng);
        let ik = id.public();
        let s = spk.public();
        ik.verify_signed_prekey(s.key_id(), s.public_key(), s.signature())
            .unwrap();
        let k = kem.public();
        ik.verify_kem_prekey(k.key_id(), k.public_key(), k.signature())
            .unwrap();
        assert_eq!(
            ik.verify_signed_prekey(6, s.public_key(), s.signature()),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            ik.verify_kem_prekey(9, s.public_key(), s.signature()),
            Err(SignatureError::MalformedKey(DecodeError::UnexpectedTag(1)))
        );
        // A signature over a signed prekey does not verify as a KEM prekey signature.
        assert!(ik
            .verify_signed_prekey(k.key_id(), s.public_key(), k.signature())
            .is_err());

        let spk2 = SignedPreKey::from_bytes(&spk.to_bytes()).unwrap();
        assert_eq!(spk2.public(), s);
        let kem2 = KemPreKey::from_bytes(&kem.to_bytes()).unwrap();
        assert_eq!(kem2.public(), k);
        assert!(kem2.is_last_resort());
        let otk2 = OneTimePreKey::from_bytes(&otk.to_bytes()).unwrap();
        assert_eq!(otk2.public(), otk.public());
        assert!(SignedPreKey::from_bytes(&otk.to_bytes()).is_err());
    }

    #[test]
    fn non_canonical_ed25519_encodings_are_detected() {
        let mut p = [0xffu8; 32];
        p[31] = 0x7f;
        p[0] = 0xed; // y = p
        assert!(!ed25519_canonical(&p));
        p[31] = 0xff; // y = p with the sign bit set
        assert!(!ed25519_canonical(&p));
        p[0] = 0xec; // y = p - 1, canonical
        assert!(ed25519_canonical(&p));
        let mut typed = vec![KEY_TYPE_IDENTITY];
        typed.extend_from_slice(&[0xed; 1]);
        typed.extend_from_slice(&[0xff; 30]);
        typed.push(0x7f);
        typed.extend_from_slice(&[9; 32]);
        assert!(IdentityKey::from_bytes(&typed).is_err());
    }

    #[test]
    fn corrupted_kem_secret_key_is_rejected() {
        let mut rng = rng();
        let id = IdentityKeyPair::generate(&mut rng);
        let stored = KemPreKey::generate(1, &id, &mut rng).to_bytes();
        KemPreKey::from_bytes(&stored).unwrap();
        // Header is 7 bytes; then dk_pke (1152), ek (1184), h (32), z (32).
        for at in [7 + 1152 + 1184, 7 + 1152 + 5, 7] {
            let mut bad = stored.to_vec();
            bad[at] ^= 0x01;
            if at == 7 {
                // Make the first dk_pke coefficient non-canonical (>= q).
                bad[7] = 0xff;
                bad[8] |= 0x0f;
            }
            assert!(KemPreKey::from_bytes(&bad).is_err(), "offset {at}");
        }
    }

    #[test]
    fn kem_key_out_of_range_is_rejected() {
        let mut rng = rng();
        let id = IdentityKeyPair::generate(&mut rng);
        let k = KemPreKey::generate(1, &id, &mut rng).public();
        let mut bad = k.public_key().to_vec();
        // First 12-bit coefficient := 0xfff (>= q = 3329).
        bad[1] = 0xff;
        bad[2] |= 0x0f;
        assert!(decode_kem_public(&bad).is_err());
    }

    /// The direct coefficient check accepts exactly the keys that pass the ML-KEM library's own
    /// FIPS 203 modulus check, on valid keys and on keys with coefficients pushed to and beyond q.
    #[test]
    fn coefficient_check_matches_the_round_trip() {
        use rand_chacha::rand_core::RngCore;
        let mut rng = rng();
        let round_trip = |raw: &[u8]| {
            mlkem768::validate_public_key(&KemEncapsulationKey::try_from(raw).unwrap())
        };
        let generate = |rng: &mut ChaCha20Rng| {
            let mut seeds = [0u8; 64];
            rng.fill_bytes(&mut seeds);
            mlkem768::generate_key_pair(seeds)
                .public_key()
                .as_slice()
                .to_vec()
        };
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..200 {
            let mut raw = generate(&mut rng);
            let at = (rng.next_u32() % 384) as usize * 3;
            // One coefficient pair set to values around q = 3329 = 0xd01 (low 12 bits in bytes
            // at, at+1; high 12 bits in at+1, at+2), or random bytes anywhere in t-hat.
            match rng.next_u32() % 4 {
                0 => {
                    raw[at] = rng.next_u32() as u8 & 0x03;
                    raw[at + 1] = (raw[at + 1] & 0xf0) | 0x0d;
                }
                1 => {
                    raw[at + 1] = (raw[at + 1] & 0x0f) | ((rng.next_u32() as u8 & 0x03) << 4);
                    raw[at + 2] = 0xd0;
                }
                2 => raw[at] = rng.next_u32() as u8,
                _ => {
                    raw[at + 1] = rng.next_u32() as u8;
                    raw[at + 2] = rng.next_u32() as u8;
                }
            }
            let expected = round_trip(&raw);
            assert_eq!(kem_coefficients_in_range(&raw), expected);
            if expected {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(accepted > 20 && rejected > 20, "{accepted} {rejected}");
        // rho (the last 32 bytes) is not checked.
        let mut raw = generate(&mut rng);
        raw[1184 - 32..].fill(0xff);
        assert!(kem_coefficients_in_range(&raw) && round_trip(&raw));
    }

    #[test]
    fn debug_output_holds_no_secrets() {
        let mut rng = rng();
        let id = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate(1, &id, &mut rng);
        let otk = OneTimePreKey::generate(2, &mut rng);
        let kem = KemPreKey::generate(3, &id, &mut rng);
        let stored = id.to_bytes();
        let seed_hex: String = stored[2..34].iter().map(|b| format!("{b:02x}")).collect();
        let seed_dec = format!("{:?}", &stored[2..34]);
        let all = format!("{id:?} {spk:?} {otk:?} {kem:?}");
        assert!(!all.contains(&seed_hex));
        assert!(!all.contains(&seed_dec[1..seed_dec.len() - 1]));
        let spk_secret = format!("{:?}", &spk.to_bytes()[6..38]);
        assert!(!all.contains(&spk_secret[1..spk_secret.len() - 1]));
    }
}
