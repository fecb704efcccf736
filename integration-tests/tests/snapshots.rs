//! The snapshots service of a real berthd over gRPC: a layer made by GNU tar is applied
//! (streamed, gzip), an active snapshot is prepared on top and really mounted, and its
//! content checked; `berth info` reports the snapshotter.

use std::path::Path;
use std::process::Command;

use berth_common::Address;
use berth_integration_tests::{Daemon, fixtures, require_root};
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::*;
use sha2::{Digest, Sha256};

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A busybox root file system as an uncompressed tar made by GNU tar, and its gzip form.
fn busybox_layer(work: &Path) -> (Vec<u8>, Vec<u8>) {
    let rootfs = work.join("rootfs");
    fixtures::busybox_rootfs(&rootfs);
    let tar = work.join("layer.tar");
    fixtures::run(Command::new("tar").arg("--numeric-owner").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    fixtures::run(Command::new("gzip").arg("-k").arg("-f").arg(&tar));
    (std::fs::read(&tar).unwrap(), std::fs::read(work.join("layer.tar.gz")).unwrap())
}

async fn client(daemon: &Daemon) -> SnapshotsClient<tonic::transport::Channel> {
    let channel = berth_common::client::connect(&Address::Unix(daemon.socket.clone())).await.unwrap();
    SnapshotsClient::new(channel).max_decoding_message_size(16 << 20)
}

fn apply_stream(
    header: ApplyHeader,
    compressed: Vec<u8>,
) -> impl futures::Stream<Item = ApplyRequest> + Send + 'static {
    let mut messages = vec![ApplyRequest { payload: Some(apply_request::Payload::Header(header)) }];
    for chunk in compressed.chunks(256 * 1024) {
        messages.push(ApplyRequest { payload: Some(apply_request::Payload::Data(chunk.to_vec())) });
    }
    futures::stream::iter(messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_prepare_mount_over_grpc() {
    require_root!();
    let daemon = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let (tar, gz) = busybox_layer(work.path());
    let diff_id = sha256(&tar);
    let mut snapshots = client(&daemon).await;

    let info = snapshots.info(SnapshotterInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "overlayfs");
    assert_eq!(info.root, daemon.root.join("snapshots").display().to_string());

    // The base layer is named by its chain id, which for a base layer is its diff_id.
    let header = ApplyHeader {
        name: diff_id.clone(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        diff_id: diff_id.clone(),
        ..Default::default()
    };
    let applied = snapshots.apply(apply_stream(header.clone(), gz.clone())).await.unwrap().into_inner();
    assert_eq!(applied.diff_id, diff_id);
    assert_eq!(applied.size, tar.len() as i64);
    assert!(!applied.already_existed);
    let again = snapshots.apply(apply_stream(header.clone(), gz.clone())).await.unwrap().into_inner();
    assert!(again.already_existed);

    // A wrong diff_id is refused and leaves nothing.
    let mut wrong = header.clone();
    wrong.name = "wrong".into();
    wrong.diff_id = sha256(b"not it");
    let err = snapshots.apply(apply_stream(wrong, gz.clone())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    let err = snapshots.stat(StatSnapshotRequest { key: "wrong".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A second layer on top, uncompressed this time, deleting a file.
    let mut second = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    second.append_data(&mut h, "etc/.wh.passwd", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    second.append_data(&mut h, "hello.txt", &b"hello\n"[..]).unwrap();
    let second = second.into_inner().unwrap();
    let second_id = sha256(&second);
    let chain_id = sha256(format!("{diff_id} {second_id}").as_bytes());
    let header2 = ApplyHeader {
        name: chain_id.clone(),
        parent: diff_id.clone(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        diff_id: second_id.clone(),
        ..Default::default()
    };
    snapshots.apply(apply_stream(header2, second)).await.unwrap();

    let prepared = snapshots
        .prepare(PrepareSnapshotRequest { key: "ctr-rootfs".into(), parent: chain_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mount = &prepared.mounts[0];
    assert_eq!(mount.r#type, "overlay");
    assert!(mount.options.iter().any(|o| o.starts_with("upperdir=")));
    let target = work.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    {
        let data = mount.options.join(",");
        nix::mount::mount(
            Some(mount.source.as_str()),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .unwrap();
        let _unmount = Unmount(target.clone());
        assert_eq!(
            std::fs::read(target.join("bin/busybox")).unwrap(),
            std::fs::read(fixtures::busybox_binary()).unwrap()
        );
        assert_eq!(std::fs::read_link(target.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert_eq!(std::fs::read(target.join("hello.txt")).unwrap(), b"hello\n");
        assert!(!target.join("etc/passwd").exists(), "deleted by the second layer");
        let out =
            fixtures::run(Command::new("chroot").arg(&target).args(["/bin/sh", "-c", "echo ok > /tmp/x; cat /tmp/x"]));
        assert_eq!(out.trim(), "ok");
    }
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());

    let changes: Vec<Change> = {
        let mut stream = snapshots.changes(ChangesRequest { key: "ctr-rootfs".into() }).await.unwrap().into_inner();
        let mut all = Vec::new();
        while let Some(batch) = stream.message().await.unwrap() {
            all.extend(batch.changes);
        }
        all
    };
    assert!(changes.iter().any(|c| c.path == "/tmp/x" && c.kind == ChangeKind::Added as i32), "{changes:?}");

    // The base layer has a child now.
    let err = snapshots.remove(RemoveSnapshotRequest { key: diff_id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let mut listed =
        snapshots.list(ListSnapshotsRequest { filters: vec!["kind==committed".into()] }).await.unwrap().into_inner();
    let mut names = Vec::new();
    while let Some(batch) = listed.message().await.unwrap() {
        names.extend(batch.info.into_iter().map(|i| i.name));
    }
    names.sort();
    let mut expected = vec![diff_id.clone(), chain_id.clone()];
    expected.sort();
    assert_eq!(names, expected);

    let out = daemon.berth(&["info"]).success();
    assert!(out.stdout.contains("Storage Driver: overlayfs"), "{}", out.stdout);
}
