//! `Import`: a one-layer image from a rootfs tarball (streamed by the client, or fetched
//! from a URL). The tar is gzipped into the content store, an image config (with the
//! `--change` instructions applied) and an OCI manifest are written next to it, the layer
//! is unpacked into the snapshot service under its chain id, and the image record is
//! written last, all under one lease so a GC meanwhile cannot take any of it.

use std::pin::Pin;
use std::sync::Arc;

use berth_common::Namespace;
use berth_proto::images::v1::{ImportOptions, ImportProgress, import_progress};
use berth_proto::snapshots::v1::ApplyHeader;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::db::{DescriptorRecord, ImageRecord};
use crate::error::{Error, Result};
use crate::layer::LayerBlob;
use crate::manifest::OCI_MANIFEST;
use crate::reference::ImageRef;
use crate::state::State;

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;
pub type ProgressSender = mpsc::Sender<Result<ImportProgress, tonic::Status>>;

/// Checks what can be checked before any data moves: the name and the changes.
pub fn validate(options: &ImportOptions) -> Result<()> {
    if !options.reference.is_empty() {
        let reference = ImageRef::parse(&options.reference)?;
        if reference.digest.is_some() {
            return Err(Error::InvalidArgument(format!(
                "refusing to import into a digest reference: {}",
                options.reference
            )));
        }
    }
    run_config(&options.changes).map(|_| ())
}

/// Docker's "config" object from `--change` instructions.
fn run_config(changes: &[String]) -> Result<Map<String, Value>> {
    let mut config = Map::new();
    for change in changes {
        berth_common::image_changes::apply(&mut config, change).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }
    Ok(config)
}

/// The tarball from `url` as a byte stream.
async fn fetch(url: &str) -> Result<ByteStream> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::InvalidArgument(format!("invalid URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidArgument(format!("cannot import from {url:?}: only http and https URLs work")));
    }
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let response = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| Error::Registry(format!("fetching {url}: {}", crate::registry::describe(&e))))?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(if status == reqwest::StatusCode::NOT_FOUND {
            Error::NotFound(format!("fetching {url}: {status}"))
        } else {
            Error::Registry(format!("fetching {url}: {status}"))
        });
    }
    Ok(Box::pin(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other))))
}

/// The image config of a one-layer image.
fn image_config(options: &ImportOptions, layer: &LayerBlob, created: &str) -> Result<Value> {
    let host = crate::platform::host();
    let platform = options.platform.as_ref().filter(|p| !p.architecture.is_empty());
    let architecture = platform.map(|p| p.architecture.clone()).unwrap_or(host.architecture.clone());
    let os = platform.map(|p| p.os.clone()).filter(|os| !os.is_empty()).unwrap_or(host.os.clone());
    let variant = platform.map(|p| p.variant.clone()).unwrap_or(host.variant.clone());
    let source = if options.url.is_empty() { "-" } else { options.url.as_str() };
    let comment = if options.message.is_empty() { format!("Imported from {source}") } else { options.message.clone() };
    let mut config = json!({
        "architecture": architecture,
        "os": os,
        "created": created,
        "config": Value::Object(run_config(&options.changes)?),
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id.as_str()] },
        "history": [{ "created": created, "created_by": "", "comment": comment }],
    });
    if !variant.is_empty() {
        config["variant"] = variant.into();
    }
    if !options.message.is_empty() {
        config["comment"] = options.message.clone().into();
    }
    Ok(config)
}

pub async fn import(
    state: Arc<State>,
    namespace: Namespace,
    options: ImportOptions,
    input: ByteStream,
    progress: ProgressSender,
) -> Result<()> {
    let lease = state.create_ephemeral_lease(&namespace, "import").await?;
    let result = run(&state, &namespace, &lease, &options, input, &progress).await;
    let _ = state.db.delete_lease(&namespace, &lease);
    let _ = state.db.flush().await;
    if result.is_err()
        && let Err(err) = state.collect_garbage().await
    {
        tracing::warn!(error = %err, "cleaning up after a failed import");
    }
    result
}

