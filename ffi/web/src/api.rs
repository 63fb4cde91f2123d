//! The JS/TS-facing API: one `SottoClient` class with camelCase methods returning Promises, plain
//! objects in and out, and one error shape: a JS `Error` named `SottoError` with a `code` from a
//! fixed list per operation (see the package's `.d.ts`).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Promise, Uint8Array};
use serde::Deserialize;
use serde_json::json;
use sotto_client_core::{
    AttachmentPointer, Client, Config, ConversationId, IdentityPolicy, NewAccount, SendFailure,
};
use sotto_crypto::attachment::{
    ciphertext_len, AttachmentDigest, AttachmentKey, Decryptor, Encryptor, CHUNK_SIZE,
};
use sotto_store::memory::MemoryBackend;
use sotto_store::{Backend, EncryptedStore, PassphraseParams, StoreError, StoreKey, Zeroizing};
use sotto_wire::{
    Base64, CreateGroupRequest, DeviceList, GroupCreated, GroupInvitations, GroupMembers,
    GroupRole, JoinGroupRequest, LoginRequest, LoginResponse, PresenceStatus, RegisterRequest,
    RegisterResponse, SetPresenceRequest, SetRoleRequest, UserStatus,
};
use wasm_bindgen::prelude::*;

use crate::events::{self, to_js};
use crate::idb::IndexedDbBackend;
use crate::net::{now_ms, segment, sleep, CallError, Http};
use crate::runtime::{self, Inner, SESSION_TABLE};

/// Largest attachment the SDK sends (the relay's default limit).
pub const MAX_ATTACHMENT_BYTES: usize = 50 * 1024 * 1024;

/// A `SottoError` with this code.
fn error(code: &str, message: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&message.to_string());
    e.set_name("SottoError");
    let _ = js_sys::Reflect::set(&e, &JsValue::from_str("code"), &JsValue::from_str(code));
    e.into()
}

fn relay_error(e: &CallError) -> JsValue {
    match e {
        CallError::Unreachable => error("unreachable", "the relay cannot be reached"),
        e if e.status() == Some(429) => error("rateLimited", e.describe()),
        e => error("rejected", e.describe()),
    }
}

fn store_error(e: StoreError) -> JsValue {
    match e {
        StoreError::WrongKey => error("wrongPassphrase", "wrong store passphrase"),
        e => error("store", e),
    }
}

fn send_failure(f: &SendFailure) -> JsValue {
    let (code, text) = match f {
        SendFailure::UnknownUser => (
            "unknownUser",
            "the relay does not know this user".to_owned(),
        ),
        SendFailure::NoVerifiedDevices => (
            "noVerifiedDevices",
            "the recipient has no device signed by its identity".to_owned(),
        ),
        SendFailure::DeviceListUnresolved => (
            "deviceListUnresolved",
            "the relay keeps listing devices that do not verify".to_owned(),
        ),
        SendFailure::Rejected { code } if code == "client_stopped" => {
            ("stopped", "the client stopped".to_owned())
        }
        SendFailure::Rejected { code } => ("rejected", format!("the relay refused ({code})")),
        SendFailure::BadRelayAnswer => ("rejected", "the relay's answers make no sense".to_owned()),
        _ => ("rejected", format!("{f:?}")),
    };
    error(code, text)
}

/// Runs `f` as a JS Promise.
fn promise(f: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    wasm_bindgen_futures::future_to_promise(f)
}

/// Parses an options object (a plain JS object) into `T`.
fn options<T: for<'de> Deserialize<'de>>(value: &JsValue) -> Result<T, JsValue> {
    let text = js_sys::JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| error("invalidArgument", "options must be a plain object"))?;
    serde_json::from_str(&text).map_err(|e| error("invalidArgument", format!("options: {e}")))
}

fn conversation_id(value: &JsValue) -> Result<ConversationId, JsValue> {
    options(value)
}

fn random_u32(range: std::ops::RangeInclusive<u32>) -> u32 {
    use rand_core::RngCore as _;
    let span = range.end() - range.start() + 1;
    range.start() + rand_core::OsRng.next_u32() % span
}

fn seed() -> [u8; 32] {
    use rand_core::RngCore as _;
    let mut s = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut s);
    s
}

/// Where a profile lives and what unlocks it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoreOptions {
    /// IndexedDB database name (default `"sotto"`); ignored with `memory`.
    #[serde(default)]
    name: Option<String>,
    /// In memory only (tests, or a private window that keeps nothing).
    #[serde(default)]
    memory: bool,
    /// Unlocks the store (Argon2id).
    passphrase: String,
    /// Argon2id at a test-only cost: never for real profiles.
    #[serde(default)]
    insecure_fast_kdf: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoginOptions {
    server_url: String,
    username: String,
    password: String,
    store: StoreOptions,
    /// `"requireApproval"` (default) or `"acceptAndNotify"`.
    #[serde(default)]
    identity_policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenOptions {
    store: StoreOptions,
    #[serde(default)]
    identity_policy: Option<String>,
}

#[derive(serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRow {
    server_url: String,
    token: String,
}

fn policy(p: &Option<String>) -> Result<IdentityPolicy, JsValue> {
    match p.as_deref() {
        None | Some("requireApproval") => Ok(IdentityPolicy::RequireApproval),
        Some("acceptAndNotify") => Ok(IdentityPolicy::AcceptAndNotify),
        Some(_) => Err(error(
            "invalidArgument",
            "identityPolicy is \"requireApproval\" or \"acceptAndNotify\"",
        )),
    }
}

