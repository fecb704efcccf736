//! Image distribution end to end: import of rootfs tarballs (stdin, file, URL), with
//! Dockerfile-like changes, run offline.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use berth_common::Address;
use berth_integration_tests::{Daemon, fixtures, require_root};
use berth_proto::images::v1::InspectImageRequest;
use berth_proto::images::v1::images_client::ImagesClient;

async fn images(daemon: &Daemon) -> ImagesClient<tonic::transport::Channel> {
    let channel = berth_common::client::connect(&Address::Unix(daemon.socket.clone())).await.unwrap();
    ImagesClient::new(channel).max_decoding_message_size(64 << 20)
}

/// An uncompressed tar of a busybox rootfs, made by GNU tar.
fn busybox_tar(work: &Path) -> Vec<u8> {
    let rootfs = work.join("rootfs");
    fixtures::busybox_rootfs(&rootfs);
    let tar = work.join("rootfs.tar");
    fixtures::tar_dir(&rootfs, &tar);
    std::fs::read(&tar).unwrap()
}

/// Serves `body` once over HTTP on 127.0.0.1; returns the URL.
fn serve_once(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/rootfs.tar.gz", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_rootfs_runs_offline_with_changes_from_stdin_file_and_url() {
    require_root!();
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_tar(work.path());
    let daemon = Daemon::start();

    // The README's first command: no registry at all.
    let out = daemon.berth_with_input(&["import", "-", "busybox"], Some(&tar)).success();
    let id = out.stdout.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{}", out.stdout);
    let out = daemon.berth(&["run", "--rm", "busybox", "echo", "hello"]).success();
    assert_eq!(out.stdout, "hello\n");

    let inspect = images(&daemon)
        .await
        .inspect(InspectImageRequest { reference: "busybox".into(), platform: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspect.id, id);
    assert!(inspect.unpacked, "the imported layer must be unpacked");
    assert_eq!(inspect.chain_ids, inspect.diff_ids);
    assert_eq!(inspect.layers.len(), 1);
    assert_eq!(inspect.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    // The diff_id is the sha256 of the tar as given.
    use sha2::Digest as _;
    assert_eq!(inspect.diff_ids[0], format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar))));
    let config: serde_json::Value = serde_json::from_slice(&inspect.config_json).unwrap();
    assert_eq!(config["history"][0]["comment"], "Imported from -");

    // A gzip file with changes and a message.
    let gz_path = work.path().join("rootfs.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(&gz_path, &gz).unwrap();
    let gz_arg = gz_path.display().to_string();
    daemon
        .berth(&[
            "import",
            "-c",
            r#"CMD ["sh", "-c", "echo $GREETING from $(pwd)"]"#,
            "--change",
            "ENV GREETING=hi",
            "-c",
            "WORKDIR /tmp",
            "-c",
            "LABEL origin=test",
            "-m",
            "a message",
            &gz_arg,
            "bb:changed",
        ])
        .success();
    let out = daemon.berth(&["run", "--rm", "bb:changed"]).success();
    assert_eq!(out.stdout, "hi from /tmp\n");
    let inspect = images(&daemon)
        .await
        .inspect(InspectImageRequest { reference: "bb:changed".into(), platform: None })
        .await
        .unwrap()
        .into_inner();
    let config = inspect.config.unwrap();
    assert_eq!(config.labels.get("origin").map(String::as_str), Some("test"));
    assert_eq!(inspect.comment, "a message");
    // Same content, other compression: the same layer, snapshot shared.
    assert_eq!(inspect.diff_ids[0], format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar))));

    // From a URL, untagged: listed as <none>, runnable by id, removable by id.
    let url = serve_once(gz);
    let out = daemon.berth(&["import", &url]).success();
    let untagged = out.stdout.trim().to_string();
    let short = &untagged["sha256:".len().."sha256:".len() + 12];
    let listed = daemon.berth(&["images"]).success();
    assert!(listed.stdout.lines().any(|l| l.starts_with("<none>") && l.contains(short)), "{}", listed.stdout);
    let inspect = images(&daemon)
        .await
        .inspect(InspectImageRequest { reference: short.into(), platform: None })
        .await
        .unwrap()
        .into_inner();
    assert!(inspect.repo_tags.is_empty() && inspect.repo_digests.is_empty(), "{inspect:?}");
    let config: serde_json::Value = serde_json::from_slice(&inspect.config_json).unwrap();
    assert_eq!(config["history"][0]["comment"], format!("Imported from {url}"));
    let out = daemon.berth(&["run", "--rm", short, "echo", "by-id"]).success();
    assert_eq!(out.stdout, "by-id\n");
    let out = daemon.berth(&["rmi", short]).success();
    assert_eq!(out.stdout.trim(), format!("Deleted: {untagged}"));

    // Events for each import.
    let out = daemon.berth(&["events", "--since", "seq:0", "--until", "0s", "--filter", "event=import"]).success();
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);

    // Not a tar, an unknown instruction: clear errors, nothing left behind.
    let out = daemon.berth_with_input(&["import", "-", "bad"], Some(b"this is not a tar archive at all"));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not a usable layer tar"), "{}", out.stderr);
    let out = daemon.berth(&["import", "-c", "RUN make", &gz_arg, "bad"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("RUN is not a supported change"), "{}", out.stderr);
    let listed = daemon.berth(&["images", "-q"]).success();
    assert_eq!(listed.stdout.lines().count(), 2, "{}", listed.stdout);
    let ingests = std::fs::read_dir(daemon.root.join("content/ingest")).unwrap().count();
    assert_eq!(ingests, 0, "a failed import leaves no ingest behind");
}
