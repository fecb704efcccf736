//! The images service: the content store (`berth.content.v1`), registry pulls with
//! streamed unpacking, image metadata (`berth.images.v1`), leases and garbage collection.

mod archive;
mod content;
mod db;
mod digest;
mod error;
mod events;
mod gc;
mod images;
mod import;
mod layer;
mod login;
mod manifest;
mod platform;
mod pull;
mod push;
pub mod reference;
mod registry;
mod resolve;
mod search;
mod service;
mod sources;
mod state;

use std::sync::Arc;
use std::time::Duration;

use berth_common::ServiceContext;
use berth_common::config::ServiceName;
use berth_proto::content::v1::content_server::ContentServer;
use berth_proto::images::v1::images_server::ImagesServer;

pub use error::Error;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] berth_common::store::OpenError),
    #[error(transparent)]
    Images(#[from] Error),
}

/// Adds the images and content services to `routes`. Before serving, leases of pulls that
/// died with a previous process are dropped and unreferenced content is removed, so an
/// interrupted pull's space is back at once; layer snapshots are collected in the
/// background once the snapshot service answers.
pub async fn register(ctx: &ServiceContext, routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    let content = content::store::ContentStore::open(&ctx.config.content_dir())?;
    let db = db::Db::new(berth_common::store::open_db(&ctx.config.data_root, "images.db")?)?;
    let events = ctx.channel(ServiceName::Events).ok().map(|c| berth_common::events::Publisher::new(c, "images"));
    let state = Arc::new(state::State {
        ctx: ctx.clone(),
        content,
        db,
        events,
        downloads: Default::default(),
        unpack_locks: Default::default(),
        gc_lock: Default::default(),
    });
    let dropped = state.drop_ephemeral_leases()?;
    if dropped > 0 {
        tracing::info!(leases = dropped, "dropped the leases of work interrupted by a restart");
    }
    let stats = state.collect_content().await?;
    if stats.bytes_reclaimed > 0 {
        tracing::info!(bytes = stats.bytes_reclaimed, "reclaimed space of interrupted work");
    }
    let background = state.clone();
    let shutdown = ctx.shutdown().clone();
    tokio::spawn(async move {
        // The snapshot service may start serving just after us.
        for attempt in 0..10u64 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))) => {}
            }
            match background.collect_garbage().await {
                Ok(stats) => {
                    if stats.snapshots_removed > 0 {
                        tracing::info!(
                            snapshots = stats.snapshots_removed,
                            "removed unreferenced layer snapshots at start"
                        );
                    }
                    return;
                }
                Err(err) => tracing::debug!(error = %err, "start-up garbage collection will retry"),
            }
        }
    });
    routes.add_service(ImagesServer::new(service::ImagesService { state: state.clone() }));
    routes.add_service(ContentServer::new(content::service::ContentService { state }));
    Ok(())
}
