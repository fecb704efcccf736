//! Fault suite, engine side: a shim killed with SIGKILL, berthd killed in the middle of
//! `run` and of `commit`, and many clients racing on the same names. Afterwards the state
//! must be right, nothing half-made visible, and no mount, shim, bundle or network left.

use std::time::{Duration, Instant};

use berth_integration_tests::inventory::{active_snapshots, blobs, ingests, leftovers, shims};
use berth_integration_tests::{Daemon, Registry, fixtures, require_root, wait_until};

fn setup() -> (Registry, Daemon, String) {
    berth_integration_tests::daemon_with_busybox()
}

fn remove_all(daemon: &Daemon) {
    let ids: Vec<String> = daemon.berth(&["ps", "-aq"]).success().stdout.lines().map(str::to_string).collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        daemon.berth(&args).success();
    }
}

/// After every container is removed: nothing of them is left anywhere.
fn assert_clean(daemon: &Daemon) {
    remove_all(daemon);
    let left = leftovers(daemon, &[]);
    assert!(left.is_empty(), "left behind: {left:#?}");
    // A rootfs whose container record never got written is reclaimed soon after start.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !active_snapshots(daemon).is_empty() {
        assert!(Instant::now() < deadline, "active snapshots: {:?}", active_snapshots(daemon));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_shim_is_reported_and_its_name_can_be_used_again() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon.berth(&["run", "-d", "--name", "victim", "--network", "none", &image, "sleep", "1000"]).success();
    let pid = daemon.inspect("victim")["State"]["Pid"].as_i64().expect("a running container has a pid");
    let shim_pids = shims(&daemon);
    assert_eq!(shim_pids.len(), 1, "one shim per container: {shim_pids:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim_pids[0]), nix::sys::signal::Signal::SIGKILL)
        .expect("killing the shim");

    wait_until("the container to be reported exited", Duration::from_secs(20), || {
        daemon.inspect("victim")["State"]["Status"] == "exited"
    });
    let state = daemon.inspect("victim")["State"].clone();
    let error = state["Error"].as_str().unwrap_or_default();
    assert!(error.contains("shim died"), "the reason must say what happened: {state}");
    assert_eq!(state["Running"], false);
    // The container's processes did not outlive the shim.
    wait_until("the orphaned container process to be gone", Duration::from_secs(10), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err()
    });
    let ps = daemon.berth(&["ps", "-a", "--filter", "name=victim"]).success().stdout;
    assert!(ps.contains("Exited"), "{ps}");

    daemon.berth(&["rm", "victim"]).success();
    let out =
        daemon.berth(&["run", "--rm", "--name", "victim", "--network", "none", &image, "echo", "again"]).success();
    assert_eq!(out.stdout, "again\n");
    assert_clean(&daemon);
}

/// Kills berthd `delay` after a `berth run -d` starts, restarts it, and checks the
/// container is either fully there (and consistent with its processes) or not there.
fn kill_during_run(daemon: &mut Daemon, image: &str, name: &str, delay: Duration) {
    let mut run = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "run", "-d", "--name", name, image, "sleep", "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting berth run");
    std::thread::sleep(delay);
    daemon.kill9();
    let _ = run.wait();
    daemon.start_again();

    let listed = daemon.berth(&["ps", "-a", "--filter", &format!("name={name}"), "--format", "json"]).success();
    match listed.stdout.lines().next() {
        None => {
            // Never recorded: nothing of it may exist.
            assert!(shims(daemon).is_empty(), "a shim without a container: {:?}", shims(daemon));
        }
        Some(line) => {
            let row: serde_json::Value = serde_json::from_str(line).expect("ps JSON");
            let state = daemon.inspect(name)["State"].clone();
            let running = state["Running"] == true;
            assert_eq!(running, !shims(daemon).is_empty(), "state {state} vs shims {:?}; ps {row}", shims(daemon));
            if running {
                // Still managed after the crash.
                daemon.berth(&["stop", "-t", "1", name]).success();
            }
        }
    }
    assert_clean(daemon);
}

#[test]
fn berthd_killed_during_run_leaves_a_consistent_state() {
    require_root!();
    let (_registry, mut daemon, image) = setup();
    // From early (create) through the middle (shim start) to late (after the start is
    // recorded): a spread of crash points.
    for (i, millis) in [20u64, 60, 100, 150, 200, 300, 450, 700].into_iter().enumerate() {
        kill_during_run(&mut daemon, &image, &format!("crash{i}"), Duration::from_millis(millis));
    }
    // The engine still works normally.
    let out = daemon.berth(&["run", "--rm", &image, "echo", "alive"]).success();
    assert_eq!(out.stdout, "alive\n");
    assert_clean(&daemon);
}

