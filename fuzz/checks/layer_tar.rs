// The properties of applying a layer tar, shared by the `layer_tar` fuzz target and
// berth-snapshots' unit tests. Pulled in with `include!`: the including module provides
// `Tree`, `Layout`, `Unpacker` and `open_dir_path` (berth_snapshots' tree, unpack and
// fsutil modules).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// Everything below `dir` (type, mode, owner, size, link count, mtime, symlink target,
/// content of regular files), to prove that it did not change. Never opens anything but
/// directories and regular files.
fn state_of(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let mut line = format!(
                "{:o} {}:{} {} bytes, {} links, mtime {}.{}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.len(),
                meta.nlink(),
                meta.mtime(),
                meta.mtime_nsec()
            );
            if meta.file_type().is_symlink() {
                line += &format!(" -> {:?}", std::fs::read_link(&path).ok());
            } else if meta.is_file() {
                line += &format!(" {:?}", std::fs::read(&path).ok());
            }
            out.insert(path.clone(), line);
            if meta.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// What a parent layer might hold: a directory with a file, and symlinks out of the root
/// (to the sibling `outside`, relatively and absolutely, and far up), to a file, in a loop.
fn seed(dir: &Path, outside: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("etc"))?;
    std::fs::write(dir.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n")?;
    symlink("../outside", dir.join("out"))?;
    symlink(outside, dir.join("abs"))?;
    symlink("../../../../../../../..", dir.join("up"))?;
    symlink("etc/passwd", dir.join("pw"))?;
    symlink("loop", dir.join("loop"))?;
    Ok(())
}

/// Lets the owner remove everything below `dir` (a layer may make directories 0000).
fn make_removable(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            make_removable(&path);
        }
    }
}

/// Applies `data` as a layer tar, once as a native snapshot (a copy of a parent tree) and
/// once as an overlay upper directory over a parent layer. Whatever it holds, nothing
/// panics, and nothing outside the root changes: not the sibling directory `outside`, not
/// the parent layer, not the directory around them.
pub fn check(data: &[u8]) {
    for layout in [Layout::Native, Layout::Overlay] {
        let base = tempfile::Builder::new().prefix("berth-fuzz-").tempdir().expect("temp dir");
        let (root, lower, outside) = (base.path().join("root"), base.path().join("lower"), base.path().join("outside"));
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("sentinel"), b"untouched").unwrap();
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&lower).unwrap();
        let lowers = match layout {
            Layout::Native => {
                seed(&root, &outside).unwrap();
                Vec::new()
            }
            Layout::Overlay => {
                seed(&lower, &outside).unwrap();
                vec![open_dir_path(&lower).unwrap()]
            }
        };
        let around = |state: BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
            state.into_iter().filter(|(path, _)| !path.starts_with(&root)).collect()
        };
        let before = around(state_of(base.path()));

        let tree = Tree { upper: open_dir_path(&root).unwrap(), lowers, layout };
        let mut unpacker = Unpacker::new(tree);
        let result = unpacker.unpack(&mut tar::Archive::new(data));
        drop(unpacker);

        let after = around(state_of(base.path()));
        if after != before {
            let paths: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
            let changed: Vec<_> = paths
                .into_iter()
                .filter(|path| before.get(*path) != after.get(*path))
                .map(|path| (path, before.get(path), after.get(path)))
                .collect();
            panic!("{layout:?}: changed outside the root ({result:?}): {changed:#?}");
        }
        make_removable(base.path());
        base.close().expect("removing the temp dir");
    }
}
