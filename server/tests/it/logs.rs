//! Logs never contain tokens, passwords or ciphertext, even at TRACE level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{b64, Backend, TestApp};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn no_secrets_in_logs(b: Backend) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests run on other threads without a subscriber: make every callsite ask again.
    tracing::callsite::rebuild_interest_cache();

    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let secret = b"TOP-SECRET-CIPHERTEXT-BYTES";
    let (s, _) = t.send(&alice, &bob, "m", secret).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t.get("/api/messages", &bob.token).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .post(
            "/api/users/login",
            None,
            json!({"username": "alice", "password": "wrong-password-xyz", "registrationId": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = t
        .call(Method::GET, &format!("/ws?token={}", bob.token), None, None)
        .await;
    assert_eq!(s, StatusCode::UPGRADE_REQUIRED);
    t.finish().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("account registered"), "the capture works:\n{logs}");
    for needle in [
        alice.token.as_str(),
        bob.token.as_str(),
        "password123",
        "wrong-password-xyz",
        "TOP-SECRET",
        b64(secret).as_str(),
    ] {
        assert!(!logs.contains(needle), "logs contain {needle}");
    }
}

/// Both backends in one test: one scoped log capture at a time.
#[tokio::test]
async fn no_secrets_in_logs_on_both_backends() {
    no_secrets_in_logs(Backend::Sqlite).await;
    no_secrets_in_logs(Backend::Postgres).await;
}
