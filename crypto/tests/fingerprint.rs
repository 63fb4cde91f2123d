//! Safety numbers: symmetry, sensitivity to identity changes, QR comparison, vectors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::fingerprint::{QrCompareError, SafetyNumber, QR_PAYLOAD_LEN};
use sotto_crypto::keys::{IdentityKey, IdentityKeyPair};

fn identity(seed: u64) -> IdentityKey {
    IdentityKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed)).public()
}

#[test]
fn both_sides_see_the_same_number_and_payload() {
    let (a, b) = (identity(1), identity(2));
    let on_a = SafetyNumber::new("alice", &a, "bob", &b);
    let on_b = SafetyNumber::new("bob", &b, "alice", &a);
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.digits(), on_b.digits());
    assert_eq!(on_a.digits().len(), 60);
    assert!(on_a.digits().bytes().all(|c| c.is_ascii_digit()));
    let shown = on_a.display();
    assert_eq!(shown.split(' ').count(), 12);
    assert_eq!(shown.replace(' ', ""), on_a.digits());
    assert_eq!(on_a.qr_payload(), on_b.qr_payload());
    assert_eq!(on_a.qr_payload().len(), QR_PAYLOAD_LEN);
    assert!(on_a.matches_qr(&on_b.qr_payload()).unwrap());
    assert!(on_b.matches_qr(&on_a.qr_payload()).unwrap());
}

#[test]
fn changes_when_an_identity_or_id_changes() {
    let (a, b, mallory) = (identity(1), identity(2), identity(3));
    let real = SafetyNumber::new("alice", &a, "bob", &b);
    let substituted = SafetyNumber::new("alice", &a, "bob", &mallory);
    let renamed = SafetyNumber::new("alice", &a, "bob2", &b);
    let swapped_ids = SafetyNumber::new("alice", &b, "bob", &a);
    for other in [&substituted, &renamed, &swapped_ids] {
        assert_ne!(real.digits(), other.digits());
        // Each party's half changes independently: the unchanged party's 30 digits stay.
        assert!(!real.matches_qr(&other.qr_payload()).unwrap());
        assert!(!other.matches_qr(&real.qr_payload()).unwrap());
    }
    let halves = |s: &SafetyNumber| [s.digits()[..30].to_string(), s.digits()[30..].to_string()];
    let common: Vec<_> = halves(&real)
        .into_iter()
        .filter(|h| halves(&substituted).contains(h))
        .collect();
    assert_eq!(common.len(), 1, "alice's half is shared, bob's changed");
}

#[test]
fn qr_comparison_rejects_malformed_and_flipped_payloads() {
    let s = SafetyNumber::new("alice", &identity(1), "bob", &identity(2));
    let qr = s.qr_payload();
    for i in 0..qr.len() {
        for bit in 0..8 {
            let mut bad = qr.clone();
            bad[i] ^= 1 << bit;
            assert!(!matches!(s.matches_qr(&bad), Ok(true)), "flip {i}.{bit}");
        }
    }
    assert!(matches!(
        s.matches_qr(&qr[..qr.len() - 1]),
        Err(QrCompareError::Unreadable(_))
    ));
    assert!(matches!(
        s.matches_qr(&[qr.clone(), vec![0]].concat()),
        Err(QrCompareError::Unreadable(_))
    ));
    assert!(s.matches_qr(&[]).is_err());
    let mut v2 = qr.clone();
    v2[0] = 2;
    assert!(s.matches_qr(&v2).is_err());
}

