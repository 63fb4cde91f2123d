//! The Double Ratchet (Signal's published specification), with AES-256-GCM and our KDF labels.
//!
//! The sending side of a DH ratchet step is taken lazily, when the next message is sent (as Olm
//! does): receiving a new ratchet key only opens a receiving chain, so decryption never needs
//! randomness and the previous ratchet secret is wiped as soon as it has served.
//!
//! Every decryption stages its changes and commits them only after the AEAD tag verified, so a
//! message that fails leaves the state exactly as it was.

use std::collections::VecDeque;

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::ZeroizeOnDrop;

use crate::codec::{Reader, Writer};
use crate::keys::{decode_x25519, encode_x25519, X25519_PUBLIC_KEY_LEN};
use crate::DecodeError;

pub(crate) mod chain;
pub(crate) mod dh;
pub mod message;

use chain::{chain_step, kdf_rk, open, seal, Key32};
pub use message::RatchetMessage;

/// The furthest a message may jump ahead in one chain (messages skipped at once).
pub const MAX_FORWARD_JUMP: u32 = 25_000;
/// The most skipped message keys kept per receiving chain; the oldest are evicted first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;
/// The most receiving chains kept per session; the oldest is evicted first.
pub const MAX_RECEIVER_CHAINS: usize = 5;

/// Why a message could not be decrypted. An attacker learns only what it could see anyway: the
/// shape of its input, the counters it chose, and that authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The bytes are not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// There is no session to decrypt with.
    #[error("no session")]
    NoSession,
    /// The message has already been decrypted (or its key was evicted as too old).
    #[error("duplicate message (chain position {0})")]
    DuplicateMessage(u32),
    /// The message skips further ahead than [`MAX_FORWARD_JUMP`].
    #[error("message jumps {0} positions ahead, more than {MAX_FORWARD_JUMP}")]
    TooFarInFuture(u64),
    /// A pre-key message names a prekey the caller did not supply.
    #[error("unknown {0} prekey id")]
    UnknownPreKey(PreKeyKind),
    /// The message does not authenticate under any session it could belong to.
    #[error("message failed to authenticate")]
    AuthenticationFailed,
    /// A pre-key message came under an identity key the caller's trust decision does not admit
    /// ([`crate::session::IdentityTrust`]). Nothing changed and no prekey was consumed; `offered`
    /// is the message's identity key, for the app to show (safety number) and, if the user
    /// accepts it, to pass back as `IdentityTrust::Pinned`.
    #[error("untrusted identity key")]
    UntrustedIdentity {
        /// The identity key the message carries.
        offered: Box<crate::keys::IdentityKey>,
    },
}

/// Which prekey a pre-key message referred to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreKeyKind {
    /// The signed X25519 prekey.
    Signed,
    /// A one-time X25519 prekey.
    OneTime,
    /// An ML-KEM-768 prekey.
    Kem,
}

impl core::fmt::Display for PreKeyKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Signed => "signed",
            Self::OneTime => "one-time",
            Self::Kem => "KEM",
        })
    }
}

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// There is no session to encrypt with.
    #[error("no session")]
    NoSession,
    /// The plaintext exceeds [`message::MAX_PLAINTEXT_LEN`].
    #[error("plaintext of {0} bytes is too long")]
    PlaintextTooLong(usize),
    /// The sending chain reached 2^32 messages; the peer must reply before more can be sent.
    #[error("sending chain exhausted")]
    ChainExhausted,
    /// The current session is pending (the peer never answered) and was set up
    /// [`crate::session::MAX_UNANSWERED_SESSION_AGE`] or more ago: set up a new one.
    #[error("the unanswered session expired")]
    SessionExpired,
}

/// A ratchet key pair. The secret wipes itself on drop.
pub(crate) struct RatchetKeyPair {
    secret: Box<StaticSecret>,
    public: X25519PublicKey,
}

impl ZeroizeOnDrop for RatchetKeyPair {}

impl RatchetKeyPair {
    pub(crate) fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let secret = Box::new(StaticSecret::random_from_rng(rng));
        let public = X25519PublicKey::from(&*secret);
        Self { secret, public }
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub(crate) fn public(&self) -> &X25519PublicKey {
        &self.public
    }

    fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = Box::new(StaticSecret::from(bytes));
        let public = X25519PublicKey::from(&*secret);
        Self { secret, public }
    }
}

struct SenderChain {
    ratchet: RatchetKeyPair,
    chain_key: Key32,
    next: u32,
}

struct ReceiverChain {
    ratchet_key: X25519PublicKey,
    /// The ratchet key in the form [`dh::agree`] uses, computed when first needed.
    prepared: Option<dh::Prepared>,
    chain_key: Key32,
    next: u32,
    skipped: VecDeque<(u32, Key32)>,
}

impl ReceiverChain {
    fn add_skipped(&mut self, keys: VecDeque<(u32, Key32)>) {
        self.skipped.extend(keys);
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
    }
}

/// Derives the keys for positions `from..to` of a chain (keeping only the newest
/// [`MAX_SKIPPED_KEYS`]) and returns them with the chain key for position `to`.
fn skip_keys(chain_key: &Key32, from: u32, to: u32) -> (VecDeque<(u32, Key32)>, Key32) {
    let mut ck = chain_key.clone();
    let mut skipped = VecDeque::with_capacity(usize::min(
        MAX_SKIPPED_KEYS,
        usize::try_from(to.saturating_sub(from)).unwrap_or(MAX_SKIPPED_KEYS),
    ));
    for n in from..to {
        let (seed, next) = chain_step(&ck);
        if skipped.len() == MAX_SKIPPED_KEYS {
            skipped.pop_front();
        }
        skipped.push_back((n, seed));
        ck = next;
    }
    (skipped, ck)
}

fn check_jump(from: u32, to: u32) -> Result<(), DecryptError> {
    let gap = u64::from(to.saturating_sub(from));
    if gap > u64::from(MAX_FORWARD_JUMP) {
        return Err(DecryptError::TooFarInFuture(gap));
    }
    Ok(())
}

/// The Double Ratchet state of one session.
pub(crate) struct DoubleRatchet {
    root_key: Key32,
    sending: Option<SenderChain>,
    previous_counter: u32,
    receiving: VecDeque<ReceiverChain>,
}

impl ZeroizeOnDrop for DoubleRatchet {}

impl DoubleRatchet {
    /// The initiator's state: the setup's chain key is its first sending chain.
    pub(crate) fn initiator(root_key: Key32, chain_key: Key32, ratchet: RatchetKeyPair) -> Self {
        Self {
            root_key,
            sending: Some(SenderChain {
                ratchet,
                chain_key,
                next: 0,
            }),
            previous_counter: 0,
            receiving: VecDeque::new(),
        }
    }

    /// The responder's state: the setup's chain key receives the initiator's first ratchet key.
    pub(crate) fn responder(
        root_key: Key32,
        chain_key: Key32,
        their_ratchet_key: dh::Prepared,
    ) -> Self {
        let mut receiving = VecDeque::with_capacity(1);
        receiving.push_back(ReceiverChain {
            ratchet_key: *their_ratchet_key.public(),
            prepared: Some(their_ratchet_key),
            chain_key,
            next: 0,
            skipped: VecDeque::new(),
        });
        Self {
            root_key,
            sending: None,
            previous_counter: 0,
            receiving,
        }
    }

