//! From an image record to what it describes: the platform manifest, the config, the
//! layers and their chain ids; and from a user's reference (name, id or id prefix) to
//! image records.

use berth_common::Namespace;

use crate::db::{DescriptorRecord, ImageRecord, PlatformRecord};
use crate::digest::{Digest, chain_ids};
use crate::error::{Error, Result};
use crate::manifest::{self, DescriptorJson, Document, ImageConfig};
use crate::platform;
use crate::reference::ImageRef;
use crate::state::State;

/// An image record resolved down to one platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    pub manifest: DescriptorRecord,
    pub config_descriptor: DescriptorJson,
    pub layers: Vec<DescriptorJson>,
    pub config: ImageConfig,
    pub chain_ids: Vec<Digest>,
}

impl Resolved {
    /// The image id: the config digest.
    pub fn id(&self) -> &str {
        &self.config_descriptor.digest
    }

    /// Every blob this image needs: the target, the platform manifest, config, layers.
    pub fn blobs(&self) -> Vec<String> {
        let mut blobs = vec![self.record.target.digest.clone(), self.manifest.digest.clone()];
        blobs.push(self.config_descriptor.digest.clone());
        blobs.extend(self.layers.iter().map(|l| l.digest.clone()));
        blobs.dedup();
        blobs
    }

    /// Unpacked size when known (from unpacking), else the compressed size.
    pub fn size(&self, state: &State) -> i64 {
        self.layers
            .iter()
            .zip(self.config.diff_ids.iter())
            .map(|(layer, diff_id)| {
                state.db.layer_size(diff_id.as_str()).ok().flatten().map(|s| s as i64).unwrap_or(layer.size)
            })
            .sum()
    }
}

impl State {
    async fn read_document(&self, digest: &str, media_type: &str) -> Result<(Document, String)> {
        let digest = Digest::parse(digest)?;
        let raw = self.content.read_small(&digest).await.map_err(|err| match err {
            Error::NotFound(_) => Error::NotFound(format!("content {digest} of the image is missing; pull it again")),
            other => other,
        })?;
        manifest::parse(&raw, media_type)
    }

    /// Resolves a record to one platform: `wanted`, else the host's; from an index, only
    /// manifests present locally are candidates.
    pub async fn resolve(&self, record: &ImageRecord, wanted: Option<&PlatformRecord>) -> Result<Resolved> {
        let (document, media_type) = self.read_document(&record.target.digest, &record.target.media_type).await?;
        let (manifest_descriptor, config_descriptor, layers) = match document {
            Document::Manifest { config, layers } => {
                let mut descriptor = record.target.clone();
                descriptor.media_type = media_type;
                (descriptor, config, layers)
            }
            Document::Index(entries) => {
                let present: Vec<&DescriptorJson> =
                    entries.iter().filter(|e| e.digest().map(|d| self.content.exists(&d)).unwrap_or(false)).collect();
                let host = platform::host();
                let wanted_platform = wanted.unwrap_or(&host);
                let platforms: Vec<Option<PlatformRecord>> = present.iter().map(|e| e.platform_record()).collect();
                let pick = platform::best(wanted_platform, platforms.iter().map(Option::as_ref));
                let entry = match (pick, wanted) {
                    (Some(i), _) => present[i],
                    // No platform asked for: whatever was pulled serves.
                    (None, None) if !present.is_empty() => present[0],
                    _ => {
                        return Err(Error::NotFound(format!(
                            "image {} has no manifest for platform {} locally",
                            record.name,
                            platform::format(wanted_platform)
                        )));
                    }
                };
                let (document, media_type) = self.read_document(&entry.digest, &entry.media_type).await?;
                let Document::Manifest { config, layers } = document else {
                    return Err(Error::Unsupported(format!("nested index {} is not supported", entry.digest)));
                };
                let mut descriptor = entry.record();
                descriptor.media_type = media_type;
                (descriptor, config, layers)
            }
        };
        let config_digest = config_descriptor.digest()?;
        let raw = self.content.read_small(&config_digest).await?;
        let config = manifest::parse_config(&raw)?;
        let chain_ids = chain_ids(&config.diff_ids);
        Ok(Resolved {
            record: record.clone(),
            manifest: manifest_descriptor,
            config_descriptor,
            layers,
            config,
            chain_ids,
        })
    }

    /// Records a user's reference means: the record of that name; or, for
    /// `repo@sha256:...`, records of that repository with that digest; or, for an id or
    /// unique id prefix, every record of that image.
    pub async fn lookup(&self, namespace: &Namespace, text: &str) -> Result<Lookup> {
        if let Ok(reference) = ImageRef::parse(text) {
            if let Some(record) = self.db.image(namespace, &reference.name())? {
                return Ok(Lookup::Name(Box::new(record)));
            }
            if let Some(digest) = &reference.digest {
                let repository = reference.repository_name();
                for record in self.db.images(namespace)? {
                    let (repo, _, _) = crate::reference::split_name(&record.name);
                    if repo == repository && record.target.digest == digest.as_str() {
                        return Ok(Lookup::Name(Box::new(record)));
                    }
                }
            }
        }
        let prefix = text.strip_prefix("sha256:").unwrap_or(text);
        if !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches: Vec<(String, ImageRecord)> = Vec::new();
            for record in self.db.images(namespace)? {
                let Ok(resolved) = self.resolve(&record, None).await else { continue };
                if resolved.id()["sha256:".len()..].starts_with(&prefix.to_ascii_lowercase()) {
                    matches.push((resolved.id().to_string(), record));
                }
            }
            let mut ids: Vec<&String> = matches.iter().map(|(id, _)| id).collect();
            ids.sort();
            ids.dedup();
            match ids.len() {
                0 => {}
                1 => {
                    return Ok(Lookup::Id(matches.into_iter().map(|(_, r)| r).collect()));
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{text:?} is ambiguous: it matches {} images; give more of the id",
                        ids.len()
                    )));
                }
            }
        }
        Err(Error::NotFound(format!("No such image: {text}")))
    }
}

pub enum Lookup {
    /// A record by its name.
    Name(Box<ImageRecord>),
    /// Every record of the image with this id.
    Id(Vec<ImageRecord>),
}

impl Lookup {
    pub fn first(&self) -> &ImageRecord {
        match self {
            Lookup::Name(record) => record,
            // Never empty: built from at least one match.
            Lookup::Id(records) => &records[0],
        }
    }
}
