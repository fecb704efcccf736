//! Fixture images built with tools independent of Berth: a rootfs from Debian's
//! busybox-static, packed by umoci into an OCI layout, pushed by skopeo.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command, panicking with its output when it fails.
#[track_caller]
pub fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The static busybox binary.
pub fn busybox_binary() -> PathBuf {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("busybox is missing: apt-get install busybox-static");
}

/// Writes a minimal busybox root filesystem into `dir`.
pub fn busybox_rootfs(dir: &Path) {
    for sub in ["bin", "etc", "tmp", "root", "proc", "sys", "dev", "var", "run"] {
        std::fs::create_dir_all(dir.join(sub)).expect("rootfs dir");
    }
    std::fs::copy(busybox_binary(), dir.join("bin/busybox")).expect("copying busybox");
    let applets = run(Command::new(dir.join("bin/busybox")).arg("--list"));
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}

/// An OCI image layout holding tag `tag`: a busybox rootfs layer, configured to run `sh`.
/// Returns the layout directory (inside `work`).
pub fn busybox_oci_layout(work: &Path, tag: &str) -> PathBuf {
    let layout = work.join("oci");
    let rootfs = work.join("rootfs");
    busybox_rootfs(&rootfs);
    let image = format!("{}:{tag}", layout.display());
    if !layout.exists() {
        run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    }
    run(Command::new("umoci").args(["new", "--image", &image]));
    let layer = work.join("layer.tar");
    run(Command::new("tar").arg("--numeric-owner").arg("-C").arg(&rootfs).arg("-cf").arg(&layer).arg("."));
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &image, "--history.created_by", "busybox-static rootfs"])
        .arg(&layer));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.workingdir",
        "/",
    ]));
    let _ = std::fs::remove_file(&layer);
    layout
}

/// Copies `layout:tag` to `registry/repo:tag` with skopeo (plain HTTP on loopback).
pub fn push_layout(layout: &Path, tag: &str, registry: &str, repo_tag: &str) {
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{registry}/{repo_tag}"),
    ]));
}

/// Builds the busybox fixture and pushes it as `registry/repo_tag`.
pub fn push_busybox(registry: &str, repo_tag: &str) {
    let work = tempfile::tempdir().expect("fixture temp dir");
    let layout = busybox_oci_layout(work.path(), "latest");
    push_layout(&layout, "latest", registry, repo_tag);
}
