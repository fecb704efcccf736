//! A snapshot's file tree as a stack of directories: the writable layer on top and its
//! committed parents below (overlayfs semantics: whiteouts, opaque directories), or a
//! single self-contained directory (native snapshotter).
//!
//! Path resolution is an fd-relative walk over that stack that never lets the kernel
//! follow a symlink: symlinks are read and resolved here, relative to the snapshot root,
//! with `..` clamped at the root — the same confinement as `openat2(RESOLVE_IN_ROOT)`
//! but across the layer stack, so a symlink in a lower layer is honoured while writing the
//! upper one.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::fsutil::{self, Stat};
use crate::paths;

/// The same limit as the kernel's (MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: too many levels of symbolic links")]
    Loop { path: String },
    #[error("{path}: a component of the path is not a directory")]
    NotADirectory { path: String },
    #[error("{path}: does not exist (reached through a symbolic link)")]
    Dangling { path: String },
    #[error("{path}: not part of this layer")]
    NotInLayer { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

impl TreeError {
    fn io(path: &[OsString], source: io::Error) -> TreeError {
        TreeError::Io { path: shown(path), source }
    }
}

pub fn shown(path: &[OsString]) -> String {
    format!("/{}", paths::join(path).to_string_lossy())
}

/// How deletions are represented in the writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// overlayfs upper directory: whiteout devices and opaque xattrs.
    Overlay,
    /// A complete tree (native snapshotter): deletions really delete.
    Native,
}

pub struct Tree {
    pub upper: OwnedFd,
    /// Read-only parent layers, top-first (always empty for [`Layout::Native`]).
    pub lowers: Vec<OwnedFd>,
    pub layout: Layout,
}

/// One directory of the merged tree: its directory in the writable layer and the
/// directories of the same path in the lower layers that show through it.
pub struct DirPos {
    pub upper: OwnedFd,
    pub lowers: Vec<OwnedFd>,
}

/// What a name in a merged directory is.
pub enum Lookup {
    Missing {
        /// The writable layer has a whiteout for it.
        whiteout_in_upper: bool,
    },
    Dir {
        in_upper: bool,
        /// Lower directories of that name that merge into it, top-first.
        lowers: Vec<OwnedFd>,
        /// The topmost lower directory's metadata (for copy-up).
        lower_stat: Option<Stat>,
    },
    Symlink(OsString),
    Other {
        in_upper: bool,
    },
}

impl Tree {
    pub fn root(&self) -> io::Result<DirPos> {
        let upper = self.upper.try_clone()?;
        let lowers = self.lowers.iter().map(|fd| fd.try_clone()).collect::<io::Result<_>>()?;
        Ok(DirPos { upper, lowers })
    }

    fn whiteouts(&self) -> bool {
        self.layout == Layout::Overlay
    }

    /// Lower directories named `name` below `lowers` that merge (stops at an opaque
    /// directory, a whiteout or a non-directory).
    fn merged_lower_dirs(&self, lowers: &[OwnedFd], name: &OsStr) -> io::Result<Vec<OwnedFd>> {
        let mut out = Vec::new();
        for lower in lowers {
            let Some(stat) = fsutil::stat_at(lower.as_fd(), name)? else { continue };
            if !fsutil::is_dir(&stat) {
                break;
            }
            let dir = fsutil::open_dir_at(lower.as_fd(), name)?;
            let opaque = fsutil::is_opaque_at(dir.as_fd(), fsutil::dot())?;
            out.push(dir);
            if opaque {
                break;
            }
        }
        Ok(out)
    }

    pub fn lookup(&self, pos: &DirPos, name: &OsStr) -> io::Result<Lookup> {
        if let Some(stat) = fsutil::stat_at(pos.upper.as_fd(), name)? {
            if self.whiteouts() && fsutil::is_whiteout(&stat) {
                return Ok(Lookup::Missing { whiteout_in_upper: true });
            }
            if fsutil::is_dir(&stat) {
                let opaque = self.whiteouts() && fsutil::is_opaque_at(pos.upper.as_fd(), name)?;
                let lowers = if opaque { Vec::new() } else { self.merged_lower_dirs(&pos.lowers, name)? };
                return Ok(Lookup::Dir { in_upper: true, lowers, lower_stat: None });
            }
            if fsutil::file_type(&stat) == nix::sys::stat::SFlag::S_IFLNK {
                return Ok(Lookup::Symlink(fsutil::read_link_at(pos.upper.as_fd(), name)?));
            }
            return Ok(Lookup::Other { in_upper: true });
        }
        for (index, lower) in pos.lowers.iter().enumerate() {
            let Some(stat) = fsutil::stat_at(lower.as_fd(), name)? else { continue };
            if fsutil::is_whiteout(&stat) {
                return Ok(Lookup::Missing { whiteout_in_upper: false });
            }
            if fsutil::is_dir(&stat) {
                let lowers = self.merged_lower_dirs(&pos.lowers[index..], name)?;
                return Ok(Lookup::Dir { in_upper: false, lowers, lower_stat: Some(stat) });
            }
            if fsutil::file_type(&stat) == nix::sys::stat::SFlag::S_IFLNK {
                return Ok(Lookup::Symlink(fsutil::read_link_at(lower.as_fd(), name)?));
            }
            return Ok(Lookup::Other { in_upper: false });
        }
        Ok(Lookup::Missing { whiteout_in_upper: false })
    }

