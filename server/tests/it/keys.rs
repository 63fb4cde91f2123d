use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::{keys, Backend, TestApp};

async fn upload_count_claim_fallback(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let k = keys(1, 2);
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&alice.token),
            Some(k.upload.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = t.get("/api/keys/count", &alice.token).await;
    assert_eq!(v, json!({"count": 2, "kemCount": 2}));

    let path = format!("/api/keys/{}", alice.user_id);
    let mut ec = Vec::new();
    let mut kem = Vec::new();
    for _ in 0..3 {
        let (s, v) = t.get(&path, &bob.token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["identityKey"], k.upload["identityKey"]);
        let d = &v["devices"][0];
        assert_eq!(d["deviceId"], 1);
        assert_eq!(d["registrationId"], alice.registration_id);
        assert_eq!(d["signedPreKey"], k.upload["signedPreKey"]);
        ec.push(d["preKey"]["keyId"].clone());
        kem.push(d["kemPreKey"]["keyId"].clone());
    }
    // Two one-time keys, then none; two one-time KEM keys, then the last-resort key.
    assert_eq!(ec, vec![json!(101), json!(102), Value::Null]);
    assert_eq!(kem, vec![json!(201), json!(202), json!(999)]);
    let (_, v) = t.get("/api/keys/count", &alice.token).await;
    assert_eq!(v, json!({"count": 0, "kemCount": 0}));

    // Per-device path, and unknown users/devices.
    let (s, _) = t
        .get(&format!("/api/keys/{}/1", alice.user_id), &bob.token)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = t
        .get(&format!("/api/keys/{}/2", alice.user_id), &bob.token)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "no_keys");
    let (s, _) = t
        .get(&format!("/api/keys/{}", bob.user_id), &alice.token)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A later upload without identityKey is verified against the stored one.
    let partial = json!({"preKeys": k.upload["preKeys"].clone()});
    let (s, v) = t
        .call(Method::PUT, "/api/keys", Some(&alice.token), Some(partial))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = t.get("/api/keys/count", &alice.token).await;
    assert_eq!(v, json!({"count": 2, "kemCount": 0}));
    t.finish().await;
}
both!(upload_count_claim_fallback);

async fn rejects_bad_signatures_and_foreign_identity(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let good = keys(2, 1);
    let other = keys(3, 1);
    // Signed prekey signed by a different identity.
    let mut forged = good.upload.clone();
    forged["signedPreKey"] = other.upload["signedPreKey"].clone();
    let before = t.snapshot().await;
    let (s, v) = t
        .call(Method::PUT, "/api/keys", Some(&alice.token), Some(forged))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "invalid_key");
    // KEM key from another identity.
    let mut forged = good.upload.clone();
    forged["kemPreKeys"] = other.upload["kemPreKeys"].clone();
    let (s, _) = t
        .call(Method::PUT, "/api/keys", Some(&alice.token), Some(forged))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Garbage identity and one-time keys.
    let mut forged = good.upload.clone();
    forged["identityKey"] = json!("AAAA");
    let (s, _) = t
        .call(Method::PUT, "/api/keys", Some(&alice.token), Some(forged))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut forged = good.upload.clone();
    forged["preKeys"] = json!([{"keyId": 1, "publicKey": "AAAA"}]);
    let (s, _) = t
        .call(Method::PUT, "/api/keys", Some(&alice.token), Some(forged))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Keys without any identity on record.
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&alice.token),
            Some(json!({"signedPreKey": good.upload["signedPreKey"].clone()})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "missing_identity_key");
    assert_eq!(t.snapshot().await, before);
    t.finish().await;
}
both!(rejects_bad_signatures_and_foreign_identity);

async fn one_time_keys_claimed_exactly_once_under_concurrency(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let k = keys(4, 20);
    let (s, _) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&alice.token),
            Some(k.upload.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let path = format!("/api/keys/{}", alice.user_id);
    let t = std::sync::Arc::new(t);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let t = t.clone();
        let path = path.clone();
        let token = bob.token.clone();
        tasks.push(tokio::spawn(async move {
            let (s, v) = t.get(&path, &token).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            (
                v["devices"][0]["preKey"]["keyId"].as_u64(),
                v["devices"][0]["kemPreKey"]["keyId"].as_u64().unwrap(),
            )
        }));
    }
    let mut ec = Vec::new();
    let mut kem = Vec::new();
    for task in tasks {
        let (e, k) = task.await.unwrap();
        ec.extend(e);
        kem.push(k);
    }
    let distinct: HashSet<u64> = ec.iter().copied().collect();
    assert_eq!(ec.len(), 20, "every one-time key handed out once");
    assert_eq!(distinct.len(), 20);
    let one_time_kem: Vec<u64> = kem.iter().copied().filter(|&k| k != 999).collect();
    let distinct: HashSet<u64> = one_time_kem.iter().copied().collect();
    assert_eq!(one_time_kem.len(), 20);
    assert_eq!(distinct.len(), 20);
    assert_eq!(kem.iter().filter(|&&k| k == 999).count(), 12);
    let t = std::sync::Arc::into_inner(t).unwrap();
    t.finish().await;
}
both!(one_time_keys_claimed_exactly_once_under_concurrency);

async fn bundle_fetches_are_rate_limited(b: Backend) {
    use sotto_server::ratelimit::Quota;
    let t = TestApp::with(b, |c| {
        c.rate_limits.bundle_fetch = Some(Quota::per_minute(2))
    })
    .await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let k = keys(5, 5);
    let (s, _) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&alice.token),
            Some(k.upload.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let path = format!("/api/keys/{}", alice.user_id);
    for _ in 0..2 {
        let (s, _) = t.get(&path, &bob.token).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = t.get(&path, &bob.token).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["code"], "rate_limited");
    // The refused fetch claimed nothing.
    let (_, v) = t.get("/api/keys/count", &alice.token).await;
    assert_eq!(v, json!({"count": 3, "kemCount": 3}));
    t.finish().await;
}
both!(bundle_fetches_are_rate_limited);
