//! Image distribution end to end: import of rootfs tarballs (stdin, file, URL), with
//! Dockerfile-like changes, run offline; push to a real loopback registry (checked with
//! skopeo) and back; login/logout against a registry with htpasswd auth (hashes made
//! with the bcrypt crate).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use berth_common::Address;
use berth_integration_tests::{Daemon, Registry, fixtures, require_root};
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

fn skopeo_inspect(reference: &str, creds: Option<&str>) -> serde_json::Value {
    let mut command = std::process::Command::new("skopeo");
    command.args(["inspect", "--tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--creds", creds]);
    }
    serde_json::from_str(&fixtures::run(command.arg(format!("docker://{reference}")))).unwrap()
}

async fn layer_digests(daemon: &Daemon, reference: &str) -> Vec<String> {
    let inspect = images(daemon)
        .await
        .inspect(InspectImageRequest { reference: reference.into(), platform: None })
        .await
        .unwrap()
        .into_inner();
    inspect.layers.into_iter().map(|l| l.digest).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_tag_push_rmi_pull_run_round_trip() {
    require_root!();
    let registry = Registry::start();
    fixtures::push_busybox(&registry.address, "busybox:latest");
    let daemon = Daemon::start();
    let source = format!("{}/busybox:latest", registry.address);
    let copy = format!("{}/copies/bb:v1", registry.address);

    daemon.berth(&["pull", &source]).success();
    let layers = layer_digests(&daemon, &source).await;
    daemon.berth(&["tag", &source, &copy]).success();
    let out = daemon.berth(&["push", &copy]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("The push refers to repository [{}/copies/bb]", registry.address));
    // The pull recorded where the layer came from: the registry mounts it, no upload.
    let short = &layers[0]["sha256:".len().."sha256:".len() + 12];
    assert!(out.stdout.contains(&format!("{short}: Mounted from busybox")), "{}", out.stdout);
    let last = lines.last().unwrap();
    assert!(last.starts_with("v1: digest: sha256:") && last.contains(" size: "), "{}", out.stdout);
    let pushed_digest = last.split(' ').nth(2).unwrap().to_string();

    let remote = skopeo_inspect(&copy, None);
    assert_eq!(remote["Digest"], pushed_digest.as_str());
    let remote_layers: Vec<String> =
        remote["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    assert_eq!(remote_layers, layers);

    // Pushing again uploads nothing.
    let out = daemon.berth(&["push", &copy]).success();
    assert!(out.stdout.contains(&format!("{short}: Layer already exists")), "{}", out.stdout);

    daemon.berth(&["rmi", &source, &copy]).success();
    assert!(daemon.berth(&["images", "-q"]).success().stdout.trim().is_empty());
    daemon.berth(&["pull", &copy]).success();
    assert_eq!(layer_digests(&daemon, &copy).await, layers);
    let out = daemon.berth(&["run", "--rm", &copy, "echo", "round trip"]).success();
    assert_eq!(out.stdout, "round trip\n");

    // An image made here (import) is uploaded; its push is an event.
    let work = tempfile::tempdir().unwrap();
    let fresh = format!("{}/fresh:1", registry.address);
    std::fs::create_dir_all(work.path().join("root/data")).unwrap();
    std::fs::write(work.path().join("root/data/file"), "fresh\n").unwrap();
    let tar = work.path().join("fresh.tar");
    fixtures::tar_dir(&work.path().join("root"), &tar);
    daemon.berth(&["import", &tar.display().to_string(), &fresh]).success();
    let out = daemon.berth(&["push", &fresh]).success();
    assert!(out.stdout.contains(": Pushed"), "{}", out.stdout);
    assert_eq!(skopeo_inspect(&fresh, None)["Layers"].as_array().unwrap().len(), 1);
    let out = daemon.berth(&["events", "--since", "seq:0", "--until", "0s", "--filter", "event=push"]).success();
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert!(out.stdout.contains(&copy), "{}", out.stdout);

    // Nothing local under that name: Docker's message.
    let out = daemon.berth(&["push", &format!("{}/nothing:here", registry.address)]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("An image does not exist locally with the tag"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_credentials_stores_them_0600_and_pull_push_use_them() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash_with_result("s3cret", 5).unwrap().format_for_version(bcrypt::Version::TwoA);
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("tester:{hash}\n")).unwrap();
    let registry = Registry::start_with_auth(Some(&htpasswd));
    let daemon = Daemon::start();
    let docker_config = work.path().join("docker");
    let env_value = docker_config.display().to_string();
    let env = [("DOCKER_CONFIG", env_value.as_str())];
    let config_file = docker_config.join("config.json");
    let server = registry.address.as_str();

    let out = daemon.berth_env(&["login", "-u", "tester", "--password-stdin", server], &env, Some(b"wrong\n"));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("login to {server} failed")), "{}", out.stderr);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(!config_file.exists(), "a failed login stores nothing");

    let out = daemon.berth_env(&["login", "-u", "tester", "--password-stdin", server], &env, Some(b"s3cret\n"));
    let out = out.success();
    assert_eq!(out.stdout, "Login Succeeded\n");
    let mode = std::fs::metadata(&config_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    // base64("tester:s3cret")
    assert_eq!(stored["auths"][server]["auth"], "dGVzdGVyOnMzY3JldA==");

    // Push with the stored credentials; without them the registry refuses.
    let tar = busybox_tar(work.path());
    let image = format!("{server}/private/busybox:1");
    daemon.berth_with_input(&["import", "-", &image], Some(&tar)).success();
    let anonymous_dir = work.path().join("nobody").display().to_string();
    let anonymous = [("DOCKER_CONFIG", anonymous_dir.as_str())];
    let out = daemon.berth_env(&["push", &image], &anonymous, None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.to_lowercase().contains("auth"), "{}", out.stderr);
    daemon.berth_env(&["push", &image], &env, None).success();
    assert_eq!(skopeo_inspect(&image, Some("tester:s3cret"))["Layers"].as_array().unwrap().len(), 1);

    // Pull with them, after the local copy is gone.
    daemon.berth(&["rmi", &image]).success();
    let out = daemon.berth_env(&["pull", &image], &anonymous, None);
    assert_eq!(out.code, 1, "{out:?}");
    daemon.berth_env(&["pull", &image], &env, None).success();
    let out = daemon.berth(&["run", "--rm", &image, "echo", "authorized"]).success();
    assert_eq!(out.stdout, "authorized\n");

    let out = daemon.berth_env(&["logout", server], &env, None).success();
    assert_eq!(out.stdout, format!("Removing login credentials for {server}\n"));
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    assert!(stored["auths"].get(server).is_none(), "{stored}");
    let out = daemon.berth_env(&["logout", server], &env, None).success();
    assert_eq!(out.stdout, format!("Not logged in to {server}\n"));
    daemon.berth(&["rmi", &image]).success();
    let out = daemon.berth_env(&["pull", &image], &env, None);
    assert_eq!(out.code, 1, "after logout the pull is anonymous again: {out:?}");
}
