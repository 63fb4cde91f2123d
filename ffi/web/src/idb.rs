//! The browser's store: a [`Backend`] on IndexedDB. Like every backend it holds opaque bytes
//! only; the SDK's `EncryptedStore` above it hashes partition keys and seals values with the one
//! `StoreCipher`, so a profile in IndexedDB has the same format and guarantees as the native
//! SQLite file (`docs/store-format.md`).
//!
//! Layout: one database per profile, two object stores.
//! - `rows`: key `[table, partition, sort]` with `partition` an `ArrayBuffer` and `sort` the
//!   8-byte big-endian `ArrayBuffer` of the `u64` (IndexedDB compares binary keys byte by byte, so
//!   the order is the numeric one over the whole `u64` range); value a `Uint8Array`.
//! - `meta`: key the metadata name, value a `Uint8Array` (the wrapped store key, the format).
//!
//! A [`Backend::write`] is one `readwrite` transaction over `rows`: all or nothing, in order.

use std::cell::RefCell;
use std::rc::Rc;

use async_trait::async_trait;
use js_sys::{Array, Function, Promise, Uint8Array};
use sotto_store::{Backend, BackendError, RangeQuery, WriteOp};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbCursorDirection, IdbCursorWithValue, IdbDatabase, IdbFactory, IdbKeyRange, IdbObjectStore,
    IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode,
};

const ROWS: &str = "rows";
const META: &str = "meta";
const VERSION: u32 = 1;

/// An IndexedDB database holding one profile.
#[derive(Debug)]
pub struct IndexedDbBackend {
    db: IdbDatabase,
}

#[derive(Debug)]
struct JsError(String);

impl std::fmt::Display for JsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsError {}

fn storage(e: JsValue) -> BackendError {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .or_else(|| {
            e.dyn_ref::<web_sys::DomException>()
                .map(|d| format!("{}: {}", d.name(), d.message()))
        })
        .unwrap_or_else(|| "IndexedDB failed".to_owned());
    BackendError::Storage(Box::new(JsError(text)))
}

/// A promise with its resolve and reject functions, and the listeners that settle it, kept
/// alive until it settles.
struct Deferred {
    promise: Promise,
    resolve: Function,
    reject: Function,
    listeners: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Deferred {
    fn new() -> Self {
        let mut resolve = None;
        let mut reject = None;
        // The executor runs synchronously inside the constructor.
        let promise = Promise::new(&mut |res, rej| {
            resolve = Some(res);
            reject = Some(rej);
        });
        Self {
            promise,
            resolve: resolve.unwrap_or_else(|| Function::new_no_args("")),
            reject: reject.unwrap_or_else(|| Function::new_no_args("")),
            listeners: Vec::new(),
        }
    }

    async fn wait(self) -> Result<JsValue, JsValue> {
        let result = JsFuture::from(self.promise.clone()).await;
        drop(self.listeners);
        result
    }
}

/// Awaits an IndexedDB request: its result, or its error. The listeners are attached at once,
/// before the caller issues anything else.
fn request(req: &IdbRequest) -> impl std::future::Future<Output = Result<JsValue, BackendError>> {
    let mut d = Deferred::new();
    let (resolve, r) = (d.resolve.clone(), req.clone());
    let ok = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let _ = resolve.call1(
            &JsValue::UNDEFINED,
            &r.result().unwrap_or(JsValue::UNDEFINED),
        );
    });
    let (reject, r) = (d.reject.clone(), req.clone());
    let err = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let e = r.error().ok().flatten().map(JsValue::from);
        let _ = reject.call1(&JsValue::UNDEFINED, &e.unwrap_or(JsValue::UNDEFINED));
    });
    req.set_onsuccess(Some(ok.as_ref().unchecked_ref()));
    req.set_onerror(Some(err.as_ref().unchecked_ref()));
    d.listeners.push(ok);
    d.listeners.push(err);
    async move { d.wait().await.map_err(storage) }
}

