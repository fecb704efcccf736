//! One subscription: replay from the log, then follow live, as one cursor (`next`, the
//! seq to deliver next).
//!
//! The live receiver is registered before the committed seq is read, so every event after
//! that seq reaches it. Live events below `next` are duplicates of replayed ones and are
//! dropped; a live event above `next` (or a lag notice from the channel) means the cursor
//! fell behind, and it reads the missing range from the log again. Whatever retention
//! removed before the cursor reached it is reported as `EventsLost`, never skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::events::v1::{EventsLost, SubscribeResponse, subscribe_response};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::bus::Bus;
use crate::filter::Matcher;
use crate::store::Record;

/// Records read from the log per step while catching up.
const READ_CHUNK: usize = 256;

pub type Item = Result<SubscribeResponse, Status>;

pub struct Subscription {
    pub bus: Arc<Bus>,
    pub matcher: Matcher,
    pub live: broadcast::Receiver<Arc<Record>>,
    pub next: u64,
    pub until_seq: Option<u64>,
    /// Unix nanoseconds of bus time.
    pub until_time: Option<i64>,
    pub out: mpsc::Sender<Item>,
}

/// Why the stream stops.
enum Stop {
    /// `until` reached, or the client went away.
    Done,
    Failed(Status),
}

impl From<crate::error::Error> for Stop {
    fn from(error: crate::error::Error) -> Stop {
        Stop::Failed(error.into())
    }
}

struct CountGuard(Arc<Bus>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    pub async fn run(mut self) {
        self.bus.subscribers.fetch_add(1, Ordering::Relaxed);
        let _count = CountGuard(self.bus.clone());
        if let Err(Stop::Failed(status)) = self.stream().await {
            // Never wait here: during shutdown a client that does not read must not keep
            // this task (and the database) alive.
            let _ = self.out.try_send(Err(status));
        }
    }

    async fn stream(&mut self) -> Result<(), Stop> {
        let until_timer = match self.until_time {
            Some(until) => {
                let wait = until.saturating_sub(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
                let wait = std::time::Duration::from_nanos(u64::try_from(wait).unwrap_or(0));
                sleep_or_forever(Some(wait))
            }
            None => sleep_or_forever(None),
        };
        tokio::pin!(until_timer);
        let shutdown = self.bus.shutdown.clone();
        let mut until_passed = false;
        loop {
            self.catch_up().await?;
            if until_passed {
                return Ok(());
            }
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Err(Stop::Failed(crate::error::Error::ShuttingDown.into())),
                    _ = self.out.closed() => return Ok(()),
                    _ = &mut until_timer => {
                        // Deliver what was committed up to now, then end.
                        until_passed = true;
                        break;
                    }
                    received = self.live.recv() => match received {
                        Ok(record) if record.seq() < self.next => continue,
                        Ok(record) if record.seq() == self.next => self.deliver(&record).await?,
                        // Behind: the log has everything up to this record.
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(Stop::Failed(crate::error::Error::ShuttingDown.into()));
                        }
                    },
                }
            }
        }
    }

    /// Reads from the log from `next` up to the committed seq.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let committed = self.bus.committed();
            if self.next > committed {
                return Ok(());
            }
            let first = self.bus.first();
            if self.next < first {
                self.lost(first - 1).await?;
                continue;
            }
            let records = self.bus.log.read(self.next, committed, READ_CHUNK)?;
            if records.is_empty() {
                // Compaction removed the whole range since `first` was read.
                self.lost(committed).await?;
                continue;
            }
            for record in records {
                if record.seq() > self.next {
                    self.lost(record.seq() - 1).await?;
                }
                self.deliver(&record).await?;
            }
        }
    }

    /// Tells the client that `next..=last` are gone, and moves past them.
    async fn lost(&mut self, last: u64) -> Result<(), Stop> {
        let config = &self.bus.config;
        let lost = EventsLost {
            first_seq: self.next,
            last_seq: last,
            reason: format!(
                "the subscriber fell behind the retained window (events-max {}, max age {}s)",
                config.max_events, config.max_age_seconds
            ),
        };
        tracing::debug!(first = lost.first_seq, last, "subscriber lost events");
        self.send(subscribe_response::Item::Lost(lost)).await?;
        self.advance(last)
    }

    async fn deliver(&mut self, record: &Record) -> Result<(), Stop> {
        if self.until_time.is_some_and(|until| record.recorded_at > until) {
            return Err(Stop::Done);
        }
        if self.until_seq.is_some_and(|until| record.seq() > until) {
            return Err(Stop::Done);
        }
        if self.matcher.matches(&record.envelope) {
            self.send(subscribe_response::Item::Envelope(record.envelope.clone())).await?;
        }
        self.advance(record.seq())
    }

    fn advance(&mut self, delivered: u64) -> Result<(), Stop> {
        self.next = delivered + 1;
        if self.until_seq.is_some_and(|until| self.next > until) {
            return Err(Stop::Done);
        }
        Ok(())
    }

    async fn send(&mut self, item: subscribe_response::Item) -> Result<(), Stop> {
        let shutdown = self.bus.shutdown.clone();
        tokio::select! {
            sent = self.out.send(Ok(SubscribeResponse { item: Some(item) })) => sent.map_err(|_| Stop::Done),
            _ = shutdown.cancelled() => Err(Stop::Failed(crate::error::Error::ShuttingDown.into())),
        }
    }
}

async fn sleep_or_forever(wait: Option<std::time::Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
