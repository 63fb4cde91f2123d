//! Attachment blobs: opaque encrypted bytes, stored through `object_store`.
//!
//! ```text
//!  request body ──chunks──▶ put_stream ──parts──▶ ObjectStore ◀──get_stream── download
//!                            │ counts bytes,        LocalFileSystem (default: <data dir>/blobs)
//!                            │ aborts past max_len  AmazonS3 (any S3-compatible endpoint)
//!                            ▼
//!                          BlobId: 32 random bytes, URL-safe base64 (43 characters)
//! ```
//!
//! Clients encrypt attachments before upload, so a blob is opaque to the relay; what it must get
//! right is that an upload is streamed (a part in memory at a time, never the whole blob), that an
//! oversized or broken upload leaves nothing behind, that ids cannot be guessed, and that nothing
//! but a well-formed id ever reaches a storage path. Blobs are deleted by TTL like envelopes
//! ([`BlobStore::delete_older_than`]).
//!
//! Object layout: `<prefix>/<first two id characters>/<id>`; the two-character fan-out keeps local
//! directories small.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Default largest blob: 50 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 50 * 1024 * 1024;

/// Parts uploaded concurrently by one `put_stream` (bounds its memory to `(1 + this) × part size`).
const PARTS_IN_FLIGHT: usize = 2;

/// Minimum part size S3 accepts (except for the last part).
const S3_MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// An unguessable blob address: 32 random bytes, written as 43 characters of URL-safe base64
/// without padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// Length of the text form.
    pub const TEXT_LEN: usize = 43;

    /// A fresh id from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        BlobId(bytes)
    }

    /// The raw id.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn path(&self, prefix: &Path) -> Path {
        let text = self.to_string();
        let fan_out = text.get(..2).unwrap_or_default();
        prefix.clone().join(fan_out).join(text.as_str())
    }
}

impl From<[u8; 32]> for BlobId {
    fn from(bytes: [u8; 32]) -> Self {
        BlobId(bytes)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// Accepts exactly the canonical text form: 43 URL-safe base64 characters that decode to 32 bytes
/// with zero trailing bits. Anything else (padding, `/`, `.`, `%`, other lengths) is rejected
/// before it can name a path.
impl FromStr for BlobId {
    type Err = BlobIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let well_formed = text.len() == Self::TEXT_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(BlobIdError);
        }
        let mut bytes = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(32) => Ok(BlobId(bytes)),
            _ => Err(BlobIdError),
        }
    }
}

impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Text that is not a blob id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a blob id: expected 43 characters of URL-safe base64")]
pub struct BlobIdError;

/// Where blobs live.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobBackend {
    /// A directory on the relay's disk (created if missing), e.g. `<data dir>/blobs`.
    Local {
        /// Root directory.
        dir: PathBuf,
    },
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// An S3-compatible bucket (AWS, MinIO, Garage, Ceph, R2, ...).
///
/// Credentials left `None` come from the standard `AWS_*` environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), or from the instance
/// metadata service on AWS. Operators should add a bucket lifecycle rule that aborts incomplete
/// multipart uploads after a day: an upload cut short by a relay crash is otherwise billed forever.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region, e.g. `eu-central-1` (`us-east-1` for most self-hosted stores).
    pub region: Option<String>,
    /// Endpoint URL for non-AWS stores, e.g. `http://127.0.0.1:9000`; `None` means AWS.
    pub endpoint: Option<String>,
    /// Key prefix inside the bucket [default: `blobs`].
    pub prefix: Option<String>,
    /// Access key id; `None` reads the environment.
    pub access_key_id: Option<String>,
    /// Secret access key; `None` reads the environment. Never printed by `Debug`.
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint (a store on the same host or private network).
    pub allow_http: bool,
    /// Use `https://<bucket>.<endpoint>` addressing instead of `https://<endpoint>/<bucket>`.
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let S3Config {
            bucket,
            region,
            endpoint,
            prefix,
            access_key_id,
            secret_access_key,
            allow_http,
            virtual_hosted_style,
        } = self;
        f.debug_struct("S3Config")
            .field("bucket", bucket)
            .field("region", region)
            .field("endpoint", endpoint)
            .field("prefix", prefix)
            .field("access_key_id", access_key_id)
            .field(
                "secret_access_key",
                &secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", allow_http)
            .field("virtual_hosted_style", virtual_hosted_style)
            .finish()
    }
}

