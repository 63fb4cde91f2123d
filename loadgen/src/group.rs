//! Group fan-out: one shared sender-key ciphertext per message, delivered to every member.
//!
//! M accounts (one device each) hold one WebSocket each. For every group size m given with
//! `--members`, account 0 creates a group of accounts `0..m` (`POST /api/groups`, then
//! `POST /api/groups/{id}/join` for members past the per-request limit) and S of those members
//! send with `POST /api/groups/{id}/messages`, one shared `content` and no pairwise messages.
//! The content is `[index: u64 LE][send time: u64 LE, ns since the run began][padding]`, opaque to
//! the relay. Every member acks what it receives, in batches, so mailboxes drain.
//!
//! Each group size runs two phases:
//!
//! - single: messages sent one at a time, each only after the previous one reached every member
//!   and the relay's mailboxes are empty again (`sotto_envelopes_queued` in `/metrics`), so
//!   send→accepted is the sender's request cost without queueing, and fan-out completion (send →
//!   the last member receiving it) is the unloaded figure;
//! - load: warm-up messages, then the measured ones, at `--rate` or as fast as `--in-flight`
//!   requests allow. Deliveries/s counts the envelopes all members received from the first
//!   measured send until the last delivery of the phase.
//!
//! Accounting is exact: every accepted message must reach every other member exactly once
//! (`losses`, `duplicates`), and nothing may reach a non-member or the sender (`misrouted`).
//! After each group size, every member's mailbox must be empty (`GET /api/messages/unread`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hyper::Method;
use sotto_wire::{
    Base64, ClientFrame, CreateGroupRequest, EnvelopeKind, GroupCreated, GroupMembers,
    GroupSendRequest, JoinGroupRequest, ServerFrame, UnreadCount,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Account, Http, Ws};
use crate::relay::{self, Relay};
use crate::stats;
use crate::Result;

/// Most user ids one create or join request may carry (the relay's limit).
const MAX_IDS_PER_REQUEST: usize = 1000;

/// Options of `group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Group sizes, creator included, run one after the other (e.g. 10,100,1000). Accounts are
    /// created for the largest; the relay's limit is --max-group-size (default 1000): raise it with
    /// --relay-arg=--max-group-size=N for larger groups.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub members: Vec<usize>,

    /// Members that send, taking turns (accounts 0..S of the group; fewer when the group is
    /// smaller).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,

    /// Measured messages per group size in the load phase.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,

    /// Messages per group size sent before the measured ones in the load phase.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,

    /// Messages per group size sent one at a time before the load phase, each after the previous
    /// one reached every member (unloaded request cost and fan-out time).
    #[arg(long, default_value_t = 50)]
    pub single: u64,

    /// Target rate of the load phase in messages/s; 0 sends as fast as --in-flight allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Send requests in flight at once in the load phase, one keep-alive connection each.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,

    /// Ciphertext bytes per message (at least 16).
    #[arg(long, default_value_t = 160)]
    pub size: usize,

    /// Seconds to wait after the last send of a phase for outstanding deliveries and acks.
    #[arg(long, default_value_t = 60)]
    pub drain: u64,

    /// Skip the prekey uploads during setup.
    #[arg(long)]
    pub no_keys: bool,

    /// Connections used to create the accounts (and to check mailboxes).
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
}

impl GroupArgs {
    /// File descriptors this run needs.
    pub fn fd_budget(&self) -> u64 {
        let accounts = self.members.iter().copied().max().unwrap_or(0);
        (accounts + self.in_flight + self.setup_concurrency + 512) as u64
    }

    fn per_size(&self) -> u64 {
        self.single + self.warmup + self.messages
    }
}

/// One message's fate.
#[derive(Debug)]
struct Slot {
    /// Members of its group (accounts `0..members`).
    members: u32,
    /// Account index of its sender.
    sender: u32,
    /// Send time (ns since `t0`); the due time in a rate-driven phase.
    sent_ns: AtomicU64,
    accepted: AtomicBool,
    /// Distinct members that received it.
    received: AtomicU32,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

impl Slot {
    fn expected(&self) -> u32 {
        self.members.saturating_sub(1)
    }

