//! `Save`: a tar that is both a docker-archive (`manifest.json`, `repositories`) and an OCI
//! image layout (`oci-layout`, `index.json`), sharing one `blobs/sha256/` directory, like
//! `docker save` writes since Docker 25. The small JSON documents come first (so a
//! streaming reader knows the images before the layers), then each blob once, read from
//! the content store and written in chunks: nothing is held whole in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use berth_common::Namespace;
use berth_proto::images::v1::{SaveChunk, SaveRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::db::PlatformRecord;
use crate::error::{Error, Result};
use crate::reference::{familiar, split_name};
use crate::resolve::{Lookup, Resolved};
use crate::state::State;

const CHUNK: usize = 1024 * 1024;

pub type ChunkSender = mpsc::Sender<Result<SaveChunk, tonic::Status>>;

/// One image in the archive and the names it is saved under (full names).
struct Saved {
    resolved: Resolved,
    names: Vec<String>,
}

/// The images a request names, one entry per image id (names merged, in request order).
async fn collect(
    state: &State,
    namespace: &Namespace,
    references: &[String],
    platform: Option<&PlatformRecord>,
) -> Result<Vec<Saved>> {
    if references.is_empty() {
        return Err(Error::InvalidArgument("save needs at least one image".into()));
    }
    let mut saved: Vec<Saved> = Vec::new();
    for reference in references {
        let lookup = state.lookup(namespace, reference).await?;
        let resolved = state.resolve(lookup.first(), platform).await?;
        let names: Vec<String> = match &lookup {
            // Saved by id: no names, like docker.
            Lookup::Id(_) => Vec::new(),
            Lookup::Name(record) if split_name(&record.name).1.is_some() => vec![record.name.clone()],
            Lookup::Name(_) => Vec::new(),
        };
        match saved.iter_mut().find(|s| s.resolved.id() == resolved.id()) {
            Some(existing) => {
                for name in names {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
            }
            None => saved.push(Saved { resolved, names }),
        }
    }
    for image in &saved {
        for digest in image.resolved.blobs().iter().skip(1) {
            let digest = crate::digest::Digest::parse(digest)?;
            if !state.content.exists(&digest) {
                return Err(Error::NotFound(format!(
                    "content {digest} of image {} is missing; pull it again",
                    image.resolved.id()
                )));
            }
        }
    }
    Ok(saved)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// "busybox:latest" / "127.0.0.1:5000/app:v1" as docker-archive RepoTags show them.
fn repo_tag(name: &str) -> Option<String> {
    let (repository, tag, _) = split_name(name);
    tag.map(|tag| format!("{}:{tag}", familiar(&repository)))
}

/// manifest.json, index.json, repositories.
fn documents(saved: &[Saved]) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut manifest = Vec::new();
    let mut index = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in saved {
        let layers: Vec<String> = image.resolved.layers.iter().map(|l| blob_path(&l.digest)).collect();
        let repo_tags: Vec<String> = image.names.iter().filter_map(|n| repo_tag(n)).collect();
        manifest.push(json!({
            "Config": blob_path(image.resolved.id()),
            "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
            "Layers": layers,
        }));
        let descriptor = &image.resolved.manifest;
        let entry = |annotations: Value| {
            let mut entry =
                json!({ "mediaType": descriptor.media_type, "digest": descriptor.digest, "size": descriptor.size });
            if !annotations.is_null() {
                entry["annotations"] = annotations;
            }
            entry
        };
        if image.names.is_empty() {
            index.push(entry(Value::Null));
        }
        for name in &image.names {
            let (repository, tag, _) = split_name(name);
            let tag = tag.unwrap_or_else(|| "latest".into());
            index.push(entry(json!({
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            })));
            if let Some(top) = image.resolved.layers.last() {
                repositories
                    .entry(familiar(&repository))
                    .or_default()
                    .insert(tag, top.digest.trim_start_matches("sha256:").to_string());
            }
        }
    }
    let encode = |value: &Value| serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding JSON: {e}")));
    Ok(vec![
        ("oci-layout", encode(&json!({ "imageLayoutVersion": "1.0.0" }))?),
        (
            "index.json",
            encode(&json!({ "schemaVersion": 2, "mediaType": crate::manifest::OCI_INDEX, "manifests": index }))?,
        ),
        ("manifest.json", encode(&Value::Array(manifest))?),
        ("repositories", encode(&json!(repositories))?),
    ])
}

/// A `Write` that sends full chunks to the response stream.
struct Sink {
    tx: ChunkSender,
    buffer: Vec<u8>,
}

impl Sink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(SaveChunk { data })).map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn header(path: &str, size: u64) -> Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).map_err(|e| Error::io(format!("tar path {path}"), e))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

pub async fn save(state: Arc<State>, namespace: Namespace, request: SaveRequest, tx: ChunkSender) -> Result<()> {
    let platform = request.platform.as_ref().filter(|p| !p.architecture.is_empty()).map(|p| {
        crate::platform::normalize(&PlatformRecord {
            os: if p.os.is_empty() { "linux".into() } else { p.os.clone() },
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        })
    });
    let saved = collect(&state, &namespace, &request.references, platform.as_ref()).await?;
    let documents = documents(&saved)?;
    // Each blob once, manifests and configs before layers; the record target only when
    // it is the platform manifest itself (a partially pulled index is not saved).
    let mut blobs: Vec<String> = Vec::new();
    for image in &saved {
        let resolved = &image.resolved;
        let mut own = vec![resolved.manifest.digest.clone(), resolved.config_descriptor.digest.clone()];
        own.extend(resolved.layers.iter().map(|l| l.digest.clone()));
        for digest in own {
            if !blobs.contains(&digest) {
                blobs.push(digest);
            }
        }
    }
    let paths: Vec<(String, std::path::PathBuf)> = blobs
        .iter()
        .map(|d| Ok((blob_path(d), state.content.blob_path(&crate::digest::Digest::parse(d)?))))
        .collect::<Result<_>>()?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut builder = tar::Builder::new(Sink { tx, buffer: Vec::with_capacity(CHUNK) });
        let write_error = |e| Error::io("writing the archive", e);
        for (name, data) in &documents {
            builder.append(&header(name, data.len() as u64)?, &data[..]).map_err(write_error)?;
        }
        for (name, path) in &paths {
            let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let size = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
            builder
                .append(&header(name, size)?, std::io::BufReader::with_capacity(CHUNK, file))
                .map_err(write_error)?;
        }
        let mut sink = builder.into_inner().map_err(write_error)?;
        sink.send().map_err(write_error)
    })
    .await
    .map_err(|e| Error::Internal(format!("save task failed: {e}")))?
}
