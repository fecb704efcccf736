//! Restoring an entry's metadata (owner, mode, xattrs, mtime) and writing file data with
//! holes where the data is zero.

use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};

use super::{UnpackError, classify_read_error};
use crate::fsutil;

/// The metadata of an entry that we restore.
pub(super) struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    pub(super) mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    pub(super) fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let bad = |what: &str, err: io::Error| UnpackError::Invalid(format!("bad {what} in tar header: {err}"));
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let uid = u32::try_from(header.uid().map_err(|e| bad("uid", e))?)
            .map_err(|_| UnpackError::Invalid("uid out of range".into()))?;
        let gid = u32::try_from(header.gid().map_err(|e| bad("gid", e))?)
            .map_err(|_| UnpackError::Invalid("gid out of range".into()))?;
        let mtime = i64::try_from(header.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(i64::MAX);
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(classify_read_error)? {
            for extension in extensions {
                let extension = extension.map_err(classify_read_error)?;
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                    && !name.starts_with(fsutil::OVERLAY_XATTR_PREFIX)
                {
                    xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta { mode, uid, gid, mtime, xattrs })
    }

    /// Owner, mode, xattrs and (except for directories, done last) mtime.
    pub(super) fn apply_at(&self, dir: std::os::fd::BorrowedFd<'_>, name: &OsStr, is_symlink: bool) -> io::Result<()> {
        fsutil::chown_at(dir, name, self.uid, self.gid)?;
        if !is_symlink {
            fsutil::chmod_at(dir, name, self.mode)?;
        }
        for (key, value) in &self.xattrs {
            let result = fsutil::set_xattr_at(dir, name, key, value);
            // The kernel refuses user.* xattrs on symlinks; tar drops those too.
            let result = match result {
                Err(err) if is_symlink && err.raw_os_error() == Some(libc::EPERM) => Ok(()),
                other => other,
            };
            set_xattr_tolerant(result, key)?;
        }
        fsutil::set_mtime_at(dir, name, self.mtime, 0)
    }

    pub(super) fn apply_fd(&self, file: &std::fs::File) -> io::Result<()> {
        nix::unistd::fchown(
            file.as_fd(),
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )?;
        nix::sys::stat::fchmod(file.as_fd(), nix::sys::stat::Mode::from_bits_truncate(self.mode))?;
        for (key, value) in &self.xattrs {
            let ckey = std::ffi::CString::new(key.as_str())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
            // SAFETY: valid fd, NUL-terminated key, buffer of the given length.
            let rc = unsafe { libc::fsetxattr(file.as_raw_fd(), ckey.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
            let result = if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
            set_xattr_tolerant(result, key)?;
        }
        let time = nix::sys::time::TimeSpec::new(self.mtime, 0);
        nix::sys::stat::futimens(file.as_fd(), &time, &time)?;
        Ok(())
    }
}

/// A file system without support for an xattr namespace (or a namespace the kernel
/// refuses, like an unknown `system.*`) should not fail the whole layer, as with tar.
fn set_xattr_tolerant(result: io::Result<()>, key: &str) -> io::Result<()> {
    match result {
        Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)) => {
            tracing::warn!(xattr = key, error = %err, "xattr not restored");
            Ok(())
        }
        other => other,
    }
}

pub(super) enum WriteError {
    Read(io::Error),
    Write(io::Error),
}

const SPARSE_BLOCK: usize = 4096;
static ZEROS: [u8; SPARSE_BLOCK] = [0; SPARSE_BLOCK];

/// Copies `reader` into `file`, leaving holes where whole blocks are zero, so sparse files
/// (GNU sparse entries, or plain runs of zeros) stay sparse on disk.
pub(super) fn write_sparse(file: &mut std::fs::File, reader: &mut impl Read) -> Result<(), WriteError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut length: u64 = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(WriteError::Read(err)),
            }
        }
        if filled == 0 {
            break;
        }
        for block in buf[..filled].chunks(SPARSE_BLOCK) {
            // Slice equality is a memcmp, fast even in unoptimised test builds.
            if block == &ZEROS[..block.len()] {
                file.seek(SeekFrom::Current(block.len() as i64)).map_err(WriteError::Write)?;
            } else {
                file.write_all(block).map_err(WriteError::Write)?;
            }
            length += block.len() as u64;
        }
    }
    file.set_len(length).map_err(WriteError::Write)?;
    Ok(())
}
