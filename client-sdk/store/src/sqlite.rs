//! [`SqliteBackend`]: one SQLite file in WAL mode, through sqlx. Native only; needs a tokio
//! runtime (the writer is a task).
//!
//! Writes go to a single writer task that commits whatever is queued in one SQLite transaction
//! (group commit): each [`Backend::write`] runs inside its own savepoint, so it is all or nothing
//! by itself, and its caller is answered only after the shared `COMMIT`. Under load many writes
//! share one commit (and, with [`Durability::Full`], one fsync). Reads use a small pool of
//! read-only connections, which WAL lets run beside the writer.
//!
//! Layout (see `docs/store-format.md`): `rows(tbl, part, sort, value)` keyed by
//! `(tbl, part, sort)`, and `meta(name, value)`. `sort` is stored as a signed integer with its top
//! bit flipped so SQLite's ordering matches `u64` ordering.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, BackendError, RangeQuery, WriteOp};

/// Most queued writes one commit takes.
const MAX_GROUP: usize = 256;
/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS rows (
        tbl TEXT NOT NULL,
        part BLOB NOT NULL,
        sort INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (tbl, part, sort)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (
        name TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    PRAGMA user_version = 1;";

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before the caller is answered; survives power
    /// loss. Group commit shares the fsync among concurrent writes.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits survive the app crashing, and the file is always
    /// consistent, but the last commits may be lost if the OS crashes or power fails.
    Normal,
}

/// How to open a [`SqliteBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// fsync policy.
    pub durability: Durability,
    /// Read-only connections for `get`, `range`, `scan_table` and `meta_get`.
    pub readers: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 4,
        }
    }
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

fn storage(e: sqlx::Error) -> BackendError {
    BackendError::Storage(Box::new(e))
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Storage(Box::new(Failed(msg.into())))
}

/// Maps `u64` onto SQLite's signed integers preserving order.
fn encode_sort(sort: u64) -> i64 {
    i64::from_be_bytes((sort ^ (1 << 63)).to_be_bytes())
}

fn decode_sort(stored: i64) -> u64 {
    u64::from_be_bytes(stored.to_be_bytes()) ^ (1 << 63)
}

enum Job {
    Write(Vec<WriteOp>, oneshot::Sender<Result<(), BackendError>>),
    Meta(String, Vec<u8>, oneshot::Sender<Result<(), BackendError>>),
}

/// The SQLite backend. Dropping it stops the writer once the queued writes are done.
pub struct SqliteBackend {
    readers: SqlitePool,
    writer: mpsc::Sender<Job>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            readers: _,
            writer: _,
        } = self;
        f.debug_struct("SqliteBackend").finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens (creating if missing) the database file at `path` with the default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if missing) the database file at `path`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, BackendError> {
        let connect = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            });
        let mut writer = SqliteConnection::connect_with(&connect)
            .await
            .map_err(storage)?;
        migrate(&mut writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .connect_with(connect.read_only(true))
            .await
            .map_err(storage)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(writer_loop(writer, rx));
        Ok(Self {
            readers,
            writer: tx,
        })
    }

    async fn submit(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<(), BackendError>>) -> Job,
    ) -> Result<(), BackendError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(job(tx))
            .await
            .map_err(|_| failed("the store's writer has stopped"))?;
        rx.await
            .map_err(|_| failed("the store's writer stopped before answering"))?
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Rows per multi-row `INSERT`, largest first: a run of puts goes out in as few statements as
/// these sizes allow, and the few distinct SQL texts stay in sqlx's prepared-statement cache.
const PUT_BATCHES: [usize; 4] = [64, 16, 4, 1];

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT OR REPLACE INTO rows (tbl, part, sort, value) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?, ?)");
    }
    sql
}

/// One put in a batch, borrowed from its `WriteOp`.
struct Put<'a> {
    table: &'a str,
    partition: &'a [u8],
    sort: u64,
    value: &'a [u8],
}

