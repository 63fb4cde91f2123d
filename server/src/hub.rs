//! Which devices have a live WebSocket on this process, and how to wake them.
//!
//! With several relay processes ([`crate::cluster`]), what concerns a device that is not
//! connected here goes on the bus: mailbox wake-ups, removals, and a new connection (which closes
//! an older one at another process). The `*_local` methods apply what other processes say.
//!
//! A connection holds no envelopes: it keeps a cursor into its mailbox and reads from the store
//! when woken. Waking is a [`Notify`] permit, so a wake-up that arrives while the connection is
//! busy is not lost, and a burst of sends costs one read. This keeps an idle connection at a few
//! hundred bytes here, whatever the traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::acks::AckBatcher;
use crate::api::groups::GroupFrame;
use crate::cluster::{Cluster, Event};
use crate::store::StoredEnvelope;

/// Most envelopes handed over to one connection between two of its wake-ups; past this the
/// connection re-reads its mailbox instead.
const MAX_HANDOFF: usize = 32;
/// Most content bytes handed over to one connection between two of its wake-ups.
const MAX_HANDOFF_BYTES: usize = 128 * 1024;

/// Envelopes committed since the connection last woke, handed over so that a connection at the
/// head of its mailbox can push them without reading them back. Bounded; anything it cannot hold
/// (or a change it does not describe) makes it `stale`, and the connection reads the store.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Committed envelopes, in no particular order.
    pub envelopes: Vec<Handed>,
    /// The mailbox changed beyond `envelopes`: read it from the store.
    pub stale: bool,
    bytes: usize,
}

/// One envelope handed over after its commit.
#[derive(Debug)]
pub enum Handed {
    /// A mailbox row as stored.
    Stored(StoredEnvelope),
    /// A group message reference: its sequence in this mailbox, and the frame every member device
    /// shares (serialised once per send).
    Group(i64, Arc<GroupFrame>),
}

impl Handed {
    /// Mailbox sequence.
    pub fn seq(&self) -> i64 {
        match self {
            Handed::Stored(e) => e.seq,
            Handed::Group(seq, _) => *seq,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Handed::Stored(e) => e.content.as_ref().map_or(0, Vec::len),
            Handed::Group(_, frame) => frame.bytes(),
        }
    }
}

/// Why a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Still wanted.
    Open,
    /// A newer connection of the same device took over.
    Replaced,
    /// The device was removed / logged out.
    Revoked,
}

/// One live connection's signals.
#[derive(Debug)]
pub struct ConnSignal {
    id: u64,
    /// When the connection registered (ms since the epoch), to tell which of two is newer.
    since: i64,
    /// Woken when the mailbox may have new envelopes or the connection must close.
    pub notify: Notify,
    state: AtomicU8,
    handoff: Mutex<Handoff>,
}

impl ConnSignal {
    /// Why (or whether) the connection must close.
    pub fn close_reason(&self) -> CloseReason {
        match self.state.load(Ordering::Acquire) {
            1 => CloseReason::Replaced,
            2 => CloseReason::Revoked,
            _ => CloseReason::Open,
        }
    }

    fn close(&self, reason: CloseReason) {
        let v = match reason {
            CloseReason::Open => 0,
            CloseReason::Replaced => 1,
            CloseReason::Revoked => 2,
        };
        self.state.store(v, Ordering::Release);
        self.notify.notify_one();
    }

    fn handoff(&self) -> std::sync::MutexGuard<'_, Handoff> {
        match self.handoff.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes what was handed over since the last call.
    pub fn take(&self) -> Handoff {
        std::mem::take(&mut *self.handoff())
    }

    fn mark_stale(&self) {
        let mut h = self.handoff();
        h.stale = true;
        h.envelopes = Vec::new();
        h.bytes = 0;
        drop(h);
        self.notify.notify_one();
    }

