//! SQLite: writes are committed in groups by one writer at a time, plus a pool of reader
//! connections (WAL lets them read while the writer writes). The hot paths (sends, acks, group
//! sends) run on the writer thread of `sqlite_writer.rs`, which calls SQLite directly; the rarer
//! writes keep their sqlx code on a second writer connection that takes turns with that thread.
//!
//! Group commit is what makes `synchronous=FULL` affordable: nobody is answered before the single
//! `COMMIT` (one fsync) that makes the whole group durable. On the sqlx connection every operation
//! runs inside its own savepoint of the shared transaction, and one that fails rolls back to its
//! savepoint only; the writer thread's operations decide every refusal before their first write
//! instead (see `sqlite_writer.rs`).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    to_u32, AckOutcome, ClaimedBundle, DeviceAuth, DeviceRow, KeyUpdate, NewUser, SendBatch,
    SendOutcome, SetKeysOutcome, Store, StoreError, StoredEnvelope, StoredKey, UserCredentials,
    KIND_EC, KIND_KEM,
};
use crate::config::{Config, SqliteSync};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
type Work =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// Most operations one commit groups.
const MAX_GROUP: usize = 512;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[path = "sqlite_groups.rs"]
mod groups;
#[path = "sqlite_writer.rs"]
mod writer;

/// The SQLite store.
pub struct SqliteStore {
    readers: SqlitePool,
    writer: mpsc::Sender<Work>,
    /// The writer thread (see [`writer`]).
    direct: mpsc::Sender<writer::Job>,
    tokens: std::sync::Mutex<TokenCache>,
    contacts: super::ContactCache,
}

/// Most tokens the cache holds; past this it starts over.
const MAX_CACHED_TOKENS: usize = 200_000;

/// Token hash → device, so authenticating a request reads no database. This process is the only
/// writer of the file, and the only statement that removes tokens is the device delete in
/// [`Store::remove_device`], which drops the device's entries once it has committed. A lookup
/// that read the database before that commit finds the generation changed and does not fill.
#[derive(Default)]
struct TokenCache {
    map: std::collections::HashMap<[u8; 32], DeviceAuth>,
    generation: u64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and runs migrations.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&config.database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(match config.sqlite_synchronous {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            });
        let mut writer = SqliteConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut writer).await?;
        let direct_conn = open_direct(&options)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(config.db_max_connections)
            .connect_with(options.clone().read_only(true))
            .await?;
        let (direct, direct_rx) = mpsc::channel(4096);
        // `synchronous=full`: the writer thread commits without syncing and its syncer syncs the
        // WAL before answering (see `writer`).
        let wal = (config.sqlite_synchronous == SqliteSync::Full).then(|| {
            let mut name = options.get_filename().as_os_str().to_owned();
            name.push("-wal");
            std::path::PathBuf::from(name)
        });
        writer::spawn(direct_conn, direct_rx, wal)
            .map_err(|e| StoreError::Commit(format!("cannot start the writer: {e}")))?;
        let (tx, rx) = mpsc::channel(4096);
        // The writers exit when the store (the last sender) is dropped.
        tokio::spawn(writer_loop(writer, rx, direct.clone()));
        Ok(Self {
            readers,
            writer: tx,
            direct,
            tokens: std::sync::Mutex::default(),
            contacts: super::ContactCache::default(),
        })
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        match self.tokens.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs `f` on the writer thread inside its next group commit; answers after the commit. An
    /// `Ok` value for which `keep` is false is answered with its changes rolled back.
    async fn write_direct<T, F>(&self, keep: fn(&T) -> bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let op: writer::Op = Box::new(move |conn| answer_after_commit(f(conn), keep, tx));
        self.direct
            .send(writer::Job::Op(op))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the sqlx writer connection inside its next group commit; answers after the
    /// commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.write_if(|_| true, f).await
    }

    /// Like [`Self::write`], but an `Ok` value for which `keep` is false is answered with its
    /// changes rolled back.
    async fn write_if<T, F>(&self, keep: fn(&T) -> bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let work: Work = Box::new(move |conn| {
            Box::pin(async move { answer_after_commit(f(conn).await, keep, tx) })
        });
        self.writer
            .send(work)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Whether to keep an operation's changes, and how to answer its caller with `result` once the
/// group's commit succeeded or failed.
fn answer_after_commit<T: Send + 'static>(
    result: Result<T, StoreError>,
    keep: fn(&T) -> bool,
    tx: oneshot::Sender<Result<T, StoreError>>,
) -> (bool, Finish) {
    let ok = result.as_ref().is_ok_and(keep);
    let finish: Finish = Box::new(move |commit| {
        let out = match commit {
            Ok(()) => result,
            Err(e) => result.and(Err(StoreError::Commit(e))),
        };
        let _ = tx.send(out);
    });
    (ok, finish)
}

