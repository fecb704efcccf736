//! The containers service: container records (`berth.containers.v1`) and running tasks
//! (`berth.tasks.v1`), each task driven through its own berth-shim.
//!
//! It also hosts `Networks` and `Volumes`: containers are networked through CNI plugins
//! (`network`), and get bind mounts, volumes and tmpfs mounts (`volumes`).

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
mod network;
mod networks_api;
mod orphans;
mod registry;
mod runtimes;
mod shims;
mod spec;
mod store;
mod supervisor;
mod tasks_api;
mod top;
mod volumes;
mod volumes_api;

use std::sync::Arc;

use berth_common::ServiceContext;
use berth_common::config::ServiceName;
use berth_common::events::Publisher;
use berth_proto::containers::v1::containers_server::ContainersServer;
use berth_proto::containers::v1::networks_server::NetworksServer;
use berth_proto::containers::v1::volumes_server::VolumesServer;
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
    #[error("invalid [network] configuration: {0}")]
    NetworkConfig(String),
    #[error("opening the network and volume trees of containers.db: {0}")]
    Trees(#[from] sled::Error),
}

/// Adds the containers and tasks services, reconnects to live shims, and probes the
/// runtimes in the background.
pub async fn register(ctx: &ServiceContext, routes: &mut tonic::service::RoutesBuilder) -> Result<(), StartError> {
    let config = &ctx.config;
    let store = store::Store::open(&config.data_root)?;
    let runtimes = runtimes::Runtimes::new(&config.runtimes, &config.default_runtime);
    let network_settings = network::Settings::from_config(config).map_err(StartError::NetworkConfig)?;
    let network = network::Manager::new(network_settings, config.exec_root.clone(), store.clone())?;
    let volumes = volumes::Volumes::new(store.clone(), &config.data_root)?;
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
        network,
        volumes,
    });
    routes.add_service(ContainersServer::new(containers_api::ContainersApi::new(supervisor.clone())));
    routes.add_service(TasksServer::new(tasks_api::TasksApi::new(supervisor.clone())));
    routes.add_service(NetworksServer::new(networks_api::NetworksApi::new(supervisor.clone())));
    routes.add_service(VolumesServer::new(volumes_api::VolumesApi::new(supervisor.clone())));

    // Reconnecting needs the event service (shims publish to it) but not our own routes,
    // so it runs now; exits found here are recorded before the first request is served.
    let recovering = supervisor.clone();
    let started = chrono::Utc::now();
    tokio::spawn(async move {
        if let Err(err) = recovering.recover().await {
            tracing::error!(error = %err, "recovering containers failed");
        }
        // The snapshot service may start serving just after us.
        for attempt in 1..=10u64 {
            match recovering.reclaim_orphan_snapshots(started).await {
                Ok(0) => break,
                Ok(removed) => {
                    tracing::info!(snapshots = removed, "removed the rootfs of containers never fully created");
                    break;
                }
                Err(err) if attempt == 10 => {
                    tracing::error!(error = %err, "reclaiming orphaned rootfs snapshots failed")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await,
            }
        }
        // Exits found above have been recorded (and their networks torn down); what is
        // left over belongs to containers that died with no one to clean up after them.
        if let Err(err) = recovering.network.reclaim().await {
            tracing::error!(error = %err, "reclaiming stale networks failed");
        }
    });
    let probe_dir = config.exec_root.join("runtime-probes");
    tokio::spawn(async move { runtimes.probe_all(&probe_dir).await });
    Ok(())
}
