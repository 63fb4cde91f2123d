//! A 20 MB attachment: encrypted while streamed up, downloaded, verified and decrypted while
//! streamed down; the relay's blob store holds no plaintext.

use sotto_client::{ClientEvent, Event};
use sotto_e2e::{contains_plaintext, Db};

use crate::both;
use crate::common::{relay, user};

async fn twenty_megabytes_round_trip(db: Db) {
    let relay = relay(db).await;
    let alice = user(&relay, "alice").await;
    let mut bob = user(&relay, "bob").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("report.bin");
    let marker = "SOTTO-ATTACHMENT-PLAINTEXT-MARKER";
    let mut data = Vec::with_capacity(20 << 20);
    let mut i = 0u64;
    while data.len() < 20 << 20 {
        data.extend_from_slice(format!("{marker} {i:012}\n").as_bytes());
        i += 1;
    }
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
    assert_eq!(pointer.size, data.len() as u64);
    assert_eq!(pointer.file_name, "report.bin");
    let dest = dir.path().join("received.bin");
    let n = bob
        .client
        .download_attachment(&pointer, &dest)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == data, "same bytes");
    // A wrong digest: refused, nothing left behind.
    let mut bad = pointer.clone();
    bad.digest = "00".repeat(32);
    let bad_dest = dir.path().join("bad.bin");
    assert!(bob
        .client
        .download_attachment(&bad, &bad_dest)
        .await
        .is_err());
    assert!(!bad_dest.exists());
    // The relay stored ciphertext only.
    let dump = relay.dump().await.unwrap();
    assert!(dump.len() > 20 << 20, "the blob is in the dump");
    assert!(!contains_plaintext(&dump, marker));
    alice.close().await;
    bob.close().await;
    relay.finish().await;
}
both!(twenty_megabytes_round_trip);
