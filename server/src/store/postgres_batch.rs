//! 1:1 sends and acks on PostgreSQL, gathered from every request of the process into one
//! transaction per batch: while one batch is written, the next one gathers. A child module of
//! `postgres`.
//!
//! A send or an ack costs a handful of statements whatever its size (lock, read, write, commit),
//! and PostgreSQL's per-statement and per-commit work, not the rows, is what bounds the relay
//! there. A batch runs the same statements once for many operations. It keeps every rule of a
//! single one: the acting devices are key-share locked (only a removal waits for them), mailbox
//! devices are locked in `pk` order like every other writer, refusals are decided the same way and
//! in the same order, and a batch that fails for another reason than a broken deadlock is retried
//! one operation at a time, so one request's failure is never another's.

use std::collections::BTreeMap;

use sqlx::Row;
use tokio::sync::oneshot;

use super::{insert_envelopes, retry_transient, PgStore};
use crate::store::{
    check_devices, duplicate_outcome, to_u32, AckOutcome, DeviceAuth, SendBatch, SendOutcome,
    StoreError, StoredEnvelope, ENVELOPE_MESSAGE,
};

/// Most operations one batch carries (an ack has at most a page of ids).
const MAX_BATCH: usize = 128;

/// Operations waiting, and the right to write the next batch.
pub(super) struct Queue<P> {
    pending: std::sync::Mutex<Vec<P>>,
    writing: tokio::sync::Mutex<()>,
}

impl<P> Default for Queue<P> {
    fn default() -> Self {
        Self {
            pending: std::sync::Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }
}

impl<P> std::fmt::Debug for Queue<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl<P> Queue<P> {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<P>> {
        match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queues `op` and waits for `rx`, its answer: whoever holds the writing right writes the
    /// batch that holds it (`write`), its own or another caller's.
    async fn run<T, W, F>(
        &self,
        op: P,
        mut rx: oneshot::Receiver<Result<T, StoreError>>,
        write: W,
    ) -> Result<T, StoreError>
    where
        W: Fn(Vec<P>) -> F,
        F: std::future::Future<Output = ()>,
    {
        self.pending().push(op);
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => return answer.map_err(|_| StoreError::Closed)?,
                guard = self.writing.lock() => {
                    let batch = {
                        let mut pending = self.pending();
                        let n = pending.len().min(MAX_BATCH);
                        pending.drain(..n).collect::<Vec<_>>()
                    };
                    if !batch.is_empty() {
                        write(batch).await;
                    }
                    drop(guard);
                }
            }
        }
    }
}

/// A queued operation, answered once its batch is written.
trait Answered {
    type Out;
    fn answer(self, out: Result<Self::Out, StoreError>);
}

/// A batch's outcomes, or `None` (with the reason logged) when its operations must be written one
/// at a time.
fn batched<T>(written: Result<Option<Vec<T>>, StoreError>) -> Option<Vec<T>> {
    written.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "batched write failed: writing one by one");
        None
    })
}

/// Answers every operation of `batch` with its outcome when the batch was written as one (then
/// nothing is left); else gives the batch back, to be written one operation at a time.
fn answer_batch<P: Answered>(batch: Vec<P>, outcomes: Option<Vec<P::Out>>) -> Vec<P> {
    let Some(outcomes) = outcomes else {
        return batch;
    };
    for (p, outcome) in batch.into_iter().zip(outcomes) {
        p.answer(Ok(outcome));
    }
    Vec::new()
}

/// An ack waiting for its batch.
pub(super) struct PendingAck {
    device: DeviceAuth,
    seqs: Vec<i64>,
    now: i64,
    expires_at: i64,
    answer: oneshot::Sender<Result<AckOutcome, StoreError>>,
}

impl Answered for PendingAck {
    type Out = AckOutcome;
    fn answer(self, out: Result<AckOutcome, StoreError>) {
        let _ = self.answer.send(out);
    }
}

impl PgStore {
    /// Queues an ack and waits for its batch.
    pub(super) async fn ack_batched(
        &self,
        device: &DeviceAuth,
        seqs: Vec<i64>,
        now: i64,
        expires_at: i64,
    ) -> Result<AckOutcome, StoreError> {
        let (answer, rx) = oneshot::channel();
        let op = PendingAck {
            device: device.clone(),
            seqs,
            now,
            expires_at,
            answer,
        };
        self.acks.run(op, rx, |batch| self.write_acks(batch)).await
    }