    /// Encrypts one message. `ad` is the session's associated-data prefix for this direction.
    pub(crate) fn encrypt(
        &mut self,
        plaintext: &[u8],
        ad: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<RatchetMessage, EncryptError> {
        if plaintext.len() > message::MAX_PLAINTEXT_LEN {
            return Err(EncryptError::PlaintextTooLong(plaintext.len()));
        }
        if let Some(chain) = &self.sending {
            if chain.next == u32::MAX {
                return Err(EncryptError::ChainExhausted);
            }
        }
        let chain = match &mut self.sending {
            Some(chain) => chain,
            None => {
                let their = self.receiving.back_mut().ok_or(EncryptError::NoSession)?;
                let prepared = *their
                    .prepared
                    .get_or_insert_with(|| dh::Prepared::new(&their.ratchet_key));
                let ratchet = RatchetKeyPair::generate(rng);
                // Receiving chains only ever hold validated (not small-order) keys.
                let dh = dh::agree(&ratchet.secret, &prepared).ok_or(EncryptError::NoSession)?;
                let (root_key, chain_key) = kdf_rk(&self.root_key, &dh);
                self.root_key = root_key;
                self.sending.insert(SenderChain {
                    ratchet,
                    chain_key,
                    next: 0,
                })
            }
        };
        let (seed, next_key) = chain_step(&chain.chain_key);
        let mut message = RatchetMessage {
            ratchet_key: chain.ratchet.public,
            counter: chain.next,
            previous_counter: self.previous_counter,
            ciphertext: Vec::new(),
        };
        chain.chain_key = next_key;
        chain.next += 1;
        let mut aad = Vec::with_capacity(ad.len() + message::HEADER_LEN);
        aad.extend_from_slice(ad);
        aad.extend_from_slice(&message.header());
        message.ciphertext =
            seal(&seed, &aad, plaintext).ok_or(EncryptError::PlaintextTooLong(plaintext.len()))?;
        Ok(message)
    }

    /// Decrypts one message, committing state changes only when it authenticates.
    pub(crate) fn decrypt(
        &mut self,
        message: &RatchetMessage,
        ad: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        let mut aad = Vec::with_capacity(ad.len() + message::HEADER_LEN);
        aad.extend_from_slice(ad);
        aad.extend_from_slice(&message.header());
        let counter = message.counter;

        if self.is_past_an_old_chain(message) {
            return Err(DecryptError::AuthenticationFailed);
        }
        if let Some(chain) = self
            .receiving
            .iter_mut()
            .find(|c| c.ratchet_key == message.ratchet_key)
        {
            if counter < chain.next {
                let pos = chain
                    .skipped
                    .iter()
                    .position(|(n, _)| *n == counter)
                    .ok_or(DecryptError::DuplicateMessage(counter))?;
                let plaintext = chain
                    .skipped
                    .get(pos)
                    .and_then(|(_, seed)| open(seed, &aad, &message.ciphertext))
                    .ok_or(DecryptError::AuthenticationFailed)?;
                chain.skipped.remove(pos);
                return Ok(plaintext);
            }
            check_jump(chain.next, counter)?;
            let (skipped, ck) = skip_keys(&chain.chain_key, chain.next, counter);
            let (seed, next_key) = chain_step(&ck);
            let plaintext =
                open(&seed, &aad, &message.ciphertext).ok_or(DecryptError::AuthenticationFailed)?;
            chain.add_skipped(skipped);
            chain.chain_key = next_key;
            chain.next = counter.saturating_add(1);
            return Ok(plaintext);
        }

        // A new ratchet key: a DH ratchet step. Only possible after we have sent with our key.
        let sending = self
            .sending
            .as_ref()
            .ok_or(DecryptError::AuthenticationFailed)?;
        // Keys the peer's previous chain still owes us, up to its announced length.
        let old_chain_skip = match self.receiving.back() {
            Some(last) if message.previous_counter > last.next => {
                check_jump(last.next, message.previous_counter)?;
                Some(skip_keys(
                    &last.chain_key,
                    last.next,
                    message.previous_counter,
                ))
            }
            _ => None,
        };
        check_jump(0, counter)?;
        let prepared = dh::Prepared::new(&message.ratchet_key);
        let dh = dh::agree(&sending.ratchet.secret, &prepared)
            .ok_or(DecryptError::AuthenticationFailed)?;
        let (root_key, chain_key) = kdf_rk(&self.root_key, &dh);
        let (skipped, ck) = skip_keys(&chain_key, 0, counter);
        let (seed, next_key) = chain_step(&ck);
        let plaintext =
            open(&seed, &aad, &message.ciphertext).ok_or(DecryptError::AuthenticationFailed)?;

        // Authenticated: commit.
        if let (Some((old_skipped, old_ck)), Some(last)) =
            (old_chain_skip, self.receiving.back_mut())
        {
            last.add_skipped(old_skipped);
            last.chain_key = old_ck;
            last.next = message.previous_counter;
        }
        let mut new_chain = ReceiverChain {
            ratchet_key: message.ratchet_key,
            prepared: Some(prepared),
            chain_key: next_key,
            next: counter.saturating_add(1),
            skipped: VecDeque::new(),
        };
        new_chain.add_skipped(skipped);
        self.receiving.push_back(new_chain);
        while self.receiving.len() > MAX_RECEIVER_CHAINS {
            self.receiving.pop_front();
        }
        self.root_key = root_key;
        self.previous_counter = sending.next;
        self.sending = None;
        Ok(plaintext)
    }

    /// Whether `message` belongs to one of our receiving chains other than the newest and lies
    /// past the end the peer announced for that chain (its keys up to there were derived when the
    /// peer stepped the ratchet). An honest peer never sends there again, so if it decrypts, the
    /// peer is sending from a copy of the session it restored from an older backup.
    pub(crate) fn is_past_an_old_chain(&self, message: &RatchetMessage) -> bool {
        let newest = self.receiving.len().saturating_sub(1);
        self.receiving.iter().enumerate().any(|(i, c)| {
            i != newest && c.ratchet_key == message.ratchet_key && message.counter >= c.next
        })
    }

    /// Whether we hold a receiving chain under another ratchet key than `first`: the peer has
    /// stepped the ratchet, so it received a message of ours on this session.
    pub(crate) fn peer_stepped_past(&self, first: &X25519PublicKey) -> bool {
        self.receiving.iter().any(|c| c.ratchet_key != *first)
    }

    /// Whether we have a sending chain: from the start for the initiator; else since our first
    /// send after the peer's last ratchet step (a step drops ours until we send again).
    pub(crate) fn has_sending_chain(&self) -> bool {
        self.sending.is_some()
    }

    /// Number of receiving chains (for tests and diagnostics).
    pub(crate) fn receiver_chain_count(&self) -> usize {
        self.receiving.len()
    }

    /// Skipped keys held, over all chains.
    pub(crate) fn skipped_key_count(&self) -> usize {
        self.receiving.iter().map(|c| c.skipped.len()).sum()
    }

    /// Serialized state:
    /// `root_key[32] has_sending:u8 [ratchet_secret[32] chain_key[32] next:u32]
    ///  previous_counter:u32 n_chains:u32 (ratchet_key[33] chain_key[32] next:u32
    ///  n_skipped:u32 (counter:u32 seed[32])*)*`
    pub(crate) fn write(&self, w: &mut Writer) {
        w.fixed(self.root_key.as_bytes());
        match &self.sending {
            Some(chain) => {
                w.bool(true)
                    .fixed(chain.ratchet.secret.as_bytes())
                    .fixed(chain.chain_key.as_bytes())
                    .u32(chain.next);
            }
            None => {
                w.bool(false);
            }
        }
        w.u32(self.previous_counter);
        w.u32(self.receiving.len() as u32);
        for chain in &self.receiving {
            w.fixed(&encode_x25519(&chain.ratchet_key))
                .fixed(chain.chain_key.as_bytes())
                .u32(chain.next)
                .u32(chain.skipped.len() as u32);
            for (n, seed) in &chain.skipped {
                w.u32(*n).fixed(seed.as_bytes());
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let root_key = Key32::new(r.array()?);
        let sending = if r.bool()? {
            let ratchet = RatchetKeyPair::from_secret(r.array()?);
            let chain_key = Key32::new(r.array()?);
            let next = r.u32()?;
            Some(SenderChain {
                ratchet,
                chain_key,
                next,
            })
        } else {
            None
        };
        let previous_counter = r.u32()?;
        let n_chains = r.count(MAX_RECEIVER_CHAINS)?;
        let mut receiving = VecDeque::with_capacity(n_chains);
        for _ in 0..n_chains {
            let ratchet_key = decode_x25519(r.fixed(X25519_PUBLIC_KEY_LEN)?)?;
            let chain_key = Key32::new(r.array()?);
            let next = r.u32()?;
            let n_skipped = r.count(MAX_SKIPPED_KEYS)?;
            let mut skipped = VecDeque::with_capacity(n_skipped);
            for _ in 0..n_skipped {
                let n = r.u32()?;
                skipped.push_back((n, Key32::new(r.array()?)));
            }
            receiving.push_back(ReceiverChain {
                ratchet_key,
                prepared: None,
                chain_key,
                next,
                skipped,
            });
        }
        if sending.is_none() && receiving.is_empty() {
            return Err(DecodeError::InvalidValue("ratchet with no chains"));
        }
        Ok(Self {
            root_key,
            sending,
            previous_counter,
            receiving,
        })
    }
}
