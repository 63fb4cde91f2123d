//! State of the relay's second tier of features: attachment blobs, live presence and ephemeral
//! delivery, and provisioning channels. Held by [`AppState`] beside the store
//! and the hub.
//!
//! ```text
//!  Features ─┬─ blobs         BlobStore, opened on first use (no directory appears until needed)
//!            ├─ realtime      connected devices: presence, subscriptions, ephemeral queues
//!            └─ provisioning  ephemeral addresses for linking a new device (in memory, 10 min)
//! ```
//!
//! [`sweep`] runs inside the relay's expiry loop: attachments older than the envelope time to
//! live, group ciphertexts nobody references any more, expired linking codes and invites.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::OnceCell;

use crate::blobs::{BlobBackend, BlobConfig, BlobError, BlobStore, S3Config};
use crate::config::{Cli, Config};
use crate::provisioning::Channels;
use crate::realtime::Realtime;
use crate::AppState;

/// Feature state; see the module docs.
#[derive(Debug)]
pub struct Features {
    blob_config: BlobConfig,
    blobs: OnceCell<BlobStore>,
    realtime: Realtime,
    provisioning: Channels,
}

impl Features {
    /// Nothing is opened yet.
    pub fn new(config: &Config) -> Self {
        Self {
            blob_config: config.blobs.clone(),
            blobs: OnceCell::new(),
            realtime: Realtime::default(),
            provisioning: Channels::default(),
        }
    }

    /// The blob store, opened (and its directory created) on first use.
    pub async fn blobs(&self) -> Result<&BlobStore, BlobError> {
        self.blobs
            .get_or_try_init(|| async { BlobStore::open(&self.blob_config) })
            .await
    }

    /// The blob store if it was opened, or if it has something to sweep.
    async fn blobs_for_sweep(&self) -> Option<&BlobStore> {
        if let Some(store) = self.blobs.get() {
            return Some(store);
        }
        if let BlobBackend::Local { dir } = &self.blob_config.backend {
            if !dir.exists() {
                return None;
            }
        }
        self.blobs().await.ok()
    }

    /// Connected devices.
    pub fn realtime(&self) -> &Realtime {
        &self.realtime
    }

    /// Provisioning channels.
    pub fn provisioning(&self) -> &Channels {
        &self.provisioning
    }
}

/// The blob directory that goes with a database URL: `blobs` beside an SQLite file, else
/// `./blobs`.
pub fn default_blob_dir(database_url: &str) -> PathBuf {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p));
    match path {
        Some(p) if !p.is_empty() && !p.starts_with(':') => {
            let parent = std::path::Path::new(p)
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            parent.join("blobs")
        }
        _ => PathBuf::from("blobs"),
    }
}

/// Blob settings from the command line and the file (flag wins).
pub(crate) fn blob_config(cli: &Cli, file: &Cli) -> BlobConfig {
    let bucket = cli.blob_s3_bucket.clone().or(file.blob_s3_bucket.clone());
    if let Some(bucket) = bucket {
        let endpoint = cli
            .blob_s3_endpoint
            .clone()
            .or(file.blob_s3_endpoint.clone());
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        return BlobConfig {
            backend: BlobBackend::S3(S3Config {
                bucket,
                region: cli.blob_s3_region.clone().or(file.blob_s3_region.clone()),
                endpoint,
                allow_http,
                ..S3Config::default()
            }),
            part_size: None,
            fsync: true,
        };
    }
    let dir = cli.blob_dir.clone().or(file.blob_dir.clone());
    let dir = dir.unwrap_or_else(|| {
        let url = cli
            .database_url
            .clone()
            .or(file.database_url.clone())
            .unwrap_or_else(|| crate::config::DEFAULT_DATABASE_URL.to_owned());
        default_blob_dir(&url)
    });
    BlobConfig::local(dir)
}

/// Test settings, no fsync: beside an SQLite test database; for a server database, a directory
/// under the system's temporary directory named after the database (created only if used).
pub(crate) fn test_blob_config(database_url: &str) -> BlobConfig {
    let dir = if database_url.starts_with("sqlite:") {
        default_blob_dir(database_url)
    } else {
        let name: String = database_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        std::env::temp_dir().join("sotto-test-blobs").join(name)
    };
    let mut config = BlobConfig::local(dir);
    config.fsync = false;
    config
}

/// One expiry pass over the features' data. Failures are logged; the next pass retries.
pub async fn sweep(state: &AppState, now_ms: i64) {
    let ttl = state.config().envelope_ttl;
    if let Some(blobs) = state.features().blobs_for_sweep().await {
        let cutoff = SystemTime::now()
            .checked_sub(ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match blobs.delete_older_than(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired attachments deleted"),
            Err(e) => tracing::warn!(error = %e, "attachment expiry failed"),
        }
    }
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = state
        .store()
        .expire_attachments(now_ms.saturating_sub(ttl_ms))
        .await
    {
        tracing::warn!(error = %e, "attachment record expiry failed");
    }
    match state.store().sweep_groups(now_ms).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "unreferenced group messages deleted"),
        Err(e) => tracing::warn!(error = %e, "group message expiry failed"),
    }
    state
        .features()
        .provisioning()
        .sweep(std::time::Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_dirs_follow_the_database() {
        assert_eq!(
            default_blob_dir("sqlite:///var/lib/sotto/relay.sqlite"),
            PathBuf::from("/var/lib/sotto/blobs")
        );
        assert_eq!(
            default_blob_dir("sqlite://sotto.sqlite?mode=rwc"),
            PathBuf::from("blobs")
        );
        assert_eq!(default_blob_dir("postgres://h/db"), PathBuf::from("blobs"));
        let BlobBackend::Local { dir } = test_blob_config("postgres://h/sotto_test_1").backend
        else {
            panic!("local expected");
        };
        assert!(dir.starts_with(std::env::temp_dir()));
        assert!(dir.ends_with("sotto_test_1"));
    }
}
