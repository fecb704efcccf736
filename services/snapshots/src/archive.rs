//! Writing tar streams from snapshot trees: layer diffs (overlay upper directories, with
//! whiteout devices and opaque xattrs turned back into `.wh.` entries) and full exports of a
//! merged tree. Reads are fd-relative with `O_NOFOLLOW`, like the unpacker's writes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::stat::SFlag;

use crate::fsutil::{self, Stat};
use crate::paths::{self, OPAQUE_MARKER, WHITEOUT_PREFIX};

pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    /// First archived path of each multiply-linked inode.
    links: HashMap<(u64, u64), OsString>,
}

fn tar_path(path: &[OsString]) -> OsString {
    paths::join(path)
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        builder.sparse(true);
        TarWriter { builder, links: HashMap::new() }
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }

    fn header(kind: tar::EntryType, stat: &Stat) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(stat.st_mode & 0o7777);
        header.set_uid(u64::from(stat.st_uid));
        header.set_gid(u64::from(stat.st_gid));
        header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
        header.set_size(0);
        header
    }

    fn xattrs(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let xattrs: Vec<(String, Vec<u8>)> = fsutil::list_xattrs_at(dir, name)?
            .into_iter()
            .filter(|(key, _)| !key.starts_with(fsutil::OVERLAY_XATTR_PREFIX))
            .map(|(key, value)| (format!("SCHILY.xattr.{key}"), value))
            .collect();
        if !xattrs.is_empty() {
            self.builder.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(())
    }

    /// Archives `name` in `dir` (not recursively) under `path`.
    pub fn add(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &[OsString], stat: &Stat) -> io::Result<()> {
        let kind = fsutil::file_type(stat);
        let archived = tar_path(path);
        if kind != SFlag::S_IFDIR && stat.st_nlink > 1 {
            let key = (stat.st_dev, stat.st_ino);
            if let Some(first) = self.links.get(&key) {
                let mut header = Self::header(tar::EntryType::Link, stat);
                let first = first.clone();
                return self.builder.append_link(&mut header, &archived, &first);
            }
            self.links.insert(key, archived.clone());
        }
        if kind == SFlag::S_IFSOCK {
            // Sockets cannot be archived (tar and Docker skip them too).
            return Ok(());
        }
        self.xattrs(dir, name)?;
        match kind {
            SFlag::S_IFREG => {
                let mut file = fsutil::open_file_at(dir, name)?;
                self.builder.append_file(&archived, &mut file)
            }
            SFlag::S_IFDIR => {
                let mut header = Self::header(tar::EntryType::Directory, stat);
                let mut dir_path = archived;
                dir_path.push("/");
                self.builder.append_data(&mut header, &dir_path, io::empty())
            }
            SFlag::S_IFLNK => {
                let target = fsutil::read_link_at(dir, name)?;
                let mut header = Self::header(tar::EntryType::Symlink, stat);
                self.builder.append_link(&mut header, &archived, &target)
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let entry_type = match kind {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut header = Self::header(entry_type, stat);
                if kind != SFlag::S_IFIFO {
                    let (major, minor) = fsutil::dev_major_minor(stat.st_rdev);
                    header.set_device_major(major)?;
                    header.set_device_minor(minor)?;
                }
                self.builder.append_data(&mut header, &archived, io::empty())
            }
            _ => Ok(()),
        }
    }

    /// A `.wh.NAME` entry deleting `path`.
    pub fn add_whiteout(&mut self, path: &[OsString], stat: Option<&Stat>) -> io::Result<()> {
        let Some((name, parent)) = path.split_last() else { return Ok(()) };
        let mut whiteout = OsString::from(WHITEOUT_PREFIX);
        whiteout.push(name);
        let archived: Vec<OsString> = parent.iter().cloned().chain([whiteout]).collect();
        self.add_marker(&archived, stat)
    }

    /// A `.wh..wh..opq` entry making directory `path` opaque.
    pub fn add_opaque(&mut self, path: &[OsString], stat: Option<&Stat>) -> io::Result<()> {
        let archived: Vec<OsString> = path.iter().cloned().chain([OsString::from(OPAQUE_MARKER)]).collect();
        self.add_marker(&archived, stat)
    }

    fn add_marker(&mut self, archived: &[OsString], stat: Option<&Stat>) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_mtime(stat.map(|s| u64::try_from(s.st_mtime).unwrap_or(0)).unwrap_or(0));
        self.builder.append_data(&mut header, tar_path(archived), io::empty())
    }
}

