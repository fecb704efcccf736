//! The snapshotter's operations, independent of gRPC: prepare, view, commit, remove, stat,
//! update, list, usage, cleanup, and the bookkeeping of in-progress work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_common::Namespace;
use berth_common::events::Publisher;
use berth_proto::events::v1::{Event, SnapshotCommit, SnapshotPrepare, SnapshotRemove, event::Payload};
use berth_proto::types::v1::Mount;
use chrono::Utc;

use crate::driver::{Driver, Layout};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{Kind, Record, Store};
use crate::tree::{self, Tree};

pub struct Core {
    pub store: Store,
    pub layout: Layout,
    pub fallback_reason: Option<String>,
    publisher: Option<Publisher>,
    /// Serialises check-then-write sequences on the metadata.
    write_lock: tokio::sync::Mutex<()>,
    /// Directories being filled right now; Cleanup leaves them alone.
    busy: Mutex<HashSet<u64>>,
    /// One lock per (namespace, name) being applied, so the same layer unpacks once.
    applying: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

/// Marks a directory id busy until dropped.
pub struct BusyGuard<'a> {
    core: &'a Core,
    pub id: u64,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.core.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("a snapshot key is required".into()));
    }
    if key.len() > 4096 || key.contains('\0') {
        return Err(Error::InvalidArgument(format!("invalid snapshot key {key:?}")));
    }
    Ok(())
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}

impl Core {
    pub fn new(store: Store, layout: Layout, fallback_reason: Option<String>, publisher: Option<Publisher>) -> Core {
        Core {
            store,
            layout,
            fallback_reason,
            publisher,
            write_lock: tokio::sync::Mutex::new(()),
            busy: Mutex::default(),
            applying: Mutex::default(),
        }
    }

    pub fn driver(&self) -> Driver {
        self.layout.driver
    }

