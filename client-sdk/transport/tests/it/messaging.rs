//! Register, log in, upload keys, fetch a bundle, send, receive over the WebSocket, ack.

use std::time::Duration;

use sotto_transport::{Connection, ConnectionConfig, ConnectionEvent, ConnectionState};
use sotto_wire::{EnvelopeKind, ServerFrame};

use crate::common::{device, keys_upload, send_request, Relay};

/// The next frame, skipping state events; fails after 10 s.
pub async fn next_frame(conn: &mut Connection) -> ServerFrame {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), conn.next_event())
            .await
            .expect("no event within 10 s")
            .expect("connection task ended");
        if let ConnectionEvent::Frame(frame) = event {
            return frame;
        }
    }
}

#[tokio::test]
async fn register_keys_bundle_send_receive_ack() {
    let relay = Relay::start().await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    assert_eq!(bob.device_id, 1);

    bob.client.upload_keys(&keys_upload(1, 3)).await.unwrap();
    let counts = bob.client.key_counts().await.unwrap();
    assert_eq!((counts.count, counts.kem_count), (3, 3));

    let bundles = alice.client.fetch_bundles(&bob.user_id).await.unwrap();
    assert_eq!(bundles.user_id, bob.user_id);
    assert_eq!(bundles.devices.len(), 1);
    let bundle = &bundles.devices[0];
    assert_eq!(bundle.registration_id, bob.registration_id);
    assert!(bundle.pre_key.is_some());
    let one = alice
        .client
        .fetch_bundle(&bob.user_id, bob.device_id)
        .await
        .unwrap();
    assert_eq!(one.devices.len(), 1);
    // Two fetches claimed two one-time keys.
    assert_eq!(bob.client.key_counts().await.unwrap().count, 1);

    // Queued before Bob connects: arrives as backlog, then queueEmpty.
    let sent = alice
        .client
        .send_message(&send_request(&bob, "m-1", b"ciphertext one"))
        .await
        .unwrap();
    assert!(!sent.duplicate);
    let again = alice
        .client
        .send_message(&send_request(&bob, "m-1", b"ciphertext one"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.server_message_id, sent.server_message_id);
    assert_eq!(bob.client.unread().await.unwrap().count, 1);
    let page = bob.client.fetch_envelopes(None, Some(10)).await.unwrap();
    assert_eq!(page.envelopes.len(), 1);

    let mut ws = Connection::open(&bob.client, ConnectionConfig::default());
    let first = match next_frame(&mut ws).await {
        ServerFrame::Envelope(e) => e,
        other => panic!("expected an envelope, got {other:?}"),
    };
    assert_eq!(ws.state(), ConnectionState::Connected);
    assert_eq!(first.kind, EnvelopeKind::Message);
    assert_eq!(first.source_user_id, alice.user_id);
    assert_eq!(first.client_message_id, "m-1");
    assert_eq!(
        first.content.as_ref().unwrap().as_bytes(),
        b"ciphertext one"
    );
    assert_eq!(next_frame(&mut ws).await, ServerFrame::QueueEmpty);

    // Pushed live once connected.
    alice
        .client
        .send_message(&send_request(&bob, "m-2", b"ciphertext two"))
        .await
        .unwrap();
    let second = match next_frame(&mut ws).await {
        ServerFrame::Envelope(e) => e,
        other => panic!("expected an envelope, got {other:?}"),
    };
    assert_eq!(second.content.unwrap().as_bytes(), b"ciphertext two");
    assert!(second.seq > first.seq);

    ws.ack(&[first.seq, second.seq]).await.unwrap();
    // The ack is applied asynchronously; the mailbox empties.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bob.client.unread().await.unwrap().count != 0 {
        assert!(tokio::time::Instant::now() < deadline, "acks not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alice gets a delivery receipt per acked message; she acks one of them over REST.
    let receipts = alice.client.fetch_envelopes(None, None).await.unwrap();
    assert_eq!(receipts.envelopes.len(), 2);
    assert!(receipts
        .envelopes
        .iter()
        .all(|e| e.kind == EnvelopeKind::DeliveryReceipt && e.source_user_id == bob.user_id));
    alice.client.ack(receipts.envelopes[0].seq).await.unwrap();
    assert_eq!(alice.client.unread().await.unwrap().count, 1);

    // Application ping answered by the relay.
    ws.send(sotto_wire::ClientFrame::Ping).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, ServerFrame::Pong);
    ws.close().await;
}
