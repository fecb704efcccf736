//! Helpers for the snapshot tests: hand-made tars (including malformed ones), a Core on a
//! temp dir, tree descriptions to compare, and a mount guard.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_common::Namespace;
use berth_proto::snapshots::v1::{ApplyHeader, ApplyResponse};
use berth_snapshots::apply::{self, Source};
use berth_snapshots::core::Core;
use berth_snapshots::driver::{Driver, Layout};
use berth_snapshots::error::Error;
use berth_snapshots::fsutil;
use berth_snapshots::store::Store;
use sha2::{Digest, Sha256};

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
    };
}

/// Builds tars entry by entry, writing names raw so hostile names survive.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, name: &str, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    let bytes = name.as_bytes();
    assert!(bytes.len() < 100, "use short names in raw tars");
    let old = header.as_old_mut();
    old.name[..bytes.len()].copy_from_slice(bytes);
    header
}

fn set_link(header: &mut tar::Header, target: &str) {
    let bytes = target.as_bytes();
    assert!(bytes.len() < 100);
    header.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
}

impl Default for RawTar {
    fn default() -> Self {
        RawTar { builder: tar::Builder::new(Vec::new()) }
    }
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    fn push(&mut self, mut header: tar::Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.push(header(tar::EntryType::Directory, name, 0, 0o755), b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.push(header(tar::EntryType::Regular, name, data.len() as u64, 0o644), data)
    }

    pub fn file_owned(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, name, data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Symlink, name, 0, 0o777);
        set_link(&mut h, target);
        self.push(h, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Link, name, 0, 0o644);
        set_link(&mut h, target);
        self.push(h, b"")
    }

    pub fn device(&mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = header(kind, name, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"")
    }

    pub fn xattr_file(&mut self, name: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> &mut Self {
        let keys: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
        self.builder.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
        self.file(name, data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub struct TestCore {
    pub dir: tempfile::TempDir,
    pub core: Arc<Core>,
}

impl TestCore {
    pub fn new(driver: Driver) -> TestCore {
        let dir = tempfile::Builder::new().prefix("berth-snap-").tempdir_in("/tmp").unwrap();
        let root = dir.path().join("snapshots");
        std::fs::create_dir_all(&root).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let core = Arc::new(Core::new(store, Layout::new(root, driver), None, None));
        TestCore { dir, core }
    }

    pub fn root(&self) -> PathBuf {
        self.core.layout.root.clone()
    }

    /// Numeric snapshot directories present on disk.
    pub fn snapshot_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub fn fs_of(&self, key: &str) -> PathBuf {
        let record = self.core.get(&ns(), key).unwrap();
        self.core.layout.fs(record.id)
    }
}

pub fn ns() -> Namespace {
    Namespace::default_namespace()
}

/// Applies `layer` (any compression) as `name` on `parent`, sending it in small chunks.
pub async fn apply_layer(
    core: &Arc<Core>,
    name: &str,
    parent: &str,
    layer: Vec<u8>,
    diff_id: &str,
) -> Result<ApplyResponse, Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        for chunk in layer.chunks(64 * 1024) {
            if tx.send(Ok(chunk.to_vec())).await.is_err() {
                return;
            }
        }
    });
    let header = ApplyHeader {
        name: name.into(),
        parent: parent.into(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        diff_id: diff_id.into(),
        ..Default::default()
    };
    let result = apply::apply(core.clone(), ns(), header, Source::Channel(rx)).await;
    feeder.abort();
    result
}

/// A comparable description of one file system entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    /// Content digest (regular files up to 64 MiB), link target, or device numbers.
    pub detail: String,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn digest_reader(mut reader: impl Read, size: u64) -> String {
    if size > 64 << 20 {
        return format!("large:{size}");
    }
    let mut data = Vec::new();
    reader.read_to_end(&mut data).unwrap();
    sha256(&data)
}

/// Describes a directory tree (not following symlinks); overlay whiteouts show as
/// "whiteout" and opaque directories carry the xattr.
pub fn describe_tree(root: &Path) -> BTreeMap<String, Desc> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Desc>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let ft = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            let (kind, detail) = if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_symlink() {
                ("symlink", std::fs::read_link(&path).unwrap().display().to_string())
            } else if ft.is_file() {
                ("file", digest_reader(std::fs::File::open(&path).unwrap(), meta.size()))
            } else if ft.is_char_device() && meta.rdev() == 0 {
                ("whiteout", String::new())
            } else if ft.is_char_device() {
                ("char", format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev())))
            } else if ft.is_block_device() {
                ("block", format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev())))
            } else {
                ("fifo", String::new())
            };
            let parent = fsutil::open_dir_path(dir).unwrap();
            let xattrs = fsutil::list_xattrs_at(parent.as_fd(), OsStr::new(&name)).unwrap();
            let whiteout = kind == "whiteout";
            out.insert(
                rel.clone(),
                Desc {
                    kind: kind.into(),
                    mode: if whiteout || kind == "symlink" { 0 } else { meta.mode() & 0o7777 },
                    uid: if whiteout { 0 } else { meta.uid() as u64 },
                    gid: if whiteout { 0 } else { meta.gid() as u64 },
                    mtime: if kind == "dir" || whiteout { 0 } else { meta.mtime() },
                    size: if kind == "file" { meta.size() } else { 0 },
                    detail,
                    xattrs,
                },
            );
            if ft.is_dir() {
                walk(&path, &rel, out);
            }
        }
    }
    walk(root, "", &mut out);
    out
}

