//! The bus: one writer task owns the log's write side. It takes publish requests in
//! batches (group commit), assigns seqs, appends, flushes once per batch, and only then
//! publishes the batch to live subscribers and acknowledges it. So a subscriber never sees
//! an event that a crash could take back, and one fsync serves many publishers.
//! Compaction runs in the same task, so nothing else ever writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_common::Namespace;
use berth_common::config::EventsConfig;
use berth_proto::events::v1::{Envelope, PublishRequest, PublishResponse};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::{Log, Record};

/// Events a lagging live receiver may fall behind before it reads the rest from the log.
const LIVE_CAPACITY: usize = 4096;
/// Publish requests waiting for the writer before callers wait for room.
const QUEUE_CAPACITY: usize = 4096;
/// Most events written (and flushed) as one batch.
const MAX_BATCH: usize = 1024;
const COMPACTION_INTERVAL: Duration = Duration::from_secs(1);

pub struct Bus {
    pub log: Log,
    /// Newest durable seq; readers never read past it.
    committed: AtomicU64,
    /// Oldest retained seq (`committed + 1` when nothing is retained).
    first: AtomicU64,
    pub subscribers: AtomicU64,
    live: broadcast::Sender<Arc<Record>>,
    jobs: mpsc::Sender<Job>,
    pub config: EventsConfig,
    pub shutdown: CancellationToken,
}

struct Job {
    namespace: Namespace,
    request: PublishRequest,
    reply: oneshot::Sender<Result<PublishResponse, Error>>,
}

/// The writer's own counters.
struct Writer {
    last: u64,
    last_recorded_at: i64,
}

