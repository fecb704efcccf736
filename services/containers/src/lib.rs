//! The containers service: container records (`berth.containers.v1`) and running tasks
//! (`berth.tasks.v1`), each task driven through its own berth-shim.
//!
//! Networks and volumes (`Networks`, `Volumes`) are not implemented yet: their RPCs
//! answer Unimplemented, containers get a private network namespace with loopback only,
//! and only the rootfs snapshot plus /etc files are mounted.

mod attach;
mod command;
mod commit;
mod containers_api;
mod cp;
mod create;
mod error;
mod etcfiles;
mod exec;
mod filters;
mod logs;
mod names;
mod registry;
mod runtimes;
mod shims;
mod spec;
mod store;
mod supervisor;
mod tasks_api;
mod top;

use std::sync::Arc;

use berth_common::ServiceContext;
use berth_common::config::ServiceName;
use berth_common::events::Publisher;
use berth_proto::containers::v1::containers_server::ContainersServer;
use berth_proto::tasks::v1::tasks_server::TasksServer;

pub use error::Error;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] berth_common::store::OpenError),
    #[error("cannot reach the events service: {0}")]
    Events(#[from] berth_common::client::ConnectError),
    #[error("recovering containers: {0}")]
    Recover(#[from] Error),
}

/// Adds the containers and tasks services, reconnects to live shims, and probes the
/// runtimes in the background.
pub async fn register(ctx: &ServiceContext, routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    let config = &ctx.config;
    let store = store::Store::open(&config.data_root)?;
    let runtimes = runtimes::Runtimes::new(&config.runtimes, &config.default_runtime);
    let supervisor = Arc::new(supervisor::Supervisor {
        ctx: ctx.clone(),
        store,
        registry: registry::Registry::default(),
        publisher: Publisher::new(ctx.channel(ServiceName::Events)?, "containers"),
        runtimes: runtimes.clone(),
        paths: supervisor::Paths {
            exec_root: config.exec_root.clone(),
            data_root: config.data_root.clone(),
            log_dir: config.log_dir.clone(),
        },
        shim_binary: shims::shim_binary(),
        execs: exec::Execs::default(),
    });
    routes.add_service(ContainersServer::new(containers_api::ContainersApi::new(supervisor.clone())));
    routes.add_service(TasksServer::new(tasks_api::TasksApi::new(supervisor.clone())));

    // Reconnecting needs the event service (shims publish to it) but not our own routes,
    // so it runs now; exits found here are recorded before the first request is served.
    let recovering = supervisor.clone();
    tokio::spawn(async move {
        if let Err(err) = recovering.recover().await {
            tracing::error!(error = %err, "recovering containers failed");
        }
    });
    let probe_dir = config.exec_root.join("runtime-probes");
    tokio::spawn(async move { runtimes.probe_all(&probe_dir).await });
    Ok(())
}
