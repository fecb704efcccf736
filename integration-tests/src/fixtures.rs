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
    // The host's binary lists the applets: executing the fresh copy could fail with
    // ETXTBSY while another test thread's fork still holds its write descriptor.
    let applets = run(Command::new(busybox_binary()).arg("--list"));
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

/// Packs the contents of `dir` into an uncompressed tar (numeric owners, sorted).
pub fn tar_dir(dir: &Path, out: &Path) {
    run(Command::new("tar").arg("--numeric-owner").arg("--sort=name").arg("-C").arg(dir).arg("-cf").arg(out).arg("."));
}

/// Creates `layout:tag` from layer tars (bottom first) with the given os/arch, running
/// `sh`. The layout may already hold other tags.
pub fn oci_image_from_layers(layout: &Path, tag: &str, layers: &[PathBuf], architecture: &str) {
    let image = format!("{}:{tag}", layout.display());
    if !layout.exists() {
        run(Command::new("umoci").args(["init", "--layout"]).arg(layout));
    }
    run(Command::new("umoci").args(["new", "--image", &image]));
    for (i, layer) in layers.iter().enumerate() {
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &image, "--history.created_by", &format!("fixture layer {i}")])
            .arg(layer));
    }
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        architecture,
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]));
}

/// A three-layer image: busybox; then /data/{keep,gone}.txt and /opt/old/x; then a
/// layer that whiteouts /data/gone.txt (`.wh.gone.txt`), makes /opt/old opaque
/// (`.wh..wh..opq`) with a new file in it, and adds /data/new.txt.
/// `filler_bytes` of incompressible data go into the second layer (for benchmarks).
pub fn multilayer_oci_layout(work: &Path, tag: &str, filler_bytes: usize) -> PathBuf {
    let layout = work.join("oci");
    let base = work.join("l0");
    busybox_rootfs(&base);
    let l0 = work.join("l0.tar");
    tar_dir(&base, &l0);

    let second = work.join("l1");
    std::fs::create_dir_all(second.join("data")).expect("l1");
    std::fs::create_dir_all(second.join("opt/old")).expect("l1");
    std::fs::write(second.join("data/keep.txt"), "keep\n").expect("l1");
    std::fs::write(second.join("data/gone.txt"), "gone\n").expect("l1");
    std::fs::write(second.join("opt/old/x"), "old\n").expect("l1");
    if filler_bytes > 0 {
        let mut state = 0x9e3779b97f4a7c15u64;
        let filler: Vec<u8> = (0..filler_bytes)
            .map(|_| {
                // xorshift: incompressible enough that gzip cannot shrink it much.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        std::fs::write(second.join("data/filler.bin"), filler).expect("filler");
    }
    let l1 = work.join("l1.tar");
    tar_dir(&second, &l1);

    let third = work.join("l2");
    std::fs::create_dir_all(third.join("data")).expect("l2");
    std::fs::create_dir_all(third.join("opt/old")).expect("l2");
    std::fs::write(third.join("data/.wh.gone.txt"), "").expect("l2");
    std::fs::write(third.join("data/new.txt"), "new\n").expect("l2");
    std::fs::write(third.join("opt/old/.wh..wh..opq"), "").expect("l2");
    std::fs::write(third.join("opt/old/y"), "fresh\n").expect("l2");
    let l2 = work.join("l2.tar");
    tar_dir(&third, &l2);

    oci_image_from_layers(&layout, tag, &[l0, l1, l2], "amd64");
    layout
}

/// Builds the three-layer whiteout image and pushes it as `registry/repo_tag`.
pub fn push_multilayer(registry: &str, repo_tag: &str, filler_bytes: usize) {
    let work = tempfile::tempdir().expect("fixture temp dir");
    let layout = multilayer_oci_layout(work.path(), "latest", filler_bytes);
    push_layout(&layout, "latest", registry, repo_tag);
}

fn sha256_hex(data: &[u8]) -> String {
    let out = run(Command::new("sh").arg("-c").arg("sha256sum | cut -d' ' -f1").stdin_bytes(data));
    out.trim().to_string()
}

/// Feeding stdin to `run`.
trait StdinBytes {
    fn stdin_bytes(&mut self, data: &[u8]) -> &mut Self;
}

impl StdinBytes for Command {
    fn stdin_bytes(&mut self, data: &[u8]) -> &mut Self {
        let path = std::env::temp_dir().join(format!("berth-fixture-stdin-{}-{}", std::process::id(), data.len()));
        std::fs::write(&path, data).expect("stdin file");
        self.stdin(std::fs::File::open(&path).expect("stdin file"));
        let _ = std::fs::remove_file(&path);
        self
    }
}

/// The manifest descriptor ({mediaType, digest, size}) of `layout:tag` from index.json.
fn manifest_descriptor(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("index JSON");
    index["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag))
        .cloned()
        .unwrap_or_else(|| panic!("tag {tag} not in {}", layout.display()))
}

/// A multi-arch image: an OCI index with linux/amd64 and linux/arm64/v8 manifests that
/// share the busybox layer and differ in config. Pushed (index and both manifests) as
/// `registry/repo_tag`.
pub fn push_multiarch(registry: &str, repo_tag: &str) {
    let work = tempfile::tempdir().expect("fixture temp dir");
    let layout = work.path().join("oci");
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let layer = work.path().join("layer.tar");
    tar_dir(&rootfs, &layer);
    oci_image_from_layers(&layout, "amd64", std::slice::from_ref(&layer), "amd64");
    oci_image_from_layers(&layout, "arm64", std::slice::from_ref(&layer), "arm64");
    let entry = |tag: &str, arch: &str, variant: Option<&str>| {
        let mut descriptor = manifest_descriptor(&layout, tag);
        descriptor.as_object_mut().expect("descriptor").remove("annotations");
        let mut platform = serde_json::json!({ "architecture": arch, "os": "linux" });
        if let Some(variant) = variant {
            platform["variant"] = variant.into();
        }
        descriptor["platform"] = platform;
        descriptor
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("amd64", "amd64", None), entry("arm64", "arm64", Some("v8"))],
    });
    let raw = serde_json::to_vec(&index).expect("index");
    let hex = sha256_hex(&raw);
    std::fs::write(layout.join("blobs/sha256").join(&hex), &raw).expect("index blob");
    let mut top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("JSON");
    top["manifests"].as_array_mut().expect("manifests").push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{hex}"),
        "size": raw.len(),
        "annotations": { "org.opencontainers.image.ref.name": "multi" },
    }));
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).expect("JSON")).expect("index.json");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{registry}/{repo_tag}"),
    ]));
}

