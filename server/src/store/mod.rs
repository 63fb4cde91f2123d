//! Persistent state behind one trait, with one implementation per database.
//!
//! ```text
//!  handlers ──▶ Arc<dyn Store> ──┬─▶ SqliteStore: writer thread + sqlx writer (group commit, in turns) + reader pool
//!                                └─▶ PgStore:     pool, one transaction per operation
//! ```
//!
//! Every operation that changes several rows is one transaction. Sends commit every envelope
//! before returning, so an "accepted" answer means the envelopes survive a crash.

use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::Config;

pub mod groups;
pub mod postgres;
pub mod sqlite;

pub use groups::{GroupStore, LinkStore};

/// Storage failures. None of them is the client's fault except where the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite writer thread's connection failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is out of range (corruption or a bug).
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
    /// The group commit failed; the operation is not stored.
    #[error("commit: {0}")]
    Commit(String),
    /// The writer task is gone (shutting down).
    #[error("store closed")]
    Closed,
    /// The bus to the other relay processes could not be joined (when opening).
    #[error("cluster bus: {0}")]
    Bus(#[from] crate::cluster::BusError),
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// UUID string.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Contact address.
    pub email: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// What login needs.
#[derive(Clone)]
pub struct UserCredentials {
    /// User id.
    pub id: String,
    /// PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The authenticated device behind a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuth {
    /// Internal row id (never shown to clients).
    pub pk: i64,
    /// Owning user.
    pub user_id: String,
    /// Device id within the account.
    pub device_id: u32,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Internal row id.
    pub pk: i64,
    /// Device id.
    pub device_id: u32,
    /// Registration id.
    pub registration_id: u32,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A prekey as stored (signature empty for unsigned one-time EC keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Client id of the key.
    pub key_id: u32,
    /// Public key bytes.
    pub public_key: Vec<u8>,
    /// Signature bytes (empty when unsigned).
    pub signature: Vec<u8>,
}

/// A verified key upload for one device.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// The identity key the signatures were verified against.
    pub identity_key: Vec<u8>,
    /// Signed EC prekey.
    pub signed_pre_key: Option<StoredKey>,
    /// One-time EC prekeys (replace all).
    pub pre_keys: Option<Vec<StoredKey>>,
    /// One-time KEM prekeys (replace all).
    pub kem_pre_keys: Option<Vec<StoredKey>>,
    /// Last-resort KEM prekey.
    pub kem_last_resort: Option<StoredKey>,
}

/// Outcome of a key upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKeysOutcome {
    /// Stored.
    Stored,
    /// The account has another identity key and other devices.
    IdentityMismatch,
}

/// One device's bundle with its claimed one-time keys.
#[derive(Debug, Clone)]
pub struct ClaimedBundle {
    /// Device id.
    pub device_id: u32,
    /// Registration id.
    pub registration_id: u32,
    /// Signed EC prekey.
    pub signed_pre_key: StoredKey,
    /// Claimed one-time EC prekey.
    pub pre_key: Option<StoredKey>,
    /// Claimed one-time KEM key, else the last-resort one.
    pub kem_pre_key: Option<StoredKey>,
}

/// Key kinds in the `signed_prekeys` / `one_time_prekeys` tables.
pub(crate) const KIND_EC: i64 = 0;
pub(crate) const KIND_KEM: i64 = 1;

// Envelope kinds in the `envelopes` table.
/// A message from another device.
pub const ENVELOPE_MESSAGE: i64 = 0;
/// A relay-generated delivery receipt.
pub const ENVELOPE_RECEIPT: i64 = 1;

/// One ciphertext for one device of a send.
#[derive(Debug, Clone)]
pub struct Target {
    /// Destination user.
    pub user_id: String,
    /// Destination device.
    pub device_id: u32,
    /// Registration id the sender believes the device has.
    pub registration_id: u32,
    /// Ciphertext.
    pub content: Vec<u8>,
}

/// A send request, validated for shape and size.
#[derive(Debug, Clone)]
pub struct SendBatch {
    /// The sending device.
    pub sender: DeviceAuth,
    /// Recipient user id.
    pub recipient: String,
    /// Idempotency key (per sending device).
    pub client_message_id: String,
    /// Fresh id, used if the send is new.
    pub server_message_id: String,
    /// Acceptance time (ms).
    pub now: i64,
    /// Expiry time (ms).
    pub expires_at: i64,
    /// Ciphertexts.
    pub targets: Vec<Target>,
    /// Digest of the request, stored with the idempotency key: a retry must carry the same one.
    pub digest: [u8; 32],
}

