//! 1:1 sessions vs vodozemac's Olm, in the same run: steady-state messages, DH-ratchet ping-pong,
//! and session setup with the first message. Every measured path includes wire encoding and
//! decoding on both sides.
//!
//! # What a setup measurement contains
//!
//! Both sides time the same steps, from keys the responder published to the responder holding the
//! first plaintext:
//!
//! 1. the responder makes the one-time key the session consumes, when the flow uses one (ours:
//!    `OneTimePreKey::generate`; Olm: `generate_one_time_keys(1)`, which Olm always needs);
//! 2. the initiator decodes the responder's keys from the bytes the relay hands out (ours:
//!    identity key, signed prekey, one-time prekey, KEM prekey; Olm: the Curve25519 identity and
//!    one-time key), checks them (ours: `PreKeyBundle::verify`, two Ed25519 signatures), sets up
//!    the session and encrypts 100 bytes;
//! 3. the responder decodes the pre-key message, sets up its session and decrypts.
//!
//! Outside the loop on both sides: long-term keys (identities, our signed prekey and last-resort
//! KEM prekey, Olm's fallback key), which a device makes once and reuses for many sessions. The
//! variant "with one-time KEM prekey" also makes and signs a one-time ML-KEM-768 prekey per setup,
//! the full cost of the relay's preferred case. Olm's flow has no signature check, although a
//! Matrix client verifies the one-time key's signature outside vodozemac; we charge ours and not
//! that one. Both sides draw randomness from a fast userspace generator (ours: ChaCha20 seeded
//! once; Olm: `rand`'s thread-local generator).
//!
//! Like for like: our setup with a one-time prekey and Olm with a one-time key each generate one
//! key per session and compute four (ours) or three (Olm) X25519 agreements per side; our setup
//! without a one-time prekey computes three per side on reused prekeys, as Olm does with its
//! fallback key. The paired summary at the end prints both comparisons. (vodozemac derives the
//! fallback key's public half again when it looks the key up, so its fallback flow costs about as
//! much as its one-time-key flow.)
//!
//! The paired summary also measures the setups where both sides have pinned each other's identity
//! (a known contact, or a new device of one): they decode it with `from_bytes_known`, which skips
//! the prime-order check of an identity equal to the pinned one (a check of one scalar
//! multiplication per side).
//!
//! # Without ML-KEM
//!
//! The protocol has no setup without its KEM, so the "without ML-KEM" figures run the measured
//! code path `sotto_crypto::bench_internals::setup_without_kem` (feature `bench-internals`, which
//! only this crate's own dev-dependency enables). It goes through the same functions as the real
//! setup (bundle signature and key checks, base key, X25519 agreements, transcript hash, HKDF,
//! ratchet, AEAD, message codec) and leaves out exactly what exists only because of ML-KEM-768: the
//! KEM prekey's signature check and decoding, encapsulation, decapsulation, and the KEM prekey and
//! ciphertext in the transcript hash and on the wire. It is measured, not derived by subtracting
//! the KEM's separately measured cost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, Criterion};
use libcrux_ml_kem::mlkem768;
use rand_chacha::rand_core::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::bench_internals::{setup_without_kem, Side, X25519Bundle};
use sotto_crypto::keys::{
    IdentityKey, IdentityKeyPair, KemPreKey, KemPreKeyPublic, OneTimePreKey, OneTimePreKeyPublic,
    PreKeyBundle, SignedPreKey, SignedPreKeyPublic,
};
use sotto_crypto::pqxdh::ResponderKeys;
use sotto_crypto::ratchet::RatchetMessage;
use sotto_crypto::session::{IdentityTrust, IncomingMessage, SessionRecord, Timestamp};
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};
use vodozemac::Curve25519PublicKey;

const PLAINTEXT: [u8; 100] = [0x42; 100];
/// Any fixed time: sessions in the benches never get near their expiry.
const NOW: Timestamp = Timestamp(1_800_000_000);