/// A busybox web server image: `/www/index.html` ("hello from berth"), `EXPOSE 80/tcp`,
/// `VOLUME /data` holding `seed.txt` ("seeded") in the image, running
/// `httpd -f -p 80 -h /www`. Pushed as `registry/repo_tag`.
pub fn push_webserver(registry: &str, repo_tag: &str) {
    let work = tempfile::tempdir().expect("fixture temp dir");
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    std::fs::create_dir_all(rootfs.join("www")).expect("www");
    std::fs::write(rootfs.join("www/index.html"), "hello from berth\n").expect("index.html");
    std::fs::create_dir_all(rootfs.join("data")).expect("data");
    std::fs::write(rootfs.join("data/seed.txt"), "seeded\n").expect("seed.txt");
    let layer = work.path().join("layer.tar");
    tar_dir(&rootfs, &layer);
    let layout = work.path().join("oci");
    oci_image_from_layers(&layout, "latest", &[layer], "amd64");
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.exposedports",
        "80/tcp",
        "--config.volume",
        "/data",
        "--config.cmd",
        "httpd",
        "--config.cmd",
        "-f",
        "--config.cmd",
        "-p",
        "--config.cmd",
        "80",
        "--config.cmd",
        "-h",
        "--config.cmd",
        "/www",
    ]));
    push_layout(&layout, "latest", registry, repo_tag);
}
