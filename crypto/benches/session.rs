//! 1:1 sessions vs vodozemac's Olm, in the same run: steady-state messages, DH-ratchet ping-pong,
//! and session setup with the first message. Every measured path includes wire encoding and
//! decoding on both sides.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, Criterion};
use ml_kem::kem::{Decapsulate, Encapsulate};
use ml_kem::KemCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey};
use sotto_crypto::pqxdh::ResponderKeys;
use sotto_crypto::ratchet::RatchetMessage;
use sotto_crypto::session::{IncomingMessage, SessionRecord};
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};

const PLAINTEXT: [u8; 100] = [0x42; 100];

struct Device {
    identity: IdentityKeyPair,
    address: DeviceAddress,
    signed_prekey: SignedPreKey,
    kem_prekey: KemPreKey,
}

impl Device {
    fn new(user: &str, rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let signed_prekey = SignedPreKey::generate(1, &identity, rng);
        let kem_prekey = KemPreKey::generate_last_resort(2, &identity, rng);
        Self {
            identity,
            address: DeviceAddress::new(user, 1).unwrap(),
            signed_prekey,
            kem_prekey,
        }
    }
}

/// Alice sets up a session to Bob (optionally with a fresh one-time prekey), sends the first
/// message, and Bob decrypts it. Returns both records.
fn sotto_setup(
    alice: &Device,
    bob: &Device,
    one_time: bool,
    rng: &mut ChaCha20Rng,
) -> (SessionRecord, SessionRecord) {
    let otk = one_time.then(|| OneTimePreKey::generate(7, rng));
    let bundle = PreKeyBundle {
        identity_key: bob.identity.public(),
        signed_prekey: bob.signed_prekey.public(),
        one_time_prekey: otk.as_ref().map(OneTimePreKey::public),
        kem_prekey: bob.kem_prekey.public(),
    };
    let mut a = SessionRecord::new();
    a.initiate(
        &alice.identity,
        &alice.address,
        &bob.address,
        &bundle.verify().unwrap(),
        rng,
    )
    .unwrap();
    let wire = a.encrypt(&PLAINTEXT, rng).unwrap();
    let IncomingMessage::PreKey(m) = IncomingMessage::from_bytes(&wire).unwrap() else {
        panic!("expected a pre-key message")
    };
    let keys = ResponderKeys {
        identity: &bob.identity,
        signed_prekey: Some(&bob.signed_prekey),
        one_time_prekey: otk.as_ref(),
        kem_prekey: Some(&bob.kem_prekey),
    };
    let mut b = SessionRecord::new();
    let d = b
        .decrypt_prekey(&m, &keys, &bob.address, &alice.address)
        .unwrap();
    assert_eq!(d.plaintext, PLAINTEXT);
    (a, b)
}

fn olm_setup(alice: &Account, bob: &mut Account) -> (Session, Session) {
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    bob.mark_keys_as_published();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let (t, wire) = a.encrypt(PLAINTEXT).unwrap().to_parts();
    let OlmMessage::PreKey(m) = OlmMessage::from_parts(t, &wire).unwrap() else {
        panic!("expected a pre-key message")
    };
    let r = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
        .unwrap();
    assert_eq!(r.plaintext, PLAINTEXT);
    (a, r.session)
}

fn sotto_send(from: &mut SessionRecord, to: &mut SessionRecord, rng: &mut ChaCha20Rng) {
    let wire = from.encrypt(black_box(&PLAINTEXT), rng).unwrap();
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
    let mut olm_bob = Account::new();

    let mut g = c.benchmark_group("1:1 steady encrypt+decrypt 100 B");
    let (mut a, mut b) = sotto_setup(&alice, &bob, true, &mut rng);
    sotto_send(&mut b, &mut a, &mut rng); // establish both directions
    g.bench_function("sotto", |bench| {
        bench.iter(|| sotto_send(&mut a, &mut b, &mut rng))
    });
    let (mut oa, mut ob) = olm_setup(&olm_alice, &mut olm_bob);
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
        bench.iter(|| black_box(sotto_setup(&alice, &bob, true, &mut rng)))
    });
    g.bench_function("sotto PQXDH without one-time prekey", |bench| {
        bench.iter(|| black_box(sotto_setup(&alice, &bob, false, &mut rng)))
    });
    g.bench_function("olm", |bench| {
        bench.iter(|| black_box(olm_setup(&olm_alice, &mut olm_bob)))
    });
    // Shares of our setup: the bundle's two signature checks, and the post-quantum step (one
    // encapsulation and one decapsulation).
    let bundle = PreKeyBundle {
        identity_key: bob.identity.public(),
        signed_prekey: bob.signed_prekey.public(),
        one_time_prekey: None,
        kem_prekey: bob.kem_prekey.public(),
    };
    g.bench_function("bundle verification (part of sotto setup)", |bench| {
        bench.iter(|| black_box(bundle.verify().unwrap()))
    });
    let (dk, ek) = ml_kem::MlKem768::generate(&mut rng);
    g.bench_function("ML-KEM-768 encaps+decaps (part of sotto setup)", |bench| {
        bench.iter(|| {
            let (ct, _ss) = ek.encapsulate(&mut rng).unwrap();
            black_box(dk.decapsulate(&ct).unwrap())
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
            "paired best-of: {name:<40} sotto {ours:>8.2} us   olm {olm:>8.2} us   ratio {:.2} (target <= {target})",
            ours / olm
        );
    };

    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let alice = Device::new("alice", &mut rng);
    let bob = Device::new("bob", &mut rng);
    let olm_alice = Account::new();
    let mut olm_bob = Account::new();
    let (mut a, mut b) = sotto_setup(&alice, &bob, true, &mut rng);
    sotto_send(&mut b, &mut a, &mut rng);
    let (mut oa, mut ob) = olm_setup(&olm_alice, &mut olm_bob);
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
    let r = best(
        30,
        5,
        || {
            black_box(sotto_setup(&alice, &bob, true, &mut rng2));
        },
        || {
            black_box(olm_setup(&olm_alice, &mut olm_bob));
        },
    );
    report("setup + first message (PQXDH, with OPK)", r, 1.3);
    let r = best(
        30,
        5,
        || {
            black_box(sotto_setup(&alice, &bob, false, &mut rng2));
        },
        || {
            black_box(olm_setup(&olm_alice, &mut olm_bob));
        },
    );
    report("setup + first message (PQXDH, no OPK)", r, 1.3);
}

criterion_group!(benches, session);

fn main() {
    benches();
    paired_ratios();
    Criterion::default().configure_from_args().final_summary();
}
