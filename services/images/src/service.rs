//! `berth.images.v1.Images`.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::images::v1::images_server::Images;
use berth_proto::images::v1::*;
use chrono::Utc;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::db::{DescriptorRecord, ImageRecord, LeaseRecord, PlatformRecord};
use crate::error::Error;
use crate::reference::ImageRef;
use crate::state::State;

pub struct ImagesService {
    pub state: Arc<State>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn record_proto(record: &ImageRecord) -> Image {
    Image {
        name: record.name.clone(),
        target: Some((&record.target).into()),
        labels: record.labels.clone().into_iter().collect(),
        created_at: Some(berth_common::time::to_proto(record.created_at)),
        updated_at: Some(berth_common::time::to_proto(record.updated_at)),
    }
}

fn platform_of(platform: Option<&berth_proto::types::v1::Platform>) -> Option<PlatformRecord> {
    platform.filter(|p| !p.architecture.is_empty()).map(|p| {
        crate::platform::normalize(&PlatformRecord {
            os: if p.os.is_empty() { "linux".into() } else { p.os.clone() },
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        })
    })
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(&self, request: Request<GetImageRequest>) -> Result<Response<GetImageResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let text = &request.get_ref().name;
        let name = ImageRef::parse(text).map(|r| r.name()).unwrap_or_else(|_| text.clone());
        let record =
            self.state.db.image(&namespace, &name)?.ok_or_else(|| Error::NotFound(format!("No such image: {text}")))?;
        Ok(Response::new(GetImageResponse { image: Some(record_proto(&record)) }))
    }

    async fn list(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let images = self.state.summaries(&namespace, &request.get_ref().filters).await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn create(&self, request: Request<CreateImageRequest>) -> Result<Response<CreateImageResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let image = request.into_inner().image.ok_or_else(|| Status::invalid_argument("image is required"))?;
        let target = image.target.as_ref().ok_or_else(|| Status::invalid_argument("image target is required"))?;
        crate::digest::Digest::parse(&target.digest)?;
        let name = if image.name.is_empty() {
            crate::images::untagged_name(&target.digest)
        } else {
            ImageRef::parse(&image.name)?.name()
        };
        let now = Utc::now();
        let previous = self.state.db.image(&namespace, &name)?;
        let record = ImageRecord {
            name,
            target: DescriptorRecord::from(target),
            labels: image.labels.into_iter().collect(),
            created_at: previous.map(|p| p.created_at).unwrap_or(now),
            updated_at: now,
        };
        self.state.db.put_image(&namespace, &record)?;
        self.state.db.flush().await?;
        Ok(Response::new(CreateImageResponse { image: Some(record_proto(&record)) }))
    }

