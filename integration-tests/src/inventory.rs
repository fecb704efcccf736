//! What a daemon holds, counted from outside: snapshots (over the API), blobs and ingests
//! (on disk), shim and container processes, mounts and network state. Fault tests compare
//! these before and after a crash to prove nothing leaked and nothing half-made is visible.

use std::path::{Path, PathBuf};

use berth_common::Address;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::{Kind, ListSnapshotsRequest};
use futures::StreamExt;

use crate::{Daemon, cleanup};

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Committed blobs in the content store.
pub fn blobs(daemon: &Daemon) -> Vec<PathBuf> {
    files_below(&daemon.root.join("content/blobs"))
}

/// Files of unfinished content writes.
pub fn ingests(daemon: &Daemon) -> Vec<PathBuf> {
    files_below(&daemon.root.join("content/ingest"))
}

/// (name, kind) of every snapshot in the default namespace, asked over the API.
pub fn snapshots(daemon: &Daemon) -> Vec<(String, Kind)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let channel =
            berth_common::client::connect(&Address::Unix(daemon.socket.clone())).await.expect("connecting to berthd");
        let mut stream = SnapshotsClient::new(channel)
            .list(ListSnapshotsRequest { filters: vec![] })
            .await
            .expect("listing snapshots")
            .into_inner();
        let mut out = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.expect("a snapshot list batch");
            out.extend(batch.info.into_iter().map(|i| (i.name, Kind::try_from(i.kind).unwrap_or(Kind::Unspecified))));
        }
        out
    })
}

/// Snapshots that are not committed layers (container rootfs, views, unfinished applies).
pub fn active_snapshots(daemon: &Daemon) -> Vec<String> {
    snapshots(daemon).into_iter().filter(|(_, kind)| *kind != Kind::Committed).map(|(name, _)| name).collect()
}

/// berth-shim processes serving this daemon's containers.
pub fn shims(daemon: &Daemon) -> Vec<i32> {
    let base = daemon.base_dir().display().to_string();
    cleanup::pids_mentioning(&base)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "berth-shim")
        })
        .collect()
}

/// Everything a daemon with no containers must not have left: mounts below its
/// directories (other than `allowed_mounts`), shims, container processes, task bundles,
/// network devices, rules, namespaces and leases.
pub fn leftovers(daemon: &Daemon, allowed_mounts: &[&Path]) -> Vec<String> {
    let mut left: Vec<String> = daemon
        .leftover_mounts()
        .into_iter()
        .filter(|m| !allowed_mounts.iter().any(|a| Path::new(m) == *a))
        .map(|m| format!("mount {m}"))
        .collect();
    left.extend(shims(daemon).into_iter().map(|pid| format!("shim pid {pid}")));
    left.extend(cleanup::container_pids(daemon.base_dir()).into_iter().map(|pid| format!("container pid {pid}")));
    left.extend(files_below(&daemon.state.join("tasks")).into_iter().map(|f| format!("task file {}", f.display())));
    left.extend(daemon.leftover_network());
    left
}