async fn run(
    state: &Arc<State>,
    namespace: &Namespace,
    lease: &str,
    options: &ImportOptions,
    input: ByteStream,
    progress: &ProgressSender,
) -> Result<()> {
    let protect = |content: &[&str], snapshots: &[&str]| {
        state.db.update_lease(namespace, lease, |lease| {
            lease.content.extend(content.iter().map(|d| d.to_string()));
            lease.snapshots.extend(snapshots.iter().map(|s| s.to_string()));
        })
    };
    let input = if options.url.is_empty() { input } else { fetch(&options.url).await? };
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(input));
    let ingest = format!("import-{}", crate::content::store::unique_suffix());
    let layer = crate::layer::store_gzip_layer(state, Box::new(reader), &ingest).await?;
    protect(&[layer.digest.as_str()], &[])?;

    let created = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let config = serde_json::to_vec(&image_config(options, &layer, &created)?)
        .map_err(|e| Error::Internal(format!("encoding the image config: {e}")))?;
    let config_digest = state.content.write_blob(&config, None).await?;
    protect(&[config_digest.as_str()], &[])?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest.as_str(), "size": config.len() },
        "layers": [{ "mediaType": layer.media_type, "digest": layer.digest.as_str(), "size": layer.size }],
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(format!("encoding the manifest: {e}")))?;
    let manifest_digest = state.content.write_blob(&manifest, None).await?;
    protect(&[manifest_digest.as_str()], &[])?;

    // One layer: its chain id is its diff_id.
    let chain_id = layer.diff_id.to_string();
    protect(&[], &[chain_id.as_str()])?;
    unpack(state, namespace, lease, &layer, &chain_id).await?;

    let name = if options.reference.is_empty() {
        crate::images::untagged_name(manifest_digest.as_str())
    } else {
        ImageRef::parse(&options.reference)?.name()
    };
    let now = Utc::now();
    let previous = state.db.image(namespace, &name)?;
    let record = ImageRecord {
        name: name.clone(),
        target: DescriptorRecord {
            media_type: OCI_MANIFEST.into(),
            digest: manifest_digest.to_string(),
            size: manifest.len() as i64,
            ..Default::default()
        },
        labels: Default::default(),
        created_at: previous.map(|p| p.created_at).unwrap_or(now),
        updated_at: now,
    };
    state.db.put_image(namespace, &record)?;
    state.db.flush().await?;
    let shown = if options.reference.is_empty() { String::new() } else { name };
    crate::events::import(state, namespace, &shown, config_digest.as_str()).await;
    let _ = progress
        .send(Ok(ImportProgress { event: Some(import_progress::Event::ImageId(config_digest.to_string())) }))
        .await;
    Ok(())
}

async fn unpack(state: &State, namespace: &Namespace, lease: &str, layer: &LayerBlob, chain_id: &str) -> Result<()> {
    let lock = state.unpack_lock(namespace, chain_id);
    let _guard = lock.lock().await;
    let header = ApplyHeader {
        name: chain_id.to_string(),
        parent: String::new(),
        media_type: layer.media_type.to_string(),
        diff_id: layer.diff_id.to_string(),
        content_digest: layer.digest.to_string(),
        labels: Default::default(),
    };
    match crate::pull::unpack::apply_from_content(state, namespace, lease, header).await {
        Ok(applied) => {
            let size = if applied.size > 0 { applied.size as u64 } else { layer.uncompressed_size };
            state.db.set_layer_size(layer.diff_id.as_str(), size)?;
            Ok(())
        }
        Err(Error::Dependency(status)) if crate::error::is_unimplemented(&status) => {
            // No snapshot service here: the image is stored, unpacked on first use.
            state.db.set_layer_size(layer.diff_id.as_str(), layer.uncompressed_size)?;
            Ok(())
        }
        Err(Error::Dependency(status)) if status.code() == tonic::Code::InvalidArgument => {
            Err(Error::InvalidArgument(format!("the archive is not a usable layer tar: {}", status.message())))
        }
        Err(err) => Err(err),
    }
}

/// The ImportRequest stream after its first (options) message, as bytes.
pub fn data_stream(stream: tonic::Streaming<berth_proto::images::v1::ImportRequest>) -> ByteStream {
    use berth_proto::images::v1::import_request::Payload;
    Box::pin(stream.filter_map(|message| async move {
        match message {
            Ok(request) => match request.payload {
                Some(Payload::Data(data)) => Some(Ok(Bytes::from(data))),
                Some(Payload::Options(_)) => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a second ImportOptions arrived in the middle of the data",
                ))),
                None => None,
            },
            Err(status) => Some(Err(std::io::Error::other(format!("the client stream failed: {}", status.message())))),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn config_carries_changes_history_and_platform() {
        let layer = LayerBlob {
            digest: Digest::of(b"gz"),
            size: 2,
            media_type: crate::layer::OCI_LAYER_GZIP,
            diff_id: Digest::of(b"tar"),
            uncompressed_size: 3,
        };
        let options = ImportOptions {
            changes: vec![r#"CMD ["sh"]"#.into(), "ENV A=1".into()],
            platform: Some(berth_proto::types::v1::Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: "v8".into(),
                os_version: String::new(),
            }),
            ..Default::default()
        };
        let config = image_config(&options, &layer, "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(config["config"]["Cmd"], json!(["sh"]));
        assert_eq!(config["config"]["Env"], json!(["A=1"]));
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["variant"], "v8");
        assert_eq!(config["rootfs"]["diff_ids"], json!([Digest::of(b"tar").as_str()]));
        assert_eq!(config["history"][0]["comment"], "Imported from -");
        let parsed = crate::manifest::parse_config(&serde_json::to_vec(&config).unwrap()).unwrap();
        assert!(parsed.cmd_set);
        assert!(validate(&ImportOptions { reference: "Bad".into(), ..Default::default() }).is_err());
        assert!(validate(&ImportOptions { changes: vec!["RUN x".into()], ..Default::default() }).is_err());
    }
}
