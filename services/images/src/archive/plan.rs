//! From what an archive held to images: `index.json` (OCI layout) names manifests that
//! are already blobs; `manifest.json` (docker-archive) gets an OCI manifest written for
//! each entry.

use std::io::Read;

use serde::Deserialize;
use serde_json::{Value, json};

use berth_common::Namespace;

use super::read::{Contents, normalize};
use crate::db::DescriptorRecord;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{DescriptorJson, OCI_MANIFEST};
use crate::reference::ImageRef;
use crate::state::State;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// An image to create: its target and names (full, normalized).
pub struct Planned {
    pub target: DescriptorRecord,
    pub names: Vec<String>,
}

pub fn parse_json<T: for<'de> Deserialize<'de>>(contents: &Contents, path: &str) -> Result<Option<T>> {
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
pub async fn plan_oci(
    state: &State,
    contents: &Contents,
    index: Value,
    docker: &[ArchiveEntry],
) -> Result<Vec<Planned>> {
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
pub async fn plan_docker(
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
