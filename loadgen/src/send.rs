//! Throughput and latency: 1:1 messages between connected devices.
//!
//! Message `i` goes from account `i mod N` to a different account that varies with `i`, as one
//! `POST /api/messages/send` carrying one envelope (the sender has no other device). Its content is
//! `[i: u64 LE][send time: u64 LE, ns since the run began][padding]`, opaque to the relay; the
//! receiving task decodes it, records send→receive latency and acks the envelope. The relay's
//! delivery receipts that come back to the senders are acked as well.
//!
//! With `--rate`, message `i` is due at `start + i / rate` and its latency is measured from that
//! moment, not from when a connection became free, so a relay that falls behind shows up in the
//! latency instead of silently lowering the load (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hyper::Method;
use sotto_wire::{
    Base64, ClientFrame, EnvelopeKind, OutgoingMessage, SendMessageRequest, ServerFrame,
};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Account, Http, Ws};
use crate::relay::{self, Relay};
use crate::stats::{self, Bits};
use crate::Result;

/// Options of `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Accounts, each with one device holding one WebSocket (at least 2).
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,

    /// Target rate in messages/s; 0 sends as fast as --in-flight allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Send requests in flight at once, one keep-alive HTTP/1.1 connection each.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,

    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,

    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,

    /// Ciphertext bytes per message (at least 16).
    #[arg(long, default_value_t = 160)]
    pub size: usize,

    /// Seconds to wait after the last send for outstanding deliveries before counting losses.
    #[arg(long, default_value_t = 20)]
    pub drain: u64,

    /// Most messages sent in one run, whatever the rate (bounds memory and database growth).
    #[arg(long, default_value_t = 5_000_000)]
    pub max_messages: u64,

    /// Skip the prekey uploads during setup.
    #[arg(long)]
    pub no_keys: bool,

    /// Connections used to create the accounts.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
}

impl SendArgs {
    /// File descriptors this run needs.
    pub fn fd_budget(&self) -> u64 {
        (self.accounts + self.in_flight + self.setup_concurrency + 512) as u64
    }
}