struct Device {
    identity: IdentityKeyPair,
    /// The public identity, as a peer that pinned it holds it.
    pinned: IdentityKey,
    address: DeviceAddress,
    signed_prekey: SignedPreKey,
    kem_prekey: KemPreKey,
    /// What the relay hands out for this device, as bytes: identity key, signed prekey
    /// (id, key, signature), last-resort KEM prekey (id, key, signature).
    published: Published,
}

struct Published {
    identity_key: Vec<u8>,
    signed_prekey: (u32, Vec<u8>, Vec<u8>),
    kem_prekey: (u32, Vec<u8>, Vec<u8>),
}

impl Device {
    fn new(user: &str, rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let signed_prekey = SignedPreKey::generate(1, &identity, rng);
        let kem_prekey = KemPreKey::generate_last_resort(2, &identity, rng);
        let (spk, kem) = (signed_prekey.public(), kem_prekey.public());
        let published = Published {
            identity_key: identity.public().to_bytes(),
            signed_prekey: (
                spk.key_id(),
                spk.public_key().to_vec(),
                spk.signature().to_vec(),
            ),
            kem_prekey: (
                kem.key_id(),
                kem.public_key().to_vec(),
                kem.signature().to_vec(),
            ),
        };
        Self {
            pinned: identity.public(),
            identity,
            address: DeviceAddress::new(user, 1).unwrap(),
            signed_prekey,
            kem_prekey,
            published,
        }
    }
}

/// Which one-time keys a setup consumes (each made by the responder inside the measurement).
#[derive(Clone, Copy)]
enum OneTime {
    /// Signed prekey and last-resort KEM prekey only.
    None,
    /// Plus a one-time X25519 prekey.
    X25519,
    /// Plus a one-time X25519 prekey and a one-time (signed) ML-KEM-768 prekey.
    X25519AndKem,
}

/// The initiator's decoding of the X25519 part of the relay's answer (with the identity it pinned
/// for the responder, if any).
fn decode_x25519_part(
    published: &Published,
    one_time: Option<&OneTimePreKeyPublic>,
    pinned: Option<&IdentityKey>,
) -> (IdentityKey, SignedPreKeyPublic, Option<OneTimePreKeyPublic>) {
    let (id, key, signature) = &published.signed_prekey;
    (
        IdentityKey::from_bytes_known(&published.identity_key, pinned).unwrap(),
        SignedPreKeyPublic::new(*id, key, signature).unwrap(),
        one_time.map(|k| OneTimePreKeyPublic::new(k.key_id(), k.public_key()).unwrap()),
    )
}

/// Alice sets up a session to Bob from his published keys, sends the first message, and Bob
/// decrypts it. Returns both records. First contact: neither has pinned the other's identity.
fn sotto_setup(
    alice: &Device,
    bob: &Device,
    one_time: OneTime,
    rng: &mut ChaCha20Rng,
) -> (SessionRecord, SessionRecord) {
    sotto_setup_with(alice, bob, one_time, false, rng)
}

