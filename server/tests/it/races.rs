//! Requests racing `DELETE /api/devices/{id}` of a device they target: sends answer 200, 409 or
//! 410 and acks 204 or 404, never 500, and what was accepted is consistent afterwards.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::both;
use crate::common::{b64, Backend, Client, TestApp};
use crate::linking::linked;
use crate::support::group;

/// Rounds per race; each round links a fresh device and removes it while requests fly.
const ROUNDS: usize = 12;
/// Racing requests per round.
const RACERS: usize = 8;

async fn status(
    router: Router,
    method: Method,
    path: String,
    token: String,
    body: Option<Value>,
) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&b).unwrap())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    router.oneshot(req).await.unwrap().status()
}

fn remove(t: &TestApp, by: &Client, target: &Client) -> tokio::task::JoinHandle<StatusCode> {
    tokio::spawn(status(
        t.router.clone(),
        Method::DELETE,
        format!("/api/devices/{}", target.device_id),
        by.token.clone(),
        None,
    ))
}

fn to_both(to: &[&Client]) -> Vec<Value> {
    to.iter()
        .map(|c| json!({"deviceId": c.device_id, "registrationId": c.registration_id, "content": b64(b"ct")}))
        .collect()
}

async fn sends_race_device_removal(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let mut seen = Vec::new();
    for round in 0..ROUNDS {
        let bob2 = linked(&t, &bob, 5000 + round as u32).await;
        let mut racers = Vec::new();
        for i in 0..RACERS {
            racers.push(tokio::spawn(status(
                t.router.clone(),
                Method::POST,
                "/api/messages/send".into(),
                alice.token.clone(),
                Some(json!({
                    "recipientId": bob.user_id,
                    "clientMessageId": format!("r{round}-{i}"),
                    "messages": to_both(&[&bob, &bob2]),
                })),
            )));
            if i == RACERS / 2 {
                racers.push(remove(&t, &bob, &bob2));
            }
        }
        for r in racers {
            let s = r.await.unwrap();
            assert!(
                matches!(
                    s,
                    StatusCode::OK
                        | StatusCode::CONFLICT
                        | StatusCode::GONE
                        | StatusCode::NO_CONTENT
                ),
                "round {round}: {s}"
            );
            seen.push(s);
        }
    }
    assert!(seen.contains(&StatusCode::OK));
    // Nothing is queued for a removed device; the remaining device can read its mailbox.
    let (s, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        crate::support::count(
            &t,
            "envelopes e LEFT JOIN devices d ON d.pk = e.device_pk WHERE d.pk IS NULL"
        )
        .await,
        0
    );
    t.finish().await;
}
both!(sends_race_device_removal);

async fn acks_race_removal_of_a_receipt_target(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for round in 0..ROUNDS {
        // Alice's second device is a receipt target of every ack of her messages.
        let alice2 = linked(&t, &alice, 6000 + round as u32).await;
        let mut seqs = Vec::new();
        for i in 0..RACERS {
            let (s, v) = t
                .post(
                    "/api/messages/send",
                    Some(&alice.token),
                    json!({
                        "recipientId": bob.user_id,
                        "clientMessageId": format!("a{round}-{i}"),
                        "messages": to_both(&[&bob]),
                        "syncMessages": to_both(&[&alice2]),
                    }),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let (_, v) = t.get("/api/messages?limit=100", &bob.token).await;
        for e in v["envelopes"].as_array().unwrap() {
            seqs.push(e["seq"].as_u64().unwrap());
        }
        let mut racers = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            racers.push(tokio::spawn(status(
                t.router.clone(),
                Method::DELETE,
                format!("/api/messages/{seq}"),
                bob.token.clone(),
                None,
            )));
            if i == seqs.len() / 2 {
                racers.push(remove(&t, &alice, &alice2));
            }
        }
        for r in racers {
            let s = r.await.unwrap();
            assert!(
                matches!(s, StatusCode::NO_CONTENT | StatusCode::NOT_FOUND),
                "round {round}: {s}"
            );
        }
        // The mailbox is drained: every ack was applied exactly once.
        let (_, v) = t.get("/api/messages/unread", &bob.token).await;
        assert_eq!(v["count"], 0, "round {round}");
    }
    assert_eq!(
        crate::support::count(
            &t,
            "envelopes e LEFT JOIN devices d ON d.pk = e.device_pk WHERE d.pk IS NULL"
        )
        .await,
        0
    );
    t.finish().await;
}
both!(acks_race_removal_of_a_receipt_target);

async fn group_sends_race_removal_of_a_pairwise_target(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    // Bob and Alice are contacts: the group add is immediate.
    let (s, v) = t.send(&alice, &bob, "hello", b"hi").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let gid = group(&t, &alice, &[&bob]).await;
    for round in 0..ROUNDS {
        let bob2 = linked(&t, &bob, 7000 + round as u32).await;
        let mut racers = Vec::new();
        for i in 0..RACERS {
            racers.push(tokio::spawn(status(
                t.router.clone(),
                Method::POST,
                format!("/api/groups/{gid}/messages"),
                alice.token.clone(),
                Some(json!({
                    "clientMessageId": format!("g{round}-{i}"),
                    "content": b64(b"sender-key ciphertext"),
                    "messages": [
                        {"userId": bob.user_id, "deviceId": bob.device_id, "registrationId": bob.registration_id, "content": b64(b"skdm")},
                        {"userId": bob.user_id, "deviceId": bob2.device_id, "registrationId": bob2.registration_id, "content": b64(b"skdm")},
                    ],
                })),
            )));
            if i == RACERS / 2 {
                racers.push(remove(&t, &bob, &bob2));
            }
        }
        for r in racers {
            let s = r.await.unwrap();
            assert!(
                matches!(
                    s,
                    StatusCode::OK
                        | StatusCode::CONFLICT
                        | StatusCode::GONE
                        | StatusCode::NO_CONTENT
                ),
                "round {round}: {s}"
            );
        }
    }
    t.finish().await;
}
both!(group_sends_race_removal_of_a_pairwise_target);

async fn a_removed_sender_is_refused_not_failed(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for round in 0..ROUNDS {
        // The sending device removes itself while its own sends are in flight.
        let alice2 = linked(&t, &alice, 8000 + round as u32).await;
        let mut racers = Vec::new();
        for i in 0..RACERS {
            racers.push(tokio::spawn(status(
                t.router.clone(),
                Method::POST,
                "/api/messages/send".into(),
                alice2.token.clone(),
                Some(json!({
                    "recipientId": bob.user_id,
                    "clientMessageId": format!("s{round}-{i}"),
                    "messages": to_both(&[&bob]),
                    "syncMessages": to_both(&[&alice]),
                })),
            )));
            if i == RACERS / 2 {
                racers.push(remove(&t, &alice2, &alice2));
            }
        }
        for r in racers {
            let s = r.await.unwrap();
            assert!(
                matches!(
                    s,
                    StatusCode::OK | StatusCode::UNAUTHORIZED | StatusCode::NO_CONTENT
                ),
                "round {round}: {s}"
            );
        }
    }
    t.finish().await;
}
both!(a_removed_sender_is_refused_not_failed);
