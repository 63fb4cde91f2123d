//! Sessions with one peer device, and the record that keeps them.
//!
//! A [`SessionRecord`] holds the *current* session with a peer device plus up to
//! [`MAX_ARCHIVED_SESSIONS`] archived ones. Encryption uses the current session; decryption tries
//! the current session and then each archived one, so a message sent on an older session (for
//! example just before the peer switched) still decrypts.
//!
//! # Example
//!
//! ```
//! use rand_chacha::rand_core::SeedableRng;
//! use sotto_crypto::address::DeviceAddress;
//! use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey};
//! use sotto_crypto::pqxdh::ResponderKeys;
//! use sotto_crypto::session::{IdentityTrust, IncomingMessage, SessionRecord, Timestamp};
//!
//! let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
//! let now = Timestamp(1_800_000_000);
//! let alice = DeviceAddress::new("alice", 1)?;
//! let bob = DeviceAddress::new("bob", 1)?;
//!
//! // Bob's device publishes its prekeys; the relay hands Alice a bundle.
//! let bob_identity = IdentityKeyPair::generate(&mut rng);
//! let signed = SignedPreKey::generate(1, &bob_identity, &mut rng);
//! let one_time = OneTimePreKey::generate(2, &mut rng);
//! let kem = KemPreKey::generate_last_resort(3, &bob_identity, &mut rng);
//! let bundle = PreKeyBundle {
//!     identity_key: bob_identity.public(),
//!     signed_prekey: signed.public(),
//!     one_time_prekey: Some(one_time.public()),
//!     kem_prekey: kem.public(),
//! };
//!
//! // Alice verifies the bundle and, having pinned Bob's identity key before, sets up a session
//! // trusting only that key, then sends.
//! let alice_identity = IdentityKeyPair::generate(&mut rng);
//! let pinned = bob_identity.public();
//! let mut a = SessionRecord::new();
//! let trust = IdentityTrust::Pinned(&pinned);
//! a.initiate(&alice_identity, &alice, &bob, &bundle.verify()?, trust, now, &mut rng)?;
//! let wire = a.encrypt(b"hello Bob", now, &mut rng)?;
//!
//! // Bob looks up the prekeys the message names, decrypts, then commits (stores the record and
//! // deletes the consumed one-time prekey together).
//! let IncomingMessage::PreKey(setup) = IncomingMessage::from_bytes(&wire)? else { unreachable!() };
//! let keys = ResponderKeys {
//!     identity: &bob_identity,
//!     signed_prekey: Some(&signed),
//!     one_time_prekey: Some(&one_time),
//!     kem_prekey: Some(&kem),
//! };
//! // Bob has never talked to Alice: trust on first use.
//! let mut b = SessionRecord::new();
//! let first = b.decrypt_prekey(&setup, &keys, &bob, &alice, IdentityTrust::FirstUse, now)?;
//! assert_eq!(first.plaintext, b"hello Bob");
//! assert_eq!(first.consumed_one_time_prekey, Some(2));
//!
//! // Bob answers; from now on both sides exchange plain ratchet messages.
//! let wire = b.encrypt(b"hello Alice", now, &mut rng)?;
//! let IncomingMessage::Ratchet(reply) = IncomingMessage::from_bytes(&wire)? else { unreachable!() };
//! assert_eq!(a.decrypt(&reply)?, b"hello Alice");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Simultaneous initiation
//!
//! When two devices set up sessions to each other at the same moment, each usually receives the
//! other's pre-key message while its own session is still *pending* (it has not yet received
//! anything on it). Both then see the same two sessions, each identified by its initiator's base
//! key, and both keep the one whose base key encoding is lexicographically smaller as current and
//! archive the other. Messages already sent on the other session still decrypt from the archive.
//! Outside that situation, a session set up by a new pre-key message replaces the current one.
//!
//! If one side answered before the other's pre-key message arrived, the two can briefly hold
//! different current sessions. The peer only ever sends on its current session, so a message that
//! decrypts in an archived session that precedes the current one in the same order (smaller base
//! key, same peer identity) makes it current again. Since this only ever moves towards smaller
//! ids, the devices converge and never oscillate.

use std::collections::VecDeque;

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::PublicKey as X25519PublicKey;
use zeroize::Zeroizing;

use crate::address::DeviceAddress;
use crate::codec::{Reader, Writer};
use crate::keys::{
    decode_x25519, encode_x25519, IdentityKey, IdentityKeyPair, VerifiedBundle, IDENTITY_KEY_LEN,
    KEM_CIPHERTEXT_LEN, X25519_PUBLIC_KEY_LEN,
};
use crate::pqxdh::{self, PreKeyMessage, ResponderKeys, SessionSetupError};
use crate::ratchet::message::{MESSAGE_TYPE_PREKEY, MESSAGE_TYPE_RATCHET, MESSAGE_VERSION};
use crate::ratchet::RatchetMessage;
use crate::ratchet::{chain::Key32, DecryptError, DoubleRatchet, EncryptError};
use crate::DecodeError;

