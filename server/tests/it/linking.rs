//! Device linking: provisioning channel, one-time linking code, device limit, removal; and the
//! per-address and per-account rate limits.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::{b64, keys, Backend, Client, TestApp};
use crate::support::{count, snapshot};
use crate::ws::{close_code, connect};

async fn linking_code(t: &TestApp, c: &Client) -> String {
    let (s, v) = t
        .post("/api/devices/linking-codes", Some(&c.token), json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["code"].as_str().unwrap().to_owned()
}

async fn link(t: &TestApp, code: &str, registration_id: u32) -> (StatusCode, Value) {
    t.post(
        "/api/devices/link",
        None,
        json!({"code": code, "registrationId": registration_id}),
    )
    .await
}

/// Links a second device to `c`'s account.
pub async fn linked(t: &TestApp, c: &Client, registration_id: u32) -> Client {
    let code = linking_code(t, c).await;
    let (s, v) = link(t, &code, registration_id).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    Client {
        user_id: v["userId"].as_str().unwrap().to_owned(),
        device_id: u32::try_from(v["deviceId"].as_u64().unwrap()).unwrap(),
        registration_id,
        token: v["token"].as_str().unwrap().to_owned(),
    }
}

async fn provisioning_then_link(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;

    // The new device opens a channel and waits on it.
    let (s, v) = t.post("/api/provisioning", None, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let address = v["address"].as_str().unwrap().to_owned();
    assert_eq!(address.len(), 43);
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/api/provisioning/{address}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "nothing yet");
    let router = t.router.clone();
    let path = format!("/api/provisioning/{address}?waitSecs=10");
    let waiting = tokio::spawn(async move {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The existing device sends the encrypted provisioning message with a linking code inside.
    let code = linking_code(&t, &alice).await;
    let sealed = format!("sealed({code})");
    let (s, _) = t
        .call(
            Method::PUT,
            &format!("/api/provisioning/{address}"),
            Some(&alice.token),
            Some(json!({"message": b64(sealed.as_bytes())})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = waiting.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["message"], b64(sealed.as_bytes()));
    // One message per address, picked up once; unauthenticated delivery is refused.
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/api/provisioning/{address}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t
        .call(
            Method::PUT,
            &format!("/api/provisioning/{address}"),
            None,
            Some(json!({"message": b64(b"x")})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The new device registers with the code and gets its own token.
    let (s, v) = link(&t, &code, 777).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["userId"], alice.user_id.as_str());
    assert_eq!(v["deviceId"], 2);
    let token = v["token"].as_str().unwrap().to_owned();
    assert_ne!(token, alice.token);
    let (s, _) = t.get("/api/messages/unread", &token).await;
    assert_eq!(s, StatusCode::OK);
    // The linked device signs its prekeys with the account identity it received end to end; a
    // different identity is refused now that the account has two devices.
    let identity = keys(1, 2);
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&alice.token),
            Some(identity.upload.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&token),
            Some(identity.upload),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&token),
            Some(keys(2, 2).upload),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("identity_key_mismatch"))
    );
    let (_, v) = t
        .get(
            &format!("/api/users/{}/devices", alice.user_id),
            &alice.token,
        )
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
    assert_eq!(v["devices"][1]["registrationId"], 777);

    // The code was single-use; guessed codes do nothing.
    let rows = snapshot(&t).await;
    let guessed = sotto_server::blobs::BlobId::random().to_string();
    for c in [code.as_str(), guessed.as_str(), "short"] {
        let (s, v) = link(&t, c, 5).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("invalid_linking_code"))
        );
    }
    let (s, _) = link(&t, &linking_code(&t, &alice).await, 0).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(snapshot(&t).await[..7], rows[..7]);
    t.finish().await;
}
both!(provisioning_then_link);

