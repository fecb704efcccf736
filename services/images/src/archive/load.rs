//! `Load`: reads a docker-archive (`manifest.json`; Docker's and skopeo's layouts, legacy
//! `<id>/layer.tar` with symlinks too) or an OCI image layout tar (`index.json`), either
//! optionally gzip/zstd-compressed, in one streaming pass: every file other than the
//! small JSON documents goes straight into the content store (blobs under
//! `blobs/sha256/` verified against their names). Then the images are assembled (a
//! docker-archive gets an OCI manifest written for it), unpacked into the snapshot
//! service, and their records written; a lease covers all of it until then.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use berth_common::Namespace;
use berth_proto::images::v1::{LoadOptions, LoadProgress, load_progress};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::content::store::SMALL_BLOB_LIMIT;
use crate::db::{DescriptorRecord, ImageRecord, PlatformRecord};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::import::ByteStream;
use crate::manifest::{DescriptorJson, OCI_MANIFEST};
use crate::reference::ImageRef;
use crate::state::State;

const CHUNK: usize = 1024 * 1024;

pub type ProgressSender = mpsc::Sender<Result<LoadProgress, tonic::Status>>;

/// What one pass over the tar found.
#[derive(Default)]
struct Contents {
    /// Small JSON documents by path.
    documents: HashMap<String, Vec<u8>>,
    /// Every other regular file, stored as a blob: path -> (digest, size).
    blobs: HashMap<String, (Digest, u64)>,
    /// Symlinks and hard links: path -> target path.
    links: HashMap<String, String>,
}

impl Contents {
    fn blob(&self, path: &str) -> Option<&(Digest, u64)> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(blob) = self.blobs.get(&path) {
                return Some(blob);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }
}

/// "./a/b" and "/a/b" -> "a/b".
fn normalize(path: &str) -> String {
    path.trim_start_matches("./").trim_start_matches('/').to_string()
}

/// A link target relative to the link's own directory, resolved to an archive path.
fn resolve_link(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalize(target);
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn is_document(path: &str) -> bool {
    !path.starts_with("blobs/")
        && (path.ends_with(".json") || matches!(path, "repositories" | "oci-layout" | "index.json" | "manifest.json"))
}

/// Per-layer metadata of the legacy format: nothing needs it.
fn is_legacy_metadata(path: &str) -> bool {
    path.ends_with("/json") || path.ends_with("/VERSION")
}

/// The content store from a blocking thread.
struct BlobWriter<'a> {
    handle: &'a tokio::runtime::Handle,
    state: &'a State,
    namespace: &'a Namespace,
    lease: &'a str,
}

