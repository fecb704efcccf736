//! Copying a complete tree (the native snapshotter's Prepare): types, modes, owners,
//! xattrs, mtimes, hard links, device nodes and holes of sparse files are preserved.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::stat::SFlag;

use crate::fsutil::{self, Stat};

struct Copier {
    /// (dev, ino) of a multiply-linked source file -> (destination dir, name).
    links: HashMap<(u64, u64), (OwnedFd, std::ffi::OsString)>,
}

/// Copies the contents of directory `src` into the empty directory `dst`.
pub fn copy_tree(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let mut copier = Copier { links: HashMap::new() };
    copier.copy_dir_contents(src.as_fd(), dst.as_fd())?;
    let stat = fsutil::fstat(src.as_fd())?;
    copy_meta(src.as_fd(), fsutil::dot(), dst.as_fd(), fsutil::dot(), &stat)
}

impl Copier {
    fn copy_dir_contents(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
        for name in fsutil::list_dir(src)? {
            let Some(stat) = fsutil::stat_at(src, &name)? else { continue };
            self.copy_entry(src, dst, &name, &stat)?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, name: &OsStr, stat: &Stat) -> io::Result<()> {
        let kind = fsutil::file_type(stat);
        if kind != SFlag::S_IFDIR && stat.st_nlink > 1 {
            let key = (stat.st_dev, stat.st_ino);
            if let Some((dir, first)) = self.links.get(&key) {
                return fsutil::hardlink_at(dir.as_fd(), first, dst, name);
            }
            self.links.insert(key, (dst.try_clone_to_owned()?, name.to_os_string()));
        }
        match kind {
            SFlag::S_IFDIR => {
                fsutil::mkdir_at(dst, name, 0o700)?;
                let src_child = fsutil::open_dir_at(src, name)?;
                let dst_child = fsutil::open_dir_at(dst, name)?;
                self.copy_dir_contents(src_child.as_fd(), dst_child.as_fd())?;
            }
            SFlag::S_IFREG => {
                let mut from = fsutil::open_file_at(src, name)?;
                let mut to = fsutil::create_file_at(dst, name)?;
                copy_file_data(&mut from, &mut to, stat.st_size as u64)?;
            }
            SFlag::S_IFLNK => {
                let target = fsutil::read_link_at(src, name)?;
                fsutil::symlink_at(&target, dst, name)?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO | SFlag::S_IFSOCK => {
                fsutil::mknod_at(dst, name, kind, 0o600, stat.st_rdev)?;
            }
            _ => return Ok(()),
        }
        copy_meta(src, name, dst, name, stat)
    }
}

fn copy_meta(
    src: BorrowedFd<'_>,
    src_name: &OsStr,
    dst: BorrowedFd<'_>,
    dst_name: &OsStr,
    stat: &Stat,
) -> io::Result<()> {
    fsutil::chown_at(dst, dst_name, stat.st_uid, stat.st_gid)?;
    let is_link = fsutil::file_type(stat) == SFlag::S_IFLNK;
    if !is_link {
        fsutil::chmod_at(dst, dst_name, stat.st_mode & 0o7777)?;
    }
    for (key, value) in fsutil::list_xattrs_at(src, src_name)? {
        match fsutil::set_xattr_at(dst, dst_name, &key, &value) {
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => other?,
        }
    }
    fsutil::set_mtime_at(dst, dst_name, stat.st_mtime, stat.st_mtime_nsec)
}

/// Copies data segments only (SEEK_DATA/SEEK_HOLE), so holes stay holes.
fn copy_file_data(from: &mut std::fs::File, to: &mut std::fs::File, size: u64) -> io::Result<()> {
    let fd = from.as_raw_fd();
    let mut offset: i64 = 0;
    let size = size as i64;
    let mut buf = vec![0u8; 256 * 1024];
    while offset < size {
        // SAFETY: plain lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        from.seek(SeekFrom::Start(data as u64))?;
        to.seek(SeekFrom::Start(data as u64))?;
        let mut remaining = (hole - data) as u64;
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = from.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
            remaining -= n as u64;
        }
        offset = hole;
    }
    to.set_len(size as u64)
}
