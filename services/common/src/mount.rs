//! Performing the mounts the snapshot service describes (overlay, bind) and undoing them:
//! the shim mounts container root filesystems, the containers service mounts a stopped
//! container's filesystem briefly (cp).

use std::path::Path;

use berth_proto::types::v1::Mount;
use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount {kind} on {target}: {source}")]
    Mount { kind: String, target: String, source: nix::Error },
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: String, source: nix::Error },
    #[error("no rootfs mount was given")]
    Empty,
}

/// Splits mount(8)-style options into kernel flags and the data string.
pub fn parse_options(options: &[String]) -> (MsFlags, bool, String) {
    let mut flags = MsFlags::empty();
    let mut bind = false;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= MsFlags::MS_REC;
            }
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other),
        }
    }
    (flags, bind, data.join(","))
}

/// Mounts `mounts` in order onto `target` (each mount's own `target` is relative to it).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    if mounts.is_empty() {
        return Err(MountError::Empty);
    }
    let mut done = Vec::new();
    for mount in mounts {
        let destination = if mount.target.is_empty() {
            target.to_path_buf()
        } else {
            target.join(mount.target.trim_start_matches('/'))
        };
        if let Err(err) = mount_one(mount, &destination) {
            for mounted in done.iter().rev() {
                let _ = nix::mount::umount2(mounted, MntFlags::MNT_DETACH);
            }
            return Err(err);
        }
        done.push(destination);
    }
    Ok(())
}

fn mount_one(mount: &Mount, destination: &Path) -> Result<(), MountError> {
    let (flags, bind, data) = parse_options(&mount.options);
    let error =
        |source| MountError::Mount { kind: mount.r#type.clone(), target: destination.display().to_string(), source };
    let _ = std::fs::create_dir_all(destination);
    if bind || mount.r#type == "bind" {
        let recursive = flags & MsFlags::MS_REC;
        nix::mount::mount(
            Some(mount.source.as_str()),
            destination,
            None::<&str>,
            MsFlags::MS_BIND | recursive,
            None::<&str>,
        )
        .map_err(error)?;
        // Flags such as read-only only apply on a remount of a bind mount.
        let remount_flags = flags - MsFlags::MS_REC;
        if !remount_flags.is_empty() {
            nix::mount::mount(
                None::<&str>,
                destination,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | remount_flags,
                None::<&str>,
            )
            .map_err(error)?;
        }
        return Ok(());
    }
    let data = if data.is_empty() { None } else { Some(data.as_str()) };
    nix::mount::mount(Some(mount.source.as_str()), destination, Some(mount.r#type.as_str()), flags, data).map_err(error)
}

/// Unmounts `target` and anything below it. Not mounted is fine.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(nix::Error::EBUSY) => {
                // Something still uses it (a process that escaped the container's pid
                // namespace teardown); detach so it goes once unused.
                return nix::mount::umount2(target, MntFlags::MNT_DETACH)
                    .map_err(|source| MountError::Unmount { target: target.display().to_string(), source });
            }
            Err(source) => return Err(MountError::Unmount { target: target.display().to_string(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let options: Vec<String> =
            ["ro", "rbind", "nosuid", "lowerdir=/a:/b", "upperdir=/u"].iter().map(|s| s.to_string()).collect();
        let (flags, bind, data) = parse_options(&options);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REC | MsFlags::MS_NOSUID));
        assert!(bind);
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u");
    }
}
