//! `Load`: reads a docker-archive (`manifest.json`; Docker's and skopeo's layouts, legacy
//! `<id>/layer.tar` with symlinks too) or an OCI image layout tar (`index.json`), either
//! optionally gzip/zstd-compressed, in one streaming pass: every file other than the
//! small JSON documents goes straight into the content store (blobs under
//! `blobs/sha256/` verified against their names). Then the images are assembled (a
//! docker-archive gets an OCI manifest written for it), unpacked into the snapshot
//! service, and their records written; a lease covers all of it until then.

use std::sync::Arc;

use berth_common::Namespace;
use berth_proto::images::v1::{LoadOptions, LoadProgress, load_progress};
use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;

use super::plan::{ArchiveEntry, parse_json, plan_docker, plan_oci};
use super::read::{BlobWriter, read_archive};
use crate::db::{ImageRecord, PlatformRecord};
use crate::error::{Error, Result};
use crate::import::ByteStream;
use crate::state::State;

pub type ProgressSender = mpsc::Sender<Result<LoadProgress, tonic::Status>>;

pub async fn load(
    state: Arc<State>,
    namespace: Namespace,
    options: LoadOptions,
    input: ByteStream,
    progress: ProgressSender,
) -> Result<()> {
    let lease = state.create_ephemeral_lease(&namespace, "load").await?;
    let result = run(&state, &namespace, &lease, &options, input, &progress).await;
    let _ = state.db.delete_lease(&namespace, &lease);
    let _ = state.db.flush().await;
    // What the archive held beyond the loaded images (or everything, on failure) goes.
    if let Err(err) = state.collect_garbage().await {
        tracing::warn!(error = %err, "cleaning up after a load");
    }
    result
}

async fn run(
    state: &Arc<State>,
    namespace: &Namespace,
    lease: &str,
    options: &LoadOptions,
    input: ByteStream,
    progress: &ProgressSender,
) -> Result<()> {
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(input));
    let handle = tokio::runtime::Handle::current();
    let (task_state, task_namespace, task_lease) = (state.clone(), namespace.clone(), lease.to_string());
    let contents = tokio::task::spawn_blocking(move || {
        let writer = BlobWriter { handle: &handle, state: &task_state, namespace: &task_namespace, lease: &task_lease };
        read_archive(&writer, Box::new(reader))
    })
    .await
    .map_err(|e| Error::Internal(format!("load task failed: {e}")))??;

    let docker: Vec<ArchiveEntry> = parse_json(&contents, "manifest.json")?.unwrap_or_default();
    let index: Option<Value> = parse_json(&contents, "index.json")?;
    let planned = match index {
        Some(index) if index.get("manifests").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) => {
            plan_oci(state, &contents, index, &docker).await?
        }
        _ if !docker.is_empty() => plan_docker(state, (namespace, lease), &contents, docker).await?,
        _ => {
            return Err(Error::InvalidArgument(
                "not an image archive: it has neither manifest.json (docker-archive) nor index.json (OCI layout)"
                    .into(),
            ));
        }
    };
    let platform = options.platform.as_ref().filter(|p| !p.architecture.is_empty()).map(|p| {
        crate::platform::normalize(&PlatformRecord {
            os: if p.os.is_empty() { "linux".into() } else { p.os.clone() },
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        })
    });
    let mut loaded = Vec::new();
    for image in planned {
        let now = Utc::now();
        let names = if image.names.is_empty() {
            vec![crate::images::untagged_name(&image.target.digest)]
        } else {
            image.names.clone()
        };
        let mut records = Vec::new();
        for name in &names {
            let previous = state.db.image(namespace, name)?;
            records.push(ImageRecord {
                name: name.clone(),
                target: image.target.clone(),
                labels: previous.as_ref().map(|p| p.labels.clone()).unwrap_or_default(),
                created_at: previous.map(|p| p.created_at).unwrap_or(now),
                updated_at: now,
            });
        }
        let resolved = state.resolve(&records[0], platform.as_ref()).await?;
        crate::pull::unpack::unpack_from_content(state, namespace, lease, &resolved).await?;
        for record in &records {
            state.db.put_image(namespace, record)?;
        }
        state.db.flush().await?;
        let event = if image.names.is_empty() {
            loaded.push(resolved.id().to_string());
            load_progress::Event::LoadedImageId(resolved.id().to_string())
        } else {
            loaded.extend(image.names.iter().cloned());
            for name in &image.names {
                let shown = crate::images::repo_tag(name).unwrap_or_else(|| name.clone());
                let _ = progress.send(Ok(LoadProgress { event: Some(load_progress::Event::LoadedImage(shown)) })).await;
            }
            continue;
        };
        let _ = progress.send(Ok(LoadProgress { event: Some(event) })).await;
    }
    crate::events::load(state, namespace, &loaded).await;
    Ok(())
}
