//! Sotto's mobile bindings: UniFFI proc-macros over the client SDK's app-facing API
//! ([`sotto_client`]), generated for Kotlin, Swift and Python by `ffi/uniffi-bindgen`.
//!
//! ```text
//!   app ──▶ Sotto::new(config)            (sync: checks the config, starts the runtime)
//!              │ register / login / open   (async)
//!              ▼
//!           Client ── send_text / mark_read / history / devices / presence / …  (async)
//!              │ subscribe(listener) ──▶ Subscription (cancel() or drop)
//!              ▼
//!        event pump thread ──▶ Listener::on_event(Event)   (a plain Rust thread, not the app's)
//! ```
//!
//! Why it is shaped this way:
//! - One process-wide multi-thread tokio runtime runs everything. Every async method spawns its
//!   work on it and awaits the `JoinHandle`, so the foreign executor (asyncio, coroutines, Swift
//!   concurrency) only polls a handle and never needs to be a tokio context.
//! - Events are read by one pump thread per client and handed to every subscribed listener. The
//!   listener runs on that thread with no SDK lock held, so it may call back into the client; the
//!   app hands the event to its own loop/main thread.
//! - Every operation has its own error enum with the cases an app can act on, mapped from the
//!   SDK's typed errors. `Interrupted` means the runtime failed the task (it stopped or a bug
//!   panicked), which the SDK itself never returns.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sotto_client::{ClientOptions, SottoClient, StoreLocation, StoreSecret};
use sotto_client_core::payload::MAX_TEXT_CHARS;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

uniffi::setup_scaffolding!();

mod convert;
mod errors;
mod groups;
mod records;

pub use errors::{
    AttachmentError, ConfigError, IdentityError, LoginError, QueryError, RegisterError, SendError,
    SubscribeError,
};
pub use groups::{Group, GroupError, GroupInvitation, GroupMember};
pub use records::{
    Attachment, ClientConfig, ConnectionState, Conversation, ConversationId, Device, Event,
    HistoryPage, IdentityPolicy, Message, MessagePreview, MessageStatus, Presence, PresenceStatus,
    SafetyNumber, SendFailure, SentMessage, StoreKey, UserProfile,
};

/// Longest server URL accepted.
const MAX_URL_BYTES: usize = 2048;
/// Longest store path accepted.
const MAX_PATH_BYTES: usize = 4096;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process-wide runtime, started on first use.
fn runtime() -> Result<Handle, std::io::Error> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sotto-runtime")
        .enable_all()
        .build()?;
    // Two threads racing here: one runtime wins, the other (never used) is dropped on this
    // non-async thread, which is allowed.
    Ok(RUNTIME.get_or_init(|| rt).handle().clone())
}

/// The task did not finish: the runtime stopped or the SDK panicked.
struct Interrupted;

/// Runs `fut` on the runtime and waits for it from whatever executor polls the caller.
async fn on_runtime<T, F>(handle: &Handle, fut: F) -> Result<T, Interrupted>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    handle.spawn(fut).await.map_err(|_| Interrupted)
}

/// The entry point: a relay and a store, before any account is open. Cheap; make one per profile.
#[derive(uniffi::Object)]
pub struct Sotto {
    server_url: String,
    store: Option<PathBuf>,
    secret: StoreSecret,
    policy: sotto_client::IdentityPolicy,
    handle: Handle,
}

impl std::fmt::Debug for Sotto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sotto")
            .field("server_url", &self.server_url)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Sotto {
    fn options(&self) -> ClientOptions {
        ClientOptions {
            server_url: self.server_url.clone(),
            store: match &self.store {
                Some(path) => StoreLocation::Sqlite(path.clone()),
                None => StoreLocation::Memory,
            },
            store_secret: self.secret.clone(),
            identity_policy: self.policy,
        }
    }
}

