//! The client state machine: one account on one device.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::fingerprint::SafetyNumber;
use sotto_crypto::keys::{
    IdentityKey, IdentityKeyPair, KemPreKeyPublic, OneTimePreKeyPublic, PreKeyBundle,
    SignedPreKeyPublic,
};
use sotto_crypto::ratchet::DecryptError;
use sotto_crypto::session::SessionRecord;
use sotto_wire::{
    Base64, DeviceBundle, Envelope, EnvelopeKind, EphemeralEnvelope, EphemeralMessage,
    EphemeralRequest, KeysUpload, MismatchedDevices, OutgoingMessage, PreKeyBundles,
    SendMessageRequest, StaleDevices, UserStatus,
};
use zeroize::Zeroizing;

use crate::keys::{PreKeys, LOW_WATER, ROTATE_AFTER_MS};
use crate::model::{
    AttachmentPointer, Conversation, ConversationId, Event, Message, MessagePreview, MessageStatus,
    Receipt, ReceiptKind, SafetyNumberInfo, SendFailure,
};
use crate::payload::{check_text, Body, Payload, VERSION};
use crate::requests::{RelayAnswer, RelayCall, RelayFailure, Request, RequestId};
use crate::store::{tables, StoreOp};
use crate::trust::{self, DecryptFailure, InitiateFailure};

mod groups;
pub use groups::{
    GroupError, MAX_GROUPS, MAX_GROUP_AVATAR_BYTES, MAX_GROUP_DESCRIPTION_CHARS, MAX_GROUP_MEMBERS,
    MAX_GROUP_NAME_CHARS,
};

/// How a send is retried after the relay corrects the device list, before giving up.
const MAX_SEND_ATTEMPTS: u32 = 5;
/// Wait before retrying after the relay was unreachable or failed (ms).
const RETRY_BACKOFF_MS: u64 = 1_000;
/// Typing indicators stop by themselves after this long (ms).
pub const TYPING_TIMEOUT_MS: u64 = 5_000;
/// An incoming message's timestamp may be at most this far ahead of the relay's (ms).
const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// Most unread ids a conversation remembers for its read receipt.
const MAX_UNREAD_IDS: usize = 500;
/// Ask the relay for key counts after this many one-time keys were consumed.
const CONSUMED_BEFORE_COUNT: u32 = 5;

/// What to do when a contact's identity key changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IdentityPolicy {
    /// Hold messages to and from the new identity until the app calls
    /// [`Client::approve_identity`] (the default: a relay cannot swap keys silently).
    #[default]
    RequireApproval,
    /// Accept the new identity, tell the app ([`Event::IdentityChanged`]) and carry on.
    AcceptAndNotify,
}

/// Client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Identity change handling.
    pub identity_policy: IdentityPolicy,
    /// Most sends awaiting the relay's answer at once.
    pub max_sends_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            identity_policy: IdentityPolicy::RequireApproval,
            max_sends_in_flight: 64,
        }
    }
}

/// The account a new client is created for (after register + login, or linking).
pub struct NewAccount {
    /// The relay's user id.
    pub user_id: String,
    /// This device's id.
    pub device_id: u32,
    /// The registration id this device logged in with.
    pub registration_id: u32,
    /// The account identity when linking a device (from the provisioning message); `None`
    /// generates a new one (first device).
    pub identity: Option<IdentityKeyPair>,
}

impl core::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            user_id,
            device_id,
            registration_id,
            identity: _,
        } = self;
        f.debug_struct("NewAccount")
            .field("user_id", user_id)
            .field("device_id", device_id)
            .field("registration_id", registration_id)
            .finish_non_exhaustive()
    }
}

/// Why a client could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The user id or device id is not a valid address.
    #[error("invalid account address")]
    InvalidAddress,
}

/// Why stored state could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The store holds no account.
    #[error("the store holds no account")]
    NoAccount,
    /// A row of this table could not be decoded.
    #[error("a stored {0} row is corrupt")]
    Corrupt(&'static str),
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Text must be 1-1000 characters.
    #[error("text must be 1 to 1000 characters")]
    InvalidText,
    /// Not a valid user id.
    #[error("invalid recipient")]
    InvalidRecipient,
    /// Sending to one's own account is not a conversation.
    #[error("cannot send to yourself")]
    ToSelf,
}

/// Why typing could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypingError {
    /// No session with the contact yet (send a message first).
    #[error("no session with this contact yet")]
    NoSession,
}

/// Why an identity operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Nothing is known about this user.
    #[error("unknown contact")]
    UnknownContact,
    /// No identity change awaits approval.
    #[error("no identity change to approve")]
    NothingPending,
}

#[derive(Debug, Default)]
struct PeerDevice {
    registration_id: Option<u32>,
    session: SessionRecord,
}

#[derive(Default)]
struct Contact {
    identity: Option<IdentityKey>,
    verified: bool,
    pending: Option<IdentityKey>,
    devices: BTreeMap<u32, PeerDevice>,
    fetched: bool,
}

impl core::fmt::Debug for Contact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            identity,
            verified,
            pending,
            devices,
            fetched,
        } = self;
        f.debug_struct("Contact")
            .field("identity", &identity.is_some())
            .field("verified", verified)
            .field("pending", &pending.is_some())
            .field("devices", &devices.keys().collect::<Vec<_>>())
            .field("fetched", fetched)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutboxItem {
    seq: u64,
    peer: String,
    id: String,
    sent_at: u64,
    body: Body,
    /// The history row (none for receipts).
    message: Option<Message>,
    #[serde(default)]
    attempts: u32,
    #[serde(skip)]
    in_flight: bool,
    #[serde(skip)]
    not_before: u64,
    /// The group this item belongs to (a group message, or a 1:1 change/sender key about it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// A Sender-Key message to the whole group (rather than a 1:1 item).
    #[serde(default)]
    fan_out: bool,
    /// The group message's ciphertext, sealed once so retries repeat the same request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<Base64>,
}

