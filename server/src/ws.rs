//! `/ws`: one task per connected device.
//!
//! The task keeps a cursor (the last mailbox sequence it pushed) and a count of pushed-but-unacked
//! envelopes; it holds no envelopes between reads. It reads the mailbox from the store when woken
//! by the [`Hub`](crate::hub::Hub) and pushes in sequence order, so the backlog drains first and new
//! envelopes follow without a separate path. Pushing pauses while `ws-max-unacked` envelopes are
//! unacked; a connection that stays stalled (window full, or socket not writable) for
//! `ws-slow-consumer-secs` is closed and its envelopes stay queued for the next connection.
//!
//! Group fan-out avoids per-member database work where it can: a connection at the head of its
//! mailbox is handed the group message's frame, serialised once per send, instead of reading it,
//! and acks of envelopes that only need deleting (group messages, group events, receipts) are
//! gathered across connections into one write ([`AckBatcher`](crate::acks::AckBatcher)).

use std::collections::BTreeSet;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sotto_wire::{close_code, ClientFrame, ErrorBody, ServerFrame};

use crate::api::envelopes::References;
use crate::api::messages::{apply_ack, MAX_PAGE};
use crate::auth;
use crate::error::Query;
use crate::hub::{CloseReason, Handed, Handoff};
use crate::store::{DeviceAuth, StoredEnvelope, ENVELOPE_MESSAGE, ENVELOPE_RECEIPT};
use crate::{now_ms, AppError, AppState};

/// Largest frame a client may send (acks are small).
const MAX_CLIENT_FRAME: usize = 16 * 1024;

/// Query of `/ws`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// Bearer token, for browsers that cannot set headers on WebSockets.
    #[serde(default)]
    pub token: Option<String>,
}

/// `GET /ws`: authenticates, then upgrades.
#[utoipa::path(
    get, path = "/ws", tag = "messages", params(WsQuery), summary = "WebSocket: token by header or ?token=; frames are ServerFrame/ClientFrame JSON text", security(("bearer" = [])),
    responses(
        (status = 101, description = "switching protocols"),
        (status = 426, description = "`websocket_required`"),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let token = auth::bearer(&headers)
        .or(query.token.as_deref())
        .ok_or_else(AppError::unauthorized)?;
    let device = auth::authenticate(&state, token).await?;
    let ws = ws.map_err(|_| {
        AppError::client(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "this endpoint needs a WebSocket upgrade",
        )
    })?;
    let response = ws
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| run(state, device, socket));
    Ok(response.into_response())
}