/// Opens the writer thread's connection. It commits with `synchronous=normal` in both modes:
/// under `full`, its syncer thread syncs the WAL before any caller is answered.
fn open_direct(options: &SqliteConnectOptions) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(options.get_filename())?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Checkpoints every 8,000 WAL pages (~32 MiB) instead of SQLite's 1,000: the same hot pages
    // (mailbox indexes, device rows) are rewritten by every group, and a checkpoint copies each
    // only once however often it changed (measured: ~10% more sends per second).
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 8000;",
    )?;
    // A first read opens (creating if need be) the WAL file that the syncer opens next.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

async fn writer_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Work>,
    direct: mpsc::Sender<writer::Job>,
) {
    let mut group = Vec::with_capacity(64);
    let mut finishes: Vec<Finish> = Vec::with_capacity(64);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        // The writer thread commits what it holds, then waits until this group is done.
        let (go, go_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel::<()>();
        let turn = writer::Job::Turn { go, done: done_rx };
        if direct.send(turn).await.is_err() || go_rx.await.is_err() {
            // The store is closing: dropping the work answers its callers with `Closed`.
            group.clear();
            continue;
        }
        // Statements between operations are batched into one call each: the per-statement round
        // trip to SQLite's worker thread is the writer's main cost.
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE; SAVEPOINT op")
            .execute(&mut conn)
            .await
        {
            tracing::error!(error = %e, "sqlite: cannot begin a transaction");
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            // Dropping the work answers its callers with `Closed`.
            group.clear();
            continue;
        }
        let last = group.len().saturating_sub(1);
        let mut broken = false;
        for (i, work) in group.drain(..).enumerate() {
            if broken {
                // SQLite may have rolled the whole transaction back: running the rest would
                // autocommit them statement by statement. Dropping the work answers its caller
                // with `Closed`, and nothing of it is stored.
                continue;
            }
            let (ok, finish) = work(&mut conn).await;
            finishes.push(finish);
            let between = match (ok, i == last) {
                (true, false) => "RELEASE op; SAVEPOINT op",
                (true, true) => "RELEASE op; COMMIT",
                (false, false) => "ROLLBACK TO op; RELEASE op; SAVEPOINT op",
                (false, true) => "ROLLBACK TO op; RELEASE op; COMMIT",
            };
            if let Err(e) = sqlx::query(between).execute(&mut conn).await {
                tracing::error!(error = %e, "sqlite: savepoint or commit failed");
                broken = true;
            }
        }
        let commit = if broken {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            Err("transaction aborted".to_owned())
        } else {
            Ok(())
        };
        drop(done);
        for finish in finishes.drain(..) {
            finish(commit.clone());
        }
    }
    let _ = conn.close().await;
}

fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key_id: to_u32(row.try_get("key_id")?, "key_id")?,
        public_key: row.try_get("public_key")?,
        signature: row.try_get("signature")?,
    })
}

fn envelope_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEnvelope, StoreError> {
    Ok(StoredEnvelope {
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        source_user: row.try_get("source_user")?,
        source_device: to_u32(row.try_get("source_device")?, "source_device")?,
        server_message_id: row.try_get("server_message_id")?,
        client_message_id: row.try_get("client_message_id")?,
        server_ts: row.try_get("server_ts")?,
        content: row.try_get("content")?,
    })
}

