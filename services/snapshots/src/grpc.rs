//! The `berth.snapshots.v1.Snapshots` gRPC service over [`Core`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_common::client::BerthChannel;
use berth_common::namespace;
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::snapshots::v1::snapshots_server::Snapshots;
use berth_proto::snapshots::v1::*;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::apply::{self, Source};
use crate::changes::ChangeKind;
use crate::core::Core;
use crate::error::Error;
use crate::store::{self, Record};

pub struct SnapshotsService {
    core: Arc<Core>,
    content: ContentClient<BerthChannel>,
}

impl SnapshotsService {
    pub fn new(core: Arc<Core>, content: ContentClient<BerthChannel>) -> SnapshotsService {
        SnapshotsService { core, content }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn info(name: &str, record: &Record) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_string(),
        parent: record.parent.clone(),
        kind: match record.kind {
            store::Kind::View => Kind::View,
            store::Kind::Active => Kind::Active,
            store::Kind::Committed => Kind::Committed,
        } as i32,
        created_at: Some(berth_common::time::to_proto(record.created)),
        updated_at: Some(berth_common::time::to_proto(record.updated)),
        labels: record.labels.clone().into_iter().collect(),
    }
}

fn labels(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        request: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let mounts = self.core.prepare(&ns, &r.key, &r.parent, labels(r.labels), store::Kind::Active).await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(&self, request: Request<ViewSnapshotRequest>) -> Result<Response<ViewSnapshotResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let mounts = self.core.prepare(&ns, &r.key, &r.parent, labels(r.labels), store::Kind::View).await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(&self, request: Request<MountsRequest>) -> Result<Response<MountsResponse>, Status> {
        let ns = namespace::of(&request)?;
        let mounts = self.core.mounts(&ns, &request.get_ref().key)?;
        Ok(Response::new(MountsResponse { mounts }))
    }

    async fn commit(&self, request: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        self.core.commit(&ns, &r.name, &r.key, labels(r.labels)).await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, request: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        self.core.remove(&ns, &request.get_ref().key).await?;
        Ok(Response::new(()))
    }

    async fn stat(&self, request: Request<StatSnapshotRequest>) -> Result<Response<StatSnapshotResponse>, Status> {
        let ns = namespace::of(&request)?;
        let key = &request.get_ref().key;
        let record = self.core.get(&ns, key)?;
        Ok(Response::new(StatSnapshotResponse { info: Some(info(key, &record)) }))
    }

    async fn update(
        &self,
        request: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let ns = namespace::of(&request)?;
        let Some(given) = request.into_inner().info else {
            return Err(Status::invalid_argument("update needs info with the snapshot name and its new labels"));
        };
        let record = self.core.update_labels(&ns, &given.name, labels(given.labels)).await?;
        Ok(Response::new(UpdateSnapshotResponse { info: Some(info(&given.name, &record)) }))
    }

    type ListStream = BoxStream<ListSnapshotsResponse>;

    async fn list(&self, request: Request<ListSnapshotsRequest>) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace::of(&request)?;
        let all = self.core.list(&ns, &request.get_ref().filters)?;
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = all
            .chunks(100)
            .map(|batch| Ok(ListSnapshotsResponse { info: batch.iter().map(|(k, r)| info(k, r)).collect() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn usage(&self, request: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let ns = namespace::of(&request)?;
        let (size, inodes) = self.core.usage(&ns, &request.get_ref().key).await?;
        Ok(Response::new(UsageResponse { size, inodes }))
    }

    async fn cleanup(&self, _request: Request<CleanupRequest>) -> Result<Response<CleanupResponse>, Status> {
        let (removed, bytes_reclaimed) = self.core.cleanup().await?;
        Ok(Response::new(CleanupResponse { removed, bytes_reclaimed }))
    }

    async fn apply(&self, request: Request<Streaming<ApplyRequest>>) -> Result<Response<ApplyResponse>, Status> {
        let ns = namespace::of(&request)?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(ApplyRequest { payload: Some(apply_request::Payload::Header(header)) }) => header,
            _ => return Err(Status::invalid_argument("the first Apply message must carry the ApplyHeader")),
        };
        if !header.content_digest.is_empty() {
            let response = apply::apply(self.core.clone(), ns, header, Source::Content(self.content.clone())).await?;
            return Ok(Response::new(response));
        }
        let (tx, rx) = mpsc::channel(8);
        let feeder = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(ApplyRequest { payload: Some(apply_request::Payload::Data(data)) })) => {
                        if tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(ApplyRequest { payload: Some(apply_request::Payload::Header(_)) })) => {
                        let _ = tx.send(Err("a second ApplyHeader arrived in the middle of the layer".into())).await;
                        return;
                    }
                    Ok(Some(ApplyRequest { payload: None })) => continue,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(format!("the client stream failed: {}", status.message()))).await;
                        return;
                    }
                }
            }
        });
        let result = apply::apply(self.core.clone(), ns, header, Source::Channel(rx)).await;
        // Whatever the client still sends is no longer needed (e.g. the layer existed).
        feeder.abort();
        Ok(Response::new(result?))
    }

    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ns = namespace::of(&request)?;
        let lease = request.metadata().get(berth_proto::LEASE_METADATA_KEY).cloned();
        let response = self.core.diff(&ns, request.into_inner(), self.content.clone(), lease).await?;
        Ok(Response::new(response))
    }

    type ChangesStream = BoxStream<ChangesResponse>;

    async fn changes(&self, request: Request<ChangesRequest>) -> Result<Response<Self::ChangesStream>, Status> {
        let ns = namespace::of(&request)?;
        let changes = self.core.changes(&ns, &request.get_ref().key).await?;
        let batches: Vec<Result<ChangesResponse, Status>> = changes
            .chunks(500)
            .map(|batch| {
                Ok(ChangesResponse {
                    changes: batch
                        .iter()
                        .map(|c| Change {
                            kind: match c.kind {
                                ChangeKind::Added => berth_proto::snapshots::v1::ChangeKind::Added,
                                ChangeKind::Modified => berth_proto::snapshots::v1::ChangeKind::Modified,
                                ChangeKind::Deleted => berth_proto::snapshots::v1::ChangeKind::Deleted,
                            } as i32,
                            path: c.display_path(),
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    type ExportStream = BoxStream<ExportChunk>;

    async fn export(&self, request: Request<ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace::of(&request)?;
        let (tx, rx) = mpsc::channel::<Result<Vec<u8>, Error>>(4);
        self.core.export(&ns, &request.get_ref().key, tx)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mapped =
            futures::StreamExt::map(stream, |item| item.map(|data| ExportChunk { data }).map_err(Status::from));
        Ok(Response::new(Box::pin(mapped)))
    }

    async fn info(
        &self,
        _request: Request<SnapshotterInfoRequest>,
    ) -> Result<Response<SnapshotterInfoResponse>, Status> {
        let status = crate::driver::status(&self.core.layout, self.core.fallback_reason.as_deref());
        Ok(Response::new(SnapshotterInfoResponse {
            name: self.core.driver().name().to_string(),
            status: status.into_iter().collect(),
            root: self.core.layout.root.display().to_string(),
        }))
    }
}