    /// Resolves directory `path` of the merged tree to its directory in the writable
    /// layer. Symlinks are followed inside the root. With `create`, missing directories
    /// named literally in `path` are created (as `tar` does for implied parents) and
    /// directories that exist only in lower layers are copied up; without it, every
    /// directory must already be in the writable layer.
    pub fn resolve_dir(&self, path: &[OsString], create: bool) -> Result<DirPos, TreeError> {
        // (component, reached through a symlink)
        let mut pending: VecDeque<(OsString, bool)> = path.iter().map(|c| (c.clone(), false)).collect();
        let mut stack: Vec<DirPos> = vec![self.root().map_err(|e| TreeError::io(&[], e))?];
        let mut names: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some((name, via_link)) = pending.pop_front() {
            if name == "." || name.is_empty() {
                continue;
            }
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                    names.pop();
                }
                continue;
            }
            let here = names.iter().cloned().chain([name.clone()]).collect::<Vec<_>>();
            let pos = stack.last().ok_or_else(|| TreeError::io(&names, io::Error::other("empty stack")))?;
            let looked = self.lookup(pos, &name).map_err(|e| TreeError::io(&here, e))?;
            let next = match looked {
                Lookup::Dir { in_upper: true, lowers, .. } => {
                    let upper = fsutil::open_dir_at(pos.upper.as_fd(), &name).map_err(|e| TreeError::io(&here, e))?;
                    DirPos { upper, lowers }
                }
                Lookup::Dir { in_upper: false, lowers, lower_stat } => {
                    if !create {
                        return Err(TreeError::NotInLayer { path: shown(&here) });
                    }
                    self.copy_up_dir(pos, &name, lower_stat.as_ref(), lowers.first())
                        .map_err(|e| TreeError::io(&here, e))?;
                    let upper = fsutil::open_dir_at(pos.upper.as_fd(), &name).map_err(|e| TreeError::io(&here, e))?;
                    DirPos { upper, lowers }
                }
                Lookup::Symlink(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(TreeError::Loop { path: shown(&here) });
                    }
                    let (absolute, parts) = paths::link_target_components(&target);
                    if absolute {
                        stack.truncate(1);
                        names.clear();
                    }
                    for part in parts.into_iter().rev() {
                        pending.push_front((part, true));
                    }
                    continue;
                }
                Lookup::Other { .. } => return Err(TreeError::NotADirectory { path: shown(&here) }),
                Lookup::Missing { whiteout_in_upper } => {
                    if !create {
                        return Err(TreeError::NotInLayer { path: shown(&here) });
                    }
                    if via_link {
                        return Err(TreeError::Dangling { path: shown(&here) });
                    }
                    self.make_dir(pos, &name, whiteout_in_upper).map_err(|e| TreeError::io(&here, e))?;
                    let upper = fsutil::open_dir_at(pos.upper.as_fd(), &name).map_err(|e| TreeError::io(&here, e))?;
                    DirPos { upper, lowers: Vec::new() }
                }
            };
            stack.push(next);
            names.push(name);
        }
        stack.pop().ok_or_else(|| TreeError::io(path, io::Error::other("empty stack")))
    }

    /// A new directory where nothing (or a whiteout) was: it hides whatever a lower layer
    /// had under that name, so after a whiteout it is opaque.
    fn make_dir(&self, pos: &DirPos, name: &OsStr, replaces_whiteout: bool) -> io::Result<()> {
        if replaces_whiteout {
            fsutil::unlink_at(pos.upper.as_fd(), name)?;
        }
        fsutil::mkdir_at(pos.upper.as_fd(), name, 0o755)?;
        if replaces_whiteout {
            fsutil::set_xattr_at(pos.upper.as_fd(), name, fsutil::OVERLAY_OPAQUE_XATTR, b"y")?;
        }
        Ok(())
    }

    /// Creates `name` in the writable layer with the metadata of the lower directory it
    /// shadows, as overlayfs's copy-up would.
    fn copy_up_dir(
        &self,
        pos: &DirPos,
        name: &OsStr,
        lower_stat: Option<&Stat>,
        lower_dir: Option<&OwnedFd>,
    ) -> io::Result<()> {
        let mode = lower_stat.map(|s| s.st_mode & 0o7777).unwrap_or(0o755);
        fsutil::mkdir_at(pos.upper.as_fd(), name, 0o700)?;
        if let Some(stat) = lower_stat {
            fsutil::chown_at(pos.upper.as_fd(), name, stat.st_uid, stat.st_gid)?;
        }
        fsutil::chmod_at(pos.upper.as_fd(), name, mode)?;
        if let Some(lower) = lower_dir {
            for (key, value) in fsutil::list_xattrs_at(lower.as_fd(), fsutil::dot())? {
                if !key.starts_with(fsutil::OVERLAY_XATTR_PREFIX) {
                    fsutil::set_xattr_at(pos.upper.as_fd(), name, &key, &value)?;
                }
            }
        }
        if let Some(stat) = lower_stat {
            fsutil::set_mtime_at(pos.upper.as_fd(), name, stat.st_mtime, stat.st_mtime_nsec)?;
        }
        Ok(())
    }
}
