//! [`Connection`]: the relay WebSocket, kept open. A task owns the socket: it connects with the
//! device token, turns text frames into [`ServerFrame`]s, writes [`ClientFrame`]s, pings, notices
//! a dead link, and reconnects with exponential backoff and full jitter until told to stop or the
//! relay says the device is gone.
//!
//! ```text
//!  Connecting{attempt} ─▶ Connected ─▶ Frame(..)* ─▶ Disconnected{reason, retry_in: Some(d)} ─┐
//!        ▲                                                                                    │
//!        └──────────────────────────── sleep d (uniform in [0, min(max, initial·2^n)]) ◀──────┘
//!  4001 replaced / 4004 revoked / 401 at the upgrade / close(): Disconnected{.., retry_in: None}
//! ```

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rand_core::{OsRng, RngCore};
use sotto_wire::{close_code, ClientFrame, ServerFrame};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{RelayClient, TransportError};

/// Most envelope ids the relay takes in one ack frame.
pub const MAX_ACK_IDS: usize = 100;

/// Exponential backoff with full jitter: before reconnect attempt `n` (0-based, reset by every
/// successful connection) the task sleeps a uniformly random time in
/// `[0, min(max, initial · 2ⁿ)]`, so clients dropped together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Upper bound of every delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 0.5 s doubling up to 30 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The bound before attempt `attempt`: `min(max, initial · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut (impl RngCore + ?Sized)) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_micros()).unwrap_or(u64::MAX);
        if ceiling == 0 {
            return Duration::ZERO;
        }
        // The modulo bias is below 2^-20 for any ceiling under 2^44 µs (200 days).
        let micros = rng.next_u64() % (ceiling + 1);
        Duration::from_micros(micros)
    }
}

/// How a [`Connection`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Interval of the task's `ping` frames (the relay closes a connection it hears nothing from).
    pub ping_interval: Duration,
    /// With nothing received for this long (not even a pong), the link counts as dead and is
    /// replaced.
    pub idle_timeout: Duration,
    /// Longest TCP + TLS + upgrade.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the relay.
    pub max_frame_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 1 << 20,
        }
    }
}

/// Why the link went down.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// TCP, TLS or the upgrade failed, or timed out.
    Unreachable,
    /// The relay answered the upgrade with an HTTP status (401: the token is not valid).
    Rejected {
        /// HTTP status.
        status: u16,
    },
    /// The relay closed the WebSocket (see [`sotto_wire::close_code`]).
    Closed {
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: String,
    },
    /// The socket failed or went silent past the idle timeout.
    Lost,
    /// [`Connection::close`] or [`ConnectionHandle::close`] was called.
    ClosedByClient,
}

/// What the connection task reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A connection attempt starts (`attempt` 0 after a success, counting up while failing).
    Connecting {
        /// Failed attempts since the last success.
        attempt: u32,
    },
    /// The WebSocket is open.
    Connected,
    /// A frame from the relay.
    Frame(ServerFrame),
    /// The link is down. With `retry_in: Some(d)` the task reconnects after `d`; with `None` it
    /// has stopped for good (replaced by a newer connection, device removed, token refused, or
    /// closed by the client) and this is the last event.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// When the next attempt starts.
        retry_in: Option<Duration>,
    },
}

/// The link's state, as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting (or about to).
    Connecting,
    /// Open.
    Connected,
    /// Down, waiting before the next attempt.
    Waiting,
    /// Stopped for good.
    Stopped,
}

enum Command {
    Frame(ClientFrame, oneshot::Sender<Result<(), TransportError>>),
    Close,
    ReconnectNow,
}

/// Sends frames and controls a [`Connection`] from anywhere; cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Frame(..) => "Frame",
            Self::Close => "Close",
            Self::ReconnectNow => "ReconnectNow",
        })
    }
}

impl ConnectionHandle {
    /// Writes a frame on the open socket. Frames are not queued across reconnects:
    /// [`TransportError::NotConnected`] while the link is down (unacked envelopes are simply
    /// sent again on the next connection, so a lost ack costs a duplicate, never a message).
    pub async fn send(&self, frame: ClientFrame) -> Result<(), TransportError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Frame(frame, tx))
            .await
            .map_err(|_| TransportError::NotConnected)?;
        rx.await.map_err(|_| TransportError::NotConnected)?
    }

    /// Acks envelopes by `seq`, in frames of at most [`MAX_ACK_IDS`].
    pub async fn ack(&self, ids: &[u64]) -> Result<(), TransportError> {
        for chunk in ids.chunks(MAX_ACK_IDS) {
            self.send(ClientFrame::Ack {
                ids: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Waits until the state is `wanted` (or the task has ended).
    pub async fn wait_for(&self, wanted: ConnectionState) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s == wanted).await;
    }

    /// Skips the current backoff wait (e.g. the OS reports the network is back).
    pub async fn reconnect_now(&self) {
        let _ = self.commands.send(Command::ReconnectNow).await;
    }

    /// Closes the socket and stops the task.
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }
}

