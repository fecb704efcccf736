//! The two snapshotters' on-disk layout and the mounts they describe.
//!
//! Layout: `<data_root>/snapshots/<id>/fs` (the layer's files, or a native snapshot's
//! complete tree) and `<id>/work` (overlayfs's work directory, active snapshots only).
//! Ids are short decimal numbers so a long `lowerdir=` list still fits in the one page the
//! kernel accepts for mount options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_proto::types::v1::Mount;

use crate::error::{Error, Result};
use crate::store::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Native,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }

    pub fn parse(name: &str) -> Option<Driver> {
        match name {
            "overlayfs" | "overlay" | "overlay2" => Some(Driver::Overlay),
            "native" | "vfs" => Some(Driver::Native),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub driver: Driver,
    /// Extra overlay options pinning features our diff cannot read (see `overlay_options`).
    pub pinned_options: Vec<String>,
}

impl Layout {
    pub fn new(root: PathBuf, driver: Driver) -> Layout {
        Layout { root, driver, pinned_options: pinned_overlay_options() }
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    pub fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    pub fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    /// Directories of the tree a snapshot shows, top-first: for overlay its own layer and
    /// its parents'; for native the one complete tree.
    pub fn tree_dirs(&self, kind: Kind, id: u64, chain: &[u64]) -> Vec<PathBuf> {
        match (self.driver, kind) {
            (Driver::Overlay, _) => std::iter::once(id).chain(chain.iter().copied()).map(|i| self.fs(i)).collect(),
            // A native view shows its parent's tree directly (committed trees never change).
            (Driver::Native, Kind::View) => vec![chain.first().map(|p| self.fs(*p)).unwrap_or_else(|| self.fs(id))],
            (Driver::Native, _) => vec![self.fs(id)],
        }
    }

    /// The mounts that show snapshot `id` (of `kind`, over committed parents `chain`,
    /// top-first). The caller performs them.
    pub fn mounts(&self, kind: Kind, id: u64, chain: &[u64]) -> Result<Vec<Mount>> {
        let bind = |source: &Path, writable: bool| Mount {
            r#type: "bind".into(),
            source: source.display().to_string(),
            target: String::new(),
            options: vec!["rbind".into(), if writable { "rw".into() } else { "ro".into() }],
        };
        match (self.driver, kind) {
            (_, Kind::Committed) => Err(Error::FailedPrecondition(
                "a committed snapshot cannot be mounted; prepare an active snapshot or a view on top of it".into(),
            )),
            (Driver::Native, Kind::Active) => Ok(vec![bind(&self.fs(id), true)]),
            (Driver::Native, Kind::View) => Ok(vec![bind(&self.tree_dirs(kind, id, chain)[0], false)]),
            (Driver::Overlay, Kind::Active) if chain.is_empty() => Ok(vec![bind(&self.fs(id), true)]),
            (Driver::Overlay, Kind::View) if chain.len() <= 1 => {
                // A single committed layer needs no overlay: a read-only bind mount of it.
                let source = chain.first().map(|p| self.fs(*p)).unwrap_or_else(|| self.fs(id));
                Ok(vec![bind(&source, false)])
            }
            (Driver::Overlay, kind) => {
                let lowers: Vec<String> = chain.iter().map(|p| self.fs(*p).display().to_string()).collect();
                let mut options = self.overlay_options();
                if kind == Kind::Active {
                    options.push(format!("workdir={}", self.work(id).display()));
                    options.push(format!("upperdir={}", self.fs(id).display()));
                }
                options.push(format!("lowerdir={}", lowers.join(":")));
                check_option_length(&options, chain.len())?;
                Ok(vec![Mount { r#type: "overlay".into(), source: "overlay".into(), target: String::new(), options }])
            }
        }
    }

    /// Options every overlay mount gets.
    ///
    /// * `index=off`: the inodes index exists for NFS export and hard-link-preserving
    ///   copy-up; with it on, the kernel ties each upper directory to the exact lower stack
    ///   it was first mounted with, which breaks reusing committed layers as lowers of many
    ///   mounts (and makes layers carry `trusted.overlay.origin` baggage).
    /// * no `userxattr`: we run as root in the initial user namespace, so overlayfs keeps
    ///   whiteout/opaque markers in `trusted.*` xattrs, which is what the unpacker writes.
    /// * `redirect_dir=off`, `metacopy=off` (when the kernel knows them): a host may turn
    ///   these on by default; Diff reads plain upper directories and cannot follow
    ///   redirects or metadata-only copy-ups.
    pub fn overlay_options(&self) -> Vec<String> {
        let mut options = vec!["index=off".to_string()];
        options.extend(self.pinned_options.iter().cloned());
        options
    }
}

fn pinned_overlay_options() -> Vec<String> {
    let params = Path::new("/sys/module/overlay/parameters");
    ["redirect_dir", "metacopy"]
        .iter()
        .filter(|name| params.join(name).exists())
        .map(|name| format!("{name}=off"))
        .collect()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

/// mount(2) copies at most one page of option data (including the trailing NUL); past
/// that the kernel only says EINVAL, so say what is wrong here instead.
fn check_option_length(options: &[String], layers: usize) -> Result<()> {
    let length = options.iter().map(|o| o.len()).sum::<usize>() + options.len().saturating_sub(1);
    let limit = page_size() - 1;
    if length > limit {
        return Err(Error::FailedPrecondition(format!(
            "the image has too many layers to mount: {layers} layers need {length} bytes of overlay mount options, \
             the kernel accepts at most {limit} (squash the image into fewer layers)"
        )));
    }
    Ok(())
}

/// Tries a real overlay mount under `root`; `Err` says why overlayfs cannot be used.
pub fn probe_overlay(root: &Path) -> std::result::Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let base = root.join(format!("probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dirs = ["lower1", "lower2", "upper", "work", "merged"];
    for dir in dirs {
        std::fs::create_dir_all(base.join(dir)).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    }
    let options = format!(
        "index=off,lowerdir={}:{},upperdir={},workdir={}",
        base.join("lower1").display(),
        base.join("lower2").display(),
        base.join("upper").display(),
        base.join("work").display()
    );
    let merged = base.join("merged");
    let result = mount(Some("overlay"), &merged, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|errno| format!("a test overlay mount failed: {errno}"))
        .and_then(|()| {
            // Whiteouts and opaque directories need trusted xattrs and mknod in the upper dir.
            let check = std::fs::write(merged.join("probe"), b"x")
                .and_then(|()| std::fs::remove_file(merged.join("probe")))
                .map_err(|e| format!("writing through a test overlay mount failed: {e}"));
            let _ = umount2(&merged, MntFlags::MNT_DETACH);
            check
        });
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// Details for `berth info` (Docker's "Storage Driver" section).
pub fn status(layout: &Layout, fallback_reason: Option<&str>) -> BTreeMap<String, String> {
    let mut status = BTreeMap::new();
    status.insert("Backing Filesystem".into(), backing_filesystem(&layout.root));
    match layout.driver {
        Driver::Overlay => {
            status.insert("Supports d_type".into(), "true".into());
            status.insert("Using metacopy".into(), "false".into());
            status.insert("Native Overlay Diff".into(), "true".into());
            status.insert("userxattr".into(), "false".into());
        }
        Driver::Native => {
            if let Some(reason) = fallback_reason {
                status.insert("Fallback Reason".into(), reason.to_string());
            }
        }
    }
    status
}

fn backing_filesystem(path: &Path) -> String {
    let Ok(stat) = nix::sys::statfs::statfs(path) else { return "unknown".into() };
    // f_type's integer type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.filesystem_type().0 as i64;
    match magic {
        0xEF53 => "extfs",
        0x58465342 => "xfs",
        0x9123683E => "btrfs",
        0x01021994 => "tmpfs",
        0x794c7630 => "overlayfs",
        0x2FC12FC1 => "zfs",
        0x65735546 => "fuse",
        _ => "unknown",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(driver: Driver) -> Layout {
        Layout { root: PathBuf::from("/var/lib/berth/snapshots"), driver, pinned_options: Vec::new() }
    }

    #[test]
    fn overlay_active_with_parents_lists_lowers_top_first() {
        let mounts = layout(Driver::Overlay).mounts(Kind::Active, 7, &[5, 3]).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].r#type, "overlay");
        assert_eq!(
            mounts[0].options,
            [
                "index=off",
                "workdir=/var/lib/berth/snapshots/7/work",
                "upperdir=/var/lib/berth/snapshots/7/fs",
                "lowerdir=/var/lib/berth/snapshots/5/fs:/var/lib/berth/snapshots/3/fs",
            ]
        );
    }

    #[test]
    fn binds_for_base_active_and_single_layer_view() {
        let l = layout(Driver::Overlay);
        let active = l.mounts(Kind::Active, 2, &[]).unwrap();
        assert_eq!((active[0].r#type.as_str(), active[0].source.as_str()), ("bind", "/var/lib/berth/snapshots/2/fs"));
        assert_eq!(active[0].options, ["rbind", "rw"]);
        let view = l.mounts(Kind::View, 9, &[4]).unwrap();
        assert_eq!(view[0].source, "/var/lib/berth/snapshots/4/fs");
        assert_eq!(view[0].options, ["rbind", "ro"]);
        let multi = l.mounts(Kind::View, 9, &[4, 3]).unwrap();
        assert_eq!(
            multi[0].options,
            ["index=off", "lowerdir=/var/lib/berth/snapshots/4/fs:/var/lib/berth/snapshots/3/fs"]
        );
        assert!(l.mounts(Kind::Committed, 4, &[]).is_err());
    }

    #[test]
    fn too_long_chain_is_a_clear_failed_precondition() {
        let chain: Vec<u64> = (1..=200).map(|i| 100_000 + i).collect();
        let err = layout(Driver::Overlay).mounts(Kind::Active, 1, &chain).unwrap_err();
        match err {
            Error::FailedPrecondition(message) => assert!(message.contains("too many layers"), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
        // 100 layers still fit.
        assert!(layout(Driver::Overlay).mounts(Kind::Active, 1, &chain[..100]).is_ok());
    }

    #[test]
    fn native_binds_its_own_tree() {
        let l = layout(Driver::Native);
        assert_eq!(l.mounts(Kind::Active, 3, &[2]).unwrap()[0].source, "/var/lib/berth/snapshots/3/fs");
        let view = l.mounts(Kind::View, 3, &[2]).unwrap();
        assert_eq!((view[0].source.as_str(), view[0].options[1].as_str()), ("/var/lib/berth/snapshots/2/fs", "ro"));
    }
}
