//! The event bus (`berth.events.v1`): a durable, replayable log that every service and
//! shim publishes to, and that `berth events`, the CRI and the services subscribe to.
//!
//! * `store`: the sled log (`<data_root>/events.db`).
//! * `bus`: the single writer (group commit, flush before acknowledging, retention) and the
//!   live fan-out.
//! * `subscribe`: replay-then-follow cursors with explicit loss markers.
//! * `filter`: Docker-style filters.

mod bus;
mod error;
mod filter;
mod service;
mod store;
mod subscribe;

use berth_common::ServiceContext;
use berth_proto::events::v1::events_server::EventsServer;

pub use error::Error;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] berth_common::store::OpenError),
    #[error("cannot open the event log: {0}")]
    Storage(sled::Error),
    #[error("cannot recover the event log: {0}")]
    Recover(#[from] Error),
}

/// Adds the events service to `routes` and starts its writer and compaction; both stop on
/// `ctx.shutdown()`.
pub async fn register(ctx: &ServiceContext, routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    let log = store::Log::open(&ctx.config.data_root)?;
    let bus = bus::Bus::start(log, ctx.config.events.clone(), ctx.shutdown().clone())?;
    routes.add_service(EventsServer::new(service::EventsService::new(bus)));
    Ok(())
}