/// The relay WebSocket with automatic reconnects. Needs a tokio runtime; dropping it stops the task.
#[derive(Debug)]
pub struct Connection {
    events: mpsc::Receiver<ConnectionEvent>,
    handle: ConnectionHandle,
}

impl Connection {
    /// Starts connecting with the client's token, reconnect jitter from the OS RNG.
    pub fn open(client: &RelayClient, config: ConnectionConfig) -> Self {
        Self::open_with_rng(client, config, OsRng)
    }

    /// Starts connecting, drawing reconnect jitter from `rng` (deterministic in tests).
    pub fn open_with_rng(
        client: &RelayClient,
        config: ConnectionConfig,
        rng: impl RngCore + Send + 'static,
    ) -> Self {
        let (events_tx, events) = mpsc::channel(256);
        let (commands_tx, commands) = mpsc::channel(64);
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let task = Task {
            client: client.clone(),
            config,
            rng: std::sync::Mutex::new(Box::new(rng)),
            events: events_tx,
            commands,
            state: state_tx,
        };
        tokio::spawn(task.run());
        Self {
            events,
            handle: ConnectionHandle {
                commands: commands_tx,
                state,
            },
        }
    }

    /// The next event; `None` once the task has stopped and every event was read.
    pub async fn next_event(&mut self) -> Option<ConnectionEvent> {
        self.events.recv().await
    }

    /// A handle for sending frames from other tasks.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }

    /// See [`ConnectionHandle::send`].
    pub async fn send(&self, frame: ClientFrame) -> Result<(), TransportError> {
        self.handle.send(frame).await
    }

    /// See [`ConnectionHandle::ack`].
    pub async fn ack(&self, ids: &[u64]) -> Result<(), TransportError> {
        self.handle.ack(ids).await
    }

    /// See [`ConnectionHandle::state`].
    pub fn state(&self) -> ConnectionState {
        self.handle.state()
    }

