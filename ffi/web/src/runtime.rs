//! The browser runtime around the core: one thread, no tokio. The same contract as the native
//! runtime (`sotto-client`): every input to the core is followed by a *drain* that commits the
//! store changes it caused (IndexedDB, all or nothing), then acks the envelopes behind them,
//! then starts its requests (`fetch`) and hands out its events. An envelope whose effect is not
//! committed is never acked.
//!
//! Drains never overlap: one that is asked for while another runs is folded into it (the running
//! drain loops once more), so commits stay in the core's order.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use js_sys::Function;
use sotto_client_core::store::{self as tables_mod, tables};
use sotto_client_core::{Client, ConversationId, Event, Message, Receipt, StoreOp};
use sotto_store::{EncryptedStore, RangeQuery, StoreError};
use sotto_wire::{ClientFrame, ServerFrame};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::events::{self, Connection};
use crate::net::{self, now_ms, Http};

/// The runtime's own table: relay URL and the device's bearer token (sealed like every value).
pub(crate) const SESSION_TABLE: &str = "client_session";

/// What the app's listener gets; events wait in a queue until one is set.
#[derive(Default)]
pub(crate) struct Listener {
    callback: Option<Function>,
    queue: VecDeque<JsValue>,
}

/// A send the app awaits: settled when the relay accepted it or it was given up.
pub(crate) type Waiter = Box<dyn FnOnce(Result<u64, sotto_client_core::SendFailure>)>;

struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(web_sys::Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

pub(crate) struct Inner {
    core: RefCell<Client>,
    pub(crate) store: EncryptedStore,
    pub(crate) http: Http,
    listener: RefCell<Listener>,
    waiters: RefCell<HashMap<String, Waiter>>,
    pending_acks: RefCell<Vec<u64>>,
    socket: RefCell<Option<Socket>>,
    open: Cell<bool>,
    draining: Cell<bool>,
    again: Cell<bool>,
    stopped: Cell<bool>,
    backoff_ms: Cell<u32>,
    last_ping: Cell<u64>,
}

/// Longest wait between reconnection attempts.
const MAX_BACKOFF_MS: u32 = 30_000;
const PING_EVERY_MS: u64 = 15_000;
const TICK_MS: u32 = 500;

impl Inner {
    pub(crate) fn start(core: Client, store: EncryptedStore, http: Http) -> Rc<Self> {
        let inner = Rc::new(Self {
            core: RefCell::new(core),
            store,
            http,
            listener: RefCell::default(),
            waiters: RefCell::default(),
            pending_acks: RefCell::default(),
            socket: RefCell::new(None),
            open: Cell::new(false),
            draining: Cell::new(false),
            again: Cell::new(false),
            stopped: Cell::new(false),
            backoff_ms: Cell::new(250),
            last_ping: Cell::new(now_ms()),
        });
        connect(&inner);
        let weak = Rc::downgrade(&inner);
        wasm_bindgen_futures::spawn_local(tick(weak));
        inner
    }

    /// Runs `f` on the core (never across an await).
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T {
        f(&mut self.core.borrow_mut())
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped.get()
    }

    pub(crate) fn set_listener(&self, callback: Option<Function>) {
        let queued: Vec<JsValue> = {
            let mut l = self.listener.borrow_mut();
            l.callback = callback;
            if l.callback.is_some() {
                l.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for e in queued {
            self.emit(e);
        }
    }

    pub(crate) fn emit(&self, event: JsValue) {
        let callback = {
            let mut l = self.listener.borrow_mut();
            match &l.callback {
                Some(c) => c.clone(),
                None => {
                    // Bounded: an app that never listens loses the oldest events, not memory.
                    if l.queue.len() >= 10_000 {
                        l.queue.pop_front();
                    }
                    l.queue.push_back(event);
                    return;
                }
            }
        };
        // An exception in the app's listener is the app's; it must not stop the runtime.
        let _ = callback.call1(&JsValue::UNDEFINED, &event);
    }

    pub(crate) fn add_waiter(&self, message_id: String, waiter: Waiter) {
        self.waiters.borrow_mut().insert(message_id, waiter);
    }

    /// Commits what the core changed, then acks, then starts its requests and hands out events.
    pub(crate) async fn drain(self: &Rc<Self>) {
        if self.draining.get() {
            self.again.set(true);
            return;
        }
        self.draining.set(true);
        loop {
            self.again.set(false);
            if !self.drain_once().await || !self.again.get() {
                break;
            }
        }
        self.draining.set(false);
    }

    /// Schedules a drain without waiting for it.
    pub(crate) fn drain_later(self: &Rc<Self>) {
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move { this.drain().await });
    }

    async fn drain_once(self: &Rc<Self>) -> bool {
        if self.stopped.get() {
            return false;
        }
        let (writes, acks, requests, events) = self.with_core(|core| {
            let writes = core.take_writes();
            let acks = core.take_acks();
            let requests: Vec<_> = std::iter::from_fn(|| core.poll_request()).collect();
            let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
            (writes, acks, requests, events)
        });
        if let Err(e) = commit(&self.store, writes).await {
            // Nothing of this drain is acked; stop before anything else diverges.
            self.stop();
            self.emit(events::store_failed(&e.to_string()));
            return false;
        }
        if !acks.is_empty() {
            self.pending_acks.borrow_mut().extend(acks);
            self.flush_acks();
        }
        for request in requests {
            let this = Rc::clone(self);
            wasm_bindgen_futures::spawn_local(async move {
                let result = this.http.perform(&request.call).await;
                if this.stopped.get() {
                    return;
                }
                this.with_core(|c| c.handle_response(now_ms(), request.id, result));
                this.drain().await;
            });
        }
        for event in events {
            let settled = match &event {
                Event::MessageSent {
                    message_id,
                    server_timestamp,
                    ..
                } => Some((message_id.clone(), Ok(*server_timestamp))),
                Event::SendFailed {
                    message_id, reason, ..
                } => Some((message_id.clone(), Err(reason.clone()))),
                _ => None,
            };
            if let Some((id, result)) = settled {
                let waiter = self.waiters.borrow_mut().remove(&id);
                if let Some(w) = waiter {
                    w(result);
                }
            }
            self.emit(events::event(&event));
        }
        true
    }

    /// Sends the acks of committed envelopes (kept for the next connection if none is open).
    fn flush_acks(&self) {
        if !self.open.get() {
            return;
        }
        let socket = self.socket.borrow();
        let Some(s) = socket.as_ref() else { return };
        let ids: Vec<u64> = std::mem::take(&mut *self.pending_acks.borrow_mut());
        for chunk in ids.chunks(100) {
            let frame = ClientFrame::Ack {
                ids: chunk.to_vec(),
            };
            let text = serde_json::to_string(&frame).unwrap_or_default();
            if s.ws.send_with_str(&text).is_err() {
                // Not sent: the relay redelivers; the core drops the duplicates by id.
                break;
            }
        }
    }

    fn frame(self: &Rc<Self>, text: &str) {
        let Ok(frame) = serde_json::from_str::<ServerFrame>(text) else {
            return;
        };
        let now = now_ms();
        let caught_up = self.with_core(|core| match frame {
            ServerFrame::Envelope(env) => {
                core.handle_envelope(now, env);
                false
            }
            ServerFrame::Presence(s) => {
                core.handle_presence(s);
                false
            }
            ServerFrame::Ephemeral(e) => {
                core.handle_ephemeral(now, e);
                false
            }
            ServerFrame::QueueEmpty => true,
            _ => false,
        });
        let this = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            this.drain().await;
            if caught_up {
                this.emit(events::connection(Connection::CaughtUp));
            }
        });
    }

    fn stop(&self) {
        self.stopped.set(true);
        self.open.set(false);
        if let Some(s) = self.socket.borrow_mut().take() {
            let _ = s.ws.close_with_code(1000);
        }
        for (_, w) in self.waiters.borrow_mut().drain() {
            w(Err(sotto_client_core::SendFailure::Rejected {
                code: "client_stopped".into(),
            }));
        }
    }

    /// Stops the client: closes the connection; nothing more is committed or sent.
    pub(crate) async fn close(self: &Rc<Self>) {
        // Let a drain in progress finish its commit.
        while self.draining.get() {
            net::sleep(10).await;
        }
        self.stop();
        self.emit(events::connection(Connection::Closed));
    }
}

