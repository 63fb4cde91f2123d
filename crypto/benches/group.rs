//! Sender Keys vs vodozemac's Megolm, 1 KiB group messages, in the same run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::sender_key::{GroupId, SenderKeyMessage, SenderKeyRecord, SenderKeyState};
use vodozemac::megolm::{GroupSession, InboundGroupSession, MegolmMessage, SessionConfig};

const PLAINTEXT: [u8; 1024] = [0x5a; 1024];

/// A sender's state and a member's record that holds its distribution, and the RNG they came from.
fn sender_and_record(seed: u64) -> (ChaCha20Rng, SenderKeyState, SenderKeyRecord) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let id = GroupId::new(b"bench-group".to_vec()).unwrap();
    let sender = SenderKeyState::new(id.clone(), &mut rng);
    let mut record = SenderKeyRecord::new(id);
    record
        .process_distribution(&sender.distribution_message())
        .unwrap();
    (rng, sender, record)
}

fn sender_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("group 1 KiB");
    group.throughput(Throughput::Elements(1));

    let (mut rng, mut sender, mut record) = sender_and_record(1);

    group.bench_function("sotto sender key encrypt", |b| {
        let mut s = SenderKeyState::from_bytes(&sender.to_bytes()).unwrap();
        b.iter(|| black_box(s.encrypt(black_box(&PLAINTEXT)).unwrap().to_bytes()))
    });
    group.bench_function("sotto sender key encrypt+decrypt", |b| {
        b.iter(|| {
            let wire = sender.encrypt(black_box(&PLAINTEXT)).unwrap().to_bytes();
            let message = SenderKeyMessage::from_bytes(&wire).unwrap();
            black_box(record.decrypt(&message).unwrap())
        })
    });

    let mut outbound = GroupSession::new(SessionConfig::version_1());
    let mut inbound = InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());
    group.bench_function("vodozemac megolm encrypt", |b| {
        let mut o = GroupSession::new(SessionConfig::version_1());
        b.iter(|| black_box(o.encrypt(black_box(PLAINTEXT)).to_bytes()))
    });
    group.bench_function("vodozemac megolm encrypt+decrypt", |b| {
        b.iter(|| {
            let wire = outbound.encrypt(black_box(PLAINTEXT)).to_bytes();
            let message = MegolmMessage::from_bytes(&wire).unwrap();
            black_box(inbound.decrypt(&message).unwrap())
        })
    });

    // The operation both protocols spend most of their time in, measured alone: Ed25519 verification
    // (our ed25519-dalek 2 / curve25519-dalek 4 against vodozemac's ed25519-dalek 3 / curve25519-dalek 5).
    let dalek = ed25519_dalek::SigningKey::generate(&mut rng);
    let signature = ed25519_dalek::Signer::sign(&dalek, &[1u8; 32]);
    let verifying = dalek.verifying_key();
    group.bench_function("floor: ed25519-dalek 2 verify_strict", |b| {
        b.iter(|| {
            verifying
                .verify_strict(black_box(&[1u8; 32]), &signature)
                .unwrap()
        })
    });
    let vodo = vodozemac::Ed25519Keypair::new();
    let vodo_signature = vodo.sign(&[1u8; 32]);
    let vodo_public = vodo.public_key();
    group.bench_function("floor: vodozemac Ed25519 verify", |b| {
        b.iter(|| {
            vodo_public
                .verify(black_box(&[1u8; 32]), &vodo_signature)
                .unwrap()
        })
    });
    group.finish();
}

/// The machine these run on is often shared, and criterion measures one function after another, so
/// a load change between two functions skews their comparison. This alternates one Sotto and one
/// Megolm encrypt+decrypt at a time and prints the ratio of the medians, which both sides share the
/// same conditions for.
fn interleaved_ratio() {
    use std::time::Instant;
    let (_, mut sender, mut record) = sender_and_record(2);
    let mut outbound = GroupSession::new(SessionConfig::version_1());
    let mut inbound = InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());

    let rounds = 3000;
    let (mut ours, mut theirs) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        let start = Instant::now();
        let wire = sender.encrypt(black_box(&PLAINTEXT)).unwrap().to_bytes();
        black_box(
            record
                .decrypt(&SenderKeyMessage::from_bytes(&wire).unwrap())
                .unwrap(),
        );
        ours.push(start.elapsed());
        let start = Instant::now();
        let wire = outbound.encrypt(black_box(PLAINTEXT)).to_bytes();
        black_box(
            inbound
                .decrypt(&MegolmMessage::from_bytes(&wire).unwrap())
                .unwrap(),
        );
        theirs.push(start.elapsed());
    }
    ours.sort();
    theirs.sort();
    let (a, b) = (ours[rounds / 2], theirs[rounds / 2]);
    println!(
        "group 1 KiB encrypt+decrypt, interleaved medians over {rounds} rounds: sotto {a:?}, megolm {b:?}, ratio {:.2}",
        a.as_secs_f64() / b.as_secs_f64()
    );
}

criterion_group!(benches, sender_keys);

fn main() {
    benches();
    // Only under `cargo bench` (which passes `--bench`), not when `cargo test` smoke-runs benches.
    if std::env::args().any(|a| a == "--bench") {
        interleaved_ratio();
    }
    Criterion::default().configure_from_args().final_summary();
}