/// Blob store settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobConfig {
    /// Where blobs live.
    pub backend: BlobBackend,
    /// Bytes buffered per uploaded part. S3 needs at least 5 MiB; the local store is fine with less.
    /// [default: 1 MiB local, 5 MiB S3]
    pub part_size: Option<usize>,
    /// Local store only: fsync each blob before the upload is answered, so an accepted attachment
    /// survives a power cut like an accepted envelope [default: true].
    pub fsync: bool,
}

impl BlobConfig {
    /// The default: a local directory, fsync on.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        BlobConfig {
            backend: BlobBackend::Local { dir: dir.into() },
            part_size: None,
            fsync: true,
        }
    }
}

/// The byte stream of a stored blob.
pub type BlobStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// What went wrong with a blob operation.
///
/// For the relay's answers: `TooLarge` is 413, `NotFound` 404, `Body` 400 (the client's upload
/// broke off), `Store` and `Config` are internal errors (500, logged, never echoed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The upload exceeded the size limit; nothing was stored.
    #[error("blob larger than {max_len} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        max_len: u64,
    },
    /// No blob with that id (never stored, deleted or expired).
    #[error("no such blob")]
    NotFound,
    /// Reading the upload body failed (client disconnected, bad framing); nothing was stored.
    #[error("upload body failed: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The storage backend failed.
    #[error("blob storage failed: {0}")]
    Store(object_store::Error),
    /// The store could not be set up from the configuration.
    #[error("blob store configuration: {0}")]
    Config(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            other => BlobError::Store(other),
        }
    }
}

/// The blob store: cheap to clone, shareable across tasks.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    part_size: usize,
    /// Set for the local backend: its root, for sweeping staging files left by a crash.
    local_root: Option<PathBuf>,
}