    async fn write_acks(&self, batch: Vec<PendingAck>) {
        let outcomes = if batch.len() == 1 {
            None
        } else {
            batched(retry_transient(|| self.acks_once(&batch)).await.map(Some))
        };
        for p in answer_batch(batch, outcomes) {
            let out =
                retry_transient(|| self.ack_once(&p.device, &p.seqs, p.now, p.expires_at)).await;
            p.answer(out);
        }
    }

    /// One transaction for every ack of `batch`; their outcomes, in order.
    async fn acks_once(&self, batch: &[PendingAck]) -> Result<Vec<AckOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut devices: Vec<i64> = batch.iter().map(|p| p.device.pk).collect();
        devices.sort_unstable();
        devices.dedup();
        let (ack_pks, ack_seqs): (Vec<i64>, Vec<i64>) = batch
            .iter()
            .flat_map(|p| p.seqs.iter().map(move |seq| (p.device.pk, *seq)))
            .unzip();
        // The acking devices' rows first, key-share locked in `pk` order: a removal of one either
        // finished (nothing of it to delete) or waits for this commit.
        let rows = sqlx::query(
            "WITH present AS MATERIALIZED \
             (SELECT pk FROM devices WHERE pk = ANY($1) ORDER BY pk FOR KEY SHARE) \
             DELETE FROM envelopes e USING unnest($2::bigint[], $3::bigint[]) AS a(pk, seq) \
             WHERE e.device_pk = a.pk AND e.seq = a.seq AND a.pk IN (SELECT pk FROM present) \
             RETURNING e.device_pk, e.seq, e.kind, e.source_user, e.server_message_id, e.client_message_id",
        )
        .bind(&devices)
        .bind(&ack_pks)
        .bind(&ack_seqs)
        .fetch_all(&mut *tx)
        .await?;
        // What each device's acks deleted, by sequence.
        let mut deleted: BTreeMap<(i64, i64), (i64, String, String, String)> = BTreeMap::new();
        for row in &rows {
            deleted.insert(
                (row.try_get("device_pk")?, row.try_get("seq")?),
                (
                    row.try_get("kind")?,
                    row.try_get("source_user")?,
                    row.try_get("server_message_id")?,
                    row.try_get("client_message_id")?,
                ),
            );
        }
        let mut outcomes: Vec<AckOutcome> = Vec::with_capacity(batch.len());
        // Receipts to queue: (ack index, sender account, server id, client id).
        let mut receipts: Vec<(usize, String, String, String)> = Vec::new();
        for (i, p) in batch.iter().enumerate() {
            let mut outcome = AckOutcome::default();
            let mut seqs = p.seqs.clone();
            seqs.sort_unstable();
            seqs.dedup();
            for seq in seqs {
                // An id acked twice in one batch is deleted once, for the first ack.
                let Some((kind, source_user, server_message_id, client_message_id)) =
                    deleted.remove(&(p.device.pk, seq))
                else {
                    continue;
                };
                outcome.deleted.push(seq);
                if kind == ENVELOPE_MESSAGE && source_user != p.device.user_id {
                    receipts.push((i, source_user, server_message_id, client_message_id));
                }
            }
            outcomes.push(outcome);
        }
        if !receipts.is_empty() {
            let mut users: Vec<&str> = receipts.iter().map(|r| r.1.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            // The senders' devices, locked in `pk` order like every other writer, with the last
            // sequence of each.
            let rows = sqlx::query(
                "SELECT user_id, pk, last_seq FROM devices WHERE user_id = ANY($1) \
                 ORDER BY pk FOR NO KEY UPDATE",
            )
            .bind(&users)
            .fetch_all(&mut *tx)
            .await?;
            let mut sender_devices: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            let mut last: BTreeMap<i64, i64> = BTreeMap::new();
            for row in rows {
                let pk: i64 = row.try_get("pk")?;
                sender_devices
                    .entry(row.try_get("user_id")?)
                    .or_default()
                    .push(pk);
                last.insert(pk, row.try_get("last_seq")?);
            }
            let mut envelopes: Vec<(i64, StoredEnvelope)> = Vec::new();
            for (i, user, server_message_id, client_message_id) in &receipts {
                let (Some(p), Some(outcome)) = (batch.get(*i), outcomes.get_mut(*i)) else {
                    return Err(StoreError::Corrupt("ack batch"));
                };
                for &pk in sender_devices.get(user).into_iter().flatten() {
                    let Some(seq) = last.get_mut(&pk) else {
                        return Err(StoreError::Corrupt("receipt device"));
                    };
                    *seq += 1;
                    let env = StoredEnvelope::receipt(
                        *seq,
                        &p.device,
                        server_message_id,
                        client_message_id,
                        p.now,
                    );
                    envelopes.push((pk, env.clone()));
                    outcome.envelopes.push((pk, env));
                    if !outcome.notify.contains(&pk) {
                        outcome.notify.push(pk);
                    }
                }
            }
            envelopes.sort_by_key(|(pk, env)| (*pk, env.seq));
            // Every ack of the relay uses the same envelope lifetime.
            let ttl = batch
                .first()
                .map_or(0, |p| p.expires_at.saturating_sub(p.now));
            insert_envelopes(&mut tx, &envelopes, ttl).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// A stored send's id, time and request digest, by (sending device, client message id).
type Prior = (String, i64, Option<Vec<u8>>);

/// A 1:1 send waiting for its batch.
pub(super) struct PendingSend {
    batch: SendBatch,
    record_contact: bool,
    answer: oneshot::Sender<Result<SendOutcome, StoreError>>,
}

impl Answered for PendingSend {
    type Out = SendOutcome;
    fn answer(self, out: Result<SendOutcome, StoreError>) {
        let _ = self.answer.send(out);
    }
}

impl PgStore {
    /// Queues a send and waits for its batch.
    pub(super) async fn send_batched(
        &self,
        batch: SendBatch,
        record_contact: bool,
    ) -> Result<SendOutcome, StoreError> {
        let (answer, rx) = oneshot::channel();
        let op = PendingSend {
            batch,
            record_contact,
            answer,
        };
        self.sends
            .run(op, rx, |batch| self.write_sends(batch))
            .await
    }

    async fn write_sends(&self, batch: Vec<PendingSend>) {
        let outcomes = if batch.len() == 1 {
            None
        } else {
            batched(retry_transient(|| self.sends_once(&batch)).await)
        };
        for p in answer_batch(batch, outcomes) {
            let out = retry_transient(|| self.send_once(&p.batch, p.record_contact)).await;
            p.answer(out);
        }
    }

    /// One transaction for every send of `batch`; their outcomes, in order, or `None` when the
    /// batch must be sent one by one (an idempotency key claimed meanwhile, or twice in it).
    async fn sends_once(
        &self,
        batch: &[PendingSend],
    ) -> Result<Option<Vec<SendOutcome>>, StoreError> {
        let keys: std::collections::BTreeSet<(i64, &str)> = batch
            .iter()
            .map(|p| (p.batch.sender.pk, p.batch.client_message_id.as_str()))
            .collect();
        if keys.len() != batch.len() {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        // The senders' rows first, key-share locked (only a removal waits for them): a sender
        // removed meanwhile is refused, not a foreign-key error.
        let mut senders: Vec<i64> = batch.iter().map(|p| p.batch.sender.pk).collect();
        senders.sort_unstable();
        senders.dedup();
        let present: std::collections::BTreeSet<i64> = sqlx::query_scalar(
            "SELECT pk FROM devices WHERE pk = ANY($1) ORDER BY pk FOR KEY SHARE",
        )
        .bind(&senders)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // Then every device of every account involved, under the row locks the sequence bumps
        // take anyway, in `pk` order, with its last sequence.
        let mut users: Vec<&str> = batch
            .iter()
            .flat_map(|p| [p.batch.recipient.as_str(), p.batch.sender.user_id.as_str()])
            .collect();
        users.sort_unstable();
        users.dedup();
        let rows = sqlx::query(
            "SELECT pk, user_id, device_id, registration_id, last_seq FROM devices \
             WHERE user_id = ANY($1) ORDER BY pk FOR NO KEY UPDATE",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;
        let mut devices_of: BTreeMap<String, Vec<(i64, u32, u32)>> = BTreeMap::new();
        let mut last: BTreeMap<i64, i64> = BTreeMap::new();
        for row in &rows {
            let pk: i64 = row.try_get("pk")?;
            devices_of
                .entry(row.try_get("user_id")?)
                .or_default()
                .push((
                    pk,
                    to_u32(row.try_get("device_id")?, "device_id")?,
                    to_u32(row.try_get("registration_id")?, "registration_id")?,
                ));
            last.insert(pk, row.try_get("last_seq")?);
        }
        let known: std::collections::BTreeSet<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
                .bind(&users)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let (key_pks, key_ids): (Vec<i64>, Vec<&str>) = keys.iter().copied().unzip();
        let mut prior: BTreeMap<(i64, String), Prior> = BTreeMap::new();
        let rows = sqlx::query(
            "SELECT s.device_pk, s.client_message_id, s.server_message_id, s.server_ts, s.digest \
             FROM sent_messages s JOIN unnest($1::bigint[], $2::text[]) AS k(pk, id) \
             ON s.device_pk = k.pk AND s.client_message_id = k.id",
        )
        .bind(&key_pks)
        .bind(&key_ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            prior.insert(
                (row.try_get("device_pk")?, row.try_get("client_message_id")?),
                (
                    row.try_get("server_message_id")?,
                    row.try_get("server_ts")?,
                    row.try_get("digest")?,
                ),
            );
        }
        // Each send's outcome, decided in the order a single send decides it.
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut accepted: Vec<&SendBatch> = Vec::new();
        let mut envelopes: Vec<(i64, StoredEnvelope)> = Vec::new();
        for p in batch {
            let b = &p.batch;
            if !known.contains(&b.recipient) {
                outcomes.push(SendOutcome::UnknownRecipient);
                continue;
            }
            if !present.contains(&b.sender.pk) {
                outcomes.push(SendOutcome::SenderRemoved);
                continue;
            }
            if let Some((server_message_id, server_ts, digest)) =
                prior.get(&(b.sender.pk, b.client_message_id.clone()))
            {
                outcomes.push(duplicate_outcome(
                    server_message_id.clone(),
                    *server_ts,
                    digest.clone(),
                    &b.digest,
                )?);
                continue;
            }
            let mut current = BTreeMap::new();
            let mut pks = BTreeMap::new();
            let accounts: &[&str] = if b.recipient == b.sender.user_id {
                &[b.recipient.as_str()]
            } else {
                &[b.recipient.as_str(), b.sender.user_id.as_str()]
            };
            for user in accounts {
                for &(pk, device_id, registration_id) in devices_of.get(*user).into_iter().flatten()
                {
                    if pk != b.sender.pk {
                        current.insert(((*user).to_owned(), device_id), registration_id);
                        pks.insert(((*user).to_owned(), device_id), pk);
                    }
                }
            }
            if let Err(mismatch) = check_devices(&current, &b.targets) {
                outcomes.push(SendOutcome::Mismatch(mismatch));
                continue;
            }
            let mut mine = Vec::with_capacity(b.targets.len());
            for target in &b.targets {
                let pk = pks.get(&(target.user_id.clone(), target.device_id));
                let Some(seq) = pk.and_then(|pk| last.get_mut(pk)) else {
                    return Err(StoreError::Corrupt("device vanished during send"));
                };
                *seq += 1;
                let env = StoredEnvelope::message(*seq, b, target.content.clone());
                if let Some(&pk) = pk {
                    envelopes.push((pk, env.clone()));
                    mine.push((pk, env));
                }
            }
            mine.sort_by_key(|(pk, _)| *pk);
            accepted.push(b);
            outcomes.push(SendOutcome::Accepted {
                server_message_id: b.server_message_id.clone(),
                server_timestamp: b.now,
                notify: mine.iter().map(|(pk, _)| *pk).collect(),
                envelopes: mine,
            });
        }
        if !accepted.is_empty() {
            // Claiming the idempotency keys makes a concurrent retry elsewhere wait for this
            // transaction; a key another transaction claimed since the read above sends the
            // whole batch one by one (each then sees the other's outcome).
            let claimed: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO sent_messages (device_pk, client_message_id, server_message_id, server_ts, digest) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[]) \
                 ON CONFLICT (device_pk, client_message_id) DO NOTHING RETURNING device_pk",
            )
            .bind(accepted.iter().map(|b| b.sender.pk).collect::<Vec<_>>())
            .bind(accepted.iter().map(|b| b.client_message_id.as_str()).collect::<Vec<_>>())
            .bind(accepted.iter().map(|b| b.server_message_id.as_str()).collect::<Vec<_>>())
            .bind(accepted.iter().map(|b| b.now).collect::<Vec<_>>())
            .bind(accepted.iter().map(|b| b.digest.as_slice()).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
            if claimed.len() != accepted.len() {
                return Ok(None);
            }
            envelopes.sort_by_key(|(pk, env)| (*pk, env.seq));
            // Every send of the relay uses the same envelope lifetime.
            let ttl = accepted
                .first()
                .map_or(0, |b| b.expires_at.saturating_sub(b.now));
            insert_envelopes(&mut tx, &envelopes, ttl).await?;
            let contacts: Vec<(&str, &str)> = batch
                .iter()
                .zip(&outcomes)
                .filter(|(p, outcome)| {
                    p.record_contact && matches!(outcome, SendOutcome::Accepted { .. })
                })
                .map(|(p, _)| (p.batch.sender.user_id.as_str(), p.batch.recipient.as_str()))
                .collect();
            if !contacts.is_empty() {
                let (from, to): (Vec<&str>, Vec<&str>) = contacts.into_iter().unzip();
                sqlx::query(
                    "INSERT INTO contacts (user_id, contact_id) \
                     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                )
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(outcomes))
    }
}
