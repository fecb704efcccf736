//! Unpacking a layer tar into a snapshot's writable layer, safely: every path is resolved
//! by [`Tree::resolve_dir`] (inside the root, never following a symlink out), every file is
//! created relative to a directory fd with `O_NOFOLLOW`/`O_EXCL`, and hard links must
//! point at files of this layer.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::stat::SFlag;
use tar::EntryType;

mod meta;

use crate::fsutil;
use crate::paths::{self, EntryKind};
use crate::tree::{DirPos, Layout, Tree, TreeError, shown};
use meta::{Meta, WriteError, write_sparse};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer is malformed or hostile.
    #[error("invalid layer: {0}")]
    Invalid(String),
    /// Reading the layer stream failed for a reason outside the layer (e.g. the client
    /// went away); the inner error says why.
    #[error("reading the layer: {0}")]
    Source(io::Error),
    /// Writing the snapshot failed (disk full, ...).
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl From<TreeError> for UnpackError {
    fn from(err: TreeError) -> UnpackError {
        match err {
            TreeError::Io { path, source } => UnpackError::Io { context: path, source },
            other => UnpackError::Invalid(other.to_string()),
        }
    }
}

fn io_at(path: &[OsString]) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { context: shown(path), source }
}

/// An error from the byte stream feeding the archive (as opposed to the archive's own
/// format), so that it is not reported as a malformed layer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceFailure(pub String);

fn classify_read_error(err: io::Error) -> UnpackError {
    if err.get_ref().is_some_and(|inner| inner.is::<SourceFailure>()) {
        UnpackError::Source(err)
    } else {
        UnpackError::Invalid(format!("cannot read the tar stream: {err}"))
    }
}

pub struct Unpacker {
    tree: Tree,
    /// The parent directory of the previous entry (entries come grouped by directory).
    cached: Option<(Vec<OsString>, DirPos)>,
    /// Directory mtimes, set last (creating children changes them).
    dir_times: Vec<(Vec<OsString>, i64)>,
    /// Native layout only: paths this layer wrote, which an opaque marker must keep.
    written: HashSet<Vec<OsString>>,
    pub entries: u64,
}

impl Unpacker {
    pub fn new(tree: Tree) -> Unpacker {
        Unpacker { tree, cached: None, dir_times: Vec::new(), written: HashSet::new(), entries: 0 }
    }

