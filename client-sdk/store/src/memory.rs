//! [`MemoryBackend`]: rows in ordered maps behind a mutex. For tests, ephemeral sessions, and as
//! the reference the other backends are checked against.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::backend::{Backend, BackendError, RangeQuery, WriteOp};

type Partition = BTreeMap<u64, Vec<u8>>;

#[derive(Default)]
struct Inner {
    tables: HashMap<String, BTreeMap<Vec<u8>, Partition>>,
    meta: HashMap<String, Vec<u8>>,
}

/// An in-memory [`Backend`]; nothing survives the value.
#[derive(Default)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { inner: _ } = self;
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing that runs under the lock panics between the ops of one write, so a poisoned
        // lock (a panic in a caller's thread) still guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of rows in every table (for tests and diagnostics).
    pub fn row_count(&self) -> usize {
        self.lock()
            .tables
            .values()
            .flat_map(|t| t.values())
            .map(BTreeMap::len)
            .sum()
    }
}

fn apply(tables: &mut HashMap<String, BTreeMap<Vec<u8>, Partition>>, op: WriteOp) {
    match op {
        WriteOp::Put {
            table,
            partition,
            sort,
            value,
        } => {
            tables
                .entry(table)
                .or_default()
                .entry(partition)
                .or_default()
                .insert(sort, value);
        }
        WriteOp::Delete {
            table,
            partition,
            sort,
        } => {
            if let Some(t) = tables.get_mut(&table) {
                if let Some(p) = t.get_mut(&partition) {
                    p.remove(&sort);
                    if p.is_empty() {
                        t.remove(&partition);
                    }
                }
            }
        }
        WriteOp::DeletePartition { table, partition } => {
            if let Some(t) = tables.get_mut(&table) {
                t.remove(&partition);
            }
        }
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Backend for MemoryBackend {
    async fn get(
        &self,
        table: &str,
        partition: &[u8],
        sort: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .lock()
            .tables
            .get(table)
            .and_then(|t| t.get(partition))
            .and_then(|p| p.get(&sort))
            .cloned())
    }

    async fn range(
        &self,
        table: &str,
        partition: &[u8],
        query: RangeQuery,
    ) -> Result<Vec<(u64, Vec<u8>)>, BackendError> {
        let inner = self.lock();
        let Some(p) = inner.tables.get(table).and_then(|t| t.get(partition)) else {
            return Ok(Vec::new());
        };
        let lo = query.after.map_or(Bound::Unbounded, Bound::Excluded);
        let hi = query.before.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Some(a), Some(b)) = (query.after, query.before) {
            if a >= b {
                return Ok(Vec::new());
            }
        }
        let rows = p.range((lo, hi)).map(|(s, v)| (*s, v.clone()));
        Ok(if query.descending {
            rows.rev().take(query.limit).collect()
        } else {
            rows.take(query.limit).collect()
        })
    }

    async fn scan_table(&self, table: &str) -> Result<Vec<(Vec<u8>, u64, Vec<u8>)>, BackendError> {
        let inner = self.lock();
        let Some(t) = inner.tables.get(table) else {
            return Ok(Vec::new());
        };
        Ok(t.iter()
            .flat_map(|(part, rows)| rows.iter().map(|(s, v)| (part.clone(), *s, v.clone())))
            .collect())
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), BackendError> {
        // Applying ops cannot fail, so applying them in place under the lock is all or nothing.
        let mut inner = self.lock();
        for op in ops {
            apply(&mut inner.tables, op);
        }
        Ok(())
    }

    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().meta.get(name).cloned())
    }

    async fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), BackendError> {
        self.lock().meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;

    #[tokio::test]
    async fn memory_backend_conformance() {
        conformance::run(&MemoryBackend::new()).await;
    }
}
