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

    /// Processes holding the client sockets (copies of this program): where one process may
    /// open only ~20,000 files, 100,000 sockets need several, as they need several relay
    /// processes (`--processes`).
    #[arg(long, default_value_t = 1)]
    pub client_processes: usize,
}

impl IdleArgs {
    /// File descriptors this process needs (the started relays inherit the same limit, and each
    /// holds its share of the sockets).
    pub fn fd_budget(&self, relay_processes: usize) -> u64 {
        let here = if self.client_processes > 1 {
            0
        } else {
            self.connections
        };
        let per_relay = self.connections.div_ceil(relay_processes.max(1));
        (here.max(per_relay) + self.setup_concurrency + 512) as u64
    }
}

/// Options of the hidden `idle-worker`: a process of [`IdleArgs::client_processes`]. It reads
/// `<addr> <source ip> <token>` lines from stdin until `go`, opens those sockets, prints
/// `progress <opened> <failed> <closed>` every half second (and `problem <text>` once), and holds
/// them until its stdin closes.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// WebSocket handshakes in progress at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,

    /// Read buffer of each client socket, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub client_read_buffer: usize,
}

impl WorkerArgs {
    /// File descriptors this worker may need (what one process may open here, about).
    pub fn fd_budget(&self) -> u64 {
        19_500
    }
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    /// What worker processes reported last: (opened, failed, closed) each.
    workers: Mutex<Vec<(u64, u64, u64)>>,
    first_problem: Mutex<Option<String>>,
}

impl Counters {
    fn problem(&self, text: String) {
        if let Ok(mut slot) = self.first_problem.lock() {
            slot.get_or_insert(text);
        }
    }

    fn workers_sum(&self, pick: fn(&(u64, u64, u64)) -> u64) -> u64 {
        self.workers
            .lock()
            .map(|w| w.iter().map(pick).sum())
            .unwrap_or(0)
    }

    fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed) + self.workers_sum(|w| w.0)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed) + self.workers_sum(|w| w.1)
    }

    fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed) + self.workers_sum(|w| w.2)
    }
}

/// One socket to open: where to, from which source address, as whom.
#[derive(Debug)]
struct Socket {
    addr: std::net::SocketAddr,
    source: std::net::IpAddr,
    token: String,
}

/// Opens `sockets` (at most `concurrency` handshakes at once) and keeps each read until `stop`.
fn hold(
    sockets: Vec<Socket>,
    concurrency: usize,
    read_buffer: usize,
    counters: Arc<Counters>,
    stop_rx: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let handshakes = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(sockets.len());
    for socket in sockets {
        let counters = Arc::clone(&counters);
        let handshakes = Arc::clone(&handshakes);
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let Socket {
                addr,
                source,
                token,
            } = socket;
            let ws = {
                let Ok(_permit) = handshakes.acquire().await else {
                    return;
                };
                client::open_ws(addr, &token, Some(source), read_buffer).await
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
            drop(token);
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
    tasks
}

/// A worker process holding a share of the sockets.
struct Worker {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    reader: tokio::task::JoinHandle<()>,
}

impl Worker {
    async fn spawn(args: &IdleArgs, sockets: Vec<Socket>, counters: Arc<Counters>) -> Result<Self> {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("idle-worker")
            .arg(format!("--concurrency={}", args.concurrency))
            .arg(format!("--client-read-buffer={}", args.client_read_buffer))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        let mut text = String::with_capacity(sockets.len() * 64);
        for s in &sockets {
            text.push_str(&format!("{} {} {}\n", s.addr, s.source, s.token));
        }
        text.push_str("go\n");
        stdin.write_all(text.as_bytes()).await?;
        stdin.flush().await?;
        let slot = {
            let mut workers = counters.workers.lock().map_err(|_| "poisoned")?;
            workers.push((0, 0, 0));
            workers.len() - 1
        };
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.splitn(2, ' ');
                match (words.next(), words.next()) {
                    (Some("progress"), Some(rest)) => {
                        let n: Vec<u64> = rest.split(' ').filter_map(|w| w.parse().ok()).collect();
                        if let ([o, f, c], Ok(mut workers)) =
                            (n.as_slice(), counters.workers.lock())
                        {
                            if let Some(w) = workers.get_mut(slot) {
                                *w = (*o, *f, *c);
                            }
                        }
                    }
                    (Some("problem"), Some(text)) => counters.problem(text.to_owned()),
                    _ => {}
                }
            }
        });
        Ok(Self {
            child,
            stdin: Some(stdin),
            reader,
        })
    }

    async fn stop(mut self) {
        // Closing its stdin ends the worker.
        drop(self.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.start_kill();
        self.reader.abort();
    }
}

