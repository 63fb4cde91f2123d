use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::both;
use crate::common::{b64, Backend, Client, TestApp};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(addr: SocketAddr, client: &Client) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", client.token).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws
}

/// The next JSON frame (pings skipped).
pub async fn frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .expect("stream open")
            .expect("frame ok");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Waits for a close frame and returns its code.
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("close in time");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return 0,
            Some(Ok(_)) => continue,
        }
    }
}

async fn ack(ws: &mut Ws, ids: &[u64]) {
    let frame = json!({"type": "ack", "data": {"ids": ids}}).to_string();
    ws.send(Message::Text(frame.into())).await.unwrap();
}

async fn backlog_in_order_then_live_then_receipt(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    // A backlog bigger than one page.
    for i in 0..150 {
        let (s, _) = t
            .send(&alice, &bob, &format!("b{i}"), format!("{i}").as_bytes())
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let mut alice_ws = connect(server.addr, &alice).await;
    assert_eq!(frame(&mut alice_ws).await["type"], "queueEmpty");
    let mut bob_ws = connect(server.addr, &bob).await;
    let mut seqs = Vec::new();
    for i in 0..150 {
        let f = frame(&mut bob_ws).await;
        assert_eq!(f["type"], "envelope", "{f}");
        assert_eq!(f["data"]["content"], b64(format!("{i}").as_bytes()));
        seqs.push(f["data"]["seq"].as_u64().unwrap());
        if seqs.len() == 50 {
            ack(&mut bob_ws, &seqs).await;
            seqs.clear();
        }
    }
    assert_eq!(frame(&mut bob_ws).await["type"], "queueEmpty");
    ack(&mut bob_ws, &seqs).await;

    // Live: a new message arrives without polling.
    let (s, _) = t.send(&alice, &bob, "live", b"now").await;
    assert_eq!(s, StatusCode::OK);
    let f = frame(&mut bob_ws).await;
    assert_eq!(f["data"]["clientMessageId"], "live");
    ack(&mut bob_ws, &[f["data"]["seq"].as_u64().unwrap()]).await;

    // Alice's connection receives a delivery receipt for each acked message.
    let mut receipts = 0;
    let mut ids = Vec::new();
    while receipts < 151 {
        let f = frame(&mut alice_ws).await;
        assert_eq!(f["type"], "envelope");
        assert_eq!(f["data"]["kind"], "deliveryReceipt");
        assert_eq!(f["data"]["sourceUserId"], bob.user_id.as_str());
        ids.push(f["data"]["seq"].as_u64().unwrap());
        receipts += 1;
        if ids.len() == 100 {
            ack(&mut alice_ws, &ids).await;
            ids.clear();
        }
    }
    ack(&mut alice_ws, &ids).await;
    // Everything acked: both mailboxes drain to zero.
    let mut drained = false;
    for _ in 0..100 {
        let (_, a) = t.get("/api/messages/unread", &alice.token).await;
        let (_, b) = t.get("/api/messages/unread", &bob.token).await;
        if a["count"] == 0 && b["count"] == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(drained);
    drop((alice_ws, bob_ws));
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(backlog_in_order_then_live_then_receipt);

async fn unacked_redelivered_and_query_token(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    t.send(&alice, &bob, "once", b"x").await;
    let mut ws = connect(server.addr, &bob).await;
    let first = frame(&mut ws).await;
    assert_eq!(first["type"], "envelope");
    drop(ws);
    // Browser style: token in the query string. Not acked before: delivered again.
    let url = format!("ws://{}/ws?token={}", server.addr, bob.token);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let again = frame(&mut ws).await;
    assert_eq!(again["data"]["seq"], first["data"]["seq"]);
    // App-level ping.
    ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(frame(&mut ws).await["type"], "queueEmpty");
    assert_eq!(frame(&mut ws).await["type"], "pong");
    // Acking someone else's or unknown ids: error frame, nothing deleted.
    ack(&mut ws, &[first["data"]["seq"].as_u64().unwrap() + 1000]).await;
    let f = frame(&mut ws).await;
    assert_eq!(f["type"], "error");
    assert_eq!(f["data"]["code"], "unknown_envelope");
    // Malformed frame: error, connection stays.
    ws.send(Message::Text("{nope".into())).await.unwrap();
    assert_eq!(frame(&mut ws).await["data"]["code"], "invalid_frame");
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(frame(&mut ws).await["data"]["code"], "invalid_frame");
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 1);
    // An oversize frame closes the connection (1009), the relay stays up.
    ws.send(Message::Text("x".repeat(64 * 1024).into()))
        .await
        .ok();
    let code = close_code(&mut ws).await;
    assert!(code == 1009 || code == 0, "{code}");
    let (s, _) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(unacked_redelivered_and_query_token);

async fn replacement_window_and_slow_consumer(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.ws_max_unacked = 5;
        c.ws_ping = Duration::from_millis(200);
        c.ws_slow_consumer = Duration::from_secs(1);
    })
    .await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for i in 0..12 {
        t.send(&alice, &bob, &format!("w{i}"), b"x").await;
    }
    let mut old = connect(server.addr, &bob).await;
    for _ in 0..5 {
        assert_eq!(frame(&mut old).await["type"], "envelope");
    }
    // A second connection of the same device replaces the first.
    let mut new = connect(server.addr, &bob).await;
    assert_eq!(close_code(&mut old).await, 4001);
    // Only the window is pushed until acks arrive.
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let f = frame(&mut new).await;
        seqs.push(f["data"]["seq"].as_u64().unwrap());
    }
    ack(&mut new, &seqs).await;
    for _ in 0..5 {
        assert_eq!(frame(&mut new).await["type"], "envelope");
    }
    // Never acking: closed as a slow consumer, envelopes stay queued.
    assert_eq!(close_code(&mut new).await, 4002);
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 7);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(replacement_window_and_slow_consumer);