/// [`sotto_setup`], where `pinned` says whether each side has pinned the other's identity (a
/// known contact, or a new device of one): both then decode it with `from_bytes_known`.
fn sotto_setup_with(
    alice: &Device,
    bob: &Device,
    one_time: OneTime,
    pinned: bool,
    rng: &mut ChaCha20Rng,
) -> (SessionRecord, SessionRecord) {
    let (trust_bob, trust_alice) = if pinned {
        (
            IdentityTrust::Pinned(&bob.pinned),
            IdentityTrust::Pinned(&alice.pinned),
        )
    } else {
        (IdentityTrust::FirstUse, IdentityTrust::FirstUse)
    };
    fn known(pinned: bool, d: &Device) -> Option<&IdentityKey> {
        pinned.then_some(&d.pinned)
    }
    // Bob: the one-time keys this session consumes.
    let otk = match one_time {
        OneTime::None => None,
        OneTime::X25519 | OneTime::X25519AndKem => Some(OneTimePreKey::generate(7, rng)),
    };
    let kem_otk = match one_time {
        OneTime::X25519AndKem => Some(KemPreKey::generate(8, &bob.identity, rng)),
        OneTime::None | OneTime::X25519 => None,
    };
    let kem = kem_otk.as_ref().unwrap_or(&bob.kem_prekey);
    let kem_public = kem_otk.as_ref().map(KemPreKey::public);
    // Alice: decode and verify what the relay handed out.
    let (identity_key, signed_prekey, one_time_prekey) = decode_x25519_part(
        &bob.published,
        otk.as_ref().map(OneTimePreKey::public).as_ref(),
        known(pinned, bob),
    );
    let kem_prekey = match &kem_public {
        Some(k) => KemPreKeyPublic::new(k.key_id(), k.public_key(), k.signature()),
        None => {
            let (id, key, signature) = &bob.published.kem_prekey;
            KemPreKeyPublic::new(*id, key, signature)
        }
    }
    .unwrap();
    let bundle = PreKeyBundle {
        identity_key,
        signed_prekey,
        one_time_prekey,
        kem_prekey,
    };
    let mut a = SessionRecord::new();
    a.initiate(
        &alice.identity,
        &alice.address,
        &bob.address,
        &bundle.verify().unwrap(),
        trust_bob,
        NOW,
        rng,
    )
    .unwrap();
    let wire = a.encrypt(&PLAINTEXT, NOW, rng).unwrap();
    // Bob.
    let IncomingMessage::PreKey(m) =
        IncomingMessage::from_bytes_known(&wire, known(pinned, alice)).unwrap()
    else {
        panic!("expected a pre-key message")
    };
    let keys = ResponderKeys {
        identity: &bob.identity,
        signed_prekey: Some(&bob.signed_prekey),
        one_time_prekey: otk.as_ref(),
        kem_prekey: Some(kem),
    };
    let mut b = SessionRecord::new();
    let d = b
        .decrypt_prekey(&m, &keys, &bob.address, &alice.address, trust_alice, NOW)
        .unwrap();
    assert_eq!(d.plaintext, PLAINTEXT);
    (a, b)
}

/// The same flow without ML-KEM (see the header comment). Returns Bob's plaintext.
fn sotto_setup_without_kem(
    alice: &Device,
    bob: &Device,
    one_time: bool,
    rng: &mut ChaCha20Rng,
) -> Vec<u8> {
    let otk = one_time.then(|| OneTimePreKey::generate(7, rng));
    let (identity_key, signed_prekey, one_time_prekey) = decode_x25519_part(
        &bob.published,
        otk.as_ref().map(OneTimePreKey::public).as_ref(),
        None,
    );
    let keys = ResponderKeys {
        identity: &bob.identity,
        signed_prekey: Some(&bob.signed_prekey),
        one_time_prekey: otk.as_ref(),
        kem_prekey: None,
    };
    let plaintext = setup_without_kem(
        Side {
            keys: &alice.identity,
            address: &alice.address,
        },
        X25519Bundle {
            identity_key: &identity_key,
            signed_prekey: &signed_prekey,
            one_time_prekey: one_time_prekey.as_ref(),
        },
        Side {
            keys: &keys,
            address: &bob.address,
        },
        &PLAINTEXT,
        rng,
    )
    .unwrap();
    assert_eq!(plaintext, PLAINTEXT);
    plaintext
}

/// Olm's responder: an account with a fallback key.
struct OlmBob {
    account: Account,
    fallback_key: Curve25519PublicKey,
}

impl OlmBob {
    fn new() -> Self {
        let mut account = Account::new();
        account.generate_fallback_key();
        let fallback_key = *account.fallback_key().values().next().unwrap();
        account.mark_keys_as_published();
        Self {
            account,
            fallback_key,
        }
    }
}