    fn complete(&self) -> bool {
        self.received.load(Ordering::Acquire) >= self.expected()
    }
}

/// State shared by the senders, the receivers and the phase driver.
#[derive(Debug)]
struct Shared {
    t0: Instant,
    slots: Vec<Slot>,
    /// Group-message envelopes received (distinct), by all members.
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    /// Received by a non-member or by the sender itself, or an index out of range.
    misrouted: AtomicU64,
    /// Group-event envelopes received.
    events: AtomicU64,
    /// Envelopes of other kinds, unreadable contents and error frames.
    unexpected: AtomicU64,
    /// Ack frames sent, and the ids they carried.
    ack_frames: AtomicU64,
    ack_ids: AtomicU64,
    /// Woken whenever a message reaches its last member.
    completed: Notify,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX)
    }

    fn slot(&self, i: u64) -> Option<&Slot> {
        self.slots.get(usize::try_from(i).ok()?)
    }
}

/// The figures of one group size.
#[derive(Debug)]
struct SizeReport {
    members: usize,
    senders: usize,
    setup: Duration,
    single_request: Histogram<u64>,
    single_fanout: Histogram<u64>,
    single_first: Histogram<u64>,
    load_request: Histogram<u64>,
    load_fanout: Histogram<u64>,
    load_first: Histogram<u64>,
    accepted_per_s: f64,
    deliveries: u64,
    window: Duration,
    accepted: u64,
    lost: u64,
    received_unaccepted: u64,
    duplicates: u64,
    misrouted: u64,
    unexpected: u64,
    rejected: BTreeMap<u16, u64>,
    transport_errors: u64,
    left_in_mailboxes: u64,
    ack_frames: u64,
    ack_ids: u64,
    drain: Duration,
    relay_cores: Option<f64>,
    own_cores: Option<f64>,
    rss_end: Option<u64>,
    first_problem: Option<String>,
}

impl SizeReport {
    fn deliveries_per_s(&self) -> f64 {
        self.deliveries as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Runs the `group` scenario and prints its report.
pub async fn run(relay: &Relay, args: GroupArgs) -> Result<()> {
    let mut sizes = args.members.clone();
    sizes.dedup();
    if sizes.iter().any(|&m| m < 2)
        || args.size < 16
        || args.in_flight == 0
        || args.senders == 0
        || args.messages == 0
    {
        return Err(
            "need --members ≥ 2 each, --size ≥ 16, --in-flight ≥ 1, --senders ≥ 1, --messages ≥ 1"
                .into(),
        );
    }
    let n = sizes.iter().copied().max().unwrap_or(2);
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

    let per_size = args.per_size();
    let mut slots = Vec::new();
    for &m in &sizes {
        let senders = args.senders.min(m);
        for k in 0..per_size {
            slots.push(Slot {
                members: u32::try_from(m)?,
                sender: u32::try_from(k % senders as u64)?,
                sent_ns: AtomicU64::new(u64::MAX),
                accepted: AtomicBool::new(false),
                received: AtomicU32::new(0),
                first_ns: AtomicU64::new(u64::MAX),
                last_ns: AtomicU64::new(0),
            });
        }
    }
    let total = slots.len() as u64;
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        slots,
        deliveries: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        events: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        ack_frames: AtomicU64::new(0),
        ack_ids: AtomicU64::new(0),
        completed: Notify::new(),
    });