/// The most archived sessions a record keeps; the oldest is dropped first.
pub const MAX_ARCHIVED_SESSIONS: usize = 40;

/// How long a session we initiated stays usable while the peer has never answered on it: 30 days,
/// in seconds (as libsignal). After that [`SessionRecord::encrypt`] refuses with
/// [`EncryptError::SessionExpired`] and the caller sets up a new session from a fresh bundle.
pub const MAX_UNANSWERED_SESSION_AGE: u64 = 30 * 24 * 60 * 60;

// Version 0x02: pending sessions carry the time they were set up (`created`).
const RECORD_VERSION: u8 = 0x02;
const TAG_SESSION_RECORD: u8 = 0x90;
const TAG_SESSION: u8 = 0x91;

/// A message received from a peer device, parsed by its type byte.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum IncomingMessage {
    /// A session setup message (with the first ratchet message inside).
    PreKey(Box<PreKeyMessage>),
    /// A message on an existing session.
    Ratchet(RatchetMessage),
}

impl IncomingMessage {
    /// Parses a message of either type.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_bytes_known(bytes, None)
    }

    /// [`IncomingMessage::from_bytes`], with a pre-key message's identity key decoded by
    /// [`IdentityKey::from_bytes_known`] (an identity equal to `known` is not checked again).
    pub fn from_bytes_known(
        bytes: &[u8],
        known: Option<&IdentityKey>,
    ) -> Result<Self, DecodeError> {
        match bytes {
            [MESSAGE_VERSION, MESSAGE_TYPE_PREKEY, ..] => {
                PreKeyMessage::from_bytes_known(bytes, known).map(|m| Self::PreKey(Box::new(m)))
            }
            [MESSAGE_VERSION, MESSAGE_TYPE_RATCHET, ..] => {
                RatchetMessage::from_bytes(bytes).map(Self::Ratchet)
            }
            [MESSAGE_VERSION, t, ..] => Err(DecodeError::UnexpectedTag(*t)),
            [v, ..] => Err(DecodeError::UnknownVersion(*v)),
            [] => Err(DecodeError::Truncated),
        }
    }
}

/// Seconds since the Unix epoch, passed in by the caller (this crate reads no clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

/// The caller's trust decision for a peer's identity, given to every operation that can start or
/// accept a session ([`SessionRecord::initiate`], [`SessionRecord::decrypt_prekey`],
/// [`SessionRecord::decrypt_bytes`]). An identity the decision does not admit is refused with
/// `UntrustedIdentity` carrying the offered key, and the record is left exactly as it was.
#[derive(Clone, Copy, Debug)]
pub enum IdentityTrust<'a> {
    /// Nothing is pinned for this peer yet: accept the identity offered (trust on first use).
    ///
    /// Only while the record holds no session: once it does, its current session's peer identity
    /// is the one in force, and any other is refused. A record therefore never switches to a new
    /// identity without an explicit [`IdentityTrust::Pinned`] naming it.
    FirstUse,
    /// Only this identity key is trusted: the pinned one, or a new one the user just accepted.
    Pinned(&'a IdentityKey),
}

impl IdentityTrust<'_> {
    /// Whether `offered` is admitted, for a record whose current session's peer is `current`.
    fn admits(&self, current: Option<&IdentityKey>, offered: &IdentityKey) -> bool {
        match (self, current) {
            (Self::Pinned(trusted), _) => *trusted == offered,
            (Self::FirstUse, Some(current)) => current == offered,
            (Self::FirstUse, None) => true,
        }
    }
}

/// The setup data an initiator repeats in every message until the responder first answers.
#[derive(Clone)]
struct PendingPreKey {
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_prekey_id: u32,
    kem_ciphertext: Vec<u8>,
    /// When the session was set up; it expires [`MAX_UNANSWERED_SESSION_AGE`] later.
    created: Timestamp,
}

/// One Double Ratchet session with one peer device.
pub struct Session {
    local_identity: IdentityKey,
    remote_identity: IdentityKey,
    local_address: DeviceAddress,
    remote_address: DeviceAddress,
    base_key: X25519PublicKey,
    pending: Option<PendingPreKey>,
    /// Archived by [`SessionRecord::archive_current`]: never its fallback again.
    reset: bool,
    ratchet: DoubleRatchet,
    ad_send: Vec<u8>,
    ad_recv: Vec<u8>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            local_identity: _,
            remote_identity,
            local_address,
            remote_address,
            base_key,
            pending,
            reset,
            ratchet: _,
            ad_send: _,
            ad_recv: _,
        } = self;
        f.debug_struct("Session")
            .field("local_address", local_address)
            .field("remote_address", remote_address)
            .field("remote_identity", remote_identity)
            .field("base_key", base_key)
            .field("pending", &pending.is_some())
            .field("reset", reset)
            .finish_non_exhaustive()
    }
}

