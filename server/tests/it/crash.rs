//! "Nothing acked is ever lost": the real relay binary, under concurrent sends, is killed with
//! SIGKILL and restarted on the same database and port, several times over.
//!
//! Every send answered "accepted" before a kill must then be delivered exactly once, in mailbox
//! order. Sends a kill cut off (no answer) are retried after the restart with the same client
//! message id, as a client would: the relay must accept each retry and store it exactly once,
//! whether or not the first attempt had been committed. Nothing that was never sent may arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};
use sqlx::{Connection as _, Executor as _};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::both;
use crate::common::{b64, Backend, Client};
use crate::ws::{connect, frame};

/// Kill and restart cycles.
const ROUNDS: usize = 3;
/// Concurrent senders per round.
const WORKERS: usize = 8;
/// Sends per sender and round at most (the kill normally comes long before).
const PER_WORKER: usize = 50;
/// Accepted sends per round before the kill.
const KILL_AFTER: usize = 120;
/// Envelopes per WebSocket ack.
const ACK_BATCH: usize = 50;
/// Any single HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A relay process answering `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole test, as a last resort (it normally takes a few seconds).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// A fresh database, dropped (PostgreSQL) even when the test fails.

fn pg_admin_url() -> String {
    std::env::var("SOTTO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database no other process has open: the test itself never connects to it, so a restart goes
/// through the same recovery as after a real crash.
pub(crate) struct Database {
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl Database {
    pub(crate) async fn create(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("relay.sqlite").display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("sotto_test_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL is required for the relay tests and is not reachable at \
                             {admin} ({e}). Run `bash scripts/test.sh` (it starts PostgreSQL) or \
                             set SOTTO_TEST_POSTGRES_URL."
                        )
                    });
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
                Self {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }
}

async fn drop_pg_database(name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    conn.close().await
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop may run inside the test's runtime (or while unwinding): use a thread of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let _ = rt.block_on(async {
                        tokio::time::timeout(Duration::from_secs(10), drop_pg_database(&name)).await
                    });
                }
            })
            .join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The relay process.

/// A 127.0.0.1 port nobody listens on right now.
pub(crate) fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A running `sotto-server`; killed (SIGKILL) when dropped, whatever happened.
pub(crate) struct Relay {
    /// Shared with the senders, which fire the SIGKILL themselves (see [`sender`]).
    pub(crate) child: Arc<Mutex<tokio::process::Child>>,
    log: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        sigkill(&self.child);
    }
}

/// Sends SIGKILL (`start_kill` on Unix) without waiting.
pub(crate) fn sigkill(child: &Mutex<tokio::process::Child>) {
    if let Ok(mut child) = child.lock() {
        let _ = child.start_kill();
    }
}

impl Relay {
    /// Starts the binary on `db` at `addr` and waits until `/healthz` answers. The port was just
    /// released (by the probe in [`free_addr`] or by the kill), so a failed start is retried.
    pub(crate) async fn start(db: &Database, addr: SocketAddr, run: usize) -> Self {
        Self::start_with(db, addr, run, &[]).await
    }

