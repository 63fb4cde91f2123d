//! The client's encrypted local store.
//!
//! Every backend (memory, SQLite, later the browser's IndexedDB) stores the same thing: rows of
//! opaque bytes. The [`EncryptedStore`] above them turns plaintext into that format with one
//! [`StoreCipher`]: partition keys become keyed hashes (HMAC-SHA256), values are sealed with
//! AES-256-GCM-SIV under random nonces with the table, partition hash and sort bound as
//! associated data, and the cipher's two keys are kept in the backend's metadata wrapped under a
//! key the app holds or a passphrase (Argon2id). The byte format is specified in
//! `docs/store-format.md`, so another implementation can read and write the same rows.
//!
//! ```text
//!  SDK core ── (table, partition, sort, plaintext) ──▶ EncryptedStore ──▶ Backend
//!                                                     │ hash_key(table, partition)   rows:
//!                                                     │ seal(table, hash‖sort, value) (table, hash, sort) → sealed
//!                                                     │                               meta:
//!                                                     └ StoreCipher (wrapped) ──────▶ "sotto-store/cipher"
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use sotto_store::{memory::MemoryBackend, EncryptedStore, RangeQuery, StoreKey};
//! use zeroize::Zeroizing;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sotto_store::StoreError> {
//! let backend = Arc::new(MemoryBackend::new());
//! let key = StoreKey::Raw(Zeroizing::new([7u8; 32])); // from the OS keychain
//! let store = EncryptedStore::open(backend, key, &mut rand_core::OsRng).await?;
//!
//! let mut tx = store.transaction();
//! tx.put("messages", b"conversation-1", 1, b"hello");
//! tx.put("messages", b"conversation-1", 2, b"world");
//! store.commit(tx).await?;
//!
//! let newest = store
//!     .range("messages", b"conversation-1", RangeQuery::descending(1))
//!     .await?;
//! assert_eq!(newest[0].1.as_slice(), b"world");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod backend;
pub mod cipher;
mod encrypted;
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use backend::{Backend, BackendError, MaybeSendSync, RangeQuery, WriteOp};
pub use cipher::{PassphraseParams, StoreCipher, StoreCipherError};
pub use encrypted::{EncryptedStore, StoreError, StoreKey, Transaction, META_CIPHER, META_FORMAT};
pub use zeroize::Zeroizing;
