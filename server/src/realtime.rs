//! Connected devices, for what is never stored: presence and ephemeral envelopes.
//!
//! ```text
//!  ws task ── connect ──▶ Realtime ◀── push(pk, frame) ── presence changes, typing
//!     ▲                     │ per device: LiveConn { queue (≤ 64 frames), Notify, away }
//!     └── ready() / drain ──┘ per user: connected devices; per user: subscribed devices
//! ```
//!
//! Devices connected at other relay processes are known from what those processes announce
//! ([`crate::cluster`]): they count for a user's status, and a frame for one is sent there.
//!
//! A pushed frame waits in its connection's small queue until the connection task sends it; a
//! frame older than [`EPHEMERAL_MAX_AGE`] is dropped instead, and a full queue drops its oldest
//! frame. Nothing here survives the connection, and an idle connection costs one small struct.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes};
use sotto_wire::PresenceStatus;
use tokio::sync::Notify;

use crate::cluster::{DevicePresence, DeviceState};
use crate::store::DeviceAuth;

/// Ephemeral frames older than this are dropped, never delivered.
pub const EPHEMERAL_MAX_AGE: Duration = Duration::from_secs(10);

/// Frames a connection may have waiting.
const QUEUE_CAP: usize = 64;

/// Most users one device may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// One live connection's ephemeral side.
#[derive(Debug)]
pub struct LiveConn {
    id: u64,
    pk: i64,
    user_id: String,
    device_id: u32,
    away: AtomicBool,
    queue: Mutex<VecDeque<(Instant, Utf8Bytes)>>,
    notify: Notify,
}

impl LiveConn {
    /// Resolves when frames are waiting.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// The waiting frames that are still fresh, oldest first.
    pub fn drain(&self) -> Vec<Message> {
        let mut queue = lock(&self.queue);
        queue
            .drain(..)
            .filter(|(at, _)| at.elapsed() <= EPHEMERAL_MAX_AGE)
            .map(|(_, text)| Message::Text(text))
            .collect()
    }

    /// This connection's device as announced to other processes.
    pub fn presence(&self) -> DevicePresence {
        DevicePresence {
            pk: self.pk,
            user: self.user_id.clone(),
            state: if self.away.load(Ordering::Relaxed) {
                DeviceState::Away
            } else {
                DeviceState::Online
            },
        }
    }

    /// This connection's device as announced when it closes.
    pub fn gone(&self) -> DevicePresence {
        DevicePresence {
            pk: self.pk,
            user: self.user_id.clone(),
            state: DeviceState::Offline,
        }
    }

    fn push(&self, text: Utf8Bytes, at: Instant) {
        {
            let mut queue = lock(&self.queue);
            if queue.len() >= QUEUE_CAP {
                queue.pop_front();
            }
            queue.push_back((at, text));
        }
        self.notify.notify_one();
    }
}

/// A device connected at another relay process.
#[derive(Debug)]
struct RemoteDevice {
    origin: u64,
    user_id: String,
    away: bool,
}

/// Where a device is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// At this process.
    Here,
    /// At the relay process with this origin id.
    At(u64),
    /// Nowhere.
    Nowhere,
}

#[derive(Debug, Default)]
struct State {
    conns: HashMap<i64, Arc<LiveConn>>,
    by_user: HashMap<String, Vec<i64>>,
    watchers: HashMap<String, HashSet<i64>>,
    watching: HashMap<i64, Vec<String>>,
    remote: HashMap<i64, RemoteDevice>,
    remote_by_user: HashMap<String, HashSet<i64>>,
}

impl State {
    fn status(&self, user_id: &str) -> PresenceStatus {
        let mut any = false;
        for pk in self.by_user.get(user_id).into_iter().flatten() {
            if let Some(conn) = self.conns.get(pk) {
                any = true;
                if !conn.away.load(Ordering::Relaxed) {
                    return PresenceStatus::Online;
                }
            }
        }
        for pk in self.remote_by_user.get(user_id).into_iter().flatten() {
            if let Some(device) = self.remote.get(pk) {
                any = true;
                if !device.away {
                    return PresenceStatus::Online;
                }
            }
        }
        if any {
            PresenceStatus::Away
        } else {
            PresenceStatus::Offline
        }
    }

    fn remove_remote(&mut self, pk: i64) -> Option<RemoteDevice> {
        let device = self.remote.remove(&pk)?;
        if let Some(set) = self.remote_by_user.get_mut(&device.user_id) {
            set.remove(&pk);
            if set.is_empty() {
                self.remote_by_user.remove(&device.user_id);
            }
        }
        Some(device)
    }

