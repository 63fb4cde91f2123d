//! The relay's services besides the store and the hub: the attachment blob store, the registry
//! of connected devices (presence, subscriptions, ephemeral queues) and the provisioning
//! channels. Held by [`AppState`].
//!
//! ```text
//!  Services ─┬─ blobs         BlobStore, opened on first use (no directory appears until needed)
//!            ├─ realtime      connected devices: presence, subscriptions, ephemeral queues
//!            └─ provisioning  ephemeral addresses for linking a new device (in memory, 10 min)
//! ```
//!
//! [`sweep`] runs inside the relay's expiry loop: attachments older than the envelope time to
//! live, group ciphertexts nobody references any more, expired linking codes and invites.

use std::time::SystemTime;

use tokio::sync::OnceCell;

use crate::blobs::{BlobBackend, BlobConfig, BlobError, BlobStore};
use crate::config::Config;
use crate::provisioning::Channels;
use crate::realtime::Realtime;
use crate::AppState;

/// The services; see the module docs.
#[derive(Debug)]
pub struct Services {
    blob_config: BlobConfig,
    blobs: OnceCell<BlobStore>,
    realtime: Realtime,
    provisioning: Channels,
}

impl Services {
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

/// One expiry pass over the services' data. Failures are logged; the next pass retries.
pub async fn sweep(state: &AppState, now_ms: i64) {
    let ttl = state.config().envelope_ttl;
    if let Some(blobs) = state.services().blobs_for_sweep().await {
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
        .services()
        .provisioning()
        .sweep(std::time::Instant::now());
}
