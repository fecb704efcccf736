//! Containers end to end: a real berthd, real runc through berth-shim, a real registry
//! serving a busybox image built by umoci.

use std::time::{Duration, Instant};

use berth_integration_tests::{Daemon, Registry, require_root, wait_until};

fn setup() -> (Registry, Daemon, String) {
    berth_integration_tests::daemon_with_busybox()
}

#[test]
fn run_prints_output_and_passes_exit_codes() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let out = daemon.berth(&["run", "--rm", &image, "echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{}", out.stderr);

    let out = daemon.berth(&["run", "--name", "three", &image, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(daemon.inspect("three")["State"]["ExitCode"], 3);

    let out = daemon.berth(&["run", "--rm", &image, "no-such-command"]);
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert!(out.stderr.contains("executable file not found"), "{}", out.stderr);

    // --rm removed the containers it ran; the failed one is gone too.
    let out = daemon.berth(&["ps", "-a", "-q", "--no-trunc"]).success();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);

    let out = daemon.berth(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        &image,
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -u)",
    ]);
    assert_eq!(out.stdout, "hello /tmp 65534\n", "{}", out.stderr);

    let out = daemon.berth_with_input(&["run", "--rm", "-i", &image, "cat"], Some(b"from stdin\n"));
    assert_eq!(out.stdout, "from stdin\n", "{}", out.stderr);
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn detached_logs_stop_and_forced_removal() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let id = daemon
        .berth(&[
            "run",
            "-d",
            "--name",
            "ticker",
            &image,
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick $i; sleep 0.2; done; sleep 1000",
        ])
        .success()
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");

    // logs -f follows: it sees lines written after it started and keeps going while the
    // container runs.
    let mut follower = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(follower.try_wait().unwrap().is_none(), "logs -f ended while the container runs");
    let out = daemon.berth(&["logs", "-t", "--tail", "2", "ticker"]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[1].ends_with(" tick 3") && lines[1].contains('T'), "{}", out.stdout);

    let ps = daemon.berth(&["ps"]).success().stdout;
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(ps.contains("Up ") && ps.contains("ticker"), "{ps}");

    // sleep as PID 1 ignores SIGTERM: stop kills it once the timeout passes.
    let started = Instant::now();
    daemon.berth(&["stop", "-t", "1", "ticker"]).success();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    let state = daemon.inspect("ticker")["State"].clone();
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["ExitCode"], 137);
    let output = follower.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "tick 1\ntick 2\ntick 3\n");

    // A container that handles SIGTERM stops at once with its own code.
    daemon
        .berth(&[
            "run",
            "-d",
            "--name",
            "polite",
            &image,
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ])
        .success();
    let started = Instant::now();
    daemon.berth(&["stop", "polite"]).success();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(daemon.inspect("polite")["State"]["ExitCode"], 0);

    // rm refuses a running container; rm -f kills it and leaves no mount behind.
    daemon.berth(&["run", "-d", "--name", "busy", &image, "sleep", "1000"]).success();
    let out = daemon.berth(&["rm", "busy"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("You cannot remove a running container"), "{}", out.stderr);
    daemon.berth(&["rm", "-f", "busy", "ticker", "polite"]).success();
    assert!(daemon.berth(&["ps", "-aq"]).success().stdout.trim().is_empty());
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn names_filters_inspect_exec_top_pause() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon
        .berth(&["run", "-d", "--name", "web", "-l", "tier=front", "-h", "webhost", &image, "sleep", "1000"])
        .success();
    let out = daemon.berth(&["run", "-d", "--name", "web", &image, "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("is already in use"), "{}", out.stderr);

    let json = daemon.inspect("web");
    assert_eq!(json["Name"], "/web");
    assert_eq!(json["State"]["Running"], true);
    assert!(json["State"]["Pid"].as_u64().unwrap() > 0);
    assert_eq!(json["Config"]["Labels"]["tier"], "front");
    assert!(json["LogPath"].as_str().unwrap().ends_with(".log"));
    // Addressable by id prefix as well as by name.
    let id = json["Id"].as_str().unwrap().to_string();
    assert_eq!(daemon.inspect(&id[..6])["Name"], "/web");

    let out = daemon.berth(&["exec", "web", "hostname"]).success();
    assert_eq!(out.stdout, "webhost\n");
    let out = daemon.berth(&["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(out.code, 7);
    let out = daemon.berth(&["exec", "-u", "nobody", "web", "id", "-u"]).success();
    assert_eq!(out.stdout, "65534\n");

    let out = daemon.berth(&["top", "web"]).success();
    assert!(out.stdout.starts_with("UID"), "{}", out.stdout);
    assert!(out.stdout.contains("sleep 1000"), "{}", out.stdout);

    daemon.berth(&["pause", "web"]).success();
    assert!(daemon.berth(&["ps"]).success().stdout.contains("(Paused)"));
    daemon.berth(&["unpause", "web"]).success();
    assert!(!daemon.berth(&["ps"]).success().stdout.contains("(Paused)"));

    daemon.berth(&["run", "--name", "done", &image, "true"]).success();
    let running = daemon.berth(&["ps", "-q"]).success().stdout;
    assert_eq!(running.lines().count(), 1);
    let exited = daemon.berth(&["ps", "-a", "--filter", "status=exited", "--format", "json"]).success().stdout;
    let rows: Vec<serde_json::Value> = exited.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "one JSON object per line, like Docker: {exited}");
    assert_eq!(rows[0]["Names"], "done");
    let labelled = daemon.berth(&["ps", "-a", "-q", "--filter", "label=tier=front"]).success().stdout;
    assert_eq!(labelled.trim(), &id[..12]);
    daemon.berth(&["rm", "-f", "web", "done"]).success();
}

#[test]
fn restart_policy_and_memory_limit() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon
        .berth(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", &image, "sh", "-c", "exit 1"])
        .success();
    wait_until("two restarts", Duration::from_secs(20), || {
        let state = daemon.inspect("flaky");
        state["RestartCount"] == 2 && state["State"]["Status"] == "exited"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(daemon.inspect("flaky")["RestartCount"], 2, "no third restart");

    // Limits reach the container's cgroup (v1 paths: this host is cgroup v1 + hybrid v2).
    let out = daemon.berth(&[
        "run", "--rm", "--pids-limit", "10", "--cpus", "1.5", "-c", "512", "-m", "48m", &image, "sh", "-c",
        "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    if berth_common::host::CgroupMode::detect() != berth_common::host::CgroupMode::Unified {
        assert_eq!(out.stdout, "10\n150000\n512\n50331648\n", "{}", out.stderr);
    }
    let out = daemon.berth(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        &image,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7; do sleep 5 & done; wait",
    ]);
    assert!(
        out.stderr.contains("can't fork") || out.stderr.contains("Resource temporarily unavailable"),
        "{}",
        out.stderr
    );

    let out = daemon.berth(&["run", "--name", "hog", "-m", "32m", &image, "sh", "-c", "tail /dev/zero"]);
    assert_eq!(out.code, 137, "{}", out.stderr);
    let state = daemon.inspect("hog")["State"].clone();
    assert_eq!(state["OOMKilled"], true);
    let events =
        daemon.berth(&["events", "--since", "seq:0", "--until", "0s", "--filter", "event=oom"]).success().stdout;
    assert!(events.contains(" container oom ") && events.contains("name=hog"), "{events}");
    daemon.berth(&["rm", "flaky", "hog"]).success();
}

#[test]
fn containers_survive_a_killed_daemon_and_exits_are_collected() {
    require_root!();
    let (_registry, mut daemon, image) = setup();
    for i in 0..18 {
        daemon.berth(&["run", "-d", "--name", &format!("long{i}"), &image, "sleep", "1000"]).success();
    }
    let before = daemon.berth(&["events", "--since", "seq:0", "--until", "0s", "--format", "json"]).success().stdout;
    let last_seq = before
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    daemon.berth(&["run", "-d", "--name", "exit4", &image, "sh", "-c", "sleep 2; exit 4"]).success();
    daemon.berth(&["run", "-d", "--name", "exit5", &image, "sh", "-c", "sleep 2; exit 5"]).success();
    daemon.kill9();
    // Both short ones exit while no daemon runs.
    std::thread::sleep(Duration::from_secs(4));
    daemon.start_again();
    wait_until("exits collected", Duration::from_secs(20), || {
        daemon.inspect("exit4")["State"]["Status"] == "exited" && daemon.inspect("exit5")["State"]["Status"] == "exited"
    });
    assert_eq!(daemon.inspect("exit4")["State"]["ExitCode"], 4);
    assert_eq!(daemon.inspect("exit5")["State"]["ExitCode"], 5);
    // The shims published both exits, spooled while the bus was down.
    let since = format!("seq:{last_seq}");
    let mut dies = String::new();
    wait_until("both die events", Duration::from_secs(20), || {
        dies = daemon.berth(&["events", "--since", &since, "--until", "0s", "--filter", "event=die"]).success().stdout;
        dies.contains("name=exit4") && dies.contains("name=exit5")
    });
    assert!(dies.contains("exitCode=4") && dies.contains("exitCode=5"), "{dies}");
    let running = daemon.berth(&["ps", "-q"]).success().stdout;
    assert_eq!(running.lines().count(), 18, "{running}");
    // The reconnected containers are still managed: stop works on them.
    daemon.berth(&["stop", "-t", "0", "long0"]).success();
    assert_eq!(daemon.inspect("long0")["State"]["ExitCode"], 137);
    let all: Vec<String> = daemon.berth(&["ps", "-aq"]).success().stdout.lines().map(str::to_string).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(all.iter().map(String::as_str));
    daemon.berth(&args).success();
    // No mount, shim, container process, bundle or network state outlives them.
    let left = berth_integration_tests::inventory::leftovers(&daemon, &[]);
    assert!(left.is_empty(), "left behind: {left:#?}");
}