/// Awaits a transaction's end: `complete`, or its error / abort (listeners attached at once).
fn finished(tx: &IdbTransaction) -> impl std::future::Future<Output = Result<(), BackendError>> {
    let mut d = Deferred::new();
    let resolve = d.resolve.clone();
    let ok = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let _ = resolve.call0(&JsValue::UNDEFINED);
    });
    let (reject, t) = (d.reject.clone(), tx.clone());
    let err = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        let e = t
            .error()
            .map(JsValue::from)
            .unwrap_or_else(|| JsValue::from_str("IndexedDB transaction aborted"));
        let _ = reject.call1(&JsValue::UNDEFINED, &e);
    });
    tx.set_oncomplete(Some(ok.as_ref().unchecked_ref()));
    tx.set_onerror(Some(err.as_ref().unchecked_ref()));
    tx.set_onabort(Some(err.as_ref().unchecked_ref()));
    d.listeners.push(ok);
    d.listeners.push(err);
    async move { d.wait().await.map(|_| ()).map_err(storage) }
}

fn bytes(b: &[u8]) -> JsValue {
    Uint8Array::from(b).buffer().into()
}

fn sort_key(sort: u64) -> JsValue {
    bytes(&sort.to_be_bytes())
}

fn key(table: &str, partition: &[u8], sort: u64) -> JsValue {
    Array::of3(
        &JsValue::from_str(table),
        &bytes(partition),
        &sort_key(sort),
    )
    .into()
}

fn to_vec(v: &JsValue) -> Vec<u8> {
    Uint8Array::new(v).to_vec()
}

fn to_sort(v: &JsValue) -> Result<u64, BackendError> {
    let b: [u8; 8] = to_vec(v)
        .try_into()
        .map_err(|_| BackendError::Invalid("a row key in IndexedDB is not Sotto's"))?;
    Ok(u64::from_be_bytes(b))
}

/// `(partition, sort)` of a stored key.
fn split_key(k: &JsValue) -> Result<(Vec<u8>, u64), BackendError> {
    let a: &Array = k.dyn_ref().ok_or(BackendError::Invalid(
        "a row key in IndexedDB is not Sotto's",
    ))?;
    Ok((to_vec(&a.get(1)), to_sort(&a.get(2))?))
}

/// Every row of one partition: `[table, partition]` sorts before all `[table, partition, sort]`.
fn partition_range(
    table: &str,
    partition: &[u8],
    q: &RangeQuery,
) -> Result<IdbKeyRange, BackendError> {
    let t = JsValue::from_str(table);
    let p = bytes(partition);
    let (lower, lower_open) = match q.after {
        Some(a) => (Array::of3(&t, &p, &sort_key(a)), true),
        None => (Array::of2(&t, &p), false),
    };
    let (upper, upper_open) = match q.before {
        Some(b) => (Array::of3(&t, &p, &sort_key(b)), true),
        None => (Array::of3(&t, &p, &sort_key(u64::MAX)), false),
    };
    IdbKeyRange::bound_with_lower_open_and_upper_open(&lower, &upper, lower_open, upper_open)
        .map_err(storage)
}

/// Every row of a table: `[table]` up to (not including) `[table + "\0"]`.
fn table_range(table: &str) -> Result<IdbKeyRange, BackendError> {
    let lower = Array::of1(&JsValue::from_str(table));
    let upper = Array::of1(&JsValue::from_str(&format!("{table}\0")));
    IdbKeyRange::bound_with_lower_open_and_upper_open(&lower, &upper, false, true).map_err(storage)
}

fn factory() -> Result<IdbFactory, BackendError> {
    let f = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .map_err(storage)?;
    if f.is_undefined() || f.is_null() {
        return Err(BackendError::Invalid(
            "this JavaScript environment has no IndexedDB",
        ));
    }
    Ok(f.unchecked_into())
}

