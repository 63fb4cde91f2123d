//! The real binary, killed with SIGKILL while sends are in flight: after a restart on the same
//! database every envelope that was answered "accepted" is still queued.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

use crate::both;
use crate::common::{b64, Backend, TestApp};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Option<(u16, Value)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "relay");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Full::new(Bytes::from(serde_json::to_vec(&b).unwrap()))
        }
        None => Full::new(Bytes::new()),
    };
    let resp = sender.send_request(req.body(body).unwrap()).await.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

fn start(url: &str, addr: SocketAddr, config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--listen", &addr.to_string(), "--database-url", url])
        .arg("--config")
        .arg(config)
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_up(addr: SocketAddr) {
    for _ in 0..200 {
        if let Some((200, _)) = http(addr, "GET", "/healthz", None, None).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("relay did not come up on {addr}");
}

async fn kill_9_loses_nothing_accepted(b: Backend) {
    let t = TestApp::new(b).await;
    // Accounts through the in-process app, then hand the database to the binary.
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    t.state.store().close().await;

    // The load below is far over the default 100 messages/minute.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[rate-limits]\nmessages = \"off\"\n").unwrap();
    let addr = free_addr();
    let mut relay = start(&t.url, addr, &config);
    wait_up(addr).await;
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for w in 0..4 {
        let (accepted, alice, bob) = (accepted.clone(), alice.clone(), bob.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}-{i}");
                let body = json!({"recipientId": bob.user_id, "clientMessageId": id,
                    "messages": [{"deviceId": 1, "registrationId": bob.registration_id, "content": b64(id.as_bytes())}]});
                match http(addr, "POST", "/api/messages/send", Some(&alice.token), Some(body)).await {
                    Some((200, _)) => accepted.lock().unwrap().push(id),
                    Some((status, v)) => panic!("unexpected {status} {v}"),
                    None => return,
                }
            }
        }));
    }
    // Kill while sends are in flight, once some have been accepted (the machine may be busy).
    for _ in 0..300 {
        if accepted.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.start_kill().unwrap();
    relay.wait().await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 40, "only {} sends got through", accepted.len());

    let addr = free_addr();
    let mut relay = start(&t.url, addr, &config);
    wait_up(addr).await;
    let mut stored = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let (status, page) = http(addr, "GET", &format!("/api/messages?after={after}"), Some(&bob.token), None)
            .await
            .unwrap();
        assert_eq!(status, 200);
        for e in page["envelopes"].as_array().unwrap() {
            stored.insert(e["clientMessageId"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_u64() {
            Some(c) => after = c,
            None => break,
        }
    }
    let lost: Vec<&String> = accepted.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} accepted envelopes lost: {lost:?}", lost.len());
    relay.start_kill().unwrap();
    relay.wait().await.unwrap();
    t.finish().await;
}
both!(kill_9_loses_nothing_accepted);
