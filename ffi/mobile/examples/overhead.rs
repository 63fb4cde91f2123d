//! The Rust side of the binding-overhead measurement: N 1:1 round trips (alice sends, bob's event
//! stream yields the message) through `sotto_client` directly, against the relay at argv[1].
//! `tests/python/overhead.py` runs the same loop through the Python binding in the same run and
//! starts this with the same relay.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use sotto_client::{
    ClientEvent, ClientOptions, Event, IdentityPolicy, SottoClient, StoreLocation, StoreSecret,
};

async fn account(url: &str, name: &str) -> Result<SottoClient, String> {
    let password = format!("{name}-password");
    SottoClient::register(url, name, &format!("{name}@example.com"), &password)
        .await
        .map_err(|e| e.to_string())?;
    let options = ClientOptions {
        server_url: url.to_owned(),
        store: StoreLocation::Memory,
        store_secret: StoreSecret::InsecureTestPassphrase("correct horse".into()),
        identity_policy: IdentityPolicy::RequireApproval,
    };
    SottoClient::login(options, name, &password)
        .await
        .map_err(|e| e.to_string())
}

async fn received(bob: &SottoClient, text: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, bob.next_event()).await {
            Ok(Some(ClientEvent::Event(Event::Message(m)))) if m.text.as_deref() == Some(text) => {
                return Ok(())
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("client stopped".into()),
            Err(_) => return Err(format!("timed out waiting for {text}")),
        }
    }
}

async fn run(url: &str, rounds: u32) -> Result<Duration, String> {
    let tag = std::process::id();
    let alice = account(url, &format!("ra{tag}")).await?;
    let bob = account(url, &format!("rb{tag}")).await?;
    // One untimed round trip sets up the session, as in the Python loop.
    alice
        .send_text(&bob.user_id(), "warm-up")
        .await
        .map_err(|e| e.to_string())?;
    received(&bob, "warm-up").await?;
    let start = Instant::now();
    for i in 0..rounds {
        let text = format!("round {i}");
        alice
            .send_text(&bob.user_id(), &text)
            .await
            .map_err(|e| e.to_string())?;
        received(&bob, &text).await?;
    }
    let took = start.elapsed();
    alice.close().await;
    bob.close().await;
    Ok(took)
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: overhead <relay url> [rounds]")?;
    let rounds: u32 = args.next().and_then(|r| r.parse().ok()).unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let took = runtime.block_on(run(&url, rounds))?;
    println!(
        "rust: {rounds} round trips in {:.3} s, {:.2} ms each",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / f64::from(rounds)
    );
    Ok(())
}
