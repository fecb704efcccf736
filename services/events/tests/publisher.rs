//! `berth_common::events::Publisher` against the real service: retries while the bus is
//! away, spools across its own restarts, and a re-sent event is stored once.

mod support;

use std::path::Path;
use std::time::Duration;

use berth_common::Namespace;
use berth_common::events::{Publisher, SpoolError};
use berth_proto::events::v1::{StatusRequest, SubscribeRequest};
use futures::StreamExt;
use support::*;

async fn all_events(bus: &TestBus, until_seq: u64) -> Vec<(u64, String)> {
    let request = SubscribeRequest {
        since_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
        until_seq,
        ..Default::default()
    };
    let mut stream = bus.client().await.subscribe(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap() {
        match seen(item.unwrap()) {
            Seen::Event(envelope) => out.push((envelope.seq, envelope.event.unwrap().actor_id)),
            Seen::Lost(first, last) => panic!("lost {first}..={last}"),
        }
    }
    out
}

/// The previous publisher's worker lets go of the spool shortly after it is dropped.
async fn reopen(socket: &Path, spool: &Path) -> Publisher {
    for _ in 0..200 {
        match Publisher::with_spool(lazy_channel(socket), "shim-1", spool) {
            Ok(publisher) => return publisher,
            Err(SpoolError::InUse { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(err) => panic!("{err}"),
        }
    }
    panic!("the spool stayed locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_while_the_bus_is_down_are_delivered_in_order_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let publisher = Publisher::new(lazy_channel(&socket), "images");
    let ns = Namespace::default_namespace();
    // No bus yet: publish must still return (it queues).
    tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..100 {
            publisher.publish(&ns, "/images/pull", event("image", "pull", &format!("img{i}"))).await;
        }
    })
    .await
    .expect("publish does not block while the bus is down");
    assert_eq!(publisher.pending(), 100);

    let bus = TestBus::start(dir.path(), config(1000, 3600)).await;
    tokio::time::timeout(Duration::from_secs(30), publisher.flush()).await.expect("delivered after the bus came up");
    assert_eq!(publisher.pending(), 0);
    let events = all_events(&bus, 100).await;
    let expected: Vec<(u64, String)> = (0..100).map(|i| (i + 1, format!("img{i}"))).collect();
    assert_eq!(events, expected);

    // While the bus is healthy, publish returns once the event is stored.
    publisher.publish(&ns, "/images/tag", event("image", "tag", "img-tagged")).await;
    let status = bus.client().await.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.last_seq, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_a_publisher_restart_and_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let spool = dir.path().join("shim/events.spool");
    let ns = Namespace::default_namespace();

    // The shim publishes exits while the bus is down, then exits itself.
    let publisher = Publisher::with_spool(lazy_channel(&socket), "shim-1", &spool).unwrap();
    for i in 0..50 {
        publisher.publish(&ns, "/tasks/exit", event("container", "die", &format!("c{i}"))).await;
    }
    drop(publisher);
    // Keep a copy, as if the spool's truncation after delivery were lost in a crash.
    let publisher = reopen(&socket, &spool).await;
    drop(publisher);
    let copy = dir.path().join("spool.copy");
    std::fs::copy(&spool, &copy).unwrap();
    assert!(std::fs::metadata(&copy).unwrap().len() > 0);

    // The bus comes up, the shim restarts: everything arrives.
    let bus = TestBus::start(dir.path(), config(1000, 3600)).await;
    let publisher = reopen(&socket, &spool).await;
    tokio::time::timeout(Duration::from_secs(30), publisher.flush()).await.expect("spool delivered");
    assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0, "a delivered spool is emptied");
    drop(publisher);

    // The same events sent again under their original keys are recognised.
    std::fs::copy(&copy, &spool).unwrap();
    let publisher = reopen(&socket, &spool).await;
    tokio::time::timeout(Duration::from_secs(30), publisher.flush()).await.expect("re-sent");
    publisher.publish(&ns, "/tasks/exit", event("container", "die", "after")).await;
    tokio::time::timeout(Duration::from_secs(30), publisher.flush()).await.expect("delivered");

    let mut expected: Vec<(u64, String)> = (0..50).map(|i| (i + 1, format!("c{i}"))).collect();
    expected.push((51, "after".into()));
    assert_eq!(all_events(&bus, 51).await, expected);
    let status = bus.client().await.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.last_seq, 51, "nothing was stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_restart_in_the_middle_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = TestBus::start(dir.path(), config(10_000, 3600)).await;
    let publisher = Publisher::new(lazy_channel(&bus.socket), "containers");
    let ns = Namespace::default_namespace();
    let producer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                publisher.publish(&ns, "/containers/create", event("container", "create", &format!("c{i}"))).await;
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.restart().await;
    tokio::time::timeout(Duration::from_secs(60), producer).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(60), publisher.flush()).await.expect("all delivered");
    let events = all_events(&bus, 400).await;
    let actors: Vec<String> = events.iter().map(|(_, actor)| actor.clone()).collect();
    assert_eq!(actors, (0..400).map(|i| format!("c{i}")).collect::<Vec<_>>(), "each once, in order");
}