/// Most contact pairs a [`ContactCache`] remembers; past this it starts over.
const MAX_CACHED_CONTACTS: usize = 200_000;

/// The sender → recipient contacts this process has committed, so that a send between two users
/// who already wrote costs no contact write. Contact rows are never deleted but with their
/// account, whose sends then fail anyway, so a pair remembered here is always stored.
#[derive(Debug, Default)]
pub struct ContactCache {
    pairs: std::sync::Mutex<std::collections::HashSet<[u8; 16]>>,
}

impl ContactCache {
    fn key(from: &str, to: &str) -> [u8; 16] {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(from.as_bytes())
            .chain_update([0])
            .chain_update(to.as_bytes())
            .finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
        key
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<[u8; 16]>> {
        self.pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `from` → `to` must still be written (not a self-send, not committed here before).
    pub fn needs(&self, from: &str, to: &str) -> bool {
        from != to && !self.lock().contains(&Self::key(from, to))
    }

    /// Remembers a committed `from` → `to`.
    pub fn remember(&self, from: &str, to: &str) {
        let mut pairs = self.lock();
        if pairs.len() >= MAX_CACHED_CONTACTS {
            pairs.clear();
        }
        pairs.insert(Self::key(from, to));
    }
}

/// Devices that do not match a send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMismatch {
    /// Current devices without ciphertext.
    pub missing: Vec<(String, u32)>,
    /// Ciphertexts for unknown devices.
    pub extra: Vec<(String, u32)>,
    /// Ciphertexts for re-registered devices.
    pub stale: Vec<(String, u32)>,
}

/// Outcome of [`Store::send`].
#[derive(Debug, Clone)]
pub enum SendOutcome {
    /// Stored; notify these device rows.
    Accepted {
        /// Server message id.
        server_message_id: String,
        /// Acceptance time.
        server_timestamp: i64,
        /// Mailboxes that received an envelope.
        notify: Vec<i64>,
        /// The committed envelopes by mailbox, for connections at the head of theirs.
        envelopes: Vec<(i64, StoredEnvelope)>,
    },
    /// Already stored earlier under the same client message id.
    Duplicate {
        /// The first answer's id.
        server_message_id: String,
        /// The first answer's time.
        server_timestamp: i64,
    },
    /// The client message id was used before for a different request (another digest).
    Reused,
    /// The recipient does not exist.
    UnknownRecipient,
    /// The sending device was removed while the send was in flight.
    SenderRemoved,
    /// Device set mismatch (409 when missing/extra, else 410).
    Mismatch(DeviceMismatch),
}

/// The answer to a send whose idempotency key is already stored: the first answer when the
/// request is the same one (or was stored before digests were kept), else [`SendOutcome::Reused`].
pub(crate) fn duplicate_outcome(
    server_message_id: String,
    server_timestamp: i64,
    stored_digest: Option<Vec<u8>>,
    digest: &[u8; 32],
) -> Result<SendOutcome, StoreError> {
    match stored_digest {
        Some(stored) if stored.as_slice() != digest.as_slice() => Ok(SendOutcome::Reused),
        _ => Ok(SendOutcome::Duplicate {
            server_message_id,
            server_timestamp,
        }),
    }
}

/// Whether a PostgreSQL error is worth retrying the whole transaction for: a deadlock the
/// server broke (`40P01`) or a serialization failure (`40001`).
pub(crate) fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db))
        if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// A queued envelope as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Mailbox sequence.
    pub seq: i64,
    /// [`ENVELOPE_MESSAGE`] or [`ENVELOPE_RECEIPT`].
    pub kind: i64,
    /// Source user.
    pub source_user: String,
    /// Source device.
    pub source_device: u32,
    /// Server message id.
    pub server_message_id: String,
    /// Client message id.
    pub client_message_id: String,
    /// Acceptance time (ms).
    pub server_ts: i64,
    /// Ciphertext (None for receipts).
    pub content: Option<Vec<u8>>,
}