    // Every device connects (before any group exists, so connecting announces presence to
    // nobody) and drains its empty mailbox before the first group is created.
    let rss_before_ws = relay.rss_kib();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(n);
    let mut receivers = Vec::with_capacity(n);
    for (me, account) in accounts.iter().enumerate() {
        let ws = client::open_ws(relay.addr_for(me), &account.token, None, 64 * 1024).await?;
        receivers.push(tokio::spawn(receive(
            ws,
            u32::try_from(me)?,
            total,
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

    let rate = if args.rate > 0 {
        format!("{} msgs/s", args.rate)
    } else {
        format!("max with {} in flight", args.in_flight)
    };
    println!(
        "== group: sizes {sizes:?}, up to {} senders, {}-byte messages; per size {} single, then {} warm-up + {} measured at {rate}",
        args.senders, args.size, args.single, args.warmup, args.messages
    );
    println!(
        "setup:            {n} accounts in {:.1} s{}",
        setup_time.as_secs_f64(),
        if args.no_keys {
            ""
        } else {
            ", with prekey uploads"
        }
    );
    if let (Some(before), Some(with)) = (rss_before_ws, rss_with_ws) {
        println!(
            "relay RSS:        {} before WebSockets, {} with {n} ({} per connection)",
            stats::kib(before as f64),
            stats::kib(with as f64),
            stats::kib((with as f64 - before as f64) / n as f64),
        );
    }

    let mut reports = Vec::with_capacity(sizes.len());
    let mut outcome = Ok(());
    for (p, &m) in sizes.iter().enumerate() {
        let base = p as u64 * per_size;
        match run_size(relay, &args, &shared, &accounts, m, base).await {
            Ok(report) => {
                print_size(&report, &args);
                reports.push(report);
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    let mut closed_early = 0;
    let mut problem = None;
    for receiver in receivers {
        let (early, first_problem) = receiver.await?;
        closed_early += u64::from(early);
        problem = problem.or(first_problem);
    }
    if reports.len() > 1 {
        print_summary(&reports);
    }
    println!("sockets closed early: {closed_early}");
    if let Some(problem) = problem {
        println!("first receive problem: {problem}");
    }
    outcome
}

/// Creates the group of accounts `0..m`, runs the single and load phases, checks mailboxes.
async fn run_size(
    relay: &Relay,
    args: &GroupArgs,
    shared: &Arc<Shared>,
    accounts: &Arc<Vec<Account>>,
    m: usize,
    base: u64,
) -> Result<SizeReport> {
    let senders = args.senders.min(m);
    let dup_before = shared.duplicates.load(Ordering::Relaxed);
    let mis_before = shared.misrouted.load(Ordering::Relaxed);
    let unexpected_before = shared.unexpected.load(Ordering::Relaxed);
    let acks_before = (
        shared.ack_frames.load(Ordering::Relaxed),
        shared.ack_ids.load(Ordering::Relaxed),
    );

    // Group: created by account 0 with as many members as one request takes, the rest added.
    let setup_start = Instant::now();
    let events_before = shared.events.load(Ordering::Relaxed);
    let group_id = create_group(relay, accounts, m).await?;
    let expected_events = group_event_count(m);
    let deadline = Instant::now() + Duration::from_secs(args.drain);
    while shared.events.load(Ordering::Relaxed) < events_before + expected_events {
        if Instant::now() > deadline {
            return Err(format!(
                "group of {m}: {} of {expected_events} membership events arrived within {} s",
                shared.events.load(Ordering::Relaxed) - events_before,
                args.drain
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let setup = setup_start.elapsed();
    let path: Arc<str> = format!("/api/groups/{group_id}/messages").into();
    let mut rejected = BTreeMap::new();
    let mut transport_errors = 0;
    let mut first_problem = None;

    // Single: one message at a time, each on a relay with empty mailboxes.
    let mut single_request = stats::latency_histogram();
    let mut http = Http::connect(relay.addr).await?;
    let baseline = queued(&mut http).await;
    let mut content = vec![0x5au8; args.size];
    for i in base..base + args.single {
        let Some(slot) = shared.slot(i) else { break };
        let Some(sender) = accounts.get(slot.sender as usize) else {
            break;
        };
        let start = Instant::now();
        let sent_ns = shared.nanos(start);
        match send_one(&mut http, shared, &path, sender, i, sent_ns, &mut content).await {
            Ok(()) => {
                stats::record(&mut single_request, start.elapsed());
                let deadline = Instant::now() + Duration::from_secs(args.drain);
                while !slot.complete() && Instant::now() < deadline {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(50),
                        shared.completed.notified(),
                    )
                    .await;
                }
                // Let the members' acks land before the next message.
                let deadline = Instant::now() + Duration::from_secs(5);
                match baseline {
                    Some(baseline) => {
                        while queued(&mut http).await.is_some_and(|q| q > baseline)
                            && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            Err(SendError::Refused(status, problem)) => {
                *rejected.entry(status).or_default() += 1;
                first_problem.get_or_insert(problem);
            }
            Err(SendError::Transport(problem)) => {
                transport_errors += 1;
                first_problem.get_or_insert(problem);
            }
        }
    }
    let single_range = base..base + args.single;
    let (single_fanout, single_first) = fanout_histograms(shared, single_range.clone());

    // Load: warm-up, then measured messages.
    let load = Arc::new(Load {
        first: base + args.single,
        next: AtomicU64::new(base + args.single),
        end: base + args.single + args.warmup + args.messages,
        measured_from: base + args.single + args.warmup,
        window_start_ns: AtomicU64::new(u64::MAX),
        deliveries_at_start: AtomicU64::new(0),
        last_accept_ns: AtomicU64::new(0),
        start: Instant::now(),
        rate: args.rate,
        size: args.size,
        path: Arc::clone(&path),
    });
    let mut workers = Vec::with_capacity(args.in_flight);
    for i in 0..args.in_flight {
        let http = Http::connect(relay.addr_for(i)).await?;
        workers.push(tokio::spawn(send_loop(
            http,
            Arc::clone(shared),
            Arc::clone(accounts),
            Arc::clone(&load),
        )));
    }
    // CPU is sampled from the first measured send until the last delivery of the phase.
    while load.window_start_ns.load(Ordering::Acquire) == u64::MAX
        && !workers.iter().all(tokio::task::JoinHandle::is_finished)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cpu_start = (relay.cpu_time(), relay::own_cpu_time(), Instant::now());
    let mut load_request = stats::latency_histogram();
    for worker in workers {
        let w = worker.await?;
        load_request.add(&w.request_latency)?;
        for (status, count) in w.rejected {
            *rejected.entry(status).or_default() += count;
        }
        transport_errors += w.transport_errors;
        first_problem = first_problem.or(w.first_problem);
    }
    let load_range = load.measured_from..load.end;
    let phase_range = base..load.end;
    let drain_start = Instant::now();
    let all_done = || {
        phase_range.clone().all(|i| {
            shared
                .slot(i)
                .is_none_or(|s| !s.accepted.load(Ordering::Acquire) || s.complete())
        })
    };
    while !all_done() && drain_start.elapsed() < Duration::from_secs(args.drain) {
        let _ = tokio::time::timeout(Duration::from_millis(20), shared.completed.notified()).await;
    }
    let cpu_end = (relay.cpu_time(), relay::own_cpu_time(), Instant::now());
    let drain = drain_start.elapsed();
    let rss_end = relay.rss_kib();

    let window_start_ns = load.window_start_ns.load(Ordering::Acquire);
    let last_delivery_ns = phase_range
        .clone()
        .filter_map(|i| shared.slot(i))
        .map(|s| s.last_ns.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);
    let deliveries = if window_start_ns == u64::MAX {
        0
    } else {
        shared
            .deliveries
            .load(Ordering::Acquire)
            .saturating_sub(load.deliveries_at_start.load(Ordering::Acquire))
    };
    let window = Duration::from_nanos(last_delivery_ns.saturating_sub(window_start_ns));
    let measured_accepted = load_range
        .clone()
        .filter_map(|i| shared.slot(i))
        .filter(|s| s.accepted.load(Ordering::Acquire))
        .count() as f64;
    let accept_span = load
        .last_accept_ns
        .load(Ordering::Acquire)
        .saturating_sub(window_start_ns);
    let (load_fanout, load_first) = fanout_histograms(shared, load_range);

    let mut accepted = 0;
    let mut lost = 0;
    let mut received_unaccepted = 0;
    for slot in phase_range.clone().filter_map(|i| shared.slot(i)) {
        let got = u64::from(slot.received.load(Ordering::Acquire));
        if slot.accepted.load(Ordering::Acquire) {
            accepted += 1;
            lost += u64::from(slot.expected()).saturating_sub(got);
        } else {
            received_unaccepted += got;
        }
    }
    let left_in_mailboxes = mailboxes_left(relay, args, accounts, m).await?;
    let ack_frames = shared.ack_frames.load(Ordering::Relaxed) - acks_before.0;
    let ack_ids = shared.ack_ids.load(Ordering::Relaxed) - acks_before.1;
    let span = |a: Option<Duration>, b: Option<Duration>, wall: Duration| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64()),
        _ => None,
    };
    let wall = cpu_end.2.saturating_duration_since(cpu_start.2);
    Ok(SizeReport {
        members: m,
        senders,
        setup,
        single_request,
        single_fanout,
        single_first,
        load_request,
        load_fanout,
        load_first,
        accepted_per_s: measured_accepted / (accept_span as f64 / 1e9).max(1e-9),
        deliveries,
        window,
        accepted,
        lost,
        received_unaccepted,
        duplicates: shared.duplicates.load(Ordering::Relaxed) - dup_before,
        misrouted: shared.misrouted.load(Ordering::Relaxed) - mis_before,
        unexpected: shared.unexpected.load(Ordering::Relaxed) - unexpected_before,
        rejected,
        transport_errors,
        left_in_mailboxes,
        ack_frames,
        ack_ids,
        drain,
        relay_cores: span(cpu_start.0, cpu_end.0, wall),
        own_cores: span(cpu_start.1, cpu_end.1, wall),
        rss_end,
        first_problem,
    })
}

/// Envelopes queued in all mailboxes, from the relay's `/metrics` (`sotto_envelopes_queued`).
async fn queued(http: &mut Http) -> Option<u64> {
    let (status, body) = http.get("/metrics", None).await.ok()?;
    if !status.is_success() {
        return None;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("sotto_envelopes_queued "))
        .and_then(|n| n.trim().parse().ok())
}

/// Membership events one group of `m` causes: the creation reaches the first members, each join
/// request every member at that point.
fn group_event_count(m: usize) -> u64 {
    let mut members = m.min(MAX_IDS_PER_REQUEST + 1);
    let mut events = members as u64;
    while members < m {
        members = (members + MAX_IDS_PER_REQUEST).min(m);
        events += members as u64;
    }
    events
}

async fn create_group(relay: &Relay, accounts: &[Account], m: usize) -> Result<String> {
    let (Some(creator), Some(members)) = (accounts.first(), accounts.get(1..m)) else {
        return Err("not enough accounts for the group".into());
    };
    let ids: Vec<String> = members.iter().map(|a| a.user_id.clone()).collect();
    let mut chunks = ids.chunks(MAX_IDS_PER_REQUEST);
    let mut http = Http::connect(relay.addr).await?;
    let created: GroupCreated = http
        .json(
            Method::POST,
            "/api/groups",
            Some(&creator.token),
            &CreateGroupRequest {
                members: chunks.next().map(<[String]>::to_vec).unwrap_or_default(),
                metadata: Base64(vec![0x33; 64]),
            },
        )
        .await
        .map_err(|e| group_full_hint(e, m))?;
    for chunk in chunks {
        let _: GroupMembers = http
            .json(
                Method::POST,
                &format!("/api/groups/{}/join", created.group_id),
                Some(&creator.token),
                &JoinGroupRequest {
                    user_ids: Some(chunk.to_vec()),
                    invite_token: None,
                },
            )
            .await
            .map_err(|e| group_full_hint(e, m))?;
    }
    Ok(created.group_id)
}

fn group_full_hint(e: crate::Error, m: usize) -> crate::Error {
    let text = e.to_string();
    if text.contains("group_full") {
        format!("{text} (a group of {m}: start the relay with --relay-arg=--max-group-size={m})")
            .into()
    } else {
        e
    }
}

/// Envelopes still queued in the mailboxes of accounts `0..m`, waiting up to `--drain` for acks.
async fn mailboxes_left(
    relay: &Relay,
    args: &GroupArgs,
    accounts: &Arc<Vec<Account>>,
    m: usize,
) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(args.drain);
    loop {
        let left = count_unread(relay, args.setup_concurrency, accounts, m).await?;
        if left == 0 || Instant::now() > deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count_unread(
    relay: &Relay,
    concurrency: usize,
    accounts: &Arc<Vec<Account>>,
    m: usize,
) -> Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, m) {
        let (next, accounts, addr) = (Arc::clone(&next), Arc::clone(accounts), relay.addr);
        workers.spawn(async move {
            let mut http = Http::connect(addr).await?;
            let mut left = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(account) = accounts.get(usize::try_from(i)?).filter(|_| i < m as u64)
                else {
                    return Ok::<_, crate::Error>(left);
                };
                let (status, body) = http
                    .get("/api/messages/unread", Some(&account.token))
                    .await?;
                if !status.is_success() {
                    return Err(client::unexpected("/api/messages/unread", status, &body).into());
                }
                left += serde_json::from_slice::<UnreadCount>(&body)?.count;
            }
        });
    }
    let mut left = 0;
    while let Some(done) = workers.join_next().await {
        left += done??;
    }
    Ok(left)
}

/// Fan-out completion (send → last member) and send → first member, of the complete messages.
fn fanout_histograms(
    shared: &Shared,
    range: std::ops::Range<u64>,
) -> (Histogram<u64>, Histogram<u64>) {
    let mut fanout = stats::latency_histogram();
    let mut first = stats::latency_histogram();
    for slot in range.filter_map(|i| shared.slot(i)) {
        if !slot.accepted.load(Ordering::Acquire) || !slot.complete() {
            continue;
        }
        let sent = slot.sent_ns.load(Ordering::Acquire);
        let since = |ns: u64| Duration::from_nanos(ns.saturating_sub(sent));
        stats::record(&mut fanout, since(slot.last_ns.load(Ordering::Acquire)));
        stats::record(&mut first, since(slot.first_ns.load(Ordering::Acquire)));
    }
    (fanout, first)
}

enum SendError {
    Refused(u16, String),
    Transport(String),
}

/// Sends message `i` as `sender`; marks it accepted on a 2xx answer.
async fn send_one(
    http: &mut Http,
    shared: &Shared,
    path: &str,
    sender: &Account,
    i: u64,
    sent_ns: u64,
    content: &mut [u8],
) -> std::result::Result<(), SendError> {
    let Some(slot) = shared.slot(i) else {
        return Err(SendError::Transport(format!("message {i} out of range")));
    };
    slot.sent_ns.store(sent_ns, Ordering::Release);
    if let Some(index) = content.get_mut(..8) {
        index.copy_from_slice(&i.to_le_bytes());
    }
    if let Some(time) = content.get_mut(8..16) {
        time.copy_from_slice(&sent_ns.to_le_bytes());
    }
    let request = GroupSendRequest {
        client_message_id: format!("g{i}"),
        content: Base64(content.to_vec()),
        messages: Vec::new(),
    };
    let body = serde_json::to_vec(&request).map_err(|e| SendError::Transport(e.to_string()))?;
    match http
        .request(Method::POST, path, Some(&sender.token), Some(body))
        .await
    {
        Ok((status, _)) if status.is_success() => {
            slot.accepted.store(true, Ordering::Release);
            Ok(())
        }
        Ok((status, answer)) => Err(SendError::Refused(
            status.as_u16(),
            client::unexpected(path, status, &answer),
        )),
        Err(e) => Err(SendError::Transport(format!("group send: {e}"))),
    }
}

/// The load phase of one group size, shared by its send workers.
#[derive(Debug)]
struct Load {
    /// The phase's first message.
    first: u64,
    next: AtomicU64,
    end: u64,
    measured_from: u64,
    /// Send time of the first measured message.
    window_start_ns: AtomicU64,
    deliveries_at_start: AtomicU64,
    last_accept_ns: AtomicU64,
    start: Instant,
    rate: u64,
    size: usize,
    path: Arc<str>,
}

#[derive(Debug)]
struct WorkerStats {
    request_latency: Histogram<u64>,
    rejected: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_problem: Option<String>,
}

async fn send_loop(
    mut http: Http,
    shared: Arc<Shared>,
    accounts: Arc<Vec<Account>>,
    load: Arc<Load>,
) -> WorkerStats {
    let mut stats = WorkerStats {
        request_latency: stats::latency_histogram(),
        rejected: BTreeMap::new(),
        transport_errors: 0,
        first_problem: None,
    };
    let mut content = vec![0x5au8; load.size];
    loop {
        let i = load.next.fetch_add(1, Ordering::Relaxed);
        if i >= load.end {
            break;
        }
        let Some(sender) = shared.slot(i).and_then(|s| accounts.get(s.sender as usize)) else {
            break;
        };
        let due = if load.rate > 0 {
            let offset = u128::from(i - load.first) * 1_000_000_000 / u128::from(load.rate);
            load.start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
        } else {
            Instant::now()
        };
        if load.rate > 0 {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent_ns = shared.nanos(due);
        if i == load.measured_from {
            load.deliveries_at_start
                .store(shared.deliveries.load(Ordering::Acquire), Ordering::Release);
            load.window_start_ns.store(sent_ns, Ordering::Release);
        }
        let outcome = send_one(
            &mut http,
            &shared,
            &load.path,
            sender,
            i,
            sent_ns,
            &mut content,
        )
        .await;
        match outcome {
            Ok(()) => {
                load.last_accept_ns
                    .fetch_max(shared.nanos(Instant::now()), Ordering::AcqRel);
                if i >= load.measured_from {
                    stats::record(&mut stats.request_latency, due.elapsed());
                }
            }
            Err(SendError::Refused(status, problem)) => {
                *stats.rejected.entry(status).or_default() += 1;
                stats.first_problem.get_or_insert(problem);
            }
            Err(SendError::Transport(problem)) => {
                stats.transport_errors += 1;
                stats.first_problem.get_or_insert(problem);
            }
        }
    }
    stats
}

/// Reads one member's WebSocket until told to stop: records group messages, acks everything in
/// batches. Returns whether the socket closed early and the first problem seen.
async fn receive(
    mut ws: Ws,
    me: u32,
    total: u64,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: mpsc::Sender<()>,
) -> (bool, Option<String>) {
    let mut member = Member {
        me,
        seen: vec![0u64; usize::try_from(total.div_ceil(64)).unwrap_or(0)],
        shared,
        ready: Some(ready),
        acks: Vec::new(),
        first_problem: None,
    };
    let mut closed_early = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = ws.next() => frame,
        };
        let mut open = member.handle(frame);
        // Take whatever else is already buffered, so one ack frame covers a batch.
        while open && member.acks.len() < 100 {
            match ws.next().now_or_never() {
                Some(frame) => open = member.handle(frame),
                None => break,
            }
        }
        if !member.acks.is_empty() {
            member.shared.ack_frames.fetch_add(1, Ordering::Relaxed);
            member
                .shared
                .ack_ids
                .fetch_add(member.acks.len() as u64, Ordering::Relaxed);
            let ack = ClientFrame::Ack {
                ids: std::mem::take(&mut member.acks),
            };
            let sent = match serde_json::to_string(&ack) {
                Ok(text) => ws
                    .send(Message::text(text))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                member.problem(format!("ack: {e}"));
                open = false;
            }
        }
        if !open {
            closed_early = !*stop.borrow();
            break;
        }
    }
    (closed_early, member.first_problem)
}

/// One member's receiving state.
struct Member {
    me: u32,
    /// Message indices this member received.
    seen: Vec<u64>,
    shared: Arc<Shared>,
    ready: Option<mpsc::Sender<()>>,
    acks: Vec<u64>,
    first_problem: Option<String>,
}

impl Member {
    fn problem(&mut self, text: String) {
        self.first_problem.get_or_insert(text);
    }

    /// Handles one frame; false when the socket is finished.
    fn handle(
        &mut self,
        frame: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> bool {
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                self.problem(format!("relay closed a WebSocket: {close:?}"));
                return false;
            }
            Some(Ok(_)) => return true,
            Some(Err(e)) => {
                self.problem(format!("WebSocket: {e}"));
                return false;
            }
            None => return false,
        };
        match serde_json::from_str::<ServerFrame>(text.as_str()) {
            Ok(ServerFrame::Envelope(envelope)) => {
                self.acks.push(envelope.seq);
                match envelope.kind {
                    EnvelopeKind::GroupMessage => {
                        let index = envelope
                            .content
                            .as_ref()
                            .and_then(|c| c.as_bytes().get(..8))
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_le_bytes);
                        match index {
                            Some(index) => self.delivered(index),
                            None => {
                                self.shared.unexpected.fetch_add(1, Ordering::Relaxed);
                                self.problem("group message without an index".into());
                            }
                        }
                    }
                    EnvelopeKind::GroupEvent => {
                        self.shared.events.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        self.shared.unexpected.fetch_add(1, Ordering::Relaxed);
                        self.problem(format!("unexpected envelope kind {other:?}"));
                    }
                }
            }
            Ok(ServerFrame::QueueEmpty) => {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.try_send(());
                }
            }
            Ok(ServerFrame::Error(error)) => {
                self.shared.unexpected.fetch_add(1, Ordering::Relaxed);
                self.problem(format!("error frame: {} {}", error.code, error.message));
            }
            Ok(_) => {}
            Err(e) => {
                self.shared.unexpected.fetch_add(1, Ordering::Relaxed);
                self.problem(format!("unreadable frame: {e}"));
            }
        }
        true
    }

    fn delivered(&mut self, index: u64) {
        let now = self.shared.nanos(Instant::now());
        let Some(slot) = self.shared.slot(index) else {
            self.shared.misrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.me == slot.sender || self.me >= slot.members {
            self.shared.misrouted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bit = 1u64 << (index % 64);
        let Some(word) = usize::try_from(index / 64)
            .ok()
            .and_then(|w| self.seen.get_mut(w))
        else {
            self.shared.misrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if *word & bit != 0 {
            self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *word |= bit;
        slot.first_ns.fetch_min(now, Ordering::AcqRel);
        slot.last_ns.fetch_max(now, Ordering::AcqRel);
        self.shared.deliveries.fetch_add(1, Ordering::AcqRel);
        if slot.received.fetch_add(1, Ordering::AcqRel) + 1 == slot.expected() {
            self.shared.completed.notify_waiters();
        }
    }
}

fn print_size(r: &SizeReport, args: &GroupArgs) {
    let m = r.members;
    println!(
        "-- group of {m} ({} senders; {} deliveries per message); membership set up in {:.2} s",
        r.senders,
        m - 1,
        r.setup.as_secs_f64()
    );
    println!(
        "single ({}):      send → accepted {}",
        args.single,
        stats::summary(&r.single_request)
    );
    println!(
        "                  fan-out completion {}",
        stats::summary(&r.single_fanout)
    );
    println!(
        "                  send → first member {}",
        stats::summary(&r.single_first)
    );
    println!(
        "load:             {:.0} deliveries/s ({} deliveries in {:.2} s, first measured send → last delivery); {:.0} msgs/s accepted",
        r.deliveries_per_s(),
        r.deliveries,
        r.window.as_secs_f64(),
        r.accepted_per_s
    );
    println!(
        "                  send → accepted {}",
        stats::summary(&r.load_request)
    );
    println!(
        "                  fan-out completion {}",
        stats::summary(&r.load_fanout)
    );
    println!(
        "                  send → first member {}",
        stats::summary(&r.load_first)
    );
    println!(
        "losses:           {} of {} deliveries missing ({} accepted messages, waited {:.1} s); {} duplicates; {} misrouted; {} received without an accepted answer",
        r.lost,
        r.accepted * (m as u64 - 1),
        r.accepted,
        r.drain.as_secs_f64(),
        r.duplicates,
        r.misrouted,
        r.received_unaccepted
    );
    println!(
        "mailboxes:        {} envelopes left unacked in the {m} members' mailboxes after the phase; {} ack frames, {:.1} ids per frame",
        r.left_in_mailboxes,
        r.ack_frames,
        r.ack_ids as f64 / r.ack_frames.max(1) as f64
    );
    println!(
        "refused/errors:   {:?} by status, {} transport errors, {} unexpected frames",
        r.rejected, r.transport_errors, r.unexpected
    );
    let cores = |c: Option<f64>| c.map_or_else(|| "?".into(), |c| format!("{c:.2}"));
    println!(
        "CPU in window:    relay {} cores, load generator {} cores; relay RSS at the end {}",
        cores(r.relay_cores),
        cores(r.own_cores),
        r.rss_end
            .map_or_else(|| "?".into(), |k| stats::kib(k as f64))
    );
    if let Some(problem) = &r.first_problem {
        println!("first problem:    {problem}");
    }
}

fn print_summary(reports: &[SizeReport]) {
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    println!("== summary (ms; single = one message at a time, load = measured phase)");
    println!(
        "{:>7} {:>13} {:>22} {:>22} {:>22} {:>22} {:>7} {:>5}",
        "members",
        "deliveries/s",
        "single accept p50/p99",
        "load accept p50/p99",
        "single fan-out p50/99",
        "load fan-out p50/p99",
        "lost",
        "dups"
    );
    for r in reports {
        println!(
            "{:>7} {:>13.0} {:>22} {:>22} {:>22} {:>22} {:>7} {:>5}",
            r.members,
            r.deliveries_per_s(),
            format!(
                "{} / {}",
                ms(&r.single_request, 0.5),
                ms(&r.single_request, 0.99)
            ),
            format!(
                "{} / {}",
                ms(&r.load_request, 0.5),
                ms(&r.load_request, 0.99)
            ),
            format!(
                "{} / {}",
                ms(&r.single_fanout, 0.5),
                ms(&r.single_fanout, 0.99)
            ),
            format!("{} / {}", ms(&r.load_fanout, 0.5), ms(&r.load_fanout, 0.99)),
            r.lost,
            r.duplicates
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_events_per_group_size() {
        assert_eq!(group_event_count(10), 10);
        assert_eq!(group_event_count(1001), 1001);
        // 1001 at creation, then a join of 999 reaching all 2000.
        assert_eq!(group_event_count(2000), 3001);
    }
}
