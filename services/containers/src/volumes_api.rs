//! `berth.containers.v1.Volumes` on top of the volume store.

use std::sync::Arc;

use berth_common::namespace;
use berth_proto::containers::v1::volumes_server::Volumes;
use berth_proto::containers::v1::*;
use tonic::{Request, Response, Status};

use crate::supervisor::Supervisor;

pub struct VolumesApi {
    supervisor: Arc<Supervisor>,
}

impl VolumesApi {
    pub fn new(supervisor: Arc<Supervisor>) -> VolumesApi {
        VolumesApi { supervisor }
    }
}

#[tonic::async_trait]
impl Volumes for VolumesApi {
    async fn create(&self, request: Request<CreateVolumeRequest>) -> Result<Response<CreateVolumeResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let (volume, _) = self.supervisor.volumes.create(&ns, &r.name, &r.driver, r.labels, &r.options).await?;
        Ok(Response::new(CreateVolumeResponse { volume: Some(volume) }))
    }

    async fn list(&self, request: Request<ListVolumesRequest>) -> Result<Response<ListVolumesResponse>, Status> {
        let ns = namespace::of(&request)?;
        let volumes = self.supervisor.volumes.list(&ns, &request.into_inner().filters)?;
        Ok(Response::new(ListVolumesResponse { volumes, warnings: Vec::new() }))
    }

    async fn inspect(&self, request: Request<InspectVolumeRequest>) -> Result<Response<InspectVolumeResponse>, Status> {
        let ns = namespace::of(&request)?;
        let volume = self.supervisor.volumes.get(&ns, &request.into_inner().name)?;
        Ok(Response::new(InspectVolumeResponse { volume: Some(volume) }))
    }

    async fn remove(&self, request: Request<RemoveVolumeRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        self.supervisor.volumes.remove(&ns, &r.name, r.force).await?;
        Ok(Response::new(()))
    }

    async fn prune(&self, request: Request<PruneVolumesRequest>) -> Result<Response<PruneVolumesResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let (deleted, space_reclaimed) = self.supervisor.volumes.prune(&ns, &r.filters, r.all).await?;
        Ok(Response::new(PruneVolumesResponse { deleted, space_reclaimed }))
    }
}