/// State shared by the senders and receivers.
#[derive(Debug)]
struct Shared {
    /// Time zero of the run: send times in contents are nanoseconds since this.
    t0: Instant,
    /// The measured window, in nanoseconds since `t0`.
    window_start: AtomicU64,
    window_end: AtomicU64,
    next: AtomicU64,
    accepted: Bits,
    received: Bits,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX)
    }

    fn in_window(&self, sent_ns: u64) -> bool {
        sent_ns >= self.window_start.load(Ordering::Relaxed)
            && sent_ns < self.window_end.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct SenderStats {
    sent: u64,
    accepted_in_window: u64,
    request_latency: Histogram<u64>,
    rejected: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_problem: Option<String>,
}

#[derive(Debug)]
struct ReceiverStats {
    latency: Histogram<u64>,
    received_in_window: u64,
    duplicates: u64,
    receipts: u64,
    server_errors: u64,
    closed_early: bool,
    first_problem: Option<String>,
}

/// Runs the `send` scenario and prints its report.
pub async fn run(relay: &Relay, args: SendArgs) -> Result<()> {
    if args.accounts < 2 || args.size < 16 || args.in_flight == 0 || args.duration == 0 {
        return Err("need --accounts ≥ 2, --size ≥ 16, --in-flight ≥ 1, --duration ≥ 1".into());
    }
    let n = args.accounts;
    let prefix = format!("lg{:05x}", rand::random::<u32>() & 0xf_ffff);

    let setup_start = Instant::now();
    let accounts = client::create_accounts(
        relay.addr,
        &prefix,
        n,
        args.setup_concurrency,
        !args.no_keys,
    )
    .await?;
    let setup_time = setup_start.elapsed();
    let accounts = Arc::new(accounts);

    let planned = if args.rate > 0 {
        args.rate
            .saturating_mul(args.warmup + args.duration)
            .saturating_add(1000)
    } else {
        u64::MAX
    };
    let cap = planned.min(args.max_messages);
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        next: AtomicU64::new(0),
        accepted: Bits::new(cap),
        received: Bits::new(cap),
    });

    // Every device connects and drains its (empty) mailbox before any message is sent.
    let rss_before_ws = relay.rss_kib();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(n);
    let mut receivers = Vec::with_capacity(n);
    for (i, account) in accounts.iter().enumerate() {
        let ws = client::open_ws(relay.addr_for(i), &account.token, None, 64 * 1024).await?;
        receivers.push(tokio::spawn(receive(
            ws,
            Arc::clone(&shared),
            stop_rx.clone(),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .map_err(|_| "devices did not get their queueEmpty frame within 60 s")?
            .ok_or("a WebSocket closed before its queueEmpty frame")?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with_ws = relay.rss_kib();

    // Load.
    let send_start = Instant::now();
    let window_start = send_start + Duration::from_secs(args.warmup);
    let window_end = window_start + Duration::from_secs(args.duration);
    shared
        .window_start
        .store(shared.nanos(window_start), Ordering::Relaxed);
    shared
        .window_end
        .store(shared.nanos(window_end), Ordering::Relaxed);
    let mut senders = Vec::with_capacity(args.in_flight);
    for i in 0..args.in_flight {
        // With several relay processes, sends and the recipients' sockets are spread over all.
        let http = Http::connect(relay.addr_for(i)).await?;
        senders.push(tokio::spawn(send_loop(
            http,
            Arc::clone(&shared),
            Arc::clone(&accounts),
            SendPlan {
                start: send_start,
                end: window_end,
                rate: args.rate,
                cap,
                size: args.size,
            },
        )));
    }
    tokio::time::sleep_until(window_start.into()).await;
    let cpu_start = (relay.cpu_time(), relay::own_cpu_time());
    tokio::time::sleep_until(window_end.into()).await;
    let cpu_end = (relay.cpu_time(), relay::own_cpu_time());
    let rss_end = relay.rss_kib();

    let mut sent = SenderStats {
        sent: 0,
        accepted_in_window: 0,
        request_latency: stats::latency_histogram(),
        rejected: BTreeMap::new(),
        transport_errors: 0,
        first_problem: None,
    };
    for sender in senders {
        let s = sender.await?;
        sent.sent += s.sent;
        sent.accepted_in_window += s.accepted_in_window;
        sent.request_latency.add(&s.request_latency)?;
        for (status, count) in s.rejected {
            *sent.rejected.entry(status).or_default() += count;
        }
        sent.transport_errors += s.transport_errors;
        sent.first_problem = sent.first_problem.or(s.first_problem);
    }
    let attempted = sent.sent;
    let sending_time = send_start.elapsed();

    // Drain: wait for every accepted message to arrive.
    let drain_start = Instant::now();
    let accepted_total = shared.accepted.count();
    while shared.accepted.count_missing_from(&shared.received) > 0
        && drain_start.elapsed() < Duration::from_secs(args.drain)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_time = drain_start.elapsed();
    let _ = stop_tx.send(true);
    let mut got = ReceiverStats::new();
    for receiver in receivers {
        let r = receiver.await?;
        got.latency.add(&r.latency)?;
        got.received_in_window += r.received_in_window;
        got.duplicates += r.duplicates;
        got.receipts += r.receipts;
        got.server_errors += r.server_errors;
        got.closed_early |= r.closed_early;
        got.first_problem = got.first_problem.or(r.first_problem);
    }
    let lost = shared.accepted.count_missing_from(&shared.received);
    let unaccepted_but_received = shared.received.count_missing_from(&shared.accepted);

    // Report.
    let secs = args.duration as f64;
    let rate = if args.rate > 0 {
        format!("{} msgs/s", args.rate)
    } else {
        "max".into()
    };
    println!(
        "== send: {n} accounts, {} in flight, rate {rate}, {}-byte messages, {} s measured after {} s warm-up",
        args.in_flight, args.size, args.duration, args.warmup
    );
    println!(
        "setup:            {n} accounts in {:.1} s ({:.0}/s){}",
        setup_time.as_secs_f64(),
        n as f64 / setup_time.as_secs_f64().max(1e-9),
        if args.no_keys {
            ""
        } else {
            ", with prekey uploads"
        }
    );
    let schedule = (args.warmup + args.duration) as f64;
    let behind = sending_time.as_secs_f64() - schedule;
    println!(
        "accepted:         {:.0} msgs/s ({} answered in the window; {attempted} sent in {:.1} s{})",
        sent.accepted_in_window as f64 / secs,
        sent.accepted_in_window,
        sending_time.as_secs_f64(),
        if attempted >= cap && args.rate == 0 {
            ", stopped at --max-messages".to_owned()
        } else if args.rate > 0 && behind > 0.5 {
            format!(", {behind:.1} s behind the {schedule:.0} s schedule: the relay cannot keep up")
        } else {
            String::new()
        }
    );
    println!(
        "delivered:        {:.0} msgs/s (received in the window)",
        got.received_in_window as f64 / secs
    );
    println!("send→receive:     {}", stats::summary(&got.latency));
    println!(
        "send → accepted:  {}",
        stats::summary(&sent.request_latency)
    );
    println!(
        "losses:           {lost} of {accepted_total} accepted never received (waited {:.1} s); {} duplicates; {unaccepted_but_received} received without an accepted answer",
        drain_time.as_secs_f64(),
        got.duplicates
    );
    println!(
        "refused/errors:   {:?} by status, {} transport errors, {} error frames, sockets closed early: {}",
        sent.rejected, sent.transport_errors, got.server_errors, got.closed_early
    );
    println!(
        "receipts:         {} delivery receipts received",
        got.receipts
    );
    if let (Some(before), Some(with)) = (rss_before_ws, rss_with_ws) {
        println!(
            "relay RSS:        {} before WebSockets, {} with {n} ({} per connection), {} at the end of the window",
            stats::kib(before as f64),
            stats::kib(with as f64),
            stats::kib((with as f64 - before as f64) / n as f64),
            rss_end.map_or_else(|| "?".into(), |k| stats::kib(k as f64)),
        );
    }
    let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", b.saturating_sub(a).as_secs_f64() / secs),
        _ => "?".into(),
    };
    println!(
        "CPU in window:    relay {} cores, load generator {} cores",
        cores(cpu_start.0, cpu_end.0),
        cores(cpu_start.1, cpu_end.1)
    );
    if let Some(problem) = sent.first_problem.or(got.first_problem) {
        println!("first problem:    {problem}");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct SendPlan {
    start: Instant,
    end: Instant,
    rate: u64,
    cap: u64,
    size: usize,
}

async fn send_loop(
    mut http: Http,
    shared: Arc<Shared>,
    accounts: Arc<Vec<Account>>,
    plan: SendPlan,
) -> SenderStats {
    let mut stats = SenderStats {
        sent: 0,
        accepted_in_window: 0,
        request_latency: stats::latency_histogram(),
        rejected: BTreeMap::new(),
        transport_errors: 0,
        first_problem: None,
    };
    let n = accounts.len() as u64;
    let mut content = vec![0x5au8; plan.size];
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.cap {
            break;
        }
        let due = if plan.rate > 0 {
            let offset = Duration::from_nanos(
                u64::try_from(u128::from(i) * 1_000_000_000 / u128::from(plan.rate))
                    .unwrap_or(u64::MAX),
            );
            plan.start + offset
        } else {
            Instant::now()
        };
        if due >= plan.end {
            break;
        }
        if plan.rate > 0 {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent_ns = shared.nanos(due);
        let from = i % n;
        let to = (from + 1 + (i / n) % (n - 1)) % n;
        let (Some(sender), Some(recipient)) =
            (accounts.get(from as usize), accounts.get(to as usize))
        else {
            break;
        };
        if let Some(index) = content.get_mut(..8) {
            index.copy_from_slice(&i.to_le_bytes());
        }
        if let Some(time) = content.get_mut(8..16) {
            time.copy_from_slice(&sent_ns.to_le_bytes());
        }
        let request = SendMessageRequest {
            recipient_id: recipient.user_id.clone(),
            client_message_id: i.to_string(),
            messages: vec![OutgoingMessage {
                device_id: recipient.device_id,
                registration_id: recipient.registration_id,
                content: Base64(content.clone()),
            }],
            sync_messages: Vec::new(),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(body) => body,
            Err(e) => {
                stats.first_problem.get_or_insert_with(|| e.to_string());
                break;
            }
        };
        stats.sent += 1;
        match http
            .request(
                Method::POST,
                "/api/messages/send",
                Some(&sender.token),
                Some(body),
            )
            .await
        {
            Ok((status, _)) if status.is_success() => {
                shared.accepted.insert(i);
                if shared.in_window(shared.nanos(Instant::now())) {
                    stats.accepted_in_window += 1;
                }
                if shared.in_window(sent_ns) {
                    stats::record(&mut stats.request_latency, due.elapsed());
                }
            }
            Ok((status, answer)) => {
                *stats.rejected.entry(status.as_u16()).or_default() += 1;
                stats.first_problem.get_or_insert_with(|| {
                    client::unexpected("/api/messages/send", status, &answer)
                });
            }
            Err(e) => {
                stats.transport_errors += 1;
                stats
                    .first_problem
                    .get_or_insert_with(|| format!("send: {e}"));
            }
        }
    }
    stats
}

impl ReceiverStats {
    fn new() -> Self {
        ReceiverStats {
            latency: stats::latency_histogram(),
            received_in_window: 0,
            duplicates: 0,
            receipts: 0,
            server_errors: 0,
            closed_early: false,
            first_problem: None,
        }
    }
}

/// Reads one device's WebSocket until told to stop: records messages, acks everything in batches.
async fn receive(
    mut ws: Ws,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: mpsc::Sender<()>,
) -> ReceiverStats {
    let mut stats = ReceiverStats::new();
    let mut ready = Some(ready);
    let mut acks = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = ws.next() => frame,
        };
        let mut open = handle(frame, &shared, &mut stats, &mut acks, &mut ready);
        // Take whatever else is already buffered, so one ack frame covers a batch.
        while open && acks.len() < 100 {
            match ws.next().now_or_never() {
                Some(frame) => open = handle(frame, &shared, &mut stats, &mut acks, &mut ready),
                None => break,
            }
        }
        if !acks.is_empty() {
            let ack = ClientFrame::Ack {
                ids: std::mem::take(&mut acks),
            };
            let sent = match serde_json::to_string(&ack) {
                Ok(text) => ws
                    .send(Message::text(text))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                stats
                    .first_problem
                    .get_or_insert_with(|| format!("ack: {e}"));
                open = false;
            }
        }
        if !open {
            stats.closed_early = !*stop.borrow();
            break;
        }
    }
    stats
}

/// Handles one frame; false when the socket is finished.
fn handle(
    frame: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
    shared: &Shared,
    stats: &mut ReceiverStats,
    acks: &mut Vec<u64>,
    ready: &mut Option<mpsc::Sender<()>>,
) -> bool {
    let text = match frame {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(close))) => {
            stats
                .first_problem
                .get_or_insert_with(|| format!("relay closed a WebSocket: {close:?}"));
            return false;
        }
        Some(Ok(_)) => return true,
        Some(Err(e)) => {
            stats
                .first_problem
                .get_or_insert_with(|| format!("WebSocket: {e}"));
            return false;
        }
        None => return false,
    };
    match serde_json::from_str::<ServerFrame>(text.as_str()) {
        Ok(ServerFrame::Envelope(envelope)) => {
            acks.push(envelope.seq);
            match envelope.kind {
                EnvelopeKind::Message => {
                    let content = envelope.content.as_ref().map(Base64::as_bytes);
                    let (Some(index), Some(sent_ns)) = (
                        content
                            .and_then(|c| c.get(..8))
                            .and_then(|b| b.try_into().ok()),
                        content
                            .and_then(|c| c.get(8..16))
                            .and_then(|b| b.try_into().ok()),
                    ) else {
                        stats.server_errors += 1;
                        return true;
                    };
                    let (index, sent_ns) = (u64::from_le_bytes(index), u64::from_le_bytes(sent_ns));
                    if shared.received.insert(index) {
                        stats.duplicates += 1;
                        return true;
                    }
                    let now = shared.nanos(Instant::now());
                    if shared.in_window(now) {
                        stats.received_in_window += 1;
                    }
                    if shared.in_window(sent_ns) {
                        stats::record(
                            &mut stats.latency,
                            Duration::from_nanos(now.saturating_sub(sent_ns)),
                        );
                    }
                }
                EnvelopeKind::DeliveryReceipt => stats.receipts += 1,
                EnvelopeKind::GroupMessage | EnvelopeKind::GroupEvent => {}
            }
        }
        Ok(ServerFrame::QueueEmpty) => {
            if let Some(ready) = ready.take() {
                let _ = ready.try_send(());
            }
        }
        Ok(ServerFrame::Error(error)) => {
            stats.server_errors += 1;
            stats
                .first_problem
                .get_or_insert_with(|| format!("error frame: {} {}", error.code, error.message));
        }
        Ok(_) => {}
        Err(e) => {
            stats.server_errors += 1;
            stats
                .first_problem
                .get_or_insert_with(|| format!("unreadable frame: {e}"));
        }
    }
    true
}
