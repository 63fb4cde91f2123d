//! The IndexedDB store in a real headless Chromium (`wasm-bindgen-test-runner` with
//! ChromeDriver): the backend conformance suite every store backend passes, and the encrypted
//! store over it (reopened from IndexedDB, wrong passphrase refused, no plaintext in the rows).
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not see them as such.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use sotto_store::{
    Backend, EncryptedStore, PassphraseParams, RangeQuery, StoreError, StoreKey, Zeroizing,
};
use sotto_web::idb::IndexedDbBackend;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const FAST: PassphraseParams = PassphraseParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn fresh_name(what: &str) -> String {
    format!("sotto-test-{what}-{}", js_sys::Math::random().to_bits())
}

fn passphrase(p: &str) -> StoreKey {
    StoreKey::Passphrase(Zeroizing::new(p.to_owned()))
}

#[wasm_bindgen_test]
async fn indexeddb_backend_passes_the_conformance_suite() {
    let name = fresh_name("conformance");
    let backend = IndexedDbBackend::open(&name).await.unwrap();
    sotto_store::backend::conformance::run(&backend).await;
    drop(backend);
    IndexedDbBackend::delete(&name).await.unwrap();
}

#[wasm_bindgen_test]
async fn the_encrypted_store_survives_a_reopen_and_keeps_no_plaintext() {
    let name = fresh_name("encrypted");
    {
        let backend: Arc<dyn Backend> = Arc::new(IndexedDbBackend::open(&name).await.unwrap());
        let store = EncryptedStore::open_with_params(
            backend,
            passphrase("right"),
            FAST,
            &mut rand_core::OsRng,
        )
        .await
        .unwrap();
        let mut tx = store.transaction();
        for i in 1..=30u64 {
            tx.put(
                "messages",
                b"d:bob",
                i,
                format!("secret message {i}").as_bytes(),
            );
        }
        tx.put("contacts", b"bob", 0, b"Bob Example");
        store.commit(tx).await.unwrap();
    }
    // A new connection to the same database: what a page reload sees.
    let backend = Arc::new(IndexedDbBackend::open(&name).await.unwrap());
    let store = EncryptedStore::open_with_params(
        backend.clone(),
        passphrase("right"),
        FAST,
        &mut rand_core::OsRng,
    )
    .await
    .unwrap();
    let newest = store
        .range("messages", b"d:bob", RangeQuery::descending(5).before(30))
        .await
        .unwrap();
    let texts: Vec<String> = newest
        .iter()
        .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "secret message 29",
            "secret message 28",
            "secret message 27",
            "secret message 26",
            "secret message 25"
        ]
    );

    // The rows as IndexedDB holds them: hashed partitions, sealed values.
    for table in ["messages", "contacts"] {
        for (partition, _, value) in backend.scan_table(table).await.unwrap() {
            assert_ne!(partition, b"d:bob");
            assert_ne!(partition, b"bob");
            let v = String::from_utf8_lossy(&value);
            assert!(
                !v.contains("secret") && !v.contains("Bob"),
                "plaintext in IndexedDB"
            );
        }
    }
    let wrong =
        EncryptedStore::open_with_params(backend, passphrase("wrong"), FAST, &mut rand_core::OsRng)
            .await;
    assert!(matches!(wrong, Err(StoreError::WrongKey)));
    drop(store);
    IndexedDbBackend::delete(&name).await.unwrap();
}
