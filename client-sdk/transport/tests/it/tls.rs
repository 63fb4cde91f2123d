//! HTTPS and WSS to a relay serving its own certificate: trusted through the extra CA only, and
//! refused (as unreachable) with the web roots alone.

use sotto_transport::{
    Connection, ConnectionConfig, ConnectionEvent, DisconnectReason, RelayClient, TransportError,
};
use sotto_wire::ServerFrame;

use crate::common::{device, send_request, Relay};
use crate::messaging::next_frame;

#[tokio::test]
async fn https_and_wss_with_an_extra_ca() {
    let relay = Relay::start_tls().await;
    assert!(relay.url.starts_with("https://"));
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    let mut ws = Connection::open(&bob.client, ConnectionConfig::default());
    assert_eq!(next_frame(&mut ws).await, ServerFrame::QueueEmpty);
    alice
        .client
        .send_message(&send_request(&bob, "tls-1", b"over tls"))
        .await
        .unwrap();
    match next_frame(&mut ws).await {
        ServerFrame::Envelope(e) => assert_eq!(e.content.unwrap().as_bytes(), b"over tls"),
        other => panic!("expected the envelope, got {other:?}"),
    }

    // Without the operator's CA the certificate is not trusted: nothing is sent.
    let untrusting = RelayClient::new(&relay.url).unwrap();
    assert!(matches!(
        untrusting.health().await,
        Err(TransportError::Unreachable)
    ));
    let mut refused = Connection::open(&untrusting.with_token("t"), ConnectionConfig::default());
    loop {
        match refused.next_event().await.unwrap() {
            ConnectionEvent::Disconnected { reason, .. } => {
                assert_eq!(reason, DisconnectReason::Unreachable);
                break;
            }
            ConnectionEvent::Connecting { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
