//! Hybrid session setup: PQXDH (Signal's published design) with X25519 and ML-KEM-768.
//!
//! The initiator A holds a verified bundle of the responder B: identity `IK_B`, signed prekey
//! `SPK_B`, optionally a one-time prekey `OPK_B`, and a KEM prekey `PQPK_B` (one-time or last
//! resort). A makes an ephemeral `EK_A` and computes
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
//! (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
//! IKM  = 0xFF * 32 || DH1 || DH2 || DH3 || [DH4] || SS
//! info = "Sotto_PQXDH_v1" || SHA-256(transcript)
//! RK || CK = HKDF-SHA256(salt = 32 zero bytes, IKM, info), 64 bytes
//! ```
//!
//! The transcript binds both identities, both device addresses and every public value:
//!
//! ```text
//! IK_A[65] || IK_B[65] || addr(A) || addr(B) || EK_A[33] || spk_id:u32 || SPK_B[33]
//! || has_opk:u8 || [opk_id:u32 || OPK_B[33]] || kem_id:u32 || PQPK_B[1185] || CT[1088]
//! ```
//!
//! `RK` is the first root key and `CK` the initiator's first sending chain (the responder's first
//! receiving chain). The initiator's first ratchet key is its base key `EK_A`: the responder's
//! first reply ratchets against it. (Its secret therefore lives on in the session until that
//! reply; it alone yields DH2..DH4 but neither DH1 nor the KEM secret, so it exposes no more than
//! the session state it sits in.) Every DH output is checked to be
//! non-zero (contributory), so a small-order key can never force a known secret.

use libcrux_ml_kem::mlkem768;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::address::DeviceAddress;
use crate::codec::{Reader, Writer};
use crate::keys::{
    decode_x25519, encode_x25519, IdentityKey, IdentityKeyPair, KemPreKey, OneTimePreKey,
    SignedPreKey, VerifiedBundle, IDENTITY_KEY_LEN, KEM_CIPHERTEXT_LEN, X25519_PUBLIC_KEY_LEN,
};
use crate::ratchet::chain::{hkdf, split64, Key32};
use crate::ratchet::dh::{agree, Prepared};
use crate::ratchet::message::{MESSAGE_TYPE_PREKEY, MESSAGE_VERSION};
use crate::ratchet::{DecryptError, PreKeyKind, RatchetKeyPair, RatchetMessage};
use crate::DecodeError;

/// HKDF info label of the PQXDH key derivation.
pub const PQXDH_INFO: &[u8] = b"Sotto_PQXDH_v1";

/// Why a session could not be set up from a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionSetupError {
    /// A Diffie-Hellman output was all zeros: some key in the bundle is of small order.
    #[error("non-contributory key agreement")]
    NonContributory,
    /// The bundle's identity key is not one the caller's trust decision admits
    /// ([`crate::session::IdentityTrust`]). Nothing changed; `offered` is the bundle's identity
    /// key, for the app to show (safety number) and, if the user accepts it, to pass back as
    /// `IdentityTrust::Pinned`.
    #[error("untrusted identity key")]
    UntrustedIdentity {
        /// The identity key the bundle carries.
        offered: Box<IdentityKey>,
    },
}

/// A pre-key message: everything the responder needs to set up the session, then the first
/// ratchet message.
///
/// ```text
/// u8      version            0x01
/// u8      type               0x02 (pre-key message)
/// [65]    IK_A               initiator identity key
/// u32 BE  spk_id
/// u8      has_opk            0 or 1, then u32 BE opk_id when 1
/// u32 BE  kem_id
/// [33]    EK_A               initiator base key (typed X25519)
/// [1088]  CT                 ML-KEM-768 ciphertext
/// ...     ratchet message    its full encoding, to the end
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PreKeyMessage {
    pub(crate) identity_key: IdentityKey,
    pub(crate) signed_prekey_id: u32,
    pub(crate) one_time_prekey_id: Option<u32>,
    pub(crate) kem_prekey_id: u32,
    pub(crate) base_key: X25519PublicKey,
    pub(crate) kem_ciphertext: Vec<u8>,
    pub(crate) message: RatchetMessage,
}