async fn expired_address_gets_nothing(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    t.state
        .services()
        .provisioning()
        .set_ttl(Duration::from_millis(200));
    let (_, v) = t.post("/api/provisioning", None, json!({})).await;
    let address = v["address"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, v) = t
        .call(
            Method::PUT,
            &format!("/api/provisioning/{address}"),
            Some(&alice.token),
            Some(json!({"message": b64(b"identity key, sealed")})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_address"))
    );
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/api/provisioning/{address}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Never-opened addresses are the same.
    let (s, _) = t
        .call(
            Method::PUT,
            "/api/provisioning/not-an-address",
            Some(&alice.token),
            Some(json!({"message": b64(b"x")})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    sotto_server::services::sweep(&t.state, sotto_server::now_ms()).await;
    assert!(t.state.services().provisioning().is_empty());
    t.finish().await;
}
both!(expired_address_gets_nothing);

async fn device_limit_and_removal(b: Backend) {
    let t = TestApp::with(b, |c| c.max_devices = 2).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let laptop = linked(&t, &alice, 4242).await;
    assert_eq!(laptop.device_id, 2);

    // At the limit: refused, and the code stays usable.
    let code = linking_code(&t, &alice).await;
    let (s, v) = link(&t, &code, 99).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_devices"))
    );

    // Bob sends to both devices; the laptop has mail.
    let both_devices = |id: &str| {
        json!({
            "recipientId": alice.user_id,
            "clientMessageId": id,
            "messages": [
                {"deviceId": 1, "registrationId": alice.registration_id, "content": b64(b"to phone")},
                {"deviceId": 2, "registrationId": 4242, "content": b64(b"to laptop")},
            ],
        })
    };
    let (s, v) = t
        .post("/api/messages/send", Some(&bob.token), both_devices("m1"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut laptop_ws = connect(server.addr, &laptop).await;

    // Another account cannot remove it (device ids are per account); the owner can.
    let (s, _) = t
        .call(Method::DELETE, "/api/devices/2", Some(&bob.token), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t
        .call(Method::DELETE, "/api/devices/2", Some(&alice.token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut laptop_ws).await, 4004);
    let (s, _) = t.get("/api/messages/unread", &laptop.token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "token revoked");
    assert_eq!(
        count(&t, &format!("devices WHERE user_id = '{}'", alice.user_id)).await,
        1
    );
    assert_eq!(
        count(
            &t,
            &format!(
                "envelopes e JOIN devices d ON d.pk = e.device_pk WHERE d.user_id = '{}'",
                alice.user_id
            )
        )
        .await,
        1,
        "only the phone's envelope is left"
    );
    // Contacts see the change on their next send: 409 with the removed device as extra.
    let (s, v) = t
        .post("/api/messages/send", Some(&bob.token), both_devices("m2"))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["extraDevices"],
        json!([{"userId": alice.user_id, "deviceId": 2}])
    );
    // A device sending after its removal is refused.
    let (s, _) = t
        .post(
            "/api/messages/send",
            Some(&laptop.token),
            json!({"recipientId": bob.user_id, "clientMessageId": "late", "messages": []}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The slot is free again: the earlier code now works.
    let (s, v) = link(&t, &code, 100).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["deviceId"], 2);
    let (s, _) = t
        .call(Method::DELETE, "/api/devices/9", Some(&alice.token), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(device_limit_and_removal);

async fn rate_limits_answer_429_with_retry_after(b: Backend) {
    use sotto_server::ratelimit::{Quota, RateLimitConfig};
    let t = TestApp::with(b, |c| {
        c.rate_limits = RateLimitConfig {
            provisioning: Some(Quota::per_minute(2)),
            messages: Some(Quota::per_minute(2)),
            ..RateLimitConfig::disabled()
        }
    })
    .await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for _ in 0..2 {
        let (s, _) = t.post("/api/provisioning", None, json!({})).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let req = axum::http::Request::post("/api/provisioning")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(t.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "30");
    let (s, v) = link(&t, "whatever", 1).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );

    // Group sends count against the account's message bucket.
    let gid = crate::support::group(&t, &alice, &[&bob]).await;
    for i in 0..2 {
        let (s, v) = t
            .post(
                &format!("/api/groups/{gid}/messages"),
                Some(&alice.token),
                json!({"clientMessageId": format!("g{i}"), "content": b64(b"x")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, _) = t
        .post(
            &format!("/api/groups/{gid}/messages"),
            Some(&alice.token),
            json!({"clientMessageId": "g3", "content": b64(b"x")}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    t.finish().await;
}
both!(rate_limits_answer_429_with_retry_after);

async fn login_and_registration_limited_per_address(b: Backend) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use sotto_server::ratelimit::{Quota, RateLimitConfig};
    let t = TestApp::with(b, |c| {
        c.rate_limits = RateLimitConfig {
            registration: Some(Quota::per_hour(2)),
            login: Some(Quota::per_minute(2)),
            ..RateLimitConfig::disabled()
        }
    })
    .await;
    let server = t.serve().await;
    let json_body = |v: Value| Full::new(Bytes::from(serde_json::to_vec(&v).unwrap()));
    let ct = [("content-type", "application/json".to_owned())];
    for (i, expected) in [
        StatusCode::CREATED,
        StatusCode::CREATED,
        StatusCode::TOO_MANY_REQUESTS,
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"username": format!("user{i}"), "email": "u@example.com", "password": "password123"});
        let (s, headers, _) = crate::support::http(
            server.addr,
            Method::POST,
            "/api/users/register",
            None,
            &ct,
            json_body(body),
        )
        .await;
        assert_eq!(s, expected);
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers["retry-after"], "1800");
        }
    }
    for expected in [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let body = json!({"username": "user0", "password": "wrong-password", "registrationId": 1});
        let (s, headers, bytes) = crate::support::http(
            server.addr,
            Method::POST,
            "/api/users/login",
            None,
            &ct,
            json_body(body),
        )
        .await;
        assert_eq!(s, expected);
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers["retry-after"], "30");
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["code"], "rate_limited");
        }
    }
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(login_and_registration_limited_per_address);

async fn only_the_primary_removes_other_devices(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let laptop = linked(&t, &alice, 501).await;
    let tablet = linked(&t, &alice, 502).await;
    let rows = snapshot(&t).await;
    // A linked device cannot remove the primary or another linked device.
    for target in [alice.device_id, tablet.device_id] {
        let (s, v) = t
            .call(
                Method::DELETE,
                &format!("/api/devices/{target}"),
                Some(&laptop.token),
                None,
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("not_primary_device")),
            "{target}"
        );
    }
    assert_eq!(
        snapshot(&t).await,
        rows,
        "a refused removal changes nothing"
    );
    // Any device removes itself; the primary removes others.
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/api/devices/{}", laptop.device_id),
            Some(&laptop.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/api/devices/{}", tablet.device_id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // With the primary gone, the oldest device left is primary.
    let laptop = linked(&t, &alice, 503).await;
    let tablet = linked(&t, &alice, 504).await;
    let (s, _) = t
        .call(Method::POST, "/api/users/logout", Some(&alice.token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/api/devices/{}", laptop.device_id),
            Some(&tablet.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/api/devices/{}", tablet.device_id),
            Some(&laptop.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    t.finish().await;
}
both!(only_the_primary_removes_other_devices);