/// Archives an overlay upper directory as an OCI layer: whiteout devices become `.wh.`
/// entries and opaque directories get a `.wh..wh..opq` entry right after themselves.
pub fn write_upper<W: Write>(writer: &mut TarWriter<W>, upper: &OwnedFd) -> io::Result<()> {
    fn walk<W: Write>(writer: &mut TarWriter<W>, dir: BorrowedFd<'_>, path: &mut Vec<OsString>) -> io::Result<()> {
        for name in fsutil::list_dir(dir)? {
            let Some(stat) = fsutil::stat_at(dir, &name)? else { continue };
            path.push(name.clone());
            if fsutil::is_whiteout(&stat) {
                writer.add_whiteout(path, Some(&stat))?;
            } else {
                writer.add(dir, &name, path, &stat)?;
                if fsutil::is_dir(&stat) {
                    if fsutil::is_opaque_at(dir, &name)? {
                        writer.add_opaque(path, Some(&stat))?;
                    }
                    let child = fsutil::open_dir_at(dir, &name)?;
                    walk(writer, child.as_fd(), path)?;
                }
            }
            path.pop();
        }
        Ok(())
    }
    walk(writer, upper.as_fd(), &mut Vec::new())
}

/// Archives the merged tree of `layers` (top-first): what a container would see.
/// `whiteouts` says whether the layers use overlay whiteouts (not for native trees).
pub fn write_merged<W: Write>(writer: &mut TarWriter<W>, layers: &[OwnedFd], whiteouts: bool) -> io::Result<()> {
    fn walk<W: Write>(
        writer: &mut TarWriter<W>,
        layers: &[OwnedFd],
        whiteouts: bool,
        path: &mut Vec<OsString>,
    ) -> io::Result<()> {
        for (name, index, stat) in merged_entries(layers, whiteouts)? {
            path.push(name.clone());
            let dir = layers[index].as_fd();
            writer.add(dir, &name, path, &stat)?;
            if fsutil::is_dir(&stat) {
                let children = merged_children(&layers[index..], &name, whiteouts)?;
                walk(writer, &children, whiteouts, path)?;
            }
            path.pop();
        }
        Ok(())
    }
    walk(writer, layers, whiteouts, &mut Vec::new())
}

/// The visible names of a merged directory: (name, index of the layer providing it, stat).
pub fn merged_entries(layers: &[OwnedFd], whiteouts: bool) -> io::Result<Vec<(OsString, usize, Stat)>> {
    let mut seen: HashMap<OsString, Option<(usize, Stat)>> = HashMap::new();
    for (index, layer) in layers.iter().enumerate() {
        for name in fsutil::list_dir(layer.as_fd())? {
            if seen.contains_key(&name) {
                continue;
            }
            let Some(stat) = fsutil::stat_at(layer.as_fd(), &name)? else { continue };
            let visible = !(whiteouts && fsutil::is_whiteout(&stat));
            seen.insert(name, visible.then_some((index, stat)));
        }
    }
    let mut out: Vec<(OsString, usize, Stat)> =
        seen.into_iter().filter_map(|(name, found)| found.map(|(index, stat)| (name, index, stat))).collect();
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// The directories merging into directory `name`: from `layers[0]` (where it is a
/// directory) down to an opaque directory or a non-directory.
pub fn merged_children(layers: &[OwnedFd], name: &OsStr, whiteouts: bool) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::new();
    for layer in layers {
        let Some(stat) = fsutil::stat_at(layer.as_fd(), name)? else { continue };
        if !fsutil::is_dir(&stat) {
            break;
        }
        let dir = fsutil::open_dir_at(layer.as_fd(), name)?;
        let opaque = whiteouts && fsutil::is_opaque_at(dir.as_fd(), fsutil::dot())?;
        out.push(dir);
        if opaque {
            break;
        }
    }
    Ok(out)
}

/// Bytes used on disk and inodes of a tree (hard links counted once).
pub fn usage(root: &OwnedFd) -> io::Result<(i64, i64)> {
    fn walk(
        dir: BorrowedFd<'_>,
        seen: &mut std::collections::HashSet<(u64, u64)>,
        total: &mut (i64, i64),
    ) -> io::Result<()> {
        for name in fsutil::list_dir(dir)? {
            let Some(stat) = fsutil::stat_at(dir, &name)? else { continue };
            if seen.insert((stat.st_dev, stat.st_ino)) {
                total.0 += stat.st_blocks * 512;
                total.1 += 1;
            }
            if fsutil::is_dir(&stat) {
                let child = fsutil::open_dir_at(dir, &name)?;
                walk(child.as_fd(), seen, total)?;
            }
        }
        Ok(())
    }
    let mut total = (0, 1);
    let root_stat = fsutil::fstat(root.as_fd())?;
    total.0 += root_stat.st_blocks * 512;
    walk(root.as_fd(), &mut std::collections::HashSet::new(), &mut total)?;
    Ok(total)
}
