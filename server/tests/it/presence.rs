//! Presence (online / away / offline with lastSeen, pushed only to the right people) and
//! ephemeral envelopes (typing: online devices only, never stored, never late).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::SinkExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::both;
use crate::common::{b64, Backend, Client, TestApp};
use crate::support::{frame_of, group, mailbox, maybe_frame, snapshot};
use crate::ws::{connect, Ws};

const QUIET: Duration = Duration::from_millis(400);

async fn status(t: &TestApp, asker: &Client, of: &Client) -> Value {
    let (s, v) = t
        .get(&format!("/api/users/{}/status", of.user_id), &asker.token)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn set_presence(t: &TestApp, c: &Client, status: &str) -> (StatusCode, Value) {
    t.call(
        Method::PUT,
        "/api/presence",
        Some(&c.token),
        Some(json!({ "status": status })),
    )
    .await
}

/// The next presence frame about `user`.
async fn presence_of(ws: &mut Ws, user: &Client) -> Value {
    loop {
        let f = frame_of(ws, "presence").await;
        if f["data"]["userId"] == user.user_id.as_str() {
            return f["data"].clone();
        }
    }
}

async fn online_away_offline_pushed_to_group_members_only(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let stranger = t.client("stranger").await;
    group(&t, &alice, &[&bob]).await;

    let v = status(&t, &alice, &bob).await;
    assert_eq!(v["status"], "offline");
    assert!(v.get("lastSeen").is_none(), "never seen: {v}");

    let mut alice_ws = connect(server.addr, &alice).await;
    let mut stranger_ws = connect(server.addr, &stranger).await;
    frame_of(&mut stranger_ws, "queueEmpty").await;
    let mut bob_ws = connect(server.addr, &bob).await;
    let v = presence_of(&mut alice_ws, &bob).await;
    assert_eq!(v["status"], "online");
    // A stranger is told what a never-connected user looks like.
    let v = status(&t, &stranger, &bob).await;
    assert_eq!(v, json!({"userId": bob.user_id, "status": "offline"}));

    // Away, set by the client.
    let (s, _) = set_presence(&t, &bob, "away").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(presence_of(&mut alice_ws, &bob).await["status"], "away");
    assert_eq!(status(&t, &alice, &bob).await["status"], "away");
    let (s, v) = set_presence(&t, &bob, "offline").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_status"))
    );
    let (s, _) = set_presence(&t, &bob, "online").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(presence_of(&mut alice_ws, &bob).await["status"], "online");

    // Offline with lastSeen once the last device disconnects.
    let before = sotto_server::now_ms();
    bob_ws.send(Message::Close(None)).await.unwrap();
    drop(bob_ws);
    let v = presence_of(&mut alice_ws, &bob).await;
    assert_eq!(v["status"], "offline");
    assert!(v["lastSeen"].as_i64().unwrap() >= before - 1000);
    let v = status(&t, &alice, &bob).await;
    assert_eq!(v["status"], "offline");
    assert!(v["lastSeen"].as_i64().unwrap() >= before - 1000);
    let v = status(&t, &stranger, &bob).await;
    assert!(
        v.get("lastSeen").is_none(),
        "a stranger learns no lastSeen: {v}"
    );

    // Someone who shares nothing with bob heard none of it.
    assert!(maybe_frame(&mut stranger_ws, QUIET).await.is_none());
    // Presence needs a connection.
    let (s, v) = set_presence(&t, &bob, "away").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_connected"))
    );
    let (s, _) = t.get("/api/users/nobody/status", &alice.token).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(online_away_offline_pushed_to_group_members_only);

