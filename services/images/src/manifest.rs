//! The JSON documents of an image: indexes / manifest lists, manifests (OCI and Docker
//! schema2 share one shape) and the image config. Parsed leniently with serde so that
//! fields other tools add do not break a pull.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::db::{DescriptorRecord, PlatformRecord};
use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// What we ask registries for, preferred first.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformJson {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default, rename = "os.version")]
    pub os_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorJson {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

impl DescriptorJson {
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }

    pub fn platform_record(&self) -> Option<PlatformRecord> {
        self.platform.as_ref().map(|p| PlatformRecord {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone().unwrap_or_default(),
            os_version: p.os_version.clone().unwrap_or_default(),
        })
    }

    pub fn record(&self) -> DescriptorRecord {
        DescriptorRecord {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone(),
            platform: self.platform_record(),
        }
    }
}

/// An index, a manifest list, or an image manifest: told apart by media type, or by
/// which fields are present when the type is missing (OCI allows that).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestJson {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<DescriptorJson>,
    #[serde(default)]
    pub layers: Vec<DescriptorJson>,
    #[serde(default)]
    pub manifests: Vec<DescriptorJson>,
}

#[derive(Debug, Clone)]
pub enum Document {
    Index(Vec<DescriptorJson>),
    Manifest { config: DescriptorJson, layers: Vec<DescriptorJson> },
}

/// Parses a manifest or index; `media_type` is what the registry or descriptor said.
pub fn parse(raw: &[u8], media_type: &str) -> Result<(Document, String)> {
    if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
        return Err(Error::Unsupported(
            "Docker schema 1 manifests are not supported (deprecated since 2017); push the image again with a current tool"
                .into(),
        ));
    }
    let parsed: ManifestJson =
        serde_json::from_slice(raw).map_err(|e| Error::Registry(format!("invalid manifest JSON: {e}")))?;
    if parsed.schema_version != 2 {
        return Err(Error::Unsupported(format!("manifest schema version {} is not supported", parsed.schema_version)));
    }
    let media_type = parsed.media_type.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| media_type.to_string());
    if is_index(&media_type) || (parsed.config.is_none() && !parsed.manifests.is_empty()) {
        let media_type = if is_index(&media_type) { media_type } else { OCI_INDEX.to_string() };
        return Ok((Document::Index(parsed.manifests), media_type));
    }
    let config = parsed.config.ok_or_else(|| Error::Registry("manifest has no config descriptor".into()))?;
    let media_type = if media_type.is_empty() || is_index(&media_type) { OCI_MANIFEST.to_string() } else { media_type };
    Ok((Document::Manifest { config, layers: parsed.layers }, media_type))
}

/// Docker's "config" section of an image config (the fields `run` needs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Value>,
    #[serde(default)]
    pub cmd: Option<Value>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub stop_signal: String,
    #[serde(default)]
    pub healthcheck: Option<Value>,
    #[serde(default)]
    pub shell: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryJson {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigJson {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub docker_version: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<HistoryJson>,
}

/// An image config with its raw JSON (for fields set-vs-absent and for tools).
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub parsed: ImageConfigJson,
    pub raw: Vec<u8>,
    pub diff_ids: Vec<Digest>,
    pub cmd_set: bool,
    pub entrypoint_set: bool,
}

pub fn parse_config(raw: &[u8]) -> Result<ImageConfig> {
    let parsed: ImageConfigJson =
        serde_json::from_slice(raw).map_err(|e| Error::Registry(format!("invalid image config JSON: {e}")))?;
    let diff_ids = parsed.rootfs.diff_ids.iter().map(|d| Digest::parse(d)).collect::<Result<Vec<_>>>()?;
    let value: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let run = value.get("config");
    let has = |key: &str| run.and_then(|c| c.as_object()).is_some_and(|c| c.contains_key(key));
    Ok(ImageConfig { cmd_set: has("Cmd"), entrypoint_set: has("Entrypoint"), parsed, raw: raw.to_vec(), diff_ids })
}

/// Cmd/Entrypoint are arrays, but some old images store a string.
pub fn string_list(value: &Option<Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

pub fn created_time(config: &ImageConfigJson) -> Option<chrono::DateTime<chrono::Utc>> {
    config
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_indexes_from_manifests() {
        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
        let (doc, media_type) = parse(index, "").unwrap();
        assert_eq!(media_type, OCI_INDEX);
        let Document::Index(entries) = doc else { panic!("not an index") };
        assert_eq!(entries[0].platform_record().unwrap().variant, "v8");

        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2},"layers":[]}"#;
        let (doc, media_type) = parse(manifest, OCI_MANIFEST).unwrap();
        assert_eq!(media_type, DOCKER_MANIFEST);
        assert!(matches!(doc, Document::Manifest { .. }));
        assert!(parse(b"{}", DOCKER_SCHEMA1).is_err());
        assert!(parse(br#"{"schemaVersion":1}"#, "").is_err());
    }

    #[test]
    fn config_tracks_set_versus_absent_fields() {
        let raw = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":null,"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":[]},"created":"2024-01-02T03:04:05Z"}"#;
        let config = parse_config(raw).unwrap();
        assert!(config.cmd_set);
        assert!(!config.entrypoint_set);
        assert!(created_time(&config.parsed).is_some());
        assert_eq!(string_list(&Some(Value::String("sh".into()))), vec!["sh"]);
    }
}
