//! Several relay processes on one database: what one process tells the others.
//!
//! ```text
//!  Hub / Realtime / presence ──▶ Cluster::publish ──▶ outbox (coalesced) ──▶ Bus ──▶ other processes
//!                                                                            │
//!  Hub::notify_local, Realtime::apply_remote, … ◀── apply ◀── Bus::subscribe ◀┘
//! ```
//!
//! The [`Bus`] is an engine operators already run: PostgreSQL LISTEN/NOTIFY on the relay's own
//! database ([`postgres::PgBus`], the default with PostgreSQL), or NATS (`--nats-url`,
//! [`nats::NatsBus`]) for operators who outgrow NOTIFY. With SQLite there is one process and no bus.
//!
//! Every event goes to every process (one subject / one channel); a process ignores its own
//! (`origin`) and events addressed to another. Nothing on the bus is needed for correctness of
//! stored data: envelopes are durable in the database, and a connection reads its whole mailbox
//! when it (re)connects; the bus only makes things *prompt* (wake-ups) and carries what is never
//! stored (presence, typing, provisioning messages). A gap in the bus (reconnect) wakes every
//! local connection and asks everyone to announce their connected devices again.

pub mod nats;
pub mod postgres;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

/// How often a process tells the others it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A process not heard from for this long is gone: its devices are offline.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);
/// Most device ids in one event (PostgreSQL caps a notification at 8,000 bytes).
const IDS_PER_EVENT: usize = 300;
/// Most devices in one presence announcement.
const DEVICES_PER_EVENT: usize = 60;
/// Events waiting to be published, past which the oldest are dropped (the bus is down).
const MAX_OUTBOX: usize = 10_000;
/// How long a provisioning delivery waits for the process holding the channel.
pub const PROVISION_REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// What a bus can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// NATS.
    #[error("nats: {0}")]
    Nats(String),
}

/// What a subscription yields.
#[derive(Debug)]
pub enum Received {
    /// One published payload.
    Payload(Vec<u8>),
    /// The subscription was interrupted: payloads may have been missed.
    Gap,
}

/// A publish/subscribe channel shared by every relay process.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + std::fmt::Debug {
    /// Publishes one payload to every subscriber (this process's included).
    async fn publish(&self, payload: Vec<u8>) -> Result<(), BusError>;
    /// Subscribes; payloads published from now on arrive in order per publisher.
    async fn subscribe(&self) -> Result<mpsc::Receiver<Received>, BusError>;
    /// The engine's name, for logs and metrics.
    fn name(&self) -> &'static str;
}

/// A device's presence as its process announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceState {
    /// Connected and active.
    Online,
    /// Connected, set away.
    Away,
    /// Disconnected.
    Offline,
}

/// One device in a presence announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePresence {
    /// Device row id.
    pub pk: i64,
    /// Its account.
    pub user: String,
    /// Its state.
    pub state: DeviceState,
}

/// Outcome of a provisioning delivery at the process holding the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisionOutcome {
    /// Stored for pick-up.
    Delivered,
    /// The channel already holds a message.
    AlreadyDelivered,
}