/// Writes a run of puts with multi-row inserts. Later rows of one statement replace earlier ones
/// with the same key, exactly as one-by-one inserts would.
async fn put_rows(
    conn: &mut SqliteConnection,
    sql: &[String; 4],
    mut puts: &[Put<'_>],
) -> Result<(), sqlx::Error> {
    while !puts.is_empty() {
        let (size, text) = PUT_BATCHES
            .iter()
            .zip(sql.iter())
            .find(|(size, _)| **size <= puts.len())
            .map_or((1, &sql[3]), |(size, text)| (*size, text));
        let (batch, rest) = puts.split_at(size.min(puts.len()));
        let mut query = sqlx::query(text);
        for put in batch {
            query = query
                .bind(put.table)
                .bind(put.partition)
                .bind(encode_sort(put.sort))
                .bind(put.value);
        }
        query.execute(&mut *conn).await?;
        puts = rest;
    }
    Ok(())
}

/// Checks the schema version and creates what is missing.
fn migrate(conn: &mut SqliteConnection) -> BoxFuture<'_, Result<(), BackendError>> {
    // Boxed for the same reason as `apply_jobs`: so that `open` stays `Send`.
    Box::pin(async move {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(storage)?;
        if version > SCHEMA_VERSION {
            return Err(failed(format!(
                "store schema version {version} is newer than this build's {SCHEMA_VERSION}"
            )));
        }
        sqlx::Executor::execute(&mut *conn, SCHEMA)
            .await
            .map_err(storage)?;
        Ok(())
    })
}

