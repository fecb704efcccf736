//! Snapshot metadata in `snapshots.db`: `<namespace>/<key>` -> [`Record`] (JSON). The
//! directory of a snapshot is `<root>/snapshots/<id>`; a directory without a record is a
//! leftover of interrupted work that `Cleanup` removes.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use berth_common::Namespace;
use berth_common::store::{ns_key, ns_prefix, open_db};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Open(#[from] berth_common::store::OpenError),
    #[error("snapshot database: {0}")]
    Db(#[from] sled::Error),
    #[error("snapshot database record {key}: {source}")]
    Corrupt { key: String, source: serde_json::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Directory number under `<root>/snapshots`.
    pub id: u64,
    pub kind: Kind,
    /// Key of the committed parent in the same namespace; empty for none.
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// For layers made by Apply: the verified uncompressed digest and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

pub struct Store {
    db: sled::Db,
    snapshots: sled::Tree,
    meta: sled::Tree,
}

const DRIVER_KEY: &[u8] = b"driver";

fn decode(key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(value)
        .map_err(|source| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
}

fn encode(record: &Record) -> Vec<u8> {
    // Serialising a plain struct of strings, maps and numbers cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

impl Store {
    pub fn open(data_root: &Path) -> Result<Store, StoreError> {
        let db = open_db(data_root, "snapshots.db")?;
        let snapshots = db.open_tree("snapshots")?;
        let meta = db.open_tree("meta")?;
        Ok(Store { db, snapshots, meta })
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A fresh directory number (never reused, also across restarts).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()? + 1)
    }

    pub fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        let k = ns_key(ns, key);
        match self.snapshots.get(&k)? {
            Some(value) => Ok(Some(decode(&k, &value)?)),
            None => Ok(None),
        }
    }

    pub fn put(&self, ns: &Namespace, key: &str, record: &Record) -> Result<(), StoreError> {
        self.snapshots.insert(ns_key(ns, key), encode(record))?;
        Ok(())
    }

    pub fn delete(&self, ns: &Namespace, key: &str) -> Result<(), StoreError> {
        self.snapshots.remove(ns_key(ns, key))?;
        Ok(())
    }

    /// Renames `key` to `name` with `record` in one atomic batch.
    pub fn rename(&self, ns: &Namespace, key: &str, name: &str, record: &Record) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(ns_key(ns, key));
        batch.insert(ns_key(ns, name), encode(record));
        self.snapshots.apply_batch(batch)?;
        Ok(())
    }

    /// Every snapshot of `ns`, by key.
    pub fn list(&self, ns: &Namespace) -> Result<Vec<(String, Record)>, StoreError> {
        let prefix = ns_prefix(ns);
        let mut out = Vec::new();
        for item in self.snapshots.scan_prefix(&prefix) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((key, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Directory numbers referenced by any namespace.
    pub fn all_ids(&self) -> Result<HashSet<u64>, StoreError> {
        let mut ids = HashSet::new();
        for item in self.snapshots.iter() {
            let (k, v) = item?;
            ids.insert(decode(&k, &v)?.id);
        }
        Ok(ids)
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    pub fn driver(&self) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get(DRIVER_KEY)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_driver(&self, driver: &str) -> Result<(), StoreError> {
        self.meta.insert(DRIVER_KEY, driver.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, kind: Kind, parent: &str) -> Record {
        Record {
            id,
            kind,
            parent: parent.into(),
            labels: BTreeMap::new(),
            created: Utc::now(),
            updated: Utc::now(),
            diff_id: None,
            size: None,
        }
    }

    #[test]
    fn records_are_per_namespace_and_rename_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Namespace::new("a").unwrap();
        let b = Namespace::new("b").unwrap();
        store.put(&a, "k", &record(1, Kind::Active, "")).unwrap();
        assert!(store.get(&b, "k").unwrap().is_none());
        store.rename(&a, "k", "layer", &record(1, Kind::Committed, "")).unwrap();
        assert!(store.get(&a, "k").unwrap().is_none());
        assert_eq!(store.get(&a, "layer").unwrap().unwrap().kind, Kind::Committed);
        store.put(&b, "x", &record(2, Kind::View, "")).unwrap();
        assert_eq!(store.all_ids().unwrap(), HashSet::from([1, 2]));
        assert_eq!(store.list(&a).unwrap().len(), 1);
        let first = store.next_id().unwrap();
        assert!(store.next_id().unwrap() > first);
    }
}
