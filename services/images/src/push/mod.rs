//! `Push`: uploads an image's missing blobs (layers in parallel with per-layer progress,
//! then the config), then its manifest exactly as stored (so the digest does not change).
//! An index is pushed whole when every platform manifest is stored locally; otherwise
//! only the platform manifest (the requested platform, else the host's) is pushed and the
//! tag points at it. A lease keeps the blobs while they upload.

mod upload;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_common::Namespace;
use berth_proto::images::v1::{LayerProgress, LayerStatus, PushDone, PushProgress, PushRequest, push_progress};
use oci_client::RegistryOperation;
use tokio::sync::{Semaphore, mpsc};

use crate::db::{ImageRecord, PlatformRecord};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, DescriptorJson, Document};
use crate::reference::{ImageRef, split_name};
use crate::registry;
use crate::state::State;
use upload::{Outcome, Target};

/// Docker's default `max-concurrent-uploads`.
const CONCURRENT_UPLOADS: usize = 5;

pub type ProgressSender = mpsc::Sender<Result<PushProgress, tonic::Status>>;

async fn send(progress: &ProgressSender, event: push_progress::Event) {
    let _ = progress.send(Ok(PushProgress { event: Some(event) })).await;
}

async fn layer_event(progress: &ProgressSender, digest: &Digest, status: LayerStatus, current: u64, total: u64) {
    layer_event_from(progress, digest, status, current, total, String::new()).await;
}

async fn layer_event_from(
    progress: &ProgressSender,
    digest: &Digest,
    status: LayerStatus,
    current: u64,
    total: u64,
    source: String,
) {
    let event = LayerProgress {
        digest: digest.to_string(),
        status: status as i32,
        current: current as i64,
        total: total as i64,
        source,
    };
    send(progress, push_progress::Event::Layer(event)).await;
}

/// The local records a push request names: one tag, or every tag of the repository.
fn records_to_push(
    state: &State,
    namespace: &Namespace,
    reference: &ImageRef,
    all_tags: bool,
) -> Result<Vec<ImageRecord>> {
    if reference.digest.is_some() {
        return Err(Error::InvalidArgument(format!(
            "cannot push a digest reference ({}): name a tag",
            reference.name()
        )));
    }
    if all_tags {
        let repository = reference.repository_name();
        let records: Vec<ImageRecord> = state
            .db
            .images(namespace)?
            .into_iter()
            .filter(|r| {
                let (repo, tag, _) = split_name(&r.name);
                repo == repository && tag.is_some()
            })
            .collect();
        if records.is_empty() {
            return Err(Error::NotFound(format!("An image does not exist locally with the repository: {repository}")));
        }
        return Ok(records);
    }
    let name = reference.name();
    let record = state
        .db
        .image(namespace, &name)?
        .ok_or_else(|| Error::NotFound(format!("An image does not exist locally with the tag: {name}")))?;
    Ok(vec![record])
}