impl Bus {
    /// Opens the log state and starts the writer; it stops on `shutdown`.
    pub fn start(log: Log, config: EventsConfig, shutdown: CancellationToken) -> Result<Arc<Bus>, Error> {
        let recovered = log.recover()?;
        let (jobs, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let bus = Arc::new(Bus {
            log,
            committed: AtomicU64::new(recovered.last),
            first: AtomicU64::new(recovered.first.unwrap_or(recovered.last + 1)),
            subscribers: AtomicU64::new(0),
            live,
            jobs,
            config,
            shutdown,
        });
        tracing::info!(first = recovered.first, last = recovered.last, "event log opened");
        let writer = Writer { last: recovered.last, last_recorded_at: recovered.last_recorded_at };
        tokio::spawn(writer.run(bus.clone(), receiver));
        Ok(bus)
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub fn first(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// A live receiver. Register it BEFORE reading `committed()` to replay history: every
    /// event after the committed seq read then is sent to it.
    pub fn live(&self) -> broadcast::Receiver<Arc<Record>> {
        self.live.subscribe()
    }

    /// Appends one event durably; returns once it is flushed.
    pub async fn publish(&self, namespace: Namespace, request: PublishRequest) -> Result<PublishResponse, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { namespace, request, reply }).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Writer {
    async fn run(mut self, bus: Arc<Bus>, mut jobs: mpsc::Receiver<Job>) {
        let mut compaction = tokio::time::interval(COMPACTION_INTERVAL);
        compaction.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = bus.shutdown.cancelled() => break,
                job = jobs.recv() => {
                    let Some(job) = job else { break };
                    let mut batch = vec![job];
                    while batch.len() < MAX_BATCH {
                        match jobs.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    self.write_batch(&bus, batch).await;
                    if (bus.committed() + 1).saturating_sub(bus.first()) > bus.config.max_events {
                        self.compact(&bus);
                    }
                }
                _ = compaction.tick() => self.compact(&bus),
            }
        }
        // Dropping the receiver answers queued publishers with ShuttingDown.
        tracing::debug!("event writer stopped");
    }

    async fn write_batch(&mut self, bus: &Bus, batch: Vec<Job>) {
        let before = (self.last, self.last_recorded_at);
        let mut new_records: Vec<(Record, Vec<u8>)> = Vec::with_capacity(batch.len());
        let mut keys_in_batch: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            match self.prepare(bus, &job, &mut keys_in_batch) {
                Ok(Prepared::Duplicate(seq)) => answers.push((job.reply, Ok(PublishResponse { seq, duplicate: true }))),
                Ok(Prepared::New(record, key)) => {
                    let seq = record.seq();
                    new_records.push((*record, key));
                    answers.push((job.reply, Ok(PublishResponse { seq, duplicate: false })));
                }
                Err(error) => answers.push((job.reply, Err(error))),
            }
        }

        // Duplicates are flushed too: their original may still be in flight.
        let written = match bus.log.append(&new_records) {
            Ok(()) => bus.log.flush().await,
            Err(error) => {
                (self.last, self.last_recorded_at) = before;
                Err(error)
            }
        };
        match written {
            Ok(()) => {
                bus.committed.store(self.last, Ordering::Release);
                for (record, _) in new_records {
                    // No receivers is fine: nobody follows live right now.
                    let _ = bus.live.send(Arc::new(record));
                }
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot write events");
                let status = tonic::Status::from(error);
                for (reply, _) in answers {
                    let _ = reply.send(Err(Error::Unwritten(status.clone())));
                }
            }
        }
    }

    fn prepare(&mut self, bus: &Bus, job: &Job, keys_in_batch: &mut HashMap<Vec<u8>, u64>) -> Result<Prepared, Error> {
        let key = if job.request.idempotency_key.is_empty() {
            Vec::new()
        } else {
            let key = berth_common::store::ns_key(&job.namespace, &job.request.idempotency_key);
            if let Some(seq) = keys_in_batch.get(&key) {
                return Ok(Prepared::Duplicate(*seq));
            }
            if let Some(seq) = bus.log.seq_for_key(&key)? {
                return Ok(Prepared::Duplicate(seq));
            }
            key
        };
        self.last += 1;
        self.last_recorded_at = self.last_recorded_at.max(now_nanos());
        if !key.is_empty() {
            keys_in_batch.insert(key.clone(), self.last);
        }
        let timestamp = match &job.request.timestamp {
            Some(t) if t.seconds != 0 || t.nanos != 0 => *t,
            _ => timestamp_of(self.last_recorded_at),
        };
        let envelope = Envelope {
            seq: self.last,
            timestamp: Some(timestamp),
            namespace: job.namespace.to_string(),
            topic: job.request.topic.clone(),
            event: job.request.event.clone(),
        };
        Ok(Prepared::New(Box::new(Record { envelope, recorded_at: self.last_recorded_at }), key))
    }

    /// Applies retention: at most `max_events`, none older than `max_age_seconds`.
    fn compact(&mut self, bus: &Bus) {
        let config = &bus.config;
        let keep_from = (self.last + 1).saturating_sub(config.max_events);
        let max_age = i64::try_from(config.max_age_seconds.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
        let min_recorded_at = now_nanos().saturating_sub(max_age);
        let first = bus.first();
        if first > self.last {
            return;
        }
        let oldest_too_old = match bus.log.get(first) {
            Ok(Some(record)) => record.recorded_at < min_recorded_at,
            _ => true,
        };
        if first >= keep_from && !oldest_too_old {
            return;
        }
        match bus.log.prune(keep_from, min_recorded_at) {
            Ok(new_first) => {
                let new_first = new_first.unwrap_or(self.last + 1);
                bus.first.store(new_first, Ordering::Release);
                if new_first > first {
                    tracing::debug!(removed = new_first - first, first = new_first, "event log compacted");
                }
            }
            Err(error) => tracing::warn!(%error, "event log compaction failed; retrying later"),
        }
    }
}

enum Prepared {
    Duplicate(u64),
    New(Box<Record>, Vec<u8>),
}

pub fn timestamp_of(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: nanos.div_euclid(1_000_000_000), nanos: nanos.rem_euclid(1_000_000_000) as i32 }
}