#[derive(Debug, Clone)]
enum Pending {
    UploadKeys(KeysUpload),
    KeyCount,
    Fetch { user: String, device: Option<u32> },
    Devices { user: String },
    Send { seq: u64 },
    Ephemeral,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountRow {
    user_id: String,
    device_id: u32,
    registration_id: u32,
    identity: Base64,
    counter: u64,
    next_prekey_id: u32,
    rotated_at: u64,
    outbox_seq: u64,
    #[serde(default)]
    last_sent_at: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactRow {
    user_id: String,
    identity: Option<Base64>,
    verified: bool,
    pending: Option<Base64>,
    fetched: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRow {
    user_id: String,
    device_id: u32,
    registration_id: Option<u32>,
    record: Base64,
}

/// One account on one device: sessions, contacts, conversations and the outbox, driven by what
/// the runtime pushes in (`handle_*`) and drained by what it pulls out (`poll_*`, `take_*`).
pub struct Client {
    config: Config,
    user_id: String,
    device_id: u32,
    registration_id: u32,
    identity: IdentityKeyPair,
    local: DeviceAddress,
    prekeys: PreKeys,
    contacts: HashMap<String, Contact>,
    conversations: HashMap<ConversationId, Conversation>,
    seen: HashSet<[u8; 32]>,
    outbox: BTreeMap<u64, OutboxItem>,
    outbox_seq: u64,
    quarantine: BTreeMap<u64, Envelope>,
    groups: BTreeMap<String, groups::Group>,
    sender_keys: HashMap<(String, String, u32), sotto_crypto::sender_key::SenderKeyRecord>,
    /// Sender-key requests sent and answered lately (rate limits; see `groups`).
    key_requests: groups::KeyRequests,
    pending: HashMap<RequestId, Pending>,
    fetching: BTreeSet<(String, Option<u32>)>,
    key_count_pending: bool,
    consumed_since_count: u32,
    upload_retry: Option<(KeysUpload, u64)>,
    typing: BTreeMap<(ConversationId, String), u64>,
    counter: u64,
    last_sent_at: u64,
    account_dirty: bool,
    next_request: u64,
    rng: ChaCha20Rng,
    writes: Vec<StoreOp>,
    requests: VecDeque<Request>,
    events: VecDeque<Event>,
    acks: Vec<u64>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("contacts", &self.contacts.len())
            .field("conversations", &self.conversations.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

fn seen_key(user: &str, id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sotto-seen\0");
    h.update(user.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    h.finalize().into()
}

fn json<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(serde_json::to_vec(value).unwrap_or_default())
}

fn session_partition(user: &str, device: u32) -> Vec<u8> {
    let mut p = user.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&device.to_be_bytes());
    p
}

fn receipt_sort(user: &str, device: u32, kind: ReceiptKind) -> u64 {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update(device.to_be_bytes());
    h.update([kind as u8]);
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(b) >> 1
}

/// Parses one device's bundle from the relay; `None` if any part is malformed.
fn parse_bundle(identity: &IdentityKey, d: &DeviceBundle) -> Option<PreKeyBundle> {
    let spk = SignedPreKeyPublic::new(
        d.signed_pre_key.key_id,
        d.signed_pre_key.public_key.as_bytes(),
        d.signed_pre_key.signature.as_bytes(),
    )
    .ok()?;
    let otk = match &d.pre_key {
        Some(k) => Some(OneTimePreKeyPublic::new(k.key_id, k.public_key.as_bytes()).ok()?),
        None => None,
    };
    let kem = d.kem_pre_key.as_ref()?;
    let kem = KemPreKeyPublic::new(
        kem.key_id,
        kem.public_key.as_bytes(),
        kem.signature.as_bytes(),
    )
    .ok()?;
    Some(PreKeyBundle {
        identity_key: identity.clone(),
        signed_prekey: spk,
        one_time_prekey: otk,
        kem_prekey: kem,
    })
}

impl Client {
    /// A new device: generates prekeys (and the identity, unless linking) and queues their
    /// upload. `seed` seeds the client's RNG (take it from the OS RNG; tests pass fixed seeds).
    pub fn create(
        account: NewAccount,
        config: Config,
        now_ms: u64,
        seed: [u8; 32],
    ) -> Result<Self, CreateError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let NewAccount {
            user_id,
            device_id,
            registration_id,
            identity,
        } = account;
        let local = DeviceAddress::new(user_id.clone(), device_id)
            .map_err(|_| CreateError::InvalidAddress)?;
        let identity = identity.unwrap_or_else(|| IdentityKeyPair::generate(&mut rng));
        let mut client = Self::empty(
            config,
            user_id,
            device_id,
            registration_id,
            identity,
            local,
            rng,
        );
        let mut upload = KeysUpload {
            identity_key: Some(Base64(client.identity.public().to_bytes())),
            ..KeysUpload::default()
        };
        let mut ops = Vec::new();
        client.prekeys.rotate(
            &client.identity,
            now_ms,
            &mut client.rng,
            &mut upload,
            &mut ops,
        );
        client
            .prekeys
            .more_one_time(&mut client.rng, &mut upload, &mut ops);
        client
            .prekeys
            .more_kem(&client.identity, &mut client.rng, &mut upload, &mut ops);
        client.writes.extend(ops);
        client.account_dirty = true;
        client.write_contact(&client.user_id.clone());
        client.request(
            RelayCall::UploadKeys(upload.clone()),
            Pending::UploadKeys(upload),
        );
        client.finish();
        Ok(client)
    }

    fn empty(
        config: Config,
        user_id: String,
        device_id: u32,
        registration_id: u32,
        identity: IdentityKeyPair,
        local: DeviceAddress,
        rng: ChaCha20Rng,
    ) -> Self {
        let mut contacts = HashMap::new();
        contacts.insert(
            user_id.clone(),
            Contact {
                identity: Some(identity.public()),
                verified: true,
                ..Contact::default()
            },
        );
        Self {
            config,
            user_id,
            device_id,
            registration_id,
            identity,
            local,
            prekeys: PreKeys::default(),
            contacts,
            conversations: HashMap::new(),
            seen: HashSet::new(),
            outbox: BTreeMap::new(),
            outbox_seq: 0,
            quarantine: BTreeMap::new(),
            groups: BTreeMap::new(),
            sender_keys: HashMap::new(),
            key_requests: groups::KeyRequests::default(),
            pending: HashMap::new(),
            fetching: BTreeSet::new(),
            key_count_pending: false,
            consumed_since_count: 0,
            upload_retry: None,
            typing: BTreeMap::new(),
            counter: 0,
            last_sent_at: 0,
            account_dirty: false,
            next_request: 0,
            rng,
            writes: Vec::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            acks: Vec::new(),
        }
    }

    /// Loads a client from the rows of [`tables::RESTORED`](crate::store::tables::RESTORED).
    /// Outbox items are sent again (the relay drops duplicates by `clientMessageId`).
    pub fn restore<'a>(
        rows: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        config: Config,
        seed: [u8; 32],
    ) -> Result<Self, RestoreError> {
        let mut account = None;
        let mut rest = Vec::new();
        for (table, value) in rows {
            if table == tables::ACCOUNT {
                let row: AccountRow = serde_json::from_slice(value)
                    .map_err(|_| RestoreError::Corrupt(tables::ACCOUNT))?;
                account = Some(row);
            } else {
                rest.push((table, value));
            }
        }
        let row = account.ok_or(RestoreError::NoAccount)?;
        let identity = IdentityKeyPair::from_bytes(row.identity.as_bytes())
            .map_err(|_| RestoreError::Corrupt(tables::ACCOUNT))?;
        let local = DeviceAddress::new(row.user_id.clone(), row.device_id)
            .map_err(|_| RestoreError::Corrupt(tables::ACCOUNT))?;
        let mut c = Self::empty(
            config,
            row.user_id,
            row.device_id,
            row.registration_id,
            identity,
            local,
            ChaCha20Rng::from_seed(seed),
        );
        c.counter = row.counter;
        c.outbox_seq = row.outbox_seq;
        c.last_sent_at = row.last_sent_at;
        c.prekeys.rotated_at = row.rotated_at;
        c.prekeys.next_id = row.next_prekey_id;
        for (table, value) in rest {
            let corrupt = RestoreError::Corrupt(
                tables::RESTORED
                    .iter()
                    .copied()
                    .find(|t| *t == table)
                    .unwrap_or("unknown"),
            );
            match table {
                tables::PREKEYS if !c.prekeys.restore_row(value) => return Err(corrupt),
                tables::CONTACTS => {
                    let r: ContactRow =
                        serde_json::from_slice(value).map_err(|_| corrupt.clone())?;
                    let identity = match r.identity {
                        Some(k) => Some(
                            IdentityKey::from_bytes(k.as_bytes()).map_err(|_| corrupt.clone())?,
                        ),
                        None => None,
                    };
                    let pending = match r.pending {
                        Some(k) => Some(
                            IdentityKey::from_bytes(k.as_bytes()).map_err(|_| corrupt.clone())?,
                        ),
                        None => None,
                    };
                    let own = r.user_id == c.user_id;
                    let contact = c.contacts.entry(r.user_id).or_default();
                    if !own {
                        contact.identity = identity;
                        contact.verified = r.verified;
                        contact.pending = pending;
                    }
                    contact.fetched = r.fetched;
                }
                tables::SESSIONS => {
                    let r: SessionRow =
                        serde_json::from_slice(value).map_err(|_| corrupt.clone())?;
                    let session = SessionRecord::from_bytes(r.record.as_bytes())
                        .map_err(|_| corrupt.clone())?;
                    c.contacts.entry(r.user_id).or_default().devices.insert(
                        r.device_id,
                        PeerDevice {
                            registration_id: r.registration_id,
                            session,
                        },
                    );
                }
                tables::CONVERSATIONS => {
                    let conv: Conversation =
                        serde_json::from_slice(value).map_err(|_| corrupt.clone())?;
                    c.conversations.insert(conv.id.clone(), conv);
                }
                tables::SEEN => {
                    let key: [u8; 32] = value.try_into().map_err(|_| corrupt.clone())?;
                    c.seen.insert(key);
                }
                tables::OUTBOX => {
                    let item: OutboxItem =
                        serde_json::from_slice(value).map_err(|_| corrupt.clone())?;
                    c.outbox.insert(item.seq, item);
                }
                tables::QUARANTINE => {
                    let env: Envelope =
                        serde_json::from_slice(value).map_err(|_| corrupt.clone())?;
                    c.quarantine.insert(env.seq, env);
                }
                tables::GROUPS | tables::SENDER_KEYS if !c.restore_group_row(table, value) => {
                    return Err(corrupt)
                }
                _ => {}
            }
        }
        Ok(c)
    }

    // ----------------------------------------------------------------------------------------
    // Outputs

    /// The next request for the relay.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event for the app.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The store changes made so far; commit them all (atomically) before taking the acks.
    pub fn take_writes(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.writes)
    }

    /// Envelope sequence numbers to ack — only once the writes taken before are committed.
    pub fn take_acks(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acks)
    }

