//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the same decoding
//! entry points the fuzz targets use (`fuzz/src/targets.rs`), so CI exercises them on stable.
//!
//! The seed corpus is regenerated with `SOTTO_REGENERATE_CORPUS=1 cargo test -p sotto-crypto --test
//! fuzz_corpus`: valid encodings from the committed known-answer vectors, plus their truncations and
//! extensions. Files a fuzzer adds beside them are replayed too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(dead_code)]

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn vectors(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every string field named `field` anywhere in `v`, hex-decoded.
fn hex_fields(v: &Value, field: &str, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == field {
                    if let Some(bytes) = x.as_str().and_then(|s| hex::decode(s).ok()) {
                        if !bytes.is_empty() {
                            out.push(bytes);
                        }
                    }
                }
                hex_fields(x, field, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| hex_fields(x, field, out)),
        _ => {}
    }
}

/// Valid inputs per target, taken from the committed vectors.
fn valid_seeds() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut seeds: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let sk = vectors("sender_key.json");
    let unhex = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    seeds.insert(
        "sender_key_message",
        sk["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| unhex(&m["message"]))
            .collect(),
    );
    // A message the fixed sender of the targets really sent, so the fuzzer starts past the signature.
    let mut fixed = targets::fixed_sender();
    seeds.get_mut("sender_key_message").unwrap().extend([
        fixed.encrypt(b"fuzz").unwrap().to_bytes(),
        fixed.encrypt(b"").unwrap().to_bytes(),
    ]);
    seeds.insert("sender_key_distribution", vec![unhex(&sk["distribution"])]);
    seeds.insert(
        "sender_key_state",
        vec![
            unhex(&sk["sender_state_at_0"]),
            unhex(&sk["sender_state_after"]),
        ],
    );
    seeds.insert(
        "sender_key_record",
        vec![unhex(&sk["record_after_0_and_2"])],
    );

    let att = vectors("attachment.json");
    let mut blobs = Vec::new();
    hex_fields(&att, "blob", &mut blobs);
    // The target's first byte picks the push size; the key is 0x33.. so these blobs fail
    // authentication but exercise the header and chunk framing.
    seeds.insert(
        "attachment_decrypt",
        blobs
            .into_iter()
            .map(|b| [&[0u8][..], &b].concat())
            .collect(),
    );

    let fp = vectors("fingerprint.json");
    let mut qrs = Vec::new();
    qrs.push(targets::fixed_safety_number().qr_payload());
    hex_fields(&fp, "qr_payload", &mut qrs);
    seeds.insert("safety_number_qr", qrs);

    let session = vectors("session.json");
    for (target, fields) in [
        ("identity_key", &["identity_key"][..]),
        ("identity_key_pair", &["identity_key_pair"]),
        ("signed_prekey", &["signed_prekey"]),
        ("one_time_prekey", &["one_time_prekey"]),
        ("kem_prekey", &["kem_prekey"]),
        ("device_address", &["address"]),
        ("session_record", &["alice_record", "bob_record"]),
        ("incoming_message", &["message"]),
    ] {
        let mut found = Vec::new();
        for f in fields {
            hex_fields(&session, f, &mut found);
        }
        seeds.insert(target, found);
    }
    // Prekey bundles, framed as the `prekey_bundle` target reads them.
    let mut bundles = Vec::new();
    for case in session["cases"].as_array().unwrap() {
        let b = &case["bundle"];
        let h = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
        let id = |v: &Value| v["key_id"].as_u64().unwrap() as u32;
        let one_time = b["one_time_prekey"].as_object().map(|_| {
            (
                id(&b["one_time_prekey"]),
                h(&b["one_time_prekey"]["public_key"]),
            )
        });
        bundles.push(targets::prekey_bundle_input(
            &h(&b["identity_key"]),
            id(&b["signed_prekey"]),
            &h(&b["signed_prekey"]["public_key"]),
            &h(&b["signed_prekey"]["signature"]),
            one_time.as_ref().map(|(i, k)| (*i, &k[..])),
            id(&b["kem_prekey"]),
            &h(&b["kem_prekey"]["public_key"]),
            &h(&b["kem_prekey"]["signature"]),
        ));
    }
    seeds.insert("prekey_bundle", bundles);
    let messages = seeds["incoming_message"].clone();
    // Prekey messages are version 1, type 2; ratchet messages version 1, type 1.
    seeds.insert(
        "prekey_message",
        messages
            .iter()
            .filter(|m| m.get(1) == Some(&2))
            .cloned()
            .collect(),
    );
    seeds.insert(
        "ratchet_message",
        messages
            .iter()
            .filter(|m| m.get(1) == Some(&1))
            .cloned()
            .collect(),
    );
    seeds
}

fn regenerate() {
    for (target, valid) in valid_seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        if dir.exists() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        // Keep the corpus small: at most three valid inputs per target, each with a truncation and
        // an extension.
        for (i, v) in valid.iter().take(3).enumerate() {
            std::fs::write(dir.join(format!("seed-{i}-valid")), v).unwrap();
            std::fs::write(dir.join(format!("seed-{i}-truncated")), &v[..v.len() / 2]).unwrap();
            std::fs::write(
                dir.join(format!("seed-{i}-extended")),
                [&v[..], &[0]].concat(),
            )
            .unwrap();
        }
        std::fs::write(dir.join("seed-empty"), b"").unwrap();
    }
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    if std::env::var_os("SOTTO_REGENERATE_CORPUS").is_some() {
        regenerate();
    }
    let seeds = valid_seeds();
    for (name, _) in targets::TARGETS {
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "no fuzz_targets/{name}.rs"
        );
        let dir = fuzz_dir().join("corpus").join(name);
        let files = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .count();
        assert!(files > 1, "corpus/{name} is empty");
        assert!(!seeds[name].is_empty(), "no valid seed for {name}");
    }
}

#[test]
fn replay_every_corpus_file() {
    let mut replayed = 0;
    for (name, run) in targets::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                run(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0);
}

/// The valid seeds really are accepted by their decoders (so the corpus reaches past the framing).
#[test]
fn valid_seeds_decode() {
    use sotto_crypto::sender_key::*;
    let seeds = valid_seeds();
    for m in &seeds["sender_key_message"] {
        SenderKeyMessage::from_bytes(m).unwrap();
    }
    for s in &seeds["sender_key_state"] {
        SenderKeyState::from_bytes(s).unwrap();
    }
    SenderKeyRecord::from_bytes(&seeds["sender_key_record"][0]).unwrap();
    SenderKeyDistributionMessage::from_bytes(&seeds["sender_key_distribution"][0]).unwrap();
    for m in &seeds["incoming_message"] {
        sotto_crypto::session::IncomingMessage::from_bytes(m).unwrap();
    }
    for b in &seeds["prekey_bundle"] {
        assert!(targets::prekey_bundle_verifies(b));
    }
    for k in &seeds["identity_key"] {
        sotto_crypto::keys::IdentityKey::from_bytes(k).unwrap();
    }
}
