//! [`Backend`]: what every storage engine implements. Backends see opaque bytes only; the
//! [`EncryptedStore`](crate::EncryptedStore) above them hashes keys and seals values.

use async_trait::async_trait;

/// Auto-trait bounds a backend needs: `Send + Sync` on native targets, none on wasm32, where
/// browser storage handles are neither.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeSendSync for T {}
/// Auto-trait bounds a backend needs: `Send + Sync` on native targets, none on wasm32, where
/// browser storage handles are neither.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSendSync for T {}

/// A failed backend operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The storage engine failed (I/O, a full disk, a locked or corrupt database file).
    #[error("store backend failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request cannot be expressed to this backend (e.g. a table name it refuses).
    #[error("invalid store request: {0}")]
    Invalid(&'static str),
}

/// Which rows of a partition [`Backend::range`] returns: those with `after < sort < before`
/// (both bounds exclusive, each optional), ordered by `sort`, at most `limit` of them, from the
/// low end or, with `descending`, from the high end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeQuery {
    /// Exclusive lower bound.
    pub after: Option<u64>,
    /// Exclusive upper bound.
    pub before: Option<u64>,
    /// At most this many rows (0 returns none).
    pub limit: usize,
    /// Highest `sort` first.
    pub descending: bool,
}

impl RangeQuery {
    /// The first `limit` rows, lowest `sort` first.
    pub fn ascending(limit: usize) -> Self {
        Self {
            after: None,
            before: None,
            limit,
            descending: false,
        }
    }

    /// The last `limit` rows, highest `sort` first (a history page).
    pub fn descending(limit: usize) -> Self {
        Self {
            descending: true,
            ..Self::ascending(limit)
        }
    }

    /// Only rows with `sort > after`.
    pub fn after(mut self, after: u64) -> Self {
        self.after = Some(after);
        self
    }

    /// Only rows with `sort < before`.
    pub fn before(mut self, before: u64) -> Self {
        self.before = Some(before);
        self
    }

    /// Whether `sort` lies inside the bounds (ignoring `limit`).
    pub fn contains(&self, sort: u64) -> bool {
        self.after.is_none_or(|a| sort > a) && self.before.is_none_or(|b| sort < b)
    }
}

/// One change inside an atomic [`Backend::write`].
#[derive(Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace the row at `(table, partition, sort)`.
    Put {
        /// Table name (stored as is: names are schema, not data).
        table: String,
        /// Opaque partition key.
        partition: Vec<u8>,
        /// Order inside the partition.
        sort: u64,
        /// Opaque value.
        value: Vec<u8>,
    },
    /// Remove one row (no error if absent).
    Delete {
        /// Table name.
        table: String,
        /// Opaque partition key.
        partition: Vec<u8>,
        /// Order inside the partition.
        sort: u64,
    },
    /// Remove every row of a partition.
    DeletePartition {
        /// Table name.
        table: String,
        /// Opaque partition key.
        partition: Vec<u8>,
    },
}

impl std::fmt::Debug for WriteOp {
    /// Sizes only: values may be sealed, but a backend used without the encrypted layer (tests)
    /// should not print them either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put {
                table,
                partition,
                sort,
                value,
            } => f
                .debug_struct("Put")
                .field("table", table)
                .field("partition_len", &partition.len())
                .field("sort", sort)
                .field("value_len", &value.len())
                .finish(),
            Self::Delete {
                table,
                partition,
                sort,
            } => f
                .debug_struct("Delete")
                .field("table", table)
                .field("partition_len", &partition.len())
                .field("sort", sort)
                .finish(),
            Self::DeletePartition { table, partition } => f
                .debug_struct("DeletePartition")
                .field("table", table)
                .field("partition_len", &partition.len())
                .finish(),
        }
    }
}

/// A storage engine: rows `(table, partition, sort) -> value` of opaque bytes, plus a small
/// unencrypted metadata map (the wrapped store key, the format version).
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Backend: MaybeSendSync {
    /// One row.
    async fn get(
        &self,
        table: &str,
        partition: &[u8],
        sort: u64,
    ) -> Result<Option<Vec<u8>>, BackendError>;

    /// Rows of one partition selected by `query`, in the order it asks for.
    async fn range(
        &self,
        table: &str,
        partition: &[u8],
        query: RangeQuery,
    ) -> Result<Vec<(u64, Vec<u8>)>, BackendError>;

    /// Every row of a table as `(partition, sort, value)` (for small tables: contacts, groups,
    /// the conversations index).
    async fn scan_table(&self, table: &str) -> Result<Vec<(Vec<u8>, u64, Vec<u8>)>, BackendError>;

    /// Applies every op in order, all or nothing.
    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), BackendError>;

    /// Unencrypted metadata.
    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError>;

    /// Sets unencrypted metadata, durably.
    async fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), BackendError>;
}