    async fn inspect(&self, request: Request<InspectImageRequest>) -> Result<Response<InspectImageResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let platform = platform_of(request.platform.as_ref());
        Ok(Response::new(self.state.inspect(&namespace, &request.reference, platform.as_ref()).await?))
    }

    async fn tag(&self, request: Request<TagImageRequest>) -> Result<Response<TagImageResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let record = self.state.tag(&namespace, &request.source, &request.target).await?;
        Ok(Response::new(TagImageResponse { image: Some(record_proto(&record)) }))
    }

    async fn delete(&self, request: Request<DeleteImageRequest>) -> Result<Response<DeleteImageResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let (untagged, deleted) = self.state.delete(&namespace, &request.reference, request.force).await?;
        if !deleted.is_empty() && !request.no_prune {
            // The space goes now, not at some later collection.
            if let Err(err) = self.state.collect_garbage().await {
                tracing::warn!(error = %err, "garbage collection after rmi failed");
            }
        }
        Ok(Response::new(DeleteImageResponse { untagged, deleted }))
    }

    async fn prune(&self, request: Request<PruneImagesRequest>) -> Result<Response<PruneImagesResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let mut untagged = Vec::new();
        let mut deleted = Vec::new();
        for (id, (_, records)) in self.state.grouped(&namespace).await? {
            let dangling = records.iter().all(|r| crate::images::repo_tag(&r.name).is_none());
            if !dangling && !request.all {
                continue;
            }
            if self.state.containers_using(&namespace, &id).await?.is_some_and(|users| !users.is_empty()) {
                continue;
            }
            for record in &records {
                self.state.db.delete_image(&namespace, &record.name)?;
                if !crate::images::is_untagged_name(&record.name) {
                    untagged.push(
                        crate::images::repo_tag(&record.name).unwrap_or_else(|| crate::images::repo_digest(record)),
                    );
                }
                crate::events::delete(&self.state, &namespace, &record.name, true).await;
            }
            deleted.push(id);
        }
        self.state.db.flush().await?;
        let stats = self.state.collect_garbage().await?;
        Ok(Response::new(PruneImagesResponse { untagged, deleted, space_reclaimed: stats.bytes_reclaimed }))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let lookup = self.state.lookup(&namespace, &request.get_ref().reference).await?;
        let resolved = self.state.resolve(lookup.first(), None).await?;
        let mut layers = resolved.config.diff_ids.iter().zip(resolved.layers.iter());
        let mut entries: Vec<HistoryEntry> = resolved
            .config
            .parsed
            .history
            .iter()
            .map(|h| {
                let size = if h.empty_layer {
                    0
                } else {
                    layers
                        .next()
                        .map(|(diff_id, layer)| {
                            self.state
                                .db
                                .layer_size(diff_id.as_str())
                                .ok()
                                .flatten()
                                .map(|s| s as i64)
                                .unwrap_or(layer.size)
                        })
                        .unwrap_or(0)
                };
                HistoryEntry {
                    created: h
                        .created
                        .as_deref()
                        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                        .map(|t| berth_common::time::to_proto(t.with_timezone(&Utc))),
                    created_by: h.created_by.clone(),
                    author: h.author.clone(),
                    comment: h.comment.clone(),
                    empty_layer: h.empty_layer,
                    size,
                    id: "<missing>".into(),
                    tags: Vec::new(),
                }
            })
            .collect();
        if entries.is_empty() {
            // No history in the config: one entry per layer, as Docker shows it.
            let created = crate::manifest::created_time(&resolved.config.parsed).map(berth_common::time::to_proto);
            for (diff_id, layer) in resolved.config.diff_ids.iter().zip(resolved.layers.iter()) {
                let size = self.state.db.layer_size(diff_id.as_str()).ok().flatten().map(|s| s as i64);
                entries.push(HistoryEntry {
                    created,
                    size: size.unwrap_or(layer.size),
                    id: "<missing>".into(),
                    ..Default::default()
                });
            }
        }
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top.id = resolved.id().to_string();
            top.tags = crate::images::repo_tag(&lookup.first().name).into_iter().collect();
        }
        Ok(Response::new(HistoryResponse { entries }))
    }

    type PullStream = BoxStream<PullProgress>;

    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        // Fail fast on a bad reference, before the stream starts.
        ImageRef::parse(&request.reference)?;
        let (tx, rx) = mpsc::channel(64);
        let state = self.state.clone();
        tokio::spawn(async move {
            let reference = request.reference.clone();
            if let Err(err) = crate::pull::pull(state, namespace, request, tx.clone()).await {
                tracing::warn!(%reference, error = %err, "pull failed");
                let _ = tx.send(Err(Status::from(err))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type PushStream = BoxStream<PushProgress>;

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        ImageRef::parse(&request.reference)?;
        let (tx, rx) = mpsc::channel(64);
        let state = self.state.clone();
        tokio::spawn(async move {
            let reference = request.reference.clone();
            if let Err(err) = crate::push::push(state, namespace, request, tx.clone()).await {
                tracing::warn!(%reference, error = %err, "push failed");
                let _ = tx.send(Err(Status::from(err))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SaveStream = BoxStream<SaveChunk>;

    async fn save(&self, request: Request<SaveRequest>) -> Result<Response<Self::SaveStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::archive::save::save(state, namespace, request, tx.clone()).await {
                tracing::warn!(error = %err, "save failed");
                let _ = tx.send(Err(Status::from(err))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type LoadStream = BoxStream<LoadProgress>;

    async fn load(&self, request: Request<Streaming<LoadRequest>>) -> Result<Response<Self::LoadStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let mut stream = request.into_inner();
        let options = match stream.message().await? {
            Some(LoadRequest { payload: Some(load_request::Payload::Options(options)) }) => options,
            _ => return Err(Status::invalid_argument("the first Load message must carry the LoadOptions")),
        };
        let input = crate::archive::data_stream(stream);
        let (tx, rx) = mpsc::channel(16);
        let state = self.state.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::archive::load::load(state, namespace, options, input, tx.clone()).await {
                tracing::warn!(error = %err, "load failed");
                let _ = tx.send(Err(Status::from(err))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ImportStream = BoxStream<ImportProgress>;

    async fn import(&self, request: Request<Streaming<ImportRequest>>) -> Result<Response<Self::ImportStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let mut stream = request.into_inner();
        let options = match stream.message().await? {
            Some(ImportRequest { payload: Some(import_request::Payload::Options(options)) }) => options,
            _ => return Err(Status::invalid_argument("the first Import message must carry the ImportOptions")),
        };
        crate::import::validate(&options)?;
        let input = crate::import::data_stream(stream);
        let (tx, rx) = mpsc::channel(16);
        let state = self.state.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::import::import(state, namespace, options, input, tx.clone()).await {
                tracing::warn!(error = %err, "import failed");
                let _ = tx.send(Err(Status::from(err))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        Ok(Response::new(crate::search::search(&self.state.ctx.config, request.get_ref()).await?))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(crate::login::login(&self.state.ctx.config, request.get_ref()).await?))
    }

    async fn info(&self, request: Request<ImagesInfoRequest>) -> Result<Response<ImagesInfoResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let images = self.state.grouped(&namespace).await?.len() as u64;
        let content_bytes = self.state.content.list()?.iter().map(|b| b.size).sum();
        let config = &self.state.ctx.config;
        Ok(Response::new(ImagesInfoResponse {
            images,
            mirrors: config.registry_mirrors.clone(),
            insecure_registries: config.insecure_registries.clone(),
            content_bytes,
        }))
    }

    async fn garbage_collect(
        &self,
        _request: Request<GarbageCollectRequest>,
    ) -> Result<Response<GarbageCollectResponse>, Status> {
        let stats = self.state.collect_garbage().await?;
        Ok(Response::new(GarbageCollectResponse {
            blobs_removed: stats.blobs_removed,
            snapshots_removed: stats.snapshots_removed,
            bytes_reclaimed: stats.bytes_reclaimed,
        }))
    }

    async fn create_lease(
        &self,
        request: Request<CreateLeaseRequest>,
    ) -> Result<Response<CreateLeaseResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let id = if request.id.is_empty() {
            format!("lease-{}", crate::content::store::unique_suffix())
        } else {
            request.id.clone()
        };
        if id.contains('/') {
            return Err(Status::invalid_argument("a lease id cannot contain '/'"));
        }
        if self.state.db.lease(&namespace, &id)?.is_some() {
            return Err(Error::AlreadyExists(format!("lease {id:?} already exists")).into());
        }
        let now = Utc::now();
        let ttl = if request.ttl_seconds > 0 { request.ttl_seconds } else { 24 * 3600 };
        // Work that dies with the daemon (a commit) asks for its lease to go at restart.
        let ephemeral = request.labels.get(berth_proto::EPHEMERAL_LEASE_LABEL).is_some_and(|v| v == "true");
        let lease = LeaseRecord {
            id: id.clone(),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(ttl),
            labels: request.labels.into_iter().collect(),
            ephemeral,
            content: Default::default(),
            snapshots: Default::default(),
            ingests: Default::default(),
        };
        self.state.db.put_lease(&namespace, &lease)?;
        self.state.db.flush().await?;
        Ok(Response::new(CreateLeaseResponse { id }))
    }

    async fn delete_lease(&self, request: Request<DeleteLeaseRequest>) -> Result<Response<()>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let id = &request.get_ref().id;
        if !self.state.db.delete_lease(&namespace, id)? {
            return Err(Error::NotFound(format!("lease {id:?} not found")).into());
        }
        self.state.db.flush().await?;
        Ok(Response::new(()))
    }
}
