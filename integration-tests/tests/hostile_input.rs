//! Fault suite, hostile input through the public API (the CLI and raw gRPC): malformed
//! references, huge names, unknown and invalid namespaces, path traversal in `cp` and in
//! volume paths, layers that try to escape, archives with broken JSON. Each gets a clear
//! error of the InvalidArgument kind and changes nothing.

use std::time::Duration;

use berth_common::Address;
use berth_integration_tests::inventory::{active_snapshots, blobs, files_below, ingests};
use berth_integration_tests::{Daemon, Registry, require_root};
use berth_proto::containers::v1::CreateContainerRequest;
use berth_proto::containers::v1::containers_client::ContainersClient;
use tonic::Code;

fn setup() -> (Registry, Daemon, String) {
    berth_integration_tests::daemon_with_busybox()
}

/// What a client can see of the daemon's state; hostile requests must not change it.
fn observable(daemon: &Daemon) -> (String, String, String, usize) {
    let images = daemon.berth(&["images", "-a", "-q", "--no-trunc"]).success().stdout;
    let containers = daemon.berth(&["ps", "-a", "-q", "--no-trunc"]).success().stdout;
    let volumes = daemon.berth(&["volume", "ls"]).success().stdout;
    (images, containers, volumes, blobs(daemon).len())
}

/// Runs the CLI and expects a failure whose message contains `needle`.
#[track_caller]
fn refused(daemon: &Daemon, args: &[&str], needle: &str) {
    let out = daemon.berth(args);
    assert_ne!(out.code, 0, "{args:?} must fail: {out:?}");
    assert!(
        out.stderr.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: the error should mention {needle:?}: {}",
        out.stderr
    );
}

/// A tar whose single entry has exactly this name (the tar crate refuses `..` when asked
/// politely, so the header is written by hand).
fn tar_with_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    let raw = name.as_bytes();
    header.as_old_mut().name[..raw.len()].copy_from_slice(raw);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, data).expect("appending to an in-memory tar");
    builder.into_inner().expect("finishing an in-memory tar")
}

/// The error of a call that must fail (without printing a huge accepted request).
#[track_caller]
fn refusal<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(_) => panic!("{what} was accepted; it must be refused"),
        Err(status) => status,
    }
}

#[test]
fn malformed_references_and_names_are_refused() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let before = observable(&daemon);
    let long_repo = "a".repeat(300);
    for bad in ["UPPER/case", "busybox:tag:tag", "bad//name", "_under", "sp ace", long_repo.as_str(), "x@sha256:nothex"]
    {
        refused(&daemon, &["pull", bad], "invalid reference");
        refused(&daemon, &["tag", &image, bad], "invalid reference");
    }
    let out = daemon.berth(&["run", "--rm", "UPPER/case", "true"]);
    assert_eq!(out.code, 125, "an engine-side refusal of run is 125: {out:?}");
    assert!(out.stderr.contains("invalid reference"), "{}", out.stderr);

    for bad in ["a/slash", "..", "with space", "é"] {
        refused(&daemon, &["create", "--name", bad, &image], "invalid container name");
    }
    refused(&daemon, &["network", "create", "../../etc"], "invalid");
    refused(&daemon, &["volume", "create", "../../etc"], "invalid");
    assert_eq!(before, observable(&daemon), "refused requests changed the state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_names_and_bad_namespaces_are_refused_over_grpc() {
    require_root!();
    let (_registry, daemon, image) = tokio::task::block_in_place(setup);
    let before = tokio::task::block_in_place(|| observable(&daemon));
    let channel = berth_common::client::connect(&Address::Unix(daemon.socket.clone())).await.expect("connecting");
    let mut containers = ContainersClient::new(channel.clone());
    let config = berth_proto::containers::v1::ContainerConfig { image: image.clone(), ..Default::default() };

    // 100 KB: read, and refused by the name rules.
    let request =
        CreateContainerRequest { name: "n".repeat(100_000), config: Some(config.clone()), ..Default::default() };
    let status = refusal(containers.create(request).await, "a 100 KB name");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("name"), "{status:?}");

    // 10 MB: over the message limit, refused before any work.
    let request =
        CreateContainerRequest { name: "n".repeat(10 << 20), config: Some(config.clone()), ..Default::default() };
    let status = refusal(containers.create(request).await, "a 10 MB name");
    assert!(matches!(status.code(), Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange), "{status:?}");

    // An invalid namespace in the metadata.
    let mut request = tonic::Request::new(CreateContainerRequest {
        name: "ok".into(),
        config: Some(config.clone()),
        ..Default::default()
    });
    request.metadata_mut().insert("berth-namespace", "../../etc".parse().expect("ascii metadata"));
    let status = refusal(containers.create(request).await, "an invalid namespace");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("invalid namespace"), "{status:?}");

    tokio::task::block_in_place(|| {
        // The CLI says the same; an unknown (valid) namespace is just empty.
        refused(&daemon, &["--namespace", "../x", "ps"], "invalid namespace");
        let out = daemon.berth(&["--namespace", "nobody-here", "ps", "-aq"]).success();
        assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
        refused(&daemon, &["--namespace", "nobody-here", "rm", "ok"], "no such container");
        assert_eq!(before, observable(&daemon), "refused requests changed the state");
    });
}

