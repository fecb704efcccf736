//! Publishing events to the event bus. Every service and the shim use this.
//!
//! `publish` puts the event in an ordered queue (and, with a spool, on disk) and returns;
//! a background task sends the queue to the bus one event at a time, in order, retrying
//! with exponential backoff while the bus is unreachable. While the bus answers, `publish`
//! also waits (briefly) for the acknowledgement, so a caller that publishes and then reads
//! the bus sees its event; while the bus is down it returns at once.
//!
//! Each event carries an idempotency key `<source>:<pid>-<start time>:<counter>`, so an
//! event re-sent after a lost acknowledgement, or after a restart from the spool, is
//! stored once.
//!
//! ```ignore
//! let publisher = Publisher::with_spool(channel, &shim_id, &bundle.join("events.spool"))?;
//! publisher.publish(&namespace, "/tasks/exit", event).await;
//! // Before exiting: wait (bounded) until the bus has everything.
//! let _ = tokio::time::timeout(Duration::from_secs(5), publisher.flush()).await;
//! ```

mod spool;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::events::v1::{Event, PublishRequest};
use tokio::sync::{Notify, watch};

use spool::Spool;
pub use spool::SpoolError;

use crate::Namespace;
use crate::client::BerthChannel;

/// How long `publish` waits for the acknowledgement while the bus is healthy.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// One publish attempt, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events held in memory at most; beyond, new events are dropped with a warning rather
/// than growing without bound while the bus is away.
const MAX_QUEUED: usize = 100_000;

/// A handle to one publishing queue; clones share it.
#[derive(Clone)]
pub struct Publisher {
    handle: Arc<Handle>,
}

/// Dropped with the last `Publisher` clone: tells the worker no more events will come.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    client: EventsClient<BerthChannel>,
    source: String,
    run_id: String,
    counter: AtomicU64,
    state: Mutex<State>,
    /// Wakes the worker: new events, or the last handle dropped.
    wake: Notify,
    /// Cuts a backoff short when the last handle is dropped.
    closing: Notify,
    /// Index of the newest event that is done (acknowledged, or refused for good).
    done: watch::Sender<u64>,
    /// False while the bus is unreachable: `publish` then does not wait.
    healthy: AtomicBool,
    closed: AtomicBool,
    worker_started: AtomicBool,
}

struct State {
    queue: VecDeque<Queued>,
    /// Index of the newest queued event (events are numbered from 1).
    enqueued: u64,
    spool: Option<Spool>,
}

#[derive(Clone)]
struct Queued {
    index: u64,
    namespace: Namespace,
    request: PublishRequest,
}

impl Publisher {
    /// `source` names the publisher in idempotency keys (e.g. "images" or a shim's id).
    /// Events live in memory until the bus has them.
    pub fn new(channel: BerthChannel, source: &str) -> Publisher {
        Publisher::build(channel, source, None, Vec::new())
    }

    /// Like [`Publisher::new`], and every event is also appended to the file at `path`
    /// (fsynced) before `publish` returns, so it survives a restart of this process: a
    /// new publisher on the same path first sends what the old one had not delivered.
    /// One publisher per spool file at a time (it is locked).
    pub fn with_spool(channel: BerthChannel, source: &str, path: &Path) -> Result<Publisher, SpoolError> {
        let (spool, pending) = Spool::open(path)?;
        if !pending.is_empty() {
            tracing::info!(path = %spool.path().display(), events = pending.len(), "sending events left in the spool");
        }
        Ok(Publisher::build(channel, source, Some(spool), pending))
    }

    fn build(
        channel: BerthChannel,
        source: &str,
        spool: Option<Spool>,
        pending: Vec<(Namespace, PublishRequest)>,
    ) -> Publisher {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let queue: VecDeque<Queued> = pending
            .into_iter()
            .zip(1..)
            .map(|((namespace, request), index)| Queued { index, namespace, request })
            .collect();
        let enqueued = queue.len() as u64;
        let shared = Arc::new(Shared {
            client: EventsClient::new(channel),
            source: source.to_string(),
            run_id: format!("{}-{:x}", std::process::id(), started.as_nanos()),
            counter: AtomicU64::new(0),
            state: Mutex::new(State { queue, enqueued, spool }),
            wake: Notify::new(),
            closing: Notify::new(),
            done: watch::Sender::new(0),
            healthy: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            worker_started: AtomicBool::new(false),
        });
        shared.ensure_worker();
        Publisher { handle: Arc::new(Handle { shared }) }
    }

