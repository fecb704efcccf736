//! In-memory bookkeeping per container: a lock that serializes lifecycle changes, the
//! observed state that waiters watch, the connected shim, and clients waiting to attach
//! to the next start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_common::Namespace;
use berth_proto::containers::v1::ContainerState;
use berth_proto::shim::v1::shim_client::ShimClient;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

pub type Shim = ShimClient<Channel>;

/// What waiters see.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub state: ContainerState,
    /// Counts exits, so "the next exit" can be told apart from an earlier one.
    pub exits: u64,
    pub removed: bool,
}

/// A client attached before the container (re)starts; it gets the shim's stream then.
pub struct PendingAttach {
    pub open: berth_proto::shim::v1::AttachOpen,
    pub connect: oneshot::Sender<crate::attach::ShimStreams>,
}

pub struct Entry {
    pub lock: Arc<tokio::sync::Mutex<()>>,
    observed: watch::Sender<Observed>,
    shim: Mutex<Option<Shim>>,
    pending: Mutex<Vec<PendingAttach>>,
    /// Delay before the next policy restart; doubles on quick failures.
    pub restart_delay: Mutex<Duration>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Entry {
    pub fn observe(&self, state: &ContainerState, exited: bool) {
        self.observed.send_modify(|o| {
            o.state = state.clone();
            if exited {
                o.exits += 1;
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Observed> {
        self.observed.subscribe()
    }

    pub fn shim(&self) -> Option<Shim> {
        lock(&self.shim).clone()
    }

    pub fn set_shim(&self, shim: Option<Shim>) {
        *lock(&self.shim) = shim;
    }

    pub fn take_shim(&self) -> Option<Shim> {
        lock(&self.shim).take()
    }

    pub fn add_pending(&self, pending: PendingAttach) {
        lock(&self.pending).push(pending);
    }

    /// Pending attachers still waiting (ones whose client left are dropped).
    pub fn take_pending(&self) -> Vec<PendingAttach> {
        std::mem::take(&mut *lock(&self.pending)).into_iter().filter(|p| !p.connect.is_closed()).collect()
    }
}

#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<(Namespace, String), Arc<Entry>>>,
}

impl Registry {
    /// The entry for a container, created with `state` when first seen.
    pub fn entry(&self, namespace: &Namespace, id: &str, state: &ContainerState) -> Arc<Entry> {
        lock(&self.entries)
            .entry((namespace.clone(), id.to_string()))
            .or_insert_with(|| {
                Arc::new(Entry {
                    lock: Arc::new(tokio::sync::Mutex::new(())),
                    observed: watch::channel(Observed { state: state.clone(), exits: 0, removed: false }).0,
                    shim: Mutex::new(None),
                    pending: Mutex::new(Vec::new()),
                    restart_delay: Mutex::new(crate::supervisor::MIN_RESTART_DELAY),
                })
            })
            .clone()
    }

    /// Forgets a removed container; its waiters see `removed`.
    pub fn remove(&self, namespace: &Namespace, id: &str) {
        if let Some(entry) = lock(&self.entries).remove(&(namespace.clone(), id.to_string())) {
            entry.observed.send_modify(|o| o.removed = true);
        }
    }
}
