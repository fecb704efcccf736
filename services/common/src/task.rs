//! What the containers service and the shim agree on about a task directory
//! (`<exec-root>/tasks/<namespace>/<id>/`): file names and the exit record, which the shim
//! writes before it reports an exit, so an exit that happens while berthd is down is not
//! lost.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The runtime bundle's spec.
pub const CONFIG_FILE: &str = "config.json";
/// Where the shim mounts the container's root filesystem.
pub const ROOTFS_DIR: &str = "rootfs";
/// The shim's API socket.
pub const SHIM_SOCKET: &str = "shim.sock";
/// The shim's pid, written once it serves.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The init process's exit record.
pub const EXIT_FILE: &str = "exit.json";
/// Events waiting for the bus.
pub const EVENT_SPOOL: &str = "events.spool";
/// The shim's own log (runtime errors, panics).
pub const SHIM_LOG: &str = "shim.log";
/// Spec annotation carrying the user as given (`--user`, the image's USER); the shim
/// resolves it inside the mounted rootfs before creating the container.
pub const USER_ANNOTATION: &str = "berth.user";

pub fn task_dir(exec_root: &Path, namespace: &str, id: &str) -> PathBuf {
    exec_root.join("tasks").join(namespace).join(id)
}

/// How and when a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: u32,
    /// The exit code, or 128 + signal for a process killed by a signal (as shells report).
    pub exit_status: u32,
    pub exited_at: DateTime<Utc>,
    pub oom_killed: bool,
}

impl ExitRecord {
    /// Writes the record durably: temp file, fsync, rename, fsync of the directory.
    pub fn write(&self, task_dir: &Path) -> std::io::Result<()> {
        let tmp = task_dir.join(format!("{EXIT_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, task_dir.join(EXIT_FILE))?;
        std::fs::File::open(task_dir)?.sync_all()
    }

    /// The record in `task_dir`, if the init process has exited.
    pub fn read(task_dir: &Path) -> std::io::Result<Option<ExitRecord>> {
        match std::fs::read(task_dir.join(EXIT_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ExitRecord::read(dir.path()).unwrap(), None);
        let record = ExitRecord { pid: 42, exit_status: 137, exited_at: Utc::now(), oom_killed: true };
        record.write(dir.path()).unwrap();
        assert_eq!(ExitRecord::read(dir.path()).unwrap(), Some(record));
    }
}