impl IndexedDbBackend {
    /// Opens (creating on first use) the database `name`.
    pub async fn open(name: &str) -> Result<Self, BackendError> {
        if name.is_empty() || name.len() > 200 {
            return Err(BackendError::Invalid("store names are 1 to 200 bytes"));
        }
        let open: IdbOpenDbRequest = factory()?.open_with_u32(name, VERSION).map_err(storage)?;
        let o = open.clone();
        let upgrade = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            let Ok(db) = o.result() else { return };
            let db: IdbDatabase = db.unchecked_into();
            let names = db.object_store_names();
            for store in [ROWS, META] {
                if !names.contains(store) {
                    let _ = db.create_object_store(store);
                }
            }
        });
        open.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let db = request(&open).await;
        drop(upgrade);
        let db: IdbDatabase = db?.unchecked_into();
        Ok(Self { db })
    }

    /// Deletes the database `name` (a profile's "log out and forget").
    pub async fn delete(name: &str) -> Result<(), BackendError> {
        let req = factory()?.delete_database(name).map_err(storage)?;
        request(&req).await.map(|_| ())
    }

    fn store(
        &self,
        name: &str,
        mode: IdbTransactionMode,
    ) -> Result<(IdbTransaction, IdbObjectStore), BackendError> {
        let tx = self
            .db
            .transaction_with_str_and_mode(name, mode)
            .map_err(storage)?;
        let store = tx.object_store(name).map_err(storage)?;
        Ok((tx, store))
    }

    /// The rows of `range`, lowest key first, at most `limit`.
    async fn ascending(
        &self,
        range: &IdbKeyRange,
        limit: u32,
    ) -> Result<(Array, Array), BackendError> {
        let (_tx, store) = self.store(ROWS, IdbTransactionMode::Readonly)?;
        // Both requests run in one transaction, so they see the same rows in the same order.
        let keys = store
            .get_all_keys_with_key_and_limit(range, limit)
            .map_err(storage)?;
        let values = store
            .get_all_with_key_and_limit(range, limit)
            .map_err(storage)?;
        let (keys, values) = (request(&keys), request(&values));
        let keys: Array = keys.await?.unchecked_into();
        let values: Array = values.await?.unchecked_into();
        Ok((keys, values))
    }

    /// The rows of `range`, highest key first, at most `limit`.
    async fn descending(
        &self,
        range: &IdbKeyRange,
        limit: usize,
    ) -> Result<Vec<(JsValue, JsValue)>, BackendError> {
        let (_tx, store) = self.store(ROWS, IdbTransactionMode::Readonly)?;
        let req: IdbRequest = store
            .open_cursor_with_range_and_direction(range, IdbCursorDirection::Prev)
            .map_err(storage)?
            .unchecked_into();
        let rows = Rc::new(RefCell::new(Vec::new()));
        let mut d = Deferred::new();
        let (resolve, r, out) = (d.resolve.clone(), req.clone(), Rc::clone(&rows));
        let step = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            let cursor = r
                .result()
                .ok()
                .filter(|c| !c.is_null() && !c.is_undefined());
            let Some(cursor) = cursor else {
                let _ = resolve.call0(&JsValue::UNDEFINED);
                return;
            };
            let cursor: IdbCursorWithValue = cursor.unchecked_into();
            let mut out = out.borrow_mut();
            out.push((
                cursor.key().unwrap_or(JsValue::UNDEFINED),
                cursor.value().unwrap_or(JsValue::UNDEFINED),
            ));
            if out.len() >= limit || cursor.continue_().is_err() {
                let _ = resolve.call0(&JsValue::UNDEFINED);
            }
        });
        let (reject, r) = (d.reject.clone(), req.clone());
        let err = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            let e = r.error().ok().flatten().map(JsValue::from);
            let _ = reject.call1(&JsValue::UNDEFINED, &e.unwrap_or(JsValue::UNDEFINED));
        });
        req.set_onsuccess(Some(step.as_ref().unchecked_ref()));
        req.set_onerror(Some(err.as_ref().unchecked_ref()));
        d.listeners.push(step);
        d.listeners.push(err);
        d.wait().await.map_err(storage)?;
        let rows = rows.take();
        Ok(rows)
    }
}