async fn open_store(o: &StoreOptions) -> Result<EncryptedStore, JsValue> {
    if o.passphrase.is_empty() || o.passphrase.len() > 1024 {
        return Err(error(
            "invalidArgument",
            "the passphrase is 1 to 1024 bytes",
        ));
    }
    let backend: Arc<dyn Backend> = if o.memory {
        Arc::new(MemoryBackend::new())
    } else {
        let name = o.name.as_deref().unwrap_or("sotto");
        Arc::new(
            IndexedDbBackend::open(name)
                .await
                .map_err(|e| error("store", e))?,
        )
    };
    let params = if o.insecure_fast_kdf {
        PassphraseParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    } else {
        PassphraseParams::default()
    };
    let key = StoreKey::Passphrase(Zeroizing::new(o.passphrase.clone()));
    EncryptedStore::open_with_params(backend, key, params, &mut rand_core::OsRng)
        .await
        .map_err(store_error)
}

/// A new device of `login`'s account: the core, the stored session, the prekey upload.
async fn new_device(
    store: EncryptedStore,
    identity_policy: IdentityPolicy,
    http: &Http,
    login: LoginResponse,
    registration_id: u32,
    identity: Option<sotto_crypto::keys::IdentityKeyPair>,
) -> Result<Rc<Inner>, JsValue> {
    let config = Config {
        identity_policy,
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
    .map_err(|e| error("rejected", e))?;
    let row = SessionRow {
        server_url: http.base().to_owned(),
        token: login.token.clone(),
    };
    let mut tx = store.transaction();
    tx.put(
        SESSION_TABLE,
        b"session",
        0,
        &serde_json::to_vec(&row).unwrap_or_default(),
    );
    store.commit(tx).await.map_err(store_error)?;
    let inner = Inner::start(core, store, http.with_token(&login.token));
    inner.drain().await;
    // Others can only reach this device once its prekeys are on the relay.
    let deadline = now_ms() + 30_000;
    while inner.with_core(|c| c.uploads_pending()) {
        if now_ms() > deadline {
            inner.close().await;
            return Err(error("unreachable", "the prekey upload did not finish"));
        }
        sleep(100).await;
        inner.with_core(|c| c.handle_timeout(now_ms()));
        inner.drain().await;
    }
    Ok(inner)
}

async fn fresh_store(o: &StoreOptions) -> Result<EncryptedStore, JsValue> {
    let store = open_store(o).await?;
    if store
        .get(SESSION_TABLE, b"session", 0)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(error(
            "profileExists",
            "this store already holds an account: open it, or use another store name",
        ));
    }
    Ok(store)
}

/// A new device waiting to be linked: show [`PendingLink::code`] on the existing device (as
/// text or a QR code), then call `SottoClient.finishLink`.
#[wasm_bindgen]
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

#[wasm_bindgen]
impl PendingLink {
    /// What the existing device enters in `linkDevice`: the channel address and this device's
    /// public key.
    #[wasm_bindgen(getter)]
    pub fn code(&self) -> String {
        let public = x25519_dalek::PublicKey::from(&self.secret);
        format!("{}:{}", self.address, hex::encode(public.as_bytes()))
    }
}

