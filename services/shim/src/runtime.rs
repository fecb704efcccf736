//! The OCI runtime binary (runc by default; crun, youki), driven through its command line
//! as containerd's shims do. Every command logs to `<bundle>/runtime.log` in JSON, which is
//! where errors are read from when the command's own stdio belongs to the container.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::io::AsyncReadExt;

use crate::reaper::Reaper;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run {binary}: {source}")]
    Spawn { binary: String, source: std::io::Error },
    #[error("{binary} {command} failed: {message}")]
    Failed { binary: String, command: String, message: String },
    #[error("{binary} {command} printed output that is not understood: {message}")]
    BadOutput { binary: String, command: String, message: String },
}

/// Standard streams for the process a command creates (create, exec); `None` is /dev/null.
#[derive(Debug, Default)]
pub struct ProcessStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    binary: PathBuf,
    global_args: Vec<String>,
    log: PathBuf,
    reaper: Reaper,
}

impl Runtime {
    pub fn new(binary: PathBuf, global_args: Vec<String>, bundle: &Path, reaper: Reaper) -> Runtime {
        Runtime { binary, global_args, log: bundle.join("runtime.log"), reaper }
    }

    fn binary_name(&self) -> String {
        self.binary.display().to_string()
    }

    /// Runs one runtime command to completion. With `stdio`, the command's streams are the
    /// process's (create/exec); otherwise stdout is captured and returned.
    async fn run(
        &self,
        command: &str,
        args: &[OsString],
        stdio: Option<ProcessStdio>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.global_args).arg("--log").arg(&self.log).args(["--log-format", "json"]).arg(command).args(args);
        let captured = stdio.is_none();
        match stdio {
            Some(stdio) => {
                cmd.stdin(stdio.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
                cmd.stdout(stdio.stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
                cmd.stderr(stdio.stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
            }
            None => {
                cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let spawn_error = |source| RuntimeError::Spawn { binary: self.binary_name(), source };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        // Our copies of the process's stdio must close now, or readers never see EOF.
        drop(cmd);
        let exited = self.reaper.subscribe(child.id());
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if captured {
            let out = child.stdout.take().map(OwnedFd::from);
            let err = child.stderr.take().map(OwnedFd::from);
            let (a, b) = tokio::join!(read_all(out), read_all(err));
            stdout = a.map_err(spawn_error)?;
            stderr = b.map_err(spawn_error)?;
        }
        let status = exited.await.map(|e| e.status).unwrap_or(255);
        if status == 0 {
            return Ok(stdout);
        }
        let mut message = last_log_error(&self.log, log_offset).unwrap_or_default();
        if message.is_empty() {
            message = String::from_utf8_lossy(&stderr).trim().to_string();
        }
        if message.is_empty() {
            message = format!("exit status {status}");
        }
        Err(RuntimeError::Failed { binary: self.binary_name(), command: command.to_string(), message })
    }

    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = vec!["--bundle".into(), bundle.into(), "--pid-file".into(), pid_file.into()];
        if let Some(socket) = console_socket {
            args.extend(["--console-socket".into(), socket.into()]);
        }
        args.push(id.into());
        self.run("create", &args, Some(stdio)).await.map(drop)
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", &[id.into()], None).await.map(drop)
    }

    pub async fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> =
            vec!["--detach".into(), "--process".into(), process_file.into(), "--pid-file".into(), pid_file.into()];
        if let Some(socket) = console_socket {
            args.extend(["--console-socket".into(), socket.into()]);
        }
        args.push(id.into());
        self.run("exec", &args, Some(stdio)).await.map(drop)
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = Vec::new();
        if all {
            args.push("--all".into());
        }
        args.extend([id.into(), signal.to_string().into()]);
        self.run("kill", &args, None).await.map(drop)
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = Vec::new();
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.run("delete", &args, None).await.map(drop)
    }

    pub async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("pause", &[id.into()], None).await.map(drop)
    }

    pub async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("resume", &[id.into()], None).await.map(drop)
    }

    /// Pids of every process in the container.
    pub async fn ps(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let out = self.run("ps", &["--format".into(), "json".into(), id.into()], None).await?;
        // runc prints "null" for an empty list.
        let pids: Option<Vec<u32>> = serde_json::from_slice(&out).map_err(|e| RuntimeError::BadOutput {
            binary: self.binary_name(),
            command: "ps".into(),
            message: e.to_string(),
        })?;
        Ok(pids.unwrap_or_default())
    }
}

async fn read_all(fd: Option<OwnedFd>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(fd) = fd {
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        pipe.read_to_end(&mut out).await?;
    }
    Ok(out)
}

/// The last error message the runtime logged after `offset`.
fn last_log_error(log: &Path, offset: u64) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let start = usize::try_from(offset).ok().filter(|o| *o <= text.len()).unwrap_or(0);
    String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| matches!(entry["level"].as_str(), Some("error") | Some("fatal")))
        .filter_map(|entry| entry["msg"].as_str().map(str::to_string))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_error_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runtime.log");
        std::fs::write(&log, "{\"level\":\"error\",\"msg\":\"old\"}\n").unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("{\"level\":\"info\",\"msg\":\"fine\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(last_log_error(&log, offset).as_deref(), Some("exec: \"nope\": executable file not found in $PATH"));
        assert_eq!(last_log_error(&log, 10_000).as_deref(), Some("exec: \"nope\": executable file not found in $PATH"));
        assert_eq!(last_log_error(&dir.path().join("missing"), 0), None);
    }
}