/// Known-answer vectors: `crypto/vectors/fingerprint.json`, regenerated with
/// `SOTTO_REGENERATE_VECTORS=1 cargo test -p sotto-crypto --test fingerprint`.
mod vectors {
    use super::*;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha512};

    const VECTORS: &str = "fingerprint.json";
    const CASES: [(u64, &str, u64, &str); 3] = [
        (1, "alice", 2, "bob"),
        (
            10,
            "7d1c2b0e-6a4f-4a8e-9c55-1f0b8f3e2a91",
            11,
            "0b6f0a33-2c1d-4e77-8d2e-3a9e5b7c1d04",
        ),
        (20, "same-key", 20, "same-key-other-id"),
    ];

    /// An identity key built from its documented encoding (`0x10 | Ed25519 | X25519`), from seeds
    /// drawn from `ChaCha20Rng::seed_from_u64(seed)`, so the vectors do not depend on how key
    /// generation consumes randomness.
    fn vector_identity(seed: u64) -> IdentityKey {
        use rand_chacha::rand_core::RngCore;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (mut ed_seed, mut x_seed) = ([0u8; 32], [0u8; 32]);
        rng.fill_bytes(&mut ed_seed);
        rng.fill_bytes(&mut x_seed);
        let ed = ed25519_dalek::SigningKey::from_bytes(&ed_seed).verifying_key();
        let x = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(x_seed));
        IdentityKey::from_bytes(&[&[0x10][..], ed.as_bytes(), x.as_bytes()].concat()).unwrap()
    }

    fn generate() -> Value {
        let cases: Vec<Value> = CASES
            .iter()
            .map(|&(ls, lid, rs, rid)| {
                let (l, r) = (vector_identity(ls), vector_identity(rs));
                let s = SafetyNumber::new(lid, &l, rid, &r);
                json!({
                    "local_id": lid,
                    "local_identity_key": hex::encode(l.to_bytes()),
                    "remote_id": rid,
                    "remote_identity_key": hex::encode(r.to_bytes()),
                    "safety_number": s.digits(),
                    "qr_payload": hex::encode(s.qr_payload()),
                })
            })
            .collect();
        json!({
            "description": "Safety numbers v1 (docs/protocol/safety-numbers.md). Identity keys (0x10 | Ed25519 | X25519) from 32-byte Ed25519 and X25519 secret seeds drawn in that order from ChaCha20Rng::seed_from_u64(n).",
            "iterations": 5200,
            "cases": cases,
        })
    }

    #[test]
    fn vectors_match_the_committed_file() {
        common::check_committed_vectors(VECTORS, &generate());
    }

    /// Recomputes every committed case from the specification with SHA-512 alone.
    #[test]
    fn vectors_follow_the_specification() {
        let v: Value = common::load_vectors(VECTORS);
        let party = |id: &str, key_hex: &str| -> [u8; 64] {
            let key = hex::decode(key_hex).unwrap();
            let mut first = b"Sotto v1 SafetyNumber".to_vec();
            first.extend_from_slice(&1u16.to_be_bytes());
            first.extend_from_slice(&(key.len() as u32).to_be_bytes());
            first.extend_from_slice(&key);
            first.extend_from_slice(&(id.len() as u32).to_be_bytes());
            first.extend_from_slice(id.as_bytes());
            let mut h: [u8; 64] = Sha512::digest(&first).into();
            for _ in 0..5200 {
                h = Sha512::digest([&h[..], &key].concat()).into();
            }
            h
        };
        let digits = |h: &[u8; 64]| -> String {
            (0..6)
                .map(|i| {
                    let mut n = 0u64;
                    for b in &h[i * 5..i * 5 + 5] {
                        n = n << 8 | u64::from(*b);
                    }
                    format!("{:05}", n % 100_000)
                })
                .collect()
        };
        for case in v["cases"].as_array().unwrap() {
            let s = |k: &str| case[k].as_str().unwrap();
            let mut parties = [
                party(s("local_id"), s("local_identity_key")),
                party(s("remote_id"), s("remote_identity_key")),
            ];
            parties.sort_by(|a, b| a[..32].cmp(&b[..32]));
            assert_eq!(
                digits(&parties[0]) + &digits(&parties[1]),
                s("safety_number")
            );
            let qr = [&[1u8, 0x40][..], &parties[0][..32], &parties[1][..32]].concat();
            assert_eq!(hex::encode(qr), s("qr_payload"));
            // And the crate agrees when given the committed keys.
            let key = |k: &str| IdentityKey::from_bytes(&hex::decode(s(k)).unwrap()).unwrap();
            let number = SafetyNumber::new(
                s("local_id"),
                &key("local_identity_key"),
                s("remote_id"),
                &key("remote_identity_key"),
            );
            assert_eq!(number.digits(), s("safety_number"));
        }
    }
}