/// What processes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Event {
    /// These mailboxes have new envelopes (or changed): wake their connections.
    Mailboxes {
        /// Device row ids.
        pks: Vec<i64>,
    },
    /// These devices were removed: close their connections.
    Revoked {
        /// Device row ids.
        pks: Vec<i64>,
    },
    /// Devices opened a connection at the origin, each at a time (ms since the epoch): an older
    /// connection of one elsewhere closes.
    Connected {
        /// `(device row id, when)`.
        devices: Vec<(i64, i64)>,
    },
    /// Devices connected at the origin changed state (or, after `Hello`, are as given).
    Presence {
        /// The devices.
        devices: Vec<DevicePresence>,
    },
    /// Ephemeral frames (typing, presence) for devices connected at process `to`.
    Push {
        /// The process holding the connections.
        to: u64,
        /// Device row ids.
        pks: Vec<i64>,
        /// The frame, as sent on the WebSocket.
        text: String,
    },
    /// A device connected at process `to` sets itself away (or back) through another process.
    Away {
        /// The process holding the connection.
        to: u64,
        /// Device row id.
        pk: i64,
        /// Away or back.
        away: bool,
    },
    /// A device connected at process `to` replaces its presence subscriptions through another
    /// process (only users it may see).
    Subscribe {
        /// The process holding the connection.
        to: u64,
        /// Device row id.
        pk: i64,
        /// The users.
        users: Vec<String>,
    },
    /// The origin is alive.
    Alive,
    /// The origin (new, or after a gap) asks every process to announce its connected devices.
    Hello,
    /// A provisioning message for a channel this process does not hold; the holder answers
    /// with [`Event::Provisioned`] addressed to the origin.
    Provision {
        /// Matches the answer to the request.
        request: u64,
        /// The channel address.
        address: String,
        /// The message.
        message: sotto_wire::Base64,
    },
    /// The answer to [`Event::Provision`].
    Provisioned {
        /// The process that asked.
        to: u64,
        /// The request it answers.
        request: u64,
        /// What happened.
        outcome: ProvisionOutcome,
    },
}

impl Event {
    /// The one process the event is for, if it is for one.
    fn target(&self) -> Option<u64> {
        match self {
            Event::Push { to, .. }
            | Event::Away { to, .. }
            | Event::Subscribe { to, .. }
            | Event::Provisioned { to, .. } => Some(*to),
            _ => None,
        }
    }
}

/// What goes on the bus: an event and the process it comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Frame {
    /// The publishing process.
    o: u64,
    #[serde(flatten)]
    event: Event,
}

/// Events waiting for the publisher task; mailbox wake-ups are coalesced.
#[derive(Debug, Default)]
struct Outbox {
    mailboxes: Vec<i64>,
    revoked: Vec<i64>,
    events: std::collections::VecDeque<Event>,
}

/// This process's side of the bus.
#[derive(Debug)]
pub struct Cluster {
    origin: u64,
    bus: Arc<dyn Bus>,
    outbox: Mutex<Outbox>,
    wake: Notify,
    requests: Mutex<HashMap<u64, oneshot::Sender<ProvisionOutcome>>>,
    next_request: std::sync::atomic::AtomicU64,
    peers: Mutex<HashMap<u64, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// This process on `bus`, with a random origin id.
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self {
            origin: rand::random::<u64>() >> 1,
            bus,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            requests: Mutex::new(HashMap::new()),
            next_request: std::sync::atomic::AtomicU64::new(1),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// This process's id on the bus.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.bus.name()
    }

    /// Other processes heard from within [`PROCESS_TIMEOUT`].
    pub fn peers(&self) -> usize {
        let now = Instant::now();
        lock(&self.peers)
            .values()
            .filter(|t| now.duration_since(**t) < PROCESS_TIMEOUT)
            .count()
    }

    /// Queues wake-ups for mailboxes whose connections may be at another process.
    pub fn mailboxes(&self, pks: &[i64]) {
        if pks.is_empty() {
            return;
        }
        lock(&self.outbox).mailboxes.extend_from_slice(pks);
        self.wake.notify_one();
    }

    /// Queues the closing of a removed device's connection elsewhere.
    pub fn revoked(&self, pk: i64) {
        lock(&self.outbox).revoked.push(pk);
        self.wake.notify_one();
    }

    /// Queues an event.
    pub fn publish(&self, event: Event) {
        {
            let mut outbox = lock(&self.outbox);
            if outbox.events.len() >= MAX_OUTBOX {
                outbox.events.pop_front();
                tracing::warn!("cluster outbox full: dropping the oldest event");
            }
            outbox.events.push_back(event);
        }
        self.wake.notify_one();
    }

    /// Announces devices' presence (chunked).
    pub fn presence(&self, devices: Vec<DevicePresence>) {
        for chunk in devices.chunks(DEVICES_PER_EVENT) {
            self.publish(Event::Presence {
                devices: chunk.to_vec(),
            });
        }
    }

