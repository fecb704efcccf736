//! berth.system.v1: the daemon's version and an info summary gathered from the services
//! (through their gRPC APIs) and the host.

use std::sync::Arc;

use berth_common::config::ServiceName;
use berth_common::host::{self, CgroupMode};
use berth_common::{Config, ServiceContext, namespace};
use berth_proto::containers::v1::{ContainersInfoRequest, containers_client::ContainersClient};
use berth_proto::images::v1::{ImagesInfoRequest, images_client::ImagesClient};
use berth_proto::snapshots::v1::{SnapshotterInfoRequest, snapshots_client::SnapshotsClient};
use berth_proto::system::v1::system_server::System;
use berth_proto::system::v1::*;
use tonic::{Request, Response, Status};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("BERTH_GIT_COMMIT");

pub struct SystemService {
    ctx: ServiceContext,
    hosted: Vec<String>,
}

impl SystemService {
    pub fn new(ctx: ServiceContext) -> SystemService {
        let hosted = ctx.config.hosted_services().iter().map(|s| s.to_string()).collect();
        SystemService { ctx, hosted }
    }

    fn config(&self) -> &Arc<Config> {
        &self.ctx.config
    }
}

/// Runs `call`, turning a failure into a warning naming the service.
async fn gather<T, F>(service: ServiceName, warnings: &mut Vec<String>, call: F) -> Option<T>
where
    F: std::future::Future<Output = Result<Response<T>, Status>>,
{
    match call.await {
        Ok(response) => Some(response.into_inner()),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            warnings.push(format!("the {service} service does not provide this information yet"));
            None
        }
        Err(status) => {
            warnings.push(format!("the {service} service did not answer: {}", status.message()));
            None
        }
    }
}

#[tonic::async_trait]
impl System for SystemService {
    async fn version(&self, _request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            git_commit: GIT_COMMIT.to_string(),
            api_version: berth_proto::API_VERSION.to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            kernel_version: host::kernel_version(),
            rust_version: option_env!("CARGO_PKG_RUST_VERSION").unwrap_or_default().to_string(),
            services: self.hosted.clone(),
            build_time: String::new(),
        }))
    }

    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = namespace::of(&request)?;
        let config = self.config();
        let mut warnings = Vec::new();
        let channel = |service| self.ctx.channel(service).map_err(|e| Status::internal(e.to_string()));

        let images = gather(
            ServiceName::Images,
            &mut warnings,
            ImagesClient::new(channel(ServiceName::Images)?).info(namespace::request(&ns, ImagesInfoRequest {})),
        )
        .await;
        let containers = gather(
            ServiceName::Containers,
            &mut warnings,
            ContainersClient::new(channel(ServiceName::Containers)?)
                .info(namespace::request(&ns, ContainersInfoRequest {})),
        )
        .await;
        let snapshotter = gather(
            ServiceName::Snapshots,
            &mut warnings,
            SnapshotsClient::new(channel(ServiceName::Snapshots)?)
                .info(namespace::request(&ns, SnapshotterInfoRequest {})),
        )
        .await;

        let cgroup = CgroupMode::detect();
        let mut response = InfoResponse {
            root_dir: config.data_root.display().to_string(),
            state_dir: config.exec_root.display().to_string(),
            log_dir: config.log_dir.display().to_string(),
            default_runtime: config.default_runtime.clone(),
            cgroup_version: cgroup.version().to_string(),
            cgroup_driver: host::cgroup_driver().to_string(),
            kernel_version: host::kernel_version(),
            operating_system: host::operating_system(),
            os_type: std::env::consts::OS.to_string(),
            architecture: std::env::consts::ARCH.to_string(),
            ncpu: host::cpu_count(),
            mem_total: host::memory_total_bytes(),
            name: host::hostname(),
            server_version: VERSION.to_string(),
            services: self.hosted.clone(),
            logging_driver: "cri-file".to_string(),
            registry_config: Some(RegistryConfig {
                mirrors: config.registry_mirrors.clone(),
                insecure_registries: config.insecure_registries.clone(),
                registry_mirrors: config
                    .registry_host_mirrors
                    .iter()
                    .map(|(host, mirrors)| (host.clone(), MirrorList { endpoints: mirrors.clone() }))
                    .collect(),
            }),
            ..Default::default()
        };

        if let Some(images) = images {
            response.images = images.images;
        }
        if let Some(snapshotter) = snapshotter {
            response.storage_driver = snapshotter.name;
            response.storage_driver_status = snapshotter.status;
        }
        match containers {
            Some(containers) => {
                response.containers = containers.containers;
                response.containers_running = containers.running;
                response.containers_paused = containers.paused;
                response.containers_stopped = containers.stopped;
                response.runtimes = containers
                    .runtimes
                    .into_iter()
                    .map(|r| RuntimeInfo { name: r.name, path: r.path, usable: r.usable, detail: r.detail })
                    .collect();
            }
            None => {
                // Without the containers service, report what is installed (not whether it
                // can start containers here).
                response.runtimes = config
                    .runtimes
                    .iter()
                    .map(|(name, runtime)| {
                        let probe = host::probe_runtime(name, runtime);
                        RuntimeInfo {
                            name: probe.name,
                            path: probe.path.map(|p| p.display().to_string()).unwrap_or_default(),
                            usable: false,
                            detail: match probe.version {
                                Ok(version) => format!("{version} (not probed: containers service unavailable)"),
                                Err(reason) => reason,
                            },
                        }
                    })
                    .collect();
            }
        }
        response.warnings = warnings;
        Ok(Response::new(response))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse { api_version: berth_proto::API_VERSION.to_string() }))
    }
}