fn connect(inner: &Rc<Inner>) {
    if inner.stopped.get() {
        return;
    }
    inner.emit(events::connection(Connection::Connecting));
    let url = format!(
        "{}?token={}",
        inner.http.ws_url(),
        inner.http.token().unwrap_or_default()
    );
    let ws = match WebSocket::new(&url) {
        Ok(ws) => ws,
        Err(_) => {
            reconnect_later(inner);
            return;
        }
    };
    let weak = Rc::downgrade(inner);
    let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let Some(inner) = weak.upgrade() else { return };
        inner.open.set(true);
        inner.backoff_ms.set(250);
        inner.emit(events::connection(Connection::Connected));
        inner.with_core(|c| {
            c.check_prekeys();
            c.handle_timeout(now_ms());
        });
        inner.flush_acks();
        inner.drain_later();
    });
    let weak = Rc::downgrade(inner);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        let Some(inner) = weak.upgrade() else { return };
        if let Some(text) = e.data().as_string() {
            inner.frame(&text);
        }
    });
    let weak = Rc::downgrade(inner);
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
        let Some(inner) = weak.upgrade() else { return };
        inner.open.set(false);
        // Dropped after this callback returns, not inside it.
        let old = inner.socket.borrow_mut().take();
        wasm_bindgen_futures::spawn_local(async move { drop(old) });
        if inner.stopped.get() {
            return;
        }
        // 4001: the token is no longer valid; 4004: this device was removed.
        if matches!(e.code(), 4001 | 4004) {
            inner.stopped.set(true);
            inner.emit(events::connection(Connection::Closed));
            return;
        }
        inner.emit(events::connection(Connection::Disconnected));
        reconnect_later(&inner);
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    *inner.socket.borrow_mut() = Some(Socket {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    });
}

/// Exponential backoff with full jitter.
fn reconnect_later(inner: &Rc<Inner>) {
    let backoff = inner.backoff_ms.get();
    inner
        .backoff_ms
        .set(backoff.saturating_mul(2).min(MAX_BACKOFF_MS));
    let wait = (js_sys::Math::random() * f64::from(backoff)) as u32;
    let weak: Weak<Inner> = Rc::downgrade(inner);
    wasm_bindgen_futures::spawn_local(async move {
        net::sleep(wait).await;
        if let Some(inner) = weak.upgrade() {
            connect(&inner);
        }
    });
}

/// Timers: retries, typing auto-stop, pings.
async fn tick(weak: Weak<Inner>) {
    loop {
        net::sleep(TICK_MS).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.get() {
            return;
        }
        let now = now_ms();
        inner.with_core(|c| c.handle_timeout(now));
        inner.drain().await;
        if inner.open.get() && now.saturating_sub(inner.last_ping.get()) >= PING_EVERY_MS {
            inner.last_ping.set(now);
            let text = serde_json::to_string(&ClientFrame::Ping).unwrap_or_default();
            if let Some(s) = inner.socket.borrow().as_ref() {
                let _ = s.ws.send_with_str(&text);
            }
        }
    }
}

/// Commits the core's writes, all or nothing.
pub(crate) async fn commit(store: &EncryptedStore, ops: Vec<StoreOp>) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut tx = store.transaction();
    for op in ops {
        match op {
            StoreOp::Put {
                table,
                partition,
                sort,
                value,
            } => {
                tx.put(table, &partition, sort, &value);
            }
            StoreOp::Delete {
                table,
                partition,
                sort,
            } => {
                tx.delete(table, &partition, sort);
            }
        }
    }
    store.commit(tx).await
}

/// Every row the core restores from.
pub(crate) async fn load(
    store: &EncryptedStore,
) -> Result<Vec<(&'static str, sotto_store::Zeroizing<Vec<u8>>)>, StoreError> {
    let mut rows = Vec::new();
    for table in tables::RESTORED {
        for (_, value) in store.scan_table(table).await? {
            rows.push((*table, value));
        }
    }
    Ok(rows)
}

/// A page of history, newest first, strictly older than `before`; receipts applied.
pub(crate) async fn history(
    store: &EncryptedStore,
    conversation: &ConversationId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let mut q = RangeQuery::descending(limit);
    if let Some(b) = before {
        q = q.before(b);
    }
    let rows = store
        .range(tables::MESSAGES, &conversation.key(), q)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, value) in rows {
        let Ok(mut m) = tables_mod::decode_message(&value) else {
            return Err(StoreError::Corrupt {
                table: tables::MESSAGES.to_owned(),
            });
        };
        if m.outgoing {
            let receipts: Vec<Receipt> = store
                .range(
                    tables::RECEIPTS,
                    &tables_mod::receipts_partition(&m.id),
                    RangeQuery::ascending(256),
                )
                .await?
                .into_iter()
                .filter_map(|(_, v)| tables_mod::decode_receipt(&v).ok())
                .collect();
            tables_mod::apply_receipts(&mut m, &receipts);
        }
        out.push(m);
    }
    Ok(out)
}
