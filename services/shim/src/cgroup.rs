//! The container's cgroup, as the runtime created it from the spec's `cgroupsPath`
//! (cgroupfs driver): OOM notification and accounting. Handles cgroup v1 (including the
//! hybrid layout these machines have) and v2.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_common::host::CgroupMode;
use tokio::io::unix::AsyncFd;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: CgroupMode,
    /// e.g. "/berth/default/<id>"
    path: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_cache: u64,
    pub pids: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text == "max" { Some(u64::MAX) } else { text.parse().ok() }
}

/// A value from a flat keyed file ("key value" per line).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Cgroup {
    /// The cgroup named in a bundle's config.json, if it names one.
    pub fn from_bundle(bundle: &Path) -> Option<Cgroup> {
        let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
        let path = spec["linux"]["cgroupsPath"].as_str()?.to_string();
        Some(Cgroup { mode: CgroupMode::detect(), path })
    }

    fn v1(&self, controller: &str) -> PathBuf {
        Path::new(CGROUP_ROOT).join(controller).join(self.path.trim_start_matches('/'))
    }

    fn v2(&self) -> PathBuf {
        Path::new(CGROUP_ROOT).join(self.path.trim_start_matches('/'))
    }

    /// How many times the kernel's OOM killer killed a process in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self.mode {
            CgroupMode::Unified => read_key(&self.v2().join("memory.events"), "oom_kill").unwrap_or(0),
            _ => read_key(&self.v1("memory").join("memory.oom_control"), "oom_kill").unwrap_or(0),
        }
    }

    /// Resolves each time an OOM event happens in the cgroup (v1: an eventfd registered on
    /// memory.oom_control; v2: polling memory.events, which has no eventfd interface).
    pub fn oom_events(&self) -> std::io::Result<OomEvents> {
        match self.mode {
            CgroupMode::Unified => Ok(OomEvents::Polling { cgroup: self.clone(), seen: self.oom_kills() }),
            _ => {
                let dir = self.v1("memory");
                let control = std::fs::File::open(dir.join("memory.oom_control"))?;
                // SAFETY: eventfd returns a new descriptor we own, or -1.
                let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if raw < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: raw is a fresh, valid descriptor.
                let event = unsafe { OwnedFd::from_raw_fd(raw) };
                std::fs::write(
                    dir.join("cgroup.event_control"),
                    format!("{} {}", event.as_raw_fd(), control.as_raw_fd()),
                )?;
                // SAFETY: we own the eventfd and keep it inside the AsyncFd for its whole life;
                // nothing else closes or re-registers it.
                let event = unsafe { AsyncFd::register_with_interest(event, tokio::io::Interest::READABLE) }
                    .map_err(std::io::Error::from)?;
                Ok(OomEvents::EventFd { event, _control: control })
            }
        }
    }

    pub fn usage(&self) -> Usage {
        match self.mode {
            CgroupMode::Unified => {
                let dir = self.v2();
                Usage {
                    cpu_usage_ns: read_key(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
                    memory_usage: read_u64(&dir.join("memory.current")).unwrap_or(0),
                    memory_limit: read_u64(&dir.join("memory.max")).unwrap_or(u64::MAX),
                    memory_cache: read_key(&dir.join("memory.stat"), "file").unwrap_or(0),
                    pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
                    block_read_bytes: sum_io_stat(&dir.join("io.stat"), "rbytes="),
                    block_write_bytes: sum_io_stat(&dir.join("io.stat"), "wbytes="),
                }
            }
            _ => {
                let memory = self.v1("memory");
                let blkio = self.v1("blkio").join("blkio.throttle.io_service_bytes");
                Usage {
                    cpu_usage_ns: read_u64(&self.v1("cpuacct").join("cpuacct.usage")).unwrap_or(0),
                    memory_usage: read_u64(&memory.join("memory.usage_in_bytes")).unwrap_or(0),
                    memory_limit: read_u64(&memory.join("memory.limit_in_bytes")).unwrap_or(u64::MAX),
                    memory_cache: read_key(&memory.join("memory.stat"), "total_cache").unwrap_or(0),
                    pids: read_u64(&self.v1("pids").join("pids.current")).unwrap_or(0),
                    block_read_bytes: sum_blkio(&blkio, "Read"),
                    block_write_bytes: sum_blkio(&blkio, "Write"),
                }
            }
        }
    }
}

fn sum_io_stat(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|field| field.strip_prefix(key)?.parse::<u64>().ok())
        .sum()
}

fn sum_blkio(path: &Path, op: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 3 && fields[1] == op).then(|| fields[2].parse::<u64>().ok()).flatten()
        })
        .sum()
}

pub enum OomEvents {
    EventFd { event: AsyncFd<OwnedFd>, _control: std::fs::File },
    Polling { cgroup: Cgroup, seen: u64 },
}

impl OomEvents {
    /// Waits for the next OOM event. Errors when the cgroup is gone.
    pub async fn next(&mut self) -> std::io::Result<()> {
        match self {
            OomEvents::EventFd { event, .. } => loop {
                let mut guard = event.readable().await?;
                let mut counter = [0u8; 8];
                match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut counter).map_err(std::io::Error::from)) {
                    Ok(Ok(8)) => return Ok(()),
                    Ok(Ok(_)) => return Err(std::io::Error::other("short eventfd read")),
                    Ok(Err(err)) => return Err(err),
                    Err(_would_block) => continue,
                }
            },
            OomEvents::Polling { cgroup, seen } => loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let now = cgroup.oom_kills();
                if now > *seen {
                    *seen = now;
                    return Ok(());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keyed_and_blkio_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("oom"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(read_key(&dir.path().join("oom"), "oom_kill"), Some(2));
        std::fs::write(dir.path().join("blkio"), "8:0 Read 100\n8:0 Write 50\n8:16 Read 1\nTotal 151\n").unwrap();
        assert_eq!(sum_blkio(&dir.path().join("blkio"), "Read"), 101);
        std::fs::write(dir.path().join("io"), "8:0 rbytes=10 wbytes=20 rios=1\n8:16 rbytes=5 wbytes=0\n").unwrap();
        assert_eq!(sum_io_stat(&dir.path().join("io"), "rbytes="), 15);
        std::fs::write(dir.path().join("max"), "max\n").unwrap();
        assert_eq!(read_u64(&dir.path().join("max")), Some(u64::MAX));
    }
}
