//! Event bus benchmark against a real berthd (not a test: it prints numbers).
//!
//! * publish throughput: one publisher awaiting each acknowledgement, 16 concurrent
//!   publishers (group commit), the same with a subscriber that never reads, and the
//!   `Publisher` helper;
//! * fan-out latency (publish call -> subscriber receives it; includes the durable
//!   commit) for 1 and 50 live subscribers, p50/p99 over every (event, subscriber) pair.
//!
//! Run: `cargo build --release -p berthd && cargo bench -p berth-integration-tests --bench events`
//! (berthd is taken from the bench binary's target dir, or BERTH_BIN_DIR).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_common::client::{BerthChannel, ClientContext};
use berth_common::{Address, Namespace};
use berth_integration_tests::Daemon;
use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::events::v1::{Event, PublishRequest, SubscribeRequest, subscribe_response};
use tokio_stream::StreamExt;

async fn client(socket: &Path) -> EventsClient<BerthChannel> {
    let channel = berth_common::client::connect(&Address::Unix(socket.to_path_buf())).await.expect("connect");
    EventsClient::new(berth_common::client::intercept(
        channel,
        ClientContext::with_namespace(&Namespace::default_namespace()),
    ))
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn event(i: usize) -> Event {
    Event {
        r#type: "container".into(),
        action: "die".into(),
        actor_id: format!("bench-container-{}", i % 64),
        attributes: [
            ("name".to_string(), "bench".to_string()),
            ("image".to_string(), "busybox".to_string()),
            ("exitCode".to_string(), "0".to_string()),
            ("sent".to_string(), now_nanos().to_string()),
        ]
        .into_iter()
        .collect(),
        payload: None,
    }
}

fn request(i: usize, key: String) -> PublishRequest {
    PublishRequest { topic: "/tasks/exit".into(), event: Some(event(i)), timestamp: None, idempotency_key: key }
}

/// Publishes `per_task` events from each of `tasks` concurrent clients; returns events/s.
async fn publish(socket: &Path, tasks: usize, per_task: usize, run: &str) -> f64 {
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let mut client = client(socket).await;
        let run = run.to_string();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                client.publish(request(i, format!("{run}:{task}:{i}"))).await.expect("publish");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("publisher task");
    }
    (tasks * per_task) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1e6
}

/// Fan-out latency in ms (p50, p99) with `subscribers` live followers.
async fn fan_out(socket: &Path, subscribers: usize, tasks: usize, per_task: usize, run: &str) -> (f64, f64, f64) {
    let total = tasks * per_task;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total * subscribers)));
    let mut followers = Vec::new();
    for _ in 0..subscribers {
        let mut stream =
            client(socket).await.subscribe(SubscribeRequest::default()).await.expect("subscribe").into_inner();
        let latencies = latencies.clone();
        followers.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(total);
            while mine.len() < total {
                match stream.next().await {
                    Some(Ok(item)) => match item.item {
                        Some(subscribe_response::Item::Envelope(envelope)) => {
                            let sent: i64 = envelope
                                .event
                                .and_then(|e| e.attributes.get("sent").and_then(|s| s.parse().ok()))
                                .unwrap_or(0);
                            mine.push(now_nanos() - sent);
                        }
                        Some(subscribe_response::Item::Lost(lost)) => {
                            eprintln!("subscriber lost {}..={}", lost.first_seq, lost.last_seq)
                        }
                        None => {}
                    },
                    _ => break,
                }
            }
            latencies.lock().expect("latencies").extend(mine);
        }));
    }
    let throughput = publish(socket, tasks, per_task, run).await;
    for follower in followers {
        tokio::time::timeout(Duration::from_secs(120), follower).await.expect("followers finish").expect("follower");
    }
    let mut all = latencies.lock().expect("latencies").clone();
    all.sort_unstable();
    (percentile(&all, 0.50), percentile(&all, 0.99), throughput)
}

fn main() {
    let daemon = Daemon::start();
    let socket = daemon.socket.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // Warm-up: connections, the database file.
        publish(&socket, 4, 200, "warmup").await;

        println!("event bus benchmark (berthd at {}, durable: every ack after fsync)", socket.display());
        let one = publish(&socket, 1, 2000, "one").await;
        println!("publish throughput, 1 publisher awaiting each ack:   {one:>9.0} events/s");
        let sixteen = publish(&socket, 16, 1250, "sixteen").await;
        println!("publish throughput, 16 concurrent publishers:        {sixteen:>9.0} events/s");

        // A subscriber that never reads must not slow publishers down.
        let stalled = client(&socket).await.subscribe(SubscribeRequest::default()).await.expect("subscribe");
        let with_stalled = publish(&socket, 16, 1250, "stalled").await;
        println!("publish throughput, 16 publishers + 1 stalled reader: {with_stalled:>8.0} events/s");
        drop(stalled);

        let channel = berth_common::client::lazy_channel(&Address::Unix(socket.clone())).expect("channel");
        let publisher =
            berth_common::events::Publisher::new(berth_common::client::intercept(channel, ClientContext::default()), "bench");
        let ns = Namespace::default_namespace();
        let started = Instant::now();
        for i in 0..2000 {
            publisher.publish(&ns, "/tasks/exit", event(i)).await;
        }
        publisher.flush().await;
        let helper = 2000.0 / started.elapsed().as_secs_f64();
        println!("publish throughput, Publisher helper (one queue):    {helper:>9.0} events/s");

        for subscribers in [1, 50] {
            let (p50, p99, rate) = fan_out(&socket, subscribers, 4, 1000, &format!("fan{subscribers}")).await;
            println!(
                "fan-out latency, {subscribers:>2} subscriber(s), 4 publishers: p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  ({rate:.0} events/s published)"
            );
        }
    });
    drop(daemon);
}
