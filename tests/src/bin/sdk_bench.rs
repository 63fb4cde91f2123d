//! The client SDK's numbers against the real relay (run with `--release`):
//!
//! ```text
//! cargo build --release -p sotto-server -p sotto-e2e --bin sdk-bench
//! target/release/sdk-bench [--messages N] [--postgres]
//! ```
//!
//! 1. One client (encrypted SQLite store) sends N 1:1 texts to a peer with 3 devices, plus its
//!    own other device: messages/s accepted by the relay.
//! 2. The peer's device (encrypted SQLite store) comes online and decrypts, stores and acks the
//!    N: messages/s.
//! 3. The store alone: a message row committed to the encrypted SQLite store, amortised.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_client::{
    ClientEvent, ClientOptions, Event, IdentityPolicy, SottoClient, StoreLocation, StoreSecret,
};
use sotto_e2e::{Db, Relay};

fn opts(url: &str, dir: &std::path::Path, name: &str) -> ClientOptions {
    ClientOptions {
        server_url: url.to_owned(),
        store: StoreLocation::Sqlite(dir.join(format!("{name}.sqlite"))),
        store_secret: StoreSecret::Key([7; 32]),
        identity_policy: IdentityPolicy::RequireApproval,
    }
}

async fn account(relay: &Relay, dir: &std::path::Path, name: &str) -> Result<SottoClient, String> {
    let pw = format!("{name}-password");
    SottoClient::register(&relay.url, name, &format!("{name}@example.com"), &pw)
        .await
        .map_err(|e| e.to_string())?;
    SottoClient::login(opts(&relay.url, dir, name), name, &pw)
        .await
        .map_err(|e| e.to_string())
}

async fn link(
    relay: &Relay,
    dir: &std::path::Path,
    name: &str,
    existing: &SottoClient,
) -> Result<SottoClient, String> {
    let pending = SottoClient::begin_link(&relay.url)
        .await
        .map_err(|e| e.to_string())?;
    let code = pending.code();
    let o = opts(&relay.url, dir, name);
    let (linked, sent) = tokio::join!(
        SottoClient::finish_link(pending, o, 30),
        existing.link_device(&code)
    );
    sent.map_err(|e| e.to_string())?;
    linked.map_err(|e| e.to_string())
}

async fn count_events(
    c: &SottoClient,
    n: usize,
    secs: u64,
    f: impl Fn(&ClientEvent) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout_at(deadline, c.next_event()).await {
            Ok(Some(e)) if f(&e) => seen += 1,
            Ok(Some(_)) => {}
            _ => return Err(format!("only {seen} of {n} events")),
        }
    }
    Ok(())
}

async fn store_cost(dir: &std::path::Path) -> Result<(f64, usize), String> {
    let backend = Arc::new(
        sotto_store::sqlite::SqliteBackend::open(dir.join("store-bench.sqlite"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let store = sotto_store::EncryptedStore::open(
        backend,
        sotto_store::StoreKey::Raw(sotto_store::Zeroizing::new([3; 32])),
        &mut rand::rngs::OsRng,
    )
    .await
    .map_err(|e| e.to_string())?;
    let value = vec![b'x'; 400];
    let (batches, per) = (100usize, 100usize);
    let start = Instant::now();
    for b in 0..batches {
        let mut tx = store.transaction();
        for i in 0..per {
            tx.put("messages", b"d:peer", (b * per + i) as u64, &value);
        }
        store.commit(tx).await.map_err(|e| e.to_string())?;
    }
    Ok((
        start.elapsed().as_secs_f64() * 1e6 / (batches * per) as f64,
        per,
    ))
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let db = if args.iter().any(|a| a == "--postgres") {
        Db::Postgres
    } else {
        Db::Sqlite
    };
    let relay = Relay::start(db).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let alice = account(&relay, dir.path(), "alice").await?;
    let alice2 = link(&relay, dir.path(), "alice2", &alice).await?;
    let bob = account(&relay, dir.path(), "bob").await?;
    let bob2 = link(&relay, dir.path(), "bob2", &bob).await?;
    let bob3 = link(&relay, dir.path(), "bob3", &bob).await?;
    let b = bob.user_id();
    alice
        .send_text(&b, "warm-up")
        .await
        .map_err(|e| e.to_string())?;
    count_events(&bob, 1, 30, |e| {
        matches!(e, ClientEvent::Event(Event::Message(_)))
    })
    .await?;
    for c in [&alice2, &bob2, &bob3, &bob] {
        c.close().await;
    }
    // Drain alice's events so far.
    while alice.try_next_event().await.is_some() {}

    let start = Instant::now();
    for i in 0..n {
        alice
            .queue_text(&b, &format!("benchmark message {i}"))
            .await
            .map_err(|e| e.to_string())?;
    }
    count_events(&alice, n, 600, |e| {
        matches!(e, ClientEvent::Event(Event::MessageSent { .. }))
    })
    .await?;
    let send = start.elapsed();
    println!(
        "send: {n} messages to 3 peer devices + 1 own device in {:.2} s = {:.0} messages/s ({:.0} ciphertexts/s)",
        send.as_secs_f64(),
        n as f64 / send.as_secs_f64(),
        4.0 * n as f64 / send.as_secs_f64()
    );

    let start = Instant::now();
    let bob = SottoClient::open(opts(&relay.url, dir.path(), "bob"))
        .await
        .map_err(|e| e.to_string())?;
    count_events(
        &bob,
        n,
        600,
        |e| matches!(e, ClientEvent::Event(Event::Message(m)) if !m.outgoing),
    )
    .await?;
    bob.idle().await;
    let recv = start.elapsed();
    println!(
        "receive: {n} messages decrypted, stored and acked in {:.2} s = {:.0} messages/s (incl. connect)",
        recv.as_secs_f64(),
        n as f64 / recv.as_secs_f64()
    );
    let (us, batch) = store_cost(dir.path()).await?;
    println!("store: {us:.1} µs per message row committed to the encrypted SQLite store (batches of {batch})");
    alice.close().await;
    bob.close().await;
    relay.finish().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdk-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