impl PreKeyMessage {
    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w =
            Writer::with_capacity(1200 + KEM_CIPHERTEXT_LEN + self.message.ciphertext.len());
        w.u8(MESSAGE_VERSION)
            .u8(MESSAGE_TYPE_PREKEY)
            .fixed(&self.identity_key.to_bytes())
            .u32(self.signed_prekey_id);
        match self.one_time_prekey_id {
            Some(id) => w.bool(true).u32(id),
            None => w.bool(false),
        };
        w.u32(self.kem_prekey_id)
            .fixed(&encode_x25519(&self.base_key))
            .fixed(&self.kem_ciphertext);
        self.message.write(&mut w);
        w.into_vec()
    }

    /// Decodes the wire encoding; checks every key's validity, not the ciphertexts.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_bytes_known(bytes, None)
    }

    /// [`PreKeyMessage::from_bytes`], decoding the initiator's identity key with
    /// [`IdentityKey::from_bytes_known`]: an identity equal to `known` (the peer's pinned key) is
    /// not checked again.
    pub fn from_bytes_known(
        bytes: &[u8],
        known: Option<&IdentityKey>,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version(MESSAGE_VERSION)?;
        r.tag(MESSAGE_TYPE_PREKEY)?;
        let identity_key = IdentityKey::from_bytes_known(r.fixed(IDENTITY_KEY_LEN)?, known)?;
        let signed_prekey_id = r.u32()?;
        let one_time_prekey_id = if r.bool()? { Some(r.u32()?) } else { None };
        let kem_prekey_id = r.u32()?;
        let base_key = decode_x25519(r.fixed(X25519_PUBLIC_KEY_LEN)?)?;
        let kem_ciphertext = r.fixed(KEM_CIPHERTEXT_LEN)?.to_vec();
        let message = RatchetMessage::read(&mut r)?;
        r.finish()?;
        Ok(Self {
            identity_key,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_id,
            base_key,
            kem_ciphertext,
            message,
        })
    }

    /// The initiator's identity key, as the message claims it.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }

    /// The id of the responder's signed prekey used.
    pub fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey_id
    }

    /// The id of the responder's one-time X25519 prekey used, if any.
    pub fn one_time_prekey_id(&self) -> Option<u32> {
        self.one_time_prekey_id
    }

    /// The id of the responder's KEM prekey used.
    pub fn kem_prekey_id(&self) -> u32 {
        self.kem_prekey_id
    }

    /// The initiator's base key (typed encoding); it also identifies the session.
    pub fn base_key(&self) -> [u8; X25519_PUBLIC_KEY_LEN] {
        encode_x25519(&self.base_key)
    }
}

/// The public values both sides feed into the transcript hash, up to the KEM part.
pub(crate) struct Transcript<'a> {
    pub(crate) initiator_identity: &'a IdentityKey,
    pub(crate) responder_identity: &'a IdentityKey,
    pub(crate) initiator: &'a DeviceAddress,
    pub(crate) responder: &'a DeviceAddress,
    pub(crate) base_key: &'a X25519PublicKey,
    pub(crate) signed_prekey: (u32, &'a X25519PublicKey),
    pub(crate) one_time_prekey: Option<(u32, &'a X25519PublicKey)>,
}

impl Transcript<'_> {
    /// SHA-256 fed with everything before `kem_id`.
    pub(crate) fn hasher(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(self.initiator_identity.to_bytes());
        h.update(self.responder_identity.to_bytes());
        h.update(self.initiator.to_bytes());
        h.update(self.responder.to_bytes());
        h.update(encode_x25519(self.base_key));
        h.update(self.signed_prekey.0.to_be_bytes());
        h.update(encode_x25519(self.signed_prekey.1));
        match self.one_time_prekey {
            Some((id, key)) => {
                h.update([1]);
                h.update(id.to_be_bytes());
                h.update(encode_x25519(key));
            }
            None => h.update([0]),
        }
        h
    }

    /// `TH`: the whole transcript, `kem_id || PQPK_B || CT` last.
    fn hash(&self, kem_prekey: (u32, &[u8]), kem_ciphertext: &[u8]) -> [u8; 32] {
        let mut h = self.hasher();
        h.update(kem_prekey.0.to_be_bytes());
        h.update(kem_prekey.1);
        h.update(kem_ciphertext);
        h.finalize().into()
    }
}