impl BlobStore {
    /// Opens the configured backend (creating the local directory if needed).
    pub fn open(config: &BlobConfig) -> Result<Self, BlobError> {
        match &config.backend {
            BlobBackend::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    BlobError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let dir = dir.canonicalize().map_err(|e| {
                    BlobError::Config(format!("cannot resolve {}: {e}", dir.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir)?
                    .with_automatic_cleanup(true)
                    .with_fsync(config.fsync);
                Ok(BlobStore {
                    store: Arc::new(store),
                    prefix: Path::default(),
                    part_size: config.part_size.unwrap_or(1024 * 1024).max(1),
                    local_root: Some(dir),
                })
            }
            BlobBackend::S3(s3) => {
                // The HTTP client uses rustls with the relay's provider (ring); it must be the
                // process default before the client is built. Already installed is fine.
                let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style);
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder
                    .build()
                    .map_err(|e| BlobError::Config(e.to_string()))?;
                Ok(BlobStore {
                    store: Arc::new(store),
                    prefix: Path::from(s3.prefix.as_deref().unwrap_or("blobs")),
                    part_size: config
                        .part_size
                        .unwrap_or(S3_MIN_PART_BYTES)
                        .max(S3_MIN_PART_BYTES),
                    local_root: None,
                })
            }
        }
    }

    /// Any `object_store` backend (tests, other clouds), blobs under `prefix`.
    pub fn with_object_store(store: Arc<dyn ObjectStore>, prefix: &str, part_size: usize) -> Self {
        BlobStore {
            store,
            prefix: Path::from(prefix),
            part_size: part_size.max(1),
            local_root: None,
        }
    }

    /// Stores a blob streamed from `body` under a fresh id.
    ///
    /// Memory stays at a few parts (`part_size` each) whatever the blob size. Once more than
    /// `max_len` bytes have arrived the upload is aborted and [`BlobError::TooLarge`] returned; a
    /// body error aborts it too. An aborted upload leaves nothing behind, including when this future
    /// is dropped half-way (the client hung up).
    pub async fn put_stream<S, E>(&self, body: S, max_len: u64) -> Result<BlobId, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = BlobId::random();
        let upload = self.store.put_multipart(&id.path(&self.prefix)).await?;
        let mut writer = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(
            upload,
            self.part_size,
        )));
        let mut body = std::pin::pin!(body);
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    writer.abort().await;
                    return Err(BlobError::Body(e.into()));
                }
            };
            received = received.saturating_add(chunk.len() as u64);
            if received > max_len {
                writer.abort().await;
                return Err(BlobError::TooLarge { max_len });
            }
            let Some(w) = writer.0.as_mut() else {
                return Err(BlobError::Config("upload already finished".into()));
            };
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                writer.abort().await;
                return Err(e.into());
            }
            w.put(chunk);
        }
        let Some(w) = writer.0.take() else {
            return Err(BlobError::Config("upload already finished".into()));
        };
        // `finish` aborts the upload itself when completing fails.
        w.finish().await?;
        Ok(id)
    }

    /// Opens a blob for reading: its length and its bytes.
    pub async fn get_stream(&self, id: &BlobId) -> Result<(u64, BlobStream), BlobError> {
        let result = self.store.get(&id.path(&self.prefix)).await?;
        let len = result.meta.size;
        let stream = result
            .into_stream()
            .map(|chunk| chunk.map_err(BlobError::from));
        Ok((len, stream.boxed()))
    }

    /// Deletes a blob. Deleting a blob that does not exist succeeds (deletes race with expiry).
    pub async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        match self.store.delete(&id.path(&self.prefix)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BlobError::Store(e)),
        }
    }

    /// Deletes every blob last written before `cutoff` (the envelope TTL ago) and returns how many.
    /// On the local backend it also removes staging files of uploads cut short by a crash.
    /// Objects under the prefix whose names are not blob ids are left alone.
    pub async fn delete_older_than(&self, cutoff: SystemTime) -> Result<u64, BlobError> {
        let prefix = self.prefix.clone();
        let expired = self
            .store
            .list(Some(&self.prefix))
            .filter_map(move |meta| {
                let keep = match &meta {
                    Ok(meta) => {
                        SystemTime::from(meta.last_modified) < cutoff
                            && is_blob_path(&prefix, &meta.location)
                    }
                    Err(_) => true,
                };
                std::future::ready(keep.then(|| meta.map(|meta| meta.location)))
            })
            .boxed();
        let mut deleted = self.store.delete_stream(expired);
        let mut count = 0;
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) => count += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BlobError::Store(e)),
            }
        }
        if let Some(root) = self.local_root.clone() {
            tokio::task::spawn_blocking(move || remove_stale_staging_files(&root, cutoff))
                .await
                .map_err(|e| BlobError::Config(format!("staging sweep failed: {e}")))?;
        }
        Ok(count)
    }
}

/// True for `<prefix>/<xx>/<blob id>` paths whose fan-out matches the id.
fn is_blob_path(prefix: &Path, location: &Path) -> bool {
    let Some(rest) = location.prefix_match(prefix) else {
        return false;
    };
    let parts: Vec<_> = rest.collect();
    match parts.as_slice() {
        [fan_out, name] => match name.as_ref().parse::<BlobId>() {
            Ok(id) => id.path(prefix) == *location && fan_out.as_ref().len() == 2,
            Err(_) => false,
        },
        _ => false,
    }
}

/// `LocalFileSystem` stages multipart uploads as `<dest>#<n>` and removes them on abort or drop,
/// but not if the process dies mid-upload. Those files are invisible to `list`; sweep them here.
fn remove_stale_staging_files(root: &FsPath, cutoff: SystemTime) {
    let Ok(fan_outs) = std::fs::read_dir(root) else {
        return;
    };
    for dir in fan_outs.flatten() {
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let staging = entry.file_name().to_string_lossy().contains('#');
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < cutoff);
            if staging && stale {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(error = %e, "could not remove a stale blob staging file");
                }
            }
        }
    }
}

/// Owns an in-progress upload and aborts it unless it was finished, even when dropped.
struct AbortOnDrop(Option<WriteMultipart>);