async fn subscribers_hear_presence(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let carol = t.client("carol").await;
    // Alice wrote to Carol: Carol may see Alice's presence.
    let (st, v) = t.send(&alice, &carol, "hello", b"hi").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut carol_ws = connect(server.addr, &carol).await;
    frame_of(&mut carol_ws, "envelope").await;
    frame_of(&mut carol_ws, "queueEmpty").await;
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/presence/subscriptions",
            Some(&carol.token),
            Some(json!({"userIds": [alice.user_id, "no-such-user"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["statuses"],
        json!([{"userId": alice.user_id, "status": "offline"}])
    );
    let mut alice_ws = connect(server.addr, &alice).await;
    assert_eq!(presence_of(&mut carol_ws, &alice).await["status"], "online");
    alice_ws.send(Message::Close(None)).await.unwrap();
    drop(alice_ws);
    assert_eq!(
        presence_of(&mut carol_ws, &alice).await["status"],
        "offline"
    );

    // Subscriptions need a connection and are bounded.
    let bob = t.client("bob").await;
    let (s, _) = t
        .call(
            Method::PUT,
            "/api/presence/subscriptions",
            Some(&bob.token),
            Some(json!({"userIds": [alice.user_id]})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let (s, _) = t
        .call(
            Method::PUT,
            "/api/presence/subscriptions",
            Some(&carol.token),
            Some(json!({ "userIds": many })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(subscribers_hear_presence);

fn typing(to: &Client, content: &[u8], timestamp: i64) -> Value {
    json!({
        "recipientId": to.user_id,
        "timestamp": timestamp,
        "messages": [{"deviceId": to.device_id, "content": b64(content)}],
    })
}

async fn typing_reaches_online_devices_only(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let carol = t.client("carol").await;
    let gid = group(&t, &alice, &[&bob]).await;
    for c in [&alice, &bob] {
        for e in mailbox(&t, c).await {
            t.call(
                Method::DELETE,
                &format!("/api/messages/{}", e["seq"]),
                Some(&c.token),
                None,
            )
            .await;
        }
    }
    let rows = snapshot(&t).await;

    // Bob is offline: accepted, not stored, never delivered later.
    let (s, _) = t
        .post(
            "/api/messages/ephemeral",
            Some(&alice.token),
            typing(&bob, b"typing-start", sotto_server::now_ms()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(snapshot(&t).await, rows);
    let mut bob_ws = connect(server.addr, &bob).await;
    assert_eq!(
        maybe_frame(&mut bob_ws, QUIET).await.unwrap()["type"],
        "queueEmpty"
    );
    let mut alice_ws = connect(server.addr, &alice).await;
    assert!(
        maybe_frame(&mut bob_ws, QUIET)
            .await
            .is_none_or(|f| f["type"] != "ephemeral"),
        "an ephemeral sent while offline must never arrive"
    );

    // Online: delivered at once, as an ephemeral frame.
    let now = sotto_server::now_ms();
    let (s, _) = t
        .post(
            "/api/messages/ephemeral",
            Some(&alice.token),
            typing(&bob, b"typing-start", now),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let f = frame_of(&mut bob_ws, "ephemeral").await;
    assert_eq!(f["data"]["content"], b64(b"typing-start"));
    assert_eq!(f["data"]["sourceUserId"], alice.user_id.as_str());
    assert_eq!(f["data"]["timestamp"], now);
    assert!(f["data"].get("seq").is_none());

    // Older than 10 s: dropped.
    let (s, _) = t
        .post(
            "/api/messages/ephemeral",
            Some(&alice.token),
            typing(&bob, b"stale", sotto_server::now_ms() - 11_000),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(maybe_frame(&mut bob_ws, QUIET)
        .await
        .is_none_or(|f| f["type"] != "ephemeral"));

    // Group typing: one ciphertext to the other members' online devices; members only.
    let (s, _) = t
        .post(
            "/api/messages/ephemeral",
            Some(&bob.token),
            json!({"groupId": gid, "timestamp": sotto_server::now_ms(), "content": b64(b"group-typing")}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let f = frame_of(&mut alice_ws, "ephemeral").await;
    assert_eq!(f["data"]["groupId"], gid.as_str());
    assert_eq!(f["data"]["content"], b64(b"group-typing"));
    let (s, v) = t
        .post(
            "/api/messages/ephemeral",
            Some(&carol.token),
            json!({"groupId": gid, "timestamp": sotto_server::now_ms(), "content": b64(b"x")}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_group"))
    );

    // Bad input.
    for body in [
        json!({"timestamp": 1, "content": b64(b"x")}),
        json!({"recipientId": bob.user_id, "groupId": gid, "timestamp": 1, "content": b64(b"x")}),
        json!({"recipientId": bob.user_id, "timestamp": 1, "messages": []}),
        json!({"recipientId": bob.user_id, "timestamp": 1, "messages": [{"deviceId": 1, "content": ""}]}),
    ] {
        let (s, v) = t
            .post("/api/messages/ephemeral", Some(&alice.token), body)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    assert_eq!(snapshot(&t).await, rows);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(typing_reaches_online_devices_only);

async fn strangers_see_no_presence(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let mallory = t.client("mallory").await;
    // Mallory writes to Alice: that makes Alice a contact of Mallory's, not the other way round.
    let (s, v) = t.send(&mallory, &alice, "spam", b"hi").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut mallory_ws = connect(server.addr, &mallory).await;
    frame_of(&mut mallory_ws, "queueEmpty").await;
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/presence/subscriptions",
            Some(&mallory.token),
            Some(json!({"userIds": [alice.user_id]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["statuses"],
        json!([{"userId": alice.user_id, "status": "offline"}])
    );
    // Alice comes online, goes away, goes offline: Mallory hears nothing and polls nothing.
    let mut alice_ws = connect(server.addr, &alice).await;
    frame_of(&mut alice_ws, "envelope").await;
    let (s, _) = set_presence(&t, &alice, "away").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let v = status(&t, &mallory, &alice).await;
    assert_eq!(v, json!({"userId": alice.user_id, "status": "offline"}));
    alice_ws.send(Message::Close(None)).await.unwrap();
    drop(alice_ws);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let v = status(&t, &mallory, &alice).await;
    assert_eq!(v, json!({"userId": alice.user_id, "status": "offline"}));
    assert!(maybe_frame(&mut mallory_ws, QUIET).await.is_none());
    // Alice, who wrote nothing to Mallory, still sees Mallory's presence: Mallory wrote to her.
    let v = status(&t, &alice, &mallory).await;
    assert_eq!(v["status"], "online");
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(strangers_see_no_presence);
