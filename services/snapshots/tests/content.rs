//! Diff writes its layer through the `berth.content.v1` Write stream, and Apply reads a
//! layer by digest through the Read stream. The content service is another crate (the
//! images service); here a minimal in-memory implementation of the same contract stands
//! in for it, served over a real unix socket with the real gRPC stack.

mod common;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_common::Address;
use berth_common::client::{ClientContext, intercept, lazy_channel};
use berth_common::serve;
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::content::v1::content_server::{Content, ContentServer};
use berth_proto::content::v1::*;
use berth_proto::snapshots::v1::{ApplyHeader, DiffRequest};
use berth_snapshots::apply::{self, Source};
use berth_snapshots::driver::Driver;
use berth_snapshots::store::Kind;
use common::*;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default, Clone)]
struct MemoryContent {
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    labels: Arc<Mutex<HashMap<String, HashMap<String, String>>>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for MemoryContent {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn update(&self, _: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    type ListStream = BoxStream<ListContentResponse>;
    async fn list(&self, _: Request<ListContentRequest>) -> Result<Response<Self::ListStream>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn delete(&self, _: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("test double"))
    }
    type ReadStream = BoxStream<ReadContentResponse>;
    async fn read(&self, request: Request<ReadContentRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let digest = request.into_inner().digest;
        let blob = self.blobs.lock().unwrap().get(&digest).cloned().ok_or_else(|| Status::not_found(digest))?;
        let chunks: Vec<Result<ReadContentResponse, Status>> = blob
            .chunks(100_000)
            .enumerate()
            .map(|(i, c)| Ok(ReadContentResponse { offset: (i * 100_000) as i64, data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_statuses(&self, _: Request<ListStatusesRequest>) -> Result<Response<ListStatusesResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    type WriteStream = BoxStream<WriteContentResponse>;
    async fn write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let mut stream = request.into_inner();
        let mut data = Vec::new();
        let mut responses = Vec::new();
        while let Some(message) = stream.message().await? {
            if message.offset != data.len() as i64 {
                return Err(Status::invalid_argument(format!("offset {} but have {}", message.offset, data.len())));
            }
            data.extend_from_slice(&message.data);
            if message.action == WriteAction::Commit as i32 {
                let digest = sha256(&data);
                if digest != message.expected || message.total != data.len() as i64 {
                    return Err(Status::failed_precondition("digest or size mismatch"));
                }
                self.blobs.lock().unwrap().insert(digest.clone(), std::mem::take(&mut data));
                self.labels.lock().unwrap().insert(digest.clone(), message.labels);
                responses.push(Ok(WriteContentResponse { action: message.action, digest, ..Default::default() }));
            }
        }
        Ok(Response::new(Box::pin(futures::stream::iter(responses))))
    }
    async fn abort(&self, _: Request<AbortRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("test double"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_writes_to_content_and_apply_reads_it_back() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let socket = t.dir.path().join("content.sock");
    let address = Address::Unix(socket.clone());
    let listener = serve::bind(&address, "").await.unwrap();
    let content = MemoryContent::default();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(ContentServer::new(content.clone()));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let server = tokio::spawn(serve::serve(listener, routes.routes(), async move { token.cancelled().await }));
    let client = ContentClient::new(intercept(lazy_channel(&address).unwrap(), ClientContext::default()));

    let base = RawTar::new().dir("etc/").file("etc/a", b"a").file("etc/b", b"b").finish();
    apply_layer(&t.core, "base", "", base.clone(), &sha256(&base)).await.unwrap();
    t.core.prepare(&ns(), "ctr", "base", Default::default(), Kind::Active).await.unwrap();
    let upper = t.fs_of("ctr");
    std::fs::create_dir(upper.join("new")).unwrap();
    std::fs::write(upper.join("new/file"), vec![b'z'; 3 << 20]).unwrap();

    let response = t
        .core
        .diff(&ns(), DiffRequest { key: "ctr".into(), ..Default::default() }, client.clone(), None)
        .await
        .unwrap();
    let descriptor = response.diff.unwrap();
    assert_eq!(descriptor.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    let blob = content.blobs.lock().unwrap().get(&descriptor.digest).cloned().expect("blob committed");
    assert_eq!(blob.len() as i64, descriptor.size);
    assert_eq!(&blob[..2], &[0x1f, 0x8b]);
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut raw).unwrap();
    assert_eq!(sha256(&raw), response.diff_id);
    assert_eq!(raw.len() as i64, response.uncompressed_size);
    assert_eq!(content.labels.lock().unwrap()[&descriptor.digest]["containerd.io/uncompressed"], response.diff_id);

    // Apply by digest: the service reads the blob itself.
    let header = ApplyHeader {
        name: "from-content".into(),
        parent: "base".into(),
        media_type: descriptor.media_type.clone(),
        diff_id: response.diff_id.clone(),
        content_digest: descriptor.digest.clone(),
        ..Default::default()
    };
    let applied = apply::apply(t.core.clone(), ns(), header.clone(), Source::Content(client.clone())).await.unwrap();
    assert_eq!(applied.diff_id, response.diff_id);
    assert_eq!(describe_tree(&t.fs_of("from-content")), describe_tree(&upper));

    // A missing blob is reported as the content service said.
    let mut missing = header;
    missing.name = "missing".into();
    missing.content_digest = sha256(b"nope");
    let status: Status = apply::apply(t.core.clone(), ns(), missing, Source::Content(client)).await.unwrap_err().into();
    assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());
    assert!(t.core.store.get(&ns(), "missing").unwrap().is_none());

    shutdown.cancel();
    let _ = server.await;
}