    fn hand_over(&self, envelope: Handed) {
        let mut h = self.handoff();
        let bytes = envelope.bytes();
        if h.stale
            || h.envelopes.len() >= MAX_HANDOFF
            || h.bytes.saturating_add(bytes) > MAX_HANDOFF_BYTES
        {
            h.stale = true;
            h.envelopes = Vec::new();
            h.bytes = 0;
        } else {
            h.bytes += bytes;
            h.envelopes.push(envelope);
        }
        drop(h);
        self.notify.notify_one();
    }
}

/// Registry of live connections by device row id.
#[derive(Debug, Default)]
pub struct Hub {
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    next_id: AtomicU64,
    conns: Mutex<HashMap<i64, Arc<ConnSignal>>>,
    acks: AckBatcher,
    group_sends: Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

/// Past this many groups, [`Hub::group_send_gate`] forgets the gates nobody holds.
const GATES_BEFORE_PRUNING: usize = 1024;

impl Hub {
    /// The gate that sends to one group pass one at a time in this process. Sends to a group
    /// bump the same mailbox sequences, so the store serialises them anyway (PostgreSQL by row
    /// locks); waiting here instead keeps them from holding database connections while they wait,
    /// which the members' acks and reads need.
    pub fn group_send_gate(&self, group_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = match self.group_sends.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(gate) = gates.get(group_id).and_then(std::sync::Weak::upgrade) {
            return gate;
        }
        if gates.len() >= GATES_BEFORE_PRUNING {
            gates.retain(|_, gate| gate.strong_count() > 0);
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        gates.insert(group_id.to_owned(), Arc::downgrade(&gate));
        gate
    }

    /// Connects the hub to the other relay processes (once).
    pub fn join(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The other relay processes, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The connections' shared ack batch.
    pub fn acks(&self) -> &AckBatcher {
        &self.acks
    }

    /// Registers a connection for a device, replacing (and closing) any older one, here or at
    /// another process.
    pub fn register(&self, device_pk: i64) -> Arc<ConnSignal> {
        let since = crate::now_ms();
        let signal = Arc::new(ConnSignal {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            since,
            notify: Notify::new(),
            state: AtomicU8::new(0),
            handoff: Mutex::new(Handoff::default()),
        });
        let old = match self.conns.lock() {
            Ok(mut map) => map.insert(device_pk, Arc::clone(&signal)),
            Err(poisoned) => poisoned.into_inner().insert(device_pk, Arc::clone(&signal)),
        };
        if let Some(old) = old {
            old.close(CloseReason::Replaced);
        }
        if let Some(cluster) = self.cluster() {
            cluster.publish(Event::Connected {
                devices: vec![(device_pk, since)],
            });
        }
        signal
    }

    /// Another process registered a connection for the device at `at` (ms): ours closes if it is
    /// older (ties go to the process with the larger origin id, the same answer everywhere).
    pub fn replaced_elsewhere(&self, device_pk: i64, at: i64, origin: u64) {
        let ours = self.cluster().map_or(0, |c| c.origin());
        if let Some(signal) = self.get(device_pk) {
            if (signal.since, ours) < (at, origin) {
                signal.close(CloseReason::Replaced);
            }
        }
    }

    /// Removes a connection if it is still the registered one.
    pub fn unregister(&self, device_pk: i64, signal: &ConnSignal) {
        let mut map = match self.conns.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.get(&device_pk).is_some_and(|s| s.id == signal.id) {
            map.remove(&device_pk);
        }
    }

    fn get(&self, device_pk: i64) -> Option<Arc<ConnSignal>> {
        match self.conns.lock() {
            Ok(map) => map.get(&device_pk).cloned(),
            Err(poisoned) => poisoned.into_inner().get(&device_pk).cloned(),
        }
    }

    /// Tells the device's connection (here, or at another process) that its mailbox changed.
    pub fn notify(&self, device_pk: i64) {
        if !self.notify_local(device_pk) {
            self.wake_elsewhere(&[device_pk]);
        }
    }

    /// Wakes the mailboxes of devices not connected here at the process holding them, if any.
    fn wake_elsewhere(&self, device_pks: &[i64]) {
        if let Some(cluster) = self.cluster() {
            cluster.mailboxes(device_pks);
        }
    }

    /// Tells the device's connection here (if any) that its mailbox changed; whether there is one.
    pub fn notify_local(&self, device_pk: i64) -> bool {
        match self.get(device_pk) {
            Some(signal) => {
                signal.mark_stale();
                true
            }
            None => false,
        }
    }

    /// Hands a committed envelope to the device's connection here (if any; a connection that is
    /// not at the head of its mailbox reads the store instead), or wakes it at another process.
    pub fn deliver(&self, device_pk: i64, envelope: StoredEnvelope) {
        match self.get(device_pk) {
            Some(signal) => signal.hand_over(Handed::Stored(envelope)),
            None => self.wake_elsewhere(&[device_pk]),
        }
    }

    /// Hands a committed group message to the connections of its recipients, given as `(device
    /// row, sequence)` of each reference; one look-up of the registry for all of them.
    pub fn deliver_group(&self, references: &[(i64, i64)], frame: &Arc<GroupFrame>) {
        let mut elsewhere = Vec::new();
        let signals: Vec<(i64, Arc<ConnSignal>)> = {
            let map = match self.conns.lock() {
                Ok(map) => map,
                Err(poisoned) => poisoned.into_inner(),
            };
            references
                .iter()
                .filter_map(|(pk, seq)| match map.get(pk) {
                    Some(s) => Some((*seq, Arc::clone(s))),
                    None => {
                        elsewhere.push(*pk);
                        None
                    }
                })
                .collect()
        };
        for (seq, signal) in signals {
            signal.hand_over(Handed::Group(seq, Arc::clone(frame)));
        }
        self.wake_elsewhere(&elsewhere);
    }

    /// Closes the device's connection (here or at another process) because the device is gone.
    pub fn revoke(&self, device_pk: i64) {
        self.revoke_local(device_pk);
        if let Some(cluster) = self.cluster() {
            cluster.revoked(device_pk);
        }
    }

    /// Closes the device's connection here (if any) because the device is gone.
    pub fn revoke_local(&self, device_pk: i64) {
        if let Some(signal) = self.get(device_pk) {
            signal.close(CloseReason::Revoked);
        }
    }

    /// Wakes every connection here (after possibly missed notifications).
    pub fn notify_all(&self) {
        let signals: Vec<Arc<ConnSignal>> = match self.conns.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        for signal in signals {
            signal.mark_stale();
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        match self.conns.lock() {
            Ok(map) => map.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_closes_old_and_unregister_keeps_new() {
        let hub = Hub::default();
        let a = hub.register(7);
        let b = hub.register(7);
        assert_eq!(a.close_reason(), CloseReason::Replaced);
        assert_eq!(b.close_reason(), CloseReason::Open);
        hub.unregister(7, &a);
        assert_eq!(hub.len(), 1);
        hub.revoke(7);
        assert_eq!(b.close_reason(), CloseReason::Revoked);
        hub.unregister(7, &b);
        assert!(hub.is_empty());
    }

    #[test]
    fn one_gate_per_group_while_held() {
        let hub = Hub::default();
        let a = hub.group_send_gate("g");
        assert!(Arc::ptr_eq(&a, &hub.group_send_gate("g")));
        assert!(!Arc::ptr_eq(&a, &hub.group_send_gate("h")));
        drop(a);
        for i in 0..2 * GATES_BEFORE_PRUNING {
            drop(hub.group_send_gate(&i.to_string()));
        }
        let gates = hub.group_sends.lock().unwrap().len();
        assert!(gates <= GATES_BEFORE_PRUNING + 1, "{gates}");
    }
}