/// Associated data for messages from `sender` to `receiver`:
/// `IK_sender[65] || IK_receiver[65] || addr(sender) || addr(receiver)`, then the header.
pub(crate) fn associated_data(
    sender_identity: &IdentityKey,
    receiver_identity: &IdentityKey,
    sender: &DeviceAddress,
    receiver: &DeviceAddress,
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(2 * IDENTITY_KEY_LEN + 2 * (8 + 64));
    ad.extend_from_slice(&sender_identity.to_bytes());
    ad.extend_from_slice(&receiver_identity.to_bytes());
    ad.extend_from_slice(&sender.to_bytes());
    ad.extend_from_slice(&receiver.to_bytes());
    ad
}

impl Session {
    fn new(
        local_identity: IdentityKey,
        remote_identity: IdentityKey,
        local_address: DeviceAddress,
        remote_address: DeviceAddress,
        base_key: X25519PublicKey,
        pending: Option<PendingPreKey>,
        ratchet: DoubleRatchet,
    ) -> Self {
        let ad_send = associated_data(
            &local_identity,
            &remote_identity,
            &local_address,
            &remote_address,
        );
        let ad_recv = associated_data(
            &remote_identity,
            &local_identity,
            &remote_address,
            &local_address,
        );
        Self {
            local_identity,
            remote_identity,
            local_address,
            remote_address,
            base_key,
            pending,
            reset: false,
            ratchet,
            ad_send,
            ad_recv,
        }
    }

    /// The peer's identity key.
    pub fn remote_identity(&self) -> &IdentityKey {
        &self.remote_identity
    }

    /// The peer device's address.
    pub fn remote_address(&self) -> &DeviceAddress {
        &self.remote_address
    }

    /// The session id: the initiator's base key (typed encoding), known to both sides.
    pub fn id(&self) -> [u8; X25519_PUBLIC_KEY_LEN] {
        encode_x25519(&self.base_key)
    }

    /// Whether we initiated this session and the peer has not answered on it yet (our messages are
    /// still pre-key messages).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the peer has answered on this session (or set it up) and we have not sent on it
    /// since the peer's last ratchet step: nothing of ours tells the peer we still use it.
    fn awaits_our_reply(&self) -> bool {
        self.pending.is_none() && !self.ratchet.has_sending_chain()
    }

    /// Whether this is a pending session set up at least [`MAX_UNANSWERED_SESSION_AGE`] before
    /// `now`. (A clock that went backwards never expires a session.)
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| now.0.saturating_sub(p.created.0) >= MAX_UNANSWERED_SESSION_AGE)
    }

    /// Receiving chains currently kept (at most [`crate::ratchet::MAX_RECEIVER_CHAINS`]).
    pub fn receiver_chain_count(&self) -> usize {
        self.ratchet.receiver_chain_count()
    }

    /// Skipped message keys currently kept, over all receiving chains.
    pub fn skipped_key_count(&self) -> usize {
        self.ratchet.skipped_key_count()
    }

    fn encrypt(
        &mut self,
        plaintext: &[u8],
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>, EncryptError> {
        if self.is_expired(now) {
            return Err(EncryptError::SessionExpired);
        }
        let message = self.ratchet.encrypt(plaintext, &self.ad_send, rng)?;
        Ok(match &self.pending {
            None => message.to_bytes(),
            Some(p) => PreKeyMessage {
                identity_key: self.local_identity.clone(),
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_prekey_id: p.kem_prekey_id,
                base_key: self.base_key,
                kem_ciphertext: p.kem_ciphertext.clone(),
                message,
            }
            .to_bytes(),
        })
    }

    fn decrypt(&mut self, message: &RatchetMessage) -> Result<Vec<u8>, DecryptError> {
        let plaintext = self.ratchet.decrypt(message, &self.ad_recv)?;
        // The peer answered on this session, so it has it: stop sending setup data.
        self.pending = None;
        Ok(plaintext)
    }

    fn write(&self, w: &mut Writer) {
        w.u8(RECORD_VERSION)
            .u8(TAG_SESSION)
            .fixed(&self.local_identity.to_bytes())
            .fixed(&self.remote_identity.to_bytes());
        self.local_address.write(w);
        self.remote_address.write(w);
        w.fixed(&encode_x25519(&self.base_key));
        match &self.pending {
            None => {
                w.bool(false);
            }
            Some(p) => {
                w.bool(true).u32(p.signed_prekey_id);
                match p.one_time_prekey_id {
                    Some(id) => w.bool(true).u32(id),
                    None => w.bool(false),
                };
                w.u32(p.kem_prekey_id)
                    .fixed(&p.kem_ciphertext)
                    .u64(p.created.0);
            }
        }
        w.bool(self.reset);
        self.ratchet.write(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(RECORD_VERSION)?;
        r.tag(TAG_SESSION)?;
        // Checked in full when they arrived; see `IdentityKey::read_stored`.
        let local_identity = IdentityKey::read_stored(r.fixed(IDENTITY_KEY_LEN)?)?;
        let remote_identity = IdentityKey::read_stored(r.fixed(IDENTITY_KEY_LEN)?)?;
        let local_address = DeviceAddress::read(r)?;
        let remote_address = DeviceAddress::read(r)?;
        let base_key = decode_x25519(r.fixed(X25519_PUBLIC_KEY_LEN)?)?;
        let pending = if r.bool()? {
            let signed_prekey_id = r.u32()?;
            let one_time_prekey_id = if r.bool()? { Some(r.u32()?) } else { None };
            let kem_prekey_id = r.u32()?;
            let kem_ciphertext = r.fixed(KEM_CIPHERTEXT_LEN)?.to_vec();
            let created = Timestamp(r.u64()?);
            Some(PendingPreKey {
                signed_prekey_id,
                one_time_prekey_id,
                kem_prekey_id,
                kem_ciphertext,
                created,
            })
        } else {
            None
        };
        let reset = r.bool()?;
        let ratchet = DoubleRatchet::read(r)?;
        let mut session = Self::new(
            local_identity,
            remote_identity,
            local_address,
            remote_address,
            base_key,
            pending,
            ratchet,
        );
        session.reset = reset;
        Ok(session)
    }
}

/// What [`SessionRecord::initiate`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInitiated {
    /// The record's current session was with a different identity key, which the caller's
    /// [`IdentityTrust::Pinned`] decision replaced (the old session is archived).
    pub identity_changed: bool,
}

