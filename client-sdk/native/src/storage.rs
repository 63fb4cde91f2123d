//! The core's plaintext store operations on `sotto_store::EncryptedStore`, and history pages.

use sotto_client_core::store::{self as tables_mod, tables};
use sotto_client_core::{ConversationId, Message, Receipt, StoreOp};
use sotto_store::{EncryptedStore, RangeQuery, StoreError};

/// The runtime's own table: relay URL and the device's bearer token (sealed like every value).
pub(crate) const SESSION_TABLE: &str = "client_session";

/// Commits the core's writes, all or nothing.
pub(crate) async fn commit(store: &EncryptedStore, ops: Vec<StoreOp>) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut tx = store.transaction();
    for op in ops {
        match op {
            StoreOp::Put {
                table,
                partition,
                sort,
                value,
            } => {
                tx.put(table, &partition, sort, &value);
            }
            StoreOp::Delete {
                table,
                partition,
                sort,
            } => {
                tx.delete(table, &partition, sort);
            }
        }
    }
    store.commit(tx).await
}

/// Every row the core restores from.
pub(crate) async fn load(
    store: &EncryptedStore,
) -> Result<Vec<(&'static str, sotto_store::Zeroizing<Vec<u8>>)>, StoreError> {
    let mut rows = Vec::new();
    for table in tables::RESTORED {
        for (_, value) in store.scan_table(table).await? {
            rows.push((*table, value));
        }
    }
    Ok(rows)
}

/// A page of history, newest first, strictly older than `before`; receipts applied.
pub(crate) async fn history(
    store: &EncryptedStore,
    conversation: &ConversationId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let mut q = RangeQuery::descending(limit);
    if let Some(b) = before {
        q = q.before(b);
    }
    let rows = store
        .range(tables::MESSAGES, &conversation.key(), q)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, value) in rows {
        let Ok(mut m) = tables_mod::decode_message(&value) else {
            return Err(StoreError::Corrupt {
                table: tables::MESSAGES.to_owned(),
            });
        };
        if m.outgoing {
            let receipts: Vec<Receipt> = store
                .range(
                    tables::RECEIPTS,
                    &tables_mod::receipts_partition(&m.id),
                    RangeQuery::ascending(256),
                )
                .await?
                .into_iter()
                .filter_map(|(_, v)| tables_mod::decode_receipt(&v).ok())
                .collect();
            tables_mod::apply_receipts(&mut m, &receipts);
        }
        out.push(m);
    }
    Ok(out)
}
