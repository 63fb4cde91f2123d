//! The WebSocket comes back by itself after the relay restarts, and stops for good when the
//! device is removed.

use std::time::Duration;

use rand_chacha::rand_core::SeedableRng as _;
use sotto_transport::{
    Backoff, Connection, ConnectionConfig, ConnectionEvent, ConnectionState, DisconnectReason,
};
use sotto_wire::ServerFrame;

use crate::common::{device, send_request, Relay};
use crate::messaging::next_frame;

async fn next_event(conn: &mut Connection) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(30), conn.next_event())
        .await
        .expect("no event within 30 s")
        .expect("connection task ended")
}

fn fast() -> ConnectionConfig {
    ConnectionConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
        ..ConnectionConfig::default()
    }
}

#[tokio::test]
async fn reconnects_after_relay_restart() {
    let mut relay = Relay::start().await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    let mut ws = Connection::open_with_rng(
        &bob.client,
        fast(),
        rand_chacha::ChaCha8Rng::seed_from_u64(3),
    );
    assert_eq!(
        next_event(&mut ws).await,
        ConnectionEvent::Connecting { attempt: 0 }
    );
    assert_eq!(next_event(&mut ws).await, ConnectionEvent::Connected);
    assert_eq!(next_frame(&mut ws).await, ServerFrame::QueueEmpty);

    relay.kill().await;
    match next_event(&mut ws).await {
        ConnectionEvent::Disconnected {
            reason: DisconnectReason::Lost | DisconnectReason::Closed { .. },
            retry_in: Some(d),
        } => assert!(d <= Duration::from_millis(50)),
        other => panic!("expected a disconnect, got {other:?}"),
    }
    // While down: attempts fail as unreachable, with growing bounds.
    let mut failures = 0;
    while failures < 2 {
        match next_event(&mut ws).await {
            ConnectionEvent::Connecting { .. } => {}
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Unreachable,
                retry_in: Some(_),
            } => failures += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(
        ws.send(sotto_wire::ClientFrame::Ping).await,
        Err(sotto_transport::TransportError::NotConnected)
    ));

    relay.restart().await;
    loop {
        match next_event(&mut ws).await {
            ConnectionEvent::Connected => break,
            ConnectionEvent::Connecting { .. } | ConnectionEvent::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ws.state(), ConnectionState::Connected);
    assert_eq!(next_frame(&mut ws).await, ServerFrame::QueueEmpty);
    alice
        .client
        .send_message(&send_request(&bob, "after-restart", b"still here"))
        .await
        .unwrap();
    match next_frame(&mut ws).await {
        ServerFrame::Envelope(e) => {
            assert_eq!(e.content.unwrap().as_bytes(), b"still here");
            ws.ack(&[e.seq]).await.unwrap();
        }
        other => panic!("expected the envelope, got {other:?}"),
    }
}

#[tokio::test]
async fn removed_device_stops_reconnecting() {
    let relay = Relay::start().await;
    let bob = device(&relay, "bob").await;
    let mut ws = Connection::open(&bob.client, fast());
    assert_eq!(next_frame(&mut ws).await, ServerFrame::QueueEmpty);
    bob.client.logout().await.unwrap();
    loop {
        match next_event(&mut ws).await {
            ConnectionEvent::Disconnected {
                reason,
                retry_in: None,
            } => {
                // 4004 when the close arrives; 401 if the socket died first and a retry was refused.
                assert!(
                    matches!(
                        reason,
                        DisconnectReason::Closed { code: 4004, .. }
                            | DisconnectReason::Rejected { status: 401 }
                    ),
                    "{reason:?}"
                );
                break;
            }
            ConnectionEvent::Disconnected { .. }
            | ConnectionEvent::Connecting { .. }
            | ConnectionEvent::Connected => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ws.next_event().await.is_none());
    assert_eq!(ws.state(), ConnectionState::Stopped);
}
