//! One berthd per root and service: an exclusive `flock` on `<root>/locks/<service>.lock`.
//! The kernel drops the lock when the process dies, so a killed daemon never leaves a
//! stale lock behind; the file only records the holder's pid for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another berthd{holder} already hosts the {service} service with root {root}; stop it or start this one with a different --root"
    )]
    Held { service: String, root: PathBuf, holder: String },
    #[error("cannot create lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held until dropped.
#[derive(Debug)]
pub struct RootLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl RootLock {
    pub fn acquire(root: &Path, service: &str) -> Result<RootLock, LockError> {
        let dir = root.join("locks");
        let path = dir.join(format!("{service}.lock"));
        let io_error = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_error)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _errno)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
                return Err(LockError::Held { service: service.to_string(), root: root.to_path_buf(), holder });
            }
        };
        lock.set_len(0).map_err(io_error)?;
        lock.rewind().map_err(io_error)?;
        write!(lock, "{}", std::process::id()).map_err(io_error)?;
        Ok(RootLock { _lock: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let first = RootLock::acquire(dir.path(), "images").unwrap();
        let err = RootLock::acquire(dir.path(), "images").unwrap_err().to_string();
        assert!(err.contains("already hosts the images service"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        // Other services on the same root are independent.
        let _events = RootLock::acquire(dir.path(), "events").unwrap();
        drop(first);
        RootLock::acquire(dir.path(), "images").unwrap();
    }
}
