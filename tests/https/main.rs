//! The SDK against a relay serving HTTPS and WSS with its operator's own CA: login, messages over
//! the WebSocket and an attachment streamed up and down, all over TLS.
//!
//! A test binary of its own: it points the platform's trust store (which both the SDK's HTTPS
//! calls and its WebSocket verify against) at the test CA with `SSL_CERT_FILE`, for the whole
//! process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
#[path = "../e2e/common.rs"]
mod common;

use sotto_client::{ClientEvent, Event};
use sotto_e2e::{Db, Relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_attachments_over_https_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", &cert);

    let relay = Relay::start_tls(Db::Sqlite, cert, key).await.unwrap();
    assert!(relay.url.starts_with("https://"));
    let alice = common::user(&relay, "alice").await;
    let mut bob = common::user(&relay, "bob").await;

    // A text: sent over HTTPS, pushed to Bob over WSS.
    alice
        .client
        .send_text(&bob.id(), "over TLS both ways")
        .await
        .unwrap();
    bob.wait_texts(1).await;
    assert_eq!(bob.texts(), ["over TLS both ways"]);

    // An attachment of a few megabytes, streamed up and down.
    let src = dir.path().join("photo.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    alice
        .client
        .send_attachment(&bob.id(), &src, "application/octet-stream")
        .await
        .unwrap();
    bob.wait(60, "attachment message", |ev| {
        ev.iter()
            .any(|e| matches!(e, ClientEvent::Event(Event::Message(m)) if m.attachment.is_some()))
    })
    .await;
    let pointer = bob
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Event(Event::Message(m)) => m.attachment.clone(),
            _ => None,
        })
        .unwrap();
    let dest = dir.path().join("received.bin");
    let n = bob
        .client
        .download_attachment(&pointer, &dest)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == data, "same bytes");
    alice.close().await;
    bob.close().await;
    relay.finish().await;
}