impl AbortOnDrop {
    async fn abort(&mut self) {
        if let Some(writer) = self.0.take() {
            if let Err(e) = writer.abort().await {
                tracing::warn!(error = %e, "could not abort a blob upload");
            }
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(error = %e, "could not abort a dropped blob upload");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::Duration;

    const MIB: usize = 1024 * 1024;

    fn local(dir: &FsPath) -> BlobStore {
        let mut config = BlobConfig::local(dir);
        config.part_size = Some(256 * 1024);
        BlobStore::open(&config).unwrap()
    }

    /// Deterministic, non-repeating test bytes, in uneven chunks.
    fn chunks(total: usize, chunk: usize) -> Vec<Bytes> {
        let data: Vec<u8> = (0..total)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
            .collect();
        data.chunks(chunk).map(Bytes::copy_from_slice).collect()
    }

    fn body(parts: Vec<Bytes>) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures_util::stream::iter(parts.into_iter().map(Ok))
    }

    fn files_under(dir: &FsPath) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    found.push(path);
                }
            }
        }
        found
    }

    async fn read_all(store: &BlobStore, id: &BlobId) -> (u64, Vec<u8>) {
        let (len, mut stream) = store.get_stream(id).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        (len, out)
    }

    #[tokio::test]
    async fn multi_mib_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let parts = chunks(6 * MIB + 12_345, 64 * 1024 + 7);
        let expected: Vec<u8> = parts.iter().flat_map(|c| c.iter().copied()).collect();
        let id = store
            .put_stream(body(parts), DEFAULT_MAX_BLOB_BYTES)
            .await
            .unwrap();
        let (len, bytes) = read_all(&store, &id).await;
        assert_eq!(len, expected.len() as u64);
        assert!(bytes == expected, "content differs");
        // Exactly one file, at the fan-out path, no staging leftovers.
        let files = files_under(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let text = id.to_string();
        assert!(files[0].ends_with(format!("{}/{}", &text[..2], text)));
    }

    #[tokio::test]
    async fn exactly_max_len_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let id = store
            .put_stream(body(chunks(1000, 100)), 1000)
            .await
            .unwrap();
        assert_eq!(read_all(&store, &id).await.0, 1000);
        let empty = store.put_stream(body(Vec::new()), 1000).await.unwrap();
        assert_eq!(read_all(&store, &empty).await, (0, Vec::new()));
    }

    #[tokio::test]
    async fn over_limit_upload_is_rejected_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let max = 3 * MIB as u64;
        // Several parts are written before the limit is crossed.
        let err = store
            .put_stream(body(chunks(4 * MIB, 100_000)), max)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::TooLarge { max_len } if max_len == max),
            "{err:?}"
        );
        assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
        // Off by one.
        let err = store
            .put_stream(body(chunks(1001, 1001)), 1000)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }));
        assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn a_failing_body_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let items: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![1u8; 600_000])),
            Err(std::io::Error::other("connection reset")),
        ];
        let err = store
            .put_stream(futures_util::stream::iter(items), DEFAULT_MAX_BLOB_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Body(_)), "{err:?}");
        assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn a_dropped_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        // A body that delivers 1 MiB and then never ends, like a client that went silent.
        let stalled =
            futures_util::stream::iter(vec![Ok::<_, Infallible>(Bytes::from(vec![7u8; MIB]))])
                .chain(futures_util::stream::pending());
        let upload = store.put_stream(stalled, DEFAULT_MAX_BLOB_BYTES);
        assert!(tokio::time::timeout(Duration::from_millis(200), upload)
            .await
            .is_err());
        // The abort runs on a spawned task; give it a moment.
        for _ in 0..100 {
            if files_under(dir.path()).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn ids_are_43_url_safe_characters_and_round_trip() {
        let a = BlobId::random();
        let b = BlobId::random();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), BlobId::TEXT_LEN);
        assert_eq!(text.parse::<BlobId>().unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), a);
    }

    #[test]
    fn bad_ids_are_rejected() {
        let good = BlobId::from([0xAB; 32]).to_string();
        let mut bad: Vec<String> = vec![
            String::new(),
            "..".into(),
            "../../etc/passwd".into(),
            format!("{}=", &good[..42]),
            format!("{good}A"),
            good[..42].to_string(),
            format!("{}/", &good[..42]),
            format!("{}.", &good[..42]),
            format!("{}+", &good[..42]),
            format!("{}%", &good[..42]),
            format!("..{}", &good[..41]),
            format!("{} ", &good[..42]),
            format!("{}é", &good[..41]),
        ];
        // Non-zero trailing bits: the 43rd character may only encode 2 data bits.
        let last = good.as_bytes()[42];
        let sloppy = if last == b'B' { 'C' } else { 'B' };
        bad.push(format!("{}{sloppy}", &good[..42]));
        assert!(good.parse::<BlobId>().is_ok());
        for text in &bad {
            assert_eq!(text.parse::<BlobId>(), Err(BlobIdError), "{text:?}");
            assert!(serde_json::from_str::<BlobId>(&format!("{text:?}")).is_err());
        }
    }

    #[tokio::test]
    async fn missing_blobs_are_not_found_and_delete_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let id = BlobId::random();
        assert!(matches!(
            store.get_stream(&id).await,
            Err(BlobError::NotFound)
        ));
        store.delete(&id).await.unwrap();

        let id = store.put_stream(body(chunks(10, 10)), 100).await.unwrap();
        store.delete(&id).await.unwrap();
        assert!(matches!(
            store.get_stream(&id).await,
            Err(BlobError::NotFound)
        ));
        store.delete(&id).await.unwrap();
        // Automatic cleanup removed the empty fan-out directory too.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn expiry_deletes_only_old_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let old = store.put_stream(body(chunks(100, 10)), 1000).await.unwrap();
        let old_2 = store.put_stream(body(chunks(100, 10)), 1000).await.unwrap();
        // File times have coarse granularity on some filesystems.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cutoff = SystemTime::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fresh = store.put_stream(body(chunks(100, 10)), 1000).await.unwrap();
        // A file that is not a blob and a crash leftover, both old.
        let foreign = dir.path().join("ab").join("not-a-blob");
        std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
        std::fs::write(&foreign, b"x").unwrap();
        let fresh_path = fresh.to_string();
        let leftover = dir
            .path()
            .join(&fresh_path[..2])
            .join(format!("{}#1", BlobId::random()));
        std::fs::write(&leftover, b"partial").unwrap();
        let earlier = std::fs::File::options()
            .write(true)
            .open(&leftover)
            .unwrap();
        earlier
            .set_modified(cutoff - Duration::from_secs(3600))
            .unwrap();
        let earlier = std::fs::File::options().write(true).open(&foreign).unwrap();
        earlier
            .set_modified(cutoff - Duration::from_secs(3600))
            .unwrap();

        assert_eq!(store.delete_older_than(cutoff).await.unwrap(), 2);
        assert!(matches!(
            store.get_stream(&old).await,
            Err(BlobError::NotFound)
        ));
        assert!(matches!(
            store.get_stream(&old_2).await,
            Err(BlobError::NotFound)
        ));
        assert_eq!(read_all(&store, &fresh).await.0, 100);
        assert!(foreign.exists());
        assert!(!leftover.exists());
        // Running again finds nothing more.
        assert_eq!(store.delete_older_than(cutoff).await.unwrap(), 0);
    }

    #[test]
    fn s3_config_builds_and_hides_the_secret() {
        let config = BlobConfig {
            backend: BlobBackend::S3(S3Config {
                bucket: "attachments".into(),
                region: Some("us-east-1".into()),
                endpoint: Some("http://127.0.0.1:9000".into()),
                access_key_id: Some("AKIDEXAMPLE".into()),
                secret_access_key: Some("very-secret-value".into()),
                allow_http: true,
                ..S3Config::default()
            }),
            part_size: Some(1024),
            fsync: true,
        };
        let store = BlobStore::open(&config).unwrap();
        assert_eq!(store.part_size, S3_MIN_PART_BYTES);
        assert_eq!(store.prefix, Path::from("blobs"));
        let debug = format!("{config:?} {store:?}");
        assert!(!debug.contains("very-secret-value"), "{debug}");
    }

    #[tokio::test]
    async fn works_over_any_object_store() {
        let store = BlobStore::with_object_store(
            Arc::new(object_store::memory::InMemory::new()),
            "att",
            1000,
        );
        let id = store
            .put_stream(body(chunks(5000, 333)), 5000)
            .await
            .unwrap();
        assert_eq!(read_all(&store, &id).await.0, 5000);
        assert!(store
            .put_stream(body(chunks(5001, 333)), 5000)
            .await
            .is_err());
        assert_eq!(
            store
                .delete_older_than(SystemTime::now() + Duration::from_secs(1))
                .await
                .unwrap(),
            1
        );
    }
}