/// The behaviour every backend must show, run against each of them in their tests (the browser's
/// IndexedDB backend in `sotto-web` included, through the `conformance` feature).
#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
#[allow(clippy::unwrap_used, clippy::panic)]
pub mod conformance {
    use super::*;

    fn put(table: &str, partition: &[u8], sort: u64, value: &[u8]) -> WriteOp {
        WriteOp::Put {
            table: table.into(),
            partition: partition.to_vec(),
            sort,
            value: value.to_vec(),
        }
    }

    /// Runs every check against an empty backend `b`.
    pub async fn run(b: &dyn Backend) {
        assert_eq!(b.get("t", b"p", 1).await.unwrap(), None);
        assert!(b.scan_table("t").await.unwrap().is_empty());
        assert!(b
            .range("t", b"p", RangeQuery::ascending(10))
            .await
            .unwrap()
            .is_empty());

        let mut ops: Vec<WriteOp> = (1..=5u64)
            .map(|i| put("t", b"p", i * 10, &[i as u8]))
            .collect();
        ops.push(put("t", b"q", 1, b"q1"));
        ops.push(put("u", b"p", 10, b"u"));
        // Extreme sort values keep their order (SQLite stores them as signed integers).
        ops.push(put("t", b"x", 0, b"min"));
        ops.push(put("t", b"x", u64::MAX, b"max"));
        ops.push(put("t", b"x", 1 << 63, b"mid"));
        b.write(ops).await.unwrap();

        assert_eq!(b.get("t", b"p", 30).await.unwrap(), Some(vec![3]));
        assert_eq!(b.get("u", b"p", 10).await.unwrap(), Some(b"u".to_vec()));
        assert_eq!(b.get("t", b"p", 31).await.unwrap(), None);

        let sorts = |rows: Vec<(u64, Vec<u8>)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(
            sorts(b.range("t", b"p", RangeQuery::ascending(10)).await.unwrap()),
            vec![10, 20, 30, 40, 50]
        );
        assert_eq!(
            sorts(b.range("t", b"p", RangeQuery::descending(2)).await.unwrap()),
            vec![50, 40]
        );
        assert_eq!(
            sorts(
                b.range("t", b"p", RangeQuery::descending(10).before(40))
                    .await
                    .unwrap()
            ),
            vec![30, 20, 10]
        );
        assert_eq!(
            sorts(
                b.range("t", b"p", RangeQuery::ascending(2).after(10))
                    .await
                    .unwrap()
            ),
            vec![20, 30]
        );
        assert_eq!(
            sorts(
                b.range("t", b"p", RangeQuery::ascending(10).after(10).before(40))
                    .await
                    .unwrap()
            ),
            vec![20, 30]
        );
        assert!(b
            .range("t", b"p", RangeQuery::ascending(10).after(40).before(20))
            .await
            .unwrap()
            .is_empty());
        assert!(b
            .range("t", b"p", RangeQuery::ascending(0))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            sorts(b.range("t", b"x", RangeQuery::ascending(10)).await.unwrap()),
            vec![0, 1 << 63, u64::MAX]
        );
        assert_eq!(
            sorts(
                b.range("t", b"x", RangeQuery::descending(10).before(u64::MAX))
                    .await
                    .unwrap()
            ),
            vec![1 << 63, 0]
        );

        let mut scanned = b.scan_table("t").await.unwrap();
        scanned.sort();
        assert_eq!(scanned.len(), 9);
        assert!(scanned.contains(&(b"q".to_vec(), 1, b"q1".to_vec())));

        // Replace, delete one, delete a partition: in one write, applied in order.
        b.write(vec![
            put("t", b"p", 10, b"new"),
            WriteOp::Delete {
                table: "t".into(),
                partition: b"p".to_vec(),
                sort: 20,
            },
            WriteOp::DeletePartition {
                table: "t".into(),
                partition: b"x".to_vec(),
            },
            put("t", b"x", 5, b"after-delete"),
        ])
        .await
        .unwrap();
        assert_eq!(b.get("t", b"p", 10).await.unwrap(), Some(b"new".to_vec()));
        assert_eq!(b.get("t", b"p", 20).await.unwrap(), None);
        assert_eq!(
            sorts(b.range("t", b"x", RangeQuery::ascending(10)).await.unwrap()),
            vec![5]
        );
        assert_eq!(b.get("u", b"p", 10).await.unwrap(), Some(b"u".to_vec()));
        // Deleting what is not there is not an error.
        b.write(vec![WriteOp::Delete {
            table: "none".into(),
            partition: b"p".to_vec(),
            sort: 1,
        }])
        .await
        .unwrap();
        b.write(Vec::new()).await.unwrap();

        assert_eq!(b.meta_get("m").await.unwrap(), None);
        b.meta_put("m", b"one").await.unwrap();
        b.meta_put("m", b"two").await.unwrap();
        assert_eq!(b.meta_get("m").await.unwrap(), Some(b"two".to_vec()));
    }
}
