//! berthd answers `berth version` and `berth info` over its unix socket and TCP; a second
//! daemon on the same root is refused; a killed daemon leaves no stale lock.

use berth_integration_tests::{Daemon, DaemonOptions, registry::free_port};

#[test]
fn version_and_info_over_unix_socket() {
    let daemon = Daemon::start();
    let out = daemon.berth(&["version"]).success();
    assert!(out.stdout.contains("Client:"), "{}", out.stdout);
    assert!(out.stdout.contains("Server: Berth Engine"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("Kernel Version:   {}", kernel())), "{}", out.stdout);

    let out = daemon.berth(&["version", "--format", "json"]).success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("version JSON");
    assert_eq!(json["Server"]["ApiVersion"], berth_proto::API_VERSION);
    assert_eq!(json["Server"]["Os"], "linux");

    let out = daemon.berth(&["info"]).success();
    assert!(out.stdout.contains(&format!("Berth Root Dir: {}", daemon.root.display())), "{}", out.stdout);
    assert!(out.stdout.contains("Cgroup Driver: cgroupfs"), "{}", out.stdout);

    let out = daemon.berth(&["info", "--format", "json"]).success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("info JSON");
    assert_eq!(json["DockerRootDir"], daemon.root.display().to_string());
    assert_eq!(json["StateDir"], daemon.state.display().to_string());
    assert_eq!(json["DefaultRuntime"], "runc");
    assert!(json["NCPU"].as_u64().unwrap_or(0) >= 1);
    let runtimes = json["Runtimes"].as_array().expect("runtimes");
    assert!(runtimes.iter().any(|r| r["Name"] == "runc"), "{runtimes:?}");
}

#[test]
fn version_over_tcp() {
    let port = free_port();
    let daemon = Daemon::start_with(DaemonOptions { tcp: Some(format!("127.0.0.1:{port}")), ..Default::default() });
    let out = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &format!("tcp://127.0.0.1:{port}"), "version", "--format", "json"])
        .output()
        .expect("running berth");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version JSON");
    assert_eq!(json["Server"]["Version"], env!("CARGO_PKG_VERSION"));
    drop(daemon);
}

#[test]
fn unreachable_daemon_gives_a_friendly_error() {
    let out = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", "unix:///tmp/berth-it-no-such-daemon.sock", "info"])
        .output()
        .expect("running berth");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Cannot connect to berthd at unix:///tmp/berth-it-no-such-daemon.sock"), "{stderr}");
    assert!(stderr.contains("is it running?"), "{stderr}");
}

#[test]
fn second_daemon_on_the_same_root_is_refused_and_kill_leaves_no_stale_lock() {
    let mut daemon = Daemon::start();
    let other_socket = daemon.base_dir().join("other.sock");
    let out = std::process::Command::new(berth_integration_tests::bin("berthd"))
        .arg("--config")
        .arg(&daemon.config_path)
        .arg("--address")
        .arg(format!("unix://{}", other_socket.display()))
        .output()
        .expect("running a second berthd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another berthd"), "{stderr}");
    assert!(stderr.contains(&daemon.root.display().to_string()), "{stderr}");
    assert!(!other_socket.exists(), "the refused daemon must not leave a socket behind");

    daemon.kill9();
    daemon.start_again();
    daemon.berth(&["version"]).success();
}

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

#[test]
fn services_split_across_two_daemons_start_and_answer() {
    let events =
        Daemon::start_with(DaemonOptions { args: vec!["--services".into(), "events".into()], ..Default::default() });
    let rest = Daemon::start_with(DaemonOptions {
        args: vec!["--services".into(), "images,snapshots,containers".into()],
        config: format!("[service-addresses]\nevents = \"{}\"\n", events.address()),
        ..Default::default()
    });
    let out = events.berth(&["version", "--format", "json"]).success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["Server"]["Services"], serde_json::json!(["events"]));
    let out = rest.berth(&["version", "--format", "json"]).success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["Server"]["Services"], serde_json::json!(["images", "snapshots", "containers"]));
    rest.berth(&["info"]).success();
}
