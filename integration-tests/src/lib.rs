//! Test harness: a real berthd per test, with its own root, state dir, log dir and socket,
//! torn down completely (daemon, shims, mounts) when the test ends, even when it fails.
//! Also: a real distribution registry on 127.0.0.1 and fixture images built from
//! Debian's busybox-static with umoci and skopeo.

pub mod cleanup;
pub mod daemon;
pub mod faulty;
pub mod fixtures;
pub mod inventory;
pub mod network;
pub mod registry;
pub mod terminal;

pub use daemon::{Daemon, DaemonOptions, Output};
pub use registry::Registry;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Directory holding the built binaries (berthd, berth, berth-shim): `BERTH_BIN_DIR`, or
/// the cargo target directory this test binary lives in.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Skips a test (by returning early) unless it runs as root; the suite is meant to run as
/// root, so this prints loudly.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: {} needs root", module_path!());
            return;
        }
    };
}

/// A registry with the image `push` builds (a fixture from [`fixtures`]) as `repo_tag`,
/// and a daemon that has pulled it. Returns the image reference; keep the registry alive
/// for the whole test.
pub fn daemon_with_image(push: fn(&str, &str), repo_tag: &str) -> (Registry, Daemon, String) {
    let registry = Registry::start();
    push(&registry.address, repo_tag);
    let daemon = Daemon::start();
    let image = format!("{}/{repo_tag}", registry.address);
    daemon.berth(&["pull", "-q", &image]).success();
    (registry, daemon, image)
}

/// [`daemon_with_image`] with the busybox fixture.
pub fn daemon_with_busybox() -> (Registry, Daemon, String) {
    daemon_with_image(fixtures::push_busybox, "busybox:latest")
}

/// Polls `check` until it holds, panicking after `timeout` with `what`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
