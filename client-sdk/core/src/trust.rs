//! The one place that calls `sotto_crypto`'s session API with a trust decision.
//!
//! Every operation that can start or accept a session is given the identity the client pinned for
//! the peer (`None`: nothing pinned yet, trust on first use). An identity other than the pinned one
//! is refused with [`Untrusted`] *before* the session record changes, so no prekey is consumed and
//! nothing is stored for an identity the user has not accepted.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::keys::{IdentityKey, IdentityKeyPair, VerifiedBundle};
use sotto_crypto::pqxdh::{ResponderKeys, SessionSetupError};
use sotto_crypto::ratchet::{DecryptError, EncryptError};
use sotto_crypto::session::{
    IdentityTrust, IncomingMessage, PreKeyDecrypted, SessionRecord, Timestamp,
};

fn trust(pinned: Option<&IdentityKey>) -> IdentityTrust<'_> {
    match pinned {
        Some(k) => IdentityTrust::Pinned(k),
        None => IdentityTrust::FirstUse,
    }
}

/// The crypto layer counts seconds.
fn timestamp(now_ms: u64) -> Timestamp {
    Timestamp(now_ms / 1000)
}

/// An identity other than the pinned one was offered; nothing changed.
#[derive(Debug, Clone)]
pub struct Untrusted {
    /// The identity the peer (or the relay) offered.
    pub offered: Box<IdentityKey>,
}

/// Why [`initiate`] failed.
#[derive(Debug)]
pub enum InitiateFailure {
    /// The bundle's identity is not the pinned one.
    Untrusted(Untrusted),
    /// The crypto layer refused the bundle.
    Setup(SessionSetupError),
}

/// Why [`decrypt`] failed.
#[derive(Debug)]
pub enum DecryptFailure {
    /// A pre-key message from an identity other than the pinned one.
    Untrusted(Untrusted),
    /// The crypto layer refused the message (the record is unchanged).
    Decrypt(DecryptError),
}

/// Starts a session from a verified bundle if its identity is the pinned one (or nothing is
/// pinned).
#[allow(clippy::too_many_arguments)]
pub fn initiate(
    record: &mut SessionRecord,
    identity: &IdentityKeyPair,
    local: &DeviceAddress,
    remote: &DeviceAddress,
    bundle: &VerifiedBundle,
    pinned: Option<&IdentityKey>,
    now_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(), InitiateFailure> {
    match record.initiate(
        identity,
        local,
        remote,
        bundle,
        trust(pinned),
        timestamp(now_ms),
        rng,
    ) {
        Ok(_) => Ok(()),
        Err(SessionSetupError::UntrustedIdentity { offered }) => {
            Err(InitiateFailure::Untrusted(Untrusted { offered }))
        }
        Err(e) => Err(InitiateFailure::Setup(e)),
    }
}

/// Encrypts on the current session.
pub fn encrypt(
    record: &mut SessionRecord,
    plaintext: &[u8],
    now_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, EncryptError> {
    record.encrypt(plaintext, timestamp(now_ms), rng)
}

/// Whether the record can encrypt now.
pub fn has_usable_session(record: &SessionRecord, now_ms: u64) -> bool {
    record.has_usable_session(timestamp(now_ms))
}

/// The identity a pre-key message claims, if `bytes` is one.
pub fn prekey_identity(bytes: &[u8]) -> Option<IdentityKey> {
    match IncomingMessage::from_bytes(bytes) {
        Ok(IncomingMessage::PreKey(m)) => Some(m.identity_key().clone()),
        _ => None,
    }
}

/// The prekey ids a pre-key message names: (signed, one-time, KEM).
pub fn prekey_ids(bytes: &[u8]) -> Option<(u32, Option<u32>, u32)> {
    match IncomingMessage::from_bytes(bytes) {
        Ok(IncomingMessage::PreKey(m)) => Some((
            m.signed_prekey_id(),
            m.one_time_prekey_id(),
            m.kem_prekey_id(),
        )),
        _ => None,
    }
}

/// Decrypts a pre-key or ratchet message. A pre-key message that authenticates under an identity
/// other than the pinned one is refused with [`DecryptFailure::Untrusted`] and changes nothing
/// (forged ones fail to authenticate first, so a relay cannot fake an identity change).
pub fn decrypt(
    record: &mut SessionRecord,
    bytes: &[u8],
    keys: &ResponderKeys<'_>,
    local: &DeviceAddress,
    remote: &DeviceAddress,
    pinned: Option<&IdentityKey>,
    now_ms: u64,
) -> Result<PreKeyDecrypted, DecryptFailure> {
    match record.decrypt_bytes(bytes, keys, local, remote, trust(pinned), timestamp(now_ms)) {
        Ok(d) => Ok(d),
        Err(DecryptError::UntrustedIdentity { offered }) => {
            Err(DecryptFailure::Untrusted(Untrusted { offered }))
        }
        Err(e) => Err(DecryptFailure::Decrypt(e)),
    }
}