/// Olm: Bob makes a one-time key (or reuses his fallback key), Alice creates an outbound session
/// from his identity and that key (both decoded from bytes) and encrypts, Bob creates the inbound
/// session and decrypts.
fn olm_setup(alice: &Account, bob: &mut OlmBob, fallback: bool) -> (Session, Session) {
    let key = if fallback {
        bob.fallback_key
    } else {
        bob.account.generate_one_time_keys(1);
        let otk = *bob.account.one_time_keys().values().next().unwrap();
        bob.account.mark_keys_as_published();
        otk
    };
    let (identity_bytes, key_bytes) = (bob.account.curve25519_key().to_bytes(), key.to_bytes());
    let identity = Curve25519PublicKey::from_slice(&identity_bytes).unwrap();
    let key = Curve25519PublicKey::from_slice(&key_bytes).unwrap();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), identity, key)
        .unwrap();
    let (t, wire) = a.encrypt(PLAINTEXT).unwrap().to_parts();
    let OlmMessage::PreKey(m) = OlmMessage::from_parts(t, &wire).unwrap() else {
        panic!("expected a pre-key message")
    };
    let r = bob
        .account
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
        .unwrap();
    assert_eq!(r.plaintext, PLAINTEXT);
    (a, r.session)
}

fn sotto_send(from: &mut SessionRecord, to: &mut SessionRecord, rng: &mut ChaCha20Rng) {
    let wire = from.encrypt(black_box(&PLAINTEXT), NOW, rng).unwrap();
    let m = RatchetMessage::from_bytes(&wire).unwrap();
    black_box(to.decrypt(&m).unwrap());
}

fn olm_send(from: &mut Session, to: &mut Session) {
    let (t, wire) = from.encrypt(black_box(PLAINTEXT)).unwrap().to_parts();
    let m = OlmMessage::from_parts(t, &wire).unwrap();
    black_box(to.decrypt(&m).unwrap());
}

