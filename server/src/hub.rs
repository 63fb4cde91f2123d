//! Which devices have a live WebSocket on this process, and how to wake them.
//!
//! A connection holds no envelopes: it keeps a cursor into its mailbox and reads from the store
//! when woken. Waking is a [`Notify`] permit, so a wake-up that arrives while the connection is
//! busy is not lost, and a burst of sends costs one read. This keeps an idle connection at a few
//! hundred bytes here, whatever the traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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
    /// Woken when the mailbox may have new envelopes or the connection must close.
    pub notify: Notify,
    state: AtomicU8,
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
}

/// Registry of live connections by device row id.
#[derive(Debug, Default)]
pub struct Hub {
    next_id: AtomicU64,
    conns: Mutex<HashMap<i64, Arc<ConnSignal>>>,
}

impl Hub {
    /// Registers a connection for a device, replacing (and closing) any older one.
    pub fn register(&self, device_pk: i64) -> Arc<ConnSignal> {
        let signal = Arc::new(ConnSignal {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            notify: Notify::new(),
            state: AtomicU8::new(0),
        });
        let old = match self.conns.lock() {
            Ok(mut map) => map.insert(device_pk, Arc::clone(&signal)),
            Err(poisoned) => poisoned.into_inner().insert(device_pk, Arc::clone(&signal)),
        };
        if let Some(old) = old {
            old.close(CloseReason::Replaced);
        }
        signal
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

    /// Tells the device's connection (if any) that its mailbox changed.
    pub fn notify(&self, device_pk: i64) {
        if let Some(signal) = self.get(device_pk) {
            signal.notify.notify_one();
        }
    }

    /// Closes the device's connection (if any) because the device is gone.
    pub fn revoke(&self, device_pk: i64) {
        if let Some(signal) = self.get(device_pk) {
            signal.close(CloseReason::Revoked);
        }
    }

    /// Wakes every connection (after possibly missed notifications).
    pub fn notify_all(&self) {
        let signals: Vec<Arc<ConnSignal>> = match self.conns.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        for signal in signals {
            signal.notify.notify_one();
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
}