#[uniffi::export]
impl Sotto {
    /// Checks the configuration and starts the runtime; contacts nobody.
    #[uniffi::constructor]
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, ConfigError> {
        let url = config.server_url;
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if url.len() > MAX_URL_BYTES || host.is_none_or(str::is_empty) {
            return Err(ConfigError::InvalidUrl);
        }
        let store = match config.store_path {
            None => None,
            Some(p) if p.is_empty() || p.len() > MAX_PATH_BYTES || p.contains('\0') => {
                return Err(ConfigError::InvalidStorePath)
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let secret = match config.store_key {
            StoreKey::Key { bytes } => {
                let key: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| ConfigError::InvalidStoreKey {
                            length: bytes.len() as u64,
                        })?;
                StoreSecret::Key(key)
            }
            StoreKey::Passphrase { passphrase } if passphrase.is_empty() => {
                return Err(ConfigError::EmptyPassphrase)
            }
            StoreKey::Passphrase { passphrase } => StoreSecret::Passphrase(passphrase),
            StoreKey::InsecureTestPassphrase { passphrase } if passphrase.is_empty() => {
                return Err(ConfigError::EmptyPassphrase)
            }
            StoreKey::InsecureTestPassphrase { passphrase } => {
                StoreSecret::InsecureTestPassphrase(passphrase)
            }
        };
        let handle = runtime().map_err(|e| ConfigError::Runtime {
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Self {
            server_url: url,
            store,
            secret,
            policy: config.identity_policy.into(),
            handle,
        }))
    }

    /// Creates an account on the relay (no device yet: `login` next); returns its user id.
    pub async fn register(
        &self,
        username: String,
        email: String,
        password: String,
    ) -> Result<String, RegisterError> {
        let url = self.server_url.clone();
        on_runtime(&self.handle, async move {
            SottoClient::register(&url, &username, &email, &password).await
        })
        .await
        .map_err(|Interrupted| RegisterError::Interrupted)?
        .map_err(RegisterError::from)
    }

    /// Logs in (this account's first device), sets up a new store and connects.
    pub async fn login(
        &self,
        username: String,
        password: String,
    ) -> Result<Arc<Client>, LoginError> {
        let options = self.options();
        let client = on_runtime(&self.handle, async move {
            SottoClient::login(options, &username, &password).await
        })
        .await
        .map_err(|Interrupted| LoginError::Interrupted)??;
        Ok(Client::new(client, self.handle.clone()))
    }

    /// New device, step 1: opens a provisioning channel. Show `code()` to the existing device
    /// (text or QR), which calls `Client.link_device(code)`; then `finish_link`.
    pub async fn begin_link(&self) -> Result<Arc<PendingLink>, LoginError> {
        let url = self.server_url.clone();
        let pending = on_runtime(
            &self.handle,
            async move { SottoClient::begin_link(&url).await },
        )
        .await
        .map_err(|Interrupted| LoginError::Interrupted)??;
        Ok(Arc::new(PendingLink {
            code: pending.code(),
            pending: Mutex::new(Some(pending)),
        }))
    }

    /// New device, step 2: waits up to `wait_secs` (at most 300) for the existing device, links
    /// this one into the store and connects. A pending link is used once.
    pub async fn finish_link(
        &self,
        pending: Arc<PendingLink>,
        wait_secs: u64,
    ) -> Result<Arc<Client>, LoginError> {
        let taken = pending
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(LoginError::LinkAlreadyUsed)?;
        let options = self.options();
        let wait = wait_secs.min(300);
        let client = on_runtime(&self.handle, async move {
            SottoClient::finish_link(taken, options, wait).await
        })
        .await
        .map_err(|Interrupted| LoginError::Interrupted)??;
        Ok(Client::new(client, self.handle.clone()))
    }

    /// Opens the profile in the store (after a `login` on this device) and connects.
    pub async fn open(&self) -> Result<Arc<Client>, LoginError> {
        let options = self.options();
        let client = on_runtime(
            &self.handle,
            async move { SottoClient::open(options).await },
        )
        .await
        .map_err(|Interrupted| LoginError::Interrupted)??;
        Ok(Client::new(client, self.handle.clone()))
    }
}

/// A new device waiting to be linked (from `Sotto.begin_link`).
#[derive(uniffi::Object)]
pub struct PendingLink {
    code: String,
    pending: Mutex<Option<sotto_client::PendingLink>>,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLink").finish_non_exhaustive()
    }
}

#[uniffi::export]
impl PendingLink {
    /// What the existing device enters or scans: the channel address and this device's public key.
    pub fn code(&self) -> String {
        self.code.clone()
    }
}

/// Implemented by the app: receives the client's events on a Rust thread (not the app's main
/// thread). Hand each event to the app's own loop; never block here for long.
#[uniffi::export(with_foreign)]
pub trait Listener: Send + Sync {
    /// One event (messages, receipts, typing, presence, connection changes, …).
    fn on_event(&self, event: Event);
}

type ListenerList = Mutex<Vec<(u64, Arc<dyn Listener>)>>;
type Listeners = Arc<ListenerList>;

fn lock(listeners: &ListenerList) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<dyn Listener>)>> {
    // Nothing in the list can be left half-changed by a panic: recover the guard.
    listeners.lock().unwrap_or_else(|e| e.into_inner())
}

