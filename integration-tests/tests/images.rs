//! The images service end to end against a real distribution registry with fixture
//! images built by umoci and pushed by skopeo: pull with progress, up-to-date pulls,
//! streamed unpacking of a whiteout image into the snapshot service, platform selection
//! from a multi-arch index, digest verification, crash recovery, tag / rmi / prune.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_common::Address;
use berth_integration_tests::inventory::{blobs, files_below, ingests};
use berth_integration_tests::{Daemon, Registry, fixtures, require_root};
use berth_proto::images::v1::InspectImageRequest;
use berth_proto::images::v1::images_client::ImagesClient;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::{Kind, ListSnapshotsRequest, StatSnapshotRequest, ViewSnapshotRequest};
use futures::StreamExt;

async fn images(daemon: &Daemon) -> ImagesClient<tonic::transport::Channel> {
    let channel = berth_common::client::connect(&Address::Unix(daemon.socket.clone())).await.unwrap();
    ImagesClient::new(channel).max_decoding_message_size(64 << 20)
}

async fn snapshots(daemon: &Daemon) -> SnapshotsClient<tonic::transport::Channel> {
    let channel = berth_common::client::connect(&Address::Unix(daemon.socket.clone())).await.unwrap();
    SnapshotsClient::new(channel)
}

async fn committed_snapshots(daemon: &Daemon) -> Vec<String> {
    let mut stream = snapshots(daemon).await.list(ListSnapshotsRequest { filters: vec![] }).await.unwrap().into_inner();
    let mut names = Vec::new();
    while let Some(batch) = stream.next().await {
        names.extend(batch.unwrap().info.into_iter().filter(|i| i.kind == Kind::Committed as i32).map(|i| i.name));
    }
    names
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_shows_progress_lists_the_image_and_is_then_up_to_date() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_busybox(&registry.address, "busybox:latest");
    let daemon = Daemon::start();
    let reference = format!("{}/busybox:latest", registry.address);

    let out = daemon.berth(&["pull", &reference]).success();
    assert!(out.stdout.starts_with("latest: Pulling from busybox\n"), "{}", out.stdout);
    assert!(out.stdout.contains(": Downloading") || out.stdout.contains(": Extracting"), "{}", out.stdout);
    assert!(out.stdout.contains(": Pull complete"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("Status: Downloaded newer image for {reference}")), "{}", out.stdout);
    assert!(out.stdout.ends_with(&format!("\n{reference}\n")), "{}", out.stdout);

    let out = daemon.berth(&["images"]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID") && lines[0].ends_with("SIZE"),
        "{}",
        out.stdout
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..2], &[format!("{}/busybox", registry.address).as_str(), "latest"], "{}", out.stdout);
    assert_eq!(row[2].len(), 12, "{}", out.stdout);

    // Again: up to date, no layer downloaded or unpacked.
    let blob_times: Vec<_> = blobs(&daemon).iter().map(|b| std::fs::metadata(b).unwrap().modified().unwrap()).collect();
    let out = daemon.berth(&["pull", &reference]).success();
    assert!(out.stdout.contains(&format!("Status: Image is up to date for {reference}")), "{}", out.stdout);
    assert!(out.stdout.contains(": Already exists"), "{}", out.stdout);
    assert!(!out.stdout.contains("Downloading") && !out.stdout.contains("Extracting"), "{}", out.stdout);
    let after: Vec<_> = blobs(&daemon).iter().map(|b| std::fs::metadata(b).unwrap().modified().unwrap()).collect();
    assert_eq!(blob_times, after, "no blob rewritten");

    // What the containers service relies on.
    let inspect = images(&daemon)
        .await
        .inspect(InspectImageRequest { reference: reference.clone(), platform: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspect.name, reference);
    assert_eq!(inspect.config.as_ref().unwrap().cmd, vec!["sh"]);
    assert!(inspect.config.as_ref().unwrap().cmd_set);
    assert_eq!(inspect.diff_ids.len(), 1);
    assert_eq!(inspect.chain_ids, inspect.diff_ids, "a one-layer chain id is its diff id");
    assert!(inspect.unpacked);
    let top = inspect.chain_ids.last().unwrap().clone();
    let stat = snapshots(&daemon).await.stat(StatSnapshotRequest { key: top }).await.unwrap().into_inner();
    assert_eq!(stat.info.unwrap().kind, Kind::Committed as i32);

    let out = daemon.berth(&[
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}} {{json .Config.Cmd}}",
        "busybox-missing",
        &reference,
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("No such image: busybox-missing"), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "linux/amd64 [\"sh\"]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_with_whiteouts_unpack_in_chain_order() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multilayer(&registry.address, "layers:latest", 0);
    let daemon = Daemon::start();
    let reference = format!("{}/layers:latest", registry.address);
    let out = daemon.berth(&["pull", &reference]).success();
    assert_eq!(out.stdout.matches(": Pull complete").count(), 3, "{}", out.stdout);

    let inspect =
        images(&daemon).await.inspect(InspectImageRequest { reference: "127.0.0.1-nope".into(), platform: None }).await;
    assert_eq!(inspect.unwrap_err().code(), tonic::Code::NotFound);
    let inspect = images(&daemon)
        .await
        .inspect(InspectImageRequest { reference: reference.clone(), platform: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspect.chain_ids.len(), 3);
    let mut client = snapshots(&daemon).await;
    for (i, chain_id) in inspect.chain_ids.iter().enumerate() {
        let info = client.stat(StatSnapshotRequest { key: chain_id.clone() }).await.unwrap().into_inner().info.unwrap();
        let parent = if i == 0 { String::new() } else { inspect.chain_ids[i - 1].clone() };
        assert_eq!(info.parent, parent, "layer {i}");
    }

    // The merged view shows the whiteouts applied.
    let view = client
        .view(ViewSnapshotRequest {
            key: "test-view".into(),
            parent: inspect.chain_ids[2].clone(),
            labels: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let target = daemon.base_dir().join("view");
    std::fs::create_dir(&target).unwrap();
    {
        let mount = &view.mounts[0];
        let data = mount.options.join(",");
        let flags = if mount.r#type == "bind" { nix::mount::MsFlags::MS_BIND } else { nix::mount::MsFlags::empty() };
        nix::mount::mount(
            Some(mount.source.as_str()),
            &target,
            Some(mount.r#type.as_str()),
            flags,
            Some(data.as_str()),
        )
        .unwrap();
        let _unmount = Unmount(target.clone());
        assert_eq!(std::fs::read_to_string(target.join("data/keep.txt")).unwrap(), "keep\n");
        assert_eq!(std::fs::read_to_string(target.join("data/new.txt")).unwrap(), "new\n");
        assert!(!target.join("data/gone.txt").exists(), "whited out by the third layer");
        assert!(!target.join("opt/old/x").exists(), "hidden by the opaque directory");
        assert_eq!(std::fs::read_to_string(target.join("opt/old/y")).unwrap(), "fresh\n");
        assert!(target.join("bin/busybox").exists());
    }
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_resolves_to_the_host_or_the_requested_platform() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multiarch(&registry.address, "multi:latest");
    let daemon = Daemon::start();
    let reference = format!("{}/multi:latest", registry.address);

    let out = daemon.berth(&["pull", "--platform", "linux/s390x", &reference]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no matching manifest for linux/s390x"), "{}", out.stderr);

    daemon.berth(&["pull", "-q", &reference]).success();
    let out = daemon.berth(&["image", "inspect", "-f", "{{.Architecture}}", &reference]).success();
    #[cfg(target_arch = "x86_64")]
    assert_eq!(out.stdout.trim(), "amd64");
    let inspect = images(&daemon)
        .await
        .inspect(InspectImageRequest { reference: reference.clone(), platform: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspect.target.unwrap().media_type, "application/vnd.oci.image.index.v1+json");

    // Only the host's manifest was fetched.
    let out = daemon.berth(&["image", "inspect", "--platform", "linux/arm64", &reference]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no manifest for platform linux/arm64"), "{}", out.stderr);

    // The arm64/v8 entry, by --platform, on a daemon that has nothing else.
    let arm_daemon = Daemon::start();
    let out = arm_daemon.berth(&["pull", "--platform", "linux/arm64/v8", &reference]).success();
    assert!(out.stdout.contains("Downloaded newer image"), "{}", out.stdout);
    let out = arm_daemon.berth(&["image", "inspect", "-f", "{{.Architecture}}", &reference]).success();
    assert_eq!(out.stdout.trim(), "arm64");
    let arm_id = arm_daemon.berth(&["images", "-q"]).success().stdout;
    let host_id = daemon.berth(&["images", "-q"]).success().stdout;
    assert_ne!(arm_id, host_id, "the platforms have different configs");

    // Pulling the other platform of the same index into the first daemon: the shared
    // busybox layer already exists.
    let out = daemon.berth(&["pull", "--platform", "linux/arm64", &reference]).success();
    assert!(out.stdout.contains("Already exists"), "{}", out.stdout);
    let out = daemon
        .berth(&["image", "inspect", "--platform", "linux/arm64/v8", "-f", "{{.Architecture}}", &reference])
        .success();
    assert_eq!(out.stdout.trim(), "arm64");
}

/// Overwrites the middle of every blob in the registry's storage that is larger than
/// `min_size` (layers), keeping sizes.
fn corrupt_registry_layers(registry: &Registry, min_size: u64) -> usize {
    let mut corrupted = 0;
    for path in files_below(&registry.storage_dir().join("docker/registry/v2/blobs")) {
        let size = std::fs::metadata(&path).unwrap().len();
        if path.file_name().is_some_and(|n| n == "data") && size > min_size {
            let mut data = std::fs::read(&path).unwrap();
            let middle = data.len() / 2;
            for byte in &mut data[middle..middle + 16] {
                *byte ^= 0xff;
            }
            std::fs::write(&path, data).unwrap();
            corrupted += 1;
        }
    }
    corrupted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_fails_the_pull_and_leaves_nothing_behind() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_busybox(&registry.address, "busybox:latest");
    assert_eq!(corrupt_registry_layers(&registry, 100_000), 1);
    let daemon = Daemon::start();
    let reference = format!("{}/busybox:latest", registry.address);
    let out = daemon.berth(&["pull", &reference]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);
    let out = daemon.berth(&["images", "-q"]).success();
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    assert!(blobs(&daemon).is_empty(), "{:?}", blobs(&daemon));
    assert!(ingests(&daemon).is_empty(), "{:?}", ingests(&daemon));
    assert!(committed_snapshots(&daemon).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_midway_leaves_no_image_and_its_space_is_reclaimed_at_restart() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multilayer(&registry.address, "big:latest", 96 << 20);
    let mut daemon = Daemon::start();
    let reference = format!("{}/big:latest", registry.address);
    let mut pull = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "pull", "-q", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill berthd once the big layer is partly written.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut partial = false;
    while Instant::now() < deadline && !partial {
        partial = ingests(&daemon)
            .iter()
            .any(|p| p.ends_with("data") && std::fs::metadata(p).map(|m| m.len() > (8 << 20)).unwrap_or(false));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(partial, "never saw the big layer half-written");
    daemon.kill9();
    let _ = pull.wait();
    assert!(!ingests(&daemon).is_empty() || !blobs(&daemon).is_empty(), "the crash left something to reclaim");

    daemon.start_again();
    let out = daemon.berth(&["images", "-q"]).success();
    assert!(out.stdout.trim().is_empty(), "no partial image: {}", out.stdout);
    assert!(ingests(&daemon).is_empty(), "{:?}", ingests(&daemon));
    assert!(blobs(&daemon).is_empty(), "{:?}", blobs(&daemon));
    // Committed layer snapshots of the dead pull go once the snapshot service answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = committed_snapshots(&daemon).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "snapshots not collected: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the pull works after the restart.
    daemon.berth(&["pull", "-q", &reference]).success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_the_work() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_multilayer(&registry.address, "shared:latest", 16 << 20);
    let daemon = Daemon::start();
    let reference = format!("{}/shared:latest", registry.address);
    let spawn = || {
        std::process::Command::new(berth_integration_tests::bin("berth"))
            .args(["-H", &daemon.address(), "pull", &reference])
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(spawn);
        let b = scope.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    for out in [&a, &b] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(daemon.berth(&["images", "-q"]).success().stdout.lines().count(), 1);
    let inspect =
        images(&daemon).await.inspect(InspectImageRequest { reference, platform: None }).await.unwrap().into_inner();
    assert!(inspect.unpacked);
    assert_eq!(committed_snapshots(&daemon).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_rmi_and_prune_behave_like_docker() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_busybox(&registry.address, "busybox:latest");
    let daemon = Daemon::start();
    let reference = format!("{}/busybox:latest", registry.address);
    daemon.berth(&["pull", "-q", &reference]).success();

    daemon.berth(&["tag", &reference, "mine:v1"]).success();
    let out = daemon.berth(&["images", "--format", "json"]).success();
    let rows: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert_eq!(rows[0]["ID"], rows[1]["ID"]);
    let out = daemon.berth(&["images", "--filter", "reference=mine"]).success();
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert!(out.stdout.contains("mine "), "{}", out.stdout);

    // Removing one of two names only untags.
    let out = daemon.berth(&["rmi", "mine:v1"]).success();
    assert_eq!(out.stdout, "Untagged: mine:v1\n");
    assert!(!blobs(&daemon).is_empty());

    // By id with two repositories: refused unless forced.
    daemon.berth(&["tag", &reference, "other:v2"]).success();
    let id = daemon.berth(&["images", "-q"]).success().stdout.trim().to_string();
    let out = daemon.berth(&["rmi", &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("must be forced"), "{}", out.stderr);
    let out = daemon.berth(&["image", "rm", "-f", &id]).success();
    assert!(out.stdout.contains("Untagged: other:v2"), "{}", out.stdout);
    assert!(out.stdout.contains("Deleted: sha256:"), "{}", out.stdout);
    assert!(blobs(&daemon).is_empty(), "content reclaimed: {:?}", blobs(&daemon));
    assert!(committed_snapshots(&daemon).await.is_empty());

    // An image a container uses is refused unless forced; forced, the container keeps
    // its root file system (its snapshot's parent layers stay).
    daemon.berth(&["pull", "-q", &reference]).success();
    daemon.berth(&["create", "--name", "user", &reference, "true"]).success();
    let out = daemon.berth(&["rmi", &reference]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("must force") && out.stderr.contains("is using its referenced image"),
        "{}",
        out.stderr
    );
    let out = daemon.berth(&["rmi", "-f", &reference]).success();
    assert!(out.stdout.contains("Deleted: sha256:"), "{}", out.stdout);
    assert!(!committed_snapshots(&daemon).await.is_empty(), "the container's layers stay");
    daemon.berth(&["rm", "user"]).success();

    // A digest-only reference is dangling; prune removes it.
    daemon.berth(&["pull", "-q", &reference]).success();
    let digest = daemon.berth(&["image", "inspect", "-f", "{{.Descriptor.digest}}", &reference]).success().stdout;
    let by_digest = format!("{}/busybox@{}", registry.address, digest.trim());
    daemon.berth(&["pull", "-q", &by_digest]).success();
    daemon.berth(&["rmi", &reference]).success();
    let out = daemon.berth(&["images"]).success();
    assert!(out.stdout.contains("<none>"), "{}", out.stdout);
    let out = daemon.berth(&["image", "prune", "-f"]).success();
    assert!(out.stdout.contains("deleted: sha256:"), "{}", out.stdout);
    assert!(out.stdout.contains("Total reclaimed space: "), "{}", out.stdout);
    assert!(!out.stdout.contains("Total reclaimed space: 0B"), "{}", out.stdout);
    assert_eq!(daemon.berth(&["images", "-q"]).success().stdout, "");
}