/// Applies the jobs' ops in order inside the caller's transaction: consecutive puts (across
/// jobs too) are batched; deletes and metadata run one statement each.
fn apply_jobs<'c>(
    conn: &'c mut SqliteConnection,
    sql: &'c [String; 4],
    jobs: &'c [Job],
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    // Boxed with one named lifetime: sqlx's `Executor` for `&mut SqliteConnection` trips the
    // compiler's `Send` check for a spawned task when written as a plain `async fn`.
    Box::pin(async move {
        let mut run: Vec<Put<'_>> = Vec::new();
        for job in jobs {
            match job {
                Job::Write(ops, _) => {
                    for op in ops {
                        match op {
                            WriteOp::Put {
                                table,
                                partition,
                                sort,
                                value,
                            } => run.push(Put {
                                table,
                                partition,
                                sort: *sort,
                                value,
                            }),
                            WriteOp::Delete {
                                table,
                                partition,
                                sort,
                            } => {
                                put_rows(conn, sql, &run).await?;
                                run.clear();
                                sqlx::query(
                                    "DELETE FROM rows WHERE tbl = ? AND part = ? AND sort = ?",
                                )
                                .bind(table)
                                .bind(partition)
                                .bind(encode_sort(*sort))
                                .execute(&mut *conn)
                                .await?;
                            }
                            WriteOp::DeletePartition { table, partition } => {
                                put_rows(conn, sql, &run).await?;
                                run.clear();
                                sqlx::query("DELETE FROM rows WHERE tbl = ? AND part = ?")
                                    .bind(table)
                                    .bind(partition)
                                    .execute(&mut *conn)
                                    .await?;
                            }
                        }
                    }
                }
                Job::Meta(name, value, _) => {
                    put_rows(conn, sql, &run).await?;
                    run.clear();
                    sqlx::query(
                        "INSERT INTO meta (name, value) VALUES (?, ?)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )
                    .bind(name)
                    .bind(value)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        put_rows(conn, sql, &run).await
    })
}

/// `BEGIN IMMEDIATE`, the jobs, `COMMIT`; on any failure `ROLLBACK`, so nothing of them stays.
/// Row counts of the one-statement commits (see [`one_shot_puts`]).
const ONE_SHOT_ROWS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

fn one_shot_sql(rows: usize) -> String {
    format!("BEGIN IMMEDIATE; {}; COMMIT", insert_sql(rows))
}

/// The puts of a group made only of puts, at most 64 rows: the common case (a message or a page
/// of them), committed in one call to SQLite instead of three.
fn one_shot_puts(jobs: &[Job]) -> Option<Vec<Put<'_>>> {
    let mut puts = Vec::new();
    for job in jobs {
        let Job::Write(ops, _) = job else {
            return None;
        };
        for op in ops {
            let WriteOp::Put {
                table,
                partition,
                sort,
                value,
            } = op
            else {
                return None;
            };
            puts.push(Put {
                table,
                partition,
                sort: *sort,
                value,
            });
        }
    }
    (!puts.is_empty() && puts.len() <= 64).then_some(puts)
}

/// `BEGIN IMMEDIATE; INSERT …; COMMIT` in one multi-statement query. The row count is padded to
/// the next size in [`ONE_SHOT_ROWS`] (so few SQL texts are prepared) by repeating the last row,
/// which `INSERT OR REPLACE` writes twice to the same effect.
async fn commit_one_shot(
    conn: &mut SqliteConnection,
    one_shot: &[String; 7],
    puts: &[Put<'_>],
) -> Result<(), sqlx::Error> {
    let Some((index, rows)) = ONE_SHOT_ROWS
        .iter()
        .enumerate()
        .find(|(_, rows)| **rows >= puts.len())
    else {
        return Err(sqlx::Error::Protocol("one-shot commit over 64 rows".into()));
    };
    let (Some(text), Some(last)) = (one_shot.get(index), puts.last()) else {
        return Err(sqlx::Error::Protocol("empty one-shot commit".into()));
    };
    let mut query = sqlx::query(text);
    for put in puts
        .iter()
        .chain(std::iter::repeat_n(last, rows - puts.len()))
    {
        query = query
            .bind(put.table)
            .bind(put.partition)
            .bind(encode_sort(put.sort))
            .bind(put.value);
    }
    let result = query.execute(&mut *conn).await.map(drop);
    if result.is_err() {
        // A failed INSERT or COMMIT leaves the transaction open.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

async fn commit_jobs(
    conn: &mut SqliteConnection,
    sql: &Statements,
    jobs: &[Job],
) -> Result<(), sqlx::Error> {
    if let Some(puts) = one_shot_puts(jobs) {
        return commit_one_shot(conn, &sql.one_shot, &puts).await;
    }
    let sql = &sql.inserts;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let result = match apply_jobs(conn, sql, jobs).await {
        Ok(()) => sqlx::query("COMMIT").execute(&mut *conn).await.map(drop),
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Also after a failed COMMIT: SQLite may leave the transaction open.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// The SQL texts the writer uses, built once.
struct Statements {
    inserts: [String; 4],
    one_shot: [String; 7],
}

fn answer(job: Job, result: Result<(), BackendError>) {
    let reply = match job {
        Job::Write(_, reply) | Job::Meta(_, _, reply) => reply,
    };
    // The caller may have gone away (its future dropped); the write stands either way.
    let _ = reply.send(result);
}

/// Commits queued jobs in groups: everything queued goes into one transaction and every caller
/// is answered after its `COMMIT` (one fsync for the group with [`Durability::Full`]). Should the
/// group fail, it is rolled back and each job is retried in a transaction of its own, so one bad
/// write fails alone and all-or-nothing.
async fn writer_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    let sql = Statements {
        inserts: PUT_BATCHES.map(insert_sql),
        one_shot: ONE_SHOT_ROWS.map(one_shot_sql),
    };
    let mut group: Vec<Job> = Vec::with_capacity(64);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let grouped = group.len() > 1;
        match commit_jobs(&mut conn, &sql, &group).await {
            Ok(()) => {
                for job in group.drain(..) {
                    answer(job, Ok(()));
                }
            }
            Err(e) if !grouped => {
                if let Some(job) = group.pop() {
                    answer(job, Err(storage(e)));
                }
            }
            Err(_) => {
                for job in group.drain(..) {
                    let result = commit_jobs(&mut conn, &sql, std::slice::from_ref(&job))
                        .await
                        .map_err(storage);
                    answer(job, result);
                }
            }
        }
    }
    let _ = conn.close().await;
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(
        &self,
        table: &str,
        partition: &[u8],
        sort: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        sqlx::query_scalar("SELECT value FROM rows WHERE tbl = ? AND part = ? AND sort = ?")
            .bind(table)
            .bind(partition)
            .bind(encode_sort(sort))
            .fetch_optional(&self.readers)
            .await
            .map_err(storage)
    }

    async fn range(
        &self,
        table: &str,
        partition: &[u8],
        query: RangeQuery,
    ) -> Result<Vec<(u64, Vec<u8>)>, BackendError> {
        // Exclusive bounds as an inclusive BETWEEN; an empty interval asks nothing of SQLite.
        let lo = match query.after {
            Some(a) => match a.checked_add(1) {
                Some(lo) => lo,
                None => return Ok(Vec::new()),
            },
            None => 0,
        };
        let hi = match query.before {
            Some(b) => match b.checked_sub(1) {
                Some(hi) => hi,
                None => return Ok(Vec::new()),
            },
            None => u64::MAX,
        };
        if lo > hi || query.limit == 0 {
            return Ok(Vec::new());
        }
        let sql = if query.descending {
            "SELECT sort, value FROM rows WHERE tbl = ? AND part = ? AND sort BETWEEN ? AND ?
             ORDER BY sort DESC LIMIT ?"
        } else {
            "SELECT sort, value FROM rows WHERE tbl = ? AND part = ? AND sort BETWEEN ? AND ?
             ORDER BY sort ASC LIMIT ?"
        };
        let rows = sqlx::query(sql)
            .bind(table)
            .bind(partition)
            .bind(encode_sort(lo))
            .bind(encode_sort(hi))
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.readers)
            .await
            .map_err(storage)?;
        rows.iter()
            .map(|row| {
                Ok((
                    decode_sort(row.try_get("sort").map_err(storage)?),
                    row.try_get("value").map_err(storage)?,
                ))
            })
            .collect()
    }

    async fn scan_table(&self, table: &str) -> Result<Vec<(Vec<u8>, u64, Vec<u8>)>, BackendError> {
        let rows = sqlx::query("SELECT part, sort, value FROM rows WHERE tbl = ?")
            .bind(table)
            .fetch_all(&self.readers)
            .await
            .map_err(storage)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("part").map_err(storage)?,
                    decode_sort(row.try_get("sort").map_err(storage)?),
                    row.try_get("value").map_err(storage)?,
                ))
            })
            .collect()
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), BackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.submit(|reply| Job::Write(ops, reply)).await
    }

    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(storage)
    }

    async fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), BackendError> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.submit(|reply| Job::Meta(name, value, reply)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::conformance;
    use crate::{EncryptedStore, PassphraseParams, StoreError, StoreKey};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use zeroize::Zeroizing;

    const FAST: PassphraseParams = PassphraseParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn open_runs_on_a_spawned_task() {
        // `open` is `Send`: a multi-threaded runtime can spawn it directly.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spawned.sqlite");
        let backend = tokio::spawn(async move { SqliteBackend::open(path).await })
            .await
            .unwrap()
            .unwrap();
        backend.meta_put("probe", b"1").await.unwrap();
        assert_eq!(
            backend.meta_get("probe").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    fn raw(b: u8) -> StoreKey {
        StoreKey::Raw(Zeroizing::new([b; 32]))
    }

    fn pass(p: &str) -> StoreKey {
        StoreKey::Passphrase(Zeroizing::new(p.to_owned()))
    }

    async fn open_store(
        path: &Path,
        key: StoreKey,
    ) -> Result<(Arc<SqliteBackend>, EncryptedStore), StoreError> {
        let backend = Arc::new(SqliteBackend::open(path).await?);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let store = EncryptedStore::open_with_params(backend.clone(), key, FAST, &mut rng).await?;
        Ok((backend, store))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn sort_encoding_preserves_order() {
        let values = [
            0,
            1,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for w in values.windows(2) {
            assert!(encode_sort(w[0]) < encode_sort(w[1]));
        }
        for v in values {
            assert_eq!(decode_sort(encode_sort(v)), v);
        }
    }

    #[tokio::test]
    async fn sqlite_backend_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(dir.path().join("store.db"))
            .await
            .unwrap();
        conformance::run(&backend).await;
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let (_, store) = open_store(&path, pass("pw")).await.unwrap();
            let mut tx = store.transaction();
            tx.put("messages", b"c", 1, b"kept");
            store.commit(tx).await.unwrap();
        }
        let (_, store) = open_store(&path, pass("pw")).await.unwrap();
        assert_eq!(
            store
                .get("messages", b"c", 1)
                .await
                .unwrap()
                .unwrap()
                .as_slice(),
            b"kept"
        );
    }

    /// Someone with the file (and its WAL) finds no plaintext value or key in it.
    #[tokio::test]
    async fn file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let secrets: Vec<(String, String)> = (0..50)
            .map(|i| {
                (
                    format!("conversation-with-mallory-{i}"),
                    format!("the launch code is {i:08}"),
                )
            })
            .collect();
        let (backend, store) = open_store(&path, raw(5)).await.unwrap();
        let mut tx = store.transaction();
        for (i, (k, v)) in secrets.iter().enumerate() {
            tx.put("messages", k.as_bytes(), i as u64, v.as_bytes());
            tx.put("contacts", k.as_bytes(), 0, v.as_bytes());
        }
        store.commit(tx).await.unwrap();
        // Sanity check that the grep below can see rows at all: the table name is stored as is.
        let mut raw_bytes = std::fs::read(&path).unwrap();
        let wal = dir.path().join("store.db-wal");
        let wal_bytes = std::fs::read(&wal).unwrap_or_default();
        assert!(!wal_bytes.is_empty(), "expected the rows in the WAL");
        raw_bytes.extend_from_slice(&wal_bytes);
        assert!(contains(&raw_bytes, b"messages"));
        for (k, v) in &secrets {
            assert!(!contains(&raw_bytes, k.as_bytes()), "key {k} in the file");
            assert!(!contains(&raw_bytes, v.as_bytes()), "value {v} in the file");
        }
        assert!(!contains(&raw_bytes, b"mallory"));
        assert!(!contains(&raw_bytes, b"launch code"));
        assert!(!contains(&raw_bytes, &[5u8; 32]));
        // And after a checkpoint moves everything into the main file.
        drop(store);
        drop(backend);
        let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let main = std::fs::read(&path).unwrap();
        assert!(contains(&main, b"messages"));
        assert!(!contains(&main, b"mallory"));
        assert!(!contains(&main, b"launch code"));
    }

    #[tokio::test]
    async fn wrong_key_or_passphrase_is_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let by_pass = dir.path().join("p.db");
        let by_key = dir.path().join("k.db");
        open_store(&by_pass, pass("right")).await.unwrap();
        open_store(&by_key, raw(1)).await.unwrap();
        assert!(matches!(
            open_store(&by_pass, pass("wrong")).await,
            Err(StoreError::WrongKey)
        ));
        assert!(matches!(
            open_store(&by_key, raw(2)).await,
            Err(StoreError::WrongKey)
        ));
        assert!(matches!(
            open_store(&by_key, pass("right")).await,
            Err(StoreError::WrongKey)
        ));
        assert!(open_store(&by_pass, pass("right")).await.is_ok());
    }

    /// A row copied by hand (SQL on the file) to another key or table does not open.
    #[tokio::test]
    async fn swapped_rows_fail_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let (_, store) = open_store(&path, raw(1)).await.unwrap();
        let mut tx = store.transaction();
        tx.put("messages", b"alice", 1, b"to alice")
            .put("messages", b"bob", 1, b"to bob")
            .put("drafts", b"alice", 1, b"draft");
        store.commit(tx).await.unwrap();

        let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let alice = store.partition_hash("messages", b"alice").to_vec();
        let bob = store.partition_hash("messages", b"bob").to_vec();
        // Bob's row gets Alice's ciphertext; the drafts row gets it too.
        sqlx::query(
            "UPDATE rows SET value = (SELECT value FROM rows WHERE tbl = 'messages' AND part = ?)
             WHERE (tbl = 'messages' AND part = ?) OR tbl = 'drafts'",
        )
        .bind(&alice)
        .bind(&bob)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        assert!(matches!(
            store.get("messages", b"bob", 1).await,
            Err(StoreError::Corrupt { table }) if table == "messages"
        ));
        assert!(matches!(
            store.get("drafts", b"alice", 1).await,
            Err(StoreError::Corrupt { table }) if table == "drafts"
        ));
        assert!(store.scan_table("messages").await.is_err());
        assert_eq!(
            store
                .get("messages", b"alice", 1)
                .await
                .unwrap()
                .unwrap()
                .as_slice(),
            b"to alice"
        );
    }

    /// A write that fails part-way leaves nothing behind, and does not take concurrent writes
    /// in the same group commit down with it.
    #[tokio::test]
    async fn write_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let backend = Arc::new(SqliteBackend::open(&path).await.unwrap());
        // A trigger that makes one specific insert fail, so the failure lands mid-write.
        let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON rows WHEN NEW.tbl = 'poison'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let put = |table: &str, sort: u64| WriteOp::Put {
            table: table.into(),
            partition: b"p".to_vec(),
            sort,
            value: vec![1],
        };
        backend.write(vec![put("t", 0)]).await.unwrap();
        let bad = vec![
            put("t", 1),
            WriteOp::Delete {
                table: "t".into(),
                partition: b"p".to_vec(),
                sort: 0,
            },
            put("poison", 2),
            put("t", 3),
        ];
        let good = vec![put("u", 1), put("u", 2)];
        // Queued together, so the writer very likely takes them in one group.
        let (bad_result, good_result) = tokio::join!(backend.write(bad), backend.write(good));
        assert!(bad_result.is_err());
        good_result.unwrap();
        let t = backend
            .range("t", b"p", RangeQuery::ascending(10))
            .await
            .unwrap();
        assert_eq!(t, vec![(0, vec![1])], "the failed write changed something");
        assert_eq!(
            backend
                .range("u", b"p", RangeQuery::ascending(10))
                .await
                .unwrap()
                .len(),
            2
        );
        // The same for writes of puts only (committed in one statement).
        let (bad_result, good_result) = tokio::join!(
            backend.write(vec![put("t", 5), put("poison", 6), put("t", 7)]),
            backend.write(vec![put("v", 1)])
        );
        assert!(bad_result.is_err());
        good_result.unwrap();
        assert_eq!(backend.get("t", b"p", 5).await.unwrap(), None);
        assert_eq!(backend.get("t", b"p", 7).await.unwrap(), None);
        assert!(backend.get("v", b"p", 1).await.unwrap().is_some());
        // The writer carries on after a failure.
        backend.write(vec![put("t", 9)]).await.unwrap();
        assert!(backend.get("t", b"p", 9).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn concurrent_writers_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let (_, store) = open_store(&dir.path().join("s.db"), raw(1)).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25u64 {
                    let mut tx = store.transaction();
                    tx.put("m", &w.to_be_bytes(), i, &i.to_be_bytes());
                    store.commit(tx).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.scan_table("m").await.unwrap().len(), 200);
        let newest = store
            .range("m", &3u64.to_be_bytes(), RangeQuery::descending(1))
            .await
            .unwrap();
        assert_eq!(newest[0].0, 24);
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(SqliteBackend::open(&path).await.unwrap());
        let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        sqlx::query("PRAGMA user_version = 9")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert!(SqliteBackend::open(&path).await.is_err());
    }
}