pub async fn push(
    state: Arc<State>,
    namespace: Namespace,
    request: PushRequest,
    progress: ProgressSender,
) -> Result<()> {
    let reference = ImageRef::parse(&request.reference)?;
    let records = records_to_push(&state, &namespace, &reference, request.all_tags)?;
    let wanted = request.platform.as_ref().filter(|p| !p.architecture.is_empty()).map(|p| {
        crate::platform::normalize(&PlatformRecord {
            os: if p.os.is_empty() { "linux".into() } else { p.os.clone() },
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        })
    });
    let endpoint = registry::origin(&state.ctx.config, &reference.registry);
    let client = registry::client_with(&state.ctx.config, std::slice::from_ref(&endpoint), true);
    let chunked_client = registry::client_with(&state.ctx.config, std::slice::from_ref(&endpoint), false);
    let auth = registry::credentials(request.auth.as_ref(), &reference.registry);
    let oci_reference = reference.to_oci(&reference.registry);
    for c in [&client, &chunked_client] {
        c.auth(&oci_reference, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| registry::error(&format!("authenticating to {}", reference.registry), e))?;
    }
    send(
        &progress,
        push_progress::Event::Message(format!("The push refers to repository [{}]", reference.repository_name())),
    )
    .await;
    let lease = state.create_ephemeral_lease(&namespace, "push").await?;
    let mut result = Ok(());
    for record in records {
        let (_, tag, _) = split_name(&record.name);
        let tag = tag.unwrap_or_else(|| "latest".into());
        let target_reference =
            oci_client::Reference::with_tag(reference.registry.clone(), reference.repository.clone(), tag.clone());
        let target = Target {
            state: &state,
            client: &client,
            chunked_client: &chunked_client,
            reference: &target_reference,
            registry: &reference.registry,
        };
        let one = Push { state: &state, namespace: &namespace, lease: &lease, progress: &progress, target };
        match one.run(&record, wanted.as_ref()).await {
            Ok((digest, size, blobs)) => {
                if let Err(err) =
                    crate::sources::record(&state, &namespace, &blobs, &reference.registry, &reference.repository)
                {
                    tracing::warn!(error = %err, "recording where the pushed blobs are");
                }
                let name = format!("{}:{tag}", reference.repository_name());
                crate::events::push(&state, &namespace, &name, digest.as_str()).await;
                send(
                    &progress,
                    push_progress::Event::Done(PushDone { name, tag, digest: digest.to_string(), size: size as i64 }),
                )
                .await;
            }
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    let _ = state.db.delete_lease(&namespace, &lease);
    let _ = state.db.flush().await;
    result
}

/// One manifest to push: its raw bytes, media type, config and layers.
struct ManifestToPush {
    raw: Vec<u8>,
    digest: Digest,
    media_type: String,
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

struct Push<'a> {
    state: &'a Arc<State>,
    namespace: &'a Namespace,
    lease: &'a str,
    progress: &'a ProgressSender,
    target: Target<'a>,
}

impl Push<'_> {
    async fn manifest(&self, descriptor: &DescriptorJson) -> Result<ManifestToPush> {
        let digest = descriptor.digest()?;
        let raw = self.state.content.read_small(&digest).await?;
        match manifest::parse(&raw, &descriptor.media_type)? {
            (Document::Manifest { config, layers }, media_type) => {
                Ok(ManifestToPush { raw, digest, media_type, config, layers })
            }
            (Document::Index(_), _) => Err(Error::Unsupported(format!("nested index {digest} cannot be pushed"))),
        }
    }

    /// Pushes one record; answers the digest and size of what the tag now points at, and
    /// every blob pushed.
    async fn run(&self, record: &ImageRecord, wanted: Option<&PlatformRecord>) -> Result<(Digest, u64, Vec<String>)> {
        let target_digest = Digest::parse(&record.target.digest)?;
        let raw = self.state.content.read_small(&target_digest).await.map_err(|err| match err {
            Error::NotFound(_) => Error::NotFound(format!("content {target_digest} of {} is missing", record.name)),
            other => other,
        })?;
        let (document, media_type) = manifest::parse(&raw, &record.target.media_type)?;
        let mut blobs = Vec::new();
        match document {
            Document::Manifest { config, layers } => {
                let one = ManifestToPush { raw, digest: target_digest.clone(), media_type, config, layers };
                self.push_manifest(&one, true, &mut blobs).await?;
                Ok((one.digest, one.raw.len() as u64, blobs))
            }
            Document::Index(entries) => {
                let complete = entries.iter().all(|e| e.digest().is_ok_and(|d| self.state.content.exists(&d)));
                if complete {
                    for entry in &entries {
                        let child = self.manifest(entry).await?;
                        self.push_manifest(&child, false, &mut blobs).await?;
                    }
                    self.put_manifest(&raw, &target_digest, &media_type, true).await?;
                    blobs.push(target_digest.to_string());
                    return Ok((target_digest, raw.len() as u64, blobs));
                }
                // Only some platforms were pulled: push the one that is here.
                let resolved = self.state.resolve(record, wanted).await?;
                let descriptor = DescriptorJson {
                    media_type: resolved.manifest.media_type.clone(),
                    digest: resolved.manifest.digest.clone(),
                    size: resolved.manifest.size,
                    annotations: Default::default(),
                    platform: None,
                };
                let platform = resolved
                    .manifest
                    .platform
                    .as_ref()
                    .map(crate::platform::format)
                    .unwrap_or_else(|| "this platform".into());
                send(
                    self.progress,
                    push_progress::Event::Message(format!(
                        "Pushing only the {platform} manifest: the other platforms of the index are not stored locally"
                    )),
                )
                .await;
                let one = self.manifest(&descriptor).await?;
                self.push_manifest(&one, true, &mut blobs).await?;
                Ok((one.digest, one.raw.len() as u64, blobs))
            }
        }
    }

    async fn put_manifest(&self, raw: &[u8], digest: &Digest, media_type: &str, tagged: bool) -> Result<()> {
        let reference = if tagged {
            self.target.reference.clone()
        } else {
            self.target.reference.clone_with_digest(digest.to_string())
        };
        let content_type = http::HeaderValue::from_str(media_type)
            .map_err(|_| Error::InvalidArgument(format!("invalid manifest media type {media_type:?}")))?;
        self.target
            .client
            .push_manifest_raw(&reference, raw.to_vec(), content_type)
            .await
            .map_err(|e| registry::error(&format!("pushing manifest {digest}"), e))?;
        Ok(())
    }

    /// Layers (in parallel), config, then the manifest (by tag when `tagged`, else by
    /// digest as a child of an index).
    async fn push_manifest(&self, manifest: &ManifestToPush, tagged: bool, blobs: &mut Vec<String>) -> Result<()> {
        let mut digests: Vec<String> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        digests.push(manifest.config.digest.clone());
        digests.push(manifest.digest.to_string());
        self.state
            .db
            .update_lease(self.namespace, self.lease, |lease| lease.content.extend(digests.iter().cloned()))?;

        let mut seen = BTreeSet::new();
        let layers: Vec<&DescriptorJson> = manifest.layers.iter().filter(|l| seen.insert(l.digest.clone())).collect();
        for layer in &layers {
            layer_event(self.progress, &layer.digest()?, LayerStatus::Preparing, 0, layer.size.max(0) as u64).await;
        }
        let semaphore = Semaphore::new(CONCURRENT_UPLOADS);
        let uploads = layers.iter().map(|layer| self.push_layer(layer, &semaphore));
        for result in futures::future::join_all(uploads).await {
            result?;
        }
        let config = manifest.config.digest()?;
        let sources = crate::sources::repositories(self.state, self.namespace, config.as_str(), self.target.registry);
        self.target.ensure(&config, manifest.config.size.max(0) as u64, &sources, &AtomicU64::new(0)).await?;
        self.put_manifest(&manifest.raw, &manifest.digest, &manifest.media_type, tagged).await?;
        blobs.extend(digests);
        Ok(())
    }

    async fn push_layer(&self, layer: &DescriptorJson, semaphore: &Semaphore) -> Result<()> {
        let digest = layer.digest()?;
        let size = layer.size.max(0) as u64;
        let _permit = match semaphore.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                layer_event(self.progress, &digest, LayerStatus::Waiting, 0, size).await;
                semaphore.acquire().await.map_err(|_| Error::Internal("upload slots closed".into()))?
            }
        };
        let sources = crate::sources::repositories(self.state, self.namespace, digest.as_str(), self.target.registry);
        let sent = AtomicU64::new(0);
        let ensure = self.target.ensure(&digest, size, &sources, &sent);
        tokio::pin!(ensure);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let mut reported = None;
        let outcome = loop {
            tokio::select! {
                outcome = &mut ensure => break outcome?,
                _ = tick.tick() => {
                    let current = sent.load(Ordering::Relaxed);
                    if current > 0 && reported != Some(current) {
                        layer_event(self.progress, &digest, LayerStatus::Pushing, current, size).await;
                        reported = Some(current);
                    }
                }
            }
        };
        match outcome {
            Outcome::Existed => layer_event(self.progress, &digest, LayerStatus::AlreadyExists, 0, size).await,
            Outcome::Mounted(source) => {
                layer_event_from(self.progress, &digest, LayerStatus::Mounted, size, size, source).await
            }
            Outcome::Uploaded => layer_event(self.progress, &digest, LayerStatus::Pushed, size, size).await,
        }
        Ok(())
    }
}
