//! `Pull`: resolve the reference (mirrors first), pick the platform manifest, fetch the
//! config and layers in parallel into the content store, and unpack each layer into the
//! snapshot service while it downloads, in chain order. A lease protects everything the
//! pull touches until the image record is written.

pub mod download;
mod progress;
pub mod unpack;

use std::sync::Arc;

use berth_common::Namespace;
use berth_proto::images::v1::{PullDone, PullProgress, PullRequest, PullResolved, pull_progress};
use berth_proto::snapshots::v1::ApplyHeader;
use chrono::Utc;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::db::{DescriptorRecord, ImageRecord, PlatformRecord};
use crate::digest::{Digest, chain_ids};
use crate::error::{Error, Result};
use crate::manifest::{self, DescriptorJson, Document};
use crate::platform;
use crate::reference::ImageRef;
use crate::registry::{self, Endpoint};
use crate::state::State;
use unpack::UnpackState;

/// Docker's default `max-concurrent-downloads`.
const CONCURRENT_DOWNLOADS: usize = 3;

pub type ProgressSender = mpsc::Sender<Result<PullProgress, tonic::Status>>;

async fn send(progress: &ProgressSender, event: pull_progress::Event) {
    // A client that went away is noticed by `pull`, which cancels the work.
    let _ = progress.send(Ok(PullProgress { event: Some(event) })).await;
}

/// Runs a pull to its end, streaming progress; the error, if any, is returned (the caller
/// sends it as the stream's final status).
pub async fn pull(
    state: Arc<State>,
    namespace: Namespace,
    request: PullRequest,
    progress: ProgressSender,
) -> Result<()> {
    let reference = ImageRef::parse(&request.reference)?;
    if request.all_tags {
        return Err(Error::Unsupported("pulling all tags is not supported yet; name a tag".into()));
    }
    let wanted = request.platform.as_ref().filter(|p| !p.architecture.is_empty()).map(|p| {
        platform::normalize(&PlatformRecord {
            os: if p.os.is_empty() { "linux".into() } else { p.os.clone() },
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        })
    });
    let lease = state.create_ephemeral_lease(&namespace, "pull").await?;
    let client_gone = progress.clone();
    let pull = Pull {
        state: state.clone(),
        namespace: namespace.clone(),
        lease: lease.clone(),
        progress,
        started: Default::default(),
    };
    // A client that goes away cancels its pull (downloads another pull shares go on).
    let result = tokio::select! {
        biased;
        result = pull.run(&reference, wanted, &request) => result,
        _ = client_gone.closed() => Err(Error::Cancelled(format!("the pull of {} was cancelled", reference.name()))),
    };
    // The image record (written on success) now protects what the lease did.
    let _ = state.db.delete_lease(&namespace, &lease);
    let _ = state.db.flush().await;
    if result.is_err() {
        // Downloads this pull was the last to want are being cancelled; once they have
        // let go of their files, nothing of the failed pull may stay.
        let started = std::mem::take(&mut *pull.started.lock().unwrap_or_else(|p| p.into_inner()));
        for download in started.iter().filter(|d| d.cancelled()) {
            let _ = download.finished().await;
        }
        if let Err(err) = state.collect_garbage().await {
            tracing::warn!(error = %err, "cleaning up after a failed pull");
        }
    }
    result
}

struct Pull {
    state: Arc<State>,
    namespace: Namespace,
    lease: String,
    progress: ProgressSender,
    /// Every layer download this pull started or joined.
    started: std::sync::Mutex<Vec<download::Download>>,
}

/// What the registry answered for the reference.
struct Resolution {
    endpoint: Endpoint,
    reference: oci_client::Reference,
    raw: Vec<u8>,
    digest: Digest,
}

fn oci_descriptor(descriptor: &DescriptorJson) -> OciDescriptor {
    OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.clone(),
        size: descriptor.size,
        ..Default::default()
    }
}

impl Pull {
    fn protect(&self, content: &[&str], snapshots: &[&str]) -> Result<()> {
        self.state.db.update_lease(&self.namespace, &self.lease, |lease| {
            lease.content.extend(content.iter().map(|d| d.to_string()));
            lease.snapshots.extend(snapshots.iter().map(|s| s.to_string()));
        })
    }

    async fn message(&self, text: String) {
        send(&self.progress, pull_progress::Event::Message(text)).await;
    }

