//! Measurement-only code for `benches/session.rs`; compiled only with the `bench-internals`
//! feature, which this crate's dev-dependency on itself turns on for its own benches and tests.
//! Not part of the API and not part of the protocol.
//!
//! [`setup_without_kem`] answers "what does our session setup cost without its post-quantum
//! part?" with a measured code path rather than a subtraction. It runs session setup and the first
//! message through the same functions as [`SessionRecord::initiate`], [`SessionRecord::encrypt`]
//! and [`SessionRecord::decrypt_prekey`] (with [`PreKeyBundle::verify`] and
//! [`PreKeyMessage::from_bytes`] before them): the signed prekey's signature check and the key
//! checks, the base key, the three or four X25519 agreements, the transcript hash, HKDF, both
//! associated-data strings, the Double Ratchet's first chain step and AES-256-GCM, and the pre-key
//! message's encoding and decoding. Left out is exactly what exists only because of ML-KEM-768:
//! the KEM prekey's signature check and decoding, encapsulation, decapsulation, and the KEM prekey
//! and ciphertext in the transcript hash and on the wire (`kem_id` and `CT` in the message).
//!
//! The protocol has no such mode. The function keeps no session and returns only the plaintext
//! the responder decrypted, so nothing it computes can be used to exchange messages.
//!
//! [`SessionRecord::initiate`]: crate::session::SessionRecord::initiate
//! [`SessionRecord::encrypt`]: crate::session::SessionRecord::encrypt
//! [`SessionRecord::decrypt_prekey`]: crate::session::SessionRecord::decrypt_prekey
//! [`PreKeyBundle::verify`]: crate::keys::PreKeyBundle::verify
//! [`PreKeyMessage::from_bytes`]: crate::pqxdh::PreKeyMessage::from_bytes

use rand_core::{CryptoRng, RngCore};
use sha2::Digest;

use crate::address::DeviceAddress;
use crate::codec::{Reader, Writer};
use crate::keys::{
    decode_x25519, encode_x25519, BundleError, IdentityKey, IdentityKeyPair, OneTimePreKeyPublic,
    SignatureError, SignedPreKeyPublic, IDENTITY_KEY_LEN, X25519_PUBLIC_KEY_LEN,
};
use crate::pqxdh::{
    find_x25519_prekeys, initiator_agreements, responder_agreements, ResponderKeys, Transcript,
};
use crate::ratchet::dh::Prepared;
use crate::ratchet::message::{MESSAGE_TYPE_PREKEY, MESSAGE_VERSION};
use crate::ratchet::{DecryptError, DoubleRatchet, RatchetKeyPair, RatchetMessage};
use crate::session::associated_data;

/// The X25519 part of a bundle as the relay hands it out (already decoded, as
/// [`crate::keys::PreKeyBundle`] holds it).
#[derive(Debug, Clone, Copy)]
pub struct X25519Bundle<'a> {
    /// The responder's identity key.
    pub identity_key: &'a IdentityKey,
    /// The responder's signed X25519 prekey.
    pub signed_prekey: &'a SignedPreKeyPublic,
    /// A one-time X25519 prekey, if the bundle has one.
    pub one_time_prekey: Option<&'a OneTimePreKeyPublic>,
}

/// One device's side: its identity (the initiator's key pair, or the responder's keys) and address.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a, K> {
    /// The identity key pair or the responder's prekeys.
    pub keys: K,
    /// The device's address.
    pub address: &'a DeviceAddress,
}