/// The result of a pre-key message that decrypted. Nothing is consumed until the caller commits:
/// it must store the updated record and delete the prekeys named here, together.
#[derive(Debug)]
#[non_exhaustive]
pub struct PreKeyDecrypted {
    /// The first message's plaintext.
    pub plaintext: Vec<u8>,
    /// The one-time X25519 prekey to delete, if this message set up a session with one.
    pub consumed_one_time_prekey: Option<u32>,
    /// The one-time KEM prekey to delete (never the last-resort key).
    pub consumed_kem_prekey: Option<u32>,
    /// The message came under a different identity key than the record's current session, which
    /// the caller's [`IdentityTrust::Pinned`] decision admitted (the old session is archived).
    pub identity_changed: bool,
    /// Whether this message set up a new session (false when it belonged to an existing one).
    pub new_session: bool,
}

/// All sessions with one peer device: the current one and up to [`MAX_ARCHIVED_SESSIONS`] others.
#[derive(Default)]
pub struct SessionRecord {
    current: Option<Session>,
    archived: VecDeque<Session>,
    /// Set when the current session (pending, or not sent on since the peer's last ratchet step)
    /// won the simultaneous-initiation tie-break against an incoming one; cleared whenever the current session changes.
    contest: Option<Contest>,
}

/// The sessions that lost the tie-break to the current one (newest last, at most
/// [`MAX_CONTEST_LOSERS`]), and how far we got in offering the current session since the last of
/// them arrived: if the peer keeps using one after that, it never adopted ours.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Contest {
    losers: Vec<[u8; X25519_PUBLIC_KEY_LEN]>,
    offered: Offered,
}

/// How far the current pending session got in being offered to the peer since the last
/// tie-break loser arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Offered {
    /// We have not sent on it since.
    No = 0,
    /// We have sent on it since.
    Sent = 1,
    /// We have sent on it, and then the peer sent once more on a loser: that message may have
    /// crossed ours; the next one cannot have.
    PeerSentOnce = 2,
}

impl Offered {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Self::No),
            1 => Ok(Self::Sent),
            2 => Ok(Self::PeerSentOnce),
            _ => Err(DecodeError::InvalidValue("contest offer state")),
        }
    }
}

/// The most tie-break losers a record remembers for its current pending session.
const MAX_CONTEST_LOSERS: usize = 8;

impl Contest {
    fn lost(&self, id: &[u8; X25519_PUBLIC_KEY_LEN]) -> bool {
        self.losers.contains(id)
    }
}

