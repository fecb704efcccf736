//! A container's filesystem, mounted somewhere we can reach: the shim's mount for a
//! running container, or a temporary mount of its snapshot for a stopped one.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_proto::types::v1::Mount;

pub struct MountedRootfs {
    pub root: OwnedFd,
    /// Set when we mounted it ourselves (and unmount on drop).
    temporary: Option<PathBuf>,
}

impl MountedRootfs {
    /// The already mounted rootfs of a running container.
    pub fn existing(path: &Path) -> std::io::Result<MountedRootfs> {
        let root = std::fs::File::open(path)?;
        Ok(MountedRootfs { root: OwnedFd::from(root), temporary: None })
    }

    /// Mounts `mounts` at `target` until dropped.
    pub fn mount(mounts: &[Mount], target: &Path) -> std::io::Result<MountedRootfs> {
        std::fs::create_dir_all(target)?;
        berth_common::mount::mount_all(mounts, target).map_err(std::io::Error::other)?;
        match std::fs::File::open(target) {
            Ok(root) => Ok(MountedRootfs { root: OwnedFd::from(root), temporary: Some(target.to_path_buf()) }),
            Err(err) => {
                let _ = berth_common::mount::unmount_all(target);
                Err(err)
            }
        }
    }
}

impl Drop for MountedRootfs {
    fn drop(&mut self) {
        if let Some(target) = &self.temporary {
            if let Err(err) = berth_common::mount::unmount_all(target) {
                tracing::warn!(target = %target.display(), error = %err, "cannot unmount a cp mount");
            }
            let _ = std::fs::remove_dir(target);
        }
    }
}
