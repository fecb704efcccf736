//! Tearing down whatever a test's daemon left behind: processes and mounts under its
//! directories.

use std::path::Path;

/// Unmounts every mount point below `dir` (deepest first, lazily so busy mounts go too).
pub fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut targets: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|target| Path::new(target).starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    targets.dedup();
    for target in targets {
        let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mount points below `dir` that are still mounted.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|target| Path::new(target).starts_with(dir))
        .collect()
}

fn unescape_mount_path(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Pids of processes whose command line mentions `needle` (e.g. a test's state dir).
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Pids of container processes of a test: they live in their own mount namespace (so
/// neither their command line nor their root link names the test's directories), but
/// their root mount (`/` in their mount table) comes from below `dir`.
pub fn container_pids(dir: &Path) -> Vec<i32> {
    let own = std::process::id() as i32;
    let own_mounts = std::fs::read_link("/proc/self/ns/mnt").ok();
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own && *pid != 1)
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() != own_mounts)
        .filter(|pid| {
            let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
            mountinfo.lines().any(|line| line.split(' ').nth(4) == Some("/") && line.contains(&needle))
        })
        .collect()
}

pub fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
}