    pub fn busy(&self, id: u64) -> BusyGuard<'_> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        BusyGuard { core: self, id }
    }

    pub fn get(&self, ns: &Namespace, key: &str) -> Result<Record> {
        validate_key(key)?;
        self.store.get(ns, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key} does not exist")))
    }

    /// Directory ids of `parent` and its ancestors, top-first.
    pub fn chain(&self, ns: &Namespace, parent: &str) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut next = parent.to_string();
        while !next.is_empty() {
            let record = self
                .store
                .get(ns, &next)?
                .ok_or_else(|| Error::NotFound(format!("parent snapshot {next} does not exist")))?;
            if record.kind != Kind::Committed {
                return Err(Error::FailedPrecondition(format!(
                    "parent snapshot {next} is not committed; commit it before building on it"
                )));
            }
            ids.push(record.id);
            if ids.len() > 4096 {
                return Err(Error::Internal(format!("snapshot {parent} has a parent cycle")));
            }
            next = record.parent;
        }
        Ok(ids)
    }

    pub async fn publish(&self, ns: &Namespace, topic: &str, action: &str, actor: &str, payload: Payload) {
        if let Some(publisher) = &self.publisher {
            let event = Event {
                r#type: "snapshot".into(),
                action: action.into(),
                actor_id: actor.into(),
                attributes: BTreeMap::from([("driver".to_string(), self.driver().name().to_string())])
                    .into_iter()
                    .collect(),
                payload: Some(payload),
            };
            publisher.publish(ns, topic, event).await;
        }
    }

    /// Prepare (`Kind::Active`) or View (`Kind::View`).
    pub async fn prepare(
        &self,
        ns: &Namespace,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        validate_key(key)?;
        let _write = self.write_lock.lock().await;
        if self.store.get(ns, key)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {key} already exists")));
        }
        let chain = self.chain(ns, parent)?;
        let id = self.store.next_id()?;
        // Checked before anything is created: a chain too long to mount is refused here.
        let mounts = self.layout.mounts(kind, id, &chain)?;
        let _busy = self.busy(id);
        let layout = self.layout.clone();
        let copy_from =
            (self.driver() == Driver::Native && kind == Kind::Active).then(|| chain.first().copied()).flatten();
        let created = blocking(move || create_dirs(&layout, id, kind, copy_from)).await;
        if let Err(err) = created {
            let _ = std::fs::remove_dir_all(self.layout.dir(id));
            return Err(err);
        }
        let now = Utc::now();
        let record = Record {
            id,
            kind,
            parent: parent.to_string(),
            labels,
            created: now,
            updated: now,
            diff_id: None,
            size: None,
        };
        self.store.put(ns, key, &record)?;
        self.store.flush().await?;
        drop(_write);
        let payload = Payload::SnapshotPrepare(SnapshotPrepare { key: key.into(), parent: parent.into() });
        self.publish(ns, "/snapshots/prepare", "prepare", key, payload).await;
        Ok(mounts)
    }

    pub fn mounts(&self, ns: &Namespace, key: &str) -> Result<Vec<Mount>> {
        let record = self.get(ns, key)?;
        let chain = self.chain(ns, &record.parent)?;
        self.layout.mounts(record.kind, record.id, &chain)
    }

    pub async fn commit(&self, ns: &Namespace, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        validate_key(name)?;
        let _write = self.write_lock.lock().await;
        let record = self.get(ns, key)?;
        if record.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key} is not active; only active snapshots can be committed"
            )));
        }
        if self.store.get(ns, name)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {name} already exists")));
        }
        let mut committed = record.clone();
        committed.kind = Kind::Committed;
        committed.updated = Utc::now();
        if !labels.is_empty() {
            committed.labels = labels;
        }
        self.store.rename(ns, key, name, &committed)?;
        self.store.flush().await?;
        drop(_write);
        // The work directory is only needed while the layer is an overlay upper.
        let _ = std::fs::remove_dir_all(self.layout.work(record.id));
        let payload = Payload::SnapshotCommit(SnapshotCommit { key: key.into(), name: name.into() });
        self.publish(ns, "/snapshots/commit", "commit", name, payload).await;
        Ok(())
    }

    pub async fn remove(&self, ns: &Namespace, key: &str) -> Result<()> {
        let _write = self.write_lock.lock().await;
        let record = self.get(ns, key)?;
        let children: Vec<String> =
            self.store.list(ns)?.into_iter().filter(|(_, r)| r.parent == key).map(|(k, _)| k).collect();
        if let Some(first) = children.first() {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key} is in use by {} other snapshot(s) (e.g. {first}); remove those first",
                children.len()
            )));
        }
        // Record first: a crash after this leaves only an unreferenced directory for Cleanup.
        self.store.delete(ns, key)?;
        self.store.flush().await?;
        drop(_write);
        let dir = self.layout.dir(record.id);
        blocking(move || fsutil::remove_tree(&dir).map_err(Error::io("removing the snapshot directory"))).await?;
        let payload = Payload::SnapshotRemove(SnapshotRemove { key: key.into() });
        self.publish(ns, "/snapshots/remove", "remove", key, payload).await;
        Ok(())
    }

    pub async fn update_labels(&self, ns: &Namespace, key: &str, labels: BTreeMap<String, String>) -> Result<Record> {
        let _write = self.write_lock.lock().await;
        let mut record = self.get(ns, key)?;
        record.labels = labels;
        record.updated = Utc::now();
        self.store.put(ns, key, &record)?;
        self.store.flush().await?;
        Ok(record)
    }

    pub fn list(&self, ns: &Namespace, filters: &[String]) -> Result<Vec<(String, Record)>> {
        let filters = filters.iter().map(|f| Filter::parse(f)).collect::<Result<Vec<_>>>()?;
        let mut out: Vec<(String, Record)> =
            self.store.list(ns)?.into_iter().filter(|(key, r)| filters.iter().all(|f| f.matches(key, r))).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The directories of `key`'s tree, top-first (see [`Layout::tree_dirs`]).
    pub fn tree_dirs_of(&self, ns: &Namespace, key: &str) -> Result<(Record, Vec<PathBuf>, Vec<u64>)> {
        let record = self.get(ns, key)?;
        let chain = self.chain(ns, &record.parent)?;
        let dirs = self.layout.tree_dirs(record.kind, record.id, &chain);
        Ok((record, dirs, chain))
    }

    pub async fn usage(&self, ns: &Namespace, key: &str) -> Result<(i64, i64)> {
        let record = self.get(ns, key)?;
        let fs = self.layout.fs(record.id);
        blocking(move || {
            let root = fsutil::open_dir_path(&fs).map_err(Error::io(format!("opening {}", fs.display())))?;
            crate::archive::usage(&root).map_err(Error::io("measuring the snapshot"))
        })
        .await
    }

    /// Removes snapshot directories no record references (left by a crash in the middle
    /// of Prepare, Apply or Remove) and probe leftovers. Returns (count, bytes).
    pub async fn cleanup(&self) -> Result<(u64, u64)> {
        let _write = self.write_lock.lock().await;
        let referenced = self.store.all_ids()?;
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let root = self.layout.root.clone();
        blocking(move || {
            let mut removed = 0;
            let mut bytes = 0;
            let entries = std::fs::read_dir(&root).map_err(Error::io(format!("listing {}", root.display())))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = match name.parse::<u64>() {
                    Ok(id) => !referenced.contains(&id) && !busy.contains(&id),
                    Err(_) => name.starts_with("probe-"),
                };
                if !stale {
                    continue;
                }
                let path = entry.path();
                if let Ok(fd) = fsutil::open_dir_path(&path)
                    && let Ok((size, _)) = crate::archive::usage(&fd)
                {
                    bytes += size.max(0) as u64;
                }
                fsutil::remove_tree(&path).map_err(Error::io(format!("removing {}", path.display())))?;
                tracing::info!(path = %path.display(), "removed leftover snapshot directory");
                removed += 1;
            }
            Ok((removed, bytes))
        })
        .await
    }

    /// The per-name lock for Apply.
    pub fn apply_lock(&self, ns: &Namespace, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(berth_common::store::ns_key(ns, name)).or_default().clone()
    }

    /// Records a layer made by Apply in directory `id` as committed snapshot `name`.
    pub async fn commit_applied(
        &self,
        ns: &Namespace,
        name: &str,
        parent: &str,
        id: u64,
        record: Record,
    ) -> Result<()> {
        let _write = self.write_lock.lock().await;
        if self.store.get(ns, name)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {name} already exists")));
        }
        // The parent may have been removed while we unpacked.
        self.chain(ns, parent)?;
        debug_assert_eq!(record.id, id);
        self.store.put(ns, name, &record)?;
        self.store.flush().await?;
        drop(_write);
        let payload = Payload::SnapshotCommit(SnapshotCommit { key: name.into(), name: name.into() });
        self.publish(ns, "/snapshots/commit", "commit", name, payload).await;
        Ok(())
    }

    /// A [`Tree`] for writing into directory `id` over parents `chain`.
    pub fn writable_tree(&self, id: u64, chain: &[u64]) -> Result<Tree> {
        let open = |path: PathBuf| -> Result<OwnedFd> {
            fsutil::open_dir_path(&path).map_err(Error::io(format!("opening {}", path.display())))
        };
        let upper = open(self.layout.fs(id))?;
        Ok(match self.driver() {
            Driver::Overlay => Tree {
                upper,
                lowers: chain.iter().map(|p| open(self.layout.fs(*p))).collect::<Result<_>>()?,
                layout: tree::Layout::Overlay,
            },
            Driver::Native => Tree { upper, lowers: Vec::new(), layout: tree::Layout::Native },
        })
    }
}

