//! The event bus in a real berthd: acknowledged events survive `kill -9`, a subscriber
//! resumes from its last seq, the shim-style spooling publisher rides out a daemon outage,
//! and `berth events` prints, filters and follows like `docker events`.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use berth_common::client::{BerthChannel, ClientContext};
use berth_common::events::Publisher;
use berth_common::{Address, Namespace};
use berth_integration_tests::Daemon;
use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::events::v1::{Event, PublishRequest, StatusRequest, SubscribeRequest, subscribe_response};
use tokio_stream::StreamExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn client(socket: &Path) -> EventsClient<BerthChannel> {
    let channel = berth_common::client::connect(&Address::Unix(socket.to_path_buf())).await.unwrap();
    let context = ClientContext::with_namespace(&Namespace::default_namespace());
    EventsClient::new(berth_common::client::intercept(channel, context))
}

fn event(kind: &str, action: &str, actor: &str, attributes: &[(&str, &str)]) -> Event {
    Event {
        r#type: kind.into(),
        action: action.into(),
        actor_id: actor.into(),
        attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        payload: None,
    }
}

fn request(topic: &str, event: Event, key: String) -> PublishRequest {
    PublishRequest { topic: topic.into(), event: Some(event), timestamp: None, idempotency_key: key }
}

/// Seqs of a bounded subscription, asserting nothing was lost.
async fn seqs(socket: &Path, request: SubscribeRequest) -> Vec<u64> {
    let mut stream = client(socket).await.subscribe(request).await.unwrap().into_inner();
    let mut seqs = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.unwrap() {
        match item.unwrap().item.unwrap() {
            subscribe_response::Item::Envelope(envelope) => seqs.push(envelope.seq),
            subscribe_response::Item::Lost(lost) => panic!("lost {lost:?}"),
        }
    }
    seqs
}

