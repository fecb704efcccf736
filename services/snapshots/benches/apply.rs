//! Apply throughput for a large gzip layer, next to GNU `tar -xzf` of the same layer in
//! the same run (not a test: it prints numbers).
//!
//!     cargo bench -p berth-snapshots --bench apply            # ~600 MiB layer
//!     BERTH_BENCH_MIB=2048 cargo bench -p berth-snapshots --bench apply
//!
//! Needs root (Apply writes owners, devices, trusted xattrs). Our side includes what a
//! real Apply does: chunked streaming through a bounded channel, gzip decompression,
//! SHA-256 of the uncompressed stream, safe unpacking and the commit (sled flush). It does
//! not include gRPC transport.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use berth_common::Namespace;
use berth_proto::snapshots::v1::ApplyHeader;
use berth_snapshots::apply::{self, Source};
use berth_snapshots::core::Core;
use berth_snapshots::driver::{Driver, Layout};
use berth_snapshots::store::Store;
use sha2::{Digest, Sha256};

/// A layer shaped like a real image: many small files in a directory tree plus some big
/// ones, with moderately compressible content.
fn make_layer(target_bytes: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::with_capacity(target_bytes as usize + (64 << 20)));
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Text-like bytes: a small alphabet compresses about 3:1, like binaries and libraries.
    let mut content = |len: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let word = next();
            for i in 0..8 {
                out.push(b"abcdefghijklmnop"[((word >> (i * 4)) & 0xf) as usize]);
            }
        }
        out.truncate(len);
        out
    };
    let mut written = 0u64;
    let mut index = 0u64;
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    while written < target_bytes {
        let dir = format!("usr/lib/pkg{:04}", index / 200);
        if index.is_multiple_of(200) {
            let mut h = header(tar::EntryType::Directory, 0, 0o755);
            builder.append_data(&mut h, format!("{dir}/"), std::io::empty()).unwrap();
        }
        // Every 50th file is big (4-16 MiB); the rest are 1-64 KiB.
        let size = if index.is_multiple_of(50) {
            (4 << 20) + (index % 4) * (4 << 20)
        } else {
            1024 + (index * 7919) % (63 * 1024)
        };
        let data = content(size as usize);
        let mut h = header(tar::EntryType::Regular, size, 0o644);
        builder.append_data(&mut h, format!("{dir}/file{index}"), &data[..]).unwrap();
        written += size;
        index += 1;
    }
    builder.into_inner().unwrap()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn drop_dir(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("the apply benchmark needs root");
        return;
    }
    let target_mib: u64 = std::env::var("BERTH_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let work = tempfile::Builder::new().prefix("berth-bench-").tempdir_in("/var/tmp").unwrap();
    eprintln!("building a ~{target_mib} MiB layer...");
    let tar = make_layer(target_mib << 20);
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&tar).unwrap();
    let gz = encoder.finish().unwrap();
    let gz_path = work.path().join("layer.tar.gz");
    std::fs::write(&gz_path, &gz).unwrap();
    let files = tar::Archive::new(&tar[..]).entries().unwrap().count();
    println!(
        "layer: {:.0} MiB uncompressed, {:.0} MiB gzip, {files} entries",
        mib(tar.len() as u64),
        mib(gz.len() as u64)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rounds = 3;
    let mut ours = Vec::new();
    let mut gnu = Vec::new();
    for round in 0..rounds {
        // Ours: a fresh snapshot root each round.
        let root = work.path().join(format!("berth-{round}"));
        std::fs::create_dir_all(root.join("snapshots")).unwrap();
        let store = Store::open(&root).unwrap();
        let core = Arc::new(Core::new(store, Layout::new(root.join("snapshots"), Driver::Overlay), None, None));
        let data = gz.clone();
        let header = ApplyHeader {
            name: diff_id.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: diff_id.clone(),
            ..Default::default()
        };
        nix::unistd::sync();
        let started = Instant::now();
        runtime.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let feeder = tokio::spawn(async move {
                for chunk in data.chunks(1 << 20) {
                    if tx.send(Ok(chunk.to_vec())).await.is_err() {
                        return;
                    }
                }
            });
            apply::apply(core.clone(), Namespace::default_namespace(), header, Source::Channel(rx)).await.unwrap();
            feeder.await.unwrap();
        });
        ours.push(started.elapsed().as_secs_f64());
        drop(core);
        drop_dir(&root);

        // GNU tar (gzip in a child process) into a fresh directory.
        let dest = work.path().join(format!("tar-{round}"));
        std::fs::create_dir_all(&dest).unwrap();
        nix::unistd::sync();
        let started = Instant::now();
        let status = Command::new("tar")
            .arg("--numeric-owner")
            .arg("--same-permissions")
            .arg("-xzf")
            .arg(&gz_path)
            .arg("-C")
            .arg(&dest)
            .status()
            .unwrap();
        assert!(status.success());
        gnu.push(started.elapsed().as_secs_f64());
        drop_dir(&dest);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        s[s.len() / 2]
    };
    for (name, times) in [("berth Apply (gzip, sha256, safe unpack)", &ours), ("tar -xzf (GNU tar + gzip)", &gnu)] {
        let t = median(times);
        println!(
            "{name:42} median {t:6.2}s  best {:6.2}s  {:7.1} MB/s uncompressed  {:6.1} MB/s compressed",
            best(times),
            tar.len() as f64 / 1e6 / t,
            gz.len() as f64 / 1e6 / t
        );
    }
    println!("ratio berth/tar (median time): {:.2}", median(&ours) / median(&gnu));
}
