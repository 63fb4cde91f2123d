//! The tokio runtime around the core: drain loop, HTTP request tasks, the WebSocket task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use rand::{Rng as _, RngCore as _};
use reqwest::Method;
use sotto_client_core::{Client, Config, ConversationId, Event, NewAccount, SendFailure};
use sotto_store::memory::MemoryBackend;
use sotto_store::{Backend, EncryptedStore, PassphraseParams, StoreError, StoreKey, Zeroizing};
use sotto_wire::{
    ClientFrame, DeviceList, LoginRequest, LoginResponse, PresenceStatus, RegisterRequest,
    RegisterResponse, ServerFrame, SetPresenceRequest, UserStatus,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::http::{segment, CallError, Http};

mod groups;
mod users;
use crate::storage::{self, SESSION_TABLE};
use crate::{
    ClientEvent, ClientOptions, ConnectionState, DeviceRecord, HistoryPage, LoginError,
    PresenceRecord, QueryError, RegisterError, SendTextError, SentMessage, StoreLocation,
    StoreSecret,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

type Waiter = oneshot::Sender<Result<u64, SendFailure>>;

/// Why a message queued with [`SottoClient::send_and_wait`] was not accepted.
pub(crate) enum NotSent<E> {
    /// The core refused to queue it.
    Refused(E),
    /// Given up (the reason the core gave).
    Failed(SendFailure),
    /// The client stopped first.
    Stopped,
}

impl From<sotto_client_core::SendError> for SendTextError {
    fn from(e: sotto_client_core::SendError) -> Self {
        use sotto_client_core::SendError as E;
        match e {
            E::InvalidText => Self::InvalidText,
            E::ToSelf => Self::ToSelf,
            _ => Self::InvalidRecipient,
        }
    }
}

impl From<NotSent<sotto_client_core::SendError>> for SendTextError {
    fn from(e: NotSent<sotto_client_core::SendError>) -> Self {
        match e {
            NotSent::Refused(e) => e.into(),
            NotSent::Failed(f) => Self::Failed(f),
            NotSent::Stopped => Self::Stopped,
        }
    }
}

impl From<NotSent<sotto_client_core::SendError>> for crate::AttachmentError {
    fn from(e: NotSent<sotto_client_core::SendError>) -> Self {
        Self::Send(match e {
            NotSent::Refused(e) => e.to_string(),
            NotSent::Failed(f) => format!("{f:?}"),
            NotSent::Stopped => "the client stopped".into(),
        })
    }
}

struct Inner {
    core: Mutex<Client>,
    commit_lock: tokio::sync::Mutex<()>,
    store: EncryptedStore,
    http: Http,
    events: mpsc::UnboundedSender<ClientEvent>,
    waiters: Mutex<HashMap<String, Waiter>>,
    acks: mpsc::UnboundedSender<Vec<u64>>,
    inflight: AtomicUsize,
    idle: Notify,
    stopped: AtomicBool,
    shutdown: Notify,
}

/// A running client: one account on this device. Cheap to clone; stops when [`SottoClient::close`]
/// is called (or every clone is dropped and the connection ends).
#[derive(Clone)]
pub struct SottoClient {
    inner: Arc<Inner>,
    events: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ClientEvent>>>,
}

impl std::fmt::Debug for SottoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SottoClient")
            .field("server", &self.inner.http.base())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRow {
    server_url: String,
    token: String,
}

fn store_key(secret: &StoreSecret) -> (StoreKey, PassphraseParams) {
    match secret {
        StoreSecret::Key(k) => (
            StoreKey::Raw(Zeroizing::new(*k)),
            PassphraseParams::default(),
        ),
        StoreSecret::Passphrase(p) => (
            StoreKey::Passphrase(Zeroizing::new(p.clone())),
            PassphraseParams::default(),
        ),
        StoreSecret::InsecureTestPassphrase(p) => (
            StoreKey::Passphrase(Zeroizing::new(p.clone())),
            PassphraseParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
        ),
    }
}

async fn open_store(options: &ClientOptions) -> Result<EncryptedStore, LoginError> {
    let backend: Arc<dyn Backend> = match &options.store {
        StoreLocation::Memory => Arc::new(MemoryBackend::new()),
        StoreLocation::Backend(b) => Arc::clone(b),
        StoreLocation::Sqlite(path) => crate::sqlite_backend(path)
            .await
            .map_err(LoginError::Store)?,
    };
    let (key, params) = store_key(&options.store_secret);
    let mut rng = rand::rngs::OsRng;
    EncryptedStore::open_with_params(backend, key, params, &mut rng)
        .await
        .map_err(|e| match e {
            StoreError::WrongKey => LoginError::WrongStoreKey,
            e => LoginError::Store(e.to_string()),
        })
}

fn relay_message(e: &CallError) -> String {
    match e {
        CallError::Status(a) => serde_json::from_slice::<sotto_wire::ErrorBody>(&a.body)
            .map(|b| format!("{} ({})", b.message, b.code))
            .unwrap_or_else(|_| format!("HTTP {}", a.status)),
        CallError::Unreachable => "unreachable".into(),
        CallError::Malformed => "malformed answer".into(),
    }
}

/// Creates an account on the relay; returns its user id.
pub(crate) async fn register(
    server_url: &str,
    username: &str,
    email: &str,
    password: &str,
) -> Result<String, RegisterError> {
    let http = Http::new(server_url).map_err(|_| RegisterError::InvalidUrl)?;
    let req = RegisterRequest {
        username: username.to_owned(),
        email: email.to_owned(),
        password: password.to_owned(),
    };
    match http
        .json::<RegisterResponse>(Method::POST, "/api/users/register", Some(&req))
        .await
    {
        Ok(r) => Ok(r.user_id),
        Err(CallError::Unreachable) => Err(RegisterError::Unreachable),
        Err(e) if e.code().as_deref() == Some("username_taken") => {
            Err(RegisterError::UsernameTaken)
        }
        Err(e) => Err(RegisterError::Rejected(relay_message(&e))),
    }
}

impl SottoClient {
    /// Creates an account on the relay (no device yet: [`SottoClient::login`] next); returns the
    /// user id.
    pub async fn register(
        server_url: &str,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<String, RegisterError> {
        register(server_url, username, email, password).await
    }

    /// Logs in (creating this account's first device), sets up a new store, uploads prekeys and
    /// connects.
    pub async fn login(
        options: ClientOptions,
        username: &str,
        password: &str,
    ) -> Result<Self, LoginError> {
        let http = Http::new(&options.server_url).map_err(|_| LoginError::InvalidUrl)?;
        let registration_id = rand::rngs::OsRng.gen_range(1..=16380u32);
        let req = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            registration_id,
        };
        let login: LoginResponse = match http
            .json(Method::POST, "/api/users/login", Some(&req))
            .await
        {
            Ok(l) => l,
            Err(CallError::Unreachable) => return Err(LoginError::Unreachable),
            Err(e) => {
                return Err(match e.code().as_deref() {
                    Some("invalid_credentials") => LoginError::InvalidCredentials,
                    Some("device_exists") => LoginError::DeviceExists,
                    _ => LoginError::Rejected(relay_message(&e)),
                })
            }
        };
        Self::new_device(options, http, login, registration_id, None).await
    }

    async fn new_device(
        options: ClientOptions,
        http: Http,
        login: LoginResponse,
        registration_id: u32,
        identity: Option<sotto_crypto::keys::IdentityKeyPair>,
    ) -> Result<Self, LoginError> {
        let store = open_store(&options).await?;
        let config = Config {
            identity_policy: options.identity_policy,
            ..Config::default()
        };
        let core = Client::create(
            NewAccount {
                user_id: login.user_id.clone(),
                device_id: login.device_id,
                registration_id,
                identity,
            },
            config,
            now_ms(),
            seed(),
        )
        .map_err(|e| LoginError::Rejected(e.to_string()))?;
        let row = SessionRow {
            server_url: options.server_url.clone(),
            token: login.token.clone(),
        };
        let mut tx = store.transaction();
        tx.put(
            SESSION_TABLE,
            b"session",
            0,
            &serde_json::to_vec(&row).unwrap_or_default(),
        );
        store
            .commit(tx)
            .await
            .map_err(|e| LoginError::Store(e.to_string()))?;
        let client = Self::start(core, store, http.with_token(&login.token));
        client.inner.drain().await;
        // Others can only reach this device once its prekeys are on the relay.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            client.idle().await;
            if !client.inner.core().uploads_pending() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LoginError::Unreachable);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.inner.core().handle_timeout(now_ms());
            client.inner.drain().await;
        }
        Ok(client)
    }

    /// New device, step 1: opens a provisioning channel. Show [`PendingLink::code`] to the
    /// existing device (as text or a QR code), then call [`SottoClient::finish_link`].
    pub async fn begin_link(server_url: &str) -> Result<PendingLink, LoginError> {
        let http = Http::new(server_url).map_err(|_| LoginError::InvalidUrl)?;
        let channel: sotto_wire::ProvisioningChannel = http
            .json(Method::POST, "/api/provisioning", None::<&()>)
            .await
            .map_err(|e| match e {
                CallError::Unreachable => LoginError::Unreachable,
                e => LoginError::Rejected(relay_message(&e)),
            })?;
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        Ok(PendingLink {
            http,
            address: channel.address,
            secret,
        })
    }

    /// New device, step 2: waits (up to `wait_secs`) for the existing device's provisioning
    /// message, links, uploads prekeys under the account identity, connects.
    pub async fn finish_link(
        pending: PendingLink,
        options: ClientOptions,
        wait_secs: u64,
    ) -> Result<Self, LoginError> {
        let PendingLink {
            http,
            address,
            secret,
        } = pending;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_secs);
        let sealed = loop {
            let path = format!("/api/provisioning/{}?waitSecs=10", segment(&address));
            match http.raw(Method::GET, &path, None).await {
                Ok(a) if a.status == 200 => {
                    let m: sotto_wire::ProvisioningMessage = serde_json::from_slice(&a.body)
                        .map_err(|_| {
                            LoginError::Rejected("malformed provisioning answer".into())
                        })?;
                    break m.message.into_bytes();
                }
                Ok(_) => {}
                Err(CallError::Unreachable) => return Err(LoginError::Unreachable),
                Err(e) => return Err(LoginError::Rejected(relay_message(&e))),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LoginError::Rejected(
                    "no provisioning message arrived".into(),
                ));
            }
        };
        let plain = sotto_client_core::linking::open(&secret, &address, &sealed)
            .ok_or_else(|| LoginError::Rejected("the provisioning message does not open".into()))?;
        let provision: sotto_client_core::linking::Provision = serde_json::from_slice(&plain)
            .map_err(|_| LoginError::Rejected("malformed provisioning message".into()))?;
        let identity_bytes = Zeroizing::new(
            hex::decode(&provision.identity)
                .map_err(|_| LoginError::Rejected("malformed identity".into()))?,
        );
        let identity = sotto_crypto::keys::IdentityKeyPair::from_bytes(&identity_bytes)
            .map_err(|_| LoginError::Rejected("malformed identity".into()))?;
        let registration_id = rand::rngs::OsRng.gen_range(1..=16380u32);
        let login: LoginResponse = http
            .json(
                Method::POST,
                "/api/devices/link",
                Some(&sotto_wire::LinkDeviceRequest {
                    code: provision.code.clone(),
                    registration_id,
                }),
            )
            .await
            .map_err(|e| match e {
                CallError::Unreachable => LoginError::Unreachable,
                e => LoginError::Rejected(relay_message(&e)),
            })?;
        if login.user_id != provision.user_id {
            return Err(LoginError::Rejected("linked to another account".into()));
        }
        let mut options = options;
        options.server_url = http.base().to_owned();
        Self::new_device(options, http, login, registration_id, Some(identity)).await
    }

    /// Existing device: links the new device that shows `code` (from [`PendingLink::code`]):
    /// the account identity goes to it end-to-end encrypted over the provisioning channel.
    pub async fn link_device(&self, code: &str) -> Result<(), QueryError> {
        let (address, key) = code
            .rsplit_once(':')
            .ok_or(QueryError::Invalid("link code is address:key"))?;
        let key: [u8; 32] = hex::decode(key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or(QueryError::Invalid("link code key"))?;
        let linking: sotto_wire::LinkingCode = self
            .inner
            .http
            .json(Method::POST, "/api/devices/linking-codes", None::<&()>)
            .await
            .map_err(query_error)?;
        let (user_id, identity) = {
            let c = self.inner.core();
            (
                c.user_id().to_owned(),
                Zeroizing::new(hex::encode(&c.identity_key_pair().to_bytes()[..])),
            )
        };
        let plain = Zeroizing::new(
            serde_json::to_vec(&sotto_client_core::linking::Provision {
                user_id,
                identity: (*identity).clone(),
                code: linking.code.clone(),
            })
            .unwrap_or_default(),
        );
        let sealed =
            sotto_client_core::linking::seal(&mut rand::rngs::OsRng, &key, address, &plain)
                .ok_or(QueryError::Invalid("link code key"))?;
        self.inner
            .http
            .empty(
                Method::PUT,
                &format!("/api/provisioning/{}", segment(address)),
                Some(&sotto_wire::ProvisioningMessage {
                    message: sotto_wire::Base64(sealed),
                }),
            )
            .await
            .map_err(query_error)
    }

    /// Opens an existing profile (after a login on this device) and connects.
    pub async fn open(options: ClientOptions) -> Result<Self, LoginError> {
        let store = open_store(&options).await?;
        let session = store
            .get(SESSION_TABLE, b"session", 0)
            .await
            .map_err(|e| LoginError::Store(e.to_string()))?
            .ok_or(LoginError::NoAccount)?;
        let session: SessionRow =
            serde_json::from_slice(&session).map_err(|e| LoginError::Store(e.to_string()))?;
        let rows = storage::load(&store)
            .await
            .map_err(|e| LoginError::Store(e.to_string()))?;
        let config = Config {
            identity_policy: options.identity_policy,
            ..Config::default()
        };
        let core = Client::restore(rows.iter().map(|(t, v)| (*t, v.as_slice())), config, seed())
            .map_err(|e| match e {
                sotto_client_core::RestoreError::NoAccount => LoginError::NoAccount,
                e => LoginError::Store(e.to_string()),
            })?;
        let http = Http::new(&session.server_url)
            .map_err(|_| LoginError::InvalidUrl)?
            .with_token(&session.token);
        let client = Self::start(core, store, http);
        {
            let mut core = client.inner.core();
            core.handle_timeout(now_ms());
        }
        client.inner.drain().await;
        Ok(client)
    }

    fn start(core: Client, store: EncryptedStore, http: Http) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            commit_lock: tokio::sync::Mutex::new(()),
            store,
            http,
            events: events_tx,
            waiters: Mutex::new(HashMap::new()),
            acks: acks_tx,
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            stopped: AtomicBool::new(false),
            shutdown: Notify::new(),
        });
        tokio::spawn(run_ws(Arc::clone(&inner), acks_rx));
        Self {
            inner,
            events: Arc::new(tokio::sync::Mutex::new(events_rx)),
        }
    }

    /// The next event (waits). `None` once the client stopped.
    pub async fn next_event(&self) -> Option<ClientEvent> {
        self.events.lock().await.recv().await
    }

    /// The next event if one is ready now.
    pub async fn try_next_event(&self) -> Option<ClientEvent> {
        self.events.lock().await.try_recv().ok()
    }

    /// This account's user id.
    pub fn user_id(&self) -> String {
        self.inner.core().user_id().to_owned()
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.inner.core().device_id()
    }

    /// Waits until no relay request started by the client is outstanding.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.inflight.load(Ordering::SeqCst) == 0 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Sends a text message to a user (1-1000 characters); returns once the relay accepted it.
    pub async fn send_text(
        &self,
        to_user_id: &str,
        text: &str,
    ) -> Result<SentMessage, SendTextError> {
        self.send_and_wait(|core, now| core.send_text(now, to_user_id, text))
            .await
            .map_err(Into::into)
    }

    /// Encrypts `path` as it is read, uploads it as it is encrypted, and sends the key and
    /// digest to the user in an end-to-end encrypted message; returns once the relay accepted it.
    pub async fn send_attachment(
        &self,
        to_user_id: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<SentMessage, crate::AttachmentError> {
        let pointer = crate::attachments::upload(&self.inner.http, path, content_type).await?;
        self.send_and_wait(|core, now| core.send_attachment(now, to_user_id, pointer, None))
            .await
            .map_err(Into::into)
    }

    /// Downloads, verifies and decrypts a received attachment into `dest`; returns its size.
    pub async fn download_attachment(
        &self,
        attachment: &sotto_client_core::AttachmentPointer,
        dest: &std::path::Path,
    ) -> Result<u64, crate::AttachmentError> {
        crate::attachments::download(&self.inner.http, attachment, dest).await
    }

    /// Queues a message with `queue` and waits until the relay accepted it (or it was given up).
    pub(crate) async fn send_and_wait<E>(
        &self,
        queue: impl FnOnce(&mut Client, u64) -> Result<String, E>,
    ) -> Result<SentMessage, NotSent<E>> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut core = self.inner.core();
            let id = queue(&mut core, now_ms()).map_err(NotSent::Refused)?;
            self.inner.waiters().insert(id.clone(), tx);
            id
        };
        self.inner.drain().await;
        match rx.await {
            Ok(Ok(server_timestamp)) => Ok(SentMessage {
                id,
                server_timestamp,
            }),
            Ok(Err(f)) => Err(NotSent::Failed(f)),
            Err(_) => Err(NotSent::Stopped),
        }
    }

    /// Queues a text message without waiting for the relay; returns its id.
    pub async fn queue_text(&self, to_user_id: &str, text: &str) -> Result<String, SendTextError> {
        let id = self
            .inner
            .core()
            .send_text(now_ms(), to_user_id, text)
            .map_err(SendTextError::from)?;
        // Not awaited: messages queued back to back share one commit and one request batch.
        tokio::spawn(self.inner.drain());
        Ok(id)
    }

    /// Marks a conversation read (clears the unread count, sends the read receipt, syncs own
    /// devices).
    pub async fn mark_read(&self, conversation: &ConversationId) {
        self.inner.core().mark_read(now_ms(), conversation);
        self.inner.drain().await;
    }

    /// Typing started or stopped in a 1:1 conversation.
    pub async fn set_typing(&self, to_user_id: &str, typing: bool) -> Result<(), QueryError> {
        self.inner
            .core()
            .set_typing(now_ms(), to_user_id, typing)
            .map_err(|_| QueryError::Invalid("no session with this contact yet"))?;
        self.inner.drain().await;
        Ok(())
    }

    /// Conversations, newest first.
    pub fn conversations(&self) -> Vec<sotto_client_core::Conversation> {
        self.inner.core().conversations()
    }

    /// One page of a conversation's history (newest first); `limit` 1-100.
    pub async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, QueryError> {
        if !(1..=100).contains(&limit) {
            return Err(QueryError::Invalid("limit must be 1 to 100"));
        }
        let messages = storage::history(&self.inner.store, conversation, before, limit as usize)
            .await
            .map_err(|e| QueryError::Store(e.to_string()))?;
        let next_cursor = if messages.len() == limit as usize {
            messages.last().map(|m| m.sort)
        } else {
            None
        };
        Ok(HistoryPage {
            messages,
            next_cursor,
        })
    }

    /// The safety number with a contact.
    pub fn safety_number(
        &self,
        user_id: &str,
    ) -> Result<sotto_client_core::SafetyNumberInfo, sotto_client_core::IdentityError> {
        self.inner.core().safety_number(user_id)
    }

    /// Marks a contact verified (after comparing safety numbers) or not.
    pub async fn set_verified(
        &self,
        user_id: &str,
        verified: bool,
    ) -> Result<(), sotto_client_core::IdentityError> {
        self.inner
            .core()
            .set_verified(now_ms(), user_id, verified)?;
        self.inner.drain().await;
        Ok(())
    }

    /// Accepts a contact's changed identity.
    pub async fn approve_identity(
        &self,
        user_id: &str,
    ) -> Result<(), sotto_client_core::IdentityError> {
        self.inner.core().approve_identity(now_ms(), user_id)?;
        self.inner.drain().await;
        Ok(())
    }

    /// This account's devices.
    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, QueryError> {
        let (user, me) = {
            let c = self.inner.core();
            (c.user_id().to_owned(), c.device_id())
        };
        let list: DeviceList = self
            .inner
            .http
            .json(
                Method::GET,
                &format!("/api/users/{}/devices", segment(&user)),
                None::<&()>,
            )
            .await
            .map_err(query_error)?;
        Ok(list
            .devices
            .into_iter()
            .map(|d| DeviceRecord {
                device_id: d.device_id,
                created_at: d.created_at,
                this_device: d.device_id == me,
            })
            .collect())
    }

    /// Removes one of this account's other devices.
    pub async fn remove_device(&self, device_id: u32) -> Result<(), QueryError> {
        self.inner
            .http
            .empty(
                Method::DELETE,
                &format!("/api/devices/{device_id}"),
                None::<&()>,
            )
            .await
            .map_err(query_error)
    }

    /// Sets this device away (or online again).
    pub async fn set_away(&self, away: bool) -> Result<(), QueryError> {
        let status = if away {
            PresenceStatus::Away
        } else {
            PresenceStatus::Online
        };
        self.inner
            .http
            .empty(
                Method::PUT,
                "/api/presence",
                Some(&SetPresenceRequest { status }),
            )
            .await
            .map_err(query_error)
    }

    /// A user's presence.
    pub async fn presence(&self, user_id: &str) -> Result<PresenceRecord, QueryError> {
        let s: UserStatus = self
            .inner
            .http
            .json(
                Method::GET,
                &format!("/api/users/{}/status", segment(user_id)),
                None::<&()>,
            )
            .await
            .map_err(query_error)?;
        Ok(presence_record(s))
    }

    /// What the relay holds queued for this device right now (ciphertext only; nothing is
    /// acked or deleted): `(seq, kind, content)`, oldest first, at most 100.
    pub async fn relay_queue(&self) -> Result<Vec<(u64, String, Vec<u8>)>, QueryError> {
        let page: sotto_wire::EnvelopePage = self
            .inner
            .http
            .json(Method::GET, "/api/messages?after=0&limit=100", None::<&()>)
            .await
            .map_err(query_error)?;
        Ok(page
            .envelopes
            .into_iter()
            .map(|e| {
                let kind = format!("{:?}", e.kind);
                (
                    e.seq,
                    kind,
                    e.content.map(|c| c.into_bytes()).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Stops the client: closes the connection, finishes the drain in progress.
    pub async fn close(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.shutdown.notify_waiters();
        let _guard = self.inner.commit_lock.lock().await;
    }
}

/// A new device waiting to be linked.
pub struct PendingLink {
    http: Http,
    address: String,
    secret: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLink")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl PendingLink {
    /// What the existing device needs: the channel address and this device's public key.
    pub fn code(&self) -> String {
        let public = x25519_dalek::PublicKey::from(&self.secret);
        format!("{}:{}", self.address, hex::encode(public.as_bytes()))
    }
}

fn presence_record(s: UserStatus) -> PresenceRecord {
    PresenceRecord {
        user_id: s.user_id,
        status: match s.status {
            PresenceStatus::Online => "online",
            PresenceStatus::Away => "away",
            PresenceStatus::Offline => "offline",
        }
        .to_owned(),
        last_seen: s.last_seen,
    }
}

fn query_error(e: CallError) -> QueryError {
    match e {
        CallError::Unreachable => QueryError::Unreachable,
        e if e.status() == Some(404) => QueryError::Unknown,
        e => QueryError::Rejected(relay_message(&e)),
    }
}

impl Inner {
    fn core(&self) -> std::sync::MutexGuard<'_, Client> {
        // A panic while holding the lock cannot leave the core half-changed in a way the store
        // sees: nothing is committed until a drain. Recover the guard.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits what the core changed, then acks, then starts its requests and hands out events.
    fn drain(self: &Arc<Self>) -> futures_util::future::BoxFuture<'static, ()> {
        let this = Arc::clone(self);
        Box::pin(async move { this.drain_now().await })
    }

    async fn drain_now(self: &Arc<Self>) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let guard = self.commit_lock.lock().await;
        let (writes, acks, requests, events) = {
            let mut core = self.core();
            let writes = core.take_writes();
            let acks = core.take_acks();
            let requests: Vec<_> = std::iter::from_fn(|| core.poll_request()).collect();
            let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
            (writes, acks, requests, events)
        };
        if let Err(e) = storage::commit(&self.store, writes).await {
            // Nothing of this drain is acked; stop before anything else diverges.
            self.stopped.store(true, Ordering::SeqCst);
            self.shutdown.notify_waiters();
            let _ = self.events.send(ClientEvent::StoreFailed(e.to_string()));
            return;
        }
        drop(guard);
        if !acks.is_empty() {
            let _ = self.acks.send(acks);
        }
        for request in requests {
            self.inflight.fetch_add(1, Ordering::SeqCst);
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                let result = inner.http.perform(&request.call).await;
                inner.core().handle_response(now_ms(), request.id, result);
                inner.drain().await;
                if inner.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
                    inner.idle.notify_waiters();
                }
            });
        }
        for event in events {
            match &event {
                Event::MessageSent {
                    message_id,
                    server_timestamp,
                    ..
                } => {
                    if let Some(w) = self.waiters().remove(message_id) {
                        let _ = w.send(Ok(*server_timestamp));
                    }
                }
                Event::SendFailed {
                    message_id, reason, ..
                } => {
                    if let Some(w) = self.waiters().remove(message_id) {
                        let _ = w.send(Err(reason.clone()));
                    }
                }
                _ => {}
            }
            let _ = self.events.send(ClientEvent::Event(event));
        }
    }

    fn connection(&self, state: ConnectionState) {
        let _ = self.events.send(ClientEvent::Connection(state));
    }

    /// One frame from the relay into the core (no drain).
    fn frame(&self, frame: ServerFrame) -> Option<ConnectionState> {
        let now = now_ms();
        let mut core = self.core();
        match frame {
            ServerFrame::Envelope(env) => core.handle_envelope(now, env),
            ServerFrame::Presence(s) => core.handle_presence(s),
            ServerFrame::Ephemeral(e) => core.handle_ephemeral(now, e),
            ServerFrame::QueueEmpty => return Some(ConnectionState::CaughtUp),
            _ => {}
        }
        None
    }
}