impl StoredEnvelope {
    /// The 1:1 message of `send`, at `seq` of a recipient device's mailbox.
    pub(crate) fn message(seq: i64, send: &SendBatch, content: Vec<u8>) -> Self {
        Self {
            seq,
            kind: ENVELOPE_MESSAGE,
            source_user: send.sender.user_id.clone(),
            source_device: send.sender.device_id,
            server_message_id: send.server_message_id.clone(),
            client_message_id: send.client_message_id.clone(),
            server_ts: send.now,
            content: Some(content),
        }
    }

    /// The delivery receipt, at `seq` of a sender's mailbox, that `device` acked the message
    /// `server_message_id` / `client_message_id` at `now`.
    pub(crate) fn receipt(
        seq: i64,
        device: &DeviceAuth,
        server_message_id: &str,
        client_message_id: &str,
        now: i64,
    ) -> Self {
        Self {
            seq,
            kind: ENVELOPE_RECEIPT,
            source_user: device.user_id.clone(),
            source_device: device.device_id,
            server_message_id: server_message_id.to_owned(),
            client_message_id: client_message_id.to_owned(),
            server_ts: now,
            content: None,
        }
    }
}

/// Outcome of [`Store::ack`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Sequences that were queued and are now deleted.
    pub deleted: Vec<i64>,
    /// Mailboxes that received a delivery receipt.
    pub notify: Vec<i64>,
    /// The committed receipts by mailbox, for connections at the head of theirs.
    pub envelopes: Vec<(i64, StoredEnvelope)>,
}

