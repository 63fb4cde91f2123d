//! Acks that only delete (group messages, group events, receipts), gathered from every
//! WebSocket of the process into one store write. Held by the [`Hub`](crate::hub::Hub), used by
//! the connections in [`ws`](crate::ws).

use std::collections::HashSet;

use tokio::sync::oneshot;

use crate::AppState;

/// Most ids deleted by one batched ack, which bounds how long an ack waits behind others.
const MAX_ACK_BATCH: usize = 20_000;

/// Answer to one connection's part of an ack batch: the sequences deleted.
type AckAnswer = oneshot::Sender<Result<Vec<i64>, ()>>;

/// Acks that need nothing but a deletion (group messages, group events, receipts), gathered from
/// every connection of the process and deleted in one store operation: while one batch is
/// written, the next one gathers. A group message to m connected members is then acked in a few
/// writes instead of one per member.
#[derive(Debug, Default)]
pub struct AckBatcher {
    pending: std::sync::Mutex<Vec<(i64, Vec<i64>, AckAnswer)>>,
    writing: tokio::sync::Mutex<()>,
}

impl AckBatcher {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(i64, Vec<i64>, AckAnswer)>> {
        match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Deletes `seqs` of the device's mailbox, if they are not 1:1 messages, with whatever other
    /// connections queued meanwhile; the sequences deleted.
    pub(crate) async fn delete(
        &self,
        state: &AppState,
        device_pk: i64,
        seqs: Vec<i64>,
    ) -> Result<Vec<i64>, ()> {
        let (tx, mut rx) = oneshot::channel();
        self.pending().push((device_pk, seqs, tx));
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => return answer.unwrap_or(Err(())),
                guard = self.writing.lock() => {
                    let batch = self.take_batch();
                    if !batch.is_empty() {
                        Self::write(state, batch).await;
                    }
                    drop(guard);
                }
            }
        }
    }

    /// The oldest pending acks, up to [`MAX_ACK_BATCH`] ids (at least one connection's).
    fn take_batch(&self) -> Vec<(i64, Vec<i64>, AckAnswer)> {
        let mut pending = self.pending();
        let mut ids = 0;
        let take = pending
            .iter()
            .take_while(|(_, seqs, _)| {
                let first = ids == 0;
                ids += seqs.len();
                first || ids <= MAX_ACK_BATCH
            })
            .count();
        pending.drain(..take).collect()
    }

    async fn write(state: &AppState, batch: Vec<(i64, Vec<i64>, AckAnswer)>) {
        let pairs: Vec<(i64, i64)> = batch
            .iter()
            .flat_map(|(pk, seqs, _)| seqs.iter().map(move |seq| (*pk, *seq)))
            .collect();
        match state.store().delete_acked(pairs).await {
            Ok(deleted) => {
                state
                    .metrics()
                    .envelopes_delivered
                    .inc_by(deleted.len() as u64);
                let deleted: HashSet<(i64, i64)> = deleted.into_iter().collect();
                for (pk, seqs, answer) in batch {
                    let mine = seqs
                        .into_iter()
                        .filter(|seq| deleted.contains(&(pk, *seq)))
                        .collect();
                    let _ = answer.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "batched ack failed");
                for (_, _, answer) in batch {
                    let _ = answer.send(Err(()));
                }
            }
        }
    }
}