/// Describes a layer tar the same way (whiteout entries as "whiteout", opaque markers as
/// the xattr on their directory; hard links as their target's content).
pub fn describe_tar(data: &[u8]) -> BTreeMap<String, Desc> {
    let mut out: BTreeMap<String, Desc> = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_end_matches('/').trim_start_matches("./").to_string();
        let header = entry.header().clone();
        let mut xattrs = Vec::new();
        if let Some(ext) = entry.pax_extensions().unwrap() {
            for e in ext {
                let e = e.unwrap();
                if let Some(k) = e.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((k.to_string(), e.value_bytes().to_vec()));
                }
            }
        }
        xattrs.sort();
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            let desc = out.get_mut(&dir).expect("opaque marker after its directory");
            desc.xattrs.push(("trusted.overlay.opaque".into(), b"y".to_vec()));
            desc.xattrs.sort();
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            let key = if dir.is_empty() { target.to_string() } else { format!("{dir}/{target}") };
            out.insert(
                key,
                Desc {
                    kind: "whiteout".into(),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                    detail: String::new(),
                    xattrs: vec![],
                },
            );
            continue;
        }
        let kind = header.entry_type();
        let mode = header.mode().unwrap() & 0o7777;
        let (kind_name, detail, size) = match kind {
            tar::EntryType::Directory => ("dir", String::new(), 0),
            tar::EntryType::Symlink => ("symlink", entry.link_name().unwrap().unwrap().display().to_string(), 0),
            tar::EntryType::Link => {
                let target = entry.link_name().unwrap().unwrap().display().to_string();
                let linked = out.get(&target).cloned().expect("hard link target archived first");
                out.insert(path, linked);
                continue;
            }
            tar::EntryType::Char => (
                "char",
                format!("{}:{}", header.device_major().unwrap().unwrap(), header.device_minor().unwrap().unwrap()),
                0,
            ),
            tar::EntryType::Block => (
                "block",
                format!("{}:{}", header.device_major().unwrap().unwrap(), header.device_minor().unwrap().unwrap()),
                0,
            ),
            tar::EntryType::Fifo => ("fifo", String::new(), 0),
            _ => {
                let size = entry.size();
                let real = if kind == tar::EntryType::GNUSparse {
                    header.as_gnu().unwrap().real_size().unwrap()
                } else {
                    size
                };
                ("file", digest_reader(&mut entry, real), real)
            }
        };
        out.insert(
            path,
            Desc {
                kind: kind_name.into(),
                mode: if kind_name == "symlink" { 0 } else { mode },
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                mtime: if kind_name == "dir" { 0 } else { header.mtime().unwrap() as i64 },
                size,
                detail,
                xattrs,
            },
        );
    }
    out
}

/// Unmounts on drop, so a failing test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Performs `mounts` (as the shim would) on `target`.
pub fn mount_all(mounts: &[berth_proto::types::v1::Mount], target: &Path) -> MountGuard {
    use nix::mount::{MsFlags, mount};
    assert_eq!(mounts.len(), 1);
    let m = &mounts[0];
    let guard = MountGuard(target.to_path_buf());
    if m.r#type == "bind" {
        mount(Some(m.source.as_str()), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).unwrap();
        if m.options.iter().any(|o| o == "ro") {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .unwrap();
        }
    } else {
        let data = m.options.join(",");
        mount(Some(m.source.as_str()), target, Some(m.r#type.as_str()), MsFlags::empty(), Some(data.as_str())).unwrap();
    }
    guard
}

pub fn mounted_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|t| Path::new(t).starts_with(dir))
        .collect()
}