/// Why the measured flow failed (it never does on valid input).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Session setup and the first message without ML-KEM (see the module docs): the initiator checks
/// `bundle`, sets up and encrypts `plaintext` into a pre-key message; the responder decodes it,
/// sets up its side and decrypts. Returns the decrypted plaintext.
pub fn setup_without_kem(
    initiator: Side<'_, &IdentityKeyPair>,
    bundle: X25519Bundle<'_>,
    responder: Side<'_, &ResponderKeys<'_>>,
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, Error> {
    let wire = initiate_and_encrypt(initiator, bundle, responder.address, plaintext, rng)?;
    Ok(decrypt(responder, initiator.address, &wire)?)
}

/// `PreKeyBundle::verify`, `SessionRecord::initiate` and `SessionRecord::encrypt`, minus the KEM.
fn initiate_and_encrypt(
    initiator: Side<'_, &IdentityKeyPair>,
    bundle: X25519Bundle<'_>,
    remote: &DeviceAddress,
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, Error> {
    let spk = bundle.signed_prekey;
    bundle
        .identity_key
        .verify_signed_prekey(spk.key_id(), spk.public_key(), spk.signature())
        .map_err(BundleError::SignedPreKey)?;
    let spk_public = decode_x25519(spk.public_key())
        .map_err(|e| BundleError::SignedPreKey(SignatureError::MalformedKey(e)))?;
    let opk = match bundle.one_time_prekey {
        Some(k) => Some((
            k.key_id(),
            decode_x25519(k.public_key()).map_err(BundleError::OneTimePreKey)?,
        )),
        None => None,
    };
    let remote_identity = bundle.identity_key.clone();

    let identity = initiator.keys;
    let base = RatchetKeyPair::generate(rng);
    let base_key = *base.public();
    let agreements = initiator_agreements(
        identity,
        base.secret(),
        &remote_identity,
        &spk_public,
        opk.as_ref().map(|(_, k)| k),
    )?;
    let local_identity = identity.public();
    let th: [u8; 32] = Transcript {
        initiator_identity: &local_identity,
        responder_identity: &remote_identity,
        initiator: initiator.address,
        responder: remote,
        base_key: &base_key,
        signed_prekey: (spk.key_id(), &spk_public),
        one_time_prekey: opk.as_ref().map(|(id, k)| (*id, k)),
    }
    .hasher()
    .finalize()
    .into();
    let (root_key, chain_key) = agreements.derive(&[], &th);

    // What `Session::new` and `Session::encrypt` do.
    let ad_send = associated_data(&local_identity, &remote_identity, initiator.address, remote);
    let _ad_recv = associated_data(&remote_identity, &local_identity, remote, initiator.address);
    let mut ratchet = DoubleRatchet::initiator(root_key, chain_key, base);
    let message = ratchet.encrypt(plaintext, &ad_send, rng)?;
    // `PreKeyMessage::to_bytes` without `kem_id` and `CT`.
    let mut w = Writer::with_capacity(200 + message.ciphertext.len());
    w.u8(MESSAGE_VERSION)
        .u8(MESSAGE_TYPE_PREKEY)
        .fixed(&local_identity.to_bytes())
        .u32(spk.key_id());
    match &opk {
        Some((id, _)) => w.bool(true).u32(*id),
        None => w.bool(false),
    };
    w.fixed(&encode_x25519(&base_key));
    message.write(&mut w);
    Ok(w.into_vec())
}

/// `PreKeyMessage::from_bytes` and `SessionRecord::decrypt_prekey`, minus the KEM.
fn decrypt(
    responder: Side<'_, &ResponderKeys<'_>>,
    remote: &DeviceAddress,
    wire: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    let mut r = Reader::new(wire);
    r.version(MESSAGE_VERSION)?;
    r.tag(MESSAGE_TYPE_PREKEY)?;
    let remote_identity = IdentityKey::from_bytes(r.fixed(IDENTITY_KEY_LEN)?)?;
    let spk_id = r.u32()?;
    let opk_id = if r.bool()? { Some(r.u32()?) } else { None };
    let base_key = decode_x25519(r.fixed(X25519_PUBLIC_KEY_LEN)?)?;
    let message = RatchetMessage::read(&mut r)?;
    r.finish()?;

    if message.ratchet_key != base_key {
        return Err(DecryptError::AuthenticationFailed);
    }
    let keys = responder.keys;
    let (spk, opk) = find_x25519_prekeys(keys, spk_id, opk_id)?;
    let base = Prepared::prime_order(&base_key).ok_or(DecryptError::Malformed(
        crate::DecodeError::InvalidValue("base key not of prime order"),
    ))?;
    let agreements = responder_agreements(keys.identity, spk, opk, &remote_identity, &base)
        .ok_or(DecryptError::AuthenticationFailed)?;
    let local_identity = keys.identity.public();
    let th: [u8; 32] = Transcript {
        initiator_identity: &remote_identity,
        responder_identity: &local_identity,
        initiator: remote,
        responder: responder.address,
        base_key: &base_key,
        signed_prekey: (spk.id(), spk.public_key()),
        one_time_prekey: opk.map(|k| (k.id(), k.public_key())),
    }
    .hasher()
    .finalize()
    .into();
    let (root_key, chain_key) = agreements.derive(&[], &th);

    let _ad_send = associated_data(&local_identity, &remote_identity, responder.address, remote);
    let ad_recv = associated_data(&remote_identity, &local_identity, remote, responder.address);
    let mut ratchet = DoubleRatchet::responder(root_key, chain_key, base);
    ratchet.decrypt(&message, &ad_recv)
}

/// The prime-order check that base keys and identity keys' X25519 halves get
/// (`ratchet::dh::is_prime_order_x25519`), on a raw 32-byte u-coordinate.
pub fn x25519_prime_order(u: &[u8; 32]) -> bool {
    crate::ratchet::dh::is_prime_order_x25519(&x25519_dalek::PublicKey::from(*u))
}

/// One X25519 agreement as the ratchet computes it (peer key preparation included).
pub fn x25519_agreement(secret: &[u8; 32], u: &[u8; 32]) -> bool {
    let secret = x25519_dalek::StaticSecret::from(*secret);
    let prepared = Prepared::new(&x25519_dalek::PublicKey::from(*u));
    crate::ratchet::dh::agree(&secret, &prepared).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{OneTimePreKey, SignedPreKey};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn the_kem_less_flow_delivers_and_checks_the_signature() {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate(1, &bob, &mut rng);
        let opk = OneTimePreKey::generate(2, &mut rng);
        let (a, b) = (
            DeviceAddress::new("alice", 1).unwrap(),
            DeviceAddress::new("bob", 1).unwrap(),
        );
        let keys = ResponderKeys {
            identity: &bob,
            signed_prekey: Some(&spk),
            one_time_prekey: Some(&opk),
            kem_prekey: None,
        };
        let bob_identity = bob.public();
        for one_time in [None, Some(opk.public())] {
            let out = setup_without_kem(
                Side {
                    keys: &alice,
                    address: &a,
                },
                X25519Bundle {
                    identity_key: &bob_identity,
                    signed_prekey: &spk.public(),
                    one_time_prekey: one_time.as_ref(),
                },
                Side {
                    keys: &keys,
                    address: &b,
                },
                b"hi",
                &mut rng,
            )
            .unwrap();
            assert_eq!(out, b"hi");
        }
        // A signed prekey signed by someone else is refused.
        let mallory = IdentityKeyPair::generate(&mut rng);
        let forged = SignedPreKey::generate(1, &mallory, &mut rng).public();
        assert!(setup_without_kem(
            Side {
                keys: &alice,
                address: &a,
            },
            X25519Bundle {
                identity_key: &bob_identity,
                signed_prekey: &forged,
                one_time_prekey: None,
            },
            Side {
                keys: &keys,
                address: &b,
            },
            b"hi",
            &mut rng,
        )
        .is_err());
    }
}