/// A logged-in account on this device.
#[derive(uniffi::Object)]
pub struct Client {
    inner: SottoClient,
    handle: Handle,
    listeners: Listeners,
    next_listener: AtomicU64,
    pump: OnceLock<()>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Client {
    fn new(inner: SottoClient, handle: Handle) -> Arc<Self> {
        Arc::new(Self {
            inner,
            handle,
            listeners: Arc::new(Mutex::new(Vec::new())),
            next_listener: AtomicU64::new(1),
            pump: OnceLock::new(),
            stop: watch::channel(false).0,
        })
    }

    /// Starts the thread that reads the SDK's event stream and calls the listeners.
    fn start_pump(&self) -> Result<(), SubscribeError> {
        if self.pump.get().is_some() {
            return Ok(());
        }
        let client = self.inner.clone();
        let handle = self.handle.clone();
        let listeners = Arc::clone(&self.listeners);
        let mut stop = self.stop.subscribe();
        std::thread::Builder::new()
            .name("sotto-events".into())
            .spawn(move || loop {
                let next = handle.block_on(async {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => None,
                        e = client.next_event() => e,
                    }
                });
                let Some(event) = next else { return };
                let Some(event) = convert::event(event) else {
                    continue;
                };
                // Snapshot, so a listener may subscribe or cancel from inside its callback.
                let current: Vec<Arc<dyn Listener>> = lock(&listeners)
                    .iter()
                    .map(|(_, l)| Arc::clone(l))
                    .collect();
                for listener in current {
                    listener.on_event(event.clone());
                }
            })
            .map_err(|e| SubscribeError::Thread {
                reason: e.to_string(),
            })?;
        let _ = self.pump.set(());
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        let client = self.inner.clone();
        self.handle.spawn(async move { client.close().await });
    }
}

/// Rejects a file path the SDK could not open, before anything is uploaded.
fn check_attachment_path(path: &str) -> Result<(), AttachmentError> {
    if path.is_empty() || path.contains('\0') || path.len() > MAX_PATH_BYTES {
        return Err(AttachmentError::File {
            reason: "invalid path".into(),
        });
    }
    Ok(())
}

/// Rejects text the relay would refuse, before it is queued, with the case the app shows.
fn check_text(text: &str) -> Result<(), SendError> {
    let length = text.chars().count();
    if length == 0 {
        return Err(SendError::EmptyText);
    }
    if length > MAX_TEXT_CHARS {
        return Err(SendError::TextTooLong {
            length: length as u64,
            max: MAX_TEXT_CHARS as u64,
        });
    }
    Ok(())
}

#[uniffi::export]
impl Client {
    /// This account's user id.
    pub fn user_id(&self) -> String {
        self.inner.user_id()
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.inner.device_id()
    }

    /// Sends a text (1-1000 characters) to a user; returns once the relay accepted it.
    pub async fn send_text(
        &self,
        to_user_id: String,
        text: String,
    ) -> Result<SentMessage, SendError> {
        check_text(&text)?;
        let client = self.inner.clone();
        let sent = on_runtime(&self.handle, async move {
            client.send_text(&to_user_id, &text).await
        })
        .await
        .map_err(|Interrupted| SendError::Interrupted)??;
        Ok(sent.into())
    }

