//! 1:1 acks on PostgreSQL, gathered from every connection of the process into one transaction:
//! while one batch is written, the next one gathers. A child module of `postgres`.
//!
//! An ack costs a handful of statements whatever its size (lock the acking device, delete,
//! lock the senders' devices, insert the receipts, commit), and PostgreSQL's per-statement and
//! per-commit work, not the rows, is what bounds the relay there. A batch runs the same statements
//! once for many acks. It keeps every rule of a single ack: the acking devices are key-share
//! locked (only a removal waits for them), the senders' devices are locked in `pk` order like
//! every other writer, and a batch that fails for another reason than a broken deadlock is retried
//! ack by ack, so one ack's failure is never another's.

use std::collections::BTreeMap;

use sqlx::Row;
use tokio::sync::oneshot;

use super::{insert_envelopes, retry_transient, PgStore};
use crate::store::{AckOutcome, DeviceAuth, StoreError, StoredEnvelope, ENVELOPE_MESSAGE};

/// Most acks one batch carries (each has at most a page of ids).
const MAX_BATCH: usize = 128;

/// An ack waiting for its batch.
struct Pending {
    device: DeviceAuth,
    seqs: Vec<i64>,
    now: i64,
    expires_at: i64,
    answer: oneshot::Sender<Result<AckOutcome, StoreError>>,
}

/// The acks waiting, and the right to write the next batch.
#[derive(Default)]
pub(super) struct AckQueue {
    pending: std::sync::Mutex<Vec<Pending>>,
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AckQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckQueue").finish_non_exhaustive()
    }
}

impl AckQueue {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take_batch(&self) -> Vec<Pending> {
        let mut pending = self.pending();
        let n = pending.len().min(MAX_BATCH);
        pending.drain(..n).collect()
    }
}

impl PgStore {
    /// Queues an ack and waits for it: whoever holds the writing right writes the batch that
    /// holds it, its own or another caller's.
    pub(super) async fn ack_batched(
        &self,
        device: &DeviceAuth,
        seqs: Vec<i64>,
        now: i64,
        expires_at: i64,
    ) -> Result<AckOutcome, StoreError> {
        let (answer, mut rx) = oneshot::channel();
        self.acks.pending().push(Pending {
            device: device.clone(),
            seqs,
            now,
            expires_at,
            answer,
        });
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => return answer.map_err(|_| StoreError::Closed)?,
                guard = self.acks.writing.lock() => {
                    let batch = self.acks.take_batch();
                    if !batch.is_empty() {
                        self.write_batch(batch).await;
                    }
                    drop(guard);
                }
            }
        }
    }

    async fn write_batch(&self, batch: Vec<Pending>) {
        if batch.len() == 1 {
            for p in batch {
                let out =
                    retry_transient(|| self.ack_once(&p.device, &p.seqs, p.now, p.expires_at))
                        .await;
                let _ = p.answer.send(out);
            }
            return;
        }
        match retry_transient(|| self.acks_once(&batch)).await {
            Ok(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.answer.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "batched ack failed: acking one by one");
                for p in batch {
                    let out =
                        retry_transient(|| self.ack_once(&p.device, &p.seqs, p.now, p.expires_at))
                            .await;
                    let _ = p.answer.send(out);
                }
            }
        }
    }

    /// One transaction for every ack of `batch`; their outcomes, in order.
    async fn acks_once(&self, batch: &[Pending]) -> Result<Vec<AckOutcome>, StoreError> {
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
