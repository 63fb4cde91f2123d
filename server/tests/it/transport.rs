//! The connection layer over real sockets: header-read, body-read and keep-alive idle timeouts,
//! the per-address connection cap, `Expect: 100-continue` over the limit, a slow WebSocket reader
//! closed with 4002, and client addresses from trusted proxies only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use futures_util::StreamExt as _;
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::both;
use crate::common::{Backend, TestApp};
use crate::support::http;

/// Reads until the server closes (`Ok(0)` or a reset) or `within` passes; returns what was read
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn short_timeouts(b: Backend) -> TestApp {
    TestApp::with(b, |c| {
        c.http_header_timeout = Duration::from_secs(1);
        c.http_body_timeout = Duration::from_secs(1);
        c.http_idle_timeout = Duration::from_secs(1);
    })
    .await
}

async fn silent_and_trickling_clients_are_closed(b: Backend) {
    let t = short_timeouts(b).await;
    let server = t.serve().await;
    // Sends nothing at all.
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection stays open");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Trickles header lines, each well inside any per-read timeout.
    let started = Instant::now();
    let trickle = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = trickle.into_split();
    wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let writer = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"X-Pad: 1\r\n").await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let in_time = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! { _ = closed => {}, _ = writer => {} }
    })
    .await;
    assert!(in_time.is_ok(), "a trickled head keeps the connection open");
    assert!(started.elapsed() < Duration::from_secs(4));
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(silent_and_trickling_clients_are_closed);

async fn idle_keep_alive_and_stalled_bodies_are_closed(b: Backend) {
    let t = short_timeouts(b).await;
    let server = t.serve().await;
    // A complete request is answered; then the idle connection is closed.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stays open");
    assert!(answered.elapsed() >= Duration::from_millis(900));

    // A body that stops arriving: 408, then the connection closes; nothing is stored.
    let before = t.snapshot().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"POST /api/users/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .await
    .unwrap();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed);
    assert_eq!(t.snapshot().await, before);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(idle_keep_alive_and_stalled_bodies_are_closed);

async fn expect_continue_over_the_limit_is_refused_at_once(b: Backend) {
    let t = TestApp::new(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    for (path, len) in [
        ("/api/users/register", 5_000_000u64),
        ("/api/messages/send", 2_000_000),
        ("/api/attachments", 60 * 1024 * 1024),
    ] {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n",
            alice.token
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer without sending the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("payload_too_large"), "{path}: {answer}");
    }
    // Within the limit, the client is told to go on.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /api/users/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(expect_continue_over_the_limit_is_refused_at_once);

async fn connections_per_address_are_capped(b: Backend) {
    let t = TestApp::with(b, |c| c.max_connections_per_address = 3).await;
    let server = t.serve().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the relay count them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut fourth, Duration::from_secs(2)).await;
    assert!(closed, "a fourth connection from one address is served");
    // Closing one makes room.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _, _) = http(
        server.addr,
        Method::GET,
        "/healthz",
        None,
        &[],
        Full::new(Bytes::new()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, metrics) = t.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("sotto_connections_refused_total 1")),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(connections_per_address_are_capped);

async fn a_slow_websocket_reader_gets_close_4002(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.ws_slow_consumer = Duration::from_secs(1);
        c.ws_max_unacked = 100_000;
    })
    .await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    // More than the socket buffers hold.
    let big = vec![7u8; 60 * 1024];
    for i in 0..120 {
        let (s, v) = t.send(&alice, &bob, &format!("big{i}"), &big).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut req = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", bob.token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    // Reads nothing for longer than the relay waits for a writable socket, then reads it all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let code = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the connection ends in time");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => break 0,
            Some(Ok(_)) => continue,
        }
    };
    assert_eq!(code, 4002, "a slow reader is told why it is closed");
    // Nothing was acked: everything stays queued for the next connection.
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 120);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(a_slow_websocket_reader_gets_close_4002);

async fn register_from(addr: SocketAddr, name: &str, forwarded_for: &str) -> StatusCode {
    let body = json!({"username": name, "email": "p@example.com", "password": "password123"});
    let (s, _, _) = http(
        addr,
        Method::POST,
        "/api/users/register",
        None,
        &[
            ("content-type", "application/json".to_owned()),
            ("x-forwarded-for", forwarded_for.to_owned()),
        ],
        Full::new(Bytes::from(body.to_string())),
    )
    .await;
    s
}

async fn forwarded_addresses_only_from_trusted_proxies(b: Backend) {
    let limited = |c: &mut sotto_server::Config| {
        c.rate_limits.set_from_flag("registration=2/hour").unwrap();
    };
    // Behind a trusted proxy (the test client's loopback address), clients have their own buckets.
    let t = TestApp::with(b, |c| {
        limited(c);
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let server = t.serve().await;
    assert_eq!(
        register_from(server.addr, "p_one", "198.51.100.1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(server.addr, "p_two", "198.51.100.1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(server.addr, "p_three", "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        register_from(server.addr, "p_four", "198.51.100.2").await,
        StatusCode::CREATED
    );
    // A spoofed left-most entry does not buy a new bucket.
    assert_eq!(
        register_from(server.addr, "p_five", "203.0.113.5, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    server.shutdown().await.unwrap();
    t.finish().await;

    // Without the setting, the header is ignored: one peer, one bucket.
    let t = TestApp::with(b, limited).await;
    let server = t.serve().await;
    assert_eq!(
        register_from(server.addr, "q_one", "198.51.100.1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(server.addr, "q_two", "198.51.100.2").await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_from(server.addr, "q_three", "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(forwarded_addresses_only_from_trusted_proxies);
