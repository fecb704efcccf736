//! Pull benchmark: time to pull and unpack a ~100 MB three-layer image from a local
//! distribution registry with berth, next to `skopeo copy` (fetch only, no unpack) and
//! `ctr image pull` (containerd: fetch + unpack into overlayfs) when installed — all in
//! the same run, against the same registry. Prints numbers; asserts nothing about speed.
//!
//! BENCH_RUNS (default 3) runs per tool; the median and the best are printed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration_tests::{Daemon, Registry, fixtures};

fn timed(command: &mut Command) -> Duration {
    let start = Instant::now();
    let out = command.stdout(Stdio::null()).stderr(Stdio::piped()).output().expect("running the benchmarked command");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    elapsed
}

fn summary(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    (times[times.len() / 2].as_secs_f64(), times[0].as_secs_f64())
}

/// A containerd of our own (temp root, state and socket), stopped when dropped.
struct Containerd {
    child: std::process::Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        for tool in ["containerd", "ctr"] {
            if Command::new(tool).arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
                eprintln!("{tool} not installed: skipping the ctr row");
                return None;
            }
        }
        let dir = tempfile::Builder::new().prefix("berth-bench-ctrd-").tempdir_in("/tmp").ok()?;
        let socket = dir.path().join("c.sock").display().to_string();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{socket}\"\n",
                dir.path().join("root").display(),
                dir.path().join("state").display()
            ),
        )
        .ok()?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let containerd = Containerd { child, socket, _dir: dir };
        for _ in 0..100 {
            if containerd.ctr().arg("version").output().map(|o| o.status.success()).unwrap_or(false) {
                return Some(containerd);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("containerd did not start: skipping the ctr row");
        None
    }

    fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.args(["--address", &self.socket, "-n", "bench"]);
        command
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.ctr().args(["images", "rm", "--sync"]).output();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        berth_integration_tests::cleanup::unmount_below(self._dir.path());
    }
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the pull benchmark needs root (overlay mounts)");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let registry = Registry::start();
    let filler = 96 << 20;
    fixtures::push_multilayer(&registry.address, "bench:latest", filler);
    let reference = format!("{}/bench:latest", registry.address);
    let registry_bytes: u64 = walk_size(&registry.storage_dir());
    eprintln!(
        "image pushed: {reference} (registry storage {:.1} MB), {runs} runs per tool",
        registry_bytes as f64 / 1e6
    );

    let daemon = Daemon::start();
    let mut berth_times = Vec::new();
    for _ in 0..runs {
        let _ = daemon.berth(&["rmi", "-f", &reference]);
        berth_times.push(timed(Command::new(berth_integration_tests::bin("berth")).args([
            "-H",
            &daemon.address(),
            "pull",
            "-q",
            &reference,
        ])));
    }

    let mut skopeo_times = Vec::new();
    for _ in 0..runs {
        let out = tempfile::tempdir().expect("skopeo dir");
        skopeo_times.push(timed(Command::new("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("dir:{}", out.path().join("image").display()),
        ])));
    }

    let mut ctr_times = Vec::new();
    if let Some(containerd) = Containerd::start() {
        for _ in 0..runs {
            let _ = containerd.ctr().args(["images", "rm", "--sync", &reference]).output();
            ctr_times.push(timed(containerd.ctr().args(["images", "pull", "--plain-http", &reference])));
        }
    }

    let (berth_median, berth_best) = summary(&mut berth_times);
    let (skopeo_median, skopeo_best) = summary(&mut skopeo_times);
    println!("pull of a {:.0} MB 3-layer image from 127.0.0.1 ({runs} runs)", (filler as f64 + 2e6) / 1e6);
    println!("{:<34} {:>10} {:>10} {:>14}", "tool", "median s", "best s", "berth/tool");
    println!("{:<34} {:>10.3} {:>10.3} {:>14}", "berth pull (fetch + unpack)", berth_median, berth_best, "1.00");
    println!(
        "{:<34} {:>10.3} {:>10.3} {:>14.2}",
        "skopeo copy (fetch only)",
        skopeo_median,
        skopeo_best,
        berth_median / skopeo_median
    );
    if !ctr_times.is_empty() {
        let (ctr_median, ctr_best) = summary(&mut ctr_times);
        println!(
            "{:<34} {:>10.3} {:>10.3} {:>14.2}",
            "ctr image pull (fetch + unpack)",
            ctr_median,
            ctr_best,
            berth_median / ctr_median
        );
    }
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { walk_size(&path) } else { std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) }
        })
        .sum()
}
