//! Helpers for the group, presence, linking and attachment tests: raw HTTP over a real socket,
//! WebSocket frames with a deadline, and row counts of the tables those features use.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use serde_json::{json, Value};
use sqlx::Connection as _;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{b64, Client, TestApp};
use crate::ws::Ws;

/// One HTTP/1.1 request over a fresh TCP connection.
pub async fn http<B>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    body: B,
) -> (StatusCode, HeaderMap, Bytes)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let route = path.split('?').next().and_then(crate::common::route_of);
    crate::common::check_declared(&method, path, route.as_deref(), status);
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// The next JSON text frame within `wait`, or `None`.
pub async fn maybe_frame(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).unwrap())
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// The next frame of type `kind` (others skipped), within 10 s.
pub async fn frame_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = maybe_frame(ws, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no {kind} frame"));
        if f["type"] == kind {
            return f;
        }
    }
}

/// `SELECT COUNT(*) FROM <table> [WHERE …]` on the test database.
pub async fn count(t: &TestApp, query: &str) -> i64 {
    let q = format!("SELECT COUNT(*) FROM {query}");
    if t.url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&t.url).await.unwrap();
        let n = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    } else {
        let mut c = sqlx::SqliteConnection::connect(&t.url).await.unwrap();
        let n = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    }
}

/// Row counts of every table groups, linking and presence touch (with the core's).
pub async fn snapshot(t: &TestApp) -> Vec<i64> {
    let mut out = t.snapshot().await;
    for table in [
        "chat_groups",
        "group_members",
        "group_invites",
        "group_messages",
        "link_codes",
        "last_seen",
    ] {
        out.push(count(t, table).await);
    }
    out
}

/// Creates a group of `admin` with `members`; returns its id.
pub async fn group(t: &TestApp, admin: &Client, members: &[&Client]) -> String {
    let ids: Vec<&str> = members.iter().map(|c| c.user_id.as_str()).collect();
    let (s, v) = t
        .post(
            "/api/groups",
            Some(&admin.token),
            json!({"members": ids, "metadata": b64(b"encrypted name")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["groupId"].as_str().unwrap().to_owned()
}

/// Every queued envelope of a device (first page), acking nothing.
pub async fn mailbox(t: &TestApp, c: &Client) -> Vec<Value> {
    let (s, v) = t.get("/api/messages?limit=100", &c.token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["envelopes"].as_array().unwrap().clone()
}

/// Decodes the JSON content of a group event envelope.
pub fn event(envelope: &Value) -> Value {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(envelope["content"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}