    /// Applies every entry of `archive`.
    pub fn unpack<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), UnpackError> {
        for entry in archive.entries().map_err(classify_read_error)? {
            let mut entry = entry.map_err(classify_read_error)?;
            self.apply_entry(&mut entry)?;
            self.entries += 1;
        }
        self.finish();
        Ok(())
    }

    fn finish(&mut self) {
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            // Best effort: a later entry may legitimately have replaced the directory.
            if let Ok(dir) = self.open_upper_dir(&path) {
                let _ = fsutil::set_mtime_at(dir.as_fd(), fsutil::dot(), mtime, 0);
            }
        }
    }

    /// Opens `path` in the writable layer only, without following anything.
    fn open_upper_dir(&self, path: &[OsString]) -> io::Result<OwnedFd> {
        let mut dir = self.tree.upper.try_clone()?;
        for name in path {
            dir = fsutil::open_dir_at(dir.as_fd(), name)?;
        }
        Ok(dir)
    }

    fn parent(&mut self, path: &[OsString]) -> Result<&DirPos, UnpackError> {
        let hit = self.cached.as_ref().is_some_and(|(cached, _)| cached == path);
        if !hit {
            let pos = self.tree.resolve_dir(path, true)?;
            self.cached = Some((path.to_vec(), pos));
        }
        match &self.cached {
            Some((_, pos)) => Ok(pos),
            None => Err(UnpackError::Invalid("internal: no parent directory".into())),
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = paths::entry_components(&raw_path).map_err(|e| UnpackError::Invalid(e.to_string()))?;
        let kind = entry.header().entry_type();
        let Some((name, parent)) = path.split_last() else {
            // The root itself ("./"): only its metadata matters.
            if kind == EntryType::Directory {
                let meta = Meta::of(entry)?;
                let root = self.tree.upper.try_clone().map_err(io_at(&path))?;
                meta.apply_at(root.as_fd(), fsutil::dot(), false).map_err(io_at(&path))?;
                self.dir_times.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        match paths::classify(name) {
            EntryKind::Opaque => return self.opaque(parent),
            EntryKind::Whiteout(target) => {
                let target = target.to_os_string();
                return self.whiteout(parent, &target);
            }
            EntryKind::Plain => {}
        }
        if self.tree.layout == Layout::Native {
            for end in 1..=path.len() {
                self.written.insert(path[..end].to_vec());
            }
        }
        match kind {
            EntryType::Directory => self.directory(entry, &path),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.regular(entry, &path),
            EntryType::Symlink => self.symlink(entry, &path),
            EntryType::Link => self.hardlink(entry, &path),
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.special(entry, &path, kind),
            other => {
                tracing::debug!(path = %shown(&path), kind = ?other, "skipping unsupported tar entry type");
                Ok(())
            }
        }
    }

    /// Makes room for a new entry called `name`; returns whether a whiteout was there.
    fn clear(&self, dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> io::Result<bool> {
        let Some(stat) = fsutil::stat_at(dir.as_fd(), name)? else { return Ok(false) };
        if fsutil::is_dir(&stat) {
            if !keep_dir {
                fsutil::remove_all_at(dir.as_fd(), name)?;
            }
            return Ok(false);
        }
        fsutil::unlink_at(dir.as_fd(), name)?;
        Ok(self.tree.layout == Layout::Overlay && fsutil::is_whiteout(&stat))
    }

    fn directory<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[OsString]) -> Result<(), UnpackError> {
        let meta = Meta::of(entry)?;
        let (name, parent) = split(path);
        let layout = self.tree.layout;
        let pos = self.parent(parent)?;
        let upper = pos.upper.try_clone().map_err(io_at(path))?;
        let existing = fsutil::stat_at(upper.as_fd(), name).map_err(io_at(path))?;
        let replaced_whiteout = match existing {
            Some(stat) if fsutil::is_dir(&stat) => false,
            Some(stat) => {
                let whiteout = layout == Layout::Overlay && fsutil::is_whiteout(&stat);
                fsutil::unlink_at(upper.as_fd(), name).map_err(io_at(path))?;
                fsutil::mkdir_at(upper.as_fd(), name, 0o700).map_err(io_at(path))?;
                whiteout
            }
            None => {
                fsutil::mkdir_at(upper.as_fd(), name, 0o700).map_err(io_at(path))?;
                false
            }
        };
        meta.apply_at(upper.as_fd(), name, false).map_err(io_at(path))?;
        if replaced_whiteout {
            // Deleted and re-created in this layer: what lower layers had is gone.
            fsutil::set_xattr_at(upper.as_fd(), name, fsutil::OVERLAY_OPAQUE_XATTR, b"y").map_err(io_at(path))?;
        }
        self.dir_times.push((path.to_vec(), meta.mtime));
        Ok(())
    }

    fn regular<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[OsString]) -> Result<(), UnpackError> {
        let meta = Meta::of(entry)?;
        let (name, parent) = split(path);
        let upper = self.parent(parent)?.upper.try_clone().map_err(io_at(path))?;
        self.clear(&upper, name, false).map_err(io_at(path))?;
        let mut file = fsutil::create_file_at(upper.as_fd(), name).map_err(io_at(path))?;
        write_sparse(&mut file, entry).map_err(|err| match err {
            WriteError::Read(err) => classify_read_error(err),
            WriteError::Write(source) => UnpackError::Io { context: shown(path), source },
        })?;
        meta.apply_fd(&file).map_err(io_at(path))?;
        Ok(())
    }

    fn symlink<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[OsString]) -> Result<(), UnpackError> {
        let meta = Meta::of(entry)?;
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UnpackError::Invalid(format!("symlink {} has no target", shown(path))))?;
        if target.contains(&0) {
            return Err(UnpackError::Invalid(format!("symlink {} has a NUL byte in its target", shown(path))));
        }
        let (name, parent) = split(path);
        let upper = self.parent(parent)?.upper.try_clone().map_err(io_at(path))?;
        self.clear(&upper, name, false).map_err(io_at(path))?;
        fsutil::symlink_at(OsStr::from_bytes(&target), upper.as_fd(), name).map_err(io_at(path))?;
        meta.apply_at(upper.as_fd(), name, true).map_err(io_at(path))?;
        // A symlink may replace a directory on the cached parent path of later entries.
        self.cached = None;
        Ok(())
    }

    fn hardlink<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[OsString]) -> Result<(), UnpackError> {
        let raw_target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .ok_or_else(|| UnpackError::Invalid(format!("hard link {} has no target", shown(path))))?;
        let target = paths::entry_components(&raw_target)
            .map_err(|e| UnpackError::Invalid(format!("hard link {}: {e}", shown(path))))?;
        let not_in_layer = || {
            UnpackError::Invalid(format!(
                "hard link {} points to {}, which is not a file of this layer",
                shown(path),
                String::from_utf8_lossy(&raw_target)
            ))
        };
        let Some((target_name, target_parent)) = target.split_last() else { return Err(not_in_layer()) };
        if target == path {
            return Ok(());
        }
        let target_dir = match self.tree.resolve_dir(target_parent, false) {
            Ok(pos) => pos.upper,
            Err(TreeError::Io { path, source }) => return Err(UnpackError::Io { context: path, source }),
            Err(_) => return Err(not_in_layer()),
        };
        match fsutil::stat_at(target_dir.as_fd(), target_name).map_err(io_at(&target))? {
            Some(stat) if self.is_linkable(&stat) => {}
            _ => return Err(not_in_layer()),
        }
        let (name, parent) = split(path);
        let upper = self.parent(parent)?.upper.try_clone().map_err(io_at(path))?;
        self.clear(&upper, name, false).map_err(io_at(path))?;
        fsutil::hardlink_at(target_dir.as_fd(), target_name, upper.as_fd(), name).map_err(io_at(path))?;
        Ok(())
    }

    fn special<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[OsString],
        kind: EntryType,
    ) -> Result<(), UnpackError> {
        let meta = Meta::of(entry)?;
        let header = entry.header();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let (sflag, rdev) = match kind {
            EntryType::Char => (SFlag::S_IFCHR, fsutil::make_dev(major, minor)),
            EntryType::Block => (SFlag::S_IFBLK, fsutil::make_dev(major, minor)),
            _ => (SFlag::S_IFIFO, 0),
        };
        let (name, parent) = split(path);
        let upper = self.parent(parent)?.upper.try_clone().map_err(io_at(path))?;
        self.clear(&upper, name, false).map_err(io_at(path))?;
        fsutil::mknod_at(upper.as_fd(), name, sflag, 0o600, rdev).map_err(io_at(path))?;
        meta.apply_at(upper.as_fd(), name, false).map_err(io_at(path))?;
        Ok(())
    }

    /// A hard link may point at anything in the layer but a directory or a whiteout.
    fn is_linkable(&self, stat: &fsutil::Stat) -> bool {
        let whiteout = self.is_overlay() && fsutil::is_whiteout(stat);
        !fsutil::is_dir(stat) && !whiteout
    }

    fn is_overlay(&self) -> bool {
        self.tree.layout == Layout::Overlay
    }

    fn whiteout(&mut self, parent: &[OsString], name: &OsStr) -> Result<(), UnpackError> {
        let overlay = self.is_overlay();
        let path: Vec<OsString> = parent.iter().cloned().chain([name.to_os_string()]).collect();
        let upper = self.parent(parent)?.upper.try_clone().map_err(io_at(&path))?;
        fsutil::remove_all_at(upper.as_fd(), name).map_err(io_at(&path))?;
        if overlay {
            fsutil::make_whiteout_at(upper.as_fd(), name).map_err(io_at(&path))?;
        }
        self.written.remove(&path);
        Ok(())
    }

    fn opaque(&mut self, dir: &[OsString]) -> Result<(), UnpackError> {
        let overlay = self.is_overlay();
        let upper = self.parent(dir)?.upper.try_clone().map_err(io_at(dir))?;
        if overlay {
            fsutil::set_xattr_at(upper.as_fd(), fsutil::dot(), fsutil::OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(io_at(dir))?;
        } else {
            for child in fsutil::list_dir(upper.as_fd()).map_err(io_at(dir))? {
                let child_path: Vec<OsString> = dir.iter().cloned().chain([child.clone()]).collect();
                if !self.written.contains(&child_path) {
                    fsutil::remove_all_at(upper.as_fd(), &child).map_err(io_at(&child_path))?;
                }
            }
        }
        // The cached position still lists the lower directories this marker hides.
        self.cached = None;
        Ok(())
    }
}

fn split(path: &[OsString]) -> (&OsStr, &[OsString]) {
    match path.split_last() {
        Some((name, parent)) => (name.as_os_str(), parent),
        None => (OsStr::new("."), &[]),
    }
}

#[cfg(test)]
mod tests {
    /// The `layer_tar` fuzz target's checks over its corpus (seeds and inputs it found).
    mod fuzz_corpus {
        use crate::fsutil::open_dir_path;
        use crate::tree::{Layout, Tree};
        use crate::unpack::Unpacker;

        include!("../../../../fuzz/checks/layer_tar.rs");
        include!("../../../../fuzz/checks/corpus.rs");

        #[test]
        fn corpus_holds() {
            check_corpus("layer_tar", check);
        }
    }
}
