//! [`EncryptedStore`]: the store the SDK core uses. Plaintext partition keys and values go in;
//! keyed hashes and sealed values go down to the [`Backend`].

use std::future::Future;
use std::sync::Arc;

use rand_core::{CryptoRng, OsRng, RngCore};
use zeroize::Zeroizing;

use crate::backend::{Backend, BackendError, RangeQuery, WriteOp};
use crate::cipher::{PassphraseParams, StoreCipher, StoreCipherError};

/// Metadata entry holding the wrapped [`StoreCipher`].
pub const META_CIPHER: &str = "sotto-store/cipher";
/// Metadata entry holding the store format version, as ASCII decimal.
pub const META_FORMAT: &str = "sotto-store/format";
const FORMAT: &[u8] = b"1";

/// How the store's keys are wrapped: a 32-byte key the app keeps (OS keychain, secure enclave)
/// or a passphrase the user types.
pub enum StoreKey {
    /// A key the app holds.
    Raw(Zeroizing<[u8; 32]>),
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Raw(_) => "StoreKey::Raw(..)",
            Self::Passphrase(_) => "StoreKey::Passphrase(..)",
        })
    }
}

/// What can go wrong opening or using an [`EncryptedStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key or passphrase does not open this store (or was of the other kind).
    #[error("wrong store key or passphrase")]
    WrongKey,
    /// The storage engine failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A row failed authentication: altered on disk, or moved to another key, sort or table.
    #[error("a row of table {table:?} failed authentication")]
    Corrupt {
        /// The table the row was read from.
        table: String,
    },
    /// The wrapped key in the metadata is damaged or has parameters out of bounds.
    #[error("the store's wrapped key is unusable: {0}")]
    KeyBlob(#[source] StoreCipherError),
    /// The store was written in a format this build does not read.
    #[error("unsupported store format {0:?}")]
    UnsupportedFormat(String),
    /// The transaction was started on another store.
    #[error("transaction belongs to another store")]
    ForeignTransaction,
}

/// The encrypted store: cheap to clone (clones share the backend and the cipher).
#[derive(Clone)]
pub struct EncryptedStore {
    backend: Arc<dyn Backend>,
    cipher: Arc<StoreCipher>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            backend: _,
            cipher: _,
        } = self;
        f.debug_struct("EncryptedStore").finish_non_exhaustive()
    }
}

/// The associated-data key of a row: the partition's keyed hash and the sort, so a sealed value
/// cannot be moved to another partition or position.
fn row_key(partition_hash: &[u8], sort: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(partition_hash.len() + 8);
    key.extend_from_slice(partition_hash);
    key.extend_from_slice(&sort.to_be_bytes());
    key
}

fn map_unwrap_error(e: StoreCipherError) -> StoreError {
    match e {
        StoreCipherError::WrongKey | StoreCipherError::WrongKeyKind { .. } => StoreError::WrongKey,
        other => StoreError::KeyBlob(other),
    }
}

/// Randomness drawn before the first await, so the returned futures never hold the caller's RNG
/// (and stay `Send` whatever RNG is passed).
struct Wrapping {
    cipher: StoreCipher,
    salt: [u8; 16],
    nonce: [u8; 12],
}

impl Wrapping {
    fn draw(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let cipher = StoreCipher::generate(rng);
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut nonce);
        Self {
            cipher,
            salt,
            nonce,
        }
    }

    fn wrap(
        &self,
        cipher: &StoreCipher,
        key: &StoreKey,
        params: PassphraseParams,
    ) -> Result<Vec<u8>, StoreError> {
        match key {
            StoreKey::Raw(k) => Ok(cipher.wrap_with_key_parts(k, &self.nonce)),
            StoreKey::Passphrase(p) => cipher
                .wrap_with_passphrase_parts(p, params, &self.salt, &self.nonce)
                .map_err(StoreError::KeyBlob),
        }
    }
}