#[test]
fn berthd_killed_during_commit_leaves_no_partial_image() {
    require_root!();
    let (_registry, mut daemon, image) = setup();
    // A large, incompressible change so the commit takes a while.
    daemon
        .berth(&[
            "run",
            "--name",
            "source",
            "--network",
            "none",
            &image,
            "sh",
            "-c",
            "head -c 32000000 /dev/urandom > /big && echo done",
        ])
        .success();
    let images_before = daemon.berth(&["images", "-q", "--no-trunc"]).success().stdout;
    let blobs_before = blobs(&daemon).len();

    let mut commit = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "commit", "source", "partial:v1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting berth commit");
    wait_until("the commit's layer to be half-written", Duration::from_secs(60), || {
        ingests(&daemon).iter().any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > (1 << 20)))
    });
    daemon.kill9();
    let _ = commit.wait();

    daemon.start_again();
    let images_after = daemon.berth(&["images", "-q", "--no-trunc"]).success().stdout;
    assert_eq!(images_before, images_after, "no partial image may appear");
    wait_until("the interrupted commit's content to be reclaimed", Duration::from_secs(20), || {
        ingests(&daemon).is_empty() && blobs(&daemon).len() == blobs_before
    });
    // The container's own snapshot is its only active one, and it still commits.
    assert_eq!(active_snapshots(&daemon).len(), 1, "{:?}", active_snapshots(&daemon));
    daemon.berth(&["commit", "source", "whole:v1"]).success();
    let out = daemon.berth(&["run", "--rm", "--network", "none", "whole:v1", "sh", "-c", "wc -c < /big"]).success();
    assert_eq!(out.stdout.trim(), "32000000");
    assert_clean(&daemon);
}

#[test]
fn twenty_clients_racing_on_the_same_names_leave_no_duplicates_or_leaks() {
    require_root!();
    let (registry, daemon, image) = setup();
    fixtures::push_multilayer(&registry.address, "shared:latest", 1 << 20);
    let shared = format!("{}/shared:latest", registry.address);
    let names = ["race0", "race1", "race2", "race3"];
    let deadline = Instant::now() + Duration::from_secs(600);

    let created: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..20)
            .map(|client| {
                let (daemon, image, shared) = (&daemon, &image, &shared);
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    if client % 5 == 0 {
                        daemon.berth(&["pull", "-q", shared]).success();
                    }
                    for round in 0..3 {
                        let name = names[(client + round) % names.len()];
                        let out =
                            daemon.berth(&["create", "--name", name, "--network", "none", image, "sleep", "1000"]);
                        if out.code == 0 {
                            ids.push(out.stdout.trim().to_string());
                        } else {
                            assert!(out.stderr.contains("already in use"), "unexpected create failure: {out:?}");
                        }
                        // Whoever holds the name now: start, stop, remove. Losing a race
                        // to another client is fine; a hang or a crash is not.
                        let _ = daemon.berth(&["start", name]);
                        let _ = daemon.berth(&["stop", "-t", "1", name]);
                        let _ = daemon.berth(&["rm", "-f", name]);
                        assert!(Instant::now() < deadline, "the race took too long (deadlock?)");
                    }
                    ids
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a client thread panicked")).collect()
    });
    let created: Vec<String> = created.into_iter().flatten().collect();
    let unique: std::collections::BTreeSet<&String> = created.iter().collect();
    assert_eq!(unique.len(), created.len(), "two creates returned the same id");
    assert!(created.len() >= names.len(), "every name was created at least once");

    // Whatever survived the race, names are unique.
    let rows = daemon.berth(&["ps", "-a", "--format", "json"]).success().stdout;
    let mut seen = std::collections::BTreeSet::new();
    for line in rows.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("ps JSON");
        let name = row["Names"].as_str().unwrap_or_default().to_string();
        assert!(seen.insert(name.clone()), "duplicate name {name}: {rows}");
    }
    // Both images are whole: each runs.
    daemon.berth(&["run", "--rm", "--network", "none", &shared, "cat", "/data/keep.txt"]).success();
    assert_clean(&daemon);
}