/// The relay's persistent state.
#[async_trait]
pub trait Store: GroupStore + LinkStore + Send + Sync + std::fmt::Debug + 'static {
    /// A cheap query, for `/healthz`.
    async fn health(&self) -> Result<(), StoreError>;
    /// Creates an account; `Ok(false)` when the username is taken.
    async fn create_user(&self, user: &NewUser) -> Result<bool, StoreError>;
    /// Login data for a username.
    async fn user_credentials(&self, username: &str)
        -> Result<Option<UserCredentials>, StoreError>;
    /// Whether the user exists.
    async fn user_exists(&self, user_id: &str) -> Result<bool, StoreError>;
    /// `(user id, username as registered)` of the account a username names in any case (where
    /// accounts from before case-insensitive names differ only by case, the exact spelling wins).
    async fn user_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(String, String)>, StoreError>;
    /// The username of a user id, as registered.
    async fn username(&self, user_id: &str) -> Result<Option<String>, StoreError>;
    /// Creates device 1 of an account that has none, with its token; `None` if it has a device.
    async fn create_first_device(
        &self,
        user_id: &str,
        registration_id: u32,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<u32>, StoreError>;
    /// The device a token hash belongs to.
    async fn device_by_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<DeviceAuth>, StoreError>;
    /// Removes a device with its token, keys and mailbox.
    async fn remove_device(&self, device_pk: i64) -> Result<(), StoreError>;
    /// The current devices of a user, by device id.
    async fn devices(&self, user_id: &str) -> Result<Vec<DeviceRow>, StoreError>;
    /// The account identity key.
    async fn identity_key(&self, user_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores verified keys for a device.
    async fn set_keys(
        &self,
        device: &DeviceAuth,
        keys: &KeyUpdate,
    ) -> Result<SetKeysOutcome, StoreError>;
    /// One-time EC and KEM key counts of a device.
    async fn key_counts(&self, device_pk: i64) -> Result<(u32, u32), StoreError>;
    /// Claims one bundle per device (or the one device asked for); `None` when the user has no
    /// identity key.
    async fn claim_bundles(
        &self,
        user_id: &str,
        device_id: Option<u32>,
    ) -> Result<Option<(Vec<u8>, Vec<ClaimedBundle>)>, StoreError>;
    /// Checks the device set and stores one envelope per target, in one transaction.
    async fn send(&self, batch: SendBatch) -> Result<SendOutcome, StoreError>;
    /// Queued envelopes of a device.
    async fn unread(&self, device_pk: i64) -> Result<u64, StoreError>;
    /// Queued envelopes with `seq > after`, oldest first.
    async fn fetch(
        &self,
        device_pk: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>, StoreError>;
    /// Deletes envelopes of this device and queues delivery receipts for their senders.
    async fn ack(
        &self,
        device: &DeviceAuth,
        seqs: Vec<i64>,
        now: i64,
        expires_at: i64,
    ) -> Result<AckOutcome, StoreError>;
    /// Deletes expired envelopes and idempotency records older than `cutoff`; returns envelopes removed.
    async fn expire(&self, now: i64, idempotency_cutoff: i64) -> Result<u64, StoreError>;
    /// Queued envelopes in all mailboxes (for metrics).
    async fn queued_total(&self) -> Result<u64, StoreError>;
    /// Whether `viewer` may see `subject`'s presence: `subject` sent `viewer` a 1:1 message, or
    /// both are members of one group (or they are the same account).
    async fn presence_visible(&self, subject: &str, viewer: &str) -> Result<bool, StoreError>;
    /// Records a stored attachment against its uploader's quota.
    async fn record_attachment(
        &self,
        attachment_id: &str,
        user_id: &str,
        size: u64,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Bytes of attachments `user_id` uploaded after `since` (still stored).
    async fn attachment_bytes(&self, user_id: &str, since: i64) -> Result<u64, StoreError>;
    /// Forgets attachment records from `before` or earlier (their blobs expire with them).
    async fn expire_attachments(&self, before: i64) -> Result<u64, StoreError>;
    /// Waits for pending writes and closes connections.
    async fn close(&self);
}

/// Opens the store the URL names and runs its migrations.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    let url = config.database_url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(config).await?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::open(config).await?))
    }
}

/// Checks a group send's pairwise targets against the current devices of the members: each must
/// be one (else `extra`) with the registration id the sender believes (else `stale`).
pub(crate) fn check_pairwise(
    current: &BTreeMap<(String, u32), u32>,
    targets: &[Target],
) -> Result<(), DeviceMismatch> {
    let mut mismatch = DeviceMismatch::default();
    for t in targets {
        match current.get(&(t.user_id.clone(), t.device_id)) {
            None => mismatch.extra.push((t.user_id.clone(), t.device_id)),
            Some(reg) if *reg != t.registration_id => {
                mismatch.stale.push((t.user_id.clone(), t.device_id))
            }
            Some(_) => {}
        }
    }
    if mismatch.extra.is_empty() && mismatch.stale.is_empty() {
        Ok(())
    } else {
        Err(mismatch)
    }
}

/// Compares the devices a send covers with the current ones (Signal-Server's rules): missing or
/// extra devices first (409), then registration ids (410).
pub(crate) fn check_devices(
    current: &BTreeMap<(String, u32), u32>,
    targets: &[Target],
) -> Result<(), DeviceMismatch> {
    let covered: BTreeSet<(String, u32)> = targets
        .iter()
        .map(|t| (t.user_id.clone(), t.device_id))
        .collect();
    let mut mismatch = DeviceMismatch::default();
    for key in current.keys() {
        if !covered.contains(key) {
            mismatch.missing.push(key.clone());
        }
    }
    for key in &covered {
        if !current.contains_key(key) {
            mismatch.extra.push(key.clone());
        }
    }
    if !mismatch.missing.is_empty() || !mismatch.extra.is_empty() {
        return Err(mismatch);
    }
    for t in targets {
        if current.get(&(t.user_id.clone(), t.device_id)) != Some(&t.registration_id) {
            mismatch.stale.push((t.user_id.clone(), t.device_id));
        }
    }
    if mismatch.stale.is_empty() {
        Ok(())
    } else {
        Err(mismatch)
    }
}

pub(crate) fn to_u32(v: i64, what: &'static str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: &str, device: u32, reg: u32) -> Target {
        Target {
            user_id: user.into(),
            device_id: device,
            registration_id: reg,
            content: vec![],
        }
    }

    #[test]
    fn device_check_orders_409_before_410() {
        let current: BTreeMap<_, _> = [(("b".to_owned(), 1), 10), (("b".to_owned(), 2), 20)].into();
        assert_eq!(
            check_devices(&current, &[t("b", 1, 10), t("b", 2, 20)]),
            Ok(())
        );
        let e = check_devices(&current, &[t("b", 1, 11), t("b", 3, 30)]).unwrap_err();
        assert_eq!(e.missing, vec![("b".to_owned(), 2)]);
        assert_eq!(e.extra, vec![("b".to_owned(), 3)]);
        assert!(e.stale.is_empty());
        let e = check_devices(&current, &[t("b", 1, 11), t("b", 2, 20)]).unwrap_err();
        assert_eq!(e.stale, vec![("b".to_owned(), 1)]);
    }
}