#[test]
fn traversal_in_cp_and_volume_paths_stays_inside() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon.berth(&["run", "-d", "--name", "box", "--network", "none", &image, "sleep", "1000"]).success();
    let work = tempfile::tempdir().expect("a temp dir");
    let marker = format!("berth-escape-{}", std::process::id());
    let source = work.path().join("payload");
    std::fs::write(&source, "payload\n").expect("writing the payload");

    // `..` climbs to the container's root and no further.
    let target = format!("box:../../../../../tmp/{marker}");
    daemon.berth(&["cp", source.to_str().expect("utf-8 path"), &target]).success();
    assert!(!std::path::Path::new("/tmp").join(&marker).exists(), "cp wrote a host file");
    let out = daemon.berth(&["exec", "box", "cat", &format!("/tmp/{marker}")]).success();
    assert_eq!(out.stdout, "payload\n");
    let host_copy = work.path().join("copied");
    daemon.berth(&["cp", "box:../../../../etc/hostname", host_copy.to_str().expect("utf-8 path")]).success();
    let copied = std::fs::read_to_string(&host_copy).expect("the copied file");
    assert_ne!(copied, std::fs::read_to_string("/etc/hostname").unwrap_or_default(), "read the host's file");

    // Volume and mount paths.
    let before = observable(&daemon);
    refused(&daemon, &["run", "--rm", "-v", "/tmp:../etc", &image, "true"], "absolute");
    refused(&daemon, &["run", "--rm", "-v", "../../etc:/x", &image, "true"], "invalid");
    refused(
        &daemon,
        &["run", "--rm", "--mount", "type=bind,source=/no/such/dir,target=/x", &image, "true"],
        "not exist",
    );
    refused(&daemon, &["run", "--rm", "--mount", "type=volume,source=../up,target=/x", &image, "true"], "invalid");
    assert_eq!(before, observable(&daemon), "refused requests changed the state");
    daemon.berth(&["rm", "-f", "box"]).success();
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn escaping_layers_and_broken_archives_are_refused_and_leave_nothing() {
    require_root!();
    let (_registry, daemon, _image) = setup();
    let before = observable(&daemon);
    let work = tempfile::tempdir().expect("a temp dir");
    for name in ["../escape".to_string(), "a/../../escape".to_string()] {
        let tarball = work.path().join("hostile.tar");
        std::fs::write(&tarball, tar_with_entry(&name, b"x")).expect("writing the tar");
        refused(&daemon, &["import", tarball.to_str().expect("utf-8 path"), "hostile:latest"], "invalid");
    }
    // A docker-archive whose manifest.json is not JSON.
    let broken = work.path().join("broken.tar");
    std::fs::write(&broken, tar_with_entry("manifest.json", b"{ not json")).expect("writing the tar");
    refused(&daemon, &["load", "-i", broken.to_str().expect("utf-8 path")], "manifest.json");

    // `..` from a layer root would land elsewhere in the daemon's directories.
    let escaped: Vec<_> = files_below(daemon.base_dir()).into_iter().filter(|f| f.ends_with("escape")).collect();
    assert!(escaped.is_empty(), "a layer wrote outside its root: {escaped:?}");
    // Nothing half-made: no image, no ingest, no extra blob, no snapshot in work.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(ingests(&daemon).is_empty() && observable(&daemon) == before) {
        assert!(std::time::Instant::now() < deadline, "left behind: {:?} {:?}", ingests(&daemon), observable(&daemon));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(active_snapshots(&daemon).is_empty(), "{:?}", active_snapshots(&daemon));
}