impl Drop for IndexedDbBackend {
    /// Closes the connection at once (not when the JS garbage collector gets to it), so a
    /// `deleteDatabase` or a version change elsewhere is not blocked by it.
    fn drop(&mut self) {
        self.db.close();
    }
}

#[async_trait(?Send)]
impl Backend for IndexedDbBackend {
    async fn get(
        &self,
        table: &str,
        partition: &[u8],
        sort: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let (_tx, store) = self.store(ROWS, IdbTransactionMode::Readonly)?;
        let req = store.get(&key(table, partition, sort)).map_err(storage)?;
        let v = request(&req).await?;
        Ok((!v.is_undefined()).then(|| to_vec(&v)))
    }

    async fn range(
        &self,
        table: &str,
        partition: &[u8],
        query: RangeQuery,
    ) -> Result<Vec<(u64, Vec<u8>)>, BackendError> {
        let empty = match (query.after, query.before) {
            (Some(a), Some(b)) => a.saturating_add(1) >= b,
            (_, Some(0)) | (Some(u64::MAX), _) => true,
            _ => false,
        };
        if query.limit == 0 || empty {
            return Ok(Vec::new());
        }
        let range = partition_range(table, partition, &query)?;
        if query.descending {
            self.descending(&range, query.limit)
                .await?
                .iter()
                .map(|(k, v)| Ok((split_key(k)?.1, to_vec(v))))
                .collect()
        } else {
            let limit = u32::try_from(query.limit).unwrap_or(u32::MAX);
            let (keys, values) = self.ascending(&range, limit).await?;
            keys.iter()
                .zip(values.iter())
                .map(|(k, v)| Ok((split_key(&k)?.1, to_vec(&v))))
                .collect()
        }
    }

    async fn scan_table(&self, table: &str) -> Result<Vec<(Vec<u8>, u64, Vec<u8>)>, BackendError> {
        let (keys, values) = self.ascending(&table_range(table)?, u32::MAX).await?;
        keys.iter()
            .zip(values.iter())
            .map(|(k, v)| {
                let (p, s) = split_key(&k)?;
                Ok((p, s, to_vec(&v)))
            })
            .collect()
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), BackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        let (tx, store) = self.store(ROWS, IdbTransactionMode::Readwrite)?;
        let done = finished(&tx);
        let issued: Result<(), JsValue> = ops.iter().try_for_each(|op| match op {
            WriteOp::Put {
                table,
                partition,
                sort,
                value,
            } => store
                .put_with_key(&Uint8Array::from(&value[..]), &key(table, partition, *sort))
                .map(|_| ()),
            WriteOp::Delete {
                table,
                partition,
                sort,
            } => store.delete(&key(table, partition, *sort)).map(|_| ()),
            WriteOp::DeletePartition { table, partition } => {
                let range = partition_range(table, partition, &RangeQuery::ascending(1))
                    .map_err(|e| JsValue::from_str(&e.to_string()))?;
                store.delete(&range).map(|_| ())
            }
        });
        if let Err(e) = issued {
            // Nothing of this write may land.
            let _ = tx.abort();
            let _ = done.await;
            return Err(storage(e));
        }
        done.await
    }

    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let (_tx, store) = self.store(META, IdbTransactionMode::Readonly)?;
        let req = store.get(&JsValue::from_str(name)).map_err(storage)?;
        let v = request(&req).await?;
        Ok((!v.is_undefined()).then(|| to_vec(&v)))
    }

    async fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), BackendError> {
        let (tx, store) = self.store(META, IdbTransactionMode::Readwrite)?;
        let done = finished(&tx);
        store
            .put_with_key(&Uint8Array::from(value), &JsValue::from_str(name))
            .map_err(storage)?;
        done.await
    }
}
