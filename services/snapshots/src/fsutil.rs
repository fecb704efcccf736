//! File-descriptor-relative file system helpers. Everything that touches a snapshot tree
//! goes through a directory fd and a single path component, and never follows a symlink
//! in the kernel, so a tree a layer (or a container) controls cannot redirect us outside.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

pub type Stat = FileStat;

/// The xattr overlayfs reads to hide lower directories.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Prefix of every xattr overlayfs interprets; never taken from or written into a layer tar.
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

fn io_err(errno: nix::errno::Errno) -> io::Error {
    io::Error::from(errno)
}

pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(io_err)
}

/// Opens directory `name` in `dir`, refusing a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)
}

/// Opens regular file `name` in `dir` for reading, refusing a symlink.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(io_err)?;
    Ok(std::fs::File::from(fd))
}

/// Creates regular file `name` in `dir`; fails if anything exists there.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io_err)?;
    Ok(std::fs::File::from(fd))
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(errno) => Err(io_err(errno)),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    nix::sys::stat::fstat(fd).map_err(io_err)
}

pub fn file_type(stat: &Stat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

pub fn is_dir(stat: &Stat) -> bool {
    file_type(stat) == SFlag::S_IFDIR
}

/// An overlay whiteout: a character device with device number 0/0.
pub fn is_whiteout(stat: &Stat) -> bool {
    file_type(stat) == SFlag::S_IFCHR && stat.st_rdev == 0
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode)).map_err(io_err)
}

pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, kind: SFlag, mode: u32, rdev: u64) -> io::Result<()> {
    nix::sys::stat::mknodat(dir, name, kind, Mode::from_bits_truncate(mode), rdev).map_err(io_err)
}

pub fn make_whiteout_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    mknod_at(dir, name, SFlag::S_IFCHR, 0, 0)
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::unistd::symlinkat(target, dir, name).map_err(io_err)
}

pub fn hardlink_at(
    old_dir: BorrowedFd<'_>,
    old_name: &OsStr,
    new_dir: BorrowedFd<'_>,
    new_name: &OsStr,
) -> io::Result<()> {
    // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
    nix::unistd::linkat(old_dir, old_name, new_dir, new_name, AtFlags::empty()).map_err(io_err)
}

pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    nix::fcntl::readlinkat(dir, name).map_err(io_err)
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io_err)
}

/// Removes `name` in `dir`, recursively when it is a directory. Missing is fine.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(stat) = stat_at(dir, name)? else { return Ok(()) };
    if !is_dir(&stat) {
        return match unlink_at(dir, name) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    {
        let child = open_dir_at(dir, name)?;
        for entry in list_dir(child.as_fd())? {
            remove_all_at(child.as_fd(), &entry)?;
        }
    }
    match nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(io_err(errno)),
    }
}

/// Removes a whole directory tree by path (the path itself is ours, not layer-controlled).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "refusing to remove a root path"));
    };
    match open_dir_path(parent) {
        Ok(parent) => remove_all_at(parent.as_fd(), name),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Names in a directory (without `.` and `..`), sorted for reproducible output.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    // Dir takes ownership and rewinds; give it its own descriptor.
    let dup = dir.try_clone_to_owned()?;
    let mut handle = nix::dir::Dir::from_fd(dup).map_err(io_err)?;
    let mut names = Vec::new();
    for entry in handle.iter() {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    names.sort();
    Ok(names)
}

pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    nix::unistd::fchownat(
        dir,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err)
}

pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    // fchmodat cannot refuse symlinks on every kernel; callers never chmod a symlink.
    nix::sys::stat::fchmodat(dir, name, Mode::from_bits_truncate(mode), nix::sys::stat::FchmodatFlags::NoFollowSymlink)
        .or_else(|errno| {
            if errno == nix::errno::Errno::EOPNOTSUPP || errno == nix::errno::Errno::ENOTSUP {
                Ok(())
            } else {
                Err(errno)
            }
        })
        .map_err(io_err)
}

/// Sets the modification (and access) time of `name` in `dir` without following it.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &OsStr, seconds: i64, nanos: i64) -> io::Result<()> {
    let time = nix::sys::time::TimeSpec::new(seconds, nanos);
    nix::sys::stat::utimensat(dir, name, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink).map_err(io_err)
}

/// Path through which the xattr syscalls reach `name` in `dir` without following `name`
/// (the `/proc/self/fd` component is followed to the directory we hold open).
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
    let mut bytes = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    bytes.extend_from_slice(name.as_bytes());
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str, value: &[u8]) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let key = CString::new(key).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::lsetxattr(path.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str) -> io::Result<Option<Vec<u8>>> {
    let path = proc_path(dir, name)?;
    let key = CString::new(key).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid strings; buf has buf.len() writable bytes.
        let rc = unsafe { libc::lgetxattr(path.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// All xattrs of `name` in `dir`, sorted by key.
pub fn list_xattrs_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<(String, Vec<u8>)>> {
    let path = proc_path(dir, name)?;
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: valid path; buf has buf.len() writable bytes.
        let rc = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            break rc as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for key in buf[..len].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let Ok(key) = std::str::from_utf8(key) else { continue };
        if let Some(value) = get_xattr_at(dir, name, key)? {
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

pub fn is_opaque_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    Ok(get_xattr_at(dir, name, OVERLAY_OPAQUE_XATTR)?.is_some_and(|v| v == b"y"))
}

/// `.` as an OsStr, to address a directory fd itself in the `*_at` helpers.
pub fn dot() -> &'static OsStr {
    OsStr::new(".")
}

/// Major/minor split of a device number, as tar headers store them.
pub fn dev_major_minor(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

pub fn make_dev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}