/// Creates `<id>/fs` (and `work` for an overlay active snapshot); a native snapshot starts
/// as a copy of its parent.
pub fn create_dirs(layout: &Layout, id: u64, kind: Kind, copy_from: Option<u64>) -> Result<()> {
    let dir = layout.dir(id);
    std::fs::create_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let fs = layout.fs(id);
    std::fs::create_dir(&fs).map_err(Error::io(format!("creating {}", fs.display())))?;
    if layout.driver == Driver::Overlay && kind == Kind::Active {
        let work = layout.work(id);
        std::fs::create_dir(&work).map_err(Error::io(format!("creating {}", work.display())))?;
    }
    if let Some(parent) = copy_from {
        let src = fsutil::open_dir_path(&layout.fs(parent)).map_err(Error::io("opening the parent snapshot"))?;
        let dst = fsutil::open_dir_path(&fs).map_err(Error::io("opening the new snapshot"))?;
        crate::copy::copy_tree(&src, &dst).map_err(Error::io("copying the parent snapshot"))?;
    }
    Ok(())
}

/// One `List` filter: `parent==NAME`, `kind==committed|active|view`, `label.KEY==VALUE`,
/// `name==KEY`.
enum Filter {
    Parent(String),
    Kind(Kind),
    Label(String, String),
    Name(String),
}

impl Filter {
    fn parse(text: &str) -> Result<Filter> {
        let invalid = || {
            Error::InvalidArgument(format!(
                "invalid filter {text:?}: use parent==NAME, kind==committed|active|view, label.KEY==VALUE or name==KEY"
            ))
        };
        let (field, value) = text.split_once("==").ok_or_else(invalid)?;
        let field = field.trim();
        let value = value.trim().to_string();
        if let Some(label) = field.strip_prefix("label.") {
            return Ok(Filter::Label(label.to_string(), value));
        }
        match field {
            "parent" => Ok(Filter::Parent(value)),
            "name" => Ok(Filter::Name(value)),
            "kind" => Ok(Filter::Kind(match value.as_str() {
                "committed" => Kind::Committed,
                "active" => Kind::Active,
                "view" => Kind::View,
                _ => return Err(invalid()),
            })),
            _ => Err(invalid()),
        }
    }

    fn matches(&self, key: &str, record: &Record) -> bool {
        match self {
            Filter::Parent(parent) => &record.parent == parent,
            Filter::Kind(kind) => record.kind == *kind,
            Filter::Label(k, v) => record.labels.get(k) == Some(v),
            Filter::Name(name) => key == name,
        }
    }
}