/// Most frames handled before one drain (commit + acks).
const BATCH: usize = 256;
const PING_EVERY: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Opens the WebSocket: the token in the `Authorization` header (never in the URL, where proxies
/// log it), and `wss://` verified like the HTTPS calls (the platform's trust store).
async fn connect_ws(
    http: &Http,
) -> Option<(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = http.ws_url().into_client_request().ok()?;
    let bearer = format!("Bearer {}", http.token().unwrap_or_default());
    request
        .headers_mut()
        .insert("authorization", bearer.parse().ok()?);
    let connector = if http.base().starts_with("https://") {
        use rustls_platform_verifier::ConfigVerifierExt as _;
        let config = tokio_rustls::rustls::ClientConfig::with_platform_verifier().ok()?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    } else {
        None
    };
    tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
        .await
        .ok()
}

async fn run_ws(inner: Arc<Inner>, mut acks_rx: mpsc::UnboundedReceiver<Vec<u64>>) {
    let mut backoff = Duration::from_millis(250);
    let mut pending_acks: Vec<u64> = Vec::new();
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        inner.connection(ConnectionState::Connecting);
        let connected = tokio::select! {
            r = connect_ws(&inner.http) => r,
            _ = inner.shutdown.notified() => return,
        };
        if let Some((ws, _)) = connected {
            backoff = Duration::from_millis(250);
            inner.connection(ConnectionState::Connected);
            {
                let mut core = inner.core();
                core.check_prekeys();
                core.handle_timeout(now_ms());
            }
            inner.drain().await;
            let (mut sink, mut stream) = ws.split();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut last_ping = tokio::time::Instant::now();
            let mut closed_for_good = false;
            // Acks left from the previous connection: harmless if already gone.
            while let Ok(ids) = acks_rx.try_recv() {
                pending_acks.extend(ids);
            }
            loop {
                if !pending_acks.is_empty() {
                    let mut failed = false;
                    for chunk in pending_acks.chunks(100) {
                        let frame = ClientFrame::Ack {
                            ids: chunk.to_vec(),
                        };
                        let text = serde_json::to_string(&frame).unwrap_or_default();
                        if sink.send(WsMessage::text(text)).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        break;
                    }
                    pending_acks.clear();
                }
                tokio::select! {
                    msg = stream.next() => {
                        let mut msgs = vec![msg];
                        while msgs.len() < BATCH {
                            match stream.next().now_or_never() {
                                Some(m) => msgs.push(m),
                                None => break,
                            }
                        }
                        let mut end = false;
                        let mut caught_up = false;
                        for msg in msgs {
                            match msg {
                                Some(Ok(WsMessage::Text(t))) => {
                                    if let Ok(frame) = serde_json::from_str::<ServerFrame>(t.as_str()) {
                                        if inner.frame(frame) == Some(ConnectionState::CaughtUp) {
                                            caught_up = true;
                                        }
                                    }
                                }
                                Some(Ok(WsMessage::Close(frame))) => {
                                    let code = frame.map(|f| u16::from(f.code));
                                    if matches!(code, Some(4001) | Some(4004)) {
                                        closed_for_good = true;
                                    }
                                    end = true;
                                }
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => end = true,
                            }
                        }
                        inner.drain().await;
                        if caught_up {
                            inner.connection(ConnectionState::CaughtUp);
                        }
                        if end {
                            break;
                        }
                    }
                    ids = acks_rx.recv() => {
                        if let Some(ids) = ids {
                            pending_acks.extend(ids);
                            while let Ok(more) = acks_rx.try_recv() {
                                pending_acks.extend(more);
                            }
                        }
                    }
                    _ = tick.tick() => {
                        inner.core().handle_timeout(now_ms());
                        inner.drain().await;
                        if last_ping.elapsed() >= PING_EVERY {
                            last_ping = tokio::time::Instant::now();
                            let text = serde_json::to_string(&ClientFrame::Ping).unwrap_or_default();
                            if sink.send(WsMessage::text(text)).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ = inner.shutdown.notified() => {
                        let _ = sink.send(WsMessage::Close(Some(
                            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                code: CloseCode::Normal,
                                reason: "".into(),
                            },
                        ))).await;
                        inner.connection(ConnectionState::Closed);
                        return;
                    }
                }
            }
            if closed_for_good {
                inner.connection(ConnectionState::Closed);
                return;
            }
            inner.connection(ConnectionState::Disconnected);
        }
        // Exponential backoff with full jitter.
        let wait = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = inner.shutdown.notified() => return,
        }
    }
}
