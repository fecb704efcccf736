//! The `berth.events.v1.Events` gRPC service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::events::v1::events_server::Events;
use berth_proto::events::v1::{PublishRequest, PublishResponse, StatusRequest, StatusResponse, SubscribeRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::bus::Bus;
use crate::error::Error;
use crate::filter::Matcher;
use crate::subscribe::{Item, Subscription};

/// Items buffered per subscriber between its cursor and the gRPC stream.
const STREAM_BUFFER: usize = 64;

pub struct EventsService {
    bus: Arc<Bus>,
}

impl EventsService {
    pub fn new(bus: Arc<Bus>) -> EventsService {
        EventsService { bus }
    }
}

fn nanos_of(timestamp: Option<&prost_types::Timestamp>, what: &str) -> Result<Option<i64>, Status> {
    match timestamp.filter(|t| t.seconds != 0 || t.nanos != 0) {
        None => Ok(None),
        Some(t) => berth_common::time::from_proto(t)
            .and_then(|time| time.timestamp_nanos_opt())
            .map(Some)
            .ok_or_else(|| Status::invalid_argument(format!("{what} is out of range"))),
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        if !request.topic.starts_with('/') || request.topic.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "invalid topic {:?}: topics are paths such as /tasks/exit",
                request.topic
            ))
            .into());
        }
        if request.event.is_none() {
            return Err(Error::InvalidArgument("the publish request carries no event".into()).into());
        }
        nanos_of(request.timestamp.as_ref(), "the event timestamp")?;
        Ok(Response::new(self.bus.publish(namespace, request).await?))
    }

    type SubscribeStream = ReceiverStream<Item>;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let namespace = berth_common::namespace::of(&request)?;
        let request = request.into_inner();
        let matcher = Matcher::new(&request.filters, request.all_namespaces, &namespace)?;
        let since_time = nanos_of(request.since_time.as_ref(), "since_time")?;
        let until_time = nanos_of(request.until_time.as_ref(), "until_time")?;
        let until_seq = (request.until_seq != 0).then_some(request.until_seq);

        // Live first, then the committed seq: nothing falls between the two.
        let live = self.bus.live();
        let committed = self.bus.committed();
        let first = self.bus.first();
        let next = if request.since_seq != 0 {
            request.since_seq.saturating_add(1)
        } else if let Some(since) = since_time {
            self.bus.log.first_recorded_at_or_after(since, first, committed).map_err(Status::from)?
        } else if until_time.is_some() || until_seq.is_some() {
            // Like `docker events --until`: everything retained, up to the end.
            first
        } else {
            committed + 1
        };

        let (out, stream) = mpsc::channel(STREAM_BUFFER);
        let subscription = Subscription { bus: self.bus.clone(), matcher, live, next, until_seq, until_time, out };
        tokio::spawn(subscription.run());
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let last = self.bus.committed();
        let first = self.bus.first();
        let retained = (last + 1).saturating_sub(first);
        Ok(Response::new(StatusResponse {
            first_seq: if retained == 0 { 0 } else { first },
            last_seq: last,
            retained,
            subscribers: self.bus.subscribers.load(Ordering::Relaxed),
            max_events: self.bus.config.max_events,
            max_age_seconds: i64::try_from(self.bus.config.max_age_seconds).unwrap_or(i64::MAX),
        }))
    }
}