fn text(frame: &ServerFrame) -> Message {
    // Serializing our own frame types cannot fail; an empty frame would be a visible bug.
    Message::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

fn error_frame(code: &str, message: impl Into<String>) -> Message {
    text(&ServerFrame::Error(ErrorBody {
        code: code.into(),
        message: message.into(),
    }))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

enum Exit {
    Close(u16, &'static str),
    Drop,
}

struct Conn {
    state: AppState,
    device: DeviceAuth,
    cursor: i64,
    unacked: u32,
    more: bool,
    backlog_done: bool,
    last_heard: Instant,
    stalled_since: Option<Instant>,
    /// Pushed, unacked envelopes whose ack only deletes them (every kind but a 1:1 message):
    /// their acks join the process-wide [`AckBatcher`](crate::acks::AckBatcher).
    deletable: BTreeSet<i64>,
}

impl Conn {
    async fn send(&self, socket: &mut WebSocket, msg: Message) -> Result<(), Exit> {
        match tokio::time::timeout(self.state.config().ws_slow_consumer, socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Exit::Drop),
            Err(_) => {
                self.state.metrics().slow_consumers.inc();
                // The close frame queues behind what the client has not read yet; the close
                // handshake below gives it a bounded time to get through.
                Err(Exit::Close(
                    close_code::SLOW_CONSUMER,
                    "the connection does not read fast enough",
                ))
            }
        }
    }

    /// Pushes the next page of the mailbox, if the unacked window has room.
    async fn push(&mut self, socket: &mut WebSocket) -> Result<(), Exit> {
        let max = self.state.config().ws_max_unacked;
        if self.unacked >= max {
            self.stalled_since.get_or_insert_with(Instant::now);
            return Ok(());
        }
        self.stalled_since = None;
        let room = (max - self.unacked).min(MAX_PAGE);
        let page = self
            .state
            .store()
            .fetch(self.device.pk, self.cursor, room)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "mailbox read failed");
                Exit::Close(1011, "internal error")
            })?;
        let full = page.len() >= room as usize;
        let refs = crate::api::envelopes::references(&self.state, self.device.pk, &page)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "group message read failed");
                Exit::Close(1011, "internal error")
            })?;
        let now = now_ms();
        for env in page {
            self.push_one(socket, env, &refs, now).await?;
        }
        self.more = full;
        if !full && !self.backlog_done {
            self.backlog_done = true;
            self.send(socket, text(&ServerFrame::QueueEmpty)).await?;
        }
        Ok(())
    }

    async fn push_one(
        &mut self,
        socket: &mut WebSocket,
        env: StoredEnvelope,
        refs: &References,
        now: i64,
    ) -> Result<(), Exit> {
        self.pushed(env.seq, env.server_ts, now);
        if env.kind != ENVELOPE_MESSAGE {
            self.deletable.insert(env.seq);
        }
        let env = crate::api::envelopes::to_wire(env, refs);
        self.send(socket, text(&ServerFrame::Envelope(env))).await
    }

    /// Accounts for the envelope `seq`, accepted at `server_ts`, being pushed now.
    fn pushed(&mut self, seq: i64, server_ts: i64, now: i64) {
        self.cursor = seq;
        self.unacked += 1;
        let waited = u64::try_from(now.saturating_sub(server_ts)).unwrap_or(0);
        let metrics = self.state.metrics();
        metrics
            .delivery_latency
            .observe(std::time::Duration::from_millis(waited));
        metrics.envelopes_pushed.inc();
    }

    /// Pushes envelopes handed over after their commit when they continue the mailbox exactly
    /// where this connection stands; anything else (a gap, a full window, a stale hand-over)
    /// falls back to reading the store.
    async fn push_handoff(&mut self, socket: &mut WebSocket, handoff: Handoff) -> Result<(), Exit> {
        if handoff.stale || self.more {
            self.more = true;
            return Ok(());
        }
        let mut envelopes = handoff.envelopes;
        envelopes.sort_unstable_by_key(Handed::seq);
        let max = self.state.config().ws_max_unacked;
        let refs = References::default();
        let now = now_ms();
        for handed in envelopes {
            let seq = handed.seq();
            if seq <= self.cursor {
                continue;
            }
            if seq != self.cursor + 1 || self.unacked >= max {
                self.more = true;
                return Ok(());
            }
            match handed {
                Handed::Stored(env) => {
                    if env.kind != ENVELOPE_MESSAGE && env.kind != ENVELOPE_RECEIPT {
                        self.more = true;
                        return Ok(());
                    }
                    self.push_one(socket, env, &refs, now).await?;
                }
                Handed::Group(seq, frame) => {
                    self.pushed(seq, frame.server_ts, now);
                    self.deletable.insert(seq);
                    self.send(socket, Message::Text(frame.text(seq).into()))
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn handle(&mut self, socket: &mut WebSocket, msg: Message) -> Result<(), Exit> {
        self.last_heard = Instant::now();
        match msg {
            Message::Text(body) => match serde_json::from_str::<ClientFrame>(body.as_str()) {
                Ok(ClientFrame::Ping) => self.send(socket, text(&ServerFrame::Pong)).await,
                Ok(ClientFrame::Ack { ids }) => self.ack(socket, ids).await,
                Ok(_) => {
                    self.send(socket, error_frame("invalid_frame", "unsupported frame"))
                        .await
                }
                Err(e) => {
                    self.send(socket, error_frame("invalid_frame", e.to_string()))
                        .await
                }
            },
            Message::Binary(_) => {
                self.send(socket, error_frame("invalid_frame", "frames are JSON text"))
                    .await
            }
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(Exit::Drop),
        }
    }

    async fn ack(&mut self, socket: &mut WebSocket, ids: Vec<u64>) -> Result<(), Exit> {
        if ids.len() > MAX_PAGE as usize {
            return self
                .send(
                    socket,
                    error_frame("too_many_ids", "at most 100 ids per ack"),
                )
                .await;
        }
        let asked = ids.len();
        let was_full = self.unacked >= self.state.config().ws_max_unacked;
        // Envelopes that only need deleting go into the process-wide batch; 1:1 messages (their
        // ack queues receipts) and ids this connection did not push go the per-device way.
        let (quick, rest): (Vec<u64>, Vec<u64>) = ids
            .into_iter()
            .partition(|id| i64::try_from(*id).is_ok_and(|seq| self.deletable.contains(&seq)));
        let mut quick: Vec<i64> = quick
            .into_iter()
            .filter_map(|id| i64::try_from(id).ok())
            .collect();
        quick.sort_unstable();
        quick.dedup();
        let mut deleted = 0;
        let mut failed = false;
        if !quick.is_empty() {
            let acks = self.state.hub().acks();
            match acks
                .delete(&self.state, self.device.pk, quick.clone())
                .await
            {
                Ok(done) => {
                    deleted += done.len();
                    for seq in &quick {
                        self.deletable.remove(seq);
                    }
                }
                Err(()) => failed = true,
            }
        }
        if !rest.is_empty() {
            match apply_ack(&self.state, &self.device, rest).await {
                Ok(done) => deleted += done,
                Err(e) => {
                    if let AppError::Internal(cause) = &e {
                        tracing::warn!(%cause, "ack failed");
                    }
                    failed = true;
                }
            }
        }
        self.unacked = self
            .unacked
            .saturating_sub(u32::try_from(deleted).unwrap_or(u32::MAX));
        if deleted > 0 {
            // A device that acks is not a slow consumer, however long the relay took to apply
            // the ack; the stall clock starts again if the window is still full.
            self.stalled_since = None;
        }
        if was_full {
            // The window has room again: resume pushing.
            self.more = true;
        }
        if failed {
            return self
                .send(socket, error_frame("ack_failed", "ack not applied; retry"))
                .await;
        }
        if deleted < asked {
            self.send(
                socket,
                error_frame(
                    "unknown_envelope",
                    format!(
                        "{} of {asked} ids were not queued for this device",
                        asked - deleted
                    ),
                ),
            )
            .await?;
        }
        Ok(())
    }
}

async fn run(state: AppState, device: DeviceAuth, mut socket: WebSocket) {
    let signal = state.hub().register(device.pk);
    let live = crate::api::presence::on_connect(&state, &device);
    state.metrics().connections.inc();
    tracing::debug!(user_id = %device.user_id, device_id = device.device_id, "websocket open");
    let mut shutdown = state.shutdown_signal();
    let mut ping = tokio::time::interval(state.config().ws_ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let idle = state.config().ws_idle_timeout;
    let stall = state.config().ws_slow_consumer;
    let mut conn = Conn {
        state: state.clone(),
        device: device.clone(),
        cursor: 0,
        unacked: 0,
        more: true,
        backlog_done: false,
        last_heard: Instant::now(),
        stalled_since: None,
        deletable: BTreeSet::new(),
    };
    let exit = loop {
        if *shutdown.borrow() {
            break Exit::Close(close_code::GOING_AWAY, "server shutting down");
        }
        let ready = conn.more && conn.unacked < state.config().ws_max_unacked;
        if conn.more && !ready {
            conn.stalled_since.get_or_insert_with(Instant::now);
        }
        let step = tokio::select! {
            biased;
            _ = shutdown.changed() => Err(Exit::Close(close_code::GOING_AWAY, "server shutting down")),
            _ = signal.notify.notified() => match signal.close_reason() {
                CloseReason::Open => conn.push_handoff(&mut socket, signal.take()).await,
                CloseReason::Replaced => Err(Exit::Close(close_code::REPLACED, "replaced by a newer connection")),
                CloseReason::Revoked => Err(Exit::Close(close_code::REVOKED, "device removed")),
            },
            msg = socket.recv() => match msg {
                Some(Ok(msg)) => conn.handle(&mut socket, msg).await,
                Some(Err(_)) => Err(Exit::Close(1009, "invalid or oversize frame")),
                None => Err(Exit::Drop),
            },
            _ = live.ready() => {
                // Presence and ephemeral frames: never stored, dropped when stale.
                let mut sent = Ok(());
                for msg in live.drain() {
                    sent = conn.send(&mut socket, msg).await;
                    if sent.is_err() {
                        break;
                    }
                }
                sent
            },
            _ = ping.tick() => {
                if conn.last_heard.elapsed() > idle {
                    Err(Exit::Close(close_code::IDLE_TIMEOUT, "idle timeout"))
                } else if conn.stalled_since.is_some_and(|t| t.elapsed() > stall) {
                    state.metrics().slow_consumers.inc();
                    Err(Exit::Close(close_code::SLOW_CONSUMER, "too many unacked envelopes"))
                } else {
                    conn.send(&mut socket, Message::Ping(Default::default())).await
                }
            },
            _ = std::future::ready(()), if ready => conn.push(&mut socket).await,
        };
        if let Err(exit) = step {
            break exit;
        }
    };
    if let Exit::Close(code, reason) = exit {
        // Close handshake: send ours, then read until the peer's close (bounded), so the client
        // sees our code instead of a reset.
        let _ = tokio::time::timeout(crate::WS_CLOSE_GRACE, async {
            if socket.send(close(code, reason)).await.is_ok() {
                while let Some(Ok(msg)) = socket.recv().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
    crate::api::presence::on_disconnect(&state, &device, &live);
    state.hub().unregister(device.pk, &signal);
    state.metrics().connections.dec();
    tracing::debug!(user_id = %device.user_id, device_id = device.device_id, "websocket closed");
}