/// One side's X25519 agreements: `DH1`, `DH2`, `DH3` and, with a one-time prekey, `DH4`.
pub(crate) struct Agreements {
    dh123: [Zeroizing<[u8; 32]>; 3],
    dh4: Option<Zeroizing<[u8; 32]>>,
}

impl Agreements {
    /// `RK || CK` from `IKM = 0xFF^32 || DH1 || DH2 || DH3 || [DH4] || kem_secret` and the
    /// transcript hash `th`.
    pub(crate) fn derive(&self, kem_secret: &[u8], th: &[u8; 32]) -> (Key32, Key32) {
        let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
        ikm.extend_from_slice(&[0xff; 32]);
        for d in self.dh123.iter().chain(&self.dh4) {
            ikm.extend_from_slice(&d[..]);
        }
        ikm.extend_from_slice(kem_secret);
        let okm = hkdf::<64>(&[0u8; 32], &ikm, &[PQXDH_INFO, th]);
        split64(&okm)
    }
}

/// The initiator's agreements (PQXDH step 2), with its base key secret `base`.
pub(crate) fn initiator_agreements(
    identity: &IdentityKeyPair,
    base: &StaticSecret,
    responder_identity: &IdentityKey,
    signed_prekey: &X25519PublicKey,
    one_time_prekey: Option<&X25519PublicKey>,
) -> Result<Agreements, SessionSetupError> {
    let spk = Prepared::new(signed_prekey);
    let fail = || SessionSetupError::NonContributory;
    let dh1 = agree(identity.agreement(), &spk).ok_or_else(fail)?;
    let dh2 = agree(base, &Prepared::new(responder_identity.agreement())).ok_or_else(fail)?;
    let dh3 = agree(base, &spk).ok_or_else(fail)?;
    let dh4 = match one_time_prekey {
        Some(opk) => Some(agree(base, &Prepared::new(opk)).ok_or_else(fail)?),
        None => None,
    };
    Ok(Agreements {
        dh123: [dh1, dh2, dh3],
        dh4,
    })
}

/// The responder's agreements from its own prekeys and the initiator's identity and (prepared)
/// base key; `None` when one is all zeros.
pub(crate) fn responder_agreements(
    identity: &IdentityKeyPair,
    signed_prekey: &SignedPreKey,
    one_time_prekey: Option<&OneTimePreKey>,
    initiator_identity: &IdentityKey,
    base: &Prepared,
) -> Option<Agreements> {
    let dh1 = agree(
        signed_prekey.secret(),
        &Prepared::new(initiator_identity.agreement()),
    )?;
    let dh2 = agree(identity.agreement(), base)?;
    let dh3 = agree(signed_prekey.secret(), base)?;
    let dh4 = match one_time_prekey {
        Some(opk) => Some(agree(opk.secret(), base)?),
        None => None,
    };
    Some(Agreements {
        dh123: [dh1, dh2, dh3],
        dh4,
    })
}

/// The responder's X25519 prekeys a message names, or which one it lacks.
pub(crate) fn find_x25519_prekeys<'a>(
    keys: &ResponderKeys<'a>,
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
) -> Result<(&'a SignedPreKey, Option<&'a OneTimePreKey>), DecryptError> {
    let spk = keys
        .signed_prekey
        .filter(|k| k.id() == signed_prekey_id)
        .ok_or(DecryptError::UnknownPreKey(PreKeyKind::Signed))?;
    let opk = match one_time_prekey_id {
        Some(id) => Some(
            keys.one_time_prekey
                .filter(|k| k.id() == id)
                .ok_or(DecryptError::UnknownPreKey(PreKeyKind::OneTime))?,
        ),
        None => None,
    };
    Ok((spk, opk))
}

/// What the initiator keeps from the setup.
pub(crate) struct InitiatorSetup {
    pub(crate) root_key: Key32,
    pub(crate) chain_key: Key32,
    /// The base key pair, which is also the initiator's first ratchet key pair.
    pub(crate) base: RatchetKeyPair,
    pub(crate) kem_ciphertext: Vec<u8>,
}

