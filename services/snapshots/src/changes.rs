//! What a writable layer changed against its parent, as `docker diff` lists it: from an
//! overlay upper directory directly, or by comparing two complete trees (native).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::archive::{TarWriter, merged_children, merged_entries};
use crate::fsutil::{self, Stat};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<OsString>,
    pub kind: ChangeKind,
}

impl Change {
    pub fn display_path(&self) -> String {
        crate::tree::shown(&self.path)
    }
}

fn push(out: &mut Vec<Change>, path: &[OsString], kind: ChangeKind) {
    out.push(Change { path: path.to_vec(), kind });
}

/// Changes recorded in an overlay upper directory over `lowers` (top-first).
pub fn overlay_changes(upper: &OwnedFd, lowers: &[OwnedFd]) -> io::Result<Vec<Change>> {
    fn walk(
        upper: BorrowedFd<'_>,
        lowers: &[OwnedFd],
        path: &mut Vec<OsString>,
        out: &mut Vec<Change>,
    ) -> io::Result<()> {
        let lower_entries = merged_entries(lowers, true)?;
        let find_lower = |name: &OsString| lower_entries.iter().find(|(n, _, _)| n == name);
        let names = fsutil::list_dir(upper)?;
        for name in &names {
            let Some(stat) = fsutil::stat_at(upper, name)? else { continue };
            path.push(name.clone());
            let lower = find_lower(name);
            if fsutil::is_whiteout(&stat) {
                if lower.is_some() {
                    push(out, path, ChangeKind::Deleted);
                }
            } else {
                push(out, path, if lower.is_some() { ChangeKind::Modified } else { ChangeKind::Added });
                if fsutil::is_dir(&stat) {
                    let opaque = fsutil::is_opaque_at(upper, name)?;
                    let child_lowers = match lower {
                        Some((_, index, lower_stat)) if !opaque && fsutil::is_dir(lower_stat) => {
                            merged_children(&lowers[*index..], name, true)?
                        }
                        _ => Vec::new(),
                    };
                    let child = fsutil::open_dir_at(upper, name)?;
                    if opaque
                        && let Some((_, index, lower_stat)) = lower
                        && fsutil::is_dir(lower_stat)
                    {
                        // Everything the lower directory had and this one does not is gone.
                        let hidden = merged_children(&lowers[*index..], name, true)?;
                        let kept: BTreeSet<OsString> = fsutil::list_dir(child.as_fd())?.into_iter().collect();
                        for (lower_name, _, _) in merged_entries(&hidden, true)? {
                            if !kept.contains(&lower_name) {
                                path.push(lower_name);
                                push(out, path, ChangeKind::Deleted);
                                path.pop();
                            }
                        }
                    }
                    walk(child.as_fd(), &child_lowers, path, out)?;
                }
            }
            path.pop();
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(upper.as_fd(), lowers, &mut Vec::new(), &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Changes of complete tree `new` against complete tree `old` (native snapshotter).
/// Like Docker's naive differ: a file with the same type, mode, owner, size, mtime, link
/// target and xattrs is unchanged; a directory is modified when its metadata or anything
/// below it changed.
pub fn tree_changes(new: &OwnedFd, old: Option<&OwnedFd>) -> io::Result<Vec<Change>> {
    fn walk(
        new: BorrowedFd<'_>,
        old: Option<BorrowedFd<'_>>,
        path: &mut Vec<OsString>,
        out: &mut Vec<Change>,
    ) -> io::Result<()> {
        let new_names = fsutil::list_dir(new)?;
        let old_names: BTreeSet<OsString> = match old {
            Some(old) => fsutil::list_dir(old)?.into_iter().collect(),
            None => BTreeSet::new(),
        };
        let new_set: BTreeSet<&OsString> = new_names.iter().collect();
        for name in old_names.iter().filter(|n| !new_set.contains(n)) {
            path.push(name.clone());
            push(out, path, ChangeKind::Deleted);
            path.pop();
        }
        for name in &new_names {
            let Some(new_stat) = fsutil::stat_at(new, name)? else { continue };
            let old_stat = match old {
                Some(old) if old_names.contains(name) => fsutil::stat_at(old, name)?,
                _ => None,
            };
            path.push(name.clone());
            match (old, old_stat) {
                (Some(old), Some(old_stat)) => {
                    let both_dirs = fsutil::is_dir(&new_stat) && fsutil::is_dir(&old_stat);
                    if both_dirs {
                        let mut below = Vec::new();
                        let new_child = fsutil::open_dir_at(new, name)?;
                        let old_child = fsutil::open_dir_at(old, name)?;
                        walk(new_child.as_fd(), Some(old_child.as_fd()), path, &mut below)?;
                        if !below.is_empty() || differs(new, old, name, &new_stat, &old_stat)? {
                            push(out, path, ChangeKind::Modified);
                        }
                        out.extend(below);
                    } else {
                        if differs(new, old, name, &new_stat, &old_stat)? {
                            push(out, path, ChangeKind::Modified);
                        }
                        if fsutil::is_dir(&new_stat) {
                            let new_child = fsutil::open_dir_at(new, name)?;
                            walk(new_child.as_fd(), None, path, out)?;
                        }
                    }
                }
                _ => {
                    push(out, path, ChangeKind::Added);
                    if fsutil::is_dir(&new_stat) {
                        let new_child = fsutil::open_dir_at(new, name)?;
                        walk(new_child.as_fd(), None, path, out)?;
                    }
                }
            }
            path.pop();
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(new.as_fd(), old.map(|o| o.as_fd()), &mut Vec::new(), &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn differs(new: BorrowedFd<'_>, old: BorrowedFd<'_>, name: &OsString, a: &Stat, b: &Stat) -> io::Result<bool> {
    let kind = fsutil::file_type(a);
    if kind != fsutil::file_type(b)
        || a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || a.st_rdev != b.st_rdev
    {
        return Ok(true);
    }
    if kind != nix::sys::stat::SFlag::S_IFDIR
        && (a.st_size != b.st_size || a.st_mtime != b.st_mtime || a.st_mtime_nsec != b.st_mtime_nsec)
    {
        return Ok(true);
    }
    if kind == nix::sys::stat::SFlag::S_IFLNK && fsutil::read_link_at(new, name)? != fsutil::read_link_at(old, name)? {
        return Ok(true);
    }
    Ok(fsutil::list_xattrs_at(new, name)? != fsutil::list_xattrs_at(old, name)?)
}

/// Archives `changes` of tree `new` as a layer (native snapshotter's Diff).
pub fn write_changes<W: Write>(writer: &mut TarWriter<W>, new: &OwnedFd, changes: &[Change]) -> io::Result<()> {
    for change in changes {
        let Some((name, parent)) = change.path.split_last() else { continue };
        match change.kind {
            ChangeKind::Deleted => writer.add_whiteout(&change.path, None)?,
            ChangeKind::Added | ChangeKind::Modified => {
                let mut dir = new.try_clone()?;
                for component in parent {
                    dir = fsutil::open_dir_at(dir.as_fd(), component)?;
                }
                if let Some(stat) = fsutil::stat_at(dir.as_fd(), name)? {
                    writer.add(dir.as_fd(), name, &change.path, &stat)?;
                }
            }
        }
    }
    Ok(())
}