impl core::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            current,
            archived,
            contest,
        } = self;
        f.debug_struct("SessionRecord")
            .field("current", current)
            .field("archived", &archived.len())
            .field("contest", &contest.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current session, if any.
    pub fn current(&self) -> Option<&Session> {
        self.current.as_ref()
    }

    /// How many archived sessions the record keeps.
    pub fn archived_count(&self) -> usize {
        self.archived.len()
    }

    /// The archived sessions, newest first.
    pub fn archived(&self) -> impl Iterator<Item = &Session> {
        self.archived.iter()
    }

    /// The identity key of the current session's peer.
    pub fn remote_identity(&self) -> Option<&IdentityKey> {
        self.current.as_ref().map(Session::remote_identity)
    }

    /// The identity `IdentityTrust::FirstUse` holds the record to: the current session's peer,
    /// else (after [`SessionRecord::archive_current`]) the newest archived session's.
    fn known_identity(&self) -> Option<&IdentityKey> {
        self.current
            .as_ref()
            .or_else(|| self.archived.front())
            .map(Session::remote_identity)
    }

    /// Moves the current session to the archive: for resets, when the peer reported that it
    /// cannot decrypt what the current session sends (see also
    /// [`SessionRecord::peer_cannot_decrypt`], which uses what the report says). Late messages on
    /// it still decrypt (and, by the rules of [`SessionRecord::decrypt`], can make it current
    /// again when the peer keeps using it).
    ///
    /// The record falls back to the session the peer most plausibly still has. The archive is
    /// kept in order of use (a session moves to the front when it is archived and whenever a
    /// message of the peer's decrypts in it), and the successor is the first archived session
    /// with the same peer identity that was never reset and is not pending (the peer has sent on
    /// it, most recently of all such sessions), else the first pending one of ours that was never
    /// reset (its messages repeat the setup data, so the peer can decrypt them even if it does
    /// not hold it, as long as the prekeys it names are still there; typically the peer answered
    /// on it and that answer is on its way). Each reset rules one session out as a fallback, so
    /// repeated resets end in a new session. With no candidate there is no current session and
    /// [`SessionRecord::has_usable_session`] is false until [`SessionRecord::initiate`] or an
    /// incoming pre-key message sets one up.
    pub fn archive_current(&mut self) {
        self.contest = None;
        let Some(mut old) = self.current.take() else {
            return;
        };
        old.reset = true;
        let candidate = |s: &Session| !s.reset && s.remote_identity == old.remote_identity;
        let successor = self
            .archived
            .iter()
            .position(|s| !s.is_pending() && candidate(s))
            .or_else(|| self.archived.iter().position(candidate))
            .and_then(|index| self.archived.remove(index));
        self.archive(old);
        self.current = successor;
    }

    /// The peer reported that it could not decrypt a message we sent on session `failed` (a
    /// decryption-failure report, see `docs/protocol.md` §5), and named the session it uses now
    /// (`peer_uses`, `None` if it holds none with us).
    ///
    /// Acts only when `failed` is still the current session (a report about a session we have
    /// already left says nothing new) and returns whether it did. Then the current session is
    /// reset; if the record holds the session the peer named (same peer identity, not `failed`
    /// itself), that one becomes current, since the peer sends on it and reads what we send on
    /// it; otherwise the record falls back as [`SessionRecord::archive_current`] does. A forged
    /// report can only move the record between sessions it already holds with the same peer
    /// identity, as a forged reset could.
    pub fn peer_cannot_decrypt(
        &mut self,
        failed: &[u8; X25519_PUBLIC_KEY_LEN],
        peer_uses: Option<&[u8; X25519_PUBLIC_KEY_LEN]>,
    ) -> bool {
        let Some(current) = &self.current else {
            return false;
        };
        if current.id() != *failed {
            return false;
        }
        let identity = current.remote_identity.clone();
        let named = peer_uses.filter(|id| *id != failed).and_then(|id| {
            self.archived
                .iter()
                .position(|s| s.id() == *id && s.remote_identity == identity)
        });
        match named.and_then(|index| self.archived.remove(index)) {
            Some(session) => {
                if let Some(old) = &mut self.current {
                    old.reset = true;
                }
                self.promote(session);
            }
            None => self.archive_current(),
        }
        true
    }

    fn archive(&mut self, session: Session) {
        self.archived.push_front(session);
        self.archived.truncate(MAX_ARCHIVED_SESSIONS);
    }

    fn promote(&mut self, session: Session) {
        self.contest = None;
        if let Some(old) = self.current.replace(session) {
            self.archive(old);
        }
    }

    /// Sets up a new session from a peer's verified bundle and makes it current (the previous one
    /// is archived). The following [`SessionRecord::encrypt`] calls produce pre-key messages until
    /// the peer answers, for at most [`MAX_UNANSWERED_SESSION_AGE`] after `now`.
    ///
    /// The bundle's identity must be admitted by `trust`; otherwise the result is
    /// [`SessionSetupError::UntrustedIdentity`] with the bundle's identity key, and nothing changed
    /// (no randomness drawn either).
    #[allow(clippy::too_many_arguments)]
    pub fn initiate(
        &mut self,
        identity: &IdentityKeyPair,
        local: &DeviceAddress,
        remote: &DeviceAddress,
        bundle: &VerifiedBundle,
        trust: IdentityTrust<'_>,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<SessionInitiated, SessionSetupError> {
        if !trust.admits(self.known_identity(), &bundle.identity_key) {
            return Err(SessionSetupError::UntrustedIdentity {
                offered: Box::new(bundle.identity_key.clone()),
            });
        }
        let setup = pqxdh::initiate(identity, local, remote, bundle, rng)?;
        let base_key = *setup.base.public();
        let session = Session::new(
            identity.public(),
            bundle.identity_key.clone(),
            local.clone(),
            remote.clone(),
            base_key,
            Some(PendingPreKey {
                signed_prekey_id: bundle.signed_prekey.0,
                one_time_prekey_id: bundle.one_time_prekey.as_ref().map(|k| k.0),
                kem_prekey_id: bundle.kem_prekey.0,
                kem_ciphertext: setup.kem_ciphertext,
                created: now,
            }),
            DoubleRatchet::initiator(setup.root_key, setup.chain_key, setup.base),
        );
        let identity_changed = self
            .remote_identity()
            .is_some_and(|k| *k != bundle.identity_key);
        self.promote(session);
        Ok(SessionInitiated { identity_changed })
    }

    /// Encrypts with the current session: a pre-key message while it is pending, else a ratchet
    /// message. Returns the wire bytes. A pending session set up [`MAX_UNANSWERED_SESSION_AGE`] or
    /// more before `now` is refused with [`EncryptError::SessionExpired`] (nothing changes): set up
    /// a new one from a fresh bundle.
    pub fn encrypt(
        &mut self,
        plaintext: &[u8],
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>, EncryptError> {
        let wire = self
            .current
            .as_mut()
            .ok_or(EncryptError::NoSession)?
            .encrypt(plaintext, now, rng)?;
        if let Some(contest) = &mut self.contest {
            // A message of the peer's that arrives later may have crossed this one.
            contest.offered = Offered::Sent;
        }
        Ok(wire)
    }

    /// Whether [`SessionRecord::encrypt`] can send at `now`: there is a current session and it is
    /// not a pending one past [`MAX_UNANSWERED_SESSION_AGE`]. When false, set up a new session.
    pub fn has_usable_session(&self, now: Timestamp) -> bool {
        self.current.as_ref().is_some_and(|s| !s.is_expired(now))
    }

    /// Decrypts a ratchet message with the current session, else with the archived ones. A failure
    /// changes nothing. An archived session refuses (as `AuthenticationFailed`) a message past the
    /// end the peer announced for one of its older receiving chains: only a copy of the session
    /// the peer restored from an older backup sends there, and it cannot read our answers.
    pub fn decrypt(&mut self, message: &RatchetMessage) -> Result<Vec<u8>, DecryptError> {
        let mut error = None;
        if let Some(current) = &mut self.current {
            match current.decrypt(message) {
                Ok(plaintext) => return Ok(plaintext),
                Err(e) => error = Some(e),
            }
        }
        for index in 0..self.archived.len() {
            let Some(session) = self.archived.get_mut(index) else {
                break;
            };
            // A message from a copy of the session the peer restored from an older backup (past
            // the announced end of an older chain) is refused by the ratchet itself, so it cannot
            // pull us back to this session.
            match session.decrypt(message) {
                Ok(plaintext) => {
                    self.after_archived_decrypt(index, true);
                    return Ok(plaintext);
                }
                // The message's chain lives in this session: its error is the informative one.
                Err(e) if e != DecryptError::AuthenticationFailed => error = Some(e),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        Err(error.unwrap_or(DecryptError::NoSession))
    }

    /// The peer sends only on its current session, so a message that decrypted in an archived
    /// session tells us which session the peer uses. That session becomes current again (same
    /// peer identity only) when
    ///
    /// 1. the current session is pending (the peer never answered it) and the peer demonstrably
    ///    uses the archived one: it sent a ratchet message on it (`ratchet`: the session is
    ///    established at the peer), or it is a session ours beat in the simultaneous-initiation
    ///    tie-break and the peer sent on it twice after we sent on ours (the first may have
    ///    crossed ours in flight; the second means it never adopted ours: it never got it, or
    ///    lost it to a restore). A pre-key message alone is no evidence: in a simultaneous
    ///    initiation both sides send those until they see each other's; or
    /// 2. the archived one precedes the current one in the tie-break order (smaller id), unless
    ///    the message is a pre-key message and the peer has already stepped the ratchet on that
    ///    session (we hold a receiving chain under another of its ratchet keys): the message is
    ///    then late, or comes from a copy of the session the peer restored from a backup, whose
    ///    state is behind ours (our answers on it fail there), and is no evidence of the session
    ///    the peer uses now.
    ///
    /// Rule 1 leaves a current session that is not pending, and only `initiate` or
    /// `archive_current` make one pending again; rule 2 only ever moves to smaller ids, the same
    /// order on both devices. So between two resets a record switches finitely often, and two
    /// devices converge instead of swapping back and forth. With no current session nothing is
    /// promoted: a reset stands until a new session is set up.
    fn after_archived_decrypt(&mut self, index: usize, ratchet: bool) {
        // A message on a loser after we offered ours: the first may have crossed ours in flight,
        // a second one means the peer did not adopt ours.
        let mut heard_loser = false;
        let promote = match (&self.current, self.archived.get(index)) {
            (Some(current), Some(archived)) => {
                let ignored_ours = current.is_pending()
                    && (ratchet
                        || self.contest.as_ref().is_some_and(|c| {
                            heard_loser = c.offered >= Offered::Sent && c.lost(&archived.id());
                            heard_loser && c.offered == Offered::PeerSentOnce
                        }));
                // A setup message on a session in which the peer has already stepped the
                // ratchet (so it had received our answer) is late, or comes from a restored copy
                // that is behind ours: either way it says nothing about what the peer uses now.
                let behind = !ratchet && archived.ratchet.peer_stepped_past(&archived.base_key);
                let precedes = archived.id() < current.id() && !behind;
                archived.remote_identity == current.remote_identity && (ignored_ours || precedes)
            }
            _ => false,
        };
        if promote {
            if let Some(session) = self.archived.remove(index) {
                self.promote(session);
            }
            return;
        }
        if heard_loser {
            if let Some(contest) = &mut self.contest {
                contest.offered = Offered::PeerSentOnce;
            }
        }
        // The archive is kept newest first by use: the session the peer sent on last is the
        // first fallback candidate of `archive_current`.
        if index > 0 {
            if let Some(session) = self.archived.remove(index) {
                self.archived.push_front(session);
            }
        }
    }

    /// Decrypts a message of either type from its wire bytes. Pre-key messages need `keys`, the
    /// addresses, `trust` and `now`; see [`SessionRecord::decrypt_prekey`]. A pre-key message's
    /// identity key equal to the one `trust` pins (or, under [`IdentityTrust::FirstUse`], to the
    /// record's) is not checked for prime order again ([`IdentityKey::from_bytes_known`]).
    pub fn decrypt_bytes(
        &mut self,
        bytes: &[u8],
        keys: &ResponderKeys<'_>,
        local: &DeviceAddress,
        remote: &DeviceAddress,
        trust: IdentityTrust<'_>,
        now: Timestamp,
    ) -> Result<PreKeyDecrypted, DecryptError> {
        let known = match trust {
            IdentityTrust::Pinned(k) => Some(k),
            IdentityTrust::FirstUse => self.known_identity(),
        };
        match IncomingMessage::from_bytes_known(bytes, known)? {
            IncomingMessage::PreKey(m) => self.decrypt_prekey(&m, keys, local, remote, trust, now),
            IncomingMessage::Ratchet(m) => Ok(PreKeyDecrypted {
                plaintext: self.decrypt(&m)?,
                consumed_one_time_prekey: None,
                consumed_kem_prekey: None,
                identity_changed: false,
                new_session: false,
            }),
        }
    }

    /// Where the session a pre-key message belongs to lives, if the record has it.
    fn find_by_base_key(&self, message: &PreKeyMessage) -> Option<Option<usize>> {
        let matches = |s: &Session| {
            s.base_key == message.base_key && s.remote_identity == message.identity_key
        };
        match &self.current {
            Some(s) if matches(s) => Some(None),
            _ => self.archived.iter().position(matches).map(Some),
        }
    }

    /// Decrypts a pre-key message from the device at `remote`, setting up a session as responder
    /// unless the message belongs to a session the record already has.
    ///
    /// All or nothing: on error the record is unchanged and no prekey is consumed. On success the
    /// caller stores the record and deletes the prekeys named in the result, in one transaction.
    ///
    /// The message's identity key must be admitted by `trust`, else the result is
    /// [`DecryptError::UntrustedIdentity`] carrying it. A message that would set up a new session
    /// is authenticated first, so only a holder of that identity's secret can make the caller ask
    /// the user (anything else is `AuthenticationFailed`); a message for a session the record
    /// already has is checked before it is decrypted.
    pub fn decrypt_prekey(
        &mut self,
        message: &PreKeyMessage,
        keys: &ResponderKeys<'_>,
        local: &DeviceAddress,
        remote: &DeviceAddress,
        trust: IdentityTrust<'_>,
        now: Timestamp,
    ) -> Result<PreKeyDecrypted, DecryptError> {
        let untrusted = || DecryptError::UntrustedIdentity {
            offered: Box::new(message.identity_key.clone()),
        };
        let admitted = trust.admits(self.known_identity(), &message.identity_key);
        if let Some(location) = self.find_by_base_key(message) {
            if !admitted {
                return Err(untrusted());
            }
            let plaintext = match location {
                None => self.current.as_mut().map(|s| s.decrypt(&message.message)),
                Some(index) => {
                    let r = self
                        .archived
                        .get_mut(index)
                        .map(|s| s.decrypt(&message.message));
                    if matches!(r, Some(Ok(_))) {
                        self.after_archived_decrypt(index, false);
                    }
                    r
                }
            }
            .ok_or(DecryptError::NoSession)??;
            return Ok(PreKeyDecrypted {
                plaintext,
                consumed_one_time_prekey: None,
                consumed_kem_prekey: None,
                identity_changed: false,
                new_session: false,
            });
        }
        // The initiator's first ratchet key is its base key; anything else is not our protocol.
        if message.message.ratchet_key != message.base_key {
            return Err(DecryptError::AuthenticationFailed);
        }
        let (root_key, chain_key, base): (Key32, Key32, _) =
            pqxdh::respond(keys, local, remote, message)?;
        let mut session = Session::new(
            keys.identity.public(),
            message.identity_key.clone(),
            local.clone(),
            remote.clone(),
            message.base_key,
            None,
            DoubleRatchet::responder(root_key, chain_key, base),
        );
        let plaintext = session.decrypt(&message.message)?;
        if !admitted {
            return Err(untrusted());
        }

        // Authenticated and trusted: commit.
        let identity_changed = self
            .remote_identity()
            .is_some_and(|k| *k != message.identity_key);
        // The simultaneous-initiation tie-break (smaller id wins), while nothing we sent tells
        // the peer which session we use: ours is pending, or we have not sent on it since the
        // peer's last ratchet step (two of the peer's setups arrived out of order, its setup
        // crossed its answer on ours, or one is from a copy the peer restored).
        let keep_current = self.current.as_ref().is_some_and(|c| {
            ((c.is_pending() && !c.is_expired(now)) || c.awaits_our_reply())
                && c.remote_identity == session.remote_identity
                && c.id() < session.id()
        });
        if keep_current {
            let contest = self.contest.get_or_insert_with(|| Contest {
                losers: Vec::new(),
                offered: Offered::No,
            });
            if contest.losers.len() == MAX_CONTEST_LOSERS {
                contest.losers.remove(0);
            }
            contest.losers.push(session.id());
            contest.offered = Offered::No;
            self.archive(session);
        } else {
            self.promote(session);
        }
        Ok(PreKeyDecrypted {
            plaintext,
            consumed_one_time_prekey: message.one_time_prekey_id,
            consumed_kem_prekey: keys
                .kem_prekey
                .filter(|k| !k.is_last_resort())
                .map(|k| k.id()),
            identity_changed,
            new_session: true,
        })
    }

    /// Storage encoding: `0x02 0x90 has_current:u8 [session] n_archived:u32 session* has_contest:u8
    /// [n_losers:u32 loser_id[33]* offered:u8]`. Holds
    /// secrets: the buffer wipes itself on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(RECORD_VERSION).u8(TAG_SESSION_RECORD);
        match &self.current {
            Some(s) => {
                w.bool(true);
                s.write(&mut w);
            }
            None => {
                w.bool(false);
            }
        }
        w.u32(self.archived.len() as u32);
        for s in &self.archived {
            s.write(&mut w);
        }
        match &self.contest {
            Some(c) => {
                w.bool(true).u32(c.losers.len() as u32);
                for id in &c.losers {
                    w.fixed(id);
                }
                w.u8(c.offered as u8);
            }
            None => {
                w.bool(false);
            }
        }
        w.into_zeroizing()
    }

    /// Decodes [`SessionRecord::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version(RECORD_VERSION)?;
        r.tag(TAG_SESSION_RECORD)?;
        let current = if r.bool()? {
            Some(Session::read(&mut r)?)
        } else {
            None
        };
        let n = r.count(MAX_ARCHIVED_SESSIONS)?;
        let mut archived = VecDeque::with_capacity(n);
        for _ in 0..n {
            archived.push_back(Session::read(&mut r)?);
        }
        let contest = if r.bool()? {
            let n = r.count(MAX_CONTEST_LOSERS)?;
            let mut losers = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.array::<X25519_PUBLIC_KEY_LEN>()?;
                decode_x25519(&id)?;
                losers.push(id);
            }
            Some(Contest {
                losers,
                offered: Offered::from_u8(r.u8()?)?,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            current,
            archived,
            contest,
        })
    }
}
