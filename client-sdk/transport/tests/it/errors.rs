//! Relay errors parsed into `TransportError::Relay`; an absent relay is `Unreachable`.

use std::time::Duration;

use sotto_transport::{RelayClient, RelayErrorDetails, TransportError};
use sotto_wire as wire;

use crate::common::{device, send_request, Relay};

#[tokio::test]
async fn relay_4xx_answers_are_parsed() {
    let relay = Relay::start().await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    let anonymous = relay.client();

    // 400 with the relay's code and message.
    let err = anonymous
        .register(&wire::RegisterRequest {
            username: "x".into(),
            email: "x@example.com".into(),
            password: "long enough".into(),
        })
        .await
        .unwrap_err();
    match err {
        TransportError::Relay {
            status,
            code,
            message,
            retry_after,
            details,
        } => {
            assert_eq!(status, 400);
            assert_eq!(code, "invalid_username");
            assert!(!message.is_empty());
            assert_eq!(retry_after, None);
            assert_eq!(details, None);
        }
        other => panic!("expected a relay error, got {other:?}"),
    }

    // 401 without a token.
    let err = anonymous.key_counts().await.unwrap_err();
    assert_eq!(err.status(), Some(401));

    // 404 for an unknown envelope.
    let err = alice.client.ack(987_654).await.unwrap_err();
    assert_eq!(err.code(), Some("unknown_envelope"));

    // 409 with the device lists.
    let mut wrong = send_request(&bob, "m-x", b"c");
    wrong.messages[0].device_id = 7;
    match alice.client.send_message(&wrong).await.unwrap_err() {
        TransportError::Relay {
            status: 409,
            details: Some(RelayErrorDetails::MismatchedDevices { missing, extra }),
            ..
        } => {
            assert_eq!(missing.len(), 1);
            assert_eq!(missing[0].user_id, bob.user_id);
            assert_eq!(missing[0].device_id, 1);
            assert_eq!(extra[0].device_id, 7);
        }
        other => panic!("expected 409 mismatched_devices, got {other:?}"),
    }

    // 410 with the stale devices.
    let mut stale = send_request(&bob, "m-y", b"c");
    stale.messages[0].registration_id += 1;
    match alice.client.send_message(&stale).await.unwrap_err() {
        TransportError::Relay {
            status: 410,
            details: Some(RelayErrorDetails::StaleDevices { stale }),
            ..
        } => assert_eq!(stale[0].device_id, 1),
        other => panic!("expected 410 stale_devices, got {other:?}"),
    }

    // A path argument that would leave its route is refused before any request.
    assert!(matches!(
        alice.client.devices("..").await,
        Err(TransportError::InvalidArgument(_))
    ));
    // Encoded, a hostile id stays one path segment: the relay just does not know it.
    let err = alice.client.devices("a/../../healthz").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let relay = Relay::start_with(&["--rate-limit", "messages=1/minute"]).await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    alice
        .client
        .send_message(&send_request(&bob, "m-1", b"c"))
        .await
        .unwrap();
    match alice
        .client
        .send_message(&send_request(&bob, "m-2", b"c"))
        .await
        .unwrap_err()
    {
        TransportError::Relay {
            status: 429,
            code,
            retry_after: Some(after),
            ..
        } => {
            assert_eq!(code, "rate_limited");
            assert!(after >= Duration::from_secs(1) && after <= Duration::from_secs(60));
        }
        other => panic!("expected 429 with Retry-After, got {other:?}"),
    }
}

#[tokio::test]
async fn relay_down_is_unreachable() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = RelayClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(matches!(
        client.health().await,
        Err(TransportError::Unreachable)
    ));

    // A relay that goes away mid-session.
    let mut relay = Relay::start().await;
    let alice = device(&relay, "alice").await;
    alice.client.unread().await.unwrap();
    relay.kill().await;
    assert!(matches!(
        alice.client.unread().await,
        Err(TransportError::Unreachable)
    ));
}