impl BlobWriter<'_> {
    fn store(&self, reader: &mut dyn Read, expected: Option<Digest>, size: u64) -> Result<Digest> {
        if let Some(digest) = &expected
            && self.state.content.exists(digest)
        {
            self.protect(digest)?;
            return Ok(digest.clone());
        }
        let ingest = format!("load-{}", crate::content::store::unique_suffix());
        let result = self.write(&ingest, reader, expected, size);
        if result.is_err() {
            let _ = self.state.content.abort(&ingest);
        }
        let digest = result?;
        self.protect(&digest)?;
        Ok(digest)
    }

    fn write(&self, ingest: &str, reader: &mut dyn Read, expected: Option<Digest>, size: u64) -> Result<Digest> {
        let mut writer = self.handle.block_on(self.state.content.writer(ingest, expected.clone(), Some(size)))?;
        self.handle.block_on(writer.truncate(0))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| Error::io("reading the archive", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            self.handle.block_on(writer.write(&buffer[..n]))?;
        }
        let digest = Digest::from_hasher(hasher);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::DigestMismatch {
                what: format!("archive blob {expected}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        self.handle.block_on(writer.commit(Some(size), &digest))
    }

    fn protect(&self, digest: &Digest) -> Result<()> {
        self.state.db.update_lease(self.namespace, self.lease, |lease| {
            lease.content.insert(digest.to_string());
        })
    }
}

/// One pass over the (possibly compressed) tar.
fn read_archive(writer: &BlobWriter<'_>, input: Box<dyn Read + Send>) -> Result<Contents> {
    let input = crate::layer::decompressed(input)?;
    let mut archive = tar::Archive::new(input);
    let mut contents = Contents::default();
    let bad = |e| Error::InvalidArgument(format!("not a readable tar archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = normalize(&entry.path().map_err(bad)?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(bad)? {
                let target = target.to_string_lossy().into_owned();
                let resolved = if kind.is_hard_link() { normalize(&target) } else { resolve_link(&path, &target) };
                contents.links.insert(path, resolved);
            }
            continue;
        }
        if !kind.is_file() || path.is_empty() || is_legacy_metadata(&path) {
            continue;
        }
        let size = entry.size();
        if is_document(&path) && size <= SMALL_BLOB_LIMIT {
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(|e| Error::io(format!("reading {path}"), e))?;
            contents.documents.insert(path, data);
            continue;
        }
        let expected = match path.strip_prefix("blobs/") {
            Some(rest) => match rest.split_once('/') {
                Some(("sha256", hex)) => Some(Digest::parse(&format!("sha256:{hex}"))?),
                _ => return Err(Error::Unsupported(format!("{path}: only sha256 blobs are supported"))),
            },
            None => None,
        };
        let digest = writer.store(&mut entry, expected, size)?;
        contents.blobs.insert(path, (digest, size));
    }
    Ok(contents)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// An image to create: its target and names (full, normalized).
struct Planned {
    target: DescriptorRecord,
    names: Vec<String>,
}

fn parse_json<T: for<'de> Deserialize<'de>>(contents: &Contents, path: &str) -> Result<Option<T>> {
    contents
        .documents
        .get(path)
        .map(|raw| serde_json::from_slice(raw).map_err(|e| Error::InvalidArgument(format!("invalid {path}: {e}"))))
        .transpose()
}

fn normalized_names(names: &[String]) -> Result<Vec<String>> {
    names.iter().map(|n| ImageRef::parse(n).map(|r| r.name())).collect()
}

/// The layer media type of a stored blob, from its first bytes.
fn layer_media_type(state: &State, digest: &Digest) -> Result<&'static str> {
    let mut magic = [0u8; 8];
    let mut file =
        std::fs::File::open(state.content.blob_path(digest)).map_err(|e| Error::io(format!("opening {digest}"), e))?;
    let n = file.read(&mut magic).map_err(|e| Error::io(format!("reading {digest}"), e))?;
    Ok(match crate::layer::detect(&magic[..n]) {
        Ok(crate::layer::Compression::Gzip) => crate::layer::OCI_LAYER_GZIP,
        Ok(crate::layer::Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    })
}

/// Images from `index.json` (OCI layout), named by their annotations, else by the
/// docker-archive entry with the same config.
async fn plan_oci(state: &State, contents: &Contents, index: Value, docker: &[ArchiveEntry]) -> Result<Vec<Planned>> {
    let entries: Vec<DescriptorJson> = serde_json::from_value(index.get("manifests").cloned().unwrap_or(json!([])))
        .map_err(|e| Error::InvalidArgument(format!("invalid index.json: {e}")))?;
    let mut planned: Vec<Planned> = Vec::new();
    for entry in entries {
        let digest = entry.digest()?;
        if !state.content.exists(&digest) {
            return Err(Error::InvalidArgument(format!(
                "index.json names {digest}, which the archive does not contain"
            )));
        }
        let mut names = Vec::new();
        if let Some(name) = entry.annotations.get("io.containerd.image.name") {
            names.push(name.clone());
        } else if let Some(name) = entry.annotations.get("org.opencontainers.image.ref.name")
            && (name.contains(':') || name.contains('/'))
        {
            names.push(name.clone());
        } else if !docker.is_empty() {
            // Docker's own archives carry the tags in manifest.json only.
            let raw = state.content.read_small(&digest).await?;
            if let Ok((crate::manifest::Document::Manifest { config, .. }, _)) =
                crate::manifest::parse(&raw, &entry.media_type)
                && let Some(matching) =
                    docker.iter().find(|d| contents.blob(&d.config).is_some_and(|(c, _)| c.as_str() == config.digest))
            {
                names.extend(matching.repo_tags.clone().unwrap_or_default());
            }
        }
        let names = normalized_names(&names)?;
        match planned.iter_mut().find(|p| p.target.digest == entry.digest) {
            Some(existing) => existing.names.extend(names),
            None => planned.push(Planned { target: entry.record(), names }),
        }
    }
    Ok(planned)
}

/// Images from `manifest.json` (docker-archive): an OCI manifest is written for each.
async fn plan_docker(
    state: &State,
    writer_lease: (&Namespace, &str),
    contents: &Contents,
    docker: Vec<ArchiveEntry>,
) -> Result<Vec<Planned>> {
    let (namespace, lease) = writer_lease;
    let mut planned = Vec::new();
    for entry in docker {
        let config_raw = match (contents.blob(&entry.config), contents.documents.get(&normalize(&entry.config))) {
            (Some((digest, _)), _) => state.content.read_small(digest).await?,
            (None, Some(raw)) => raw.clone(),
            (None, None) => {
                return Err(Error::InvalidArgument(format!(
                    "manifest.json names config {}, which the archive does not contain",
                    entry.config
                )));
            }
        };
        let config_digest = state.content.write_blob(&config_raw, None).await?;
        let config = crate::manifest::parse_config(&config_raw)?;
        if config.diff_ids.len() != entry.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "manifest.json lists {} layers for {} but its config has {} diff_ids",
                entry.layers.len(),
                entry.config,
                config.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for path in &entry.layers {
            let (digest, size) = contents.blob(path).ok_or_else(|| {
                Error::InvalidArgument(format!("manifest.json names layer {path}, which the archive does not contain"))
            })?;
            layers.push(
                json!({ "mediaType": layer_media_type(state, digest)?, "digest": digest.as_str(), "size": size }),
            );
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": crate::import::OCI_CONFIG, "digest": config_digest.as_str(), "size": config_raw.len() },
            "layers": layers,
        });
        let raw = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(format!("encoding a manifest: {e}")))?;
        let digest = state.content.write_blob(&raw, None).await?;
        state.db.update_lease(namespace, lease, |l| {
            l.content.insert(digest.to_string());
            l.content.insert(config_digest.to_string());
        })?;
        planned.push(Planned {
            target: DescriptorRecord {
                media_type: OCI_MANIFEST.into(),
                digest: digest.to_string(),
                size: raw.len() as i64,
                ..Default::default()
            },
            names: normalized_names(&entry.repo_tags.unwrap_or_default())?,
        });
    }
    Ok(planned)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_links_resolve_inside_the_archive() {
        assert_eq!(resolve_link("abc/layer.tar", "../def/layer.tar"), "def/layer.tar");
        assert_eq!(resolve_link("abc/layer.tar", "/def/layer.tar"), "def/layer.tar");
        assert_eq!(normalize("./manifest.json"), "manifest.json");
        let mut contents = Contents::default();
        contents.blobs.insert("def/layer.tar".into(), (Digest::of(b"x"), 1));
        contents.links.insert("abc/layer.tar".into(), "def/layer.tar".into());
        assert_eq!(contents.blob("./abc/layer.tar").unwrap().1, 1);
        assert!(is_document("manifest.json") && is_document("abc.json") && !is_document("blobs/sha256/aa"));
    }
}
