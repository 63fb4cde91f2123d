//! PostgreSQL: a connection pool and one transaction per operation, except 1:1 sends and acks,
//! which arriving together share one transaction per batch (`postgres_batch.rs`).
//!
//! Concurrency rules: per-mailbox sequence numbers come from the device row's `last_seq`, read
//! under its row lock (`FOR NO KEY UPDATE`, or taken by `UPDATE devices … RETURNING`) and bumped
//! in the same transaction; the lock is held until commit, so a mailbox's sequence order is its commit order and a reader
//! never skips an envelope committed late. Mailbox rows are locked in `pk` order to rule out
//! deadlocks. One-time prekeys are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent fetches get
//! different keys instead of waiting and finding none.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use std::str::FromStr;

use super::{
    check_devices, duplicate_outcome, is_transient, to_u32, AckOutcome, ClaimedBundle, DeviceAuth,
    DeviceRow, KeyUpdate, NewUser, SendBatch, SendOutcome, SetKeysOutcome, Store, StoreError,
    StoredEnvelope, StoredKey, UserCredentials, ENVELOPE_MESSAGE, KIND_EC, KIND_KEM,
};
use crate::config::Config;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[path = "postgres_batch.rs"]
mod batch;
#[path = "postgres_groups.rs"]
mod groups;

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    contacts: super::ContactCache,
    /// 1:1 acks gathered into batches (see `postgres_batch.rs`).
    acks: batch::Queue<batch::PendingAck>,
    /// 1:1 sends gathered into batches.
    sends: batch::Queue<batch::PendingSend>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects and runs migrations.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&config.database_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.db_max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            contacts: super::ContactCache::default(),
            acks: batch::Queue::default(),
            sends: batch::Queue::default(),
        })
    }
}

fn key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key_id: to_u32(row.try_get("key_id")?, "key_id")?,
        public_key: row.try_get("public_key")?,
        signature: row.try_get("signature")?,
    })
}

fn envelope_from_row(row: &PgRow) -> Result<StoredEnvelope, StoreError> {
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
    conn: &mut PgConnection,
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
                "INSERT INTO signed_prekeys (device_pk, kind, key_id, public_key, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_pk, kind) DO UPDATE SET \
                 key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key, signature = EXCLUDED.signature",
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
            sqlx::query("DELETE FROM one_time_prekeys WHERE device_pk = $1 AND kind = $2")
                .bind(device_pk)
                .bind(kind)
                .execute(&mut *conn)
                .await?;
            for key in list {
                sqlx::query(
                    "INSERT INTO one_time_prekeys (device_pk, kind, key_id, public_key, signature) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_pk, kind, key_id) DO UPDATE SET \
                     public_key = EXCLUDED.public_key, signature = EXCLUDED.signature",
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

/// Runs a transaction again (up to three times in all) when PostgreSQL broke a deadlock or a
/// serialization conflict: the lock order rules out deadlocks between the relay's own writers, but
/// a cascade of a device removal meets rows in its own order.
pub(super) async fn retry_transient<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if is_transient(&e) && tries < 2 => {
                tries += 1;
                tracing::debug!(error = %e, "transaction retried");
            }
            other => return other,
        }
    }
}

