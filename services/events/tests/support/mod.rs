//! Runs the events service in-process on a temp unix socket, as berthd would host it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_common::client::{BerthChannel, ClientContext};
use berth_common::config::EventsConfig;
use berth_common::{Address, Config, Namespace, ServiceContext};
use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::events::v1::{
    Envelope, Event, PublishRequest, SubscribeRequest, SubscribeResponse, subscribe_response,
};
use tokio_util::sync::CancellationToken;

pub struct TestBus {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: EventsConfig,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestBus {
    pub async fn start(dir: &Path, config: EventsConfig) -> TestBus {
        let socket = dir.join("bus.sock");
        let mut bus =
            TestBus { dir: dir.to_path_buf(), socket, config, shutdown: CancellationToken::new(), server: None };
        bus.spawn().await;
        bus
    }

    async fn spawn(&mut self) {
        let config = Config {
            data_root: self.dir.join("root"),
            exec_root: self.dir.join("state"),
            log_dir: self.dir.join("logs"),
            hosts: vec![Address::Unix(self.socket.clone())],
            events: self.config.clone(),
            socket_group: String::new(),
            ..Config::default()
        };
        self.shutdown = CancellationToken::new();
        let ctx = ServiceContext::new(Arc::new(config), self.shutdown.clone());
        let listener = berth_common::serve::bind(&Address::Unix(self.socket.clone()), "").await.unwrap();
        let mut routes = tonic::service::RoutesBuilder::default();
        // A restarted bus may find the previous instance's database still closing.
        let mut attempts = 0;
        loop {
            match berth_events::register(&ctx, &mut routes).await {
                Ok(()) => break,
                Err(err) if attempts < 100 => {
                    attempts += 1;
                    if attempts == 1 {
                        eprintln!("waiting to reopen the event log: {err}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("cannot start the events service: {err}"),
            }
        }
        let token = self.shutdown.clone();
        let routes = routes.routes();
        self.server = Some(tokio::spawn(async move {
            berth_common::serve::serve(listener, routes, async move { token.cancelled().await }).await.unwrap();
        }));
    }

    /// Stops serving (like berthd's shutdown) and waits for the server to end.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server).await.expect("server stops").unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    pub async fn client(&self) -> EventsClient<BerthChannel> {
        client_for(&self.socket, &Namespace::default_namespace()).await
    }

    pub async fn client_in(&self, namespace: &str) -> EventsClient<BerthChannel> {
        client_for(&self.socket, &Namespace::new(namespace).unwrap()).await
    }
}

pub async fn client_for(socket: &Path, namespace: &Namespace) -> EventsClient<BerthChannel> {
    let channel = berth_common::client::connect(&Address::Unix(socket.to_path_buf())).await.unwrap();
    EventsClient::new(berth_common::client::intercept(channel, ClientContext::with_namespace(namespace)))
}

/// A lazily connecting channel, as services get from `ServiceContext::channel`.
pub fn lazy_channel(socket: &Path) -> BerthChannel {
    let channel = berth_common::client::lazy_channel(&Address::Unix(socket.to_path_buf())).unwrap();
    berth_common::client::intercept(channel, ClientContext::default())
}

pub fn event(kind: &str, action: &str, actor: &str) -> Event {
    Event {
        r#type: kind.into(),
        action: action.into(),
        actor_id: actor.into(),
        attributes: [("name".to_string(), format!("{actor}-name"))].into_iter().collect(),
        payload: None,
    }
}

pub fn publish_request(topic: &str, event: Event, key: &str) -> PublishRequest {
    PublishRequest { topic: topic.into(), event: Some(event), timestamp: None, idempotency_key: key.into() }
}

pub fn subscribe_since(since_seq: u64) -> SubscribeRequest {
    SubscribeRequest { since_seq, ..Default::default() }
}

/// One item of a subscription, simplified for assertions.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Seen {
    Event(Envelope),
    Lost(u64, u64),
}

pub fn seen(response: SubscribeResponse) -> Seen {
    match response.item.expect("an item") {
        subscribe_response::Item::Envelope(envelope) => Seen::Event(envelope),
        subscribe_response::Item::Lost(lost) => Seen::Lost(lost.first_seq, lost.last_seq),
    }
}

pub fn config(max_events: u64, max_age_seconds: u64) -> EventsConfig {
    EventsConfig { max_events, max_age_seconds }
}