    /// When [`Client::handle_timeout`] next has something to do (ms), if anything.
    pub fn poll_timeout(&self) -> Option<u64> {
        let outbox = self
            .outbox
            .values()
            .filter(|i| !i.in_flight && i.not_before > 0)
            .map(|i| i.not_before)
            .min();
        let typing = self.typing.values().copied().min();
        let upload = self.upload_retry.as_ref().map(|(_, at)| *at);
        [outbox, typing, upload].into_iter().flatten().min()
    }

    // ----------------------------------------------------------------------------------------
    // Who we are

    /// This account's user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// This device's registration id.
    pub fn registration_id(&self) -> u32 {
        self.registration_id
    }

    /// The account's identity key pair, for linking a new device (the caller encrypts it for the
    /// provisioning channel and must not keep it).
    pub fn identity_key_pair(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// A key upload that names the identity the keys are signed by. Every upload carries it, so
    /// a replenishment that overtakes the device's first upload on the way to the relay (they are
    /// independent requests) is still verifiable there, instead of being refused.
    fn keys_upload(&self) -> KeysUpload {
        KeysUpload {
            identity_key: Some(Base64(self.identity.public().to_bytes())),
            ..KeysUpload::default()
        }
    }

    /// Conversations, newest first.
    pub fn conversations(&self) -> Vec<Conversation> {
        let mut list: Vec<Conversation> = self.conversations.values().cloned().collect();
        list.sort_by_key(|c| std::cmp::Reverse(c.last_sort));
        list
    }

    /// One conversation.
    pub fn conversation(&self, id: &ConversationId) -> Option<Conversation> {
        self.conversations.get(id).cloned()
    }

    /// Devices of a contact this device holds a session with.
    pub fn contact_devices(&self, user_id: &str) -> Vec<u32> {
        self.contacts
            .get(user_id)
            .map(|c| c.devices.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The pinned identity key of a contact (encoded), if any.
    pub fn pinned_identity(&self, user_id: &str) -> Option<Vec<u8>> {
        self.contacts
            .get(user_id)
            .and_then(|c| c.identity.as_ref())
            .map(IdentityKey::to_bytes)
    }

    /// Whether a prekey upload is still under way or waiting for a retry.
    pub fn uploads_pending(&self) -> bool {
        self.upload_retry.is_some()
            || self
                .pending
                .values()
                .any(|p| matches!(p, Pending::UploadKeys(_)))
    }

    /// One-time prekey secrets held locally: (X25519, ML-KEM).
    pub fn local_prekey_counts(&self) -> (usize, usize) {
        self.prekeys.local_counts()
    }

    // ----------------------------------------------------------------------------------------
    // App operations

    /// Queues a text message to a user; returns its id. Sends follow as requests.
    pub fn send_text(&mut self, now_ms: u64, to: &str, text: &str) -> Result<String, SendError> {
        check_text(text).map_err(|_| SendError::InvalidText)?;
        self.queue_direct(
            now_ms,
            to,
            Body::Text {
                text: text.to_owned(),
            },
        )
    }

    /// Queues an attachment message (the blob is already uploaded); returns its id.
    pub fn send_attachment(
        &mut self,
        now_ms: u64,
        to: &str,
        attachment: AttachmentPointer,
        caption: Option<String>,
    ) -> Result<String, SendError> {
        if let Some(c) = &caption {
            check_text(c).map_err(|_| SendError::InvalidText)?;
        }
        self.queue_direct(
            now_ms,
            to,
            Body::Attachment {
                attachment,
                caption,
            },
        )
    }

    fn queue_direct(&mut self, now_ms: u64, to: &str, body: Body) -> Result<String, SendError> {
        if to == self.user_id {
            return Err(SendError::ToSelf);
        }
        DeviceAddress::new(to, 1).map_err(|_| SendError::InvalidRecipient)?;
        Ok(self.queue_message(now_ms, ConversationId::Direct(to.to_owned()), body))
    }

    /// Stores an outgoing text or attachment as pending and queues it for its conversation.
    fn queue_message(&mut self, now_ms: u64, conversation: ConversationId, body: Body) -> String {
        let id = self.new_id();
        // Strictly increasing per device, so two messages in one millisecond keep their order
        // on every receiver (history sorts by the sender's clock).
        let now_ms = now_ms.max(self.last_sent_at + 1);
        self.last_sent_at = now_ms;
        self.account_dirty = true;
        let sort = self.next_sort(now_ms);
        let (text, attachment) = match &body {
            Body::Text { text } => (Some(text.clone()), None),
            Body::Attachment {
                attachment,
                caption,
            } => (caption.clone(), Some(attachment.clone())),
            _ => (None, None),
        };
        let message = Message {
            id: id.clone(),
            conversation: conversation.clone(),
            sender_user_id: self.user_id.clone(),
            sender_device_id: self.device_id,
            outgoing: true,
            sent_at: now_ms,
            server_timestamp: None,
            text,
            attachment,
            status: MessageStatus::Pending,
            sort,
        };
        self.store_message(&message);
        self.touch_conversation(&message, false);
        match conversation {
            ConversationId::Direct(to) => {
                self.enqueue_item(now_ms, &to, id.clone(), body, Some(message), None)
            }
            // One Sender-Key message to the whole group.
            ConversationId::Group(group) => {
                self.enqueue_item(now_ms, "", id.clone(), body, Some(message), Some(group))
            }
        }
        self.pump(now_ms);
        self.finish();
        id
    }

    fn enqueue(
        &mut self,
        now_ms: u64,
        peer: &str,
        id: String,
        body: Body,
        message: Option<Message>,
    ) {
        self.enqueue_item(now_ms, peer, id, body, message, None);
    }

    /// Queues one outbox item: 1:1 to `peer`, or (`peer` empty, a message, `fan_out`) a
    /// Sender-Key message to `group`. A 1:1 item with `group` set is about that group.
    fn enqueue_item(
        &mut self,
        now_ms: u64,
        peer: &str,
        id: String,
        body: Body,
        message: Option<Message>,
        group: Option<String>,
    ) {
        self.outbox_seq += 1;
        self.account_dirty = true;
        let fan_out = peer.is_empty() && group.is_some();
        let item = OutboxItem {
            seq: self.outbox_seq,
            peer: peer.to_owned(),
            id,
            sent_at: now_ms,
            body,
            message,
            attempts: 0,
            in_flight: false,
            not_before: 0,
            group,
            fan_out,
            sealed: None,
        };
        self.put_outbox(&item);
        self.outbox.insert(item.seq, item);
    }

    /// Marks a conversation read: clears its unread count here, tells the senders (end to end)
    /// and this account's other devices.
    pub fn mark_read(&mut self, now_ms: u64, conversation: &ConversationId) {
        let Some(conv) = self.conversations.get_mut(conversation) else {
            return;
        };
        if conv.unread_count == 0 && conv.unread_ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut conv.unread_ids);
        conv.unread_count = 0;
        let conv = conv.clone();
        self.put_conversation(&conv);
        self.events.push_back(Event::ConversationUpdated(conv));
        match conversation {
            ConversationId::Direct(peer) if !ids.is_empty() => {
                let id = self.new_id();
                let peer = peer.clone();
                self.enqueue(now_ms, &peer, id, Body::Read { ids }, None);
            }
            ConversationId::Group(group) if !ids.is_empty() => {
                // One receipt per sender (1:1, naming the group); own devices get the copies.
                let mut by_sender: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
                for (sender, id) in ids {
                    by_sender
                        .entry(sender.clone())
                        .or_default()
                        .push((sender, id));
                }
                let group = group.clone();
                for (sender, ids) in by_sender {
                    if sender == self.user_id {
                        continue;
                    }
                    let id = self.new_id();
                    self.enqueue_group_item(now_ms, &sender, id, Body::Read { ids }, &group);
                }
            }
            _ => {}
        }
        self.pump(now_ms);
        self.finish();
    }

    /// Tells a contact's devices that this user started or stopped typing (never stored; only
    /// devices online now see it).
    pub fn set_typing(&mut self, now_ms: u64, to: &str, typing: bool) -> Result<(), TypingError> {
        let payload = Payload {
            v: VERSION,
            id: self.new_id(),
            ts: now_ms,
            sync_to: None,
            group: None,
            body: Body::Typing { typing },
        }
        .encode();
        let Some(contact) = self.contacts.get_mut(to) else {
            return Err(TypingError::NoSession);
        };
        let mut messages = Vec::new();
        let mut touched = Vec::new();
        for (device, d) in contact.devices.iter_mut() {
            if !trust::has_usable_session(&d.session, now_ms) {
                continue;
            }
            if let Ok(ct) = trust::encrypt(&mut d.session, &payload, now_ms, &mut self.rng) {
                messages.push(EphemeralMessage {
                    device_id: *device,
                    content: Base64(ct),
                });
                touched.push(*device);
            }
        }
        if messages.is_empty() {
            return Err(TypingError::NoSession);
        }
        for d in touched {
            self.write_session(to, d);
        }
        self.request(
            RelayCall::Ephemeral(EphemeralRequest {
                recipient_id: Some(to.to_owned()),
                group_id: None,
                timestamp: now_ms,
                messages,
                content: None,
            }),
            Pending::Ephemeral,
        );
        self.finish();
        Ok(())
    }

    /// Accepts a contact's changed identity: pins it (unverified), starts new sessions, and
    /// processes the envelopes held meanwhile.
    pub fn approve_identity(&mut self, now_ms: u64, user_id: &str) -> Result<(), IdentityError> {
        let contact = self
            .contacts
            .get_mut(user_id)
            .ok_or(IdentityError::UnknownContact)?;
        let new = contact
            .pending
            .take()
            .ok_or(IdentityError::NothingPending)?;
        self.repin(user_id, new);
        let held: Vec<u64> = self
            .quarantine
            .iter()
            .filter(|(_, e)| e.source_user_id == user_id)
            .map(|(s, _)| *s)
            .collect();
        for seq in held {
            if let Some(env) = self.quarantine.remove(&seq) {
                self.writes.push(StoreOp::Delete {
                    table: tables::QUARANTINE,
                    partition: b"q".to_vec(),
                    sort: seq,
                });
                self.incoming_message(now_ms, &env);
            }
        }
        self.pump(now_ms);
        self.finish();
        Ok(())
    }

    /// Marks a contact's current identity verified (or not), e.g. after comparing safety numbers.
    pub fn set_verified(
        &mut self,
        now_ms: u64,
        user_id: &str,
        verified: bool,
    ) -> Result<(), IdentityError> {
        let contact = self
            .contacts
            .get_mut(user_id)
            .ok_or(IdentityError::UnknownContact)?;
        if contact.identity.is_none() {
            return Err(IdentityError::UnknownContact);
        }
        contact.verified = verified;
        let identity = contact
            .identity
            .as_ref()
            .map(|k| hex::encode(k.to_bytes()))
            .unwrap_or_default();
        self.write_contact(user_id);
        // Tell this account's other devices (a message to oneself: they get it, nobody else).
        let own = self.user_id.clone();
        {
            let id = self.new_id();
            let body = Body::Verified {
                user_id: user_id.to_owned(),
                identity,
                verified,
            };
            self.enqueue(now_ms, &own, id, body, None);
        }
        self.pump(now_ms);
        self.finish();
        Ok(())
    }

    /// The safety number with a contact whose identity is pinned.
    pub fn safety_number(&self, user_id: &str) -> Result<SafetyNumberInfo, IdentityError> {
        let contact = self
            .contacts
            .get(user_id)
            .ok_or(IdentityError::UnknownContact)?;
        let theirs = contact
            .identity
            .as_ref()
            .ok_or(IdentityError::UnknownContact)?;
        let n = SafetyNumber::new(&self.user_id, &self.identity.public(), user_id, theirs);
        Ok(SafetyNumberInfo {
            display: n.display(),
            qr_payload: n.qr_payload(),
            verified: contact.verified,
        })
    }

    /// Asks the relay how many one-time keys are left (uploads more if low).
    pub fn check_prekeys(&mut self) {
        if !self.key_count_pending {
            self.key_count_pending = true;
            self.request(RelayCall::KeyCount, Pending::KeyCount);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Inputs

    /// Time passed: retries, typing auto-stop, prekey rotation.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let expired: Vec<(ConversationId, String)> = self
            .typing
            .iter()
            .filter(|(_, until)| **until <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.typing.remove(&key);
            self.events.push_back(Event::Typing {
                conversation: key.0,
                user_id: key.1,
                typing: false,
            });
        }
        if let Some((upload, at)) = self.upload_retry.take() {
            if at <= now_ms {
                self.request(
                    RelayCall::UploadKeys(upload.clone()),
                    Pending::UploadKeys(upload),
                );
            } else {
                self.upload_retry = Some((upload, at));
            }
        }
        if now_ms.saturating_sub(self.prekeys.rotated_at) >= ROTATE_AFTER_MS {
            let mut upload = self.keys_upload();
            let mut ops = Vec::new();
            self.prekeys
                .rotate(&self.identity, now_ms, &mut self.rng, &mut upload, &mut ops);
            self.writes.extend(ops);
            self.account_dirty = true;
            self.request(
                RelayCall::UploadKeys(upload.clone()),
                Pending::UploadKeys(upload),
            );
        }
        self.pump(now_ms);
        self.finish();
    }

    /// A presence frame from the relay.
    pub fn handle_presence(&mut self, status: UserStatus) {
        let s = match status.status {
            sotto_wire::PresenceStatus::Online => "online",
            sotto_wire::PresenceStatus::Away => "away",
            sotto_wire::PresenceStatus::Offline => "offline",
        };
        self.events.push_back(Event::Presence {
            user_id: status.user_id,
            status: s.to_owned(),
            last_seen: status.last_seen,
        });
    }

    /// An ephemeral envelope (typing) from the relay.
    pub fn handle_ephemeral(&mut self, now_ms: u64, e: EphemeralEnvelope) {
        if e.group_id.is_some() {
            return self.group_ephemeral(now_ms, e);
        }
        let Some(contact) = self.contacts.get_mut(&e.source_user_id) else {
            return;
        };
        let Some(device) = contact.devices.get_mut(&e.source_device_id) else {
            return;
        };
        let Ok(remote) = DeviceAddress::new(e.source_user_id.clone(), e.source_device_id) else {
            return;
        };
        // Only established sessions: an ephemeral pre-key message would set up state from a
        // message nobody stores.
        if trust::prekey_identity(e.content.as_bytes()).is_some() {
            return;
        }
        let keys = self.prekeys.responder(&self.identity, None);
        let pinned = contact.identity.clone();
        let Ok(out) = trust::decrypt(
            &mut device.session,
            e.content.as_bytes(),
            &keys,
            &self.local,
            &remote,
            pinned.as_ref(),
            now_ms,
        ) else {
            return;
        };
        let user = e.source_user_id.clone();
        self.write_session(&user, e.source_device_id);
        if let Ok(Payload {
            body: Body::Typing { typing },
            group: None,
            ..
        }) = Payload::decode(&out.plaintext)
        {
            let conversation = ConversationId::Direct(user.clone());
            let key = (conversation.clone(), user.clone());
            if typing {
                self.typing.insert(key, now_ms + TYPING_TIMEOUT_MS);
            } else {
                self.typing.remove(&key);
            }
            self.events.push_back(Event::Typing {
                conversation,
                user_id: user,
                typing,
            });
        }
        self.finish();
    }

    /// One envelope from the relay's mailbox (WebSocket push or page fetch). Its seq is acked
    /// through [`Client::take_acks`] after the writes it caused.
    pub fn handle_envelope(&mut self, now_ms: u64, envelope: Envelope) {
        match envelope.kind {
            EnvelopeKind::Message => self.incoming_message(now_ms, &envelope),
            EnvelopeKind::DeliveryReceipt => self.delivery_receipt(now_ms, &envelope),
            EnvelopeKind::GroupMessage => self.incoming_group_message(now_ms, &envelope),
            EnvelopeKind::GroupEvent => self.relay_group_event(&envelope),
        }
        self.acks.push(envelope.seq);
        self.pump(now_ms);
        self.finish();
    }

    /// The answer to a request.
    pub fn handle_response(
        &mut self,
        now_ms: u64,
        id: RequestId,
        result: Result<RelayAnswer, RelayFailure>,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::UploadKeys(upload) => match result {
                Ok(_) => {}
                Err(RelayFailure::Rejected { status, .. }) if status < 500 && status != 429 => {}
                Err(_) => self.upload_retry = Some((upload, now_ms + RETRY_BACKOFF_MS)),
            },
            Pending::KeyCount => {
                self.key_count_pending = false;
                if let Ok(RelayAnswer::KeyCount(count)) = result {
                    self.consumed_since_count = 0;
                    let mut upload = self.keys_upload();
                    let mut ops = Vec::new();
                    if count.count < LOW_WATER {
                        self.prekeys
                            .more_one_time(&mut self.rng, &mut upload, &mut ops);
                    }
                    if count.kem_count < LOW_WATER {
                        self.prekeys
                            .more_kem(&self.identity, &mut self.rng, &mut upload, &mut ops);
                    }
                    if !ops.is_empty() {
                        self.writes.extend(ops);
                        self.account_dirty = true;
                        self.request(
                            RelayCall::UploadKeys(upload.clone()),
                            Pending::UploadKeys(upload),
                        );
                    }
                }
            }
            Pending::Fetch { user, device } => {
                self.fetching.remove(&(user.clone(), device));
                self.fetched(now_ms, &user, device, result);
            }
            Pending::Devices { user } => {
                self.fetching.remove(&(user.clone(), Some(0)));
                self.devices_answer(&user, result);
            }
            Pending::Send { seq } => self.send_answer(now_ms, seq, result),
            Pending::Ephemeral => {}
        }
        self.pump(now_ms);
        self.finish();
    }

    // ----------------------------------------------------------------------------------------
    // Internals: bookkeeping

    fn finish(&mut self) {
        if self.account_dirty {
            self.account_dirty = false;
            let row = AccountRow {
                user_id: self.user_id.clone(),
                device_id: self.device_id,
                registration_id: self.registration_id,
                identity: Base64(self.identity.to_bytes().to_vec()),
                counter: self.counter,
                next_prekey_id: self.prekeys.next_id,
                rotated_at: self.prekeys.rotated_at,
                outbox_seq: self.outbox_seq,
                last_sent_at: self.last_sent_at,
            };
            self.writes.push(StoreOp::Put {
                table: tables::ACCOUNT,
                partition: b"account".to_vec(),
                sort: 0,
                value: json(&row),
            });
        }
    }

    fn request(&mut self, call: RelayCall, pending: Pending) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.pending.insert(id, pending);
        self.requests.push_back(Request { id, call });
        id
    }

    fn new_id(&mut self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        hex::encode(b)
    }

    fn next_sort(&mut self, ts: u64) -> u64 {
        self.counter += 1;
        self.account_dirty = true;
        (ts.min((1 << 42) - 1) << 20) | (self.counter & 0xF_FFFF)
    }

    fn write_contact(&mut self, user: &str) {
        let Some(c) = self.contacts.get(user) else {
            return;
        };
        let row = ContactRow {
            user_id: user.to_owned(),
            identity: c.identity.as_ref().map(|k| Base64(k.to_bytes())),
            verified: c.verified,
            pending: c.pending.as_ref().map(|k| Base64(k.to_bytes())),
            fetched: c.fetched,
        };
        self.writes.push(StoreOp::Put {
            table: tables::CONTACTS,
            partition: user.as_bytes().to_vec(),
            sort: 0,
            value: json(&row),
        });
    }

    fn write_session(&mut self, user: &str, device: u32) {
        let Some(d) = self.contacts.get(user).and_then(|c| c.devices.get(&device)) else {
            return;
        };
        let row = SessionRow {
            user_id: user.to_owned(),
            device_id: device,
            registration_id: d.registration_id,
            record: Base64(d.session.to_bytes().to_vec()),
        };
        self.writes.push(StoreOp::Put {
            table: tables::SESSIONS,
            partition: session_partition(user, device),
            sort: 0,
            value: json(&row),
        });
    }

    fn drop_device(&mut self, user: &str, device: u32) {
        if let Some(c) = self.contacts.get_mut(user) {
            if c.devices.remove(&device).is_some() {
                self.writes.push(StoreOp::Delete {
                    table: tables::SESSIONS,
                    partition: session_partition(user, device),
                    sort: 0,
                });
            }
        }
    }

    /// Pins `identity` for `user` (unverified) and forgets every session with the old one.
    fn repin(&mut self, user: &str, identity: IdentityKey) {
        let devices: Vec<u32> = self.contact_devices(user);
        for d in devices {
            self.drop_device(user, d);
        }
        let c = self.contacts.entry(user.to_owned()).or_default();
        c.identity = Some(identity);
        c.verified = false;
        c.pending = None;
        c.fetched = false;
        self.write_contact(user);
    }

    /// Handles an identity other than the pinned one; returns whether to go on with it now.
    fn identity_changed(&mut self, user: &str, offered: IdentityKey) -> bool {
        let policy = self.config.identity_policy;
        let c = self.contacts.entry(user.to_owned()).or_default();
        let was_verified = c.verified;
        let already = c.pending.as_ref() == Some(&offered);
        match policy {
            IdentityPolicy::RequireApproval => {
                c.pending = Some(offered);
                if !already {
                    self.write_contact(user);
                    self.events.push_back(Event::IdentityChanged {
                        user_id: user.to_owned(),
                        was_verified,
                        needs_approval: true,
                    });
                }
                false
            }
            IdentityPolicy::AcceptAndNotify => {
                self.repin(user, offered);
                self.events.push_back(Event::IdentityChanged {
                    user_id: user.to_owned(),
                    was_verified,
                    needs_approval: false,
                });
                true
            }
        }
    }

    fn store_message(&mut self, m: &Message) {
        self.writes.push(StoreOp::Put {
            table: tables::MESSAGES,
            partition: m.conversation.key(),
            sort: m.sort,
            value: json(m),
        });
    }

    fn put_conversation(&mut self, c: &Conversation) {
        self.writes.push(StoreOp::Put {
            table: tables::CONVERSATIONS,
            partition: c.id.key(),
            sort: 0,
            value: json(c),
        });
    }

    fn touch_conversation(&mut self, m: &Message, unread: bool) {
        let conv = self
            .conversations
            .entry(m.conversation.clone())
            .or_insert_with(|| Conversation {
                id: m.conversation.clone(),
                name: None,
                last_message: None,
                unread_count: 0,
                last_sort: 0,
                unread_ids: Vec::new(),
            });
        if m.sort >= conv.last_sort {
            conv.last_sort = m.sort;
            conv.last_message = Some(MessagePreview {
                id: m.id.clone(),
                sender_user_id: m.sender_user_id.clone(),
                text: m
                    .text
                    .clone()
                    .or_else(|| m.attachment.as_ref().map(|a| a.file_name.clone()))
                    .unwrap_or_default(),
                sent_at: m.sent_at,
            });
        }
        if unread {
            conv.unread_count = conv.unread_count.saturating_add(1);
            conv.unread_ids
                .push((m.sender_user_id.clone(), m.id.clone()));
            if conv.unread_ids.len() > MAX_UNREAD_IDS {
                conv.unread_ids.remove(0);
            }
        }
        let conv = conv.clone();
        self.put_conversation(&conv);
        self.events.push_back(Event::ConversationUpdated(conv));
    }

    // ----------------------------------------------------------------------------------------
    // Internals: sending

    fn fetch(&mut self, user: &str, device: Option<u32>) {
        let key = (user.to_owned(), device);
        if self.fetching.contains(&key) {
            return;
        }
        self.fetching.insert(key);
        self.request(
            RelayCall::FetchBundles {
                user_id: user.to_owned(),
                device_id: device,
            },
            Pending::Fetch {
                user: user.to_owned(),
                device,
            },
        );
    }

    fn fetch_devices(&mut self, user: &str) {
        let key = (user.to_owned(), Some(0));
        if self.fetching.contains(&key) {
            return;
        }
        self.fetching.insert(key);
        self.request(
            RelayCall::Devices {
                user_id: user.to_owned(),
            },
            Pending::Devices {
                user: user.to_owned(),
            },
        );
    }

    fn pump(&mut self, now_ms: u64) {
        // A group message queues its sender-key distributions while being tried: try those
        // right away too.
        for _ in 0..3 {
            let before = self.outbox_seq;
            self.pump_once(now_ms);
            if self.outbox_seq == before {
                break;
            }
        }
    }

    fn pump_once(&mut self, now_ms: u64) {
        // In sequence order, counting what is in flight on the way and stopping once the window
        // is full: with a long queue (thousands of messages queued at once) each answer costs a
        // walk over the window, not over the whole outbox.
        let max = self.config.max_sends_in_flight;
        let mut in_flight = 0usize;
        let mut next = 0u64;
        loop {
            let mut candidate = None;
            for (seq, item) in self.outbox.range(next..) {
                if item.in_flight {
                    in_flight += 1;
                    if in_flight >= max {
                        return;
                    }
                } else if item.not_before <= now_ms {
                    candidate = Some(*seq);
                    break;
                }
            }
            let Some(seq) = candidate else {
                return;
            };
            if self.try_send(now_ms, seq) {
                in_flight += 1;
                if in_flight >= max {
                    return;
                }
            }
            match seq.checked_add(1) {
                Some(after) => next = after,
                None => return,
            }
        }
    }

    /// Whether a contact's devices are ready to encrypt to; asks for what is missing otherwise.
    fn devices_ready(&mut self, user: &str) -> bool {
        let (fetched, missing_rid) = match self.contacts.get(user) {
            Some(c) => (
                c.fetched,
                c.devices.values().any(|d| d.registration_id.is_none()),
            ),
            None => (false, false),
        };
        if !fetched {
            self.fetch(user, None);
            return false;
        }
        if missing_rid {
            self.fetch_devices(user);
            return false;
        }
        true
    }

    fn try_send(&mut self, now_ms: u64, seq: u64) -> bool {
        let Some(item) = self.outbox.get(&seq) else {
            return false;
        };
        if item.fan_out {
            return self.try_send_group(now_ms, seq);
        }
        // Items about a group reach each peer in order (roster before sender key): the relay
        // orders what it accepted, so the next waits for the one before.
        if let Some(group) = &item.group {
            let earlier = self
                .outbox
                .range(..seq)
                .any(|(_, i)| !i.fan_out && i.group.as_ref() == Some(group) && i.peer == item.peer);
            if earlier {
                return false;
            }
        }
        let peer = item.peer.clone();
        let own = self.user_id.clone();
        let own_ready = self.devices_ready(&own);
        let peer_ready = self.devices_ready(&peer);
        if !own_ready || !peer_ready {
            return false;
        }
        // Wait for device fetches still under way (after a 409/410) before encrypting.
        if self.fetching.iter().any(|(u, _)| *u == peer || *u == own) {
            return false;
        }
        let awaiting = self
            .contacts
            .get(&peer)
            .is_some_and(|c| c.pending.is_some());
        if awaiting && self.config.identity_policy == IdentityPolicy::RequireApproval {
            return false;
        }
        if self
            .contacts
            .get(&peer)
            .is_none_or(|c| c.devices.is_empty())
            && peer != own
        {
            // Fetch again for the next message; this one has nobody to go to.
            if let Some(c) = self.contacts.get_mut(&peer) {
                c.fetched = false;
            }
            self.write_contact(&peer);
            self.fail(seq, SendFailure::NoVerifiedDevices);
            return false;
        }
        let Some(item) = self.outbox.get(&seq) else {
            return false;
        };
        let mut payload = Payload {
            v: VERSION,
            id: item.id.clone(),
            ts: item.sent_at,
            sync_to: None,
            // Read receipts for a group's messages name the group.
            group: match item.body {
                Body::Read { .. } => item.group.clone(),
                _ => None,
            },
            body: item.body.clone(),
        };
        let plain = payload.encode();
        payload.sync_to = Some(peer.clone());
        let sync_plain = payload.encode();
        let client_message_id = item.id.clone();
        let own_device = self.device_id;
        let to_self = peer == own;
        let messages = if to_self {
            self.encrypt_for(&own, &plain, now_ms, Some(own_device))
        } else {
            self.encrypt_for(&peer, &plain, now_ms, None)
        };
        let sync_messages = if to_self {
            Some(Vec::new())
        } else {
            self.encrypt_for(&own, &sync_plain, now_ms, Some(own_device))
        };
        if to_self && messages.as_ref().is_some_and(|m| m.is_empty()) {
            // No other own device: nothing to tell.
            if self.outbox.remove(&seq).is_some() {
                self.writes.push(StoreOp::Delete {
                    table: tables::OUTBOX,
                    partition: b"outbox".to_vec(),
                    sort: seq,
                });
            }
            return false;
        }
        let (Some(messages), Some(sync_messages)) = (messages, sync_messages) else {
            return false;
        };
        let id = self.request(
            RelayCall::SendMessage(SendMessageRequest {
                recipient_id: peer,
                client_message_id,
                messages,
                sync_messages,
            }),
            Pending::Send { seq },
        );
        let _ = id;
        if let Some(item) = self.outbox.get_mut(&seq) {
            item.in_flight = true;
        }
        true
    }

    /// One ciphertext per device of `user` (but `skip`); `None` if a session broke (refetching).
    fn encrypt_for(
        &mut self,
        user: &str,
        plaintext: &[u8],
        now_ms: u64,
        skip: Option<u32>,
    ) -> Option<Vec<OutgoingMessage>> {
        let contact = self.contacts.get_mut(user)?;
        let mut out = Vec::new();
        let mut broken = Vec::new();
        let mut touched = Vec::new();
        for (device, d) in contact.devices.iter_mut() {
            if Some(*device) == skip {
                continue;
            }
            match trust::encrypt(&mut d.session, plaintext, now_ms, &mut self.rng) {
                Ok(ct) => {
                    out.push(OutgoingMessage {
                        device_id: *device,
                        registration_id: d.registration_id.unwrap_or(0),
                        content: Base64(ct),
                    });
                    touched.push(*device);
                }
                Err(_) => broken.push(*device),
            }
        }
        for d in touched {
            self.write_session(user, d);
        }
        if broken.is_empty() {
            return Some(out);
        }
        for d in broken {
            self.drop_device(user, d);
            self.fetch(user, Some(d));
        }
        None
    }

    fn fail(&mut self, seq: u64, reason: SendFailure) {
        let Some(item) = self.outbox.remove(&seq) else {
            return;
        };
        self.writes.push(StoreOp::Delete {
            table: tables::OUTBOX,
            partition: b"outbox".to_vec(),
            sort: seq,
        });
        if let Some(mut m) = item.message {
            m.status = MessageStatus::Failed;
            self.store_message(&m);
            self.events.push_back(Event::SendFailed {
                conversation: m.conversation,
                message_id: m.id,
                reason,
            });
        }
    }

    fn retry_later(&mut self, seq: u64, now_ms: u64, delay_ms: u64, count: bool) {
        let give_up = match self.outbox.get_mut(&seq) {
            Some(item) => {
                item.in_flight = false;
                item.not_before = now_ms + delay_ms;
                if count {
                    item.attempts += 1;
                }
                item.attempts >= MAX_SEND_ATTEMPTS
            }
            None => false,
        };
        if give_up {
            self.fail(seq, SendFailure::DeviceListUnresolved);
        }
    }

    fn send_answer(&mut self, now_ms: u64, seq: u64, result: Result<RelayAnswer, RelayFailure>) {
        let Some(item) = self.outbox.get(&seq) else {
            return;
        };
        let peer = item.peer.clone();
        match result {
            Ok(RelayAnswer::Sent(sent)) => {
                let Some(item) = self.outbox.remove(&seq) else {
                    return;
                };
                self.group_item_sent(&item);
                self.writes.push(StoreOp::Delete {
                    table: tables::OUTBOX,
                    partition: b"outbox".to_vec(),
                    sort: seq,
                });
                if let Some(mut m) = item.message {
                    m.status = MessageStatus::Sent;
                    m.server_timestamp = Some(sent.server_timestamp);
                    self.store_message(&m);
                    self.events.push_back(Event::MessageSent {
                        conversation: m.conversation,
                        message_id: m.id,
                        server_timestamp: sent.server_timestamp,
                    });
                }
            }
            Ok(_) | Err(RelayFailure::Malformed) => {
                let give_up = self.outbox.get_mut(&seq).map(|i| {
                    i.in_flight = false;
                    i.attempts += 1;
                    i.not_before = now_ms + RETRY_BACKOFF_MS;
                    i.attempts >= MAX_SEND_ATTEMPTS
                });
                if give_up == Some(true) {
                    self.fail(seq, SendFailure::BadRelayAnswer);
                }
            }
            Err(RelayFailure::Unreachable) => {
                self.retry_later(seq, now_ms, RETRY_BACKOFF_MS, false)
            }
            Err(RelayFailure::Rejected {
                status,
                code,
                body,
                retry_after_secs,
            }) => match status {
                409 => {
                    if let Ok(m) = serde_json::from_value::<MismatchedDevices>(body) {
                        {
                            let own = self.user_id.clone();
                            for d in m.extra_devices {
                                if d.user_id == peer || d.user_id == own {
                                    self.drop_device(&d.user_id, d.device_id);
                                }
                            }
                            for d in m.missing_devices {
                                let ours = d.user_id == own && d.device_id == self.device_id;
                                if (d.user_id == peer || d.user_id == own) && !ours {
                                    self.fetch(&d.user_id, Some(d.device_id));
                                }
                            }
                        }
                    }
                    self.retry_later(seq, now_ms, 0, true);
                }
                410 => {
                    if let Ok(s) = serde_json::from_value::<StaleDevices>(body) {
                        let own = self.user_id.clone();
                        for d in s.stale_devices {
                            let ours = d.user_id == own && d.device_id == self.device_id;
                            if (d.user_id == peer || d.user_id == own) && !ours {
                                self.drop_device(&d.user_id, d.device_id);
                                self.fetch(&d.user_id, Some(d.device_id));
                            }
                        }
                    }
                    self.retry_later(seq, now_ms, 0, true);
                }
                404 if self.outbox.get(&seq).is_some_and(|i| i.fan_out) => {
                    self.fail(seq, SendFailure::Rejected { code })
                }
                404 => self.fail(seq, SendFailure::UnknownUser),
                429 => {
                    let delay = retry_after_secs.unwrap_or(1).clamp(1, 3600) * 1000;
                    self.retry_later(seq, now_ms, delay, false);
                }
                s if s >= 500 => self.retry_later(seq, now_ms, RETRY_BACKOFF_MS, true),
                _ => self.fail(seq, SendFailure::Rejected { code }),
            },
        }
    }

    fn fetched(
        &mut self,
        now_ms: u64,
        user: &str,
        device: Option<u32>,
        result: Result<RelayAnswer, RelayFailure>,
    ) {
        let own = user == self.user_id;
        let failure = match result {
            Ok(RelayAnswer::Bundles(b)) if b.user_id == user => {
                self.install_bundles(now_ms, user, device, &b);
                self.mark_fetched(user, device);
                return;
            }
            Err(RelayFailure::Unreachable) => {
                self.backoff_items(user, now_ms);
                return;
            }
            Err(RelayFailure::Rejected { status, .. }) if status >= 500 || status == 429 => {
                self.backoff_items(user, now_ms);
                return;
            }
            // No keys: for this account, no other device; for a peer, nobody to send to.
            Err(RelayFailure::Rejected { status: 404, .. }) if own => {
                self.mark_fetched(user, device);
                return;
            }
            Err(RelayFailure::Rejected { status: 404, .. }) => SendFailure::UnknownUser,
            // An answer about someone else, or not an answer: nothing to encrypt to.
            _ => SendFailure::BadRelayAnswer,
        };
        if device.is_some() {
            // The next send attempt meets the relay's device check again and gives up in time.
            return;
        }
        let failed: Vec<u64> = self
            .outbox
            .values()
            .filter(|i| !i.in_flight && (own || i.peer == user))
            .map(|i| i.seq)
            .collect();
        for seq in failed {
            self.fail(seq, failure.clone());
        }
    }

    fn backoff_items(&mut self, user: &str, now_ms: u64) {
        let own = user == self.user_id;
        for item in self.outbox.values_mut() {
            if own || item.peer == user {
                item.not_before = now_ms + RETRY_BACKOFF_MS;
            }
        }
    }

    fn mark_fetched(&mut self, user: &str, device: Option<u32>) {
        if device.is_none() {
            let c = self.contacts.entry(user.to_owned()).or_default();
            if !c.fetched {
                c.fetched = true;
                self.write_contact(user);
            }
        }
    }

    fn install_bundles(
        &mut self,
        now_ms: u64,
        user: &str,
        device: Option<u32>,
        bundles: &PreKeyBundles,
    ) {
        let Ok(identity) = IdentityKey::from_bytes(bundles.identity_key.as_bytes()) else {
            return;
        };
        let own = user == self.user_id;
        let mut own_added = false;
        let pinned = self.contacts.get(user).and_then(|c| c.identity.clone());
        match &pinned {
            None => {
                let c = self.contacts.entry(user.to_owned()).or_default();
                c.identity = Some(identity.clone());
                self.write_contact(user);
            }
            Some(p) if *p == identity => {}
            Some(_) if own => {
                // Our own identity never changes: these devices are the relay's invention.
                for d in &bundles.devices {
                    self.events.push_back(Event::UntrustedDevice {
                        user_id: user.to_owned(),
                        device_id: d.device_id,
                    });
                }
                return;
            }
            Some(_) => {
                if !self.identity_changed(user, identity.clone()) {
                    return;
                }
            }
        }
        let pinned = Some(identity.clone());
        let mut seen_devices = BTreeSet::new();
        for d in &bundles.devices {
            if (own && d.device_id == self.device_id)
                || device.is_some_and(|want| want != d.device_id)
                || !seen_devices.insert(d.device_id)
            {
                continue;
            }
            let verified = parse_bundle(&identity, d).and_then(|b| b.verify().ok());
            let Some(verified) = verified else {
                self.events.push_back(Event::UntrustedDevice {
                    user_id: user.to_owned(),
                    device_id: d.device_id,
                });
                continue;
            };
            let Ok(remote) = DeviceAddress::new(user.to_owned(), d.device_id) else {
                continue;
            };
            let contact = self.contacts.entry(user.to_owned()).or_default();
            let new_device = !contact.devices.contains_key(&d.device_id);
            let existing = contact.devices.get_mut(&d.device_id);
            if let Some(existing) = existing {
                if device.is_none() && trust::has_usable_session(&existing.session, now_ms) {
                    existing.registration_id = Some(d.registration_id);
                    self.write_session(user, d.device_id);
                    continue;
                }
            }
            let mut peer = contact.devices.remove(&d.device_id).unwrap_or_default();
            match trust::initiate(
                &mut peer.session,
                &self.identity,
                &self.local,
                &remote,
                &verified,
                pinned.as_ref(),
                now_ms,
                &mut self.rng,
            ) {
                Ok(()) => {
                    peer.registration_id = Some(d.registration_id);
                    if let Some(c) = self.contacts.get_mut(user) {
                        c.devices.insert(d.device_id, peer);
                    }
                    self.write_session(user, d.device_id);
                    if own && new_device {
                        own_added = true;
                        // Signed by this account's identity: a device the user linked.
                        self.events.push_back(Event::DeviceLinked {
                            device_id: d.device_id,
                        });
                    }
                }
                Err(InitiateFailure::Untrusted(_)) | Err(InitiateFailure::Setup(_)) => {
                    self.events.push_back(Event::UntrustedDevice {
                        user_id: user.to_owned(),
                        device_id: d.device_id,
                    });
                }
            }
        }
        if own_added {
            self.own_device_added(now_ms);
        }
    }

    fn devices_answer(&mut self, user: &str, result: Result<RelayAnswer, RelayFailure>) {
        let list = match result {
            Ok(RelayAnswer::Devices(list)) if list.user_id == user => list,
            Err(RelayFailure::Unreachable) => return,
            _ => {
                // Without registration ids these sessions cannot be addressed: start over.
                let stale: Vec<u32> = self
                    .contacts
                    .get(user)
                    .map(|c| {
                        c.devices
                            .iter()
                            .filter(|(_, d)| d.registration_id.is_none())
                            .map(|(id, _)| *id)
                            .collect()
                    })
                    .unwrap_or_default();
                for d in stale {
                    self.drop_device(user, d);
                }
                return;
            }
        };
        let mut updated = Vec::new();
        if let Some(c) = self.contacts.get_mut(user) {
            for info in &list.devices {
                if let Some(d) = c.devices.get_mut(&info.device_id) {
                    if d.registration_id != Some(info.registration_id) {
                        d.registration_id = Some(info.registration_id);
                        updated.push(info.device_id);
                    }
                }
            }
        }
        for d in updated {
            self.write_session(user, d);
        }
        let gone: Vec<u32> = self
            .contacts
            .get(user)
            .map(|c| {
                c.devices
                    .iter()
                    .filter(|(_, d)| d.registration_id.is_none())
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        for d in gone {
            self.drop_device(user, d);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Internals: receiving

    fn dropped(&mut self, env: &Envelope, reason: &str) {
        self.events.push_back(Event::DecryptionFailed {
            user_id: env.source_user_id.clone(),
            device_id: env.source_device_id,
            reason: reason.to_owned(),
        });
    }

    fn incoming_message(&mut self, now_ms: u64, env: &Envelope) {
        let Some(content) = env.content.as_ref() else {
            return self.dropped(env, "envelope without content");
        };
        let bytes = content.as_bytes();
        let user = env.source_user_id.as_str();
        let Ok(remote) = DeviceAddress::new(user, env.source_device_id) else {
            return self.dropped(env, "invalid sender address");
        };
        if remote == self.local {
            return self.dropped(env, "envelope claims to come from this device");
        }
        let own = user == self.user_id;
        let mut pinned = self.contacts.get(user).and_then(|c| c.identity.clone());
        let ids = trust::prekey_ids(bytes);
        let mut attempt = 0;
        let (device, decrypted) = loop {
            attempt += 1;
            let contact = self.contacts.entry(user.to_owned()).or_default();
            let existed = contact.devices.contains_key(&env.source_device_id);
            let mut device = contact
                .devices
                .remove(&env.source_device_id)
                .unwrap_or_default();
            let keys = self.prekeys.responder(&self.identity, ids);
            let result = trust::decrypt(
                &mut device.session,
                bytes,
                &keys,
                &self.local,
                &remote,
                pinned.as_ref(),
                now_ms,
            );
            let failure = match result {
                Ok(d) => break (device, d),
                Err(e) => e,
            };
            if existed {
                if let Some(c) = self.contacts.get_mut(user) {
                    c.devices.insert(env.source_device_id, device);
                }
            }
            match failure {
                DecryptFailure::Decrypt(DecryptError::DuplicateMessage(_)) => return,
                DecryptFailure::Decrypt(e) => return self.dropped(env, &e.to_string()),
                DecryptFailure::Untrusted(u) => {
                    // Authenticated under another identity: the peer's identity changed.
                    if own {
                        return self.dropped(env, "identity differs from this account's");
                    }
                    if attempt > 1 || !self.identity_changed(user, (*u.offered).clone()) {
                        self.quarantine.insert(env.seq, env.clone());
                        self.writes.push(StoreOp::Put {
                            table: tables::QUARANTINE,
                            partition: b"q".to_vec(),
                            sort: env.seq,
                            value: json(env),
                        });
                        return;
                    }
                    pinned = Some(*u.offered);
                }
            }
        };
        let offered = device.session.remote_identity().cloned();
        if let Some(c) = self.contacts.get_mut(user) {
            c.devices.insert(env.source_device_id, device);
        }
        let mut ops = Vec::new();
        self.prekeys.consume(
            decrypted.consumed_one_time_prekey,
            decrypted.consumed_kem_prekey,
            &mut ops,
        );
        if !ops.is_empty() {
            self.writes.extend(ops);
            self.consumed_since_count += 1;
            if self.consumed_since_count >= CONSUMED_BEFORE_COUNT {
                self.check_prekeys();
            }
        }
        if pinned.is_none() {
            if let Some(c) = self.contacts.get_mut(user) {
                c.identity = offered;
            }
            self.write_contact(user);
        }
        self.write_session(user, env.source_device_id);
        let payload = match Payload::decode(&decrypted.plaintext) {
            Ok(p) => p,
            Err(e) => return self.dropped(env, &e.to_string()),
        };
        let key = seen_key(user, &payload.id);
        if !self.seen.insert(key) {
            return;
        }
        self.writes.push(StoreOp::Put {
            table: tables::SEEN,
            partition: key.to_vec(),
            sort: 0,
            value: Zeroizing::new(key.to_vec()),
        });
        self.direct_content(now_ms, env, payload);
    }

    fn direct_content(&mut self, now_ms: u64, env: &Envelope, payload: Payload) {
        let _ = now_ms;
        if self.group_content(now_ms, env, &payload) {
            return;
        }
        let user = env.source_user_id.clone();
        let own = user == self.user_id;
        if let Body::Verified {
            user_id,
            identity,
            verified,
        } = &payload.body
        {
            if !own {
                return self.dropped(env, "verification from another account");
            }
            let Some(key) = hex::decode(identity)
                .ok()
                .and_then(|b| IdentityKey::from_bytes(&b).ok())
            else {
                return self.dropped(env, "malformed verification");
            };
            if *user_id == self.user_id || DeviceAddress::new(user_id.as_str(), 1).is_err() {
                return self.dropped(env, "invalid verification");
            }
            let c = self.contacts.entry(user_id.clone()).or_default();
            match &c.identity {
                // Only the identity our own device compared is marked; a different one is not.
                Some(k) if *k == key => c.verified = *verified,
                Some(_) => return,
                None => {
                    c.identity = Some(key);
                    c.verified = *verified;
                }
            }
            let user_id = user_id.clone();
            self.write_contact(&user_id);
            return;
        }
        if let Some(group) = &payload.group {
            // Only read receipts name a group in a 1:1 message.
            let known = self.groups.contains_key(group);
            if !matches!(payload.body, Body::Read { .. }) || !known {
                return self.dropped(env, "group content in a 1:1 message");
            }
            let conversation = ConversationId::Group(group.clone());
            return self.read_receipt(env, conversation, payload);
        }
        let conversation_peer = match (&payload.sync_to, own) {
            (Some(peer), true) if *peer != self.user_id => peer.clone(),
            (None, false) => user.clone(),
            _ => return self.dropped(env, "content addressed inconsistently"),
        };
        if DeviceAddress::new(conversation_peer.as_str(), 1).is_err() {
            return self.dropped(env, "invalid conversation");
        }
        let conversation = ConversationId::Direct(conversation_peer);
        match payload.body {
            Body::Text { .. } | Body::Attachment { .. } => {
                self.show_received(env, conversation, payload)
            }
            Body::Read { .. } => self.read_receipt(env, conversation, payload),
            Body::Typing { .. } | Body::Verified { .. } => {}
            Body::SenderKey { .. } | Body::SenderKeyRequest { .. } | Body::GroupChange { .. } => {}
        }
    }

    /// A text or attachment message someone (or this account on another device) sent: into
    /// history, the conversation and the event stream.
    fn show_received(&mut self, env: &Envelope, conversation: ConversationId, payload: Payload) {
        let (text, attachment) = match payload.body {
            Body::Text { text } => (Some(text), None),
            Body::Attachment {
                attachment,
                caption,
            } => (caption, Some(attachment)),
            _ => return,
        };
        let own = env.source_user_id == self.user_id;
        let sent_at = payload
            .ts
            .min(env.server_timestamp.saturating_add(MAX_CLOCK_SKEW_MS));
        let sort = self.next_sort(sent_at);
        let message = Message {
            id: payload.id,
            conversation,
            sender_user_id: env.source_user_id.clone(),
            sender_device_id: env.source_device_id,
            outgoing: own,
            sent_at,
            server_timestamp: Some(env.server_timestamp),
            text,
            attachment,
            status: if own {
                MessageStatus::Sent
            } else {
                MessageStatus::Received
            },
            sort,
        };
        self.store_message(&message);
        self.touch_conversation(&message, !own);
        self.typing
            .remove(&(message.conversation.clone(), message.sender_user_id.clone()));
        self.events.push_back(Event::Message(message));
    }

    /// A read receipt out of a 1:1 session: from this account's other device (clears unread
    /// there too) or from a recipient of this account's messages.
    fn read_receipt(&mut self, env: &Envelope, conversation: ConversationId, payload: Payload) {
        let Body::Read { ids } = payload.body else {
            return;
        };
        let user = env.source_user_id.clone();
        let own = user == self.user_id;
        if own {
            // Read on another own device: clear here too.
            if let Some(conv) = self.conversations.get_mut(&conversation) {
                conv.unread_ids.retain(|i| !ids.contains(i));
                conv.unread_count = conv.unread_ids.len() as u32;
                let conv = conv.clone();
                self.put_conversation(&conv);
                self.events.push_back(Event::ConversationUpdated(conv));
            }
            self.events.push_back(Event::Read {
                conversation,
                message_ids: ids.into_iter().map(|(_, id)| id).collect(),
                user_id: user,
            });
        } else {
            let mut read = Vec::new();
            for (sender, id) in ids {
                if sender != self.user_id || id.is_empty() || id.len() > 64 {
                    continue;
                }
                let r = Receipt {
                    message_id: id.clone(),
                    user_id: user.clone(),
                    device_id: 0,
                    kind: ReceiptKind::Read,
                    at: env.server_timestamp,
                };
                self.writes.push(StoreOp::Put {
                    table: tables::RECEIPTS,
                    partition: crate::store::receipts_partition(&id),
                    sort: receipt_sort(&user, 0, ReceiptKind::Read),
                    value: json(&r),
                });
                read.push(id);
            }
            if !read.is_empty() {
                self.events.push_back(Event::Read {
                    conversation,
                    message_ids: read,
                    user_id: user,
                });
            }
        }
    }

    fn delivery_receipt(&mut self, now_ms: u64, env: &Envelope) {
        let id = &env.client_message_id;
        if id.is_empty() || id.len() > 64 || env.source_user_id.is_empty() {
            return;
        }
        let r = Receipt {
            message_id: id.clone(),
            user_id: env.source_user_id.clone(),
            device_id: env.source_device_id,
            kind: ReceiptKind::Delivered,
            at: now_ms,
        };
        self.writes.push(StoreOp::Put {
            table: tables::RECEIPTS,
            partition: crate::store::receipts_partition(id),
            sort: receipt_sort(
                &env.source_user_id,
                env.source_device_id,
                ReceiptKind::Delivered,
            ),
            value: json(&r),
        });
        self.events.push_back(Event::Delivered {
            message_id: id.clone(),
            user_id: env.source_user_id.clone(),
            device_id: env.source_device_id,
        });
    }
}