/// A running client: one account on this browser profile.
#[wasm_bindgen]
pub struct SottoClient {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for SottoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SottoClient")
            .field("server", &self.inner.http.base())
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl SottoClient {
    /// Creates an account on the relay; resolves to its user id.
    #[wasm_bindgen(unchecked_return_type = "Promise<string>")]
    pub fn register(
        #[wasm_bindgen(js_name = serverUrl)] server_url: String,
        username: String,
        email: String,
        password: String,
    ) -> Promise {
        promise(async move {
            let http =
                Http::new(&server_url).ok_or_else(|| error("invalidUrl", "invalid server URL"))?;
            let req = RegisterRequest {
                username,
                email,
                password,
            };
            match http
                .json::<RegisterResponse>("POST", "/api/users/register", Some(&req))
                .await
            {
                Ok(r) => Ok(JsValue::from_str(&r.user_id)),
                Err(e) if e.code().as_deref() == Some("username_taken") => {
                    Err(error("usernameTaken", "that username is taken"))
                }
                Err(e) if e.status() == Some(422) || e.status() == Some(400) => {
                    Err(error("invalidArgument", e.describe()))
                }
                Err(e) => Err(relay_error(&e)),
            }
        })
    }

    /// Logs in, creating this account's device in a new store (IndexedDB or memory), uploads
    /// its prekeys and connects.
    #[wasm_bindgen(unchecked_return_type = "Promise<SottoClient>")]
    pub fn login(
        #[wasm_bindgen(unchecked_param_type = "LoginOptions", js_name = options)] options_: JsValue,
    ) -> Promise {
        promise(async move {
            let o: LoginOptions = options(&options_)?;
            let identity_policy = policy(&o.identity_policy)?;
            let http = Http::new(&o.server_url)
                .ok_or_else(|| error("invalidUrl", "invalid server URL"))?;
            let store = fresh_store(&o.store).await?;
            let registration_id = random_u32(1..=16380);
            let req = LoginRequest {
                username: o.username,
                password: o.password,
                registration_id,
            };
            let login: LoginResponse = match http.json("POST", "/api/users/login", Some(&req)).await
            {
                Ok(l) => l,
                Err(e) => {
                    return Err(match e.code().as_deref() {
                        Some("invalid_credentials") => {
                            error("invalidCredentials", "wrong username or password")
                        }
                        Some("device_exists") => error(
                            "deviceExists",
                            "this account already has a device; link this one from it",
                        ),
                        _ => relay_error(&e),
                    })
                }
            };
            let inner =
                new_device(store, identity_policy, &http, login, registration_id, None).await?;
            Ok(SottoClient { inner }.into())
        })
    }

    /// Opens the profile in a store (after a login in this browser) and connects.
    #[wasm_bindgen(unchecked_return_type = "Promise<SottoClient>")]
    pub fn open(
        #[wasm_bindgen(unchecked_param_type = "OpenOptions", js_name = options)] options_: JsValue,
    ) -> Promise {
        promise(async move {
            let o: OpenOptions = options(&options_)?;
            let identity_policy = policy(&o.identity_policy)?;
            let store = open_store(&o.store).await?;
            let session = store
                .get(SESSION_TABLE, b"session", 0)
                .await
                .map_err(store_error)?
                .ok_or_else(|| error("noAccount", "no account in this store"))?;
            let session: SessionRow =
                serde_json::from_slice(&session).map_err(|e| error("store", e))?;
            let rows = runtime::load(&store).await.map_err(store_error)?;
            let config = Config {
                identity_policy,
                ..Config::default()
            };
            let core =
                Client::restore(rows.iter().map(|(t, v)| (*t, v.as_slice())), config, seed())
                    .map_err(|e| match e {
                        sotto_client_core::RestoreError::NoAccount => {
                            error("noAccount", "no account in this store")
                        }
                        e => error("store", e),
                    })?;
            let http = Http::new(&session.server_url)
                .ok_or_else(|| error("store", "the stored relay URL is invalid"))?
                .with_token(&session.token);
            let inner = Inner::start(core, store, http);
            inner.with_core(|c| c.handle_timeout(now_ms()));
            inner.drain().await;
            Ok(SottoClient { inner }.into())
        })
    }

    /// New device, step 1: opens a provisioning channel on the relay.
    #[wasm_bindgen(js_name = beginLink, unchecked_return_type = "Promise<PendingLink>")]
    pub fn begin_link(#[wasm_bindgen(js_name = serverUrl)] server_url: String) -> Promise {
        promise(async move {
            let http =
                Http::new(&server_url).ok_or_else(|| error("invalidUrl", "invalid server URL"))?;
            let channel: sotto_wire::ProvisioningChannel = http
                .json("POST", "/api/provisioning", None::<&()>)
                .await
                .map_err(|e| relay_error(&e))?;
            let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
            Ok(PendingLink {
                http,
                address: channel.address,
                secret,
            }
            .into())
        })
    }

    /// New device, step 2: waits (up to `waitSecs`, at most 600) for the existing device's
    /// provisioning message, links, uploads prekeys under the account identity, connects.
    #[wasm_bindgen(js_name = finishLink, unchecked_return_type = "Promise<SottoClient>")]
    pub fn finish_link(
        pending: PendingLink,
        #[wasm_bindgen(unchecked_param_type = "OpenOptions", js_name = options)] options_: JsValue,
        #[wasm_bindgen(js_name = waitSecs)] wait_secs: u32,
    ) -> Promise {
        promise(async move {
            let o: OpenOptions = options(&options_)?;
            let identity_policy = policy(&o.identity_policy)?;
            let store = fresh_store(&o.store).await?;
            let PendingLink {
                http,
                address,
                secret,
            } = pending;
            let deadline = now_ms() + u64::from(wait_secs.min(600)) * 1000;
            let sealed = loop {
                let path = format!("/api/provisioning/{}?waitSecs=10", segment(&address));
                match http.raw("GET", &path, None).await {
                    Ok(a) if a.status == 200 => {
                        let m: sotto_wire::ProvisioningMessage = serde_json::from_slice(&a.body)
                            .map_err(|_| error("rejected", "malformed provisioning answer"))?;
                        break m.message.into_bytes();
                    }
                    Ok(_) => {}
                    Err(e) => return Err(relay_error(&e)),
                }
                if now_ms() > deadline {
                    return Err(error("linkTimedOut", "no provisioning message arrived"));
                }
            };
            let plain = sotto_client_core::linking::open(&secret, &address, &sealed)
                .ok_or_else(|| error("rejected", "the provisioning message does not open"))?;
            let provision: sotto_client_core::linking::Provision =
                serde_json::from_slice(&plain)
                    .map_err(|_| error("rejected", "malformed provisioning message"))?;
            let identity_bytes = Zeroizing::new(
                hex::decode(&provision.identity)
                    .map_err(|_| error("rejected", "malformed identity"))?,
            );
            let identity = sotto_crypto::keys::IdentityKeyPair::from_bytes(&identity_bytes)
                .map_err(|_| error("rejected", "malformed identity"))?;
            let registration_id = random_u32(1..=16380);
            let login: LoginResponse = http
                .json(
                    "POST",
                    "/api/devices/link",
                    Some(&sotto_wire::LinkDeviceRequest {
                        code: provision.code.clone(),
                        registration_id,
                    }),
                )
                .await
                .map_err(|e| relay_error(&e))?;
            if login.user_id != provision.user_id {
                return Err(error("rejected", "linked to another account"));
            }
            let inner = new_device(
                store,
                identity_policy,
                &http,
                login,
                registration_id,
                Some(identity),
            )
            .await?;
            Ok(SottoClient { inner }.into())
        })
    }

    /// Existing device: links the new device that shows `code` (its `PendingLink.code`); the
    /// account identity goes to it end-to-end encrypted over the provisioning channel.
    #[wasm_bindgen(js_name = linkDevice, unchecked_return_type = "Promise<void>")]
    pub fn link_device(&self, code: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let bad = || {
                error(
                    "invalidArgument",
                    "a link code is address:key (64 hex digits)",
                )
            };
            let (address, key) = code.rsplit_once(':').ok_or_else(bad)?;
            let key: [u8; 32] = hex::decode(key)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(bad)?;
            let linking: sotto_wire::LinkingCode = inner
                .http
                .json("POST", "/api/devices/linking-codes", None::<&()>)
                .await
                .map_err(|e| relay_error(&e))?;
            let plain = inner.with_core(|c| {
                Zeroizing::new(
                    serde_json::to_vec(&sotto_client_core::linking::Provision {
                        user_id: c.user_id().to_owned(),
                        identity: hex::encode(&c.identity_key_pair().to_bytes()[..]),
                        code: linking.code.clone(),
                    })
                    .unwrap_or_default(),
                )
            });
            let sealed =
                sotto_client_core::linking::seal(&mut rand_core::OsRng, &key, address, &plain)
                    .ok_or_else(bad)?;
            inner
                .http
                .empty(
                    "PUT",
                    &format!("/api/provisioning/{}", segment(address)),
                    Some(&sotto_wire::ProvisioningMessage {
                        message: sotto_wire::Base64(sealed),
                    }),
                )
                .await
                .map_err(|e| relay_error(&e))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Deletes a profile's IndexedDB database (close its client first).
    #[wasm_bindgen(js_name = deleteStore, unchecked_return_type = "Promise<void>")]
    pub fn delete_store(name: String) -> Promise {
        promise(async move {
            IndexedDbBackend::delete(&name)
                .await
                .map_err(|e| error("store", e))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// This account's user id.
    #[wasm_bindgen(getter, js_name = userId)]
    pub fn user_id(&self) -> String {
        self.inner.with_core(|c| c.user_id().to_owned())
    }

    /// This device's id.
    #[wasm_bindgen(getter, js_name = deviceId)]
    pub fn device_id(&self) -> u32 {
        self.inner.with_core(|c| c.device_id())
    }

    /// The relay's URL.
    #[wasm_bindgen(getter, js_name = serverUrl)]
    pub fn server_url(&self) -> String {
        self.inner.http.base().to_owned()
    }

    /// Sets the one event listener (`null` to remove it). Events that happened before a
    /// listener was set are delivered to it first.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((event: SottoEvent) => void) | null")]
        listener: JsValue,
    ) {
        self.inner
            .set_listener(listener.dyn_into::<js_sys::Function>().ok());
    }

    fn send_and_wait(
        &self,
        queue: impl FnOnce(&mut Client, u64) -> Result<String, sotto_client_core::SendError>,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        let queued = if inner.stopped() {
            Err(error("stopped", "the client stopped"))
        } else {
            inner
                .with_core(|c| queue(c, now_ms()))
                .map_err(|e| match e {
                    sotto_client_core::SendError::InvalidText => {
                        error("invalidText", "a message is 1 to 1000 characters")
                    }
                    sotto_client_core::SendError::ToSelf => error(
                        "invalidRecipient",
                        "use another device of this account to talk to yourself",
                    ),
                    e => error("invalidRecipient", e),
                })
        };
        promise(async move {
            let id = queued?;
            let (tx, rx) = futures_oneshot();
            let id2 = id.clone();
            inner.add_waiter(
                id.clone(),
                Box::new(move |r| {
                    let _ = tx.call1(
                        &JsValue::UNDEFINED,
                        &match r {
                            Ok(ts) => to_js(&json!({"id": id2, "serverTimestamp": ts})),
                            Err(f) => send_failure(&f),
                        },
                    );
                }),
            );
            inner.drain().await;
            let v = wasm_bindgen_futures::JsFuture::from(rx).await?;
            if v.is_instance_of::<js_sys::Error>() {
                return Err(v);
            }
            Ok(v)
        })
    }

    /// Sends a text (1-1000 characters) to a user; resolves once the relay accepted it.
    #[wasm_bindgen(js_name = sendText, unchecked_return_type = "Promise<SentMessage>")]
    pub fn send_text(
        &self,
        #[wasm_bindgen(js_name = userId)] user_id: String,
        text: String,
    ) -> Promise {
        self.send_and_wait(move |c, now| c.send_text(now, &user_id, &text))
    }

    /// Sends a text to a group (one Sender-Key ciphertext for every member device).
    #[wasm_bindgen(js_name = sendGroupText, unchecked_return_type = "Promise<SentMessage>")]
    pub fn send_group_text(
        &self,
        #[wasm_bindgen(js_name = groupId)] group_id: String,
        text: String,
    ) -> Promise {
        self.send_and_wait(move |c, now| c.send_group_text(now, &group_id, &text))
    }

    /// Encrypts and uploads `data` (1 byte to 50 MB), then sends its key and digest to a user
    /// (`{ userId }`) or a group (`{ groupId }`) end to end.
    #[wasm_bindgen(js_name = sendAttachment, unchecked_return_type = "Promise<SentMessage>")]
    pub fn send_attachment(
        &self,
        #[wasm_bindgen(unchecked_param_type = "{ userId: string } | { groupId: string }")]
        to: JsValue,
        data: Uint8Array,
        #[wasm_bindgen(js_name = fileName)] file_name: String,
        #[wasm_bindgen(js_name = contentType)] content_type: String,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        let client = SottoClient {
            inner: Rc::clone(&self.inner),
        };
        promise(async move {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct To {
                user_id: Option<String>,
                group_id: Option<String>,
            }
            let to: To = options(&to)?;
            let data = data.to_vec();
            if data.is_empty() || data.len() > MAX_ATTACHMENT_BYTES {
                return Err(error("invalidArgument", "attachments are 1 byte to 50 MB"));
            }
            if file_name.is_empty() || file_name.chars().count() > 255 || content_type.len() > 255 {
                return Err(error(
                    "invalidArgument",
                    "file names are 1 to 255 characters",
                ));
            }
            if let Some(g) = &to.group_id {
                if !inner.with_core(|c| c.group(g).is_some_and(|g| g.active)) {
                    return Err(error("unknownGroup", "unknown group"));
                }
            }
            let pointer = upload(&inner.http, &data, &file_name, &content_type).await?;
            let p = match (to.user_id, to.group_id) {
                (Some(u), None) => {
                    client.send_and_wait(move |c, now| c.send_attachment(now, &u, pointer, None))
                }
                (None, Some(g)) => client
                    .send_and_wait(move |c, now| c.send_group_attachment(now, &g, pointer, None)),
                _ => {
                    return Err(error(
                        "invalidArgument",
                        "give exactly one of userId, groupId",
                    ))
                }
            };
            wasm_bindgen_futures::JsFuture::from(p).await
        })
    }

    /// Downloads, verifies and decrypts a received attachment.
    #[wasm_bindgen(js_name = downloadAttachment, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn download_attachment(
        &self,
        #[wasm_bindgen(unchecked_param_type = "AttachmentPointer")] pointer: JsValue,
    ) -> Promise {
        let http = self.inner.http.clone();
        promise(async move {
            let p: AttachmentPointer = options(&pointer)?;
            let bytes = download(&http, &p).await?;
            Ok(Uint8Array::from(&bytes[..]).into())
        })
    }

    /// Marks a conversation read: clears its unread count, sends the read receipt, syncs this
    /// account's other devices.
    #[wasm_bindgen(js_name = markRead, unchecked_return_type = "Promise<void>")]
    pub fn mark_read(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ConversationId")] conversation: JsValue,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let id = conversation_id(&conversation)?;
            inner.with_core(|c| c.mark_read(now_ms(), &id));
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Typing started or stopped, with a user (`{ userId }`) or in a group (`{ groupId }`).
    #[wasm_bindgen(js_name = setTyping, unchecked_return_type = "Promise<void>")]
    pub fn set_typing(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ConversationId")] conversation: JsValue,
        typing: bool,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let id = conversation_id(&conversation)?;
            let r = inner.with_core(|c| match &id {
                ConversationId::Direct(u) => c.set_typing(now_ms(), u, typing),
                ConversationId::Group(g) => c.set_group_typing(now_ms(), g, typing),
            });
            r.map_err(|_| {
                error(
                    "noSession",
                    "no session in this conversation yet (send a message first)",
                )
            })?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Conversations, newest first.
    #[wasm_bindgen(unchecked_return_type = "Conversation[]")]
    pub fn conversations(&self) -> JsValue {
        let list: Vec<_> = self
            .inner
            .with_core(|c| c.conversations())
            .iter()
            .map(events::conversation)
            .collect();
        to_js(&list)
    }

    /// One page of a conversation's history, newest first, older than `before` (a message's
    /// `sort`, or `nextCursor` of the previous page); `limit` 1-100.
    #[wasm_bindgen(unchecked_return_type = "Promise<HistoryPage>")]
    pub fn history(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ConversationId")] conversation: JsValue,
        before: Option<String>,
        limit: u32,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let id = conversation_id(&conversation)?;
            if !(1..=100).contains(&limit) {
                return Err(error("invalidArgument", "limit must be 1 to 100"));
            }
            let before = before.map(|b| b.parse::<u64>()).transpose().map_err(|_| {
                error(
                    "invalidArgument",
                    "before is a message's sort (decimal string)",
                )
            })?;
            let messages = runtime::history(&inner.store, &id, before, limit as usize)
                .await
                .map_err(store_error)?;
            let next = (messages.len() == limit as usize)
                .then(|| messages.last().map(|m| m.sort.to_string()))
                .flatten();
            let list: Vec<_> = messages.iter().map(events::message).collect();
            Ok(to_js(&json!({"messages": list, "nextCursor": next})))
        })
    }

    /// The safety number with a contact (60 digits), its QR payload (hex) and whether it is
    /// marked verified.
    #[wasm_bindgen(js_name = safetyNumber, unchecked_return_type = "SafetyNumber")]
    pub fn safety_number(
        &self,
        #[wasm_bindgen(js_name = userId)] user_id: String,
    ) -> Result<JsValue, JsValue> {
        let s = self
            .inner
            .with_core(|c| c.safety_number(&user_id))
            .map_err(|_| error("unknownContact", "no identity is known for this user yet"))?;
        Ok(to_js(&json!({
            "display": s.display, "qrPayload": hex::encode(&s.qr_payload), "verified": s.verified,
        })))
    }

    /// Marks a contact verified (after comparing safety numbers) or not.
    #[wasm_bindgen(js_name = setVerified, unchecked_return_type = "Promise<void>")]
    pub fn set_verified(
        &self,
        #[wasm_bindgen(js_name = userId)] user_id: String,
        verified: bool,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            inner
                .with_core(|c| c.set_verified(now_ms(), &user_id, verified))
                .map_err(|_| error("unknownContact", "no identity is known for this user yet"))?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Accepts a contact's changed identity.
    #[wasm_bindgen(js_name = approveIdentity, unchecked_return_type = "Promise<void>")]
    pub fn approve_identity(&self, #[wasm_bindgen(js_name = userId)] user_id: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            inner
                .with_core(|c| c.approve_identity(now_ms(), &user_id))
                .map_err(|e| match e {
                    sotto_client_core::IdentityError::NothingPending => {
                        error("nothingPending", "no identity change is waiting")
                    }
                    _ => error("unknownContact", "unknown contact"),
                })?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// This account's devices.
    #[wasm_bindgen(unchecked_return_type = "Promise<Device[]>")]
    pub fn devices(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let (user, me) = inner.with_core(|c| (c.user_id().to_owned(), c.device_id()));
            let list: DeviceList = inner
                .http
                .json(
                    "GET",
                    &format!("/api/users/{}/devices", segment(&user)),
                    None::<&()>,
                )
                .await
                .map_err(|e| relay_error(&e))?;
            let out: Vec<_> = list
                .devices
                .iter()
                .map(|d| {
                    json!({"deviceId": d.device_id, "createdAt": d.created_at,
                           "thisDevice": d.device_id == me})
                })
                .collect();
            Ok(to_js(&out))
        })
    }

    /// Removes one of this account's other devices (from the first device).
    #[wasm_bindgen(js_name = removeDevice, unchecked_return_type = "Promise<void>")]
    pub fn remove_device(&self, #[wasm_bindgen(js_name = deviceId)] device_id: u32) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            inner
                .http
                .empty("DELETE", &format!("/api/devices/{device_id}"), None::<&()>)
                .await
                .map_err(|e| match e.status() {
                    Some(404) => error("unknownDevice", "no such device"),
                    _ => relay_error(&e),
                })?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Sets this device away (or online again).
    #[wasm_bindgen(js_name = setAway, unchecked_return_type = "Promise<void>")]
    pub fn set_away(&self, away: bool) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let status = if away {
                PresenceStatus::Away
            } else {
                PresenceStatus::Online
            };
            inner
                .http
                .empty("PUT", "/api/presence", Some(&SetPresenceRequest { status }))
                .await
                .map_err(|e| relay_error(&e))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The account a username names (any case), with its username as registered. Errors:
    /// `invalidUsername`, `unknownUser`, `rateLimited`, `unreachable`.
    #[wasm_bindgen(js_name = lookupUser, unchecked_return_type = "Promise<UserProfile>")]
    pub fn lookup_user(&self, username: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let p: sotto_wire::UserProfile = inner
                .http
                .json(
                    "GET",
                    &format!("/api/usernames/{}", segment(&username)),
                    None::<&()>,
                )
                .await
                .map_err(|e| match e.status() {
                    Some(400) => error("invalidUsername", "usernames are 3-20 of A-Z, a-z, 0-9, _"),
                    Some(404) => error("unknownUser", "no user has this username"),
                    _ => relay_error(&e),
                })?;
            Ok(to_js(&json!({"userId": p.user_id, "username": p.username})))
        })
    }

    /// A user's username. Errors: `unknownUser`, `unreachable`.
    #[wasm_bindgen(unchecked_return_type = "Promise<UserProfile>")]
    pub fn profile(&self, #[wasm_bindgen(js_name = userId)] user_id: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let p: sotto_wire::UserProfile = inner
                .http
                .json(
                    "GET",
                    &format!("/api/users/{}/profile", segment(&user_id)),
                    None::<&()>,
                )
                .await
                .map_err(|e| match e.status() {
                    Some(400 | 404) => error("unknownUser", "unknown user"),
                    _ => relay_error(&e),
                })?;
            Ok(to_js(&json!({"userId": p.user_id, "username": p.username})))
        })
    }

    /// A user's presence (contacts and co-members only; others look offline).
    #[wasm_bindgen(unchecked_return_type = "Promise<Presence>")]
    pub fn presence(&self, #[wasm_bindgen(js_name = userId)] user_id: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let s: UserStatus = inner
                .http
                .json(
                    "GET",
                    &format!("/api/users/{}/status", segment(&user_id)),
                    None::<&()>,
                )
                .await
                .map_err(|e| match e.status() {
                    Some(404) => error("unknownUser", "unknown user"),
                    _ => relay_error(&e),
                })?;
            let status = match s.status {
                PresenceStatus::Online => "online",
                PresenceStatus::Away => "away",
                PresenceStatus::Offline => "offline",
            };
            Ok(to_js(
                &json!({"userId": s.user_id, "status": status, "lastSeen": s.last_seen}),
            ))
        })
    }

    /// Stops the client: closes the connection; the store stays.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            inner.close().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    // Groups

    /// Creates a group named `name` (1-100 characters) with these members; this account is its
    /// admin. The name and roster reach the members only end to end. Resolves to the group id.
    #[wasm_bindgen(js_name = createGroup, unchecked_return_type = "Promise<string>")]
    pub fn create_group(
        &self,
        #[wasm_bindgen(js_name = memberIds)] member_ids: Vec<String>,
        name: String,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let n = name.chars().count();
            if n == 0 || n > sotto_client_core::MAX_GROUP_NAME_CHARS {
                return Err(group_error_code("invalidName"));
            }
            let me = inner.with_core(|c| c.user_id().to_owned());
            if member_ids.len() >= sotto_client_core::MAX_GROUP_MEMBERS
                || member_ids
                    .iter()
                    .any(|m| m.is_empty() || m.len() > 64 || *m == me)
            {
                return Err(group_error_code("invalidMembers"));
            }
            let req = CreateGroupRequest {
                members: member_ids.clone(),
                // The relay stores this opaque blob; the name travels in the encrypted roster.
                metadata: Base64(Vec::new()),
            };
            let created: GroupCreated = inner
                .http
                .json("POST", "/api/groups", Some(&req))
                .await
                .map_err(|e| group_relay_error(&e))?;
            inner
                .with_core(|c| c.group_created(now_ms(), &created.group_id, &member_ids, &name))
                .map_err(group_error)?;
            inner.drain().await;
            Ok(JsValue::from_str(&created.group_id))
        })
    }

    /// Adds members (admins only).
    #[wasm_bindgen(js_name = addGroupMembers, unchecked_return_type = "Promise<void>")]
    pub fn add_group_members(
        &self,
        #[wasm_bindgen(js_name = groupId)] group_id: String,
        #[wasm_bindgen(js_name = userIds)] user_ids: Vec<String>,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            check_admin(&inner, &group_id)?;
            let req = JoinGroupRequest {
                user_ids: Some(user_ids.clone()),
                invite_token: None,
            };
            let _: GroupMembers = inner
                .http
                .json("POST", &group_path(&group_id, "/join"), Some(&req))
                .await
                .map_err(|e| group_relay_error(&e))?;
            inner
                .with_core(|c| c.group_members_added(now_ms(), &group_id, &user_ids))
                .map_err(group_error)?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Removes a member (admins only); this device's sender key is rotated, so the removed
    /// member cannot read what follows.
    #[wasm_bindgen(js_name = removeGroupMember, unchecked_return_type = "Promise<void>")]
    pub fn remove_group_member(
        &self,
        #[wasm_bindgen(js_name = groupId)] group_id: String,
        #[wasm_bindgen(js_name = userId)] user_id: String,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            check_admin(&inner, &group_id)?;
            let path = group_path(&group_id, &format!("/members/{}", segment(&user_id)));
            inner
                .http
                .empty("DELETE", &path, None::<&()>)
                .await
                .map_err(|e| group_relay_error(&e))?;
            inner
                .with_core(|c| c.group_member_removed(now_ms(), &group_id, &user_id))
                .map_err(group_error)?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Makes a member admin or plain member (admins only).
    #[wasm_bindgen(js_name = setGroupRole, unchecked_return_type = "Promise<void>")]
    pub fn set_group_role(
        &self,
        #[wasm_bindgen(js_name = groupId)] group_id: String,
        #[wasm_bindgen(js_name = userId)] user_id: String,
        admin: bool,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            check_admin(&inner, &group_id)?;
            let role = if admin {
                GroupRole::Admin
            } else {
                GroupRole::Member
            };
            let path = group_path(&group_id, &format!("/members/{}", segment(&user_id)));
            inner
                .http
                .empty("PUT", &path, Some(&SetRoleRequest { role }))
                .await
                .map_err(|e| group_relay_error(&e))?;
            inner
                .with_core(|c| c.group_role_set(now_ms(), &group_id, &user_id, admin))
                .map_err(group_error)?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Renames the group (admins only); the name travels only end to end.
    #[wasm_bindgen(js_name = renameGroup, unchecked_return_type = "Promise<void>")]
    pub fn rename_group(
        &self,
        #[wasm_bindgen(js_name = groupId)] group_id: String,
        name: String,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            inner
                .with_core(|c| c.rename_group(now_ms(), &group_id, &name))
                .map_err(group_error)?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Leaves the group.
    #[wasm_bindgen(js_name = leaveGroup, unchecked_return_type = "Promise<void>")]
    pub fn leave_group(&self, #[wasm_bindgen(js_name = groupId)] group_id: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            if !inner.with_core(|c| c.group(&group_id).is_some_and(|g| g.active)) {
                return Err(group_error_code("unknownGroup"));
            }
            inner
                .http
                .empty("DELETE", &group_path(&group_id, "/leave"), None::<&()>)
                .await
                .map_err(|e| group_relay_error(&e))?;
            inner
                .with_core(|c| c.group_left(now_ms(), &group_id))
                .map_err(group_error)?;
            inner.drain().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Pending invitations (someone who never wrote to this account added it to a group).
    #[wasm_bindgen(js_name = groupInvitations, unchecked_return_type = "Promise<GroupInvitation[]>")]
    pub fn group_invitations(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let list: GroupInvitations = inner
                .http
                .json("GET", "/api/groups/invitations", None::<&()>)
                .await
                .map_err(|e| group_relay_error(&e))?;
            let out: Vec<_> = list
                .invitations
                .iter()
                .map(|i| {
                    json!({"groupId": i.group_id, "fromUserId": i.inviter_user_id,
                           "invitedAt": i.invited_at})
                })
                .collect();
            Ok(to_js(&out))
        })
    }

    /// Accepts a pending invitation: the relay starts routing the group's messages here; the
    /// roster and keys come end to end from the group's admins and members.
    #[wasm_bindgen(js_name = acceptGroupInvitation, unchecked_return_type = "Promise<void>")]
    pub fn accept_group_invitation(
        &self,
        #[wasm_bindgen(js_name = groupId)] group_id: String,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let _: GroupMembers = inner
                .http
                .json("POST", &group_path(&group_id, "/invitation"), None::<&()>)
                .await
                .map_err(|e| group_relay_error(&e))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The groups this device knows, with their verified rosters.
    #[wasm_bindgen(unchecked_return_type = "Group[]")]
    pub fn groups(&self) -> JsValue {
        to_js(&self.inner.with_core(|c| c.groups()))
    }

    /// One group, or `null`.
    #[wasm_bindgen(unchecked_return_type = "Group | null")]
    pub fn group(&self, #[wasm_bindgen(js_name = groupId)] group_id: String) -> JsValue {
        match self.inner.with_core(|c| c.group(&group_id)) {
            Some(g) => to_js(&g),
            None => JsValue::NULL,
        }
    }
}

/// `[a-zA-Z0-9_-]` of a group id in a path.
fn group_path(group_id: &str, rest: &str) -> String {
    format!("/api/groups/{}{rest}", segment(group_id))
}

fn group_error_code(code: &str) -> JsValue {
    let text = match code {
        "unknownGroup" => "unknown group",
        "notAdmin" => "only a group admin can do this",
        "invalidName" => "a group name must be 1 to 100 characters",
        "invalidMembers" => "invalid member list",
        "unknownUser" => "unknown user",
        "unknownMember" => "not a member of this group",
        "groupFull" => "the group is full",
        "lastAdmin" => "the last admin cannot step down",
        _ => "the relay refused",
    };
    error(code, text)
}

fn group_error(e: sotto_client_core::GroupError) -> JsValue {
    use sotto_client_core::GroupError as G;
    group_error_code(match e {
        G::NotAdmin => "notAdmin",
        G::InvalidName => "invalidName",
        G::InvalidMembers => "invalidMembers",
        G::UnknownMember => "unknownMember",
        _ => "unknownGroup",
    })
}

fn group_relay_error(e: &CallError) -> JsValue {
    match e.code().as_deref() {
        Some("unknown_user") => group_error_code("unknownUser"),
        Some("unknown_group" | "unknown_invitation") => group_error_code("unknownGroup"),
        Some("unknown_member") => group_error_code("unknownMember"),
        Some("not_admin") => group_error_code("notAdmin"),
        Some("group_full") => group_error_code("groupFull"),
        Some("last_admin") => group_error_code("lastAdmin"),
        _ if e.status() == Some(404) => group_error_code("unknownGroup"),
        _ => relay_error(e),
    }
}

fn check_admin(inner: &Inner, group_id: &str) -> Result<(), JsValue> {
    inner.with_core(|c| {
        let me = c.user_id().to_owned();
        let g = c
            .group(group_id)
            .filter(|g| g.active)
            .ok_or_else(|| group_error_code("unknownGroup"))?;
        if !g.members.iter().any(|m| m.user_id == me && m.admin) {
            return Err(group_error_code("notAdmin"));
        }
        Ok(())
    })
}

/// A Promise and the function that resolves it.
fn futures_oneshot() -> (js_sys::Function, Promise) {
    let mut resolve = None;
    let p = Promise::new(&mut |res, _| resolve = Some(res));
    (
        resolve.unwrap_or_else(|| js_sys::Function::new_no_args("")),
        p,
    )
}

/// Encrypts `data` chunk by chunk and uploads the ciphertext; the pointer for the message.
async fn upload(
    http: &Http,
    data: &[u8],
    file_name: &str,
    content_type: &str,
) -> Result<AttachmentPointer, JsValue> {
    let key = AttachmentKey::generate(&mut rand_core::OsRng);
    let mut encryptor = Encryptor::new(&key, &mut rand_core::OsRng);
    let mut sealed =
        Vec::with_capacity(usize::try_from(ciphertext_len(data.len() as u64)).unwrap_or(0));
    let mut out = Vec::with_capacity(CHUNK_SIZE + 64);
    for chunk in data.chunks(CHUNK_SIZE) {
        encryptor
            .push(chunk, &mut out)
            .map_err(|_| error("invalidArgument", "attachments are 1 byte to 50 MB"))?;
        sealed.append(&mut out);
    }
    let digest = encryptor
        .finish(&mut out)
        .map_err(|_| error("invalidArgument", "attachments are 1 byte to 50 MB"))?;
    sealed.append(&mut out);
    let answer = http
        .raw(
            "POST",
            "/api/attachments",
            Some((&sealed, "application/octet-stream")),
        )
        .await
        .map_err(|e| match e.status() {
            Some(413) => error("tooLarge", e.describe()),
            _ => relay_error(&e),
        })?;
    let uploaded: sotto_wire::AttachmentUploaded = serde_json::from_slice(&answer.body)
        .map_err(|_| error("rejected", "the relay's answer is malformed"))?;
    Ok(AttachmentPointer {
        attachment_id: uploaded.attachment_id,
        key: hex::encode(&key.to_bytes()[..]),
        digest: hex::encode(digest.0),
        size: data.len() as u64,
        file_name: file_name.to_owned(),
        content_type: content_type.to_owned(),
    })
}

/// Downloads an attachment and returns its plaintext once it verified against the digest.
async fn download(http: &Http, p: &AttachmentPointer) -> Result<Vec<u8>, JsValue> {
    let corrupt = || error("corrupt", "the attachment failed verification");
    let key: [u8; 32] = hex::decode(&p.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(corrupt)?;
    let digest: [u8; 32] = hex::decode(&p.digest)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(corrupt)?;
    let key = AttachmentKey::from_bytes(&key);
    let answer = http
        .raw(
            "GET",
            &format!("/api/attachments/{}", segment(&p.attachment_id)),
            None,
        )
        .await
        .map_err(|e| match e.status() {
            Some(404) => error("unknownAttachment", "the attachment is gone from the relay"),
            _ => relay_error(&e),
        })?;
    if answer.body.len() as u64 > ciphertext_len(MAX_ATTACHMENT_BYTES as u64) {
        return Err(corrupt());
    }
    let mut decryptor = Decryptor::new(&key, &AttachmentDigest(digest));
    let mut plain = Vec::with_capacity(answer.body.len());
    let mut out = Vec::with_capacity(CHUNK_SIZE);
    for chunk in answer.body.chunks(CHUNK_SIZE) {
        decryptor.push(chunk, &mut out).map_err(|_| corrupt())?;
        plain.append(&mut out);
    }
    decryptor.finish(&mut out).map_err(|_| corrupt())?;
    plain.append(&mut out);
    Ok(plain)
}