    /// Asks the process holding provisioning channel `address` to store `message`; `None` when no
    /// process answered within [`PROVISION_REPLY_TIMEOUT`] (no such channel anywhere).
    pub async fn provision(
        &self,
        address: &str,
        message: sotto_wire::Base64,
    ) -> Option<ProvisionOutcome> {
        let request = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.requests).insert(request, tx);
        self.publish(Event::Provision {
            request,
            address: address.to_owned(),
            message,
        });
        let outcome = tokio::time::timeout(PROVISION_REPLY_TIMEOUT, rx).await;
        lock(&self.requests).remove(&request);
        outcome.ok().and_then(Result::ok)
    }

    fn take(&self) -> Vec<Event> {
        let Outbox {
            mut mailboxes,
            mut revoked,
            events,
        } = std::mem::take(&mut *lock(&self.outbox));
        mailboxes.sort_unstable();
        mailboxes.dedup();
        revoked.sort_unstable();
        revoked.dedup();
        // Presence changes and new connections are merged (in order) into few events: a burst
        // of reconnections costs a few notifications, not one per device.
        let mut out: Vec<Event> = Vec::new();
        let mut presence = Vec::new();
        let mut connected = Vec::new();
        for event in events {
            match event {
                Event::Presence { devices } => presence.extend(devices),
                Event::Connected { devices } => connected.extend(devices),
                other => out.push(other),
            }
        }
        out.extend(presence.chunks(DEVICES_PER_EVENT).map(|d| Event::Presence {
            devices: d.to_vec(),
        }));
        out.extend(
            connected
                .chunks(IDS_PER_EVENT / 2)
                .map(|d| Event::Connected {
                    devices: d.to_vec(),
                }),
        );
        out.extend(
            revoked
                .chunks(IDS_PER_EVENT)
                .map(|pks| Event::Revoked { pks: pks.to_vec() }),
        );
        out.extend(
            mailboxes
                .chunks(IDS_PER_EVENT)
                .map(|pks| Event::Mailboxes { pks: pks.to_vec() }),
        );
        out
    }

    fn encode(&self, event: Event) -> Vec<u8> {
        serde_json::to_vec(&Frame {
            o: self.origin,
            event,
        })
        .unwrap_or_default()
    }

    /// Publishes queued events until the cluster is dropped.
    async fn run_outbox(weak: Weak<Self>) {
        loop {
            let Some(this) = weak.upgrade() else { return };
            let events = this.take();
            if events.is_empty() {
                // A wake-up while busy left a permit; the timeout re-checks the weak reference now
                // and then, so the task ends with its cluster.
                let _ = tokio::time::timeout(Duration::from_secs(1), this.wake.notified()).await;
                continue;
            }
            for event in events {
                let payload = this.encode(event);
                if let Err(e) = this.bus.publish(payload).await {
                    tracing::warn!(error = %e, bus = this.bus.name(), "cluster publish failed");
                }
            }
        }
    }

    /// Decodes a payload from another process (`None`: our own, or not understood).
    fn decode(&self, payload: &[u8]) -> Option<(u64, Event)> {
        match serde_json::from_slice::<Frame>(payload) {
            Ok(frame) if frame.o != self.origin => {
                lock(&self.peers).insert(frame.o, Instant::now());
                Some((frame.o, frame.event))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cluster payload not understood");
                None
            }
        }
    }

    /// Processes not heard from within [`PROCESS_TIMEOUT`], forgotten.
    fn expired_peers(&self) -> Vec<u64> {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        let gone: Vec<u64> = peers
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= PROCESS_TIMEOUT)
            .map(|(o, _)| *o)
            .collect();
        for o in &gone {
            peers.remove(o);
        }
        gone
    }

    fn answer(&self, request: u64, outcome: ProvisionOutcome) {
        if let Some(tx) = lock(&self.requests).remove(&request) {
            let _ = tx.send(outcome);
        }
    }
}

