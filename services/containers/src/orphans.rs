//! What a daemon killed in the middle of creating or starting a container leaves behind,
//! found and removed at start: rootfs snapshots that no container record owns (killed
//! between preparing the snapshot and storing the record), and shims of containers whose
//! start was never recorded (killed between spawning the shim and recording the start).

use std::collections::BTreeSet;

use berth_common::{Namespace, namespace};
use berth_proto::snapshots::v1::{Kind, ListSnapshotsRequest, RemoveSnapshotRequest};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::create::SNAPSHOT_CONTAINER_LABEL;
use crate::error::{Error, Result};
use crate::supervisor::{SHIM_CONNECT_TIMEOUT, Supervisor};
use berth_proto::containers::v1::Container;
use berth_proto::shim::v1 as shim;

impl Supervisor {
    /// Undoes a start that a crash interrupted: the container stays as recorded (created
    /// or exited), so its half-started shim and process go, and the bundle with them.
    pub async fn abandon_start(&self, ns: &Namespace, container: &Container) {
        let socket = self.shim_socket(ns, &container.id);
        if let Ok(mut shim_client) = crate::shims::connect(&socket, SHIM_CONNECT_TIMEOUT).await {
            let kill = shim::KillRequest { exec_id: String::new(), signal: libc::SIGKILL as u32, all: true };
            let _ = shim_client.kill(kill).await;
            let _ = shim_client.shutdown(shim::ShutdownRequest { now: true }).await;
        }
        // The runtime's own record and the rootfs mount, whether or not the shim answered.
        self.force_cleanup(ns, &container.id, container).await;
        tracing::info!(container = %container.id, "undid a start interrupted by a daemon crash");
    }

    /// Removes container rootfs snapshots created before `started` whose container does
    /// not exist. Snapshots made after `started` may belong to a create still in flight.
    /// Namespaces are those of the stored containers plus the default one.
    pub async fn reclaim_orphan_snapshots(&self, started: DateTime<Utc>) -> Result<usize> {
        let records = self.store.list_all()?;
        let owned: BTreeSet<(String, String)> =
            records.iter().map(|(ns, c)| (ns.as_str().to_string(), c.snapshot_key.clone())).collect();
        let mut namespaces: BTreeSet<Namespace> = records.into_iter().map(|(ns, _)| ns).collect();
        namespaces.insert(Namespace::default_namespace());

        let mut removed = 0;
        for ns in namespaces {
            let list = ListSnapshotsRequest { filters: vec!["kind==active".to_string()] };
            let mut stream = self
                .snapshots()?
                .list(namespace::request(&ns, list))
                .await
                .map_err(|s| Error::Upstream(berth_common::error::from_dependency("snapshots", s)))?
                .into_inner();
            let mut orphans = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|s| Error::Upstream(berth_common::error::from_dependency("snapshots", s)))?;
                for info in batch.info {
                    let created = berth_common::time::from_optional(info.created_at.as_ref());
                    let labelled = info.labels.contains_key(SNAPSHOT_CONTAINER_LABEL);
                    if labelled
                        && info.kind == Kind::Active as i32
                        && created.is_some_and(|c| c < started)
                        && !owned.contains(&(ns.as_str().to_string(), info.name.clone()))
                    {
                        orphans.push(info.name);
                    }
                }
            }
            for key in orphans {
                let request = namespace::request(&ns, RemoveSnapshotRequest { key: key.clone() });
                match self.snapshots()?.remove(request).await {
                    Ok(_) => removed += 1,
                    Err(status) => {
                        tracing::warn!(snapshot = %key, error = %status.message(), "removing an orphaned rootfs")
                    }
                }
            }
        }
        Ok(removed)
    }
}
