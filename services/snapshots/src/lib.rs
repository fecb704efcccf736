//! The snapshots service: overlayfs (default) and native (copy) snapshotters, safe layer
//! apply and diff, behind the `berth.snapshots.v1` contract.
//!
//! Conventions other services rely on:
//! * A layer applied with `Apply` is committed under `ApplyHeader.name`, by convention the
//!   layer's OCI chain id, on top of `ApplyHeader.parent` (the previous layer's chain id).
//! * Mounts are described, never performed here: an overlay (`lowerdir` top-first, plus
//!   `upperdir`/`workdir` when writable), or an `rbind` mount of one directory (`rw` for an
//!   active snapshot without parent, `ro` for a view of a single layer).

pub mod apply;
pub mod archive;
pub mod changes;
pub mod copy;
pub mod core;
pub mod diff;
pub mod driver;
pub mod error;
pub mod fsutil;
pub mod grpc;
pub mod paths;
pub mod store;
pub mod tree;
pub mod unpack;

use std::sync::Arc;

use berth_common::ServiceContext;
use berth_common::config::ServiceName;
use berth_common::events::Publisher;
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::snapshots::v1::snapshots_server::SnapshotsServer;

use crate::driver::{Driver, Layout};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the snapshot directory {path}: {source}")]
    Root { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Driver(String),
    #[error(transparent)]
    Connect(#[from] berth_common::client::ConnectError),
    #[error("cleaning up leftovers: {0}")]
    Cleanup(#[from] error::Error),
}

/// Picks the snapshotter: the configured one, else the one existing snapshots were made
/// with, else overlayfs when a test mount works and native otherwise.
fn choose_driver(
    configured: &str,
    store: &Store,
    root: &std::path::Path,
) -> Result<(Driver, Option<String>), StartError> {
    let recorded = store.driver()?.and_then(|name| Driver::parse(&name));
    let has_snapshots = !store.is_empty();
    if !configured.is_empty() {
        let driver = Driver::parse(configured).ok_or_else(|| {
            StartError::Driver(format!("unknown storage-driver {configured:?}: use \"overlayfs\" or \"native\""))
        })?;
        if let Some(recorded) = recorded
            && recorded != driver
            && has_snapshots
        {
            return Err(StartError::Driver(format!(
                "the snapshots under {} were made by the {} snapshotter; set storage-driver = \"{}\" or use another data root",
                root.display(),
                recorded.name(),
                recorded.name()
            )));
        }
        return Ok((driver, None));
    }
    if let Some(recorded) = recorded
        && has_snapshots
    {
        return Ok((recorded, None));
    }
    match driver::probe_overlay(root) {
        Ok(()) => Ok((Driver::Overlay, None)),
        Err(reason) => {
            tracing::warn!(%reason, "overlayfs is not usable here; falling back to the native (copying) snapshotter");
            Ok((Driver::Native, Some(reason)))
        }
    }
}

/// Adds this service's gRPC services to `routes` and starts its background work.
pub async fn register(ctx: &ServiceContext, routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    let root = ctx.config.data_root.join("snapshots");
    std::fs::create_dir_all(&root).map_err(|source| StartError::Root { path: root.clone(), source })?;
    let store = Store::open(&ctx.config.data_root)?;
    let (driver, fallback_reason) = choose_driver(&ctx.config.storage_driver, &store, &root)?;
    store.set_driver(driver.name())?;
    store.flush().await?;
    let publisher = Publisher::new(ctx.channel(ServiceName::Events)?, "snapshots");
    let content = ContentClient::new(ctx.channel(ServiceName::Images)?);
    let core = Arc::new(core::Core::new(store, Layout::new(root, driver), fallback_reason, Some(publisher)));
    let (removed, bytes) = core.cleanup().await?;
    tracing::info!(driver = driver.name(), removed, bytes, "snapshots service ready");
    let service = grpc::SnapshotsService::new(core, content);
    routes.add_service(
        SnapshotsServer::new(service).max_decoding_message_size(16 << 20).max_encoding_message_size(16 << 20),
    );
    Ok(())
}
