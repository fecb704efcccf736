//! `berth.content.v1.Content`: blobs are shared by all namespaces; labels are per
//! namespace. Reads stream chunks of at most 1 MiB; writes go through resumable ingests.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_proto::content::v1::content_server::Content;
use berth_proto::content::v1::*;
use futures::{Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::content::store::{BlobInfo, IngestStatus};
use crate::digest::Digest;
use crate::error::Error;
use crate::state::{State, lease_of};

const READ_CHUNK: usize = 1024 * 1024;

pub struct ContentService {
    pub state: Arc<State>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn status_proto(status: &IngestStatus) -> berth_proto::content::v1::IngestStatus {
    berth_proto::content::v1::IngestStatus {
        r#ref: status.reference.clone(),
        offset: status.offset as i64,
        total: status.total.unwrap_or(0) as i64,
        expected: status.expected.clone().unwrap_or_default(),
        started_at: Some(berth_common::time::to_proto(status.started_at)),
        updated_at: Some(berth_common::time::to_proto(status.updated_at)),
    }
}

impl ContentService {
    fn info_proto(&self, namespace: &berth_common::Namespace, blob: &BlobInfo) -> Result<ContentInfo, Error> {
        let labels = self.state.db.labels(namespace, blob.digest.as_str())?;
        Ok(ContentInfo {
            digest: blob.digest.to_string(),
            size: blob.size as i64,
            created_at: Some(berth_common::time::to_proto(blob.created_at)),
            updated_at: Some(berth_common::time::to_proto(labels.updated_at.unwrap_or(blob.created_at))),
            labels: labels.labels.into_iter().collect(),
        })
    }

    async fn referenced_by_an_image(&self, digest: &Digest) -> Result<Option<String>, Error> {
        for namespace in self.state.db.namespaces()? {
            for record in self.state.db.images(&namespace)? {
                if record.target.digest == digest.as_str() {
                    return Ok(Some(record.name));
                }
                if let Ok(resolved) = self.state.resolve(&record, None).await
                    && resolved.blobs().iter().any(|b| b == digest.as_str())
                {
                    return Ok(Some(record.name));
                }
            }
        }
        Ok(None)
    }
}

/// "label.<key>==<value>" or "label.<key>" (present); all must hold.
fn matches_filters(filters: &[String], labels: &BTreeMap<String, String>) -> bool {
    filters.iter().filter(|f| !f.is_empty()).all(|filter| {
        let Some(rest) = filter.strip_prefix("label.").or_else(|| filter.strip_prefix("labels.")) else {
            return true;
        };
        match rest.split_once("==") {
            Some((key, value)) => labels.get(key).is_some_and(|v| v == value.trim_matches('"')),
            None => labels.contains_key(rest),
        }
    })
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let digest = Digest::parse(&request.get_ref().digest)?;
        let blob = self.state.content.info(&digest)?;
        Ok(Response::new(InfoResponse { info: Some(self.info_proto(&namespace, &blob)?) }))
    }

    async fn update(&self, request: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let info = request.into_inner().info.ok_or_else(|| Status::invalid_argument("info is required"))?;
        let digest = Digest::parse(&info.digest)?;
        let blob = self.state.content.info(&digest)?;
        self.state.db.set_labels(&namespace, digest.as_str(), info.labels.into_iter().collect())?;
        self.state.db.flush().await?;
        Ok(Response::new(UpdateResponse { info: Some(self.info_proto(&namespace, &blob)?) }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(&self, request: Request<ListContentRequest>) -> Result<Response<Self::ListStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let filters = request.into_inner().filters;
        let mut infos = Vec::new();
        for blob in self.state.content.list()? {
            let info = self.info_proto(&namespace, &blob)?;
            let labels: BTreeMap<String, String> = info.labels.clone().into_iter().collect();
            if matches_filters(&filters, &labels) {
                infos.push(info);
            }
        }
        let batches: Vec<Result<ListContentResponse, Status>> =
            infos.chunks(500).map(|chunk| Ok(ListContentResponse { info: chunk.to_vec() })).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn delete(&self, request: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let digest = Digest::parse(&request.get_ref().digest)?;
        self.state.content.info(&digest)?;
        if let Some(name) = self.referenced_by_an_image(&digest).await? {
            return Err(Error::FailedPrecondition(format!(
                "content {digest} is used by image {name}; remove the image first"
            ))
            .into());
        }
        self.state.content.delete(&digest)?;
        self.state.db.forget_content(digest.as_str())?;
        self.state.db.flush().await?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(&self, request: Request<ReadContentRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let digest = Digest::parse(&request.digest)?;
        let offset =
            u64::try_from(request.offset).map_err(|_| Status::invalid_argument("offset must not be negative"))?;
        let info = self.state.content.info(&digest)?;
        if offset > info.size {
            return Err(Status::out_of_range(format!(
                "offset {offset} is past the end of {digest} ({} bytes)",
                info.size
            )));
        }
        let limit = match request.size {
            0 => info.size - offset,
            n if n > 0 => (n as u64).min(info.size - offset),
            _ => return Err(Status::invalid_argument("size must not be negative")),
        };
        let mut file = self.state.content.open_blob(&digest, offset).await?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut position = offset;
            let end = offset + limit;
            while position < end {
                let want = READ_CHUNK.min((end - position) as usize);
                let mut buffer = vec![0u8; want];
                let result = file.read_exact(&mut buffer).await;
                let message = match result {
                    Ok(_) => Ok(ReadContentResponse { offset: position as i64, data: buffer }),
                    Err(err) => Err(Status::from(Error::io(format!("reading {digest}"), err))),
                };
                let failed = message.is_err();
                if tx.send(message).await.is_err() || failed {
                    return;
                }
                position += want as u64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.state.content.status(&request.get_ref().r#ref)?;
        Ok(Response::new(StatusResponse { status: Some(status_proto(&status)) }))
    }

    async fn list_statuses(
        &self,
        request: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        // Filters: "ref==<ref>" or a ref prefix.
        let filters = request.into_inner().filters;
        let statuses = self
            .state
            .content
            .statuses()
            .iter()
            .filter(|s| {
                filters.iter().filter(|f| !f.is_empty()).all(|f| match f.strip_prefix("ref==") {
                    Some(exact) => s.reference == exact,
                    None => s.reference.starts_with(f.trim_start_matches("ref~=")),
                })
            })
            .map(status_proto)
            .collect();
        Ok(Response::new(ListStatusesResponse { statuses }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let lease = lease_of(&request);
        if let Some(lease) = &lease
            && self.state.db.lease(&namespace, lease)?.is_none()
        {
            return Err(Status::not_found(format!("lease {lease:?} not found")));
        }
        let mut stream = request.into_inner();
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let result = write_session(&state, &namespace, lease.as_deref(), &mut stream, &tx).await;
            if let Err(err) = result {
                let _ = tx.send(Err(Status::from(err))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<()>, Status> {
        self.state.content.abort(&request.get_ref().r#ref)?;
        Ok(Response::new(()))
    }
}

/// One Write call: the first message opens (or resumes) the ingest; each message answers
/// with the ingest's state; a COMMIT ends the call.
async fn write_session(
    state: &State,
    namespace: &berth_common::Namespace,
    lease: Option<&str>,
    stream: &mut Streaming<WriteContentRequest>,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Error> {
    let Some(first) = stream.next().await else { return Ok(()) };
    let first = first.map_err(Error::Dependency)?;
    let expected = Some(first.expected.as_str()).filter(|e| !e.is_empty()).map(Digest::parse).transpose()?;
    let total = u64::try_from(first.total).ok().filter(|t| *t > 0);
    if let Some(lease) = lease {
        let reference = first.r#ref.clone();
        state.db.update_lease(namespace, lease, |l| {
            l.ingests.insert(reference.clone());
        })?;
    }
    let mut writer = state.content.writer(&first.r#ref, expected, total).await?;
    let mut next = Some(first);
    loop {
        let message = match next.take() {
            Some(message) => message,
            None => match stream.next().await {
                Some(message) => message.map_err(Error::Dependency)?,
                None => return Ok(()),
            },
        };
        let action = WriteAction::try_from(message.action).unwrap_or(WriteAction::Unspecified);
        if !message.data.is_empty() || action == WriteAction::Write {
            let offset = u64::try_from(message.offset).unwrap_or(0);
            if offset != writer.offset() {
                writer.truncate(offset).await?;
            }
            writer.write(&message.data).await?;
        }
        let now = Some(berth_common::time::now());
        let mut response = WriteContentResponse {
            action: message.action,
            started_at: Some(berth_common::time::to_proto(writer.started_at())),
            updated_at: now,
            offset: writer.offset() as i64,
            total: writer.total().unwrap_or(0) as i64,
            digest: String::new(),
        };
        if action == WriteAction::Commit {
            let expected = Some(message.expected.as_str())
                .filter(|e| !e.is_empty())
                .or(writer.expected())
                .map(Digest::parse)
                .transpose()?
                .ok_or_else(|| Error::InvalidArgument("a commit needs the expected digest".into()))?;
            let size = u64::try_from(message.total).ok().filter(|t| *t > 0);
            let digest = writer.commit(size, &expected).await?;
            if !message.labels.is_empty() {
                state.db.set_labels(namespace, digest.as_str(), message.labels.clone().into_iter().collect())?;
            }
            if let Some(lease) = lease {
                state.db.update_lease(namespace, lease, |l| {
                    l.content.insert(digest.to_string());
                })?;
            }
            state.db.flush().await?;
            response.digest = digest.to_string();
            let _ = tx.send(Ok(response)).await;
            return Ok(());
        }
        if tx.send(Ok(response)).await.is_err() {
            return Ok(());
        }
    }
}