    /// Publishes `event` under `topic` in `namespace`. Never fails: the event is queued
    /// (and spooled) and delivered in order in the background.
    pub async fn publish(&self, namespace: &Namespace, topic: &str, event: Event) {
        let shared = &self.handle.shared;
        let counter = shared.counter.fetch_add(1, Ordering::Relaxed);
        let request = PublishRequest {
            topic: topic.to_string(),
            event: Some(event),
            timestamp: Some(crate::time::now()),
            idempotency_key: format!("{}:{}:{}", shared.source, shared.run_id, counter),
        };
        let index = {
            let mut state = shared.lock();
            if state.queue.len() >= MAX_QUEUED {
                tracing::warn!(topic, queued = state.queue.len(), "event bus unreachable for long; event dropped");
                return;
            }
            if let Some(spool) = state.spool.as_mut()
                && let Err(error) = spool.append(namespace, &request)
            {
                tracing::warn!(topic, %error, path = %spool.path().display(), "cannot spool event; it is kept in memory only");
            }
            state.enqueued += 1;
            let index = state.enqueued;
            state.queue.push_back(Queued { index, namespace: namespace.clone(), request });
            index
        };
        shared.ensure_worker();
        shared.wake.notify_one();
        if shared.healthy.load(Ordering::Relaxed) {
            let mut done = shared.done.subscribe();
            let acknowledged = |done: &u64| *done >= index || !shared.healthy.load(Ordering::Relaxed);
            let _ = tokio::time::timeout(ACK_WAIT, done.wait_for(acknowledged)).await;
        }
    }

    /// Waits until every event published before this call is delivered (or refused by
    /// the bus as invalid). Unbounded while the bus is away: wrap it in a timeout.
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        shared.ensure_worker();
        let target = shared.lock().enqueued;
        let mut done = shared.done.subscribe();
        let _ = done.wait_for(|done| *done >= target).await;
    }

    /// Events not yet delivered.
    pub fn pending(&self) -> usize {
        self.handle.shared.lock().queue.len()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        self.shared.closing.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the worker on the current runtime; outside one, the next `publish` does.
    fn ensure_worker(self: &Arc<Self>) {
        if self.worker_started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.clone().deliver());
            }
            Err(_) => self.worker_started.store(false, Ordering::Release),
        }
    }

    /// The worker: sends the queue head until acknowledged, in order.
    async fn deliver(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            let head = self.lock().queue.front().cloned();
            let Some(head) = head else {
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                self.wake.notified().await;
                continue;
            };
            let request = crate::namespace::request(&head.namespace, head.request.clone());
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.clone().publish(request)).await;
            let failure = match attempt {
                Ok(Ok(_)) => None,
                Ok(Err(status)) if permanent(status.code()) => {
                    tracing::warn!(topic = head.request.topic, error = %status.message(), "the event bus refused an event; dropped");
                    None
                }
                Ok(Err(status)) => Some(status.message().to_string()),
                Err(_) => Some(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            };
            match failure {
                None => {
                    if failures > 0 {
                        tracing::info!(failures, "the event bus is reachable again");
                    }
                    self.healthy.store(true, Ordering::Relaxed);
                    failures = 0;
                    backoff = FIRST_BACKOFF;
                    self.complete(head.index);
                }
                Some(error) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    if failures == 0 {
                        tracing::warn!(%error, queued = self.lock().queue.len(), "cannot reach the event bus; retrying with backoff");
                    }
                    failures = failures.saturating_add(1);
                    // A spooled publisher being dropped may stop: its events wait on disk.
                    if self.closed.load(Ordering::Acquire) && self.lock().spool.is_some() {
                        return;
                    }
                    // Callers waiting for an acknowledgement stop waiting.
                    self.done.send_modify(|_| {});
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.closing.notified() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn complete(&self, index: u64) {
        {
            let mut state = self.lock();
            if state.queue.front().is_some_and(|head| head.index == index) {
                state.queue.pop_front();
            }
            if state.queue.is_empty()
                && let Some(spool) = state.spool.as_mut()
                && let Err(error) = spool.clear()
            {
                tracing::warn!(%error, path = %spool.path().display(), "cannot empty the event spool; its events will be re-sent (and recognised) later");
            }
        }
        self.done.send_replace(index);
    }
}

/// Codes that retrying cannot fix: the event itself is wrong.
fn permanent(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument | Code::AlreadyExists | Code::PermissionDenied | Code::Unauthenticated | Code::OutOfRange
    )
}
