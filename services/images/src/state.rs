//! What every RPC of the images and content services shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_common::client::BerthChannel;
use berth_common::config::ServiceName;
use berth_common::events::Publisher;
use berth_common::{Namespace, ServiceContext};
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use chrono::Utc;
use tonic::metadata::MetadataValue;

use crate::content::store::ContentStore;
use crate::db::{Db, LeaseRecord};
use crate::error::{Error, Result};
use crate::pull::download::Download;

pub struct State {
    pub ctx: ServiceContext,
    pub content: ContentStore,
    pub db: Db,
    pub events: Option<Publisher>,
    /// Blob downloads in progress by digest: a second pull of the same layer joins it.
    pub downloads: Mutex<HashMap<String, Download>>,
    /// One Apply per (namespace, chain id) at a time.
    pub unpack_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One garbage collection at a time.
    pub gc_lock: tokio::sync::Mutex<()>,
}

impl State {
    pub fn snapshots(&self) -> Result<SnapshotsClient<BerthChannel>> {
        let channel = self.ctx.channel(ServiceName::Snapshots).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(SnapshotsClient::new(channel))
    }

    pub fn unpack_lock(&self, namespace: &Namespace, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.unpack_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds, so the map does not grow forever.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(format!("{namespace}/{chain_id}")).or_default().clone()
    }

    /// A lease for work inside this process (a pull): removed at the next start if the
    /// daemon dies before the work ends.
    pub async fn create_ephemeral_lease(&self, namespace: &Namespace, purpose: &str) -> Result<String> {
        let id = format!("{purpose}-{}", crate::content::store::unique_suffix());
        let now = Utc::now();
        let lease = LeaseRecord {
            id: id.clone(),
            created_at: now,
            expires_at: now + chrono::Duration::hours(24),
            labels: Default::default(),
            ephemeral: true,
            content: Default::default(),
            snapshots: Default::default(),
            ingests: Default::default(),
        };
        self.db.put_lease(namespace, &lease)?;
        self.db.flush().await?;
        Ok(id)
    }
}

/// Puts a lease id into a request's metadata.
pub fn attach_lease<T>(request: &mut tonic::Request<T>, lease: &str) {
    if let Ok(value) = MetadataValue::try_from(lease) {
        request.metadata_mut().insert(berth_proto::LEASE_METADATA_KEY, value);
    }
}

/// The lease a request names in its `berth-lease` metadata, if any.
pub fn lease_of<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get(berth_proto::LEASE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}
