//! Known-answer vectors for the store format (`docs/store-format.md`), in `tests/vectors.json`,
//! so another implementation (the web store) can check itself against the same bytes. The file
//! was cross-checked with an independent implementation (Python `cryptography`: AES-GCM-SIV,
//! HKDF, Argon2id; `hmac`). `SOTTO_WRITE_VECTORS=1` rewrites it from this implementation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rand_core::{CryptoRng, RngCore};
use serde_json::{json, Value};
use sotto_store::{PassphraseParams, StoreCipher};

/// Yields the given bytes, in order: the nonces and salts of the vectors.
struct Fixed(Vec<u8>);

impl RngCore for Fixed {
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
        assert!(self.0.len() >= dest.len(), "vector RNG exhausted");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Fixed {}

fn pattern(start: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| start.wrapping_add(i as u8)).collect()
}

fn compute() -> Value {
    let k_enc = pattern(0x00, 32);
    let k_mac = pattern(0x40, 32);
    let cipher = StoreCipher::generate(&mut Fixed([k_enc.clone(), k_mac.clone()].concat()));

    let hash_cases = [
        ("messages", b"conversation-1".to_vec()),
        ("contacts", vec![]),
        ("a", b"bc".to_vec()),
    ];
    let key_hash: Vec<Value> = hash_cases
        .iter()
        .map(|(table, key)| {
            json!({"table": table, "key": hex::encode(key), "hash": hex::encode(cipher.hash_key(table, key))})
        })
        .collect();

    // A row as the encrypted store writes it: key hash of the partition, AD key hash || u64be(sort).
    let partition = b"conversation-1";
    let sort: u64 = 0x0102_0304_0506_0708;
    let p = cipher.hash_key("messages", partition);
    let ad_key = [p.as_slice(), &sort.to_be_bytes()].concat();
    let nonce = pattern(0xA0, 12);
    let plaintext = b"hello, world";
    let sealed = cipher.seal("messages", &ad_key, plaintext, &mut Fixed(nonce.clone()));
    let empty_nonce = pattern(0xB0, 12);
    let sealed_empty = cipher.seal("t", b"", b"", &mut Fixed(empty_nonce.clone()));

    let app_key: [u8; 32] = pattern(0x80, 32).try_into().unwrap();
    let wrap_nonce = pattern(0xC0, 12);
    let wrapped_key = cipher.wrap_with_key(&app_key, &mut Fixed(wrap_nonce.clone()));

    let params = PassphraseParams {
        memory_kib: 64,
        iterations: 2,
        parallelism: 1,
    };
    let salt = pattern(0xD0, 16);
    let pw_nonce = pattern(0xE0, 12);
    let wrapped_pw = cipher
        .wrap_with_passphrase_params(
            "correct horse battery staple",
            params,
            &mut Fixed([salt.clone(), pw_nonce.clone()].concat()),
        )
        .unwrap();

    json!({
        "k_enc": hex::encode(&k_enc),
        "k_mac": hex::encode(&k_mac),
        "key_hash": key_hash,
        "row": {
            "table": "messages", "partition": hex::encode(partition), "sort": sort,
            "partition_hash": hex::encode(p), "nonce": hex::encode(&nonce),
            "plaintext": hex::encode(plaintext), "sealed": hex::encode(&sealed),
        },
        "seal_empty": {
            "table": "t", "key_hash": "", "nonce": hex::encode(&empty_nonce),
            "plaintext": "", "sealed": hex::encode(&sealed_empty),
        },
        "wrap_key": {
            "app_key": hex::encode(app_key), "nonce": hex::encode(&wrap_nonce),
            "blob": hex::encode(&wrapped_key),
        },
        "wrap_passphrase": {
            "passphrase": "correct horse battery staple",
            "memory_kib": params.memory_kib, "iterations": params.iterations, "parallelism": params.parallelism,
            "salt": hex::encode(&salt), "nonce": hex::encode(&pw_nonce),
            "blob": hex::encode(&wrapped_pw),
        },
    })
}

#[test]
fn store_format_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let computed = compute();
    if std::env::var_os("SOTTO_WRITE_VECTORS").is_some() {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&computed).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        computed, stored,
        "the store format changed; see docs/store-format.md"
    );

    // And the stored bytes open: the blobs unwrap to the vector keys, the row opens.
    let h = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    let app_key: [u8; 32] = h(&stored["wrap_key"]["app_key"]).try_into().unwrap();
    let from_key = StoreCipher::unwrap_with_key(&h(&stored["wrap_key"]["blob"]), &app_key).unwrap();
    let from_pw = StoreCipher::unwrap_with_passphrase(
        &h(&stored["wrap_passphrase"]["blob"]),
        "correct horse battery staple",
    )
    .unwrap();
    let row = &stored["row"];
    let sort = row["sort"].as_u64().unwrap();
    let ad_key = [h(&row["partition_hash"]), sort.to_be_bytes().to_vec()].concat();
    for cipher in [from_key, from_pw] {
        assert_eq!(
            cipher.hash_key("messages", &h(&row["partition"])).to_vec(),
            h(&row["partition_hash"])
        );
        let opened = cipher
            .open("messages", &ad_key, &h(&row["sealed"]))
            .unwrap();
        assert_eq!(opened.as_slice(), h(&row["plaintext"]));
    }
}
