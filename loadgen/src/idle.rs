//! Idle connections: how much relay memory one authenticated, idle WebSocket costs.
//!
//! Each connection belongs to its own account and device (a device has one live socket; a second
//! one replaces the first). Sockets are spread over the source addresses 127.0.0.2, .3, ... since one
//! source address has only ~28,000 ephemeral ports towards one relay port. Each client task keeps
//! reading, so the relay's pings are answered and the sockets stay alive while held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};

use crate::client;
use crate::relay::{self, Relay};
use crate::stats;
use crate::Result;

/// Ephemeral ports per source address (Linux default range 32768-60999), with some slack.
const PORTS_PER_SOURCE: usize = 28_000;

/// Options of `idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Idle WebSockets to open, one account and device each.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,

    /// Source addresses to spread the sockets over: 127.0.0.2, 127.0.0.3, ...
    #[arg(long, default_value_t = 8)]
    pub source_addrs: usize,

    /// WebSocket handshakes in progress at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,

    /// Seconds to hold every socket open after the last one opened.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,

    /// Connections used to create the accounts.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,

    /// Also upload prekeys for every account (slower setup; idle sockets don't need them).
    #[arg(long)]
    pub keys: bool,

    /// Read buffer of each client socket, in bytes (client memory only; the relay's is its own).
    #[arg(long, default_value_t = 4096)]
    pub client_read_buffer: usize,
}

impl IdleArgs {
    /// File descriptors this run needs (the started relay inherits the same limit).
    pub fn fd_budget(&self) -> u64 {
        (self.connections + self.setup_concurrency + 512) as u64
    }
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    first_problem: Mutex<Option<String>>,
}

impl Counters {
    fn problem(&self, text: String) {
        if let Ok(mut slot) = self.first_problem.lock() {
            slot.get_or_insert(text);
        }
    }
}

/// Runs the `idle` scenario and prints its report.
pub async fn run(relay: &Relay, args: IdleArgs) -> Result<()> {
    let m = args.connections;
    if m == 0 || args.source_addrs == 0 || args.source_addrs > 250 {
        return Err("need --connections ≥ 1 and 1 ≤ --source-addrs ≤ 250".into());
    }
    if m > args.source_addrs * PORTS_PER_SOURCE {
        return Err(format!(
            "{m} connections need at least {} source addresses (--source-addrs)",
            m.div_ceil(PORTS_PER_SOURCE)
        )
        .into());
    }
    let prefix = format!("li{:05x}", rand::random::<u32>() & 0xf_ffff);

    let setup_start = Instant::now();
    let accounts =
        client::create_accounts(relay.addr, &prefix, m, args.setup_concurrency, args.keys).await?;
    let setup_time = setup_start.elapsed();
    eprintln!(
        "idle: {m} accounts created in {:.1} s",
        setup_time.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = relay.rss_kib();
    let own_before = own_rss_kib();

    let counters = Arc::new(Counters::default());
    let handshakes = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let open_start = Instant::now();
    let mut tasks = Vec::with_capacity(m);
    for (i, account) in accounts.into_iter().enumerate() {
        let counters = Arc::clone(&counters);
        let handshakes = Arc::clone(&handshakes);
        let mut stop = stop_rx.clone();
        let source = relay::source_addr(i, args.source_addrs);
        let addr = relay.addr;
        let read_buffer = args.client_read_buffer;
        tasks.push(tokio::spawn(async move {
            let ws = {
                let Ok(_permit) = handshakes.acquire().await else {
                    return;
                };
                client::open_ws(addr, &account.token, Some(source), read_buffer).await
            };
            let mut ws = match ws {
                Ok(ws) => {
                    counters.opened.fetch_add(1, Ordering::Relaxed);
                    ws
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    counters.problem(format!("open from {source}: {e}"));
                    return;
                }
            };
            drop(account);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    frame = ws.next() => match frame {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            counters.closed.fetch_add(1, Ordering::Relaxed);
                            counters.problem(format!("socket error: {e}"));
                            return;
                        }
                        None => {
                            counters.closed.fetch_add(1, Ordering::Relaxed);
                            counters.problem("relay closed an idle socket".into());
                            return;
                        }
                    },
                }
            }
        }));
    }

    // Wait for every handshake to finish, reporting progress.
    let mut last_report = Instant::now();
    loop {
        let done =
            counters.opened.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
        if done >= m as u64 {
            break;
        }
        if open_start.elapsed() > Duration::from_secs(900) {
            return Err("sockets still opening after 15 minutes".into());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "idle: {} open, {} failed",
                counters.opened.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_time = open_start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened = counters.opened.load(Ordering::Relaxed);
    let rss_open = relay.rss_kib();
    let own_open = own_rss_kib();

    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_held = relay.rss_kib();
    let closed = counters.closed.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    println!(
        "== idle: {m} authenticated WebSockets from {} source addresses, held {} s",
        args.source_addrs, args.hold
    );
    println!(
        "setup:            {m} accounts in {:.1} s ({:.0}/s){}",
        setup_time.as_secs_f64(),
        m as f64 / setup_time.as_secs_f64().max(1e-9),
        if args.keys {
            ", with prekey uploads"
        } else {
            ""
        }
    );
    println!(
        "opened:           {opened} in {:.1} s ({:.0}/s), {} failed, {closed} closed while held",
        open_time.as_secs_f64(),
        opened as f64 / open_time.as_secs_f64().max(1e-9),
        counters.failed.load(Ordering::Relaxed)
    );
    match (rss_before, rss_open, rss_held) {
        (Some(before), Some(open), Some(held)) if opened > 0 => {
            println!(
                "relay RSS:        {} before, {} open, {} after holding",
                stats::kib(before as f64),
                stats::kib(open as f64),
                stats::kib(held as f64)
            );
            println!(
                "per connection:   {} (open − before) / {opened}; {} after holding",
                stats::kib((open as f64 - before as f64) / opened as f64),
                stats::kib((held as f64 - before as f64) / opened as f64)
            );
        }
        _ => println!("relay RSS:        unknown (attach with --relay-pid, or let the load generator start the relay)"),
    }
    if let (Some(before), Some(open)) = (own_before, own_open) {
        println!(
            "load generator:   {} per connection",
            stats::kib((open as f64 - before as f64) / opened.max(1) as f64)
        );
    }
    if let Ok(slot) = counters.first_problem.lock() {
        if let Some(problem) = slot.as_ref() {
            println!("first problem:    {problem}");
        }
    }
    Ok(())
}

fn own_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
