//! Facts about the host: kernel, OS, cgroup layout, OCI runtimes on PATH.

use std::path::{Path, PathBuf};

use crate::config::RuntimeConfig;

pub fn kernel_version() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

pub fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// PRETTY_NAME from /etc/os-release.
pub fn operating_system() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| line.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "Linux".to_string())
}

pub fn memory_total_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim();
                kib.parse::<u64>().ok()
            })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

pub fn cpu_count() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// The cgroup layout of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 controllers only.
    Legacy,
    /// v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v2 only.
    Unified,
}

impl CgroupMode {
    pub fn detect() -> CgroupMode {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    pub fn detect_at(root: &Path) -> CgroupMode {
        if root.join("cgroup.controllers").exists() {
            CgroupMode::Unified
        } else if root.join("unified").join("cgroup.controllers").exists() {
            CgroupMode::Hybrid
        } else {
            CgroupMode::Legacy
        }
    }

    /// What `docker info` shows as "Cgroup Version".
    pub fn version(self) -> &'static str {
        match self {
            CgroupMode::Unified => "2",
            CgroupMode::Legacy | CgroupMode::Hybrid => "1",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CgroupMode::Unified => "2 (unified)",
            CgroupMode::Hybrid => "1 (hybrid: v1 controllers, cgroup2 at /sys/fs/cgroup/unified)",
            CgroupMode::Legacy => "1 (legacy)",
        }
    }
}

/// Whether systemd is PID 1; without it only the cgroupfs driver can work.
pub fn cgroup_driver() -> &'static str {
    let is_systemd = std::fs::read_to_string("/proc/1/comm").map(|c| c.trim() == "systemd").unwrap_or(false);
    if is_systemd && Path::new("/run/systemd/system").exists() { "systemd" } else { "cgroupfs" }
}

/// Resolves a runtime binary: absolute paths as they are, names through PATH.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return is_executable(candidate).then(|| candidate.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A configured runtime and what was found on this host.
#[derive(Debug, Clone)]
pub struct RuntimeProbe {
    pub name: String,
    pub path: Option<PathBuf>,
    /// The first line of `<runtime> --version`, or why it could not be run.
    pub version: Result<String, String>,
}

/// Finds each configured runtime and asks for its version. This only tells whether the
/// binary exists and runs; the containers service adds whether it can start containers
/// on this host.
pub fn probe_runtime(name: &str, config: &RuntimeConfig) -> RuntimeProbe {
    let Some(path) = find_binary(&config.path) else {
        return RuntimeProbe { name: name.to_string(), path: None, version: Err(format!("{} not found", config.path)) };
    };
    let version =
        std::process::Command::new(&path).arg("--version").output().map_err(|e| e.to_string()).and_then(|out| {
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        });
    RuntimeProbe { name: name.to_string(), path: Some(path), version }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_cgroup_layouts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CgroupMode::detect_at(dir.path()), CgroupMode::Legacy);
        std::fs::create_dir(dir.path().join("unified")).unwrap();
        std::fs::write(dir.path().join("unified/cgroup.controllers"), "").unwrap();
        assert_eq!(CgroupMode::detect_at(dir.path()), CgroupMode::Hybrid);
        std::fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
        assert_eq!(CgroupMode::detect_at(dir.path()), CgroupMode::Unified);
    }

    #[test]
    fn finds_binaries_on_path() {
        assert!(find_binary("sh").is_some());
        assert!(find_binary("definitely-not-a-binary-berth").is_none());
        let probe = probe_runtime("nope", &RuntimeConfig { path: "/nonexistent/runc".into(), runtime_args: vec![] });
        assert!(probe.version.unwrap_err().contains("not found"));
    }
}
