//! Network namespaces as files: a namespace made by `unshare(CLONE_NEWNET)` on a throwaway
//! thread and kept alive by bind-mounting that thread's `/proc/thread-self/ns/net` onto a
//! file under `<exec-root>/netns/`. This is what CNI runtimes do (containerd's netns
//! package): the namespace exists before the container, CNI plugins and runc both enter it
//! by path, and removing it is an unmount. `ip netns` would work too, but it keeps its
//! files in the host-wide /run/netns, shared by every daemon on the machine.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

pub fn dir(exec_root: &Path) -> PathBuf {
    exec_root.join("netns")
}

pub fn path(exec_root: &Path, container_id: &str) -> PathBuf {
    dir(exec_root).join(container_id)
}

/// Whether `path` is a live namespace mount (and not just the empty mount-point file).
#[cfg(test)]
pub fn is_mounted(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let target = path.display().to_string();
    mountinfo.lines().any(|line| line.split(' ').nth(4) == Some(target.as_str()))
}

/// Creates a fresh network namespace and pins it at `path`.
pub fn create(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    remove(path);
    std::fs::File::create(path)?;
    let target = path.to_path_buf();
    // A new thread, so the namespace switch never touches a thread that runs anything else.
    let pinned = std::thread::spawn(move || -> nix::Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    })
    .join()
    .map_err(|_| std::io::Error::other("the netns thread panicked"))?;
    if let Err(errno) = pinned {
        let _ = std::fs::remove_file(path);
        return Err(std::io::Error::from(errno));
    }
    Ok(())
}

/// Unpins and deletes a namespace file. The kernel frees the namespace (and the
/// container end of every veth in it) once no process uses it.
pub fn remove(path: &Path) {
    for _ in 0..4 {
        if nix::mount::umount2(path, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_namespace_is_not_ours_and_goes_away() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "abc");
        create(&file).unwrap();
        assert!(is_mounted(&file));
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap();
        let pinned = std::fs::metadata(&file).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), pinned.ino(), "the file must hold a different namespace");
        remove(&file);
        assert!(!file.exists() && !is_mounted(&file));
    }
}