    fn unsubscribe(&mut self, pk: i64) {
        for target in self.watching.remove(&pk).unwrap_or_default() {
            if let Some(set) = self.watchers.get_mut(&target) {
                set.remove(&pk);
                if set.is_empty() {
                    self.watchers.remove(&target);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registry of connected devices (this process).
#[derive(Debug, Default)]
pub struct Realtime {
    next_id: AtomicU64,
    state: Mutex<State>,
}

/// A user's status before and after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub before: PresenceStatus,
    /// After.
    pub after: PresenceStatus,
}

impl Transition {
    /// Whether watchers should hear about it.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

impl Realtime {
    /// Registers a connection (replacing an older one of the same device).
    pub fn connect(&self, device: &DeviceAuth) -> (Arc<LiveConn>, Transition) {
        let conn = Arc::new(LiveConn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            pk: device.pk,
            user_id: device.user_id.clone(),
            device_id: device.device_id,
            away: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        });
        let mut state = lock(&self.state);
        let before = state.status(&device.user_id);
        if state.conns.insert(device.pk, Arc::clone(&conn)).is_none() {
            state
                .by_user
                .entry(device.user_id.clone())
                .or_default()
                .push(device.pk);
        }
        let after = state.status(&device.user_id);
        (conn, Transition { before, after })
    }

    /// Unregisters a connection if it is still the device's current one.
    pub fn disconnect(&self, conn: &LiveConn) -> Transition {
        let mut state = lock(&self.state);
        let before = state.status(&conn.user_id);
        if state.conns.get(&conn.pk).is_some_and(|c| c.id == conn.id) {
            state.conns.remove(&conn.pk);
            state.unsubscribe(conn.pk);
            if let Some(pks) = state.by_user.get_mut(&conn.user_id) {
                pks.retain(|pk| *pk != conn.pk);
                if pks.is_empty() {
                    state.by_user.remove(&conn.user_id);
                }
            }
        }
        let after = state.status(&conn.user_id);
        Transition { before, after }
    }

    /// The user's status if any device is connected here, else `Offline`.
    pub fn status(&self, user_id: &str) -> PresenceStatus {
        lock(&self.state).status(user_id)
    }

    /// Sets a connected device away (or back); `None` if the device is not connected.
    pub fn set_away(&self, device: &DeviceAuth, away: bool) -> Option<Transition> {
        let state = lock(&self.state);
        let conn = state.conns.get(&device.pk)?;
        let before = state.status(&device.user_id);
        conn.away.store(away, Ordering::Relaxed);
        let after = state.status(&device.user_id);
        Some(Transition { before, after })
    }

    /// Replaces a connected device's subscriptions; `false` if it is not connected.
    pub fn subscribe(&self, device_pk: i64, users: &[String]) -> bool {
        let mut state = lock(&self.state);
        if !state.conns.contains_key(&device_pk) {
            return false;
        }
        state.unsubscribe(device_pk);
        for user in users {
            state
                .watchers
                .entry(user.clone())
                .or_default()
                .insert(device_pk);
        }
        state.watching.insert(device_pk, users.to_vec());
        true
    }

    /// Devices subscribed to a user.
    pub fn watchers_of(&self, user_id: &str) -> Vec<i64> {
        lock(&self.state)
            .watchers
            .get(user_id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Connected devices of a user.
    pub fn devices_of(&self, user_id: &str) -> Vec<i64> {
        lock(&self.state)
            .by_user
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Devices of a user connected at other processes.
    pub fn remote_devices_of(&self, user_id: &str) -> Vec<i64> {
        lock(&self.state)
            .remote_by_user
            .get(user_id)
            .map(|pks| pks.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether a device is connected here.
    pub fn is_connected(&self, device_pk: i64) -> bool {
        lock(&self.state).conns.contains_key(&device_pk)
    }

    /// A device connected here.
    pub fn device(&self, device_pk: i64) -> Option<DeviceAuth> {
        lock(&self.state).conns.get(&device_pk).map(|c| DeviceAuth {
            pk: c.pk,
            user_id: c.user_id.clone(),
            device_id: c.device_id,
        })
    }

    /// Where a device is connected.
    pub fn locate(&self, device_pk: i64) -> Location {
        let state = lock(&self.state);
        if state.conns.contains_key(&device_pk) {
            Location::Here
        } else {
            state
                .remote
                .get(&device_pk)
                .map_or(Location::Nowhere, |d| Location::At(d.origin))
        }
    }

    /// What process `origin` announced about one of its devices; the user's transition.
    pub fn apply_remote(&self, origin: u64, device: &DevicePresence) -> Transition {
        let mut state = lock(&self.state);
        let before = state.status(&device.user);
        match device.state {
            DeviceState::Offline => {
                if state
                    .remote
                    .get(&device.pk)
                    .is_some_and(|d| d.origin == origin)
                {
                    state.remove_remote(device.pk);
                }
            }
            DeviceState::Online | DeviceState::Away => {
                state.remove_remote(device.pk);
                state
                    .remote_by_user
                    .entry(device.user.clone())
                    .or_default()
                    .insert(device.pk);
                state.remote.insert(
                    device.pk,
                    RemoteDevice {
                        origin,
                        user_id: device.user.clone(),
                        away: device.state == DeviceState::Away,
                    },
                );
            }
        }
        let after = state.status(&device.user);
        Transition { before, after }
    }

    /// Forgets every device of process `origin` (it is gone); each affected user's transition.
    pub fn forget_origin(&self, origin: u64) -> Vec<(String, Transition)> {
        let mut state = lock(&self.state);
        let pks: Vec<i64> = state
            .remote
            .iter()
            .filter(|(_, d)| d.origin == origin)
            .map(|(pk, _)| *pk)
            .collect();
        let users: HashSet<String> = pks
            .iter()
            .filter_map(|pk| state.remote.get(pk).map(|d| d.user_id.clone()))
            .collect();
        let before: Vec<(String, PresenceStatus)> = users
            .into_iter()
            .map(|u| {
                let s = state.status(&u);
                (u, s)
            })
            .collect();
        for pk in pks {
            state.remove_remote(pk);
        }
        before
            .into_iter()
            .map(|(u, before)| {
                let after = state.status(&u);
                (u, Transition { before, after })
            })
            .collect()
    }

    /// This process's connected devices, as announced to the others.
    pub fn local_presence(&self) -> Vec<DevicePresence> {
        lock(&self.state)
            .conns
            .values()
            .map(|c| c.presence())
            .collect()
    }

    /// Queues a frame for a connected device; `false` if it is not connected (nothing is kept).
    pub fn push(&self, device_pk: i64, text: Utf8Bytes, at: Instant) -> bool {
        let conn = lock(&self.state).conns.get(&device_pk).cloned();
        match conn {
            Some(conn) => {
                conn.push(text, at);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(pk: i64, user: &str) -> DeviceAuth {
        DeviceAuth {
            pk,
            user_id: user.into(),
            device_id: 1,
        }
    }

    #[test]
    fn status_follows_connections_and_away() {
        let rt = Realtime::default();
        let a1 = device(1, "a");
        let a2 = device(2, "a");
        assert_eq!(rt.status("a"), PresenceStatus::Offline);
        let (c1, t) = rt.connect(&a1);
        assert!(t.changed());
        assert_eq!(rt.status("a"), PresenceStatus::Online);
        let (c2, t) = rt.connect(&a2);
        assert!(!t.changed());
        assert!(rt.set_away(&a1, true).is_some_and(|t| !t.changed()));
        assert!(rt.set_away(&a2, true).is_some_and(|t| t.changed()));
        assert_eq!(rt.status("a"), PresenceStatus::Away);
        assert!(!rt.disconnect(&c2).changed());
        assert_eq!(rt.disconnect(&c1).after, PresenceStatus::Offline);
        assert!(rt.set_away(&a1, false).is_none());
    }

    #[test]
    fn replaced_connection_keeps_the_new_one_and_queues_are_bounded() {
        let rt = Realtime::default();
        let d = device(7, "u");
        let (old, _) = rt.connect(&d);
        let (new, _) = rt.connect(&d);
        rt.disconnect(&old);
        assert!(rt.is_connected(7));
        for i in 0..100 {
            assert!(rt.push(7, format!("{i}").into(), Instant::now()));
        }
        let frames = new.drain();
        assert_eq!(frames.len(), QUEUE_CAP);
        assert_eq!(frames.first(), Some(&Message::Text("36".into())));
        assert!(rt.subscribe(7, &["x".to_owned()]));
        assert_eq!(rt.watchers_of("x"), vec![7]);
        rt.disconnect(&new);
        assert!(rt.watchers_of("x").is_empty());
        assert!(!rt.push(7, "late".into(), Instant::now()));
    }

    #[test]
    fn stale_frames_are_dropped() {
        let rt = Realtime::default();
        let (conn, _) = rt.connect(&device(1, "u"));
        let old = Instant::now()
            .checked_sub(EPHEMERAL_MAX_AGE + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        rt.push(1, "old".into(), old);
        rt.push(1, "new".into(), Instant::now());
        let frames = conn.drain();
        assert!(frames.len() <= 2);
        assert_eq!(frames.last(), Some(&Message::Text("new".into())));
    }
}
