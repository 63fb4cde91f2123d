//! The bad-input catalogue: every case gets the right 4xx with a JSON error, changes nothing, and
//! the relay keeps serving.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::{b64, keys, Backend, TestApp};

struct Case {
    name: &'static str,
    req: Request<Body>,
    status: StatusCode,
    code: &'static str,
}

fn req(method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some(b) => r
            .header("content-type", "application/json")
            .body(Body::from(b.to_owned()))
            .unwrap(),
        None => r.body(Body::empty()).unwrap(),
    }
}

async fn catalogue(b: Backend) {
    let t = TestApp::with(b, |c| c.max_request_bytes = 64 * 1024).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let carol = t.client("carol").await;
    let k = keys(9, 2);
    let (s, _) = t
        .call(
            Method::PUT,
            "/api/keys",
            Some(&alice.token),
            Some(k.upload.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Bob has one queued envelope from Alice.
    let (s, _) = t.send(&alice, &bob, "q", b"secret").await;
    assert_eq!(s, StatusCode::OK);
    let (_, page) = t.get("/api/messages", &bob.token).await;
    let bob_seq = page["envelopes"][0]["seq"].as_u64().unwrap();
    // A revoked token.
    let (s, _) = t
        .call(Method::POST, "/api/users/logout", Some(&carol.token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let a = Some(alice.token.as_str());
    let send_ok = |content: &str| {
        json!({"recipientId": bob.user_id, "clientMessageId": "z",
               "messages": [{"deviceId": 1, "registrationId": bob.registration_id, "content": content}]})
        .to_string()
    };
    let huge = "A".repeat(70 * 1024);
    let cases = vec![
        Case { name: "malformed json", req: req(Method::POST, "/api/messages/send", a, Some("{\"recipientId\":")), status: StatusCode::BAD_REQUEST, code: "invalid_json" },
        Case { name: "not json at all", req: req(Method::POST, "/api/users/register", None, Some("hello")), status: StatusCode::BAD_REQUEST, code: "invalid_json" },
        Case { name: "wrong types", req: req(Method::POST, "/api/messages/send", a, Some(r#"{"recipientId":5,"clientMessageId":"z","messages":"x"}"#)), status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid_fields" },
        Case { name: "missing fields", req: req(Method::POST, "/api/users/register", None, Some(r#"{"username":"dave"}"#)), status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid_fields" },
        Case { name: "unknown fields", req: req(Method::POST, "/api/users/login", None, Some(r#"{"username":"alice","password":"password123","registrationId":3,"admin":true}"#)), status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid_fields" },
        Case { name: "negative registration id", req: req(Method::POST, "/api/users/login", None, Some(r#"{"username":"alice","password":"password123","registrationId":-1}"#)), status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid_fields" },
        Case { name: "zero registration id", req: req(Method::POST, "/api/users/login", None, Some(r#"{"username":"alice","password":"password123","registrationId":0}"#)), status: StatusCode::BAD_REQUEST, code: "invalid_registration_id" },
        Case { name: "bad base64", req: req(Method::POST, "/api/messages/send", a, Some(&send_ok("***"))), status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid_fields" },
        Case { name: "empty content", req: req(Method::POST, "/api/messages/send", a, Some(&send_ok(""))), status: StatusCode::BAD_REQUEST, code: "empty_content" },
        Case { name: "no content type", req: Request::builder().method(Method::POST).uri("/api/messages/send").header("authorization", format!("Bearer {}", alice.token)).body(Body::from(send_ok("AA=="))).unwrap(), status: StatusCode::UNSUPPORTED_MEDIA_TYPE, code: "unsupported_media_type" },
        Case { name: "oversize body", req: req(Method::POST, "/api/messages/send", a, Some(&send_ok(&huge))), status: StatusCode::PAYLOAD_TOO_LARGE, code: "payload_too_large" },
        Case { name: "no messages", req: req(Method::POST, "/api/messages/send", a, Some(&json!({"recipientId": bob.user_id, "clientMessageId": "z", "messages": []}).to_string())), status: StatusCode::BAD_REQUEST, code: "no_messages" },
        Case { name: "duplicate device", req: req(Method::POST, "/api/messages/send", a, Some(&json!({"recipientId": bob.user_id, "clientMessageId": "z", "messages": [
            {"deviceId": 1, "registrationId": bob.registration_id, "content": "AA=="}, {"deviceId": 1, "registrationId": bob.registration_id, "content": "AA=="}]}).to_string())), status: StatusCode::BAD_REQUEST, code: "duplicate_device" },
        Case { name: "long client message id", req: req(Method::POST, "/api/messages/send", a, Some(&json!({"recipientId": bob.user_id, "clientMessageId": "x".repeat(65), "messages": [
            {"deviceId": 1, "registrationId": bob.registration_id, "content": "AA=="}]}).to_string())), status: StatusCode::BAD_REQUEST, code: "invalid_client_message_id" },
        Case { name: "no token", req: req(Method::GET, "/api/messages/unread", None, None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "garbage token", req: req(Method::GET, "/api/messages/unread", Some("not-a-token"), None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "well-formed unknown token", req: req(Method::GET, "/api/messages/unread", Some(&"A".repeat(43)), None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "revoked token", req: req(Method::GET, "/api/messages", Some(&carol.token), None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "basic auth scheme", req: Request::builder().uri("/api/messages/unread").header("authorization", format!("Basic {}", alice.token)).body(Body::empty()).unwrap(), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "ack another device's envelope", req: req(Method::DELETE, &format!("/api/messages/{bob_seq}"), a, None), status: StatusCode::NOT_FOUND, code: "unknown_envelope" },
        Case { name: "ack unknown envelope", req: req(Method::DELETE, "/api/messages/999999", Some(&bob.token), None), status: StatusCode::NOT_FOUND, code: "unknown_envelope" },
        Case { name: "ack non-numeric id", req: req(Method::DELETE, "/api/messages/abc", a, None), status: StatusCode::BAD_REQUEST, code: "invalid_path" },
        Case { name: "ack negative id", req: req(Method::DELETE, "/api/messages/-1", a, None), status: StatusCode::BAD_REQUEST, code: "invalid_path" },
        Case { name: "page limit 0", req: req(Method::GET, "/api/messages?limit=0", a, None), status: StatusCode::BAD_REQUEST, code: "invalid_limit" },
        Case { name: "page limit 101", req: req(Method::GET, "/api/messages?limit=101", a, None), status: StatusCode::BAD_REQUEST, code: "invalid_limit" },
        Case { name: "page limit text", req: req(Method::GET, "/api/messages?limit=ten", a, None), status: StatusCode::BAD_REQUEST, code: "invalid_query" },
        Case { name: "unknown query", req: req(Method::GET, "/api/messages?user=bob", a, None), status: StatusCode::BAD_REQUEST, code: "invalid_query" },
        Case { name: "bundle of non-numeric device", req: req(Method::GET, &format!("/api/keys/{}/x", alice.user_id), Some(&bob.token), None), status: StatusCode::BAD_REQUEST, code: "invalid_path" },
        Case { name: "bundle of unknown user", req: req(Method::GET, "/api/keys/nobody", Some(&bob.token), None), status: StatusCode::NOT_FOUND, code: "no_keys" },
        Case { name: "bundle without token", req: req(Method::GET, &format!("/api/keys/{}", alice.user_id), None, None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "devices of unknown user", req: req(Method::GET, "/api/users/nobody/devices", a, None), status: StatusCode::NOT_FOUND, code: "unknown_user" },
        Case { name: "empty key upload", req: req(Method::PUT, "/api/keys", a, Some("{}")), status: StatusCode::BAD_REQUEST, code: "empty_upload" },
        Case { name: "too many one-time keys", req: req(Method::PUT, "/api/keys", a, Some(&json!({"preKeys": (0..101).map(|i| json!({"keyId": i, "publicKey": b64(&[5; 33])})).collect::<Vec<Value>>()}).to_string())), status: StatusCode::PAYLOAD_TOO_LARGE, code: "payload_too_large" },
        Case { name: "duplicate key ids", req: req(Method::PUT, "/api/keys", a, Some(&json!({"preKeys": [k.upload["preKeys"][0].clone(), k.upload["preKeys"][0].clone()]}).to_string())), status: StatusCode::BAD_REQUEST, code: "duplicate_key_id" },
        Case { name: "bad username", req: req(Method::POST, "/api/users/register", None, Some(r#"{"username":"no spaces","email":"a@b.co","password":"password123"}"#)), status: StatusCode::BAD_REQUEST, code: "invalid_username" },
        Case { name: "bad email", req: req(Method::POST, "/api/users/register", None, Some(r#"{"username":"dave","email":"dave","password":"password123"}"#)), status: StatusCode::BAD_REQUEST, code: "invalid_email" },
        Case { name: "short password", req: req(Method::POST, "/api/users/register", None, Some(r#"{"username":"dave","email":"d@b.co","password":"short"}"#)), status: StatusCode::BAD_REQUEST, code: "invalid_password" },
        Case { name: "websocket without token", req: req(Method::GET, "/ws", None, None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "websocket bad query token", req: req(Method::GET, "/ws?token=abc", None, None), status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
        Case { name: "websocket without upgrade", req: req(Method::GET, "/ws", a, None), status: StatusCode::UPGRADE_REQUIRED, code: "websocket_required" },
        Case { name: "NUL in a user id path", req: req(Method::GET, "/api/users/a%00b/devices", a, None), status: StatusCode::NOT_FOUND, code: "unknown_user" },
        Case { name: "NUL in a bundle path", req: req(Method::GET, "/api/keys/a%00b", a, None), status: StatusCode::NOT_FOUND, code: "unknown_user" },
        Case { name: "NUL in a recipient id", req: req(Method::POST, "/api/messages/send", a, Some(r#"{"recipientId":"a\u0000b","clientMessageId":"n","messages":[{"deviceId":1,"registrationId":1,"content":"AA=="}]}"#)), status: StatusCode::NOT_FOUND, code: "unknown_user" },
        Case { name: "NUL in a login name", req: req(Method::POST, "/api/users/login", None, Some(r#"{"username":"a\u0000b","password":"pw-pw-pw-pw","registrationId":1}"#)), status: StatusCode::UNAUTHORIZED, code: "invalid_credentials" },
        Case { name: "unknown route", req: req(Method::GET, "/api/nope", a, None), status: StatusCode::NOT_FOUND, code: "not_found" },
        Case { name: "seed route not here", req: req(Method::GET, "/api/messages/history/x", a, None), status: StatusCode::NOT_FOUND, code: "not_found" },
        Case { name: "username differing only by case", req: req(Method::POST, "/api/users/register", None, Some(r#"{"username":"ALICE","email":"a2@b.co","password":"password123"}"#)), status: StatusCode::CONFLICT, code: "username_taken" },
        Case { name: "clientMessageId reused with other ciphertext", req: req(Method::POST, "/api/messages/send", a, Some(&json!({"recipientId": bob.user_id, "clientMessageId": "q",
            "messages": [{"deviceId": 1, "registrationId": bob.registration_id, "content": b64(b"another message")}]}).to_string())), status: StatusCode::CONFLICT, code: "client_message_id_reused" },
        Case { name: "clientMessageId reused for another recipient", req: req(Method::POST, "/api/messages/send", a, Some(&json!({"recipientId": carol.user_id, "clientMessageId": "q",
            "messages": [{"deviceId": 1, "registrationId": carol.registration_id, "content": b64(b"secret")}]}).to_string())), status: StatusCode::CONFLICT, code: "client_message_id_reused" },
        Case { name: "cancel an invitation in an unknown group", req: req(Method::DELETE, &format!("/api/groups/nope/invitations/{}", bob.user_id), a, None), status: StatusCode::NOT_FOUND, code: "unknown_group" },
        Case { name: "accept an invitation to an unknown group", req: req(Method::POST, "/api/groups/nope/invitation", a, None), status: StatusCode::NOT_FOUND, code: "unknown_invitation" },
        Case { name: "wrong method", req: req(Method::GET, "/api/messages/send", a, None), status: StatusCode::METHOD_NOT_ALLOWED, code: "method_not_allowed" },
    ];

    let before = t.snapshot().await;
    for case in cases {
        // `raw` also checks the answer against the OpenAPI operation that served it.
        let (status, body) = t.raw(case.req).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["code"], case.code, "{}: {body}", case.name);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            case.name
        );
        assert_eq!(
            t.snapshot().await,
            before,
            "{} changed the database",
            case.name
        );
    }
    // Still serving, and Alice cannot see Bob's mailbox through her own.
    let (s, v) = t.get("/api/messages", &alice.token).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["envelopes"], json!([]));
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 1);
    t.finish().await;
}
both!(catalogue);
