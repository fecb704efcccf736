//! The service's sled database (`images.db`): image records and content labels per
//! namespace, leases, the namespaces seen, and unpacked layer sizes.
//! Every change that must survive a crash is flushed before it is acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::Namespace;
use berth_common::store::{ns_key, ns_prefix};
use berth_proto::types::v1 as types;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformRecord {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: String,
    #[serde(default)]
    pub os_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorRecord {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<PlatformRecord>,
}

impl From<&DescriptorRecord> for types::Descriptor {
    fn from(d: &DescriptorRecord) -> types::Descriptor {
        types::Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone().into_iter().collect(),
            platform: d.platform.as_ref().map(|p| types::Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
                os_version: p.os_version.clone(),
            }),
        }
    }
}

impl From<&types::Descriptor> for DescriptorRecord {
    fn from(d: &types::Descriptor) -> DescriptorRecord {
        DescriptorRecord {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone().into_iter().collect(),
            platform: d.platform.as_ref().map(|p| PlatformRecord {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
                os_version: p.os_version.clone(),
            }),
        }
    }
}

/// `name -> target`: one record per reference (tag or digest reference).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: DescriptorRecord,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabelsRecord {
    pub labels: BTreeMap<String, String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A lease protects the content, snapshots and ingests listed in it from GC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Owned by work inside this daemon process (a pull): it cannot outlive a restart,
    /// so start-up removes it and the space its interrupted work took is reclaimed.
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub content: BTreeSet<String>,
    #[serde(default)]
    pub snapshots: BTreeSet<String>,
    #[serde(default)]
    pub ingests: BTreeSet<String>,
}

#[derive(Clone)]
pub struct Db {
    db: sled::Db,
    images: sled::Tree,
    labels: sled::Tree,
    leases: sled::Tree,
    namespaces: sled::Tree,
    layer_sizes: sled::Tree,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| Error::Internal(format!("decoding a record: {e}")))
}

impl Db {
    pub fn new(db: sled::Db) -> Result<Db> {
        Ok(Db {
            images: db.open_tree("images")?,
            labels: db.open_tree("content_labels")?,
            leases: db.open_tree("leases")?,
            namespaces: db.open_tree("namespaces")?,
            layer_sizes: db.open_tree("layer_sizes")?,
            db,
        })
    }

    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Remembers a namespace so GC visits its snapshots.
    pub fn touch_namespace(&self, namespace: &Namespace) -> Result<()> {
        if !self.namespaces.contains_key(namespace.as_str())? {
            self.namespaces.insert(namespace.as_str(), &[])?;
        }
        Ok(())
    }

    pub fn namespaces(&self) -> Result<Vec<Namespace>> {
        let mut out = Vec::new();
        for entry in self.namespaces.iter() {
            let (key, _) = entry?;
            if let Ok(namespace) = Namespace::new(&String::from_utf8_lossy(&key)) {
                out.push(namespace);
            }
        }
        Ok(out)
    }

    // ---- images ----

    pub fn image(&self, namespace: &Namespace, name: &str) -> Result<Option<ImageRecord>> {
        self.images.get(ns_key(namespace, name))?.map(|raw| decode(&raw)).transpose()
    }

    pub fn images(&self, namespace: &Namespace) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for entry in self.images.scan_prefix(ns_prefix(namespace)) {
            let (_, raw) = entry?;
            out.push(decode(&raw)?);
        }
        Ok(out)
    }

    pub fn put_image(&self, namespace: &Namespace, record: &ImageRecord) -> Result<()> {
        self.touch_namespace(namespace)?;
        self.images.insert(ns_key(namespace, &record.name), encode(record)?)?;
        Ok(())
    }

    pub fn delete_image(&self, namespace: &Namespace, name: &str) -> Result<bool> {
        Ok(self.images.remove(ns_key(namespace, name))?.is_some())
    }

    // ---- content labels ----

    pub fn labels(&self, namespace: &Namespace, digest: &str) -> Result<LabelsRecord> {
        Ok(self.labels.get(ns_key(namespace, digest))?.map(|raw| decode(&raw)).transpose()?.unwrap_or_default())
    }

    pub fn set_labels(&self, namespace: &Namespace, digest: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let record = LabelsRecord { labels, updated_at: Some(Utc::now()) };
        self.labels.insert(ns_key(namespace, digest), encode(&record)?)?;
        Ok(())
    }

    /// Removes the labels of `digest` in every namespace.
    pub fn forget_content(&self, digest: &str) -> Result<()> {
        let suffix = format!("/{digest}");
        for entry in self.labels.iter() {
            let (key, _) = entry?;
            if key.ends_with(suffix.as_bytes()) {
                self.labels.remove(key)?;
            }
        }
        Ok(())
    }

    // ---- layer sizes (uncompressed bytes by diff id, from unpacking) ----

    pub fn layer_size(&self, diff_id: &str) -> Result<Option<u64>> {
        Ok(self.layer_sizes.get(diff_id)?.and_then(|raw| raw.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    pub fn set_layer_size(&self, diff_id: &str, size: u64) -> Result<()> {
        self.layer_sizes.insert(diff_id, &size.to_be_bytes())?;
        Ok(())
    }

    // ---- leases ----

    pub fn lease(&self, namespace: &Namespace, id: &str) -> Result<Option<LeaseRecord>> {
        self.leases.get(ns_key(namespace, id))?.map(|raw| decode(&raw)).transpose()
    }

    pub fn put_lease(&self, namespace: &Namespace, lease: &LeaseRecord) -> Result<()> {
        self.touch_namespace(namespace)?;
        self.leases.insert(ns_key(namespace, &lease.id), encode(lease)?)?;
        Ok(())
    }

    pub fn delete_lease(&self, namespace: &Namespace, id: &str) -> Result<bool> {
        Ok(self.leases.remove(ns_key(namespace, id))?.is_some())
    }

    /// Applies `change` to a lease atomically; NotFound when it does not exist.
    pub fn update_lease(&self, namespace: &Namespace, id: &str, change: impl Fn(&mut LeaseRecord)) -> Result<()> {
        let key = ns_key(namespace, id);
        let mut missing = false;
        self.leases.fetch_and_update(&key, |old| {
            let Some(raw) = old else {
                missing = true;
                return None;
            };
            match serde_json::from_slice::<LeaseRecord>(raw) {
                Ok(mut lease) => {
                    change(&mut lease);
                    serde_json::to_vec(&lease).ok().or_else(|| Some(raw.to_vec()))
                }
                Err(_) => Some(raw.to_vec()),
            }
        })?;
        if missing {
            return Err(Error::NotFound(format!("lease {id:?} not found")));
        }
        Ok(())
    }

    /// Every lease with its namespace.
    pub fn all_leases(&self) -> Result<Vec<(Namespace, LeaseRecord)>> {
        let mut out = Vec::new();
        for entry in self.leases.iter() {
            let (key, raw) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some((namespace, _)) = key.split_once('/') else { continue };
            let Ok(namespace) = Namespace::new(namespace) else { continue };
            out.push((namespace, decode(&raw)?));
        }
        Ok(out)
    }
}