/// What the relay does with what other processes say; implemented by the relay's state.
pub trait Apply: Send + Sync + 'static {
    /// One event from process `origin`.
    fn apply(self: Arc<Self>, origin: u64, event: Event);
    /// Payloads may have been missed: wake every connection.
    fn gap(self: Arc<Self>);
    /// Process `origin` is gone (not heard from in [`PROCESS_TIMEOUT`]).
    fn process_gone(self: Arc<Self>, origin: u64);
    /// This process's connected devices, for a `Hello`.
    fn local_presence(&self) -> Vec<DevicePresence>;
}

/// Starts the publisher, the subscriber and the heartbeat. The tasks hold weak references and
/// end when `cluster` or `apply` is dropped.
pub async fn start<A: Apply>(cluster: &Arc<Cluster>, apply: Weak<A>) -> Result<(), BusError> {
    let mut rx = cluster.bus.subscribe().await?;
    tokio::spawn(Cluster::run_outbox(Arc::downgrade(cluster)));
    cluster.publish(Event::Hello);
    let weak = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let received = tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => Some(r),
                    None => return,
                },
                _ = heartbeat.tick() => None,
            };
            let (Some(cluster), Some(apply)) = (weak.upgrade(), apply.upgrade()) else {
                return;
            };
            match received {
                None => {
                    cluster.publish(Event::Alive);
                    for origin in cluster.expired_peers() {
                        tracing::info!(origin, "relay process gone");
                        Arc::clone(&apply).process_gone(origin);
                    }
                }
                Some(Received::Gap) => {
                    Arc::clone(&apply).gap();
                    cluster.publish(Event::Hello);
                }
                Some(Received::Payload(bytes)) => {
                    let Some((origin, event)) = cluster.decode(&bytes) else {
                        continue;
                    };
                    if event.target().is_some_and(|to| to != cluster.origin) {
                        continue;
                    }
                    match event {
                        Event::Hello => cluster.presence(apply.local_presence()),
                        Event::Alive => {}
                        Event::Provisioned {
                            request, outcome, ..
                        } => cluster.answer(request, outcome),
                        event => Arc::clone(&apply).apply(origin, event),
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_fit_a_notification() {
        let cluster = Cluster::new(Arc::new(postgres::tests::Null));
        let event = Event::Push {
            to: 9,
            pks: vec![1, 2],
            text: "{\"type\":\"ephemeral\"}".into(),
        };
        let bytes = cluster.encode(event.clone());
        let frame: Frame = serde_json::from_slice(&bytes).unwrap();
        assert_eq!((frame.o, frame.event), (cluster.origin, event));
        // Our own payloads are ignored.
        assert!(cluster.decode(&bytes).is_none());
        // The largest coalesced wake-up fits PostgreSQL's payload limit.
        cluster.mailboxes(&(i64::MAX - 1000..i64::MAX).collect::<Vec<_>>());
        for event in cluster.take() {
            assert!(cluster.encode(event).len() < 8000);
        }
        let devices: Vec<DevicePresence> = (0..DEVICES_PER_EVENT)
            .map(|i| DevicePresence {
                pk: i64::MAX - i as i64,
                user: "u".repeat(64),
                state: DeviceState::Offline,
            })
            .collect();
        assert!(cluster.encode(Event::Presence { devices }).len() < 8000);
    }

    #[test]
    fn bursts_are_merged_in_order() {
        let cluster = Cluster::new(Arc::new(postgres::tests::Null));
        for pk in 0..200 {
            cluster.presence(vec![DevicePresence {
                pk,
                user: format!("user-{pk}"),
                state: DeviceState::Online,
            }]);
            cluster.publish(Event::Connected {
                devices: vec![(pk, i64::MAX - pk)],
            });
        }
        cluster.publish(Event::Alive);
        let events = cluster.take();
        assert_eq!(events.first(), Some(&Event::Alive));
        let mut seen = Vec::new();
        let mut connected = 0;
        for event in &events {
            assert!(cluster.encode(event.clone()).len() < 8000);
            match event {
                Event::Presence { devices } => seen.extend(devices.iter().map(|d| d.pk)),
                Event::Connected { devices } => connected += devices.len(),
                _ => {}
            }
        }
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(connected, 200);
        assert_eq!(events.len(), 1 + 200usize.div_ceil(DEVICES_PER_EVENT) + 2);
    }
}
