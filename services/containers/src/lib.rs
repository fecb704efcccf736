//! The containers service. Not implemented yet: berthd hosts it, but its RPCs answer
//! Unimplemented until its issue lands.

use berth_common::ServiceContext;

#[derive(Debug, thiserror::Error)]
pub enum StartError {}

/// Adds this service's gRPC services to `routes` and starts its background work.
pub async fn register(_ctx: &ServiceContext, _routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    tracing::warn!("the containers service is not implemented yet; its RPCs answer Unimplemented");
    Ok(())
}
