//! Provisioning channels: short-lived mailboxes of one message, for linking a new device.
//!
//! The new device opens a channel (no account yet) and gets a random address; an existing device
//! of the account puts one end-to-end encrypted message there; the new device picks it up by long
//! polling. Channels live in memory for [`DEFAULT_TTL`] and hold at most one message of ≤ 64 KiB,
//! and at most [`MAX_CHANNELS`] exist at once, so an unauthenticated caller can pin only a bounded
//! amount of memory (opening is also rate limited per address).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use tokio::sync::Notify;

/// How long an address works.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// Most open channels.
pub const MAX_CHANNELS: usize = 10_000;

#[derive(Debug)]
struct Channel {
    expires: Instant,
    message: Option<Vec<u8>>,
    delivered: bool,
    notify: Arc<Notify>,
}

/// Why a delivery or pick-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// Never opened, expired or already used.
    Unknown,
    /// A message was already delivered to this address.
    AlreadyDelivered,
    /// Too many channels are open.
    Full,
}

/// The open channels of this process.
#[derive(Debug)]
pub struct Channels {
    ttl: Mutex<Duration>,
    map: Mutex<HashMap<String, Channel>>,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            ttl: Mutex::new(DEFAULT_TTL),
            map: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Channels {
    /// Changes the lifetime of channels opened from now on (tests, operators).
    pub fn set_ttl(&self, ttl: Duration) {
        *lock(&self.ttl) = ttl;
    }

    /// The lifetime of new channels.
    pub fn ttl(&self) -> Duration {
        *lock(&self.ttl)
    }

    /// Opens a channel; returns its address.
    pub fn open(&self, now: Instant) -> Result<String, ChannelError> {
        let ttl = self.ttl();
        let mut map = lock(&self.map);
        if map.len() >= MAX_CHANNELS {
            map.retain(|_, c| c.expires > now);
            if map.len() >= MAX_CHANNELS {
                return Err(ChannelError::Full);
            }
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let address = URL_SAFE_NO_PAD.encode(raw);
        map.insert(
            address.clone(),
            Channel {
                expires: now + ttl,
                message: None,
                delivered: false,
                notify: Arc::new(Notify::new()),
            },
        );
        Ok(address)
    }

    /// Puts the one message of a channel.
    pub fn deliver(
        &self,
        address: &str,
        message: Vec<u8>,
        now: Instant,
    ) -> Result<(), ChannelError> {
        let mut map = lock(&self.map);
        let channel = match map.get_mut(address) {
            Some(c) if c.expires > now => c,
            _ => return Err(ChannelError::Unknown),
        };
        if channel.delivered {
            return Err(ChannelError::AlreadyDelivered);
        }
        channel.delivered = true;
        channel.message = Some(message);
        channel.notify.notify_one();
        Ok(())
    }

    /// [`Self::deliver`] for a channel another relay process was asked about: `None` when this
    /// process does not hold it (the process that does answers).
    pub fn deliver_here(
        &self,
        address: &str,
        message: Vec<u8>,
    ) -> Option<crate::cluster::ProvisionOutcome> {
        use crate::cluster::ProvisionOutcome;
        match self.deliver(address, message, Instant::now()) {
            Ok(()) => Some(ProvisionOutcome::Delivered),
            Err(ChannelError::AlreadyDelivered) => Some(ProvisionOutcome::AlreadyDelivered),
            Err(ChannelError::Unknown | ChannelError::Full) => None,
        }
    }

    /// Takes the message if it arrived (closing the channel), or a handle to wait on.
    pub fn take(
        &self,
        address: &str,
        now: Instant,
    ) -> Result<Result<Vec<u8>, Arc<Notify>>, ChannelError> {
        let mut map = lock(&self.map);
        let channel = match map.get_mut(address) {
            Some(c) if c.expires > now => c,
            _ => return Err(ChannelError::Unknown),
        };
        match channel.message.take() {
            Some(message) => {
                map.remove(address);
                Ok(Ok(message))
            }
            None => Ok(Err(Arc::clone(&channel.notify))),
        }
    }

    /// Forgets expired channels.
    pub fn sweep(&self, now: Instant) {
        lock(&self.map).retain(|_, c| c.expires > now);
    }

    /// Open channels.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no channel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_channel_and_expiry() {
        let ch = Channels::default();
        let now = Instant::now();
        let a = ch.open(now).unwrap();
        assert_eq!(a.len(), 43);
        assert!(matches!(ch.take(&a, now), Ok(Err(_))));
        ch.deliver(&a, vec![1], now).unwrap();
        assert_eq!(
            ch.deliver(&a, vec![2], now),
            Err(ChannelError::AlreadyDelivered)
        );
        assert_eq!(ch.take(&a, now).unwrap().unwrap(), vec![1]);
        assert!(matches!(ch.take(&a, now), Err(ChannelError::Unknown)));
        let b = ch.open(now).unwrap();
        let later = now + DEFAULT_TTL + Duration::from_secs(1);
        assert_eq!(ch.deliver(&b, vec![1], later), Err(ChannelError::Unknown));
        ch.sweep(later);
        assert!(ch.is_empty());
    }
}