    /// Queues a text without waiting for the relay; returns the message id. The outcome arrives
    /// as `Event.MessageSent` or `Event.SendFailed`.
    pub async fn queue_text(&self, to_user_id: String, text: String) -> Result<String, SendError> {
        check_text(&text)?;
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client.queue_text(&to_user_id, &text).await
        })
        .await
        .map_err(|Interrupted| SendError::Interrupted)?
        .map_err(SendError::from)
    }

    /// Marks a conversation read: clears its unread count and sends the read receipt.
    pub async fn mark_read(&self, conversation: ConversationId) {
        let client = self.inner.clone();
        let conversation = conversation.into();
        let _ = on_runtime(&self.handle, async move {
            client.mark_read(&conversation).await
        })
        .await;
    }

    /// Typing started or stopped in a 1:1 conversation (needs a session: send a message first).
    pub async fn set_typing(&self, to_user_id: String, typing: bool) -> Result<(), QueryError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client.set_typing(&to_user_id, typing).await
        })
        .await
        .map_err(|Interrupted| QueryError::Interrupted)?
        .map_err(QueryError::from)
    }

    /// Conversations, newest first.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.inner
            .conversations()
            .into_iter()
            .map(Conversation::from)
            .collect()
    }

    /// One page of a conversation's history, newest first; `limit` is 1-100 and `before` the
    /// previous page's `next_cursor`.
    pub async fn history(
        &self,
        conversation: ConversationId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, QueryError> {
        let client = self.inner.clone();
        let conversation = conversation.into();
        let page = on_runtime(&self.handle, async move {
            client.history(&conversation, before, limit).await
        })
        .await
        .map_err(|Interrupted| QueryError::Interrupted)??;
        Ok(page.into())
    }

    /// The safety number with a contact, to compare out of band.
    pub fn safety_number(&self, user_id: String) -> Result<SafetyNumber, IdentityError> {
        Ok(self.inner.safety_number(&user_id)?.into())
    }

    /// Marks a contact verified (after comparing safety numbers) or not.
    pub async fn set_verified(&self, user_id: String, verified: bool) -> Result<(), IdentityError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client.set_verified(&user_id, verified).await
        })
        .await
        .map_err(|Interrupted| IdentityError::Interrupted)?
        .map_err(IdentityError::from)
    }

    /// Accepts a contact's changed identity (after `Event.IdentityChanged` with `needs_approval`).
    pub async fn approve_identity(&self, user_id: String) -> Result<(), IdentityError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client.approve_identity(&user_id).await
        })
        .await
        .map_err(|Interrupted| IdentityError::Interrupted)?
        .map_err(IdentityError::from)
    }

    /// Links a new device of this account: `code` is what its `PendingLink.code()` shows.
    pub async fn link_device(&self, code: String) -> Result<(), QueryError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move { client.link_device(&code).await })
            .await
            .map_err(|Interrupted| QueryError::Interrupted)?
            .map_err(QueryError::from)
    }

    /// Encrypts the file at `path` while uploading it (1 byte to 50 MB) and sends it to a user;
    /// returns once the relay accepted the message.
    pub async fn send_attachment(
        &self,
        to_user_id: String,
        path: String,
        content_type: String,
    ) -> Result<SentMessage, AttachmentError> {
        check_attachment_path(&path)?;
        let client = self.inner.clone();
        let sent = on_runtime(&self.handle, async move {
            client
                .send_attachment(&to_user_id, std::path::Path::new(&path), &content_type)
                .await
        })
        .await
        .map_err(|Interrupted| AttachmentError::Interrupted)??;
        Ok(sent.into())
    }

    /// Downloads, verifies and decrypts a received attachment into `dest_path`; returns its size.
    pub async fn download_attachment(
        &self,
        attachment: Attachment,
        dest_path: String,
    ) -> Result<u64, AttachmentError> {
        if dest_path.is_empty() || dest_path.contains('\0') || dest_path.len() > MAX_PATH_BYTES {
            return Err(AttachmentError::File {
                reason: "invalid path".into(),
            });
        }
        let client = self.inner.clone();
        let pointer = attachment.into();
        on_runtime(&self.handle, async move {
            client
                .download_attachment(&pointer, std::path::Path::new(&dest_path))
                .await
        })
        .await
        .map_err(|Interrupted| AttachmentError::Interrupted)?
        .map_err(AttachmentError::from)
    }

    /// This account's devices.
    pub async fn devices(&self) -> Result<Vec<Device>, QueryError> {
        let client = self.inner.clone();
        let list = on_runtime(&self.handle, async move { client.devices().await })
            .await
            .map_err(|Interrupted| QueryError::Interrupted)??;
        Ok(list.into_iter().map(Device::from).collect())
    }

    /// Removes one of this account's other devices.
    pub async fn remove_device(&self, device_id: u32) -> Result<(), QueryError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move {
            client.remove_device(device_id).await
        })
        .await
        .map_err(|Interrupted| QueryError::Interrupted)?
        .map_err(QueryError::from)
    }

    /// Sets this device away (or online again).
    pub async fn set_away(&self, away: bool) -> Result<(), QueryError> {
        let client = self.inner.clone();
        on_runtime(&self.handle, async move { client.set_away(away).await })
            .await
            .map_err(|Interrupted| QueryError::Interrupted)?
            .map_err(QueryError::from)
    }

    /// A user's presence.
    pub async fn presence(&self, user_id: String) -> Result<Presence, QueryError> {
        let client = self.inner.clone();
        let p = on_runtime(&self.handle, async move { client.presence(&user_id).await })
            .await
            .map_err(|Interrupted| QueryError::Interrupted)??;
        Ok(p.into())
    }

    /// The account a username names (in any case). `Unknown` when nobody has it.
    pub async fn lookup_user(&self, username: String) -> Result<UserProfile, QueryError> {
        let client = self.inner.clone();
        let u = on_runtime(
            &self.handle,
            async move { client.lookup_user(&username).await },
        )
        .await
        .map_err(|Interrupted| QueryError::Interrupted)??;
        Ok(u.into())
    }

    /// A user id's username. `Unknown` when the relay knows no such user.
    pub async fn user_profile(&self, user_id: String) -> Result<UserProfile, QueryError> {
        let client = self.inner.clone();
        let u = on_runtime(
            &self.handle,
            async move { client.user_profile(&user_id).await },
        )
        .await
        .map_err(|Interrupted| QueryError::Interrupted)??;
        Ok(u.into())
    }

    /// Waits until no relay request the client started is outstanding.
    pub async fn idle(&self) {
        let client = self.inner.clone();
        let _ = on_runtime(&self.handle, async move { client.idle().await }).await;
    }

    /// Stops the client: closes the connection, finishes the commit in progress. Listeners get
    /// no more events. (Not `close`: Kotlin objects already have `AutoCloseable.close()`, which
    /// frees the handle.)
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let client = self.inner.clone();
        let _ = on_runtime(&self.handle, async move { client.close().await }).await;
    }

    /// Delivers every event from now on to `listener` (on a Rust thread) until the returned
    /// subscription is cancelled or dropped. Several listeners may be subscribed at once; events
    /// that arrive while none is get dropped (messages stay in the history).
    pub fn subscribe(
        &self,
        listener: Arc<dyn Listener>,
    ) -> Result<Arc<Subscription>, SubscribeError> {
        if *self.stop.borrow() {
            return Err(SubscribeError::Closed);
        }
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).push((id, listener));
        if let Err(e) = self.start_pump() {
            lock(&self.listeners).retain(|(i, _)| *i != id);
            return Err(e);
        }
        Ok(Arc::new(Subscription {
            id,
            listeners: Arc::downgrade(&self.listeners),
        }))
    }
}

