//! Resolving paths inside a root with `openat2(RESOLVE_IN_ROOT)`. No crate wraps openat2
//! yet (nix does not), so this is the one raw syscall.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct open_how` of openat2(2) (libc's is non-exhaustive, so it cannot be built).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` (absolute or relative, as seen from inside the root) relative to `root`,
/// never leaving it: `..` stops at the root, absolute symlinks restart at the root, magic
/// links (/proc/self/fd/...) are refused.
pub fn open_in_root(root: &OwnedFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
    let c_path = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, NUL-terminated path and a properly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What is at a path, for `cp`'s stat answer.
#[derive(Debug, Clone)]
pub struct PathInfo {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: i64,
    pub link_target: String,
}

/// Stats `path` inside the root without following a final symlink.
pub fn stat_in_root(root: &OwnedFd, path: &Path) -> std::io::Result<PathInfo> {
    let fd = open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW)?;
    let stat = nix::sys::stat::fstatat(&fd, "", nix::fcntl::AtFlags::AT_EMPTY_PATH)?;
    let is_link = stat.st_mode & libc::S_IFMT == libc::S_IFLNK;
    let link_target = if is_link {
        nix::fcntl::readlinkat(&fd, "").map(|t| t.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".to_string());
    Ok(PathInfo { name, size: stat.st_size, mode: stat.st_mode, mtime: stat.st_mtime, link_target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::write(root_path.join("etc/passwd"), "container passwd").unwrap();
        std::os::unix::fs::symlink("/", root_path.join("etc/evil")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root_path.join("up")).unwrap();
        let root = std::fs::File::open(&root_path).map(OwnedFd::from).unwrap();
        // Through the absolute link, /etc/evil/etc/passwd is the container's file.
        let fd = open_in_root(&root, Path::new("/etc/evil/etc/passwd"), libc::O_RDONLY).unwrap();
        assert_eq!(std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(), "container passwd");
        let fd = open_in_root(&root, Path::new("up/etc/passwd"), libc::O_RDONLY).unwrap();
        assert_eq!(std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(), "container passwd");
        let info = stat_in_root(&root, Path::new("/etc/evil")).unwrap();
        assert_eq!(info.link_target, "/");
        assert!(open_in_root(&root, Path::new("/nope"), libc::O_RDONLY).is_err());
    }
}