/// The initiator's half of PQXDH.
pub(crate) fn initiate(
    identity: &IdentityKeyPair,
    local: &DeviceAddress,
    remote: &DeviceAddress,
    bundle: &VerifiedBundle,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<InitiatorSetup, SessionSetupError> {
    let base_pair = RatchetKeyPair::generate(rng);
    let base_key = *base_pair.public();
    let spk_key = &bundle.signed_prekey.1;
    let opk = bundle.one_time_prekey.as_ref().map(|(id, k)| (*id, k));
    let agreements = initiator_agreements(
        identity,
        base_pair.secret(),
        &bundle.identity_key,
        spk_key,
        opk.map(|(_, k)| k),
    )?;
    // FIPS 203 ML-KEM.Encaps: the message m, 32 bytes of randomness.
    let mut m = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut m[..]);
    let (ct, ss) = mlkem768::encapsulate(&bundle.kem_prekey.1, *m);
    let ss = Zeroizing::new(ss);
    let local_identity = identity.public();
    let transcript = Transcript {
        initiator_identity: &local_identity,
        responder_identity: &bundle.identity_key,
        initiator: local,
        responder: remote,
        base_key: &base_key,
        signed_prekey: (bundle.signed_prekey.0, spk_key),
        one_time_prekey: opk,
    };
    let th = transcript.hash(
        (bundle.kem_prekey.0, &bundle.kem_prekey_bytes),
        ct.as_slice(),
    );
    let (root_key, chain_key) = agreements.derive(&ss[..], &th);
    Ok(InitiatorSetup {
        root_key,
        chain_key,
        base: base_pair,
        kem_ciphertext: ct.as_slice().to_vec(),
    })
}

/// The responder's own keys for a pre-key message, as the caller looked them up by the ids the
/// message names ([`PreKeyMessage::signed_prekey_id`] and friends).
#[derive(Debug, Clone, Copy)]
pub struct ResponderKeys<'a> {
    /// The responder's identity.
    pub identity: &'a IdentityKeyPair,
    /// The signed prekey with the message's `spk_id`, if the device still has it.
    pub signed_prekey: Option<&'a SignedPreKey>,
    /// The one-time prekey with the message's `opk_id`, if the device still has it.
    pub one_time_prekey: Option<&'a OneTimePreKey>,
    /// The KEM prekey with the message's `kem_id`, if the device still has it.
    pub kem_prekey: Option<&'a KemPreKey>,
}

/// The responder's half of PQXDH: the first root key and receiving chain key, and the initiator's
/// base key (its first ratchet key) prepared for the ratchet.
pub(crate) fn respond(
    keys: &ResponderKeys<'_>,
    local: &DeviceAddress,
    remote: &DeviceAddress,
    message: &PreKeyMessage,
) -> Result<(Key32, Key32, Prepared), DecryptError> {
    let (spk, opk) =
        find_x25519_prekeys(keys, message.signed_prekey_id, message.one_time_prekey_id)?;
    let kem = keys
        .kem_prekey
        .filter(|k| k.id() == message.kem_prekey_id)
        .ok_or(DecryptError::UnknownPreKey(PreKeyKind::Kem))?;

    let fail = || DecryptError::AuthenticationFailed;
    // A base key with a small-order component (or off the curve) would give the session up to
    // eight ids for the same keys: refused, as libsignal does.
    let base = Prepared::prime_order(&message.base_key).ok_or(DecryptError::Malformed(
        DecodeError::InvalidValue("base key not of prime order"),
    ))?;
    let agreements = responder_agreements(keys.identity, spk, opk, &message.identity_key, &base)
        .ok_or_else(fail)?;
    let ct = mlkem768::MlKem768Ciphertext::try_from(message.kem_ciphertext.as_slice())
        .map_err(|_| DecryptError::Malformed(DecodeError::InvalidValue("KEM ciphertext")))?;
    // ML-KEM decapsulation never reports a bad ciphertext (implicit rejection): a forged one
    // yields an unrelated secret, and the first message then fails to authenticate.
    let ss = Zeroizing::new(mlkem768::decapsulate(kem.secret().key(), &ct));
    let local_identity = keys.identity.public();
    let transcript = Transcript {
        initiator_identity: &message.identity_key,
        responder_identity: &local_identity,
        initiator: remote,
        responder: local,
        base_key: &message.base_key,
        signed_prekey: (spk.id(), spk.public_key()),
        one_time_prekey: opk.map(|k| (k.id(), k.public_key())),
    };
    let th = transcript.hash((kem.id(), kem.public_key_bytes()), &message.kem_ciphertext);
    let (root_key, chain_key) = agreements.derive(&ss[..], &th);
    Ok((root_key, chain_key, base))
}