/// Publishes `count` events from each of 4 concurrent clients; returns the acknowledged seqs.
async fn publish_from_4_tasks(socket: &Path, offset: usize, count: usize) -> Vec<u64> {
    let mut tasks = Vec::new();
    for task in 0..4 {
        let mut client = client(socket).await;
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in offset..offset + count {
                let event = event("container", "start", &format!("c{task}"), &[]);
                let response = client.publish(request("/tasks/start", event, format!("{task}:{i}"))).await.unwrap();
                seqs.push(response.into_inner().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

#[test]
fn acknowledged_events_survive_kill_9_and_a_subscriber_resumes_from_its_last_seq() {
    let mut daemon = Daemon::start();
    let rt = runtime();
    let socket = daemon.socket.clone();
    let mut acknowledged = rt.block_on(publish_from_4_tasks(&socket, 0, 350));
    // A follower has read up to seq 1234 when the daemon is killed, right after the last
    // acknowledgement (sled's own background flush would not have run yet).
    let last_seen = 1234;
    let from_start = prost_types::Timestamp { seconds: 1, nanos: 0 };
    let replay = SubscribeRequest { until_seq: last_seen, since_time: Some(from_start), ..Default::default() };
    assert_eq!(rt.block_on(seqs(&socket, replay)), (1..=last_seen).collect::<Vec<_>>());
    acknowledged.extend(rt.block_on(publish_from_4_tasks(&socket, 350, 150)));
    acknowledged.sort();
    assert_eq!(acknowledged, (1..=2000).collect::<Vec<_>>());
    daemon.kill9();
    daemon.start_again();

    rt.block_on(async {
        let mut client = client(&socket).await;
        let status = client.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((status.first_seq, status.last_seq, status.retained), (1, 2000, 2000), "{status:?}");

        let resume = SubscribeRequest { since_seq: last_seen, until_seq: 2100, ..Default::default() };
        let socket = socket.clone();
        let resumed = tokio::spawn(async move { seqs(&socket, resume).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..100 {
            let event = event("container", "die", "late", &[]);
            client.publish(request("/tasks/exit", event, format!("late:{i}"))).await.unwrap();
        }
        assert_eq!(resumed.await.unwrap(), (1235..=2100).collect::<Vec<_>>());
    });

    let out = daemon.berth(&["events", "--since", "seq:0", "--until", "seq:2100", "--format", "json"]).success();
    let seqs: Vec<u64> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=2100).collect::<Vec<_>>());
}

#[test]
fn a_spooling_publisher_rides_out_a_daemon_outage() {
    let mut daemon = Daemon::start();
    let rt = runtime();
    let socket = daemon.socket.clone();
    let spool = daemon.base_dir().join("shim-spool/events.spool");
    let ns = Namespace::default_namespace();
    rt.block_on(async {
        let channel = berth_common::client::lazy_channel(&Address::Unix(socket.clone())).unwrap();
        let channel = berth_common::client::intercept(channel, ClientContext::default());
        let publisher = Publisher::with_spool(channel, "shim-x", &spool).unwrap();
        publisher.publish(&ns, "/tasks/start", event("container", "start", "x", &[])).await;
        daemon.kill9();
        for i in 0..20 {
            let exit = event("container", "die", "x", &[("exitCode", &i.to_string())]);
            tokio::time::timeout(Duration::from_secs(5), publisher.publish(&ns, "/tasks/exit", exit))
                .await
                .expect("publish does not wait for a dead bus");
        }
        assert_eq!(publisher.pending(), 20);
        daemon.start_again();
        tokio::time::timeout(Duration::from_secs(60), publisher.flush()).await.expect("delivered after restart");
    });
    let out = daemon.berth(&["events", "--since", "seq:0", "--until", "seq:21", "--filter", "event=die"]).success();
    let codes: Vec<&str> =
        out.stdout.lines().map(|line| line.rsplit("exitCode=").next().unwrap().trim_end_matches(')')).collect();
    assert_eq!(codes, (0..20).map(|i| i.to_string()).collect::<Vec<_>>(), "{}", out.stdout);
}

#[test]
fn berth_events_prints_filters_and_formats_like_docker() {
    let daemon = Daemon::start();
    let rt = runtime();
    rt.block_on(async {
        let mut client = client(&daemon.socket).await;
        let web = [("name", "web"), ("image", "busybox")];
        let published = [
            ("/containers/create", event("container", "create", "c1abc", &web)),
            (
                "/tasks/exit",
                event("container", "die", "c1abc", &[("name", "web"), ("image", "busybox"), ("exitCode", "0")]),
            ),
            ("/images/pull", event("image", "pull", "docker.io/library/busybox:latest", &[])),
            (
                "/tasks/exit",
                event("container", "die", "c2def", &[("name", "db"), ("image", "alpine"), ("exitCode", "1")]),
            ),
        ];
        for (i, (topic, event)) in published.into_iter().enumerate() {
            client.publish(request(topic, event, format!("k{i}"))).await.unwrap();
        }
    });

    let out = daemon.berth(&["events", "--since", "1m", "--until", "0s"]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    let (time, rest) = lines[1].split_once(' ').unwrap();
    assert_eq!(rest, "container die c1abc (exitCode=0, image=busybox, name=web)");
    assert!(time.len() == 30 && time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");

    let out =
        daemon.berth(&["events", "--since", "seq:0", "--until", "seq:4", "-f", "event=die", "-f", "container=web"]);
    let out = out.success();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(out.stdout.contains("container die c1abc"), "{}", out.stdout);

    let out = daemon.berth(&["events", "--since", "seq:0", "--until", "seq:4", "--filter", "image=busybox"]).success();
    let actions: Vec<&str> = out.stdout.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(actions, ["create", "die", "pull"], "{}", out.stdout);

    let out = daemon.berth(&["events", "--since", "seq:1", "--until", "seq:2", "--format", "json"]).success();
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(json["Type"], "container");
    assert_eq!(json["Action"], "die");
    assert_eq!(json["Actor"]["ID"], "c1abc");
    assert_eq!(json["Actor"]["Attributes"]["exitCode"], "0");
    assert_eq!(json["from"], "busybox");
    assert_eq!(json["seq"], 2);
    assert_eq!(json["topic"], "/tasks/exit");

    // Another namespace sees none of it.
    let out = daemon.berth(&["--namespace", "other", "events", "--since", "seq:0", "--until", "0s"]).success();
    assert_eq!(out.stdout, "");

    let out = daemon.berth(&["events", "--since", "yesterday"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid --since"), "{}", out.stderr);
    let out = daemon.berth(&["events", "--filter", "colour=red", "--until", "0s"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid filter \"colour\""), "{}", out.stderr);
}

#[test]
fn berth_events_follows_live_until_interrupted() {
    let daemon = Daemon::start();
    let rt = runtime();
    let mut child = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "events", "--filter", "event=oom"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    rt.block_on(async {
        let mut client = client(&daemon.socket).await;
        // Wait until the CLI has subscribed, so the events below are live for it.
        for _ in 0..200 {
            if client.status(StatusRequest {}).await.unwrap().into_inner().subscribers >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, action) in ["start", "oom", "die", "oom"].into_iter().enumerate() {
            let event = event("container", action, &format!("c{i}"), &[]);
            client.publish(request("/tasks/x", event, String::new())).await.unwrap();
        }
    });
    let first = received.recv_timeout(Duration::from_secs(20)).expect("a live line");
    let second = received.recv_timeout(Duration::from_secs(20)).expect("a second live line");
    assert!(first.ends_with("container oom c1"), "{first}");
    assert!(second.ends_with("container oom c3"), "{second}");
    assert!(child.try_wait().unwrap().is_none(), "berth events keeps following");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("berth events did not stop on SIGINT");
}
