//! Several relay processes: three real `sotto-server` processes on one PostgreSQL database,
//! joined by LISTEN/NOTIFY on that database or by NATS (`--nats-url`, the `nats-server` at
//! 127.0.0.1:4222). Clients spread over them exchange 1:1 and group messages, see each other's
//! presence and typing, are replaced across processes, link a device through two processes; then
//! one process is killed with SIGKILL under traffic, its client reconnects to another, and every
//! accepted message arrives exactly once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{b64, Backend, Client};
use crate::crash::{ack, free_addr, register, sigkill, Database, Http, Relay};
use crate::support::{frame_of, maybe_frame};
use crate::ws::{connect, Ws};

/// What joins the processes.
#[derive(Debug, Clone, Copy)]
enum Bus {
    Notify,
    Nats,
}

fn nats_url() -> String {
    std::env::var("SOTTO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

struct Processes {
    addrs: Vec<SocketAddr>,
    relays: Vec<Relay>,
    /// Dropped (with the PostgreSQL database) after the relays: fields drop in order.
    _db: Database,
}

impl Processes {
    async fn start(bus: Bus, n: usize) -> Self {
        let db = Database::create(Backend::Postgres).await;
        std::fs::write(
            db.dir.path().join("relay.toml"),
            "[rate-limits]\nmessages = \"off\"\nephemeral = \"off\"\nprovisioning = \"off\"\n\
             registration = \"off\"\nlogin = \"off\"\n",
        )
        .unwrap();
        // Members are added at once (no invitations to accept first).
        let mut extra = vec!["--open-group-adds".to_owned()];
        extra.extend(match bus {
            Bus::Notify => Vec::new(),
            // A subject of its own, so tests running at once never hear each other.
            Bus::Nats => vec![
                "--nats-url".to_owned(),
                nats_url(),
                "--nats-subject".to_owned(),
                format!("sotto.test.{:016x}", rand::random::<u64>()),
            ],
        });
        let mut addrs = Vec::new();
        let mut relays = Vec::new();
        for run in 0..n {
            let addr = free_addr();
            relays.push(Relay::start_with(&db, addr, run, &extra).await);
            addrs.push(addr);
        }
        Self {
            _db: db,
            addrs,
            relays,
        }
    }

    fn logs(&self) -> String {
        self.relays
            .iter()
            .map(Relay::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

/// Waits for a frame of `kind` whose `data` satisfies `pred`, skipping others; panics after 10 s.
async fn frame_where(ws: &mut Ws, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(f) = maybe_frame(ws, left).await else {
            panic!("no {kind} frame as expected within 10 s");
        };
        if f["type"] == kind && pred(&f["data"]) {
            return f;
        }
    }
}

/// Retries `check` (a request) until it holds, for up to 10 s: presence crosses processes
/// asynchronously.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn send_body(to: &Client, id: &str) -> Value {
    json!({
        "recipientId": to.user_id,
        "clientMessageId": id,
        "messages": [{"deviceId": to.device_id, "registrationId": to.registration_id, "content": b64(id.as_bytes())}],
    })
}

async fn send(addr: SocketAddr, from: &Client, to: &Client, id: &str) -> (u16, Value) {
    Http::new(addr)
        .call(
            "POST",
            "/api/messages/send",
            Some(&from.token),
            Some(&send_body(to, id)),
        )
        .await
        .unwrap()
}

async fn status_of(addr: SocketAddr, viewer: &Client, user: &Client) -> String {
    let (s, v) = Http::new(addr)
        .call(
            "GET",
            &format!("/api/users/{}/status", user.user_id),
            Some(&viewer.token),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    v["status"].as_str().unwrap_or_default().to_owned()
}

async fn envelope(ws: &mut Ws) -> Value {
    let f = frame_of(ws, "envelope").await;
    let seq = f["data"]["seq"].as_u64().unwrap();
    ack(ws, &mut vec![seq]).await;
    f["data"].clone()
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

async fn realtime_crosses_processes(bus: Bus) {
    let p = Processes::start(bus, 3).await;
    let [a0, a1, a2] = [p.addrs[0], p.addrs[1], p.addrs[2]];
    let alice = register(a0, "alice").await;
    let bob = register(a1, "bob").await;
    let carol = register(a2, "carol").await;

    // Alice on process 0, Bob on 1, Carol on 2.
    let mut alice_ws = connect(a0, &alice).await;
    frame_of(&mut alice_ws, "queueEmpty").await;
    let mut bob_ws = connect(a1, &bob).await;
    frame_of(&mut bob_ws, "queueEmpty").await;
    let mut carol_ws = connect(a2, &carol).await;
    frame_of(&mut carol_ws, "queueEmpty").await;

    // 1:1, sent through a process neither device is connected to.
    let (s, v) = send(a2, &alice, &bob, "one-to-one").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(envelope(&mut bob_ws).await["clientMessageId"], "one-to-one");
    // Bob's ack (process 1) sends Alice (process 0) a delivery receipt.
    let r = frame_of(&mut alice_ws, "envelope").await;
    assert_eq!(r["data"]["kind"], "deliveryReceipt", "{r}");
    ack(&mut alice_ws, &mut vec![r["data"]["seq"].as_u64().unwrap()]).await;

    // A group of the three, its message sent through process 1.
    let mut http0 = Http::new(a0);
    let (s, v) = http0
        .call(
            "POST",
            "/api/groups",
            Some(&alice.token),
            Some(&json!({"members": [bob.user_id, carol.user_id], "metadata": b64(b"sealed")})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    let gid = v["groupId"].as_str().unwrap().to_owned();
    for ws in [&mut bob_ws, &mut carol_ws, &mut alice_ws] {
        // The `created` event.
        envelope(ws).await;
    }
    let (s, v) = Http::new(a1)
        .call(
            "POST",
            &format!("/api/groups/{gid}/messages"),
            Some(&alice.token),
            Some(&json!({"clientMessageId": "g1", "content": b64(b"sender-key ciphertext"), "messages": []})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    for ws in [&mut bob_ws, &mut carol_ws] {
        let e = envelope(ws).await;
        assert_eq!(e["content"], b64(b"sender-key ciphertext"), "{e}");
    }

    // Presence: Bob (process 1) sees Alice (process 0) online, asked through process 2.
    eventually("alice online at process 2", || async {
        status_of(a2, &bob, &alice).await == "online"
    })
    .await;
    // Subscribed through process 2 while connected to process 1.
    let (s, v) = Http::new(a2)
        .call(
            "PUT",
            "/api/presence/subscriptions",
            Some(&bob.token),
            Some(&json!({"userIds": [alice.user_id]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["statuses"][0]["status"], "online", "{v}");
    // Away, set through process 1 while connected to process 0: Bob hears it on process 1.
    let (s, v) = Http::new(a1)
        .call(
            "PUT",
            "/api/presence",
            Some(&alice.token),
            Some(&json!({"status": "away"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    frame_where(&mut bob_ws, "presence", |d| {
        d["userId"] == alice.user_id.as_str() && d["status"] == "away"
    })
    .await;

    // Typing, 1:1 and in the group, through process 2.
    let now = sotto_server::now_ms();
    let (s, v) = Http::new(a2)
        .call(
            "POST",
            "/api/messages/ephemeral",
            Some(&alice.token),
            Some(&json!({
                "recipientId": bob.user_id,
                "timestamp": now,
                "messages": [{"deviceId": bob.device_id, "content": b64(b"typing")}],
            })),
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    let f = frame_where(&mut bob_ws, "ephemeral", |_| true).await;
    assert_eq!(f["data"]["content"], b64(b"typing"), "{f}");
    let (s, v) = Http::new(a0)
        .call(
            "POST",
            "/api/messages/ephemeral",
            Some(&bob.token),
            Some(&json!({"groupId": gid, "timestamp": now, "content": b64(b"group typing")})),
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    for ws in [&mut alice_ws, &mut carol_ws] {
        let f = frame_where(ws, "ephemeral", |_| true).await;
        assert_eq!(f["data"]["content"], b64(b"group typing"), "{f}");
    }

    // Alice leaves: Bob hears it on another process, and lastSeen is kept.
    drop(alice_ws);
    frame_where(&mut bob_ws, "presence", |d| {
        d["userId"] == alice.user_id.as_str() && d["status"] == "offline"
    })
    .await;

    // Replacement across processes: Bob reconnects at process 2; his socket at 1 is closed.
    let mut bob_ws2 = connect(a2, &bob).await;
    frame_of(&mut bob_ws2, "queueEmpty").await;
    assert_eq!(close_code(&mut bob_ws).await, Some(4001), "{}", p.logs());

    // Linking through two processes: the new device's channel is on process 0, the existing
    // device delivers through process 1, the new device picks up at process 0.
    let mut http0 = Http::new(a0);
    let (s, v) = http0
        .call("POST", "/api/provisioning", None, Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    let address = v["address"].as_str().unwrap().to_owned();
    let (s, v) = Http::new(a1)
        .call(
            "PUT",
            &format!("/api/provisioning/{address}"),
            Some(&carol.token),
            Some(&json!({"message": b64(b"sealed account keys")})),
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    // Only once.
    let (s, v) = Http::new(a2)
        .call(
            "PUT",
            &format!("/api/provisioning/{address}"),
            Some(&carol.token),
            Some(&json!({"message": b64(b"again")})),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("already_delivered")),
        "{v}"
    );
    let (s, v) = http0
        .call("GET", &format!("/api/provisioning/{address}"), None, None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], b64(b"sealed account keys"));
    // An address no process holds.
    let (s, v) = Http::new(a2)
        .call(
            "PUT",
            &format!("/api/provisioning/{}", "A".repeat(43)),
            Some(&carol.token),
            Some(&json!({"message": b64(b"x")})),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("unknown_address")),
        "{v}"
    );
    drop((bob_ws2, carol_ws));
}

async fn sigkill_loses_nothing_accepted(bus: Bus) {
    let p = Processes::start(bus, 3).await;
    let [a0, a1] = [p.addrs[0], p.addrs[1]];
    let alice = register(a0, "alice").await;
    let carol = register(a1, "carol").await;
    let carol_at = p.addrs[2];
    let mut carol_ws = connect(carol_at, &carol).await;
    frame_of(&mut carol_ws, "queueEmpty").await;

    // Alice sends through process 0 while Carol reads (and acks) at process 2.
    let to = carol.clone();
    let sender = tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut http = Http::new(a0);
        for i in 0..300 {
            let id = format!("m{i:04}");
            let (s, v) = http
                .call(
                    "POST",
                    "/api/messages/send",
                    Some(&alice.token),
                    Some(&send_body(&to, &id)),
                )
                .await
                .unwrap();
            assert_eq!(s, 200, "{v}");
            accepted.push(id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        accepted
    });
    let mut received = Vec::new();
    while received.len() < 60 {
        received.push(envelope(&mut carol_ws).await["clientMessageId"].clone());
    }
    // Process 2 dies under traffic; Carol reconnects at process 1 and reads the rest there.
    sigkill(&p.relays[2].child);
    p.relays[2].reap().await;
    drop(carol_ws);
    let accepted = sender.await.unwrap();
    let mut carol_ws = connect(a1, &carol).await;
    loop {
        let f = maybe_frame(&mut carol_ws, Duration::from_secs(10))
            .await
            .expect("frames after the reconnect");
        match f["type"].as_str() {
            Some("envelope") => {
                received.push(f["data"]["clientMessageId"].clone());
                ack(&mut carol_ws, &mut vec![f["data"]["seq"].as_u64().unwrap()]).await;
            }
            Some("queueEmpty") => break,
            _ => {}
        }
    }
    let ids: Vec<String> = received
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    // What the killed process pushed but never saw acked comes again: at least once over the
    // wire, exactly once after the client's de-duplication by server message id; never lost.
    let expected: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique, expected, "{}", p.logs());
}

mod notify {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn realtime_crosses_processes() {
        super::realtime_crosses_processes(Bus::Notify).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_loses_nothing_accepted() {
        super::sigkill_loses_nothing_accepted(Bus::Notify).await
    }
}

mod nats {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn realtime_crosses_processes() {
        super::realtime_crosses_processes(Bus::Nats).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_loses_nothing_accepted() {
        super::sigkill_loses_nothing_accepted(Bus::Nats).await
    }
}
