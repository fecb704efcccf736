//! Garbage collection: blobs no image and no live lease references are removed, as are
//! ingests no lease protects, and committed layer snapshots (named by chain id) that no
//! image and no lease references. Snapshots with children (e.g. a container's rootfs)
//! are refused by the snapshot service and so stay.

use std::collections::{HashMap, HashSet};

use berth_common::Namespace;
use berth_proto::snapshots::v1::{CleanupRequest, Kind, ListSnapshotsRequest, RemoveSnapshotRequest};
use chrono::Utc;
use futures::StreamExt;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::state::State;

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
    pub bytes_reclaimed: u64,
}

/// What images and leases keep alive.
#[derive(Default)]
struct Roots {
    content: HashSet<String>,
    ingests: HashSet<String>,
    /// Chain ids per namespace.
    snapshots: HashMap<Namespace, HashSet<String>>,
}

impl State {
    /// Deletes the leases of work that died with a previous daemon process.
    pub fn drop_ephemeral_leases(&self) -> Result<usize> {
        let mut dropped = 0;
        for (namespace, lease) in self.db.all_leases()? {
            if lease.ephemeral {
                self.db.delete_lease(&namespace, &lease.id)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    async fn roots(&self) -> Result<Roots> {
        let mut roots = Roots::default();
        let now = Utc::now();
        for (namespace, lease) in self.db.all_leases()? {
            if lease.expires_at < now {
                self.db.delete_lease(&namespace, &lease.id)?;
                continue;
            }
            roots.content.extend(lease.content.iter().cloned());
            roots.ingests.extend(lease.ingests.iter().cloned());
            roots.snapshots.entry(namespace).or_default().extend(lease.snapshots.iter().cloned());
        }
        for namespace in self.db.namespaces()? {
            for record in self.db.images(&namespace)? {
                roots.content.insert(record.target.digest.clone());
                self.image_roots(&namespace, &record, &mut roots).await;
            }
        }
        Ok(roots)
    }

    /// Adds everything an image record references: for an index, every platform
    /// manifest present locally (each may have been pulled for another platform).
    async fn image_roots(&self, namespace: &Namespace, record: &crate::db::ImageRecord, roots: &mut Roots) {
        let Ok(target) = Digest::parse(&record.target.digest) else { return };
        let Ok(raw) = self.content.read_small(&target).await else { return };
        let Ok((document, _)) = crate::manifest::parse(&raw, &record.target.media_type) else { return };
        let manifests: Vec<crate::manifest::DescriptorJson> = match document {
            crate::manifest::Document::Index(entries) => entries,
            crate::manifest::Document::Manifest { .. } => {
                let mut only = record.clone();
                only.target.digest = target.to_string();
                if let Ok(resolved) = self.resolve(&only, None).await {
                    roots.content.extend(resolved.blobs());
                    roots
                        .snapshots
                        .entry(namespace.clone())
                        .or_default()
                        .extend(resolved.chain_ids.iter().map(|c| c.to_string()));
                }
                return;
            }
        };
        for entry in manifests {
            let Ok(digest) = entry.digest() else { continue };
            if !self.content.exists(&digest) {
                continue;
            }
            let mut one = record.clone();
            one.target = entry.record();
            if let Ok(resolved) = self.resolve(&one, None).await {
                roots.content.extend(resolved.blobs());
                roots
                    .snapshots
                    .entry(namespace.clone())
                    .or_default()
                    .extend(resolved.chain_ids.iter().map(|c| c.to_string()));
            }
        }
    }

    /// Removes unreferenced blobs and unprotected ingests (no other service needed).
    pub async fn collect_content(&self) -> Result<Stats> {
        let _guard = self.gc_lock.lock().await;
        self.collect_content_locked().await
    }

    async fn collect_content_locked(&self) -> Result<Stats> {
        let roots = self.roots().await?;
        let mut stats = Stats::default();
        for blob in self.content.list()? {
            if roots.content.contains(blob.digest.as_str()) {
                continue;
            }
            let freed = self.content.delete(&blob.digest)?;
            self.db.forget_content(blob.digest.as_str())?;
            stats.blobs_removed += 1;
            stats.bytes_reclaimed += freed;
        }
        stats.bytes_reclaimed += self.content.remove_ingests_except(&roots.ingests);
        self.db.flush().await?;
        if stats.blobs_removed > 0 {
            tracing::info!(blobs = stats.blobs_removed, bytes = stats.bytes_reclaimed, "removed unreferenced content");
        }
        Ok(stats)
    }

    /// Full GC: content, then layer snapshots in every namespace this service has seen.
    /// A snapshot service that is not there (Unimplemented) is skipped.
    pub async fn collect_garbage(&self) -> Result<Stats> {
        let _guard = self.gc_lock.lock().await;
        let mut stats = self.collect_content_locked().await?;
        let roots = self.roots().await?;
        let empty = HashSet::new();
        for namespace in self.db.namespaces()? {
            let keep = roots.snapshots.get(&namespace).unwrap_or(&empty);
            match self.collect_snapshots(&namespace, keep).await {
                Ok((removed, bytes)) => {
                    stats.snapshots_removed += removed;
                    stats.bytes_reclaimed += bytes;
                }
                Err(Error::Dependency(status)) if crate::error::is_unimplemented(&status) => {
                    tracing::debug!("snapshot GC skipped: the snapshot service is not implemented");
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(stats)
    }

    async fn collect_snapshots(&self, namespace: &Namespace, keep: &HashSet<String>) -> Result<(u64, u64)> {
        let mut client = self.snapshots()?;
        let dependency = |status| Error::Dependency(berth_common::error::from_dependency("snapshots", status));
        let request = berth_common::namespace::request(namespace, ListSnapshotsRequest { filters: Vec::new() });
        let mut stream = client.list(request).await.map_err(dependency)?.into_inner();
        let mut parents: HashMap<String, String> = HashMap::new();
        let mut candidates = Vec::new();
        while let Some(batch) = stream.next().await {
            for info in batch.map_err(dependency)?.info {
                parents.insert(info.name.clone(), info.parent.clone());
                // Only layer snapshots this service names (chain ids) are its to collect.
                if info.kind == Kind::Committed as i32 && info.name.starts_with("sha256:") && !keep.contains(&info.name)
                {
                    candidates.push(info.name);
                }
            }
        }
        // Deepest first, so children go before their parents.
        let depth = |name: &String| {
            let mut depth = 0;
            let mut current = name.clone();
            while let Some(parent) = parents.get(&current).filter(|p| !p.is_empty()) {
                depth += 1;
                current = parent.clone();
                if depth > 10_000 {
                    break;
                }
            }
            depth
        };
        candidates.sort_by_key(|name| std::cmp::Reverse(depth(name)));
        let mut removed = 0;
        for name in candidates {
            let request = berth_common::namespace::request(namespace, RemoveSnapshotRequest { key: name.clone() });
            match client.remove(request).await {
                Ok(_) => removed += 1,
                // In use (has children, e.g. a container) or already gone: not ours to force.
                Err(status) if matches!(status.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {}
                Err(status) => return Err(dependency(status)),
            }
        }
        let request = berth_common::namespace::request(namespace, CleanupRequest {});
        let bytes = match client.cleanup(request).await {
            Ok(response) => response.into_inner().bytes_reclaimed,
            Err(status) if status.code() == tonic::Code::Unimplemented => 0,
            Err(status) => return Err(dependency(status)),
        };
        if removed > 0 {
            tracing::info!(%namespace, snapshots = removed, "removed unreferenced layer snapshots");
        }
        Ok((removed, bytes))
    }
}
