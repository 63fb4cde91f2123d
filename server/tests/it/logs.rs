//! Logs never contain tokens, passwords or ciphertext, even at TRACE level.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::both;
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

/// A process-wide TRACE subscriber (a thread-local one misses events on other threads); every
/// test's logs land in it, each test checks its own secrets.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        capture
    })
}

async fn no_secrets_in_logs(b: Backend) {
    let capture = capture();
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
    // A provisioning address is a capability: whoever knows it can take the message.
    let (s, v) = t.post("/api/provisioning", None, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let address = v["address"].as_str().unwrap().to_owned();
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/api/provisioning/{address}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    t.finish().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("/api/provisioning/{address}"),
        "the capture works"
    );
    for needle in [
        alice.token.as_str(),
        bob.token.as_str(),
        "password123",
        "wrong-password-xyz",
        "TOP-SECRET",
        b64(secret).as_str(),
        address.as_str(),
    ] {
        assert!(!logs.contains(needle), "logs contain {needle}");
    }
}
both!(no_secrets_in_logs);