async fn replace_keys(
    conn: &mut SqliteConnection,
    device_pk: i64,
    keys: &KeyUpdate,
) -> Result<(), StoreError> {
    let signed = [
        (KIND_EC, keys.signed_pre_key.as_ref()),
        (KIND_KEM, keys.kem_last_resort.as_ref()),
    ];
    for (kind, key) in signed {
        if let Some(key) = key {
            sqlx::query(
                "INSERT OR REPLACE INTO signed_prekeys (device_pk, kind, key_id, public_key, signature) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(device_pk)
            .bind(kind)
            .bind(i64::from(key.key_id))
            .bind(&key.public_key)
            .bind(&key.signature)
            .execute(&mut *conn)
            .await?;
        }
    }
    let one_time = [
        (KIND_EC, keys.pre_keys.as_ref()),
        (KIND_KEM, keys.kem_pre_keys.as_ref()),
    ];
    for (kind, list) in one_time {
        if let Some(list) = list {
            sqlx::query("DELETE FROM one_time_prekeys WHERE device_pk = ? AND kind = ?")
                .bind(device_pk)
                .bind(kind)
                .execute(&mut *conn)
                .await?;
            for key in list {
                sqlx::query(
                    "INSERT OR REPLACE INTO one_time_prekeys (device_pk, kind, key_id, public_key, signature) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(device_pk)
                .bind(kind)
                .bind(i64::from(key.key_id))
                .bind(&key.public_key)
                .bind(&key.signature)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

async fn set_keys_tx(
    conn: &mut SqliteConnection,
    device: DeviceAuth,
    keys: KeyUpdate,
) -> Result<SetKeysOutcome, StoreError> {
    let stored: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT identity_key FROM users WHERE id = ?")
            .bind(&device.user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let stored = stored.flatten();
    if stored.as_deref() != Some(keys.identity_key.as_slice()) {
        if stored.is_some() {
            let devices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = ?")
                .bind(&device.user_id)
                .fetch_one(&mut *conn)
                .await?;
            if devices > 1 {
                return Ok(SetKeysOutcome::IdentityMismatch);
            }
            // A new identity invalidates every key signed by the old one.
            sqlx::query("DELETE FROM signed_prekeys WHERE device_pk = ?")
                .bind(device.pk)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM one_time_prekeys WHERE device_pk = ?")
                .bind(device.pk)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("UPDATE users SET identity_key = ? WHERE id = ?")
            .bind(&keys.identity_key)
            .bind(&device.user_id)
            .execute(&mut *conn)
            .await?;
    }
    replace_keys(conn, device.pk, &keys).await?;
    Ok(SetKeysOutcome::Stored)
}

async fn claim_tx(
    conn: &mut SqliteConnection,
    user_id: String,
    device_id: Option<u32>,
) -> Result<Option<(Vec<u8>, Vec<ClaimedBundle>)>, StoreError> {
    let identity: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT identity_key FROM users WHERE id = ?")
            .bind(&user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(identity) = identity.flatten() else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT pk, device_id, registration_id FROM devices WHERE user_id = ? \
         AND (? IS NULL OR device_id = ?) ORDER BY device_id",
    )
    .bind(&user_id)
    .bind(device_id.map(i64::from))
    .bind(device_id.map(i64::from))
    .fetch_all(&mut *conn)
    .await?;
    let mut bundles = Vec::with_capacity(rows.len());
    for row in rows {
        let pk: i64 = row.try_get("pk")?;
        let signed = sqlx::query(
            "SELECT key_id, public_key, signature FROM signed_prekeys WHERE device_pk = ? AND kind = ?",
        )
        .bind(pk)
        .bind(KIND_EC)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(signed) = signed else { continue };
        let mut claimed = [None, None];
        for (slot, kind) in claimed.iter_mut().zip([KIND_EC, KIND_KEM]) {
            let row = sqlx::query(
                "DELETE FROM one_time_prekeys WHERE device_pk = ?1 AND kind = ?2 AND key_id = \
                 (SELECT MIN(key_id) FROM one_time_prekeys WHERE device_pk = ?1 AND kind = ?2) \
                 RETURNING key_id, public_key, signature",
            )
            .bind(pk)
            .bind(kind)
            .fetch_optional(&mut *conn)
            .await?;
            *slot = row.as_ref().map(key_from_row).transpose()?;
        }
        let [pre_key, mut kem_pre_key] = claimed;
        if kem_pre_key.is_none() {
            let row = sqlx::query(
                "SELECT key_id, public_key, signature FROM signed_prekeys WHERE device_pk = ? AND kind = ?",
            )
            .bind(pk)
            .bind(KIND_KEM)
            .fetch_optional(&mut *conn)
            .await?;
            kem_pre_key = row.as_ref().map(key_from_row).transpose()?;
        }
        bundles.push(ClaimedBundle {
            device_id: to_u32(row.try_get("device_id")?, "device_id")?,
            registration_id: to_u32(row.try_get("registration_id")?, "registration_id")?,
            signed_pre_key: key_from_row(&signed)?,
            pre_key,
            kem_pre_key,
        });
    }
    Ok(Some((identity, bundles)))
}

#[async_trait]
impl Store for SqliteStore {
    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<bool, StoreError> {
        let user = user.clone();
        self.write(move |conn| {
            Box::pin(async move {
                // The single writer serialises registrations: check, then insert.
                let taken: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM users WHERE lower(username) = lower(?)",
                )
                .bind(&user.username)
                .fetch_one(&mut *conn)
                .await?;
                if taken > 0 {
                    return Ok(false);
                }
                let done = sqlx::query(
                    "INSERT INTO users (id, username, email, password_hash, created_at) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (username) DO NOTHING",
                )
                .bind(&user.id)
                .bind(&user.username)
                .bind(&user.email)
                .bind(&user.password_hash)
                .bind(user.created_at)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn user_credentials(
        &self,
        username: &str,
    ) -> Result<Option<UserCredentials>, StoreError> {
        // Any spelling finds the account; where accounts from before case-insensitive names
        // differ only by case, the exact spelling wins.
        let row = sqlx::query(
            "SELECT id, password_hash FROM users WHERE lower(username) = lower(?1) \
             ORDER BY (username = ?1) DESC, created_at LIMIT 1",
        )
        .bind(username)
        .fetch_optional(&self.readers)
        .await?;
        row.map(|row| {
            Ok(UserCredentials {
                id: row.try_get("id")?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn user_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username FROM users WHERE lower(username) = lower(?1) \
             ORDER BY (username = ?1) DESC, created_at LIMIT 1",
        )
        .bind(username)
        .fetch_optional(&self.readers)
        .await?;
        row.map(|row| Ok((row.try_get("id")?, row.try_get("username")?)))
            .transpose()
    }

    async fn username(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT username FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_optional(&self.readers)
                .await?,
        )
    }

    async fn user_exists(&self, user_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_one(&self.readers)
            .await?;
        Ok(n > 0)
    }

    async fn create_first_device(
        &self,
        user_id: &str,
        registration_id: u32,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        let user_id = user_id.to_owned();
        let token_hash = token_hash.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                let existing: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = ?")
                        .bind(&user_id)
                        .fetch_one(&mut *conn)
                        .await?;
                if existing > 0 {
                    return Ok(None);
                }
                let pk: i64 = sqlx::query_scalar(
                    "INSERT INTO devices (user_id, device_id, registration_id, created_at) VALUES (?, 1, ?, ?) RETURNING pk",
                )
                .bind(&user_id)
                .bind(i64::from(registration_id))
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
                sqlx::query("INSERT INTO tokens (token_hash, device_pk, created_at) VALUES (?, ?, ?)")
                    .bind(&token_hash)
                    .bind(pk)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(Some(1))
            })
        })
        .await
    }

    async fn device_by_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<DeviceAuth>, StoreError> {
        let generation = {
            let cache = self.tokens();
            if let Some(device) = cache.map.get(token_hash) {
                return Ok(Some(device.clone()));
            }
            cache.generation
        };
        let row = sqlx::query(
            "SELECT d.pk, d.user_id, d.device_id FROM tokens t JOIN devices d ON d.pk = t.device_pk \
             WHERE t.token_hash = ?",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(&self.readers)
        .await?;
        let device = row
            .map(|row| {
                Ok::<_, StoreError>(DeviceAuth {
                    pk: row.try_get("pk")?,
                    user_id: row.try_get("user_id")?,
                    device_id: to_u32(row.try_get("device_id")?, "device_id")?,
                })
            })
            .transpose()?;
        if let Some(device) = &device {
            let mut cache = self.tokens();
            if cache.generation == generation {
                if cache.map.len() >= MAX_CACHED_TOKENS {
                    cache.map.clear();
                }
                cache.map.insert(*token_hash, device.clone());
            }
        }
        Ok(device)
    }

    async fn remove_device(&self, device_pk: i64) -> Result<(), StoreError> {
        let removed = self
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM devices WHERE pk = ?")
                        .bind(device_pk)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await;
        // The delete took the device's tokens with it (or failed): forget them either way.
        let mut cache = self.tokens();
        cache.generation += 1;
        cache.map.retain(|_, device| device.pk != device_pk);
        drop(cache);
        removed
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT pk, device_id, registration_id, created_at FROM devices WHERE user_id = ? ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceRow {
                    pk: row.try_get("pk")?,
                    device_id: to_u32(row.try_get("device_id")?, "device_id")?,
                    registration_id: to_u32(row.try_get("registration_id")?, "registration_id")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn identity_key(&self, user_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT identity_key FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_optional(&self.readers)
                .await?;
        Ok(key.flatten())
    }

    async fn set_keys(
        &self,
        device: &DeviceAuth,
        keys: &KeyUpdate,
    ) -> Result<SetKeysOutcome, StoreError> {
        let (device, keys) = (device.clone(), keys.clone());
        self.write(move |conn| Box::pin(set_keys_tx(conn, device, keys)))
            .await
    }

    async fn key_counts(&self, device_pk: i64) -> Result<(u32, u32), StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(kind = 0), 0) AS ec, COALESCE(SUM(kind = 1), 0) AS kem \
             FROM one_time_prekeys WHERE device_pk = ?",
        )
        .bind(device_pk)
        .fetch_one(&self.readers)
        .await?;
        Ok((
            to_u32(row.try_get("ec")?, "count")?,
            to_u32(row.try_get("kem")?, "count")?,
        ))
    }

    async fn claim_bundles(
        &self,
        user_id: &str,
        device_id: Option<u32>,
    ) -> Result<Option<(Vec<u8>, Vec<ClaimedBundle>)>, StoreError> {
        let user_id = user_id.to_owned();
        self.write(move |conn| Box::pin(claim_tx(conn, user_id, device_id)))
            .await
    }

    async fn send(&self, batch: SendBatch) -> Result<SendOutcome, StoreError> {
        // Only an accepted send keeps its changes (the idempotency record and the sequences it
        // reserved).
        let (from, to) = (batch.sender.user_id.clone(), batch.recipient.clone());
        let record_contact = self.contacts.needs(&from, &to);
        let outcome = self
            .write_direct(
                |outcome| matches!(outcome, SendOutcome::Accepted { .. }),
                move |conn| writer::send(conn, batch, record_contact),
            )
            .await?;
        if record_contact && matches!(outcome, SendOutcome::Accepted { .. }) {
            self.contacts.remember(&from, &to);
        }
        Ok(outcome)
    }

    async fn unread(&self, device_pk: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE device_pk = ?")
            .bind(device_pk)
            .fetch_one(&self.readers)
            .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("count"))
    }

    async fn fetch(
        &self,
        device_pk: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, source_user, source_device, server_message_id, client_message_id, server_ts, content \
             FROM envelopes WHERE device_pk = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(device_pk)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(envelope_from_row).collect()
    }

    async fn ack(
        &self,
        device: &DeviceAuth,
        seqs: Vec<i64>,
        now: i64,
        expires_at: i64,
    ) -> Result<AckOutcome, StoreError> {
        let device = device.clone();
        self.write_direct(
            |_| true,
            move |conn| writer::ack(conn, device, seqs, now, expires_at),
        )
        .await
    }

    async fn expire(&self, now: i64, idempotency_cutoff: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM envelopes WHERE expires_at <= ?")
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM sent_messages WHERE server_ts < ?")
                    .bind(idempotency_cutoff)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn queued_total(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes")
            .fetch_one(&self.readers)
            .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("count"))
    }

    async fn presence_visible(&self, subject: &str, viewer: &str) -> Result<bool, StoreError> {
        if subject == viewer {
            return Ok(true);
        }
        let visible: bool = sqlx::query_scalar(
            "SELECT (EXISTS (SELECT 1 FROM contacts WHERE user_id = ?1 AND contact_id = ?2) \
             OR EXISTS (SELECT 1 FROM group_members x JOIN group_members y ON y.group_id = x.group_id \
             WHERE x.user_id = ?1 AND y.user_id = ?2))",
        )
        .bind(subject)
        .bind(viewer)
        .fetch_one(&self.readers)
        .await?;
        Ok(visible)
    }

    async fn record_attachment(
        &self,
        attachment_id: &str,
        user_id: &str,
        size: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        let (id, user) = (attachment_id.to_owned(), user_id.to_owned());
        let size = i64::try_from(size).map_err(|_| StoreError::Corrupt("attachment size"))?;
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO attachment_uploads (attachment_id, user_id, size, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(&user)
                .bind(size)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn attachment_bytes(&self, user_id: &str, since: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size), 0) FROM attachment_uploads WHERE user_id = ? AND created_at > ?",
        )
        .bind(user_id)
        .bind(since)
        .fetch_one(&self.readers)
        .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("attachment bytes"))
    }

    async fn expire_attachments(&self, before: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM attachment_uploads WHERE created_at <= ?")
                    .bind(before)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn close(&self) {
        // A no-op write returns once everything queued before it is committed (its turn waits
        // for the writer thread's queue too).
        let _ = self.write(|_| Box::pin(async { Ok(()) })).await;
        self.readers.close().await;
    }
}