/// Sets `last_seq` of every device in `envelopes` to its last sequence there and inserts the
/// envelopes, each expiring `ttl` ms after its `server_ts`, in one statement. The caller holds the
/// devices' row locks (taken when it read their `last_seq`), so the sequences it numbered from
/// stay current.
async fn insert_envelopes(
    conn: &mut PgConnection,
    envelopes: &[(i64, StoredEnvelope)],
    ttl: i64,
) -> Result<(), StoreError> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for (pk, env) in envelopes {
        let top = last.entry(*pk).or_insert(env.seq);
        *top = (*top).max(env.seq);
    }
    let (bump_pks, bump_seqs): (Vec<i64>, Vec<i64>) = last.into_iter().unzip();
    let column = |f: fn(&StoredEnvelope) -> i64| -> Vec<i64> {
        envelopes.iter().map(|(_, e)| f(e)).collect()
    };
    let pks: Vec<i64> = envelopes.iter().map(|(pk, _)| *pk).collect();
    let texts = |f: fn(&StoredEnvelope) -> &str| -> Vec<&str> {
        envelopes.iter().map(|(_, e)| f(e)).collect()
    };
    let contents: Vec<Option<&[u8]>> = envelopes
        .iter()
        .map(|(_, e)| e.content.as_deref())
        .collect();
    sqlx::query(
        "WITH bump AS (UPDATE devices d SET last_seq = v.last \
         FROM unnest($1::bigint[], $2::bigint[]) AS v(pk, last) WHERE d.pk = v.pk) \
         INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
         client_message_id, server_ts, expires_at, content) \
         SELECT e.pk, e.seq, e.kind, e.source_user, e.source_device, e.server_message_id, \
         e.client_message_id, e.server_ts, e.server_ts + $11, e.content \
         FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::text[], \
         $9::text[], $10::bigint[], $12::bytea[]) \
         AS e(pk, seq, kind, source_user, source_device, server_message_id, client_message_id, server_ts, content)",
    )
    .bind(&bump_pks)
    .bind(&bump_seqs)
    .bind(&pks)
    .bind(column(|e| e.seq))
    .bind(column(|e| e.kind))
    .bind(texts(|e| e.source_user.as_str()))
    .bind(column(|e| i64::from(e.source_device)))
    .bind(texts(|e| e.server_message_id.as_str()))
    .bind(texts(|e| e.client_message_id.as_str()))
    .bind(column(|e| e.server_ts))
    .bind(ttl)
    .bind(&contents)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl PgStore {
    async fn ack_once(
        &self,
        device: &DeviceAuth,
        seqs: &[i64],
        now: i64,
        expires_at: i64,
    ) -> Result<AckOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The acking device's row first (a key-share lock, which only a removal waits for): a
        // removal of this device either finished (nothing to ack, nothing deleted) or waits for
        // this commit.
        let rows = sqlx::query(
            "WITH present AS MATERIALIZED (SELECT pk FROM devices WHERE pk = $1 FOR KEY SHARE) \
             DELETE FROM envelopes WHERE device_pk = (SELECT pk FROM present) AND seq = ANY($2) \
             RETURNING seq, kind, source_user, server_message_id, client_message_id",
        )
        .bind(device.pk)
        .bind(seqs)
        .fetch_all(&mut *tx)
        .await?;
        let mut outcome = AckOutcome::default();
        let mut receipts: Vec<(String, String, String)> = Vec::new();
        for row in &rows {
            outcome.deleted.push(row.try_get("seq")?);
            let kind: i64 = row.try_get("kind")?;
            let source_user: String = row.try_get("source_user")?;
            if kind == ENVELOPE_MESSAGE && source_user != device.user_id {
                receipts.push((
                    source_user,
                    row.try_get("server_message_id")?,
                    row.try_get("client_message_id")?,
                ));
            }
        }
        outcome.deleted.sort_unstable();
        if receipts.is_empty() {
            tx.commit().await?;
            return Ok(outcome);
        }
        let users: Vec<String> = {
            let mut u: Vec<String> = receipts.iter().map(|r| r.0.clone()).collect();
            u.sort();
            u.dedup();
            u
        };
        // The senders' devices, locked in `pk` order like every other writer, with the last
        // sequence of each.
        let mut sender_devices: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        let rows = sqlx::query(
            "SELECT user_id, pk, last_seq FROM devices WHERE user_id = ANY($1) ORDER BY pk FOR NO KEY UPDATE",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            sender_devices
                .entry(row.try_get("user_id")?)
                .or_default()
                .push((row.try_get("pk")?, row.try_get("last_seq")?));
        }
        let mut last: BTreeMap<i64, i64> = sender_devices.values().flatten().copied().collect();
        for (user, server_message_id, client_message_id) in &receipts {
            for &(pk, _) in sender_devices.get(user).into_iter().flatten() {
                let Some(seq) = last.get_mut(&pk) else {
                    return Err(StoreError::Corrupt("receipt device"));
                };
                *seq += 1;
                outcome.envelopes.push((
                    pk,
                    StoredEnvelope::receipt(
                        *seq,
                        device,
                        server_message_id,
                        client_message_id,
                        now,
                    ),
                ));
                if !outcome.notify.contains(&pk) {
                    outcome.notify.push(pk);
                }
            }
        }
        outcome.envelopes.sort_by_key(|(pk, env)| (*pk, env.seq));
        insert_envelopes(&mut tx, &outcome.envelopes, expires_at - now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn send_once(
        &self,
        batch: &SendBatch,
        record_contact: bool,
    ) -> Result<SendOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One read: whether the recipient exists; the sender's row, with a key-share lock (only a
        // removal waits for it, so sends of one device do not queue behind each other), so a
        // sender removed meanwhile is refused, not a foreign-key error; and the device set with
        // last sequences, under the row locks the sequence bumps take anyway (in `pk` order,
        // like every other writer): a device removed concurrently is either gone from this read
        // (the send answers 409) or removed after this commit. Key-share and no-key-update locks
        // never conflict, so the order between the two locks cannot deadlock two sends.
        let rows = sqlx::query(
            "WITH sender AS MATERIALIZED (SELECT pk FROM devices WHERE pk = $3 FOR KEY SHARE), \
             current AS MATERIALIZED (SELECT pk, user_id, device_id, registration_id, last_seq FROM devices \
             WHERE (user_id = $1 OR user_id = $2) AND pk <> $3 ORDER BY pk FOR NO KEY UPDATE) \
             SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS recipient, \
             EXISTS (SELECT 1 FROM sender) AS sender, \
             c.pk, c.user_id, c.device_id, c.registration_id, c.last_seq \
             FROM (SELECT 1) AS one LEFT JOIN current c ON true ORDER BY c.pk",
        )
        .bind(&batch.recipient)
        .bind(&batch.sender.user_id)
        .bind(batch.sender.pk)
        .fetch_all(&mut *tx)
        .await?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Corrupt("send read"));
        };
        if !first.try_get::<bool, _>("recipient")? {
            return Ok(SendOutcome::UnknownRecipient);
        }
        if !first.try_get::<bool, _>("sender")? {
            return Ok(SendOutcome::SenderRemoved);
        }
        let mut current = BTreeMap::new();
        let mut pks = BTreeMap::new();
        for row in &rows {
            let Some(pk) = row.try_get::<Option<i64>, _>("pk")? else {
                continue;
            };
            let key = (
                row.try_get::<String, _>("user_id")?,
                to_u32(row.try_get("device_id")?, "device_id")?,
            );
            pks.insert(key.clone(), (pk, row.try_get::<i64, _>("last_seq")?));
            current.insert(
                key,
                to_u32(row.try_get("registration_id")?, "registration_id")?,
            );
        }
        // Claiming the idempotency key makes a concurrent retry wait for this transaction, then
        // see its outcome.
        let claimed = sqlx::query(
            "INSERT INTO sent_messages (device_pk, client_message_id, server_message_id, server_ts, digest) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_pk, client_message_id) DO NOTHING",
        )
        .bind(batch.sender.pk)
        .bind(&batch.client_message_id)
        .bind(&batch.server_message_id)
        .bind(batch.now)
        .bind(batch.digest.as_slice())
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            let prior = sqlx::query(
                "SELECT server_message_id, server_ts, digest FROM sent_messages WHERE device_pk = $1 AND client_message_id = $2",
            )
            .bind(batch.sender.pk)
            .bind(&batch.client_message_id)
            .fetch_one(&mut *tx)
            .await?;
            return duplicate_outcome(
                prior.try_get("server_message_id")?,
                prior.try_get("server_ts")?,
                prior.try_get("digest")?,
                &batch.digest,
            );
        }
        if let Err(mismatch) = check_devices(&current, &batch.targets) {
            return Ok(SendOutcome::Mismatch(mismatch));
        }
        let mut envelopes = Vec::with_capacity(batch.targets.len());
        for target in &batch.targets {
            let Some(&(pk, last)) = pks.get(&(target.user_id.clone(), target.device_id)) else {
                return Err(StoreError::Corrupt("device vanished during send"));
            };
            envelopes.push((
                pk,
                StoredEnvelope::message(last + 1, batch, target.content.clone()),
            ));
        }
        envelopes.sort_by_key(|(pk, _)| *pk);
        insert_envelopes(&mut tx, &envelopes, batch.expires_at - batch.now).await?;
        if record_contact {
            sqlx::query(
                "INSERT INTO contacts (user_id, contact_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&batch.sender.user_id)
            .bind(&batch.recipient)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let notify = envelopes.iter().map(|(pk, _)| *pk).collect();
        Ok(SendOutcome::Accepted {
            server_message_id: batch.server_message_id.clone(),
            server_timestamp: batch.now,
            notify,
            envelopes,
        })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialises registrations of one folded name (two spellings racing).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 0))")
            .bind(&user.username)
            .execute(&mut *tx)
            .await?;
        let taken: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE lower(username) = lower($1)")
                .bind(&user.username)
                .fetch_one(&mut *tx)
                .await?;
        if taken > 0 {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn user_credentials(
        &self,
        username: &str,
    ) -> Result<Option<UserCredentials>, StoreError> {
        // Any spelling finds the account; where accounts from before case-insensitive names
        // differ only by case, the exact spelling wins.
        let row = sqlx::query(
            "SELECT id, password_hash FROM users WHERE lower(username) = lower($1) \
             ORDER BY (username = $1) DESC, created_at LIMIT 1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
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
            "SELECT id, username FROM users WHERE lower(username) = lower($1) \
             ORDER BY (username = $1) DESC, created_at LIMIT 1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get("id")?, row.try_get("username")?)))
            .transpose()
    }

    async fn username(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn user_exists(&self, user_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // The user row lock serializes concurrent logins of one account.
        let locked: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Ok(None);
        }
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(None);
        }
        let pk: i64 = sqlx::query_scalar(
            "INSERT INTO devices (user_id, device_id, registration_id, created_at) VALUES ($1, 1, $2, $3) RETURNING pk",
        )
        .bind(user_id)
        .bind(i64::from(registration_id))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO tokens (token_hash, device_pk, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash.as_slice())
            .bind(pk)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(1))
    }

    async fn device_by_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<DeviceAuth>, StoreError> {
        let row = sqlx::query(
            "SELECT d.pk, d.user_id, d.device_id FROM tokens t JOIN devices d ON d.pk = t.device_pk \
             WHERE t.token_hash = $1",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DeviceAuth {
                pk: row.try_get("pk")?,
                user_id: row.try_get("user_id")?,
                device_id: to_u32(row.try_get("device_id")?, "device_id")?,
            })
        })
        .transpose()
    }

    async fn remove_device(&self, device_pk: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM devices WHERE pk = $1")
            .bind(device_pk)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT pk, device_id, registration_id, created_at FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
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
            sqlx::query_scalar("SELECT identity_key FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(key.flatten())
    }

    async fn set_keys(
        &self,
        device: &DeviceAuth,
        keys: &KeyUpdate,
    ) -> Result<SetKeysOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let stored: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT identity_key FROM users WHERE id = $1 FOR UPDATE")
                .bind(&device.user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let stored = stored.flatten();
        if stored.as_deref() != Some(keys.identity_key.as_slice()) {
            if stored.is_some() {
                let devices: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
                        .bind(&device.user_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if devices > 1 {
                    return Ok(SetKeysOutcome::IdentityMismatch);
                }
                sqlx::query("DELETE FROM signed_prekeys WHERE device_pk = $1")
                    .bind(device.pk)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM one_time_prekeys WHERE device_pk = $1")
                    .bind(device.pk)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE users SET identity_key = $1 WHERE id = $2")
                .bind(&keys.identity_key)
                .bind(&device.user_id)
                .execute(&mut *tx)
                .await?;
        }
        replace_keys(&mut tx, device.pk, keys).await?;
        tx.commit().await?;
        Ok(SetKeysOutcome::Stored)
    }

    async fn key_counts(&self, device_pk: i64) -> Result<(u32, u32), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE kind = 0) AS ec, COUNT(*) FILTER (WHERE kind = 1) AS kem \
             FROM one_time_prekeys WHERE device_pk = $1",
        )
        .bind(device_pk)
        .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let identity: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT identity_key FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(identity) = identity.flatten() else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT pk, device_id, registration_id FROM devices WHERE user_id = $1 \
             AND ($2::BIGINT IS NULL OR device_id = $2) ORDER BY device_id",
        )
        .bind(user_id)
        .bind(device_id.map(i64::from))
        .fetch_all(&mut *tx)
        .await?;
        let mut bundles = Vec::with_capacity(rows.len());
        for row in rows {
            let pk: i64 = row.try_get("pk")?;
            let signed = sqlx::query(
                "SELECT key_id, public_key, signature FROM signed_prekeys WHERE device_pk = $1 AND kind = $2",
            )
            .bind(pk)
            .bind(KIND_EC)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(signed) = signed else { continue };
            let mut claimed = [None, None];
            for (slot, kind) in claimed.iter_mut().zip([KIND_EC, KIND_KEM]) {
                let row = sqlx::query(
                    "DELETE FROM one_time_prekeys WHERE (device_pk, kind, key_id) IN \
                     (SELECT device_pk, kind, key_id FROM one_time_prekeys WHERE device_pk = $1 AND kind = $2 \
                      ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING key_id, public_key, signature",
                )
                .bind(pk)
                .bind(kind)
                .fetch_optional(&mut *tx)
                .await?;
                *slot = row.as_ref().map(key_from_row).transpose()?;
            }
            let [pre_key, mut kem_pre_key] = claimed;
            if kem_pre_key.is_none() {
                let row = sqlx::query(
                    "SELECT key_id, public_key, signature FROM signed_prekeys WHERE device_pk = $1 AND kind = $2",
                )
                .bind(pk)
                .bind(KIND_KEM)
                .fetch_optional(&mut *tx)
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
        tx.commit().await?;
        Ok(Some((identity, bundles)))
    }

    async fn send(&self, batch: SendBatch) -> Result<SendOutcome, StoreError> {
        let record_contact = self.contacts.needs(&batch.sender.user_id, &batch.recipient);
        let (from, to) = (batch.sender.user_id.clone(), batch.recipient.clone());
        let outcome = self.send_batched(batch, record_contact).await?;
        if record_contact && matches!(outcome, SendOutcome::Accepted { .. }) {
            self.contacts.remember(&from, &to);
        }
        Ok(outcome)
    }

    async fn unread(&self, device_pk: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE device_pk = $1")
            .bind(device_pk)
            .fetch_one(&self.pool)
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
             FROM envelopes WHERE device_pk = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(device_pk)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        self.ack_batched(device, seqs, now, expires_at).await
    }

    async fn expire(&self, now: i64, idempotency_cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM envelopes WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM sent_messages WHERE server_ts < $1")
            .bind(idempotency_cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn queued_total(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes")
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("count"))
    }

    async fn presence_visible(&self, subject: &str, viewer: &str) -> Result<bool, StoreError> {
        if subject == viewer {
            return Ok(true);
        }
        let visible: bool = sqlx::query_scalar(
            "SELECT (EXISTS (SELECT 1 FROM contacts WHERE user_id = $1 AND contact_id = $2) \
             OR EXISTS (SELECT 1 FROM group_members x JOIN group_members y ON y.group_id = x.group_id \
             WHERE x.user_id = $1 AND y.user_id = $2))",
        )
        .bind(subject)
        .bind(viewer)
        .fetch_one(&self.pool)
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
        let size = i64::try_from(size).map_err(|_| StoreError::Corrupt("attachment size"))?;
        sqlx::query(
            "INSERT INTO attachment_uploads (attachment_id, user_id, size, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(attachment_id)
        .bind(user_id)
        .bind(size)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn attachment_bytes(&self, user_id: &str, since: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size), 0)::BIGINT FROM attachment_uploads WHERE user_id = $1 AND created_at > $2",
        )
        .bind(user_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("attachment bytes"))
    }

    async fn expire_attachments(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM attachment_uploads WHERE created_at <= $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