    /// Closes the socket and stops the task; the remaining events can still be read.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How one connected session ended.
enum Ended {
    Reason(DisconnectReason),
    /// The consumer dropped the [`Connection`].
    Abandoned,
}

struct Task {
    client: RelayClient,
    config: ConnectionConfig,
    rng: std::sync::Mutex<Box<dyn RngCore + Send>>,
    events: mpsc::Sender<ConnectionEvent>,
    commands: mpsc::Receiver<Command>,
    state: watch::Sender<ConnectionState>,
}

/// Close codes after which reconnecting is pointless (`docs/api.md`).
fn is_final_close(code: u16) -> bool {
    code == close_code::REPLACED || code == close_code::REVOKED
}

impl Task {
    async fn emit(&self, event: ConnectionEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state);
    }

    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            self.set_state(ConnectionState::Connecting);
            if !self.emit(ConnectionEvent::Connecting { attempt }).await {
                break;
            }
            let reason = match self.connect().await {
                Ok(socket) => {
                    attempt = 0;
                    self.set_state(ConnectionState::Connected);
                    if !self.emit(ConnectionEvent::Connected).await {
                        break;
                    }
                    match self.session(socket).await {
                        Ended::Reason(reason) => reason,
                        Ended::Abandoned => break,
                    }
                }
                Err(reason) => {
                    attempt = attempt.saturating_add(1);
                    reason
                }
            };
            let stop = match &reason {
                DisconnectReason::Closed { code, .. } => is_final_close(*code),
                DisconnectReason::Rejected { status } => *status == 401 || *status == 403,
                DisconnectReason::ClosedByClient => true,
                _ => false,
            };
            if stop {
                self.set_state(ConnectionState::Stopped);
                let _ = self
                    .emit(ConnectionEvent::Disconnected {
                        reason,
                        retry_in: None,
                    })
                    .await;
                break;
            }
            // After a session that was up, the first retry is drawn from attempt 0's range.
            let delay = {
                let mut rng = self
                    .rng
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.config
                    .backoff
                    .delay(attempt.saturating_sub(1), &mut **rng)
            };
            self.set_state(ConnectionState::Waiting);
            if !self
                .emit(ConnectionEvent::Disconnected {
                    reason,
                    retry_in: Some(delay),
                })
                .await
            {
                break;
            }
            if !self.wait(delay).await {
                self.set_state(ConnectionState::Stopped);
                let _ = self
                    .emit(ConnectionEvent::Disconnected {
                        reason: DisconnectReason::ClosedByClient,
                        retry_in: None,
                    })
                    .await;
                break;
            }
        }
        self.set_state(ConnectionState::Stopped);
    }

    /// Sleeps out a backoff delay, answering commands; false when told to stop.
    async fn wait(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Frame(_, reply)) => {
                        let _ = reply.send(Err(TransportError::NotConnected));
                    }
                    Some(Command::ReconnectNow) => return true,
                    Some(Command::Close) => return false,
                    // Every handle is gone; the consumer may still read events.
                    None => return !self.events.is_closed(),
                },
                _ = self.events.closed() => return false,
            }
        }
    }

    async fn connect(&mut self) -> Result<Socket, DisconnectReason> {
        let mut request = self
            .client
            .ws_url()
            .into_client_request()
            .map_err(|_| DisconnectReason::Unreachable)?;
        if let Some(token) = self.client.token() {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| DisconnectReason::Rejected { status: 401 })?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            Some(Connector::Rustls(self.client.tls())),
        );
        match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => Err(DisconnectReason::Rejected {
                status: response.status().as_u16(),
            }),
            Ok(Err(_)) | Err(_) => Err(DisconnectReason::Unreachable),
        }
    }

    /// Runs one open socket until it ends.
    async fn session(&mut self, mut socket: Socket) -> Ended {
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let idle_deadline = last_heard + self.config.idle_timeout;
            tokio::select! {
                message = socket.next() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            // Frames this build does not know (a newer relay) are skipped.
                            if let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) {
                                if !self.emit(ConnectionEvent::Frame(frame)).await {
                                    let _ = socket.close(None).await;
                                    return Ended::Abandoned;
                                }
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                                .unwrap_or((1005, String::new()));
                            // Answer the close handshake; the socket is done either way.
                            let _ = socket.close(None).await;
                            return Ended::Reason(DisconnectReason::Closed { code, reason });
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return Ended::Reason(DisconnectReason::Lost),
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Frame(frame, reply)) => {
                        let result = match serde_json::to_string(&frame) {
                            Ok(json) => socket
                                .send(Message::text(json))
                                .await
                                .map_err(|_| TransportError::NotConnected),
                            Err(e) => Err(TransportError::Malformed(e.to_string())),
                        };
                        let failed = result.is_err();
                        let _ = reply.send(result);
                        if failed {
                            return Ended::Reason(DisconnectReason::Lost);
                        }
                    }
                    Some(Command::ReconnectNow) => {}
                    Some(Command::Close) => {
                        let _ = socket.close(None).await;
                        return Ended::Reason(DisconnectReason::ClosedByClient);
                    }
                    None => {}
                },
                _ = ping.tick() => {
                    let ping = serde_json::to_string(&ClientFrame::Ping).unwrap_or_default();
                    if socket.send(Message::text(ping)).await.is_err() {
                        return Ended::Reason(DisconnectReason::Lost);
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    return Ended::Reason(DisconnectReason::Lost);
                }
                _ = self.events.closed() => {
                    let _ = socket.close(None).await;
                    return Ended::Abandoned;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn backoff_ceiling_doubles_up_to_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(1600));
        assert_eq!(b.ceiling(5), Duration::from_secs(2));
        assert_eq!(b.ceiling(1000), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_spans_the_whole_range() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let delays: Vec<Duration> = (0..2000).map(|_| b.delay(3, &mut rng)).collect();
        let ceiling = b.ceiling(3);
        assert!(delays.iter().all(|d| *d <= ceiling));
        // Full jitter: both ends of [0, ceiling] are reached, and the mean is about half.
        assert!(delays.iter().any(|d| *d < ceiling / 20));
        assert!(delays.iter().any(|d| *d > ceiling * 19 / 20));
        let mean = delays.iter().sum::<Duration>() / 2000;
        assert!(mean > ceiling * 2 / 5 && mean < ceiling * 3 / 5, "{mean:?}");
        // Deterministic for a given RNG.
        let mut a = ChaCha8Rng::seed_from_u64(1);
        let mut c = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(b.delay(2, &mut a), b.delay(2, &mut c));
        let zero = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(5, &mut rng), Duration::ZERO);
    }

    #[test]
    fn final_close_codes() {
        assert!(is_final_close(4001));
        assert!(is_final_close(4004));
        assert!(!is_final_close(4002));
        assert!(!is_final_close(4003));
        assert!(!is_final_close(1001));
    }

    /// No relay listening: attempts fail with `Unreachable`, the delays grow within their
    /// bounds, and `close` stops the task.
    #[tokio::test]
    async fn unreachable_relay_backs_off_and_close_stops() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RelayClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let config = ConnectionConfig {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(400),
            },
            ..ConnectionConfig::default()
        };
        let mut conn = Connection::open_with_rng(&client, config, ChaCha8Rng::seed_from_u64(5));
        let mut attempts = Vec::new();
        let mut delays = Vec::new();
        while attempts.len() < 5 {
            match conn.next_event().await.unwrap() {
                ConnectionEvent::Connecting { attempt } => attempts.push(attempt),
                ConnectionEvent::Disconnected {
                    reason: DisconnectReason::Unreachable,
                    retry_in: Some(d),
                } => delays.push(d),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(attempts, vec![0, 1, 2, 3, 4]);
        for (i, d) in delays.iter().enumerate() {
            assert!(*d <= config.backoff.ceiling(i as u32), "{i}: {d:?}");
        }
        assert!(matches!(
            conn.send(ClientFrame::Ping).await,
            Err(TransportError::NotConnected)
        ));
        conn.close().await;
        loop {
            match conn.next_event().await {
                Some(ConnectionEvent::Disconnected { retry_in: None, .. }) => break,
                Some(_) => {}
                None => panic!("ended without a final event"),
            }
        }
        assert!(conn.next_event().await.is_none());
        assert_eq!(conn.state(), ConnectionState::Stopped);
    }
}
