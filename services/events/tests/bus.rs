//! The event service over gRPC, in-process on a temp unix socket: fan-out, replay,
//! restart durability, back-pressure, retention, idempotency, filters and time windows.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::events::v1::{StatusRequest, SubscribeRequest};
use berth_proto::types::v1::Filter;
use futures::StreamExt;
use support::*;

const TOPICS: [&str; 3] = ["/tasks/start", "/tasks/exit", "/images/pull"];

/// What a publisher task published: (seq, topic, actor).
type Published = Vec<(u64, &'static str, String)>;

async fn publish_many(bus: &TestBus, tasks: usize, per_task: usize) -> Published {
    publish_padded(bus, tasks, per_task, 0).await
}

/// Events carry `padding` extra bytes (in a "padding" attribute).
async fn publish_padded(bus: &TestBus, tasks: usize, per_task: usize, padding: usize) -> Published {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let mut client = bus.client().await;
        handles.push(tokio::spawn(async move {
            let mut published = Vec::new();
            for i in 0..per_task {
                let topic = TOPICS[i % TOPICS.len()];
                let actor = format!("c{}", (task + i) % 4);
                let kind = if topic.starts_with("/images") { "image" } else { "container" };
                let mut event = event(kind, "x", &actor);
                if padding > 0 {
                    event.attributes.insert("padding".into(), "p".repeat(padding));
                }
                let request = publish_request(topic, event, &format!("t{task}-{i}"));
                let seq = client.publish(request).await.unwrap().into_inner().seq;
                published.push((seq, topic, actor));
            }
            published
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    all.sort();
    all
}

/// Follows `request` in the background; returns what arrived so far.
async fn follow(bus: &TestBus, request: SubscribeRequest) -> Arc<Mutex<Vec<Seen>>> {
    let mut stream = bus.client().await.subscribe(request).await.unwrap().into_inner();
    let seen_items = Arc::new(Mutex::new(Vec::new()));
    let sink = seen_items.clone();
    tokio::spawn(async move {
        while let Some(Ok(item)) = stream.next().await {
            sink.lock().unwrap().push(seen(item));
        }
    });
    seen_items
}

async fn wait_for_count(items: &Arc<Mutex<Vec<Seen>>>, count: usize, what: &str) {
    for _ in 0..1200 {
        if items.lock().unwrap().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: expected {count} items, got {}", items.lock().unwrap().len());
}

fn seqs(items: &[Seen]) -> Vec<u64> {
    items
        .iter()
        .map(|item| match item {
            Seen::Event(envelope) => envelope.seq,
            Seen::Lost(first, last) => panic!("unexpected loss {first}..={last}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_from_4_publishers_reach_20_subscribers_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(100_000, 3600)).await;

    let filters: Vec<(&str, Vec<Filter>)> = (0..20)
        .map(|i| match i % 4 {
            0 | 1 => ("all", vec![]),
            2 => ("tasks", vec![Filter { key: "topic".into(), values: vec!["/tasks/*".into()] }]),
            _ => ("c1", vec![Filter { key: "container".into(), values: vec!["c1".into()] }]),
        })
        .collect();
    let mut subscribers = Vec::new();
    for (name, filters) in &filters {
        let request = SubscribeRequest { filters: filters.clone(), ..Default::default() };
        subscribers.push((*name, follow(&bus, request).await));
    }

    let published = publish_many(&bus, 4, 2500).await;
    assert_eq!(published.len(), 10_000);
    let all: Vec<u64> = published.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(all, (1..=10_000).collect::<Vec<_>>(), "seqs are assigned without gaps");

    for (name, items) in &subscribers {
        let expected: Vec<u64> = published
            .iter()
            .filter(|(_, topic, actor)| match *name {
                "all" => true,
                "tasks" => topic.starts_with("/tasks/"),
                _ => actor == "c1" && topic.starts_with("/tasks/"),
            })
            .map(|(seq, _, _)| *seq)
            .collect();
        wait_for_count(items, expected.len(), name).await;
    }
    // Anything extra (a duplicate) would have arrived by now too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, items) in &subscribers {
        let expected: Vec<u64> = published
            .iter()
            .filter(|(_, topic, actor)| match *name {
                "all" => true,
                "tasks" => topic.starts_with("/tasks/"),
                _ => actor == "c1" && topic.starts_with("/tasks/"),
            })
            .map(|(seq, _, _)| *seq)
            .collect();
        assert_eq!(seqs(&items.lock().unwrap()), expected, "subscriber {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joining_mid_stream_with_since_seq_gets_history_then_live_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(100_000, 3600)).await;
    let mut publisher = bus.client().await;
    let producing = tokio::spawn(async move {
        for i in 0..3000 {
            let request = publish_request("/tasks/start", event("container", "start", "c"), &format!("k{i}"));
            publisher.publish(request).await.unwrap();
        }
    });
    let mut status = bus.client().await;
    while status.status(StatusRequest {}).await.unwrap().into_inner().last_seq < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let request = SubscribeRequest { since_seq: 500, until_seq: 3000, ..Default::default() };
    let mut stream = bus.client().await.subscribe(request).await.unwrap().into_inner();
    let mut received = Vec::new();
    while let Some(item) = stream.next().await {
        received.push(seen(item.unwrap()));
    }
    producing.await.unwrap();
    assert_eq!(seqs(&received), (501..=3000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_a_restart_and_a_reconnect_with_the_last_seq_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = TestBus::start(dir.path(), config(100_000, 3600)).await;
    publish_many(&bus, 2, 500).await;

    // A follower reads part of it, then the bus goes away under it.
    let from_start =
        SubscribeRequest { since_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }), ..Default::default() };
    let mut stream_all = bus.client().await.subscribe(from_start).await.unwrap().into_inner();
    let mut last_seen = 0;
    for _ in 0..600 {
        if let Seen::Event(envelope) = seen(stream_all.next().await.unwrap().unwrap()) {
            assert_eq!(envelope.seq, last_seen + 1);
            last_seen = envelope.seq;
        }
    }
    // The old stream ends when the bus stops (the client keeps reading what was buffered).
    let draining = tokio::spawn(async move { while let Some(Ok(_)) = stream_all.next().await {} });
    bus.restart().await;
    tokio::time::timeout(Duration::from_secs(30), draining).await.unwrap().unwrap();

    let mut client = bus.client().await;
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.first_seq, status.last_seq, status.retained), (1, 1000, 1000));

    let request = SubscribeRequest { since_seq: last_seen, until_seq: 1100, ..Default::default() };
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    for i in 0..100 {
        let request = publish_request("/tasks/exit", event("container", "die", "c"), &format!("after-{i}"));
        let seq = client.publish(request).await.unwrap().into_inner().seq;
        assert_eq!(seq, 1001 + i, "numbering continues after the restart");
    }
    let mut received = Vec::new();
    while let Some(item) = stream.next().await {
        received.push(seen(item.unwrap()));
    }
    assert_eq!(seqs(&received), (601..=1100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_does_not_stall_publishers_and_is_told_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(500, 3600)).await;
    // Subscribed, then never read until publishing is over.
    let mut stalled = bus.client().await.subscribe(subscribe_since(0)).await.unwrap().into_inner();
    let reader = follow(&bus, subscribe_since(0)).await;

    // 1 KiB events, so that the transport's flow-control windows (about 1 MiB) fill up
    // and the stalled subscriber's cursor really falls behind.
    let total = 12_000;
    let published = tokio::time::timeout(Duration::from_secs(300), publish_padded(&bus, 4, total / 4, 1024))
        .await
        .expect("publishers finish while a subscriber stalls");
    assert_eq!(published.len(), total);
    wait_for_count(&reader, total, "the reading subscriber").await;
    assert_eq!(seqs(&reader.lock().unwrap()), (1..=total as u64).collect::<Vec<_>>());

    let status = bus.client().await.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(status.retained <= 500 + 1024, "retention keeps the log bounded: {status:?}");

    // Reading again: what was buffered, then an explicit loss, then the rest; every seq
    // accounted for exactly once.
    let mut next = 1;
    let mut losses = Vec::new();
    while next <= total as u64 {
        let item = tokio::time::timeout(Duration::from_secs(30), stalled.next()).await.unwrap().unwrap().unwrap();
        match seen(item) {
            Seen::Event(envelope) => {
                assert_eq!(envelope.seq, next);
                next += 1;
            }
            Seen::Lost(first, last) => {
                assert_eq!(first, next);
                assert!(last >= first);
                losses.push((first, last));
                next = last + 1;
            }
        }
    }
    assert!(!losses.is_empty(), "the stalled subscriber must be told it lost events");
    assert!(losses[0].0 > 1, "it got what was buffered before the loss");
}

#[tokio::test]
async fn a_retried_publish_with_the_same_key_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(100, 3600)).await;
    let mut client = bus.client().await;
    let first = client.publish(publish_request("/tasks/exit", event("container", "die", "c"), "shim:1")).await;
    let first = first.unwrap().into_inner();
    let again = client.publish(publish_request("/tasks/exit", event("container", "die", "c"), "shim:1")).await;
    let again = again.unwrap().into_inner();
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!((again.seq, again.duplicate), (1, true));
    // Keys are per namespace.
    let mut other = bus.client_in("k8s.io").await;
    let elsewhere = other.publish(publish_request("/tasks/exit", event("container", "die", "c"), "shim:1")).await;
    assert_eq!(elsewhere.unwrap().into_inner().seq, 2);
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.retained, 2);

    let bad = client.publish(publish_request("tasks", event("container", "die", "c"), "")).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let bad = client
        .subscribe(SubscribeRequest {
            filters: vec![Filter { key: "colour".into(), values: vec!["red".into()] }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("colour"), "{}", bad.message());
}

#[tokio::test]
async fn since_and_until_select_a_window_by_time_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(1000, 3600)).await;
    let mut client = bus.client().await;
    for i in 0..10 {
        client
            .publish(publish_request("/tasks/start", event("container", "start", "a"), &format!("a{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = berth_common::time::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..10 {
        client.publish(publish_request("/tasks/exit", event("container", "die", "b"), &format!("b{i}"))).await.unwrap();
    }

    let collect = |request: SubscribeRequest| {
        let mut client = client.clone();
        async move {
            let mut stream = client.subscribe(request).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
                out.push(seen(item.unwrap()));
            }
            seqs(&out)
        }
    };
    let since_time = SubscribeRequest { since_time: Some(middle), until_seq: 20, ..Default::default() };
    assert_eq!(collect(since_time).await, (11..=20).collect::<Vec<_>>());
    // `until` alone replays from the oldest retained event, like `docker events --until`.
    let until_time = SubscribeRequest { until_time: Some(middle), ..Default::default() };
    assert_eq!(collect(until_time).await, (1..=10).collect::<Vec<_>>());
    let window = SubscribeRequest { since_seq: 4, until_seq: 7, ..Default::default() };
    assert_eq!(collect(window).await, vec![5, 6, 7]);
    let filtered = SubscribeRequest {
        since_seq: 0,
        until_seq: 20,
        until_time: None,
        filters: vec![Filter { key: "event".into(), values: vec!["die".into()] }],
        since_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
        all_namespaces: false,
    };
    assert_eq!(collect(filtered).await, (11..=20).collect::<Vec<_>>());
    // A live-only subscriber with a deadline ends when the deadline passes.
    let soon = berth_common::time::to_proto(chrono::Utc::now() + chrono::Duration::milliseconds(300));
    assert_eq!(
        collect(SubscribeRequest { until_time: Some(soon), since_seq: 20, ..Default::default() }).await,
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn age_retention_turns_into_a_loss_marker_for_a_resuming_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(1000, 1)).await;
    let mut client = bus.client().await;
    for i in 0..10 {
        client
            .publish(publish_request("/tasks/start", event("container", "start", "a"), &format!("a{i}")))
            .await
            .unwrap();
    }
    let mut retained = u64::MAX;
    for _ in 0..100 {
        retained = client.status(StatusRequest {}).await.unwrap().into_inner().retained;
        if retained == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(retained, 0, "events older than max-age-seconds are compacted away");
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.first_seq, status.last_seq), (0, 10));

    let request = SubscribeRequest { since_seq: 3, until_seq: 12, ..Default::default() };
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    for i in 0..2 {
        client.publish(publish_request("/tasks/exit", event("container", "die", "a"), &format!("z{i}"))).await.unwrap();
    }
    let mut received = Vec::new();
    while let Some(item) = stream.next().await {
        received.push(seen(item.unwrap()));
    }
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received[0], Seen::Lost(4, 10));
    assert!(matches!(&received[1], Seen::Event(e) if e.seq == 11));
    assert!(matches!(&received[2], Seen::Event(e) if e.seq == 12));
}

#[tokio::test]
async fn subscribers_see_their_own_namespace_unless_they_ask_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(dir.path(), config(1000, 3600)).await;
    let mut default_ns = bus.client().await;
    let mut k8s = bus.client_in("k8s.io").await;
    default_ns.publish(publish_request("/tasks/start", event("container", "start", "a"), "")).await.unwrap();
    k8s.publish(publish_request("/tasks/start", event("container", "start", "b"), "")).await.unwrap();

    let mut by_request: HashMap<&str, Vec<String>> = HashMap::new();
    for (name, mut client, all_namespaces, filters) in [
        ("default", default_ns.clone(), false, vec![]),
        ("k8s", k8s.clone(), false, vec![]),
        ("all", default_ns.clone(), true, vec![]),
        (
            "by-filter",
            default_ns.clone(),
            false,
            vec![Filter { key: "namespace".into(), values: vec!["k8s.io".into()] }],
        ),
    ] {
        let request = SubscribeRequest { until_seq: 2, all_namespaces, filters, ..Default::default() };
        let mut stream = client.subscribe(request).await.unwrap().into_inner();
        while let Some(item) = stream.next().await {
            if let Seen::Event(envelope) = seen(item.unwrap()) {
                by_request.entry(name).or_default().push(envelope.namespace);
            }
        }
    }
    assert_eq!(by_request["default"], ["default"]);
    assert_eq!(by_request["k8s"], ["k8s.io"]);
    assert_eq!(by_request["all"], ["default", "k8s.io"]);
    assert_eq!(by_request["by-filter"], ["k8s.io"]);
}
