//! berth-shim on its own: a real runc container from a busybox bundle, driven over the
//! shim's socket — create, attach, start, exit status, CRI log, delete, shutdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_integration_tests::{cleanup, fixtures, require_root};
use berth_proto::shim::v1::shim_client::ShimClient;
use berth_proto::shim::v1::*;
use berth_proto::types::v1::Mount;

struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new().prefix("berth-shim-it-").tempdir_in("/tmp").unwrap();
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("berth-shim-it-{}-{n}", std::process::id());
        fixtures::busybox_rootfs(&dir.path().join("source"));
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        fixtures::run(Command::new("runc").arg("spec").arg("--bundle").arg(&bundle));
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(args);
        spec["root"]["readonly"] = false.into();
        spec["linux"]["cgroupsPath"] = format!("/{id}").into();
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        Bundle { dir, id }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let base = self.dir.path().display().to_string();
        cleanup::kill_all(&cleanup::pids_mentioning(&base));
        let _ = Command::new("runc").arg("--root").arg(self.runc_root()).args(["delete", "--force", &self.id]).output();
        cleanup::unmount_below(self.dir.path());
    }
}

fn start_shim(bundle: &Path, id: &str) {
    let out = Command::new(berth_integration_tests::bin("berth-shim"))
        .args(["--id", id, "--namespace", "default", "--bundle"])
        .arg(bundle)
        .output()
        .expect("starting berth-shim");
    assert!(out.status.success(), "shim failed to start: {}", String::from_utf8_lossy(&out.stderr));
}

async fn connect(bundle: &Path) -> ShimClient<tonic::transport::Channel> {
    let address = berth_common::Address::Unix(bundle.join("shim.sock"));
    ShimClient::new(berth_common::client::connect(&address).await.expect("connecting to the shim"))
}

fn create_request(b: &Bundle, log: &Path) -> CreateTaskRequest {
    CreateTaskRequest {
        id: b.id.clone(),
        bundle: b.bundle().display().to_string(),
        rootfs: vec![Mount {
            r#type: "bind".into(),
            source: b.dir.path().join("source").display().to_string(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }],
        runtime: "runc".into(),
        runtime_args: vec!["--root".into(), b.runc_root().display().to_string()],
        log_path: log.display().to_string(),
        ..Default::default()
    }
}

#[test]
fn runs_a_container_reports_exit_and_writes_the_cri_log() {
    require_root!();
    let b = Bundle::new(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    start_shim(&b.bundle(), &b.id);
    let log = b.dir.path().join("ctr.log");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut shim = connect(&b.bundle()).await;
        let info = shim.info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.container_id, b.id);

        let pid = shim.create(create_request(&b, &log)).await.unwrap().into_inner().pid;
        assert!(pid > 0);
        assert!(!cleanup::mounts_below(&b.bundle()).is_empty(), "rootfs should be mounted");

        let (input, input_rx) = tokio::sync::mpsc::channel(4);
        input
            .send(AttachRequest {
                item: Some(attach_request::Item::Open(AttachOpen {
                    exec_id: String::new(),
                    stdin: false,
                    stdout: true,
                    stderr: true,
                })),
            })
            .await
            .unwrap();
        let mut output = shim.attach(tokio_stream::wrappers::ReceiverStream::new(input_rx)).await.unwrap().into_inner();
        let first = output.message().await.unwrap().unwrap();
        assert!(matches!(first.item, Some(attach_response::Item::Attached(true))));

        shim.start(StartRequest { exec_id: String::new() }).await.unwrap();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(message) = output.message().await.unwrap() {
            match message.item {
                Some(attach_response::Item::Stdout(data)) => stdout.extend(data),
                Some(attach_response::Item::Stderr(data)) => stderr.extend(data),
                _ => {}
            }
        }
        assert_eq!(String::from_utf8_lossy(&stdout), "hello\n");
        assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");

        let exit = shim.wait(WaitRequest { exec_id: String::new() }).await.unwrap().into_inner();
        assert_eq!(exit.exit_status, 3);
        let record = berth_common::task::ExitRecord::read(&b.bundle()).unwrap().expect("exit record written");
        assert_eq!(record.exit_status, 3);
        assert_eq!(record.pid, pid);

        let deleted = shim.delete(DeleteRequest { exec_id: String::new() }).await.unwrap().into_inner();
        assert_eq!(deleted.exit_status, 3);
        assert!(cleanup::mounts_below(&b.bundle()).is_empty(), "rootfs must be unmounted after delete");
        shim.shutdown(ShutdownRequest { now: false }).await.unwrap();
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<_> = text.lines().map(|l| berth_common::crilog::parse(l.as_bytes()).unwrap()).collect();
    assert_eq!(records.len(), 2, "{text}");
    assert!(records.iter().any(|r| r.stream == berth_common::crilog::Stream::Stdout && r.content == b"hello"));
    assert!(records.iter().any(|r| r.stream == berth_common::crilog::Stream::Stderr && r.content == b"oops"));
    // The shim exits after shutdown.
    let socket = b.bundle().join("shim.sock");
    for _ in 0..100 {
        if !socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!socket.exists(), "shim still serving after shutdown");
}

#[test]
fn shim_outlives_its_starter_and_reports_an_exit_that_happened_meanwhile() {
    require_root!();
    let b = Bundle::new(&["sh", "-c", "sleep 1; exit 7"]);
    start_shim(&b.bundle(), &b.id);
    let log = b.dir.path().join("ctr.log");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut shim = connect(&b.bundle()).await;
        shim.create(create_request(&b, &log)).await.unwrap();
        shim.start(StartRequest { exec_id: String::new() }).await.unwrap();
    });
    // Nobody is connected while the container exits.
    std::thread::sleep(Duration::from_millis(1500));
    let record = berth_common::task::ExitRecord::read(&b.bundle()).unwrap().expect("exit record written");
    assert_eq!(record.exit_status, 7);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut shim = connect(&b.bundle()).await;
        let state = shim.state(StateRequest { exec_id: String::new() }).await.unwrap().into_inner();
        assert_eq!(state.status, Status::Stopped as i32);
        assert_eq!(state.exit_status, 7);
        shim.delete(DeleteRequest { exec_id: String::new() }).await.unwrap();
        shim.shutdown(ShutdownRequest { now: false }).await.unwrap();
    });
}