    /// [`Self::start`] with more command-line arguments.
    pub(crate) async fn start_with(
        db: &Database,
        addr: SocketAddr,
        run: usize,
        extra: &[String],
    ) -> Self {
        let mut last_error = String::new();
        for attempt in 0..5 {
            let log = db.dir.path().join(format!("relay-{run}-{attempt}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto-server"))
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--database-url")
                .arg(&db.url)
                .arg("--config")
                .arg(db.dir.path().join("relay.toml"))
                .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut relay = Relay {
                child: Arc::new(Mutex::new(child)),
                log,
            };
            match relay.wait_healthy(addr).await {
                Ok(()) => return relay,
                Err(e) => {
                    last_error = format!("{e}\n--- relay log ---\n{}", relay.log_text());
                    drop(relay);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        panic!("the relay did not start on {addr}: {last_error}");
    }

    async fn wait_healthy(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            let exited = self.child.lock().unwrap().try_wait();
            if let Some(status) = exited.map_err(|e| e.to_string())? {
                return Err(format!("exited with {status}"));
            }
            let mut http = Http::new(addr);
            if let Ok((200, _)) = http.call("GET", "/healthz", None, None).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no healthy answer within {STARTUP_TIMEOUT:?}"))
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end (after [`sigkill`]); returns the signal that ended it.
    pub(crate) async fn reap(&self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self.child.lock().unwrap().try_wait().unwrap();
            if let Some(status) = exited {
                return status.signal();
            }
            assert!(Instant::now() < deadline, "the killed relay ended in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP over one kept-alive connection, reconnecting after a failure.

pub(crate) struct Http {
    addr: SocketAddr,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Status and JSON body (Null if not JSON), or why there was no answer.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let result =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, token, body))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
            };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        if self.conn.is_none() {
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.conn = Some(sender);
        }
        let sender = self.conn.as_mut().unwrap();
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "relay");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(b).unwrap()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = sender
            .send_request(req.body(body).unwrap())
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Registers `name` and logs in its first device through the relay's API.
pub(crate) async fn register(addr: SocketAddr, name: &str) -> Client {
    let mut http = Http::new(addr);
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"});
    let (status, v) = http
        .call("POST", "/api/users/register", None, Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "register {name}: {v}");
    let registration_id = rand::random::<u32>() | 1;
    let body =
        json!({"username": name, "password": "password123", "registrationId": registration_id});
    let (status, v) = http
        .call("POST", "/api/users/login", None, Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 200, "login {name}: {v}");
    Client {
        user_id: v["userId"].as_str().unwrap().to_owned(),
        device_id: u32::try_from(v["deviceId"].as_u64().unwrap()).unwrap(),
        registration_id,
        token: v["token"].as_str().unwrap().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The senders.

/// The (opaque to the relay) content of the message with client id `id`.
fn content(id: &str) -> Vec<u8> {
    format!("ciphertext of {id};").repeat(12).into_bytes()
}

fn send_body(to: &Client, id: &str) -> Value {
    json!({
        "recipientId": to.user_id,
        "clientMessageId": id,
        "messages": [{"deviceId": to.device_id, "registrationId": to.registration_id, "content": b64(&content(id))}],
    })
}

/// What the senders of one round saw.
#[derive(Debug, Default, Clone)]
struct Ledger {
    /// Every client message id a request was started for.
    attempted: BTreeSet<String>,
    /// Answered 200: client message id → server message id.
    accepted: BTreeMap<String, String>,
    /// No answer (cut off by the kill) or a 5xx: may or may not be stored.
    uncertain: BTreeSet<String>,
    /// 5xx answers.
    server_errors: Vec<String>,
    /// Transport failures while the relay was supposed to be up.
    failures_before_kill: Vec<String>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    /// The relay process.
    relay: Arc<Mutex<tokio::process::Child>>,
    /// Set just before the SIGKILL.
    killed: AtomicBool,
    /// Signalled after the SIGKILL.
    killed_notify: Notify,
}

/// Sends one message at a time until the relay dies (or `PER_WORKER` are done). Returns the ids
/// accepted, in order: each was answered before the next one was sent.
///
/// The sender whose answer makes `KILL_AFTER` accepted sends the SIGKILL itself, right after
/// reading that answer, so the kill lands as close as a client can get to an answer: a relay that
/// answers before its commit reaches the database (write-behind, a group committed later) loses
/// the sends it answered in that window.
async fn sender(
    name: String,
    addr: SocketAddr,
    from: Client,
    to: Client,
    shared: Arc<Shared>,
) -> Vec<String> {
    let mut http = Http::new(addr);
    let mut chain = Vec::new();
    for i in 0..PER_WORKER {
        if shared.killed.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("{name}-{i:03}");
        shared.ledger.lock().unwrap().attempted.insert(id.clone());
        let answer = http
            .call(
                "POST",
                "/api/messages/send",
                Some(&from.token),
                Some(&send_body(&to, &id)),
            )
            .await;
        let mut ledger = shared.ledger.lock().unwrap();
        match answer {
            Ok((200, v)) => {
                assert_eq!(v["duplicate"], false, "first send of {id}: {v}");
                let server_id = v["serverMessageId"].as_str().unwrap().to_owned();
                ledger.accepted.insert(id.clone(), server_id);
                chain.push(id);
                if ledger.accepted.len() == KILL_AFTER {
                    shared.killed.store(true, Ordering::SeqCst);
                    sigkill(&shared.relay);
                    shared.killed_notify.notify_one();
                }
            }
            Ok((status, v)) if status >= 500 => {
                ledger.server_errors.push(format!("{id}: {status} {v}"));
                ledger.uncertain.insert(id);
            }
            Ok((status, v)) => panic!("send {id} answered {status}: {v}"),
            Err(e) => {
                ledger.uncertain.insert(id.clone());
                if shared.killed.load(Ordering::SeqCst) {
                    break;
                }
                ledger.failures_before_kill.push(format!("{id}: {e}"));
            }
        }
    }
    chain
}

/// One round: `WORKERS` concurrent senders, SIGKILL once `KILL_AFTER` sends were accepted (the
/// others are in flight then). Returns the round's ledger and each sender's accepted ids in order.
async fn load_then_kill(
    round: usize,
    relay: &Relay,
    addr: SocketAddr,
    alice: &Client,
    bob: &Client,
) -> (Ledger, Vec<Vec<String>>) {
    let shared = Arc::new(Shared {
        ledger: Mutex::default(),
        relay: relay.child.clone(),
        killed: AtomicBool::new(false),
        killed_notify: Notify::new(),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(sender(
                format!("r{round}-w{w}"),
                addr,
                alice.clone(),
                bob.clone(),
                shared.clone(),
            ))
        })
        .collect();
    if tokio::time::timeout(Duration::from_secs(60), shared.killed_notify.notified())
        .await
        .is_err()
    {
        panic!(
            "round {round}: fewer than {KILL_AFTER} sends accepted in 60 s: {:?}\n\
             --- relay log ---\n{}",
            shared.ledger.lock().unwrap(),
            relay.log_text()
        );
    }
    let signal = relay.reap().await;
    assert_eq!(signal, Some(9), "round {round}: the relay died of SIGKILL");
    let mut chains = Vec::new();
    for w in workers {
        let chain = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), w)
            .await
            .expect("a sender stops after the kill")
            .unwrap();
        chains.push(chain);
    }
    let ledger = shared.ledger.lock().unwrap().clone();
    assert!(
        ledger.failures_before_kill.is_empty(),
        "round {round}: requests failed while the relay was up: {:?}\n--- relay log ---\n{}",
        ledger.failures_before_kill,
        relay.log_text()
    );
    assert!(
        ledger.attempted.len() < WORKERS * PER_WORKER,
        "round {round}: the kill came after every send had finished; nothing was in flight"
    );
    (ledger, chains)
}

// ---------------------------------------------------------------------------------------------
// The recipient.

/// Connects `device` over the WebSocket, acks everything it is pushed until the backlog is
/// drained, and returns the envelopes in arrival order. Then checks the mailbox is empty.
async fn drain(addr: SocketAddr, device: &Client) -> Vec<Value> {
    let mut ws = tokio::time::timeout(Duration::from_secs(10), connect(addr, device))
        .await
        .expect("WebSocket connected in time");
    let mut envelopes = Vec::new();
    let mut unacked = Vec::new();
    loop {
        // `frame` waits at most 10 s.
        let f = frame(&mut ws).await;
        match f["type"].as_str() {
            Some("envelope") => {
                unacked.push(f["data"]["seq"].as_u64().unwrap());
                envelopes.push(f["data"].clone());
            }
            Some("queueEmpty") => break,
            _ => panic!("unexpected frame while draining: {f}"),
        }
        if unacked.len() >= ACK_BATCH {
            ack(&mut ws, &mut unacked).await;
        }
    }
    ack(&mut ws, &mut unacked).await;

    // Acks are applied asynchronously: the mailbox empties shortly.
    let mut http = Http::new(addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = http
            .call("GET", "/api/messages/unread", Some(&device.token), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        if v["count"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mailbox still holds {} envelopes after every push was acked",
            v["count"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    envelopes
}

pub(crate) async fn ack(ws: &mut crate::ws::Ws, seqs: &mut Vec<u64>) {
    if seqs.is_empty() {
        return;
    }
    let text = json!({"type": "ack", "data": {"ids": seqs}}).to_string();
    tokio::time::timeout(Duration::from_secs(10), ws.send(Message::Text(text.into())))
        .await
        .expect("ack sent in time")
        .unwrap();
    seqs.clear();
}

// ---------------------------------------------------------------------------------------------
// The test.

async fn kill_9_loses_nothing_accepted(backend: Backend) {
    tokio::time::timeout(TEST_TIMEOUT, kill_9_run(backend))
        .await
        .expect("the crash test finished in time");
}

async fn kill_9_run(backend: Backend) {
    let started = Instant::now();
    let db = Database::create(backend).await;
    // The load is far over the default 100 messages/minute.
    std::fs::write(
        db.dir.path().join("relay.toml"),
        "[rate-limits]\nmessages = \"off\"\n",
    )
    .unwrap();
    let addr = free_addr();
    let mut relay = Relay::start(&db, addr, 0).await;
    let alice = register(addr, "alice").await;
    let bob = register(addr, "bob").await;

    // Every id a request was started for.
    let mut sent: BTreeSet<String> = BTreeSet::new();
    // Accepted by a first attempt: what "nothing acked is ever lost" is about.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    // Every accepted id (first attempts and retries) → the server message id of its answer.
    let mut answers: BTreeMap<String, String> = BTreeMap::new();
    // Per sender and round, ids accepted one after the other.
    let mut chains: Vec<Vec<String>> = Vec::new();
    // Cut off by a kill, not yet retried.
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut report = Vec::new();
    for round in 0..=ROUNDS {
        if round > 0 {
            // Same database, same port.
            relay = Relay::start(&db, addr, round).await;
        }
        // A client that got no answer retries with the same client message id; the first
        // attempt may or may not have been stored, the retry must not store it twice.
        let mut stored_before = 0;
        let mut http = Http::new(addr);
        for id in std::mem::take(&mut pending) {
            let (status, v) = http
                .call(
                    "POST",
                    "/api/messages/send",
                    Some(&alice.token),
                    Some(&send_body(&bob, &id)),
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "retry of {id} after the restart: {v}");
            if v["duplicate"] == true {
                stored_before += 1;
            }
            answers.insert(id, v["serverMessageId"].as_str().unwrap().to_owned());
        }
        if round > 0 {
            report.push(format!("{stored_before} of them stored before the kill"));
        }
        if round == ROUNDS {
            break;
        }
        let (ledger, round_chains) = load_then_kill(round, &relay, addr, &alice, &bob).await;
        report.push(format!(
            "round {round}: {} accepted, {} cut off, {} 5xx",
            ledger.accepted.len(),
            ledger.uncertain.len(),
            ledger.server_errors.len()
        ));
        sent.extend(ledger.attempted);
        answers.extend(ledger.accepted.clone());
        acked.extend(ledger.accepted);
        pending = ledger.uncertain;
        chains.extend(round_chains);
    }

    let envelopes = drain(addr, &bob).await;

    // In mailbox order, each from alice with the content sent under its client message id and
    // the server message id its answer gave.
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    let mut twice = Vec::new();
    let mut last_seq = 0;
    for e in &envelopes {
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seq {seq} after {last_seq}: out of order");
        last_seq = seq;
        assert_eq!(e["kind"], "message", "{e}");
        assert_eq!(e["sourceUserId"], alice.user_id.as_str(), "{e}");
        let id = e["clientMessageId"].as_str().unwrap();
        assert!(sent.contains(id), "{id} arrived but was never sent: {e}");
        assert_eq!(
            e["content"].as_str().unwrap(),
            b64(&content(id)),
            "content of {id}"
        );
        assert_eq!(
            e["serverMessageId"].as_str(),
            answers.get(id).map(String::as_str),
            "{id} arrived under another server message id than its answer gave"
        );
        if seqs.insert(id.to_owned(), seq).is_some() {
            twice.push(id.to_owned());
        }
    }
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let lost: Vec<&String> = acked.keys().filter(|id| !seqs.contains_key(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} accepted envelopes were lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    let lost_retries: Vec<&String> = answers
        .keys()
        .filter(|id| !seqs.contains_key(*id))
        .collect();
    assert!(
        lost_retries.is_empty(),
        "retries accepted after a restart were lost: {lost_retries:?}"
    );
    assert_eq!(seqs.len(), answers.len());
    // A message accepted before the next one was sent comes first in the mailbox.
    for chain in &chains {
        for pair in chain.windows(2) {
            assert!(
                seqs[&pair[0]] < seqs[&pair[1]],
                "{} was accepted before {} was sent but has a later seq",
                pair[0],
                pair[1]
            );
        }
    }

    println!(
        "crash ({backend:?}): {}; {} sends, {} delivered exactly once in order, {:.1} s",
        report.join("; "),
        sent.len(),
        envelopes.len(),
        started.elapsed().as_secs_f64()
    );
    drop(relay);
}
both!(kill_9_loses_nothing_accepted);