fn session(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let alice = Device::new("alice", &mut rng);
    let bob = Device::new("bob", &mut rng);
    let olm_alice = Account::new();
    let mut olm_bob = OlmBob::new();

    let mut g = c.benchmark_group("1:1 steady encrypt+decrypt 100 B");
    let (mut a, mut b) = sotto_setup(&alice, &bob, OneTime::X25519, &mut rng);
    sotto_send(&mut b, &mut a, &mut rng); // establish both directions
    g.bench_function("sotto", |bench| {
        bench.iter(|| sotto_send(&mut a, &mut b, &mut rng))
    });
    let (mut oa, mut ob) = olm_setup(&olm_alice, &mut olm_bob, false);
    olm_send(&mut ob, &mut oa);
    g.bench_function("olm", |bench| bench.iter(|| olm_send(&mut oa, &mut ob)));
    g.finish();

    let mut g = c.benchmark_group("1:1 DH-ratchet ping-pong round");
    g.bench_function("sotto", |bench| {
        bench.iter(|| {
            sotto_send(&mut a, &mut b, &mut rng);
            sotto_send(&mut b, &mut a, &mut rng);
        })
    });
    g.bench_function("olm", |bench| {
        bench.iter(|| {
            olm_send(&mut oa, &mut ob);
            olm_send(&mut ob, &mut oa);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("1:1 setup + first message");
    g.bench_function("sotto PQXDH with one-time prekey", |bench| {
        bench.iter(|| black_box(sotto_setup(&alice, &bob, OneTime::X25519, &mut rng)))
    });
    g.bench_function("sotto PQXDH without one-time prekey", |bench| {
        bench.iter(|| black_box(sotto_setup(&alice, &bob, OneTime::None, &mut rng)))
    });
    g.bench_function(
        "sotto PQXDH with one-time prekey and one-time KEM prekey",
        |bench| {
            bench.iter(|| black_box(sotto_setup(&alice, &bob, OneTime::X25519AndKem, &mut rng)))
        },
    );
    g.bench_function("sotto without ML-KEM, with one-time prekey", |bench| {
        bench.iter(|| black_box(sotto_setup_without_kem(&alice, &bob, true, &mut rng)))
    });
    g.bench_function("sotto without ML-KEM, without one-time prekey", |bench| {
        bench.iter(|| black_box(sotto_setup_without_kem(&alice, &bob, false, &mut rng)))
    });
    g.bench_function("olm", |bench| {
        bench.iter(|| black_box(olm_setup(&olm_alice, &mut olm_bob, false)))
    });
    g.bench_function("olm with fallback key", |bench| {
        bench.iter(|| black_box(olm_setup(&olm_alice, &mut olm_bob, true)))
    });
    // Shares of our setup: the bundle's two signature checks, and the post-quantum step (one
    // encapsulation and one decapsulation).
    let bundle = PreKeyBundle {
        identity_key: bob.identity.public(),
        signed_prekey: bob.signed_prekey.public(),
        one_time_prekey: None,
        kem_prekey: bob.kem_prekey.public(),
    };
    // The prime-order check on one X25519 key (base keys, identity keys), against one agreement.
    let u = *x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(&mut rng))
        .as_bytes();
    let k = x25519_dalek::StaticSecret::random_from_rng(&mut rng).to_bytes();
    g.bench_function("X25519 prime-order check (one key)", |bench| {
        bench.iter(|| {
            black_box(sotto_crypto::bench_internals::x25519_prime_order(
                black_box(&u),
            ))
        })
    });
    g.bench_function("X25519 agreement (one, as the ratchet does it)", |bench| {
        bench.iter(|| {
            black_box(sotto_crypto::bench_internals::x25519_agreement(
                black_box(&k),
                black_box(&u),
            ))
        })
    });
    g.bench_function("bundle verification (part of sotto setup)", |bench| {
        bench.iter(|| black_box(bundle.verify().unwrap()))
    });
    let mut seeds = [0u8; 64];
    rng.fill_bytes(&mut seeds);
    let kem = mlkem768::generate_key_pair(seeds);
    g.bench_function("ML-KEM-768 encaps+decaps (part of sotto setup)", |bench| {
        bench.iter(|| {
            let mut m = [0u8; 32];
            rng.fill_bytes(&mut m);
            let (ct, _ss) = mlkem768::encapsulate(kem.public_key(), m);
            black_box(mlkem768::decapsulate(kem.private_key(), &ct))
        })
    });
    g.finish();
}

/// Best-of-trials time per operation, ours and Olm's measured alternately so that a busy machine
/// slows both alike. Printed as ratios after the criterion groups.
fn paired_ratios() {
    use std::time::{Duration, Instant};
    fn best(
        trials: usize,
        iters: u32,
        mut ours: impl FnMut(),
        mut olm: impl FnMut(),
    ) -> (f64, f64) {
        let (mut a, mut b) = (Duration::MAX, Duration::MAX);
        for _ in 0..trials {
            let t = Instant::now();
            for _ in 0..iters {
                ours();
            }
            a = a.min(t.elapsed() / iters);
            let t = Instant::now();
            for _ in 0..iters {
                olm();
            }
            b = b.min(t.elapsed() / iters);
        }
        (a.as_secs_f64() * 1e6, b.as_secs_f64() * 1e6)
    }
    let report = |name: &str, (ours, olm): (f64, f64), target: f64| {
        println!(
            "paired best-of: {name:<58} sotto {ours:>8.2} us   olm {olm:>8.2} us   ratio {:.2} (target <= {target})",
            ours / olm
        );
    };

    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let alice = Device::new("alice", &mut rng);
    let bob = Device::new("bob", &mut rng);
    let olm_alice = Account::new();
    let mut olm_bob = OlmBob::new();
    let (mut a, mut b) = sotto_setup(&alice, &bob, OneTime::X25519, &mut rng);
    sotto_send(&mut b, &mut a, &mut rng);
    let (mut oa, mut ob) = olm_setup(&olm_alice, &mut olm_bob, false);
    olm_send(&mut ob, &mut oa);
    let mut rng2 = ChaCha20Rng::seed_from_u64(3);

    let r = best(
        30,
        200,
        || sotto_send(&mut a, &mut b, &mut rng),
        || olm_send(&mut oa, &mut ob),
    );
    report("steady encrypt+decrypt 100 B", r, 0.25);
    let r = best(
        30,
        10,
        || {
            sotto_send(&mut a, &mut b, &mut rng);
            sotto_send(&mut b, &mut a, &mut rng);
        },
        || {
            olm_send(&mut oa, &mut ob);
            olm_send(&mut ob, &mut oa);
        },
    );
    report("DH-ratchet ping-pong round", r, 1.0);

    // Setup + first message: (name, ours, whether Olm uses its fallback key, target).
    type Flow<'a> = &'a dyn Fn(&mut ChaCha20Rng);
    let setups: [(&str, Flow<'_>, bool, f64); 9] = [
        (
            "setup (PQXDH, with OPK) vs olm one-time key",
            &|rng| drop(black_box(sotto_setup(&alice, &bob, OneTime::X25519, rng))),
            false,
            1.3,
        ),
        (
            "setup (PQXDH, with OPK, identities pinned) vs olm one-time key",
            &|rng| {
                drop(black_box(sotto_setup_with(
                    &alice,
                    &bob,
                    OneTime::X25519,
                    true,
                    rng,
                )))
            },
            false,
            1.3,
        ),
        (
            "setup (PQXDH, no OPK, identities pinned) vs olm one-time key",
            &|rng| {
                drop(black_box(sotto_setup_with(
                    &alice,
                    &bob,
                    OneTime::None,
                    true,
                    rng,
                )))
            },
            false,
            1.3,
        ),
        (
            "setup (PQXDH, no OPK) vs olm one-time key",
            &|rng| drop(black_box(sotto_setup(&alice, &bob, OneTime::None, rng))),
            false,
            1.3,
        ),
        (
            "setup (PQXDH, no OPK) vs olm fallback key",
            &|rng| drop(black_box(sotto_setup(&alice, &bob, OneTime::None, rng))),
            true,
            1.3,
        ),
        (
            "setup (PQXDH, OPK + one-time KEM key) vs olm one-time key",
            &|rng| {
                drop(black_box(sotto_setup(
                    &alice,
                    &bob,
                    OneTime::X25519AndKem,
                    rng,
                )))
            },
            false,
            1.3,
        ),
        (
            "setup (no ML-KEM, with OPK) vs olm one-time key",
            &|rng| drop(black_box(sotto_setup_without_kem(&alice, &bob, true, rng))),
            false,
            1.0,
        ),
        (
            "setup (no ML-KEM, no OPK) vs olm one-time key",
            &|rng| drop(black_box(sotto_setup_without_kem(&alice, &bob, false, rng))),
            false,
            1.0,
        ),
        (
            "setup (no ML-KEM, no OPK) vs olm fallback key",
            &|rng| drop(black_box(sotto_setup_without_kem(&alice, &bob, false, rng))),
            true,
            1.0,
        ),
    ];
    for (name, ours, fallback, target) in setups {
        let r = best(
            60,
            5,
            || ours(&mut rng2),
            || drop(black_box(olm_setup(&olm_alice, &mut olm_bob, fallback))),
        );
        report(name, r, target);
    }
}

criterion_group!(benches, session);

fn main() {
    benches();
    paired_ratios();
    Criterion::default().configure_from_args().final_summary();
}
