//! The snapshots service: overlayfs (default) and native (copy) snapshotters, safe layer
//! apply and diff, behind the `berth.snapshots.v1` contract.

pub mod archive;
pub mod changes;
pub mod copy;
pub mod fsutil;
pub mod paths;
pub mod tree;
pub mod unpack;

use berth_common::ServiceContext;

#[derive(Debug, thiserror::Error)]
pub enum StartError {}

/// Adds this service's gRPC services to `routes` and starts its background work.
pub async fn register(_ctx: &ServiceContext, _routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    Ok(())
}