/// The `idle-worker` process (see [`WorkerArgs`]).
pub async fn worker(args: WorkerArgs) -> Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut sockets = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if line == "go" {
            break;
        }
        let mut words = line.split(' ');
        let (Some(addr), Some(source), Some(token)) = (words.next(), words.next(), words.next())
        else {
            return Err(format!("idle-worker: bad line {line:?}").into());
        };
        sockets.push(Socket {
            addr: addr.parse()?,
            source: source.parse()?,
            token: token.to_owned(),
        });
    }
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = hold(
        sockets,
        args.concurrency,
        args.client_read_buffer,
        Arc::clone(&counters),
        stop_rx,
    );
    let mut out = tokio::io::stdout();
    let mut told_problem = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            line = lines.next_line() => {
                if !matches!(line, Ok(Some(_))) {
                    break;
                }
            }
            _ = tick.tick() => {
                let mut text = format!(
                    "progress {} {} {}\n",
                    counters.opened(),
                    counters.failed(),
                    counters.closed()
                );
                if !told_problem {
                    if let Some(problem) = counters.first_problem.lock().ok().and_then(|p| p.clone()) {
                        text.push_str(&format!("problem {problem}\n"));
                        told_problem = true;
                    }
                }
                if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let open_start = Instant::now();
    let sockets: Vec<Socket> = accounts
        .into_iter()
        .enumerate()
        .map(|(i, account)| Socket {
            addr: relay.addr_for(i),
            source: relay::source_addr(i, args.source_addrs),
            token: account.token,
        })
        .collect();
    let mut tasks = Vec::new();
    let mut workers = Vec::new();
    if args.client_processes > 1 {
        let per = m.div_ceil(args.client_processes);
        let mut sockets = sockets.into_iter();
        for _ in 0..args.client_processes {
            let slice: Vec<Socket> = sockets.by_ref().take(per).collect();
            if slice.is_empty() {
                break;
            }
            workers.push(Worker::spawn(&args, slice, Arc::clone(&counters)).await?);
        }
    } else {
        tasks = hold(
            sockets,
            args.concurrency,
            args.client_read_buffer,
            Arc::clone(&counters),
            stop_rx,
        );
    }

    // Wait for every handshake to finish, reporting progress.
    let mut last_report = Instant::now();
    loop {
        let done = counters.opened() + counters.failed();
        if done >= m as u64 {
            break;
        }
        if open_start.elapsed() > Duration::from_secs(900) {
            return Err("sockets still opening after 15 minutes".into());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "idle: {} open, {} failed",
                counters.opened(),
                counters.failed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_time = open_start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened = counters.opened();
    let rss_open = relay.rss_kib();
    let own_open = own_rss_kib();

    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_held = relay.rss_kib();
    let closed = counters.closed();

    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    for worker in workers {
        worker.stop().await;
    }

    println!(
        "== idle: {m} authenticated WebSockets from {} source addresses, held {} s, over {} relay \
         process(es), from {} client process(es)",
        args.source_addrs,
        args.hold,
        relay.processes(),
        args.client_processes.max(1)
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
        counters.failed()
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
    if let (Some(before), Some(open), 1) = (own_before, own_open, args.client_processes.max(1)) {
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
