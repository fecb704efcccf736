//! Extracting a tar into a directory inside the container's root. Each entry's parent is
//! resolved in the root by the kernel (RESOLVE_IN_ROOT), and the entry itself is created
//! relative to that directory's fd with O_NOFOLLOW, replacing (not following) anything in
//! its way.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::resolve::open_in_root;

#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// Keep the archive's uid/gid (`cp -a`); otherwise files belong to root (0:0).
    pub keep_owner: bool,
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.into())
}

/// An entry path made of normal components only.
fn clean(path: &Path) -> std::io::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(invalid(format!("refusing archive entry {}: it leaves the destination", path.display()))),
        }
    }
    Ok(clean)
}

fn remove_existing(dir: &OwnedFd, name: &OsStr) {
    if nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir).is_err() {
        let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::RemoveDir);
    }
}

/// Extracts `archive` into `destination` (a directory, resolved inside `root`).
pub fn extract_archive(
    root: &OwnedFd,
    destination: &Path,
    archive: impl Read,
    options: ExtractOptions,
) -> std::io::Result<()> {
    let destination_fd = open_in_root(root, destination, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", destination.display())))?;
    drop(destination_fd);
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let relative = clean(&entry.path()?)?;
        let Some(name) = relative.file_name().map(OsStr::to_os_string) else { continue };
        let parent_path = destination.join(relative.parent().unwrap_or(Path::new("")));
        let parent = open_in_root(root, &parent_path, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", parent_path.display())))?;
        let header = entry.header().clone();
        let mode = Mode::from_bits_truncate(header.mode()? & 0o7777);
        let kind = header.entry_type();
        let existing = nix::sys::stat::fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing.is_some_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
        match kind {
            tar::EntryType::Directory => {
                if existing.is_some() && !existing_is_dir {
                    remove_existing(&parent, &name);
                }
                if !existing_is_dir {
                    nix::sys::stat::mkdirat(&parent, name.as_os_str(), mode)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if existing.is_some() {
                    remove_existing(&parent, &name);
                }
                let fd = nix::fcntl::openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    mode,
                )?;
                let mut file = std::fs::File::from(fd);
                std::io::copy(&mut entry, &mut file)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.ok_or_else(|| invalid("symlink without a target"))?;
                if existing.is_some() {
                    remove_existing(&parent, &name);
                }
                nix::unistd::symlinkat(target.as_os_str(), &parent, name.as_os_str())?;
            }
            tar::EntryType::Link => {
                let target = clean(&entry.link_name()?.ok_or_else(|| invalid("hard link without a target"))?)?;
                let source = open_in_root(root, &destination.join(&target), libc::O_PATH | libc::O_NOFOLLOW)?;
                if existing.is_some() {
                    remove_existing(&parent, &name);
                }
                nix::unistd::linkat(&source, "", &parent, name.as_os_str(), AtFlags::AT_EMPTY_PATH)?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let device = libc::makedev(header.device_major()?.unwrap_or(0), header.device_minor()?.unwrap_or(0));
                if existing.is_some() {
                    remove_existing(&parent, &name);
                }
                nix::sys::stat::mknodat(&parent, name.as_os_str(), file_type, mode, device)?;
            }
            // PAX and GNU metadata entries are consumed by the tar reader; others are skipped.
            _ => continue,
        }
        let (uid, gid) = if options.keep_owner { (header.uid()? as u32, header.gid()? as u32) } else { (0, 0) };
        nix::unistd::fchownat(
            &parent,
            name.as_os_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if kind != tar::EntryType::Symlink {
            nix::sys::stat::fchmodat(&parent, name.as_os_str(), mode, nix::sys::stat::FchmodatFlags::FollowSymlink)?;
            let mtime = nix::sys::time::TimeSpec::new(header.mtime()? as i64, 0);
            nix::sys::stat::utimensat(
                &parent,
                name.as_os_str(),
                &mtime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )?;
        }
        let _ = parent.as_fd();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    header.set_size(0);
                    builder.append_link(&mut header, path, data).unwrap();
                }
                _ => {
                    header.set_size(data.len() as u64);
                    // Write the name raw: the tar crate refuses to build hostile names.
                    let name = &mut header.as_old_mut().name;
                    name[..path.len()].copy_from_slice(path.as_bytes());
                    header.set_cksum();
                    builder.append(&header, data.as_bytes()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn writes_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root_path.join("dest")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // The container points a directory at the host's "outside" by an absolute link.
        std::os::unix::fs::symlink(&outside, root_path.join("dest/escape")).unwrap();
        let root = OwnedFd::from(std::fs::File::open(&root_path).unwrap());
        let archive =
            tar_of(&[("file.txt", tar::EntryType::Regular, "hello"), ("escape/pwned", tar::EntryType::Regular, "x")]);
        // "escape" resolves inside the root to <root>/<outside path>, which does not exist.
        assert!(extract_archive(&root, Path::new("/dest"), archive.as_slice(), ExtractOptions::default()).is_err());
        assert_eq!(std::fs::read_to_string(root_path.join("dest/file.txt")).unwrap(), "hello");
        assert!(!outside.join("pwned").exists());

        let traversal = tar_of(&[("../../outside/pwned", tar::EntryType::Regular, "x")]);
        assert!(extract_archive(&root, Path::new("/dest"), traversal.as_slice(), ExtractOptions::default()).is_err());
        assert!(!outside.join("pwned").exists());

        // A symlink entry replaces, and is not followed by, a later file of the same name.
        let replace =
            tar_of(&[("link", tar::EntryType::Symlink, "/etc/shadow"), ("link", tar::EntryType::Regular, "replaced")]);
        extract_archive(&root, Path::new("/dest"), replace.as_slice(), ExtractOptions::default()).unwrap();
        assert_eq!(std::fs::read_to_string(root_path.join("dest/link")).unwrap(), "replaced");
    }
}
