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
use sotto_crypto::session::{IncomingMessage, PreKeyDecrypted, SessionRecord};

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
    let _ = now_ms;
    if let Some(pinned) = pinned {
        if pinned != bundle.identity_key() {
            return Err(InitiateFailure::Untrusted(Untrusted {
                offered: Box::new(bundle.identity_key().clone()),
            }));
        }
    }
    record
        .initiate(identity, local, remote, bundle, rng)
        .map(|_| ())
        .map_err(InitiateFailure::Setup)
}

/// Encrypts on the current session.
pub fn encrypt(
    record: &mut SessionRecord,
    plaintext: &[u8],
    now_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, EncryptError> {
    let _ = now_ms;
    record.encrypt(plaintext, rng)
}

/// Whether the record can encrypt now.
pub fn has_usable_session(record: &SessionRecord, now_ms: u64) -> bool {
    let _ = now_ms;
    record.current().is_some()
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

/// Decrypts a pre-key or ratchet message, refusing a pre-key message from an identity other than
/// the pinned one before anything changes.
pub fn decrypt(
    record: &mut SessionRecord,
    bytes: &[u8],
    keys: &ResponderKeys<'_>,
    local: &DeviceAddress,
    remote: &DeviceAddress,
    pinned: Option<&IdentityKey>,
    now_ms: u64,
) -> Result<PreKeyDecrypted, DecryptFailure> {
    let _ = now_ms;
    let message = IncomingMessage::from_bytes(bytes)
        .map_err(|e| DecryptFailure::Decrypt(DecryptError::Malformed(e)))?;
    match message {
        IncomingMessage::PreKey(m) => {
            if let Some(pinned) = pinned {
                if pinned != m.identity_key() {
                    return Err(DecryptFailure::Untrusted(Untrusted {
                        offered: Box::new(m.identity_key().clone()),
                    }));
                }
            }
            record
                .decrypt_prekey(&m, keys, local, remote)
                .map_err(DecryptFailure::Decrypt)
        }
        IncomingMessage::Ratchet(_) => record
            .decrypt_bytes(bytes, keys, local, remote)
            .map_err(DecryptFailure::Decrypt),
    }
}
