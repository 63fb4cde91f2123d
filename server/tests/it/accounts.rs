use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::{Backend, TestApp};

async fn register_login_logout(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    assert_eq!(alice.device_id, 1);

    // Duplicate username.
    let (s, v) = t
        .post(
            "/api/users/register",
            None,
            json!({"username": "alice", "email": "a@b.co", "password": "password123"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["code"], "username_taken");

    // Wrong password, unknown user: the same 401.
    for (user, pw) in [("alice", "wrongpassword"), ("nobody", "password123")] {
        let (s, v) = t
            .post(
                "/api/users/login",
                None,
                json!({"username": user, "password": pw, "registrationId": 5}),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(v["code"], "invalid_credentials");
    }

    // A second device cannot come from the password alone.
    let (s, v) = t
        .post(
            "/api/users/login",
            None,
            json!({"username": "alice", "password": "password123", "registrationId": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["code"], "device_exists");

    // Device list.
    let (s, v) = t
        .get(
            &format!("/api/users/{}/devices", alice.user_id),
            &alice.token,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["devices"][0]["deviceId"], 1);
    assert_eq!(v["devices"][0]["registrationId"], alice.registration_id);

    // Logout revokes the token and removes the device.
    let (s, _) = t
        .call(Method::POST, "/api/users/logout", Some(&alice.token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = t.get("/api/messages/unread", &alice.token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["code"], "unauthorized");

    // Logging in again re-creates device 1 with a new registration id.
    let (s, v) = t
        .post(
            "/api/users/login",
            None,
            json!({"username": "alice", "password": "password123", "registrationId": 77}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deviceId"], 1);
    t.finish().await;
}
both!(register_login_logout);

async fn stale_device_after_reregistration(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let (s, _) = t
        .call(Method::POST, "/api/users/logout", Some(&bob.token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = t
        .post("/api/users/login", None, json!({"username": "bob", "password": "password123", "registrationId": bob.registration_id ^ 2}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Alice still uses the old registration id: 410 with the stale device.
    let (s, v) = t.send(&alice, &bob, "m1", b"hi").await;
    assert_eq!(s, StatusCode::GONE, "{v}");
    assert_eq!(v["code"], "stale_devices");
    assert_eq!(
        v["staleDevices"],
        json!([{"userId": bob.user_id, "deviceId": 1}])
    );
    t.finish().await;
}
both!(stale_device_after_reregistration);

async fn usernames_are_unique_ignoring_case(b: Backend) {
    let t = TestApp::new(b).await;
    let reg =
        |name: &str| json!({"username": name, "email": "x@example.com", "password": "password123"});
    let (s, v) = t.post("/api/users/register", None, reg("Bob_Case")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["userId"].clone();
    for other in ["bob_case", "BOB_CASE", "Bob_Case"] {
        let (s, v) = t.post("/api/users/register", None, reg(other)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("username_taken")),
            "{other}"
        );
    }
    // Any spelling logs in to the one account, whose chosen spelling is kept.
    let (s, v) = t
        .post(
            "/api/users/login",
            None,
            json!({"username": "bob_case", "password": "password123", "registrationId": 7}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["userId"], id);
    assert_eq!(
        crate::support::count(&t, "users WHERE username = 'Bob_Case'").await,
        1
    );
    assert_eq!(crate::support::count(&t, "users").await, 1);
    t.finish().await;
}
both!(usernames_are_unique_ignoring_case);

async fn usernames_are_looked_up(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let (s, v) = t
        .post(
            "/api/users/register",
            None,
            json!({"username": "Bob_Case", "email": "b@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let bob_id = v["userId"].clone();
    // Any case finds the account; the registered spelling comes back.
    for name in ["Bob_Case", "bob_case", "BOB_CASE"] {
        let (s, v) = t.get(&format!("/api/usernames/{name}"), &alice.token).await;
        assert_eq!(s, StatusCode::OK, "{name}: {v}");
        assert_eq!(v, json!({"userId": bob_id, "username": "Bob_Case"}));
    }
    let (s, v) = t
        .get(
            &format!("/api/users/{}/profile", bob_id.as_str().unwrap_or("")),
            &alice.token,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["username"], "Bob_Case");
    let (s, v) = t.get("/api/usernames/nobody_here", &alice.token).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_user"))
    );
    for bad in ["ab", "has-dash", "waytoolongusername_over20"] {
        let (s, v) = t.get(&format!("/api/usernames/{bad}"), &alice.token).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_username")),
            "{bad}"
        );
    }
    let (s, v) = t
        .get(
            "/api/users/00000000-0000-4000-8000-000000000000/profile",
            &alice.token,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_user"))
    );
    let (s, _) = t
        .call(Method::GET, "/api/usernames/alice", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    t.finish().await;
}
both!(usernames_are_looked_up);