    /// Asks each endpoint in turn (mirrors, then the origin) for the manifest.
    async fn resolve(
        &self,
        client: &oci_client::Client,
        endpoints: &[Endpoint],
        reference: &ImageRef,
        auth: &RegistryAuth,
    ) -> Result<Resolution> {
        let mut last_error = None;
        for endpoint in endpoints {
            let oci_reference = reference.to_oci(&endpoint.host);
            let what = format!("manifest for {}", reference.name());
            match client.pull_manifest_raw(&oci_reference, auth, manifest::ACCEPTED).await {
                Ok((raw, _)) => {
                    let digest = Digest::of(&raw);
                    if let Some(pinned) = &reference.digest
                        && pinned != &digest
                    {
                        return Err(Error::DigestMismatch {
                            what,
                            expected: pinned.to_string(),
                            actual: digest.to_string(),
                        });
                    }
                    return Ok(Resolution {
                        endpoint: endpoint.clone(),
                        reference: oci_reference,
                        raw: raw.to_vec(),
                        digest,
                    });
                }
                Err(err) => {
                    let err = registry::error(&what, err);
                    if endpoint.mirror {
                        tracing::info!(mirror = %endpoint.host, error = %err, "mirror failed; trying the next endpoint");
                        self.message(format!("mirror {} failed ({err}); trying the next", endpoint.host)).await;
                        last_error = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Registry(format!("no endpoint for {}", reference.registry))))
    }

    /// Fetches a small blob (manifest or config) unless present, verified by digest.
    async fn small_blob(
        &self,
        client: &oci_client::Client,
        reference: &oci_client::Reference,
        descriptor: &DescriptorJson,
        is_manifest: bool,
    ) -> Result<Vec<u8>> {
        let digest = descriptor.digest()?;
        self.protect(&[digest.as_str()], &[])?;
        if self.state.content.exists(&digest) {
            return self.state.content.read_small(&digest).await;
        }
        let what = format!("{} {digest}", if is_manifest { "manifest" } else { "config" });
        let attempts = self.state.ctx.config.max_download_attempts;
        let mut attempt = 0;
        let raw = loop {
            attempt += 1;
            match fetch_small(client, reference, descriptor, is_manifest, &what).await {
                Ok(raw) => break raw,
                Err(Error::Registry(_)) if attempt < attempts => {
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(Error::Registry(message)) if attempts > 1 => {
                    return Err(Error::Registry(format!("{message} (gave up after {attempt} attempts)")));
                }
                Err(err) => return Err(err),
            }
        };
        self.state.content.write_blob(&raw, Some(&digest)).await?;
        Ok(raw)
    }

    async fn run(&self, reference: &ImageRef, wanted: Option<PlatformRecord>, request: &PullRequest) -> Result<()> {
        let state = &self.state;
        let endpoints = registry::endpoints(&state.ctx.config, &reference.registry);
        let client = registry::client(&state.ctx.config, &endpoints);
        let auth = registry::credentials(request.auth.as_ref(), &reference.registry);
        let name = reference.name();

        let resolution = self.resolve(&client, &endpoints, reference, &auth).await?;
        if resolution.endpoint.mirror {
            tracing::info!(mirror = %resolution.endpoint.host, image = %name, "pulling through a mirror");
        }
        self.protect(&[resolution.digest.as_str()], &[])?;
        state.content.write_blob(&resolution.raw, Some(&resolution.digest)).await?;
        let (document, media_type) = manifest::parse(&resolution.raw, "")?;
        let target = DescriptorRecord {
            media_type,
            digest: resolution.digest.to_string(),
            size: resolution.raw.len() as i64,
            ..Default::default()
        };

        let (config_descriptor, layers) = match document {
            Document::Manifest { config, layers } => (config, layers),
            Document::Index(entries) => {
                let host = platform::host();
                let wanted = wanted.clone().unwrap_or(host);
                let platforms: Vec<Option<PlatformRecord>> = entries.iter().map(|e| e.platform_record()).collect();
                let Some(index) = platform::best(&wanted, platforms.iter().map(Option::as_ref)) else {
                    return Err(Error::NotFound(format!(
                        "no matching manifest for {} in the manifest list entries of {name}",
                        platform::format(&wanted)
                    )));
                };
                let entry = &entries[index];
                let raw = self.small_blob(&client, &resolution.reference, entry, true).await?;
                match manifest::parse(&raw, &entry.media_type)?.0 {
                    Document::Manifest { config, layers } => (config, layers),
                    Document::Index(_) => {
                        return Err(Error::Unsupported(format!("nested index {} is not supported", entry.digest)));
                    }
                }
            }
        };
        send(
            &self.progress,
            pull_progress::Event::Resolved(PullResolved {
                name: name.clone(),
                tag: reference.tag.clone().unwrap_or_default(),
                digest: resolution.digest.to_string(),
                layers: layers.iter().map(|l| l.digest.clone()).collect(),
            }),
        )
        .await;

        // Layers start downloading now; the config is fetched meanwhile.
        let layer_digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        self.protect(&layer_digests, &[])?;
        let semaphore = Arc::new(Semaphore::new(CONCURRENT_DOWNLOADS));
        let (downloads, _claims): (Vec<_>, Vec<_>) = layers
            .iter()
            .map(|layer| {
                download::start(state, &client, &resolution.reference, &oci_descriptor(layer), semaphore.clone())
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        self.started.lock().unwrap_or_else(|p| p.into_inner()).extend(downloads.iter().cloned());
        let unpack_states: Vec<watch::Sender<UnpackState>> =
            layers.iter().map(|_| watch::channel(UnpackState::default()).0).collect();
        let reporters: Vec<_> = downloads
            .iter()
            .zip(unpack_states.iter())
            .map(|(download, unpack)| {
                tokio::spawn(progress::report(
                    download.clone(),
                    unpack.subscribe(),
                    request.no_unpack,
                    self.progress.clone(),
                ))
            })
            .collect();
        let result =
            self.finish(&client, &resolution, &config_descriptor, &layers, &downloads, &unpack_states, request).await;
        match &result {
            Ok(_) => {
                for reporter in reporters {
                    let _ = reporter.await;
                }
            }
            Err(_) => reporters.iter().for_each(|r| r.abort()),
        }
        let (image_id, did_work) = result?;

        let now = Utc::now();
        let previous = state.db.image(&self.namespace, &name)?;
        let updated = did_work || previous.as_ref().is_none_or(|p| p.target.digest != target.digest);
        let record = ImageRecord {
            name: name.clone(),
            target,
            labels: previous.as_ref().map(|p| p.labels.clone()).unwrap_or_default(),
            created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
            updated_at: now,
        };
        state.db.put_image(&self.namespace, &record)?;
        // A later push to another repository of this registry can mount these blobs.
        let mut pulled: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
        pulled.push(config_descriptor.digest.clone());
        if let Err(err) =
            crate::sources::record(state, &self.namespace, &pulled, &reference.registry, &reference.repository)
        {
            tracing::warn!(error = %err, "recording where the pulled blobs came from");
        }
        state.db.flush().await?;
        crate::events::pull(state, &self.namespace, &name, &record.target.digest).await;
        send(
            &self.progress,
            pull_progress::Event::Done(PullDone { name, digest: record.target.digest, updated, image_id }),
        )
        .await;
        Ok(())
    }

    /// Config, unpacking and the end of every download; returns the image id and whether
    /// anything had to be downloaded or unpacked.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        client: &oci_client::Client,
        resolution: &Resolution,
        config_descriptor: &DescriptorJson,
        layers: &[DescriptorJson],
        downloads: &[download::Download],
        unpack_states: &[watch::Sender<UnpackState>],
        request: &PullRequest,
    ) -> Result<(String, bool)> {
        let raw_config = self.small_blob(client, &resolution.reference, config_descriptor, false).await?;
        let config = manifest::parse_config(&raw_config)?;
        if config.diff_ids.len() != layers.len() {
            return Err(Error::Registry(format!(
                "image config lists {} layers but the manifest has {}",
                config.diff_ids.len(),
                layers.len()
            )));
        }
        let chain = chain_ids(&config.diff_ids);
        let chain_names: Vec<&str> = chain.iter().map(Digest::as_str).collect();
        self.protect(&[], &chain_names)?;

        let mut did_work = downloads.iter().any(|d| !d.state.borrow().present);
        for (index, layer) in layers.iter().enumerate() {
            if request.no_unpack {
                break;
            }
            let progress = &unpack_states[index];
            let name = chain[index].as_str();
            let lock = self.state.unpack_lock(&self.namespace, name);
            let _guard = lock.lock().await;
            match unpack::snapshot_exists(&self.state, &self.namespace, name).await {
                Ok(true) => {
                    progress.send_modify(|s| {
                        s.existed = true;
                        s.done = true;
                    });
                    continue;
                }
                Ok(false) => {}
                Err(Error::Dependency(status)) if crate::error::is_unimplemented(&status) => {
                    // The snapshot service is not there yet: keep the content, skip unpacking.
                    self.message("unpacking skipped: the snapshot service is not available".into()).await;
                    unpack_states.iter().for_each(|s| s.send_modify(|s| s.skipped = true));
                    break;
                }
                Err(err) => return Err(err),
            }
            did_work = true;
            let reader = downloads[index].follow().await?;
            let header = ApplyHeader {
                name: name.to_string(),
                parent: if index == 0 { String::new() } else { chain[index - 1].to_string() },
                media_type: layer.media_type.clone(),
                diff_id: config.diff_ids[index].to_string(),
                content_digest: String::new(),
                labels: Default::default(),
            };
            let applied = unpack::apply(&self.state, &self.namespace, &self.lease, header, reader, progress).await?;
            if applied.size > 0 {
                self.state.db.set_layer_size(config.diff_ids[index].as_str(), applied.size as u64)?;
            }
            progress.send_modify(|s| s.done = true);
        }
        // Every blob must be in the store, verified, even when its snapshot existed.
        for download in downloads {
            download.finished().await?;
        }
        Ok((config_descriptor.digest.clone(), did_work))
    }
}

/// One attempt at a manifest or config blob.
async fn fetch_small(
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    descriptor: &DescriptorJson,
    is_manifest: bool,
    what: &str,
) -> Result<Vec<u8>> {
    if is_manifest {
        let (raw, _) = client
            .pull_manifest_raw(
                &reference.clone_with_digest(descriptor.digest.clone()),
                &RegistryAuth::Anonymous,
                manifest::ACCEPTED,
            )
            .await
            .map_err(|e| registry::error(what, e))?;
        Ok(raw.to_vec())
    } else {
        let mut raw = Vec::new();
        client
            .pull_blob(reference, &oci_descriptor(descriptor), &mut raw)
            .await
            .map_err(|e| registry::error(what, e))?;
        Ok(raw)
    }
}
