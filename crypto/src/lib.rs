//! Sotto's protocol core: identity and prekeys, PQXDH session setup, the Double Ratchet, Sender
//! Keys for groups, the attachment cipher and safety numbers.
//!
//! Pure code: no I/O, no clocks, no global randomness. Every operation that needs randomness takes
//! an RNG, so tests are deterministic, and the crate builds for `wasm32-unknown-unknown`. Callers
//! (the client SDK, the relay's tests) own storage and transport; this crate hands them bytes.
//!
//! The specification (every key, KDF label, nonce and byte, the limits and the security argument)
//! is [`docs/protocol.md`](../docs/protocol.md), with groups, safety numbers and attachments in
//! `docs/protocol/`.
//!
//! # Data flow
//!
//! ```text
//!  Bob's device                          relay                         Alice's device
//!  ────────────                          ─────                         ──────────────
//!  IdentityKeyPair ─┐
//!  SignedPreKey ────┼─ .public() ──▶ PreKeyBundle ──── fetch ────▶ PreKeyBundle::verify()
//!  KemPreKey ───────┤  (upload)      (stored, one                      │  VerifiedBundle
//!  OneTimePreKey ───┘                 OPK per fetch)                   ▼
//!                                                               SessionRecord::initiate
//!                                                              (pqxdh: 3-4 DH + ML-KEM)
//!                                                                      │
//!  SessionRecord::decrypt_prekey ◀──── PreKeyMessage ◀──────── SessionRecord::encrypt
//!  (pqxdh::ResponderKeys: consumes         (until Bob answers)
//!   the OPK and one-time KEM key)
//!          │
//!          ▼        Double Ratchet (ratchet::DoubleRatchet inside session::Session)
//!  SessionRecord ◀═══════════ RatchetMessage, both ways ═══════════▶ SessionRecord
//!
//!  Groups: per (group, own device) a SenderKeyState; its SenderKeyDistributionMessage travels
//!  inside the 1:1 sessions above; every member keeps a SenderKeyRecord per (group, sender device).
//!  SenderKeyState::encrypt ──▶ SenderKeyMessage (one ciphertext, fanned out) ──▶ SenderKeyRecord::decrypt
//!
//!  Attachments: AttachmentKey + Encryptor ──▶ blob (uploaded) ──▶ Decryptor; the key and the
//!  blob's AttachmentDigest travel in a (1:1 or group) message.
//!
//!  Safety numbers: SafetyNumber::new(own id, own IdentityKey, peer id, peer IdentityKey) ──▶
//!  60 digits / QR payload, compared out of band.
//! ```
//!
//! # Modules
//!
//! - [`keys`]: identity key pairs, signed, one-time and KEM prekeys, bundles and their verification.
//! - [`address`]: device addresses (user id + device id), bound into every session's KDF inputs.
//! - [`pqxdh`]: hybrid session setup (X25519 + ML-KEM-768) and the pre-key message.
//! - [`ratchet`]: the Double Ratchet, its messages and errors.
//! - [`session`]: sessions with one peer device and the record that keeps current and archived
//!   ones; the entry point for 1:1 messaging.
//! - [`sender_key`]: Sender Keys for group messages.
//! - [`attachment`]: the streaming attachment cipher.
//! - [`fingerprint`]: safety numbers and their QR payloads.
//!
//! Every encoding is decoded with [`DecodeError`] on malformed input; no decoder panics (each has a
//! fuzz target in `fuzz/`, whose corpus the tests replay).
//!
//! # Example
//!
//! Bob publishes prekeys, Alice fetches his bundle and sends first, Bob answers:
//!
//! ```
//! use rand_chacha::rand_core::SeedableRng;
//! use sotto_crypto::address::DeviceAddress;
//! use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey};
//! use sotto_crypto::pqxdh::ResponderKeys;
//! use sotto_crypto::session::{IdentityTrust, IncomingMessage, SessionRecord, Timestamp};
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2026);
//! let now = Timestamp(1_800_000_000); // seconds since the Unix epoch, from the caller's clock
//! let (alice, bob) = (DeviceAddress::new("alice", 1)?, DeviceAddress::new("bob", 7)?);
//!
//! // Bob's device generates its keys and uploads the public halves.
//! let bob_identity = IdentityKeyPair::generate(&mut rng);
//! let signed = SignedPreKey::generate(1, &bob_identity, &mut rng);
//! let one_time = OneTimePreKey::generate(10, &mut rng);
//! let kem = KemPreKey::generate(20, &bob_identity, &mut rng);
//!
//! // Alice fetches Bob's bundle from the relay, verifies it and starts a session.
//! let fetched = PreKeyBundle {
//!     identity_key: bob_identity.public(),
//!     signed_prekey: signed.public(),
//!     one_time_prekey: Some(one_time.public()),
//!     kem_prekey: kem.public(),
//! };
//! // Nothing is pinned for Bob yet: trust on first use (the app then pins his identity key).
//! let alice_identity = IdentityKeyPair::generate(&mut rng);
//! let mut at_alice = SessionRecord::new();
//! let verified = fetched.verify()?;
//! at_alice.initiate(&alice_identity, &alice, &bob, &verified, IdentityTrust::FirstUse, now, &mut rng)?;
//! let first = at_alice.encrypt(b"hi Bob", now, &mut rng)?;
//!
//! // Bob receives a pre-key message, finds the prekeys it names and decrypts.
//! let IncomingMessage::PreKey(setup) = IncomingMessage::from_bytes(&first)? else {
//!     unreachable!("a new session starts with a pre-key message")
//! };
//! let keys = ResponderKeys {
//!     identity: &bob_identity,
//!     signed_prekey: Some(&signed),
//!     one_time_prekey: Some(&one_time),
//!     kem_prekey: Some(&kem),
//! };
//! let mut at_bob = SessionRecord::new();
//! let received = at_bob.decrypt_prekey(&setup, &keys, &bob, &alice, IdentityTrust::FirstUse, now)?;
//! assert_eq!(received.plaintext, b"hi Bob");
//! // Bob's store now deletes the consumed one-time keys, together with saving the record.
//! assert_eq!(received.consumed_one_time_prekey, Some(10));
//! assert_eq!(received.consumed_kem_prekey, Some(20));
//!
//! // Bob replies on the new session; Alice decrypts a plain ratchet message.
//! let reply = at_bob.encrypt(b"hi Alice", now, &mut rng)?;
//! let IncomingMessage::Ratchet(reply) = IncomingMessage::from_bytes(&reply)? else {
//!     unreachable!("Bob's reply is a ratchet message")
//! };
//! assert_eq!(at_alice.decrypt(&reply)?, b"hi Alice");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod attachment;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals;
pub(crate) mod codec;
pub mod fingerprint;
pub(crate) mod kdf;
pub mod keys;
pub mod pqxdh;
pub mod ratchet;
pub mod sender_key;
pub mod session;
pub use codec::DecodeError;