impl EncryptedStore {
    /// Opens the store. The first time, generates a [`StoreCipher`] and keeps it wrapped under
    /// `key` in the backend's metadata; later, unwraps it. A wrong key or passphrase is
    /// [`StoreError::WrongKey`], never garbage. New passphrase stores use
    /// [`PassphraseParams::default`]; opening with a passphrase runs Argon2id (about a quarter of
    /// a second natively at the default cost) on the calling task.
    pub fn open(
        backend: Arc<dyn Backend>,
        key: StoreKey,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> impl Future<Output = Result<Self, StoreError>> {
        Self::open_with_params(backend, key, PassphraseParams::default(), rng)
    }

    /// [`open`](Self::open), creating a new passphrase store at the given Argon2id cost (an
    /// existing store keeps the cost it was wrapped with).
    pub fn open_with_params(
        backend: Arc<dyn Backend>,
        key: StoreKey,
        params: PassphraseParams,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> impl Future<Output = Result<Self, StoreError>> {
        let fresh = Wrapping::draw(rng);
        async move {
            if let Some(format) = backend.meta_get(META_FORMAT).await? {
                if format != FORMAT {
                    return Err(StoreError::UnsupportedFormat(
                        String::from_utf8_lossy(&format).into_owned(),
                    ));
                }
            }
            let cipher = match backend.meta_get(META_CIPHER).await? {
                Some(blob) => match &key {
                    StoreKey::Raw(k) => StoreCipher::unwrap_with_key(&blob, k),
                    StoreKey::Passphrase(p) => StoreCipher::unwrap_with_passphrase(&blob, p),
                }
                .map_err(map_unwrap_error)?,
                None => {
                    let blob = fresh.wrap(&fresh.cipher, &key, params)?;
                    backend.meta_put(META_FORMAT, FORMAT).await?;
                    backend.meta_put(META_CIPHER, &blob).await?;
                    let Wrapping { cipher, .. } = fresh;
                    cipher
                }
            };
            Ok(Self {
                backend,
                cipher: Arc::new(cipher),
            })
        }
    }

    /// Rewraps the store's keys under a new key or passphrase (at the default Argon2id cost).
    /// Rows are untouched: only the metadata blob changes.
    pub fn change_key(
        &self,
        new_key: StoreKey,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> impl Future<Output = Result<(), StoreError>> {
        let fresh = Wrapping::draw(rng);
        let this = self.clone();
        async move {
            let blob = fresh.wrap(&this.cipher, &new_key, PassphraseParams::default())?;
            this.backend.meta_put(META_CIPHER, &blob).await?;
            Ok(())
        }
    }

    /// The keyed hash the backend stores for a plaintext partition key of `table`.
    pub fn partition_hash(&self, table: &str, partition: &[u8]) -> [u8; 32] {
        self.cipher.hash_key(table, partition)
    }

    fn open_row(
        &self,
        table: &str,
        partition_hash: &[u8],
        sort: u64,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.cipher
            .open(table, &row_key(partition_hash, sort), sealed)
            .map_err(|_| StoreError::Corrupt {
                table: table.to_owned(),
            })
    }

    /// One row's plaintext.
    pub async fn get(
        &self,
        table: &str,
        partition: &[u8],
        sort: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let hash = self.partition_hash(table, partition);
        match self.backend.get(table, &hash, sort).await? {
            Some(sealed) => self.open_row(table, &hash, sort, &sealed).map(Some),
            None => Ok(None),
        }
    }

    /// Rows of one partition (see [`RangeQuery`]), opened.
    pub async fn range(
        &self,
        table: &str,
        partition: &[u8],
        query: RangeQuery,
    ) -> Result<Vec<(u64, Zeroizing<Vec<u8>>)>, StoreError> {
        let hash = self.partition_hash(table, partition);
        let rows = self.backend.range(table, &hash, query).await?;
        rows.into_iter()
            .map(|(sort, sealed)| Ok((sort, self.open_row(table, &hash, sort, &sealed)?)))
            .collect()
    }

    /// Every row of a table, opened. Partitions come back only as hashes, so values must carry
    /// whatever the caller needs to know about their key.
    pub async fn scan_table(
        &self,
        table: &str,
    ) -> Result<Vec<(u64, Zeroizing<Vec<u8>>)>, StoreError> {
        let rows = self.backend.scan_table(table).await?;
        rows.into_iter()
            .map(|(hash, sort, sealed)| Ok((sort, self.open_row(table, &hash, sort, &sealed)?)))
            .collect()
    }

    /// A new transaction: values are sealed as they are added, so it holds no plaintext.
    pub fn transaction(&self) -> Transaction {
        Transaction {
            cipher: Arc::clone(&self.cipher),
            ops: Vec::new(),
        }
    }

    /// Applies a transaction, all or nothing.
    pub async fn commit(&self, tx: Transaction) -> Result<(), StoreError> {
        if !Arc::ptr_eq(&tx.cipher, &self.cipher) {
            return Err(StoreError::ForeignTransaction);
        }
        if tx.ops.is_empty() {
            return Ok(());
        }
        self.backend.write(tx.ops).await?;
        Ok(())
    }
}

/// Changes to apply together with [`EncryptedStore::commit`]. Keys are plaintext here; they are
/// hashed (and values sealed, under fresh random nonces) as each op is added.
pub struct Transaction {
    cipher: Arc<StoreCipher>,
    ops: Vec<WriteOp>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { cipher: _, ops } = self;
        f.debug_struct("Transaction")
            .field("ops", &ops.len())
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Insert or replace the row `(table, partition, sort)`.
    pub fn put(&mut self, table: &str, partition: &[u8], sort: u64, value: &[u8]) -> &mut Self {
        let hash = self.cipher.hash_key(table, partition);
        let sealed = self
            .cipher
            .seal(table, &row_key(&hash, sort), value, &mut OsRng);
        self.ops.push(WriteOp::Put {
            table: table.to_owned(),
            partition: hash.to_vec(),
            sort,
            value: sealed,
        });
        self
    }

    /// Remove one row (nothing happens if it is absent).
    pub fn delete(&mut self, table: &str, partition: &[u8], sort: u64) -> &mut Self {
        let hash = self.cipher.hash_key(table, partition);
        self.ops.push(WriteOp::Delete {
            table: table.to_owned(),
            partition: hash.to_vec(),
            sort,
        });
        self
    }

    /// Remove every row of a partition.
    pub fn delete_partition(&mut self, table: &str, partition: &[u8]) -> &mut Self {
        let hash = self.cipher.hash_key(table, partition);
        self.ops.push(WriteOp::DeletePartition {
            table: table.to_owned(),
            partition: hash.to_vec(),
        });
        self
    }

    /// Number of ops so far.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no op was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const FAST: PassphraseParams = PassphraseParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn raw(b: u8) -> StoreKey {
        StoreKey::Raw(Zeroizing::new([b; 32]))
    }

    fn pass(p: &str) -> StoreKey {
        StoreKey::Passphrase(Zeroizing::new(p.to_owned()))
    }

    async fn open(
        backend: &Arc<MemoryBackend>,
        key: StoreKey,
    ) -> Result<EncryptedStore, StoreError> {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        EncryptedStore::open_with_params(backend.clone(), key, FAST, &mut rng).await
    }

    #[tokio::test]
    async fn put_get_range_scan_delete() {
        let backend = Arc::new(MemoryBackend::new());
        let store = open(&backend, raw(1)).await.unwrap();
        let mut tx = store.transaction();
        for i in 0..5u64 {
            tx.put("messages", b"conv-a", i, format!("a{i}").as_bytes());
        }
        tx.put("messages", b"conv-b", 0, b"b0");
        tx.put("contacts", b"alice", 0, b"Alice");
        assert_eq!(tx.len(), 7);
        store.commit(tx).await.unwrap();

        assert_eq!(
            store
                .get("messages", b"conv-a", 3)
                .await
                .unwrap()
                .unwrap()
                .as_slice(),
            b"a3"
        );
        assert!(store.get("messages", b"conv-a", 9).await.unwrap().is_none());
        let page = store
            .range("messages", b"conv-a", RangeQuery::descending(2).before(4))
            .await
            .unwrap();
        let page: Vec<(u64, Vec<u8>)> = page.into_iter().map(|(s, v)| (s, v.to_vec())).collect();
        assert_eq!(page, vec![(3, b"a3".to_vec()), (2, b"a2".to_vec())]);
        let contacts = store.scan_table("contacts").await.unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].1.as_slice(), b"Alice");

        let mut tx = store.transaction();
        tx.delete("messages", b"conv-a", 0)
            .delete_partition("messages", b"conv-b");
        store.commit(tx).await.unwrap();
        assert!(store.get("messages", b"conv-a", 0).await.unwrap().is_none());
        assert!(store.get("messages", b"conv-b", 0).await.unwrap().is_none());
        assert_eq!(store.scan_table("messages").await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn backend_sees_no_plaintext() {
        let backend = Arc::new(MemoryBackend::new());
        let store = open(&backend, raw(1)).await.unwrap();
        let mut tx = store.transaction();
        tx.put("messages", b"conversation-with-bob", 7, b"meet me at noon");
        store.commit(tx).await.unwrap();
        let rows = backend.scan_table("messages").await.unwrap();
        assert_eq!(rows.len(), 1);
        let (partition, sort, value) = &rows[0];
        assert_eq!(*sort, 7);
        assert_eq!(partition.len(), 32);
        assert!(!contains(value, b"meet me"));
        assert!(!contains(partition, b"bob"));
        assert_ne!(partition.as_slice(), b"conversation-with-bob");
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn reopen_with_right_and_wrong_keys() {
        let backend = Arc::new(MemoryBackend::new());
        {
            let store = open(&backend, pass("hunter2")).await.unwrap();
            let mut tx = store.transaction();
            tx.put("t", b"k", 1, b"v");
            store.commit(tx).await.unwrap();
        }
        let store = open(&backend, pass("hunter2")).await.unwrap();
        assert_eq!(
            store.get("t", b"k", 1).await.unwrap().unwrap().as_slice(),
            b"v"
        );
        assert!(matches!(
            open(&backend, pass("hunter3")).await,
            Err(StoreError::WrongKey)
        ));
        assert!(matches!(
            open(&backend, raw(1)).await,
            Err(StoreError::WrongKey)
        ));

        let raw_backend = Arc::new(MemoryBackend::new());
        open(&raw_backend, raw(1)).await.unwrap();
        assert!(matches!(
            open(&raw_backend, raw(2)).await,
            Err(StoreError::WrongKey)
        ));
        assert!(matches!(
            open(&raw_backend, pass("x")).await,
            Err(StoreError::WrongKey)
        ));
    }

    #[tokio::test]
    async fn change_key_rewraps() {
        let backend = Arc::new(MemoryBackend::new());
        let store = open(&backend, raw(1)).await.unwrap();
        let mut tx = store.transaction();
        tx.put("t", b"k", 1, b"v");
        store.commit(tx).await.unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        store.change_key(raw(2), &mut rng).await.unwrap();
        assert!(matches!(
            open(&backend, raw(1)).await,
            Err(StoreError::WrongKey)
        ));
        let again = open(&backend, raw(2)).await.unwrap();
        assert_eq!(
            again.get("t", b"k", 1).await.unwrap().unwrap().as_slice(),
            b"v"
        );
    }

    #[tokio::test]
    async fn moved_rows_fail_to_open() {
        let backend = Arc::new(MemoryBackend::new());
        let store = open(&backend, raw(1)).await.unwrap();
        let mut tx = store.transaction();
        tx.put("t", b"a", 1, b"for a").put("t", b"b", 1, b"for b");
        tx.put("u", b"a", 1, b"in u");
        store.commit(tx).await.unwrap();
        let ha = store.partition_hash("t", b"a");
        let hb = store.partition_hash("t", b"b");
        let sealed_a = backend.get("t", &ha, 1).await.unwrap().unwrap();

        // a's value under b's key, under another sort, and in another table.
        for (table, partition, sort) in [("t", hb.to_vec(), 1), ("t", ha.to_vec(), 2)] {
            backend
                .write(vec![WriteOp::Put {
                    table: table.into(),
                    partition,
                    sort,
                    value: sealed_a.clone(),
                }])
                .await
                .unwrap();
        }
        let hu = store.partition_hash("u", b"a");
        backend
            .write(vec![WriteOp::Put {
                table: "u".into(),
                partition: hu.to_vec(),
                sort: 1,
                value: sealed_a.clone(),
            }])
            .await
            .unwrap();
        assert!(matches!(
            store.get("t", b"b", 1).await,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.get("t", b"a", 2).await,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.get("u", b"a", 1).await,
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(
            store.get("t", b"a", 1).await.unwrap().unwrap().as_slice(),
            b"for a"
        );
    }

    #[tokio::test]
    async fn foreign_transactions_and_formats_are_refused() {
        let a = open(&Arc::new(MemoryBackend::new()), raw(1)).await.unwrap();
        let b = open(&Arc::new(MemoryBackend::new()), raw(1)).await.unwrap();
        let mut tx = a.transaction();
        tx.put("t", b"k", 1, b"v");
        assert!(matches!(
            b.commit(tx).await,
            Err(StoreError::ForeignTransaction)
        ));

        let backend = Arc::new(MemoryBackend::new());
        backend.meta_put(META_FORMAT, b"9").await.unwrap();
        assert!(matches!(
            open(&backend, raw(1)).await,
            Err(StoreError::UnsupportedFormat(f)) if f == "9"
        ));
        let backend = Arc::new(MemoryBackend::new());
        backend.meta_put(META_CIPHER, &[1, 1, 0]).await.unwrap();
        assert!(matches!(
            open(&backend, raw(1)).await,
            Err(StoreError::KeyBlob(StoreCipherError::Malformed))
        ));
    }

    #[test]
    fn open_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_send(EncryptedStore::open(backend, raw(1), &mut rng));
    }

    #[test]
    fn debug_hides_keys() {
        assert_eq!(format!("{:?}", raw(0xAB)), "StoreKey::Raw(..)");
        assert_eq!(format!("{:?}", pass("secret")), "StoreKey::Passphrase(..)");
    }
}
