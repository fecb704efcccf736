//! A tar of a path inside the container's root, read through directory fds: symlinks are
//! archived as symlinks and never followed, so the walk cannot leave the root.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, fstatat};

use super::resolve::open_in_root;

fn header_for(stat: &FileStat) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(stat.st_mtime.max(0) as u64);
    header.set_size(0);
    header
}

fn kind(stat: &FileStat) -> u32 {
    stat.st_mode & libc::S_IFMT
}

/// Writes a tar of `path` (resolved inside `root`, a final symlink not followed) whose
/// top entry is named `name`.
pub fn write_archive(root: &OwnedFd, path: &Path, name: &str, out: impl Write) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let fd = open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW)?;
    append(&mut builder, &fd, PathBuf::from(name))?;
    builder.into_inner()?.flush()
}

/// Appends the object `fd` (an O_PATH descriptor) as `name`, recursing into directories.
fn append<W: Write>(builder: &mut tar::Builder<W>, fd: &OwnedFd, name: PathBuf) -> std::io::Result<()> {
    let stat = fstatat(fd, "", AtFlags::AT_EMPTY_PATH)?;
    let mut header = header_for(&stat);
    match kind(&stat) {
        libc::S_IFDIR => {
            header.set_entry_type(tar::EntryType::Directory);
            builder.append_data(&mut header, &name, std::io::empty())?;
            let dir_fd =
                nix::fcntl::openat(fd, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
            let mut dir = nix::dir::Dir::from_fd(dir_fd)?;
            let mut names: Vec<OsString> = dir
                .iter()
                .filter_map(|entry| entry.ok())
                .map(|entry| OsString::from_vec(entry.file_name().to_bytes().to_vec()))
                .filter(|n| n != "." && n != "..")
                .collect();
            names.sort();
            for child in names {
                let child_fd = nix::fcntl::openat(
                    dir.as_fd(),
                    child.as_os_str(),
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                append(builder, &child_fd, name.join(&child))?;
            }
        }
        libc::S_IFREG => {
            // Re-open the very inode the O_PATH fd names (through our own fd table, not a
            // path in the container), now for reading. Only regular files are opened:
            // opening a fifo or a device could block or have side effects.
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
            let file = nix::fcntl::open(proc_path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(stat.st_size.max(0) as u64);
            builder.append_data(&mut header, &name, std::fs::File::from(file))?;
        }
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(fd, "")?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder.append_link(&mut header, &name, PathBuf::from(target))?;
        }
        other => {
            header.set_entry_type(match other {
                libc::S_IFCHR => tar::EntryType::Char,
                libc::S_IFBLK => tar::EntryType::Block,
                libc::S_IFIFO => tar::EntryType::Fifo,
                // Sockets cannot be archived; skip them as tar does.
                _ => return Ok(()),
            });
            let rdev = stat.st_rdev;
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
            builder.append_data(&mut header, &name, std::io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_a_tree_without_following_links_out() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("data/sub")).unwrap();
        std::fs::write(root_path.join("data/a.txt"), "alpha").unwrap();
        std::fs::write(root_path.join("data/sub/b.txt"), "beta").unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("data/etc-link")).unwrap();
        std::os::unix::fs::symlink("/", root_path.join("evil")).unwrap();
        let root = OwnedFd::from(std::fs::File::open(&root_path).unwrap());

        let mut tar_bytes = Vec::new();
        write_archive(&root, Path::new("/data"), "data", &mut tar_bytes).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        names.sort();
        assert_eq!(names, ["data", "data/a.txt", "data/etc-link", "data/sub", "data/sub/b.txt"]);

        // /evil/etc is the container's /etc (absent here), not the host's.
        let mut out = Vec::new();
        assert!(write_archive(&root, Path::new("/evil/etc/passwd"), "passwd", &mut out).is_err());
    }
}
