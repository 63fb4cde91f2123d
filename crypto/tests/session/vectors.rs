//! Known-answer vectors for session setup and ratchet steps: `crypto/vectors/session.json`.
//!
//! Every random value the protocol draws is listed, in order, under `rng_draws` of the step that
//! drew it, so another implementation can replay a case without our RNG. Set
//! `SOTTO_REGENERATE_VECTORS=1` to rewrite the file after an intended format change.

use super::harness::*;
use rand_chacha::rand_core::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};
use sotto_crypto::keys::{
    IdentityKeyPair, KemPreKey, KemPreKeyPublic, OneTimePreKeyPublic, SignedPreKeyPublic,
};
use sotto_crypto::session::{IncomingMessage, SessionRecord};

/// An RNG that records what it hands out.
struct RecordingRng {
    inner: ChaCha20Rng,
    draws: Vec<String>,
}

impl RecordingRng {
    fn new(seed: [u8; 32]) -> Self {
        Self {
            inner: ChaCha20Rng::from_seed(seed),
            draws: Vec::new(),
        }
    }

    fn take(&mut self) -> Value {
        json!(std::mem::take(&mut self.draws))
    }
}

impl RngCore for RecordingRng {
    fn next_u32(&mut self) -> u32 {
        let v = self.inner.next_u32();
        self.draws.push(hex::encode(v.to_le_bytes()));
        v
    }
    fn next_u64(&mut self) -> u64 {
        let v = self.inner.next_u64();
        self.draws.push(hex::encode(v.to_le_bytes()));
        v
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest);
        self.draws.push(hex::encode(&*dest));
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for RecordingRng {}

fn spk_json(k: &SignedPreKeyPublic) -> Value {
    json!({"key_id": k.key_id(), "public_key": hex::encode(k.public_key()), "signature": hex::encode(k.signature())})
}
fn otk_json(k: &OneTimePreKeyPublic) -> Value {
    json!({"key_id": k.key_id(), "public_key": hex::encode(k.public_key())})
}
fn kem_json(k: &KemPreKeyPublic) -> Value {
    json!({"key_id": k.key_id(), "public_key": hex::encode(k.public_key()), "signature": hex::encode(k.signature())})
}

fn case(name: &str, seed: u8, one_time: bool, kem_one_time: bool) -> Value {
    let mut keygen = rng(seed);
    let alice = Device::new("alice", 1, &mut keygen);
    let mut bob = Device::new("bob", 2, &mut keygen);
    let bundle = bob.bundle(one_time, kem_one_time);
    let kem_used: &KemPreKey = if kem_one_time {
        &bob.kem_one_time[0]
    } else {
        &bob.kem_last_resort
    };
    let mut fixed = json!({
        "alice": {
            "address": hex::encode(alice.address.to_bytes()),
            "identity_key_pair": hex::encode(&*alice.identity.to_bytes()),
            "identity_key": hex::encode(alice.identity.public().to_bytes()),
        },
        "bob": {
            "address": hex::encode(bob.address.to_bytes()),
            "identity_key_pair": hex::encode(&*bob.identity.to_bytes()),
            "identity_key": hex::encode(bob.identity.public().to_bytes()),
            "signed_prekey": hex::encode(&*bob.signed_prekey.to_bytes()),
            "one_time_prekey": if one_time { json!(hex::encode(&*bob.one_time[0].to_bytes())) } else { Value::Null },
            "kem_prekey": hex::encode(&*kem_used.to_bytes()),
        },
        "bundle": {
            "identity_key": hex::encode(bundle.identity_key.to_bytes()),
            "signed_prekey": spk_json(&bundle.signed_prekey),
            "one_time_prekey": bundle.one_time_prekey.as_ref().map(otk_json),
            "kem_prekey": kem_json(&bundle.kem_prekey),
        },
    });

    let mut r = RecordingRng::new([seed.wrapping_add(100); 32]);
    let mut alice = alice;
    let mut a = SessionRecord::new();
    let mut b = SessionRecord::new();
    let mut steps = Vec::new();

    a.initiate(
        &alice.identity,
        &alice.address,
        &bob.address,
        &bundle.verify().unwrap(),
        IdentityTrust::FirstUse,
        NOW,
        &mut r,
    )
    .unwrap();
    steps.push(json!({"op": "alice_initiate", "now": NOW.0, "rng_draws": r.take()}));

    let send = |from_alice: bool,
                pt: &[u8],
                a: &mut SessionRecord,
                b: &mut SessionRecord,
                r: &mut RecordingRng,
                steps: &mut Vec<Value>| {
        let m = if from_alice {
            a.encrypt(pt, NOW, r)
        } else {
            b.encrypt(pt, NOW, r)
        }
        .unwrap();
        steps.push(json!({
            "op": if from_alice { "alice_encrypt" } else { "bob_encrypt" },
            "plaintext": hex::encode(pt),
            "rng_draws": r.take(),
            "message": hex::encode(&m),
        }));
        m
    };
    let recv = |to_bob: bool, m: &[u8], steps: &mut Vec<Value>, pt: Vec<u8>| {
        let kind = match IncomingMessage::from_bytes(m).unwrap() {
            IncomingMessage::PreKey(_) => "prekey",
            IncomingMessage::Ratchet(_) => "ratchet",
        };
        steps.push(json!({
            "op": if to_bob { "bob_decrypt" } else { "alice_decrypt" },
            "message_type": kind,
            "message": hex::encode(m),
            "plaintext": hex::encode(pt),
        }));
    };

    let m1 = send(
        true,
        b"Hello Bob, this is the first message.",
        &mut a,
        &mut b,
        &mut r,
        &mut steps,
    );
    let m2 = send(
        true,
        b"and a second one",
        &mut a,
        &mut b,
        &mut r,
        &mut steps,
    );
    // Delivered out of order: the second (also a pre-key message) sets up Bob's session.
    let aaddr = alice.address.clone();
    let baddr = bob.address.clone();
    let pt = bob.receive(&mut b, &aaddr, &m2).unwrap();
    recv(true, &m2, &mut steps, pt);
    let pt = bob.receive(&mut b, &aaddr, &m1).unwrap();
    recv(true, &m1, &mut steps, pt);
    let m3 = send(
        false,
        b"Hi Alice (DH ratchet step)",
        &mut a,
        &mut b,
        &mut r,
        &mut steps,
    );
    let pt = alice.receive(&mut a, &baddr, &m3).unwrap();
    recv(false, &m3, &mut steps, pt);
    let m4 = send(true, b"", &mut a, &mut b, &mut r, &mut steps);
    let m5 = send(true, &[0xa5; 100], &mut a, &mut b, &mut r, &mut steps);
    let pt = bob.receive(&mut b, &aaddr, &m5).unwrap();
    recv(true, &m5, &mut steps, pt);
    let pt = bob.receive(&mut b, &aaddr, &m4).unwrap();
    recv(true, &m4, &mut steps, pt);

    fixed["name"] = json!(name);
    fixed["steps"] = json!(steps);
    fixed["alice_record"] = json!(hex::encode(&*a.to_bytes()));
    fixed["bob_record"] = json!(hex::encode(&*b.to_bytes()));
    fixed
}

fn all_cases() -> Value {
    json!({
        "description": "Sotto 1:1 session known-answer vectors (docs/protocol.md). Hex strings throughout. Key and record encodings are the storage encodings of the keys module; rng_draws lists, in order, every random byte string the step drew (X25519 secrets and ML-KEM encapsulation messages are 32 bytes each).",
        "version": 1,
        "cases": [
            case("one-time X25519 and one-time ML-KEM prekeys", 1, true, true),
            case("no one-time X25519 prekey, last-resort ML-KEM prekey", 2, false, false),
        ],
    })
}

#[test]
fn session_vectors_match() {
    crate::common::check_committed_vectors("session.json", &all_cases());
}

/// An RNG that hands out recorded draws, in order.
struct ReplayRng(std::collections::VecDeque<Vec<u8>>);

impl ReplayRng {
    fn new(draws: &Value) -> Self {
        Self(
            draws
                .as_array()
                .unwrap()
                .iter()
                .map(|d| hex::decode(d.as_str().unwrap()).unwrap())
                .collect(),
        )
    }
}

impl RngCore for ReplayRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let d = self.0.pop_front().expect("a recorded draw");
        dest.copy_from_slice(&d);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for ReplayRng {}

#[test]
fn vectors_replay_from_the_file_alone() {
    // Re-run every step using only what the file holds: keys, bundle and recorded random draws.
    let stored = crate::common::load_vectors("session.json");
    let h = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    use sotto_crypto::address::DeviceAddress;
    use sotto_crypto::keys::{IdentityKey, OneTimePreKey, PreKeyBundle, SignedPreKey};
    for c in stored["cases"].as_array().unwrap() {
        let alice_identity =
            IdentityKeyPair::from_bytes(&h(&c["alice"]["identity_key_pair"])).unwrap();
        let bob_identity = IdentityKeyPair::from_bytes(&h(&c["bob"]["identity_key_pair"])).unwrap();
        let spk = SignedPreKey::from_bytes(&h(&c["bob"]["signed_prekey"])).unwrap();
        let otk = c["bob"]["one_time_prekey"]
            .as_str()
            .map(|s| OneTimePreKey::from_bytes(&hex::decode(s).unwrap()).unwrap());
        let kem = KemPreKey::from_bytes(&h(&c["bob"]["kem_prekey"])).unwrap();
        let bob_addr = DeviceAddress::from_bytes(&h(&c["bob"]["address"])).unwrap();
        let alice_addr = DeviceAddress::from_bytes(&h(&c["alice"]["address"])).unwrap();
        let bj = &c["bundle"];
        let bundle = PreKeyBundle {
            identity_key: IdentityKey::from_bytes(&h(&bj["identity_key"])).unwrap(),
            signed_prekey: SignedPreKeyPublic::new(
                bj["signed_prekey"]["key_id"].as_u64().unwrap() as u32,
                &h(&bj["signed_prekey"]["public_key"]),
                &h(&bj["signed_prekey"]["signature"]),
            )
            .unwrap(),
            one_time_prekey: bj["one_time_prekey"].as_object().map(|o| {
                OneTimePreKeyPublic::new(o["key_id"].as_u64().unwrap() as u32, &h(&o["public_key"]))
                    .unwrap()
            }),
            kem_prekey: KemPreKeyPublic::new(
                bj["kem_prekey"]["key_id"].as_u64().unwrap() as u32,
                &h(&bj["kem_prekey"]["public_key"]),
                &h(&bj["kem_prekey"]["signature"]),
            )
            .unwrap(),
        };
        assert_eq!(bundle.signed_prekey, spk.public());
        assert_eq!(bundle.kem_prekey, kem.public());
        let keys = sotto_crypto::pqxdh::ResponderKeys {
            identity: &bob_identity,
            signed_prekey: Some(&spk),
            one_time_prekey: otk.as_ref(),
            kem_prekey: Some(&kem),
        };
        let mut a = SessionRecord::new();
        let mut b = SessionRecord::new();
        for step in c["steps"].as_array().unwrap() {
            let op = step["op"].as_str().unwrap();
            match op {
                "alice_initiate" => {
                    a.initiate(
                        &alice_identity,
                        &alice_addr,
                        &bob_addr,
                        &bundle.verify().unwrap(),
                        IdentityTrust::FirstUse,
                        Timestamp(step["now"].as_u64().unwrap()),
                        &mut ReplayRng::new(&step["rng_draws"]),
                    )
                    .unwrap();
                }
                "alice_encrypt" | "bob_encrypt" => {
                    let record = if op == "alice_encrypt" {
                        &mut a
                    } else {
                        &mut b
                    };
                    let m = record
                        .encrypt(
                            &h(&step["plaintext"]),
                            NOW,
                            &mut ReplayRng::new(&step["rng_draws"]),
                        )
                        .unwrap();
                    assert_eq!(m, h(&step["message"]), "{op}");
                }
                "bob_decrypt" => {
                    let d = b
                        .decrypt_bytes(
                            &h(&step["message"]),
                            &keys,
                            &bob_addr,
                            &alice_addr,
                            IdentityTrust::FirstUse,
                            NOW,
                        )
                        .unwrap();
                    assert_eq!(d.plaintext, h(&step["plaintext"]));
                }
                "alice_decrypt" => {
                    let d = a
                        .decrypt_bytes(
                            &h(&step["message"]),
                            &keys,
                            &alice_addr,
                            &bob_addr,
                            IdentityTrust::FirstUse,
                            NOW,
                        )
                        .unwrap();
                    assert_eq!(d.plaintext, h(&step["plaintext"]));
                }
                other => panic!("unknown op {other}"),
            }
        }
        assert_eq!(*a.to_bytes(), h(&c["alice_record"]));
        assert_eq!(*b.to_bytes(), h(&c["bob_record"]));
    }
}
