//! The web build's core paths under Node (`wasm-bindgen-test-runner`, no browser): the crypto,
//! the sans-IO core and the encrypted store compiled to wasm32, and the JS API's error shapes.
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not see them as such.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use js_sys::Reflect;
use sotto_client_core::{Client, Config, NewAccount, RelayCall};
use sotto_store::memory::MemoryBackend;
use sotto_store::{EncryptedStore, PassphraseParams, RangeQuery, StoreError, StoreKey, Zeroizing};
use sotto_web::SottoClient;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

const FAST: PassphraseParams = PassphraseParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn passphrase(p: &str) -> StoreKey {
    StoreKey::Passphrase(Zeroizing::new(p.to_owned()))
}

#[wasm_bindgen_test]
async fn the_store_cipher_seals_and_refuses_a_wrong_passphrase() {
    let backend = Arc::new(MemoryBackend::new());
    let store = EncryptedStore::open_with_params(
        backend.clone(),
        passphrase("right"),
        FAST,
        &mut rand_core::OsRng,
    )
    .await
    .unwrap();
    let mut tx = store.transaction();
    tx.put("messages", b"conversation", 7, b"a secret message");
    store.commit(tx).await.unwrap();
    let rows = store
        .range("messages", b"conversation", RangeQuery::ascending(10))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.as_slice(), b"a secret message");

    let again = EncryptedStore::open_with_params(
        backend.clone(),
        passphrase("right"),
        FAST,
        &mut rand_core::OsRng,
    )
    .await
    .unwrap();
    assert_eq!(
        again
            .get("messages", b"conversation", 7)
            .await
            .unwrap()
            .as_deref()
            .map(|v| v.as_slice()),
        Some(&b"a secret message"[..])
    );
    let wrong =
        EncryptedStore::open_with_params(backend, passphrase("wrong"), FAST, &mut rand_core::OsRng)
            .await;
    assert!(matches!(wrong, Err(StoreError::WrongKey)));
}

#[wasm_bindgen_test]
fn the_core_creates_an_account_and_asks_for_its_prekey_upload() {
    let mut alice = Client::create(
        NewAccount {
            user_id: "alice".into(),
            device_id: 1,
            registration_id: 7,
            identity: None,
        },
        Config::default(),
        1_764_000_000_000,
        [1; 32],
    )
    .unwrap();
    let upload = alice.poll_request().unwrap();
    assert!(matches!(upload.call, RelayCall::UploadKeys(_)));
    alice.send_text(1_764_000_000_001, "bob", "hi Bob").unwrap();
    assert!(std::iter::from_fn(|| alice.poll_request()).any(
        |r| matches!(r.call, RelayCall::FetchBundles { ref user_id, .. } if user_id == "bob")
    ));
    assert!(!alice.take_writes().is_empty());
}

async fn rejection(p: js_sys::Promise) -> String {
    let e = JsFuture::from(p).await.expect_err("the call must fail");
    assert_eq!(
        Reflect::get(&e, &"name".into())
            .unwrap()
            .as_string()
            .as_deref(),
        Some("SottoError")
    );
    Reflect::get(&e, &"code".into())
        .unwrap()
        .as_string()
        .unwrap()
}

fn login_options(server_url: &str, passphrase: &str) -> JsValue {
    let text = serde_json::json!({
        "serverUrl": server_url, "username": "alice", "password": "password1",
        "store": {"memory": true, "passphrase": passphrase, "insecureFastKdf": true},
    })
    .to_string();
    js_sys::JSON::parse(&text).unwrap()
}

#[wasm_bindgen_test]
async fn bad_arguments_are_typed_errors() {
    assert_eq!(
        rejection(SottoClient::register(
            "ftp://relay".into(),
            "a".into(),
            "b".into(),
            "c".into()
        ))
        .await,
        "invalidUrl"
    );
    assert_eq!(
        rejection(SottoClient::login(login_options("not a url", "pw"))).await,
        "invalidUrl"
    );
    assert_eq!(
        rejection(SottoClient::login(login_options("http://127.0.0.1:9", ""))).await,
        "invalidArgument"
    );
    assert_eq!(
        rejection(SottoClient::login(JsValue::from_str("no object"))).await,
        "invalidArgument"
    );
    let unknown_field =
        js_sys::JSON::parse(r#"{"store": {"passphrase": "x"}, "extra": 1}"#).unwrap();
    assert_eq!(
        rejection(SottoClient::open(unknown_field)).await,
        "invalidArgument"
    );
    // Nothing listens on port 9: the relay is unreachable, and nothing was created.
    assert_eq!(
        rejection(SottoClient::login(login_options(
            "http://127.0.0.1:9",
            "pw"
        )))
        .await,
        "unreachable"
    );
}
