//! Fault suite, registry side: a full disk, a registry that answers 500, one that stalls
//! in the middle of a blob, and a pull cancelled with Ctrl-C. Every failure must be a clear
//! error, leave no image, ingest or blob behind, and not stop the next pull from working.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration_tests::faulty::{Fault, FaultyProxy};
use berth_integration_tests::inventory::{active_snapshots, blobs, ingests, snapshots};
use berth_integration_tests::{Daemon, DaemonOptions, Registry, fixtures, require_root, wait_until};

/// A child process killed and reaped however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon_with(config: &str) -> Daemon {
    Daemon::start_with(DaemonOptions { config: config.to_string(), ..Default::default() })
}

/// Nothing of a failed pull stays: no image, no unfinished ingest, no blob, no snapshot.
fn assert_nothing_left(daemon: &Daemon) {
    let images = daemon.berth(&["images", "-q"]).success().stdout;
    assert!(images.trim().is_empty(), "a failed pull left an image: {images}");
    wait_until("the failed pull's content to be collected", Duration::from_secs(20), || {
        ingests(daemon).is_empty() && blobs(daemon).is_empty() && snapshots(daemon).is_empty()
    });
}

#[test]
fn a_pull_that_does_not_fit_fails_clearly_and_a_smaller_one_then_works() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multilayer(&registry.address, "big:latest", 48 << 20);
    fixtures::push_busybox(&registry.address, "busybox:latest");
    let daemon = Daemon::start_with(DaemonOptions { root_tmpfs_bytes: Some(40 << 20), ..Default::default() });

    let big = format!("{}/big:latest", registry.address);
    let out = daemon.berth(&["pull", "-q", &big]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no space left"), "the error must say the disk is full: {}", out.stderr);
    assert_nothing_left(&daemon);

    let small = format!("{}/busybox:latest", registry.address);
    daemon.berth(&["pull", "-q", &small]).success();
    let out = daemon.berth(&["run", "--rm", "--network", "none", &small, "echo", "fits"]).success();
    assert_eq!(out.stdout, "fits\n");
    assert!(active_snapshots(&daemon).is_empty(), "{:?}", active_snapshots(&daemon));
}

#[test]
fn a_registry_answering_500_is_retried_then_reported() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_busybox(&registry.address, "busybox:latest");
    let proxy = FaultyProxy::start(&registry.address, Fault::Status(500));
    let daemon = daemon_with("max-download-attempts = 3\n");
    let reference = format!("{}/busybox:latest", proxy.address);

    let out = daemon.berth(&["pull", "-q", &reference]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("answered 500"), "{}", out.stderr);
    assert!(out.stderr.contains("gave up after 3 attempts"), "{}", out.stderr);
    // The config and the layer are each asked for three times.
    assert!(proxy.blob_requests() >= 3, "retries: {} blob requests", proxy.blob_requests());
    assert_nothing_left(&daemon);

    // The registry recovers: the same pull works.
    proxy.set_fault(Fault::None);
    daemon.berth(&["pull", "-q", &reference]).success();
}

#[test]
fn a_registry_that_stalls_mid_blob_times_out_clearly() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multilayer(&registry.address, "stall:latest", 4 << 20);
    let proxy = FaultyProxy::start(&registry.address, Fault::StallAfter(64 << 10));
    let daemon = daemon_with("max-download-attempts = 2\nregistry-read-timeout-seconds = 2\n");
    let reference = format!("{}/stall:latest", proxy.address);

    let started = Instant::now();
    let out = daemon.berth(&["pull", "-q", &reference]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("timed out"), "the error must name the timeout: {}", out.stderr);
    assert!(out.stderr.contains("gave up after 2 attempts"), "{}", out.stderr);
    // Two attempts of a 2 s read timeout, not the default two minutes.
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    assert_nothing_left(&daemon);

    proxy.set_fault(Fault::None);
    daemon.berth(&["pull", "-q", &reference]).success();
}

#[test]
fn ctrl_c_cancels_a_stalled_pull_and_the_daemon_cleans_up() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multilayer(&registry.address, "cancel:latest", 4 << 20);
    let proxy = FaultyProxy::start(&registry.address, Fault::StallAfter(64 << 10));
    let daemon = daemon_with("max-download-attempts = 1\nregistry-read-timeout-seconds = 3\n");
    let reference = format!("{}/cancel:latest", proxy.address);

    let pull = Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "pull", &reference])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting berth pull");
    let mut pull = Reaped(pull);
    wait_until("the pull to reach the stalled blob", Duration::from_secs(30), || proxy.blob_requests() > 0);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pull.0.id() as i32), nix::sys::signal::Signal::SIGINT)
        .expect("sending SIGINT");
    let interrupted = Instant::now();
    let mut status = None;
    while interrupted.elapsed() < Duration::from_secs(5) && status.is_none() {
        status = pull.0.try_wait().expect("waiting for berth pull");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = status.expect("berth pull did not stop within 5 s of Ctrl-C");
    assert!(!status.success(), "an interrupted pull must not report success");
    // The daemon's side of the pull ends at the read timeout and leaves nothing.
    assert_nothing_left(&daemon);
}