/// A listener's registration: `cancel()` or dropping it stops the events.
#[derive(uniffi::Object)]
pub struct Subscription {
    id: u64,
    listeners: std::sync::Weak<ListenerList>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops delivering events to this listener (idempotent). An event already being delivered
    /// finishes; no later one starts.
    pub fn cancel(&self) {
        if let Some(listeners) = self.listeners.upgrade() {
            lock(&listeners).retain(|(i, _)| *i != self.id);
        }
    }

    /// Whether the listener still receives events.
    pub fn is_active(&self) -> bool {
        self.listeners
            .upgrade()
            .is_some_and(|l| lock(&l).iter().any(|(i, _)| *i == self.id))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The binding's version (the workspace version).
#[uniffi::export]
pub fn sotto_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The longest text a message may carry, in characters.
#[uniffi::export]
pub fn max_text_chars() -> u32 {
    MAX_TEXT_CHARS as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ClientConfig {
        ClientConfig {
            server_url: url.into(),
            store_path: None,
            store_key: StoreKey::InsecureTestPassphrase {
                passphrase: "p".into(),
            },
            identity_policy: IdentityPolicy::RequireApproval,
        }
    }

    #[test]
    fn config_is_checked_before_anything_runs() {
        assert!(matches!(
            Sotto::new(config("")),
            Err(ConfigError::InvalidUrl)
        ));
        assert!(matches!(
            Sotto::new(config("ftp://x")),
            Err(ConfigError::InvalidUrl)
        ));
        let mut c = config("http://127.0.0.1:1");
        c.store_key = StoreKey::Key { bytes: vec![0; 31] };
        assert!(matches!(
            Sotto::new(c),
            Err(ConfigError::InvalidStoreKey { length: 31 })
        ));
        let mut c = config("http://127.0.0.1:1");
        c.store_path = Some(String::new());
        assert!(matches!(Sotto::new(c), Err(ConfigError::InvalidStorePath)));
        assert!(Sotto::new(config("http://127.0.0.1:1")).is_ok());
    }

    #[test]
    fn text_limits_are_typed() {
        assert!(matches!(check_text(""), Err(SendError::EmptyText)));
        assert!(check_text(&"é".repeat(1000)).is_ok());
        assert!(matches!(
            check_text(&"é".repeat(1001)),
            Err(SendError::TextTooLong {
                length: 1001,
                max: 1000
            })
        ));
    }
}
