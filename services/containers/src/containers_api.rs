//! `berth.containers.v1.Containers` on top of the supervisor.

use std::sync::Arc;

use berth_common::namespace;
use berth_proto::containers::v1::containers_server::Containers;
use berth_proto::containers::v1::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::supervisor::{Supervisor, is_running};

pub struct ContainersApi {
    supervisor: Arc<Supervisor>,
}

impl ContainersApi {
    pub fn new(supervisor: Arc<Supervisor>) -> ContainersApi {
        ContainersApi { supervisor }
    }
}

fn later(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet"))
}

#[tonic::async_trait]
impl Containers for ContainersApi {
    async fn create(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace::of(&request)?;
        let (container, warnings) = crate::create::create(&self.supervisor, &ns, request.into_inner()).await?;
        Ok(Response::new(CreateContainerResponse { container: Some(container), warnings }))
    }

    async fn get(&self, request: Request<GetContainerRequest>) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace::of(&request)?;
        let container = self.supervisor.store.resolve(&ns, &request.into_inner().id)?;
        Ok(Response::new(GetContainerResponse { container: Some(container) }))
    }

    async fn list(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        crate::filters::validate(&r.filters)?;
        let all = self.supervisor.store.list(&ns)?;
        let mut containers: Vec<Container> = all
            .iter()
            .filter(|c| {
                r.all
                    || is_running(c.state.as_ref().map(|s| s.status).unwrap_or_default())
                    || has_status_filter(&r.filters)
            })
            .filter(|c| crate::filters::matches(c, &r.filters, &all))
            .cloned()
            .collect();
        containers.sort_by_key(|c| {
            std::cmp::Reverse(c.created_at.as_ref().map(|t| (t.seconds, t.nanos)).unwrap_or_default())
        });
        if r.limit > 0 {
            containers.truncate(r.limit as usize);
        }
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn update(
        &self,
        request: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let mut container = self.supervisor.store.resolve(&ns, &r.id)?;
        let mut host = container.host_config.clone().unwrap_or_default();
        let mut warnings = Vec::new();
        for field in &r.update_mask {
            match field.as_str() {
                "restart_policy" => host.restart_policy = r.restart_policy.clone(),
                "resources" => {
                    host.resources = r.resources.clone();
                    warnings.push("resource changes apply from the next start".to_string());
                }
                other => return Err(Error::InvalidArgument(format!("cannot update field {other:?}")).into()),
            }
        }
        container.host_config = Some(host);
        container.updated_at = Some(berth_common::time::now());
        self.supervisor.store.update(&ns, &container).await?;
        Ok(Response::new(UpdateContainerResponse { container: Some(container), warnings }))
    }

    async fn rename(&self, request: Request<RenameContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let new_name = crate::names::validate(&r.new_name)?;
        let mut container = self.supervisor.store.resolve(&ns, &r.id)?;
        self.supervisor.store.rename(&ns, &mut container, &new_name).await?;
        Ok(Response::new(()))
    }

    async fn delete(&self, request: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        self.supervisor.remove_container(&ns, &r.id, r.force, r.remove_volumes).await?;
        Ok(Response::new(()))
    }

    async fn prune(
        &self,
        request: Request<PruneContainersRequest>,
    ) -> Result<Response<PruneContainersResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let all = self.supervisor.store.list(&ns)?;
        let mut deleted = Vec::new();
        for container in all.iter().filter(|c| !is_running(c.state.as_ref().map(|s| s.status).unwrap_or_default())) {
            if !crate::filters::matches(container, &r.filters, &all) {
                continue;
            }
            match self.supervisor.remove(&ns, &container.id, false).await {
                Ok(()) => deleted.push(container.id.clone()),
                Err(err) => tracing::warn!(container = %container.id, error = %err, "prune could not remove"),
            }
        }
        Ok(Response::new(PruneContainersResponse { deleted, space_reclaimed: 0 }))
    }

    async fn changes(
        &self,
        _request: Request<ContainerChangesRequest>,
    ) -> Result<Response<ContainerChangesResponse>, Status> {
        Err(later("diff"))
    }

    async fn commit(
        &self,
        _request: Request<CommitContainerRequest>,
    ) -> Result<Response<CommitContainerResponse>, Status> {
        Err(later("commit"))
    }

    type ExportStream = ReceiverStream<Result<DataChunk, Status>>;

    async fn export(&self, _request: Request<ExportContainerRequest>) -> Result<Response<Self::ExportStream>, Status> {
        Err(later("export"))
    }

    type CopyFromStream = ReceiverStream<Result<CopyFromResponse, Status>>;

    async fn copy_from(&self, _request: Request<CopyFromRequest>) -> Result<Response<Self::CopyFromStream>, Status> {
        Err(later("cp"))
    }

    async fn copy_to(&self, _request: Request<Streaming<CopyToRequest>>) -> Result<Response<()>, Status> {
        Err(later("cp"))
    }

    async fn stat_path(&self, _request: Request<StatPathRequest>) -> Result<Response<StatPathResponse>, Status> {
        Err(later("cp"))
    }

    async fn info(&self, request: Request<ContainersInfoRequest>) -> Result<Response<ContainersInfoResponse>, Status> {
        let ns = namespace::of(&request)?;
        let containers = self.supervisor.store.list(&ns)?;
        let count = |status: ContainerStatus| {
            containers
                .iter()
                .filter(|c| c.state.as_ref().map(|s| s.status).unwrap_or_default() == status as i32)
                .count() as u64
        };
        let running = count(ContainerStatus::Running) + count(ContainerStatus::Restarting);
        let paused = count(ContainerStatus::Paused);
        let mode = berth_common::host::CgroupMode::detect();
        Ok(Response::new(ContainersInfoResponse {
            containers: containers.len() as u64,
            running,
            paused,
            stopped: containers.len() as u64 - running - paused,
            default_runtime: self.supervisor.runtimes.default.clone(),
            runtimes: self.supervisor.runtimes.describe(),
            cgroup_version: mode.version().to_string(),
            cgroup_driver: berth_common::host::cgroup_driver().to_string(),
            log_dir: self.supervisor.paths.log_dir.display().to_string(),
        }))
    }
}

fn has_status_filter(filters: &[berth_proto::types::v1::Filter]) -> bool {
    filters.iter().any(|f| f.key == "status" || f.key == "exited")
}
