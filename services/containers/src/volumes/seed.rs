//! Seeding a new (empty) volume with what the image has at the mount's path, as Docker
//! does on first use: the container's rootfs snapshot is mounted on a scratch directory,
//! the path is resolved inside it (symlinks stay inside the rootfs), and the tree is
//! copied with owners, modes and symlinks kept.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_proto::types::v1::Mount;
use nix::mount::{MntFlags, MsFlags};

/// Resolves `path` inside `root` as if `root` were `/`: absolute symlinks restart at
/// `root`, `..` never leaves it. None when a component is missing or links loop.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> =
        Path::new(path).components().rev().filter_map(|c| c.as_os_str().to_str().map(str::to_string)).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "/" | "." | "" => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c)).join(&part);
        let meta = std::fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&candidate).ok()?;
            if target.is_absolute() {
                resolved.clear();
            }
            for component in target.components().rev() {
                match component {
                    Component::Normal(c) => pending.push(c.to_string_lossy().into_owned()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            resolved.push(part);
        }
    }
    Some(resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

fn chown(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
}

/// Copies the contents of directory `from` into the existing directory `to`: regular
/// files, directories and symlinks, with owners and modes. Devices, fifos and sockets are
/// skipped (Docker's copy skips nothing, but a volume holding device nodes is rare).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let destination = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&source)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&destination)?;
            copy_tree(&source, &destination)?;
            std::fs::set_permissions(&destination, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            chown(&destination, &meta)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &destination)?;
            chown(&destination, &meta)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &destination)?;
            chown(&destination, &meta)?;
            // chown clears set-id bits; put the mode back afterwards.
            std::fs::set_permissions(&destination, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Gives `to` the owner and mode of `from` (the volume root takes the image directory's).
pub fn copy_root_attributes(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(from)?;
    chown(to, &meta)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// A rootfs mounted for reading, unmounted (and its directory removed) on drop.
pub struct MountedRootfs {
    pub path: PathBuf,
    mounted: Vec<PathBuf>,
}

impl MountedRootfs {
    /// Mounts the snapshot's mounts (overlay or bind, as the snapshots service describes
    /// them) on `path`.
    pub fn mount(mounts: &[Mount], path: &Path) -> std::io::Result<MountedRootfs> {
        std::fs::create_dir_all(path)?;
        let mut rootfs = MountedRootfs { path: path.to_path_buf(), mounted: Vec::new() };
        for mount in mounts {
            let target = if mount.target.is_empty() {
                path.to_path_buf()
            } else {
                path.join(mount.target.trim_start_matches('/'))
            };
            let mut flags = MsFlags::empty();
            let mut data = Vec::new();
            let mut bind = mount.r#type == "bind";
            for option in &mount.options {
                match option.as_str() {
                    "ro" => flags |= MsFlags::MS_RDONLY,
                    "rw" => {}
                    "bind" => bind = true,
                    "rbind" => {
                        bind = true;
                        flags |= MsFlags::MS_REC;
                    }
                    other => data.push(other.to_string()),
                }
            }
            let result = if bind {
                nix::mount::mount(
                    Some(mount.source.as_str()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
                    None::<&str>,
                )
            } else {
                let data = data.join(",");
                nix::mount::mount(
                    Some(mount.source.as_str()),
                    &target,
                    Some(mount.r#type.as_str()),
                    flags,
                    Some(data.as_str()),
                )
            };
            result.map_err(|errno| {
                std::io::Error::other(format!("mounting the rootfs ({}) for copying: {errno}", mount.r#type))
            })?;
            rootfs.mounted.push(target);
        }
        Ok(rootfs)
    }
}

impl Drop for MountedRootfs {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("srv/data")).unwrap();
        std::os::unix::fs::symlink("/srv/data", root.join("data")).unwrap();
        std::os::unix::fs::symlink("../../etc", root.join("srv/escape")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in_root(root, "/data"), Some(root.join("srv/data")));
        // `..` stops at the root: this is <root>/etc, never the host's /etc.
        std::fs::create_dir_all(root.join("etc")).unwrap();
        assert_eq!(resolve_in_root(root, "/srv/escape"), Some(root.join("etc")));
        assert_eq!(resolve_in_root(root, "/nope"), None);
        assert_eq!(resolve_in_root(root, "/loop"), None);
    }

    #[test]
    fn trees_copy_with_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(from.join("sub/file"), "hello").unwrap();
        std::fs::set_permissions(from.join("sub/file"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/file", from.join("link")).unwrap();
        copy_tree(&from, &to).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("sub/file")).unwrap(), "hello");
        assert_eq!(std::fs::metadata(to.join("sub/file")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_link(to.join("link")).unwrap(), PathBuf::from("sub/file"));
    }
}