async fn idle_timeout_logout_and_shutdown(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.ws_ping = Duration::from_millis(100);
        c.ws_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    // Silent client (never reads, so never answers pings): idle timeout.
    let mut ws = connect(server.addr, &alice).await;
    assert_eq!(frame(&mut ws).await["type"], "queueEmpty");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(close_code(&mut ws).await, 4003);
    // Logout closes the device's socket.
    let mut ws = connect(server.addr, &alice).await;
    assert_eq!(frame(&mut ws).await["type"], "queueEmpty");
    let (s, _) = t
        .call(
            axum::http::Method::POST,
            "/api/users/logout",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut ws).await, 4004);
    // Graceful shutdown says "going away".
    let mut ws = connect(server.addr, &bob).await;
    assert_eq!(frame(&mut ws).await["type"], "queueEmpty");
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(close_code(&mut ws).await, 1001);
    stopping.await.unwrap().unwrap();
    t.finish().await;
}
both!(idle_timeout_logout_and_shutdown);

/// Scale-out: two relay processes on one PostgreSQL database hand deliveries to each other through
/// LISTEN/NOTIFY. (PostgreSQL only: SQLite deployments are a single process by design.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_processes_wake_each_other() {
    let t = TestApp::new(Backend::Postgres).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let a = t.serve().await;
    // A second process: its own state, hub and listener on the same database.
    let other = t.reopen().await;
    let b = sotto_server::serve::spawn(other.clone(), None)
        .await
        .unwrap();

    let mut bob_ws = connect(b.addr, &bob).await;
    assert_eq!(frame(&mut bob_ws).await["type"], "queueEmpty");
    let mut alice_ws = connect(a.addr, &alice).await;
    assert_eq!(frame(&mut alice_ws).await["type"], "queueEmpty");
    // Sent through process A (the in-process router), delivered by process B.
    let (s, _) = t.send(&alice, &bob, "x-proc", b"hello").await;
    assert_eq!(s, StatusCode::OK);
    let f = frame(&mut bob_ws).await;
    assert_eq!(f["data"]["clientMessageId"], "x-proc");
    // Bob acks on B; the receipt reaches Alice's socket on A.
    ack(&mut bob_ws, &[f["data"]["seq"].as_u64().unwrap()]).await;
    let r = frame(&mut alice_ws).await;
    assert_eq!(r["data"]["kind"], "deliveryReceipt");
    drop((alice_ws, bob_ws));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    t.finish().await;
}
