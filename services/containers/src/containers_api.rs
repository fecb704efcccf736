//! `berth.containers.v1.Containers` on top of the supervisor.

use std::sync::Arc;

use berth_common::config::ServiceName;
use berth_common::namespace;
use berth_proto::containers::v1::containers_server::Containers;
use berth_proto::containers::v1::*;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::{ChangeKind as SnapshotChangeKind, ChangesRequest, ExportRequest};
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

    fn snapshots(&self) -> Result<SnapshotsClient<berth_common::client::BerthChannel>, Status> {
        let channel =
            self.supervisor.ctx.channel(ServiceName::Snapshots).map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(SnapshotsClient::new(channel))
    }
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
        request: Request<ContainerChangesRequest>,
    ) -> Result<Response<ContainerChangesResponse>, Status> {
        let ns = namespace::of(&request)?;
        let container = self.supervisor.store.resolve(&ns, &request.into_inner().id)?;
        let mut stream = self
            .snapshots()?
            .changes(namespace::request(&ns, ChangesRequest { key: container.snapshot_key }))
            .await
            .map_err(|s| berth_common::error::from_dependency("snapshots", s))?
            .into_inner();
        let mut changes = Vec::new();
        while let Some(batch) = stream.message().await? {
            for change in batch.changes {
                let kind = match SnapshotChangeKind::try_from(change.kind).unwrap_or(SnapshotChangeKind::Unspecified) {
                    SnapshotChangeKind::Added => "A",
                    SnapshotChangeKind::Deleted => "D",
                    _ => "C",
                };
                changes.push(ContainerChange { kind: kind.to_string(), path: change.path });
            }
        }
        Ok(Response::new(ContainerChangesResponse { changes: hide_runtime_mountpoints(changes) }))
    }

    async fn commit(
        &self,
        request: Request<CommitContainerRequest>,
    ) -> Result<Response<CommitContainerResponse>, Status> {
        let ns = namespace::of(&request)?;
        let image_id = crate::commit::commit(&self.supervisor, &ns, request.into_inner()).await?;
        Ok(Response::new(CommitContainerResponse { image_id }))
    }

    type ExportStream = ReceiverStream<Result<DataChunk, Status>>;

    async fn export(&self, request: Request<ExportContainerRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace::of(&request)?;
        let container = self.supervisor.store.resolve(&ns, &request.into_inner().id)?;
        let mut stream = self
            .snapshots()?
            .export(namespace::request(&ns, ExportRequest { key: container.snapshot_key }))
            .await
            .map_err(|s| berth_common::error::from_dependency("snapshots", s))?
            .into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(chunk)) => Ok(DataChunk { data: chunk.data }),
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type CopyFromStream = ReceiverStream<Result<CopyFromResponse, Status>>;

    async fn copy_from(&self, request: Request<CopyFromRequest>) -> Result<Response<Self::CopyFromStream>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.id)?;
        let access = self.supervisor.open_rootfs(&ns, &container).await?;
        let path = std::path::PathBuf::from(&r.path);
        let info =
            crate::cp::stat_in_root(&access.rootfs.root, &path).map_err(|e| not_found_in(&container, &r.path, e))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let _ =
            sender.send(Ok(CopyFromResponse { item: Some(copy_from_response::Item::Stat(path_stat(&info))) })).await;
        let (chunks, mut chunk_receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let name = info.name.clone();
        let producer = tokio::task::spawn_blocking(move || {
            let writer = crate::cp::ChannelWriter::new(chunks);
            let result = crate::cp::write_archive(&access.rootfs.root, &path, &name, writer);
            drop(access);
            result
        });
        tokio::spawn(async move {
            while let Some(chunk) = chunk_receiver.recv().await {
                let item = CopyFromResponse { item: Some(copy_from_response::Item::Data(chunk)) };
                if sender.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            match producer.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    let _ = sender.send(Err(Status::internal(format!("archiving: {err}")))).await;
                }
                Err(err) => {
                    let _ = sender.send(Err(Status::internal(format!("archiving failed: {err}")))).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn copy_to(&self, request: Request<Streaming<CopyToRequest>>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let mut inbound = request.into_inner();
        let options = match inbound.message().await? {
            Some(CopyToRequest { item: Some(copy_to_request::Item::Options(options)) }) => options,
            _ => return Err(Status::invalid_argument("the first cp message must carry the options")),
        };
        let container = self.supervisor.store.resolve(&ns, &options.id)?;
        let access = self.supervisor.open_rootfs(&ns, &container).await?;
        let destination = std::path::PathBuf::from(&options.path);
        let info = crate::cp::stat_in_root(&access.rootfs.root, &destination)
            .map_err(|e| not_found_in(&container, &options.path, e))?;
        if info.mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Status::failed_precondition(format!("{}: not a directory in the container", options.path)));
        }
        let (chunks, chunk_receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let extract_options = crate::cp::ExtractOptions { keep_owner: options.copy_uid_gid };
        let consumer = tokio::task::spawn_blocking(move || {
            let reader = crate::cp::ChannelReader::new(chunk_receiver);
            let result = crate::cp::extract_archive(&access.rootfs.root, &destination, reader, extract_options);
            drop(access);
            result
        });
        while let Some(message) = inbound.message().await? {
            if let Some(copy_to_request::Item::Data(data)) = message.item
                && chunks.send(data).await.is_err()
            {
                break;
            }
        }
        drop(chunks);
        consumer.await.map_err(|e| Status::internal(format!("extracting failed: {e}")))?.map_err(|e| {
            Status::new(berth_common::error::io_code(&e), format!("extracting into the container: {e}"))
        })?;
        Ok(Response::new(()))
    }

    async fn stat_path(&self, request: Request<StatPathRequest>) -> Result<Response<StatPathResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.id)?;
        let access = self.supervisor.open_rootfs(&ns, &container).await?;
        let info = crate::cp::stat_in_root(&access.rootfs.root, std::path::Path::new(&r.path))
            .map_err(|e| not_found_in(&container, &r.path, e))?;
        Ok(Response::new(StatPathResponse { stat: Some(path_stat(&info)) }))
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
        self.supervisor.runtimes.wait_probed(std::time::Duration::from_secs(5)).await;
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

/// Mount points the runtime creates in the rootfs (when the image lacks them) are not the
/// user's changes: Docker keeps them in a separate init layer; we leave them out of the
/// list, and a parent directory that changed only because of them.
fn hide_runtime_mountpoints(changes: Vec<ContainerChange>) -> Vec<ContainerChange> {
    const MOUNTPOINTS: [&str; 10] = [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys/fs/cgroup",
    ];
    let kept: Vec<ContainerChange> =
        changes.into_iter().filter(|c| !(c.kind == "A" && MOUNTPOINTS.contains(&c.path.as_str()))).collect();
    let has_child = |dir: &str| kept.iter().any(|c| c.path.starts_with(&format!("{dir}/")));
    let only_for_mountpoints = |c: &ContainerChange| {
        c.kind == "C" && MOUNTPOINTS.iter().any(|m| m.starts_with(&format!("{}/", c.path))) && !has_child(&c.path)
    };
    kept.iter().filter(|c| !only_for_mountpoints(c)).cloned().collect()
}

fn path_stat(info: &crate::cp::PathInfo) -> PathStat {
    PathStat {
        name: info.name.clone(),
        size: info.size,
        mode: info.mode,
        mtime: Some(prost_types::Timestamp { seconds: info.mtime, nanos: 0 }),
        link_target: info.link_target.clone(),
    }
}

fn not_found_in(container: &Container, path: &str, err: std::io::Error) -> Status {
    if err.kind() == std::io::ErrorKind::NotFound {
        Status::not_found(format!("Could not find the file {path} in container {}", container.name))
    } else {
        Status::new(berth_common::error::io_code(&err), format!("{path}: {err}"))
    }
}

fn has_status_filter(filters: &[berth_proto::types::v1::Filter]) -> bool {
    filters.iter().any(|f| f.key == "status" || f.key == "exited")
}
