//! Unpacking one layer: its bytes are streamed into the snapshot service's client-streaming
//! `Apply` while they download, at most one chunk in flight beyond the channel's few slots.

use berth_common::Namespace;
use berth_proto::snapshots::v1::{ApplyHeader, ApplyRequest, ApplyResponse, StatSnapshotRequest, apply_request};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Error, Result};
use crate::pull::download::FollowReader;
use crate::state::{State, attach_lease};

/// Bytes per Apply message (the gRPC default message limit is 4 MiB).
const CHUNK: usize = 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct UnpackState {
    pub started: bool,
    pub applied: u64,
    pub done: bool,
    /// The snapshot existed already.
    pub existed: bool,
    /// Unpacking is not done for this pull (no snapshot service).
    pub skipped: bool,
}

/// Whether the committed snapshot `name` exists. `Err(Unimplemented)` passes through so
/// the caller can tell a missing snapshot service.
pub async fn snapshot_exists(state: &State, namespace: &Namespace, name: &str) -> Result<bool> {
    let mut client = state.snapshots()?;
    let request = berth_common::namespace::request(namespace, StatSnapshotRequest { key: name.to_string() });
    match client.stat(request).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(status) => Err(Error::Dependency(berth_common::error::from_dependency("snapshots", status))),
    }
}

/// Streams `reader` into `Apply(header)` under `lease`. If reading fails (the download
/// failed), the Apply call is dropped, which cancels it: nothing is committed.
pub async fn apply(
    state: &State,
    namespace: &Namespace,
    lease: &str,
    header: ApplyHeader,
    mut reader: FollowReader,
    progress: &watch::Sender<UnpackState>,
) -> Result<ApplyResponse> {
    let (tx, rx) = mpsc::channel::<ApplyRequest>(2);
    tx.send(ApplyRequest { payload: Some(apply_request::Payload::Header(header)) })
        .await
        .map_err(|_| Error::Internal("apply stream closed".into()))?;
    let mut request = berth_common::namespace::request(namespace, ReceiverStream::new(rx));
    attach_lease(&mut request, lease);
    let mut client = state.snapshots()?;
    let call = async move { client.apply(request).await };
    tokio::pin!(call);
    progress.send_modify(|s| s.started = true);
    let feed = async move {
        let result = loop {
            let chunk = match reader.next_chunk(CHUNK).await {
                Ok(chunk) => chunk,
                Err(err) => break Err(err),
            };
            if chunk.is_empty() {
                break Ok(());
            }
            let len = chunk.len() as u64;
            if tx.send(ApplyRequest { payload: Some(apply_request::Payload::Data(chunk)) }).await.is_err() {
                // The server ended the call; its answer says why.
                break Ok(());
            }
            progress.send_modify(|s| s.applied += len);
        };
        // Ends the request stream: the service verifies and commits.
        drop(tx);
        result
    };
    tokio::pin!(feed);
    let fed = tokio::select! {
        answer = &mut call => {
            return answer.map(|r| r.into_inner()).map_err(|status| {
                Error::Dependency(berth_common::error::from_dependency("snapshots", status))
            });
        }
        fed = &mut feed => fed,
    };
    fed?;
    call.await
        .map(|r| r.into_inner())
        .map_err(|status| Error::Dependency(berth_common::error::from_dependency("snapshots", status)))
}

/// `Apply(header)` reading the compressed layer `header.content_digest` from the content
/// store (the layer is already there: import, load).
pub async fn apply_from_content(
    state: &State,
    namespace: &Namespace,
    lease: &str,
    header: ApplyHeader,
) -> Result<ApplyResponse> {
    let first = ApplyRequest { payload: Some(apply_request::Payload::Header(header)) };
    let mut request = berth_common::namespace::request(namespace, tokio_stream::iter([first]));
    attach_lease(&mut request, lease);
    let mut client = state.snapshots()?;
    client
        .apply(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|status| Error::Dependency(berth_common::error::from_dependency("snapshots", status)))
}
