//! Publishing events to the event bus. Every service and the shim use this.
//!
//! FIRST VERSION: sends once and logs a failure. The event-service issue replaces the
//! body with retries, backoff and an on-disk spool so events survive a bus restart; the
//! interface stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::events::v1::{Event, PublishRequest};

use crate::Namespace;
use crate::client::BerthChannel;

#[derive(Clone)]
pub struct Publisher {
    client: EventsClient<BerthChannel>,
    source: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl Publisher {
    /// `source` names the publisher in idempotency keys (e.g. "images" or a shim's id).
    pub fn new(channel: BerthChannel, source: &str) -> Publisher {
        Publisher { client: EventsClient::new(channel), source: source.into(), counter: Arc::default() }
    }

    /// Publishes `event` under `topic` in `namespace`.
    pub async fn publish(&self, namespace: &Namespace, topic: &str, event: Event) {
        let key = format!("{}:{}:{}", self.source, std::process::id(), self.counter.fetch_add(1, Ordering::Relaxed));
        let request = PublishRequest {
            topic: topic.to_string(),
            event: Some(event),
            timestamp: Some(crate::time::now()),
            idempotency_key: key,
        };
        if let Err(status) = self.client.clone().publish(crate::namespace::request(namespace, request)).await {
            tracing::warn!(topic, error = %status.message(), "event not published");
        }
    }
}
