//! Starting berth-shim processes and connecting to them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_common::task;
use berth_common::{Address, Namespace};
use berth_proto::shim::v1::shim_client::ShimClient;

use crate::error::{Error, Result};
use crate::registry::Shim;

/// berth-shim: `BERTH_SHIM_BINARY`, else next to the running daemon, else on PATH.
pub fn shim_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_SHIM_BINARY") {
        return PathBuf::from(path);
    }
    if let Some(sibling) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("berth-shim")))
        && sibling.exists()
    {
        return sibling;
    }
    berth_common::host::find_binary("berth-shim").unwrap_or_else(|| PathBuf::from("berth-shim"))
}

/// Starts a shim for the task in `task_dir`; returns once it serves (the shim's first
/// process exits only after its detached child listens).
pub async fn spawn(
    binary: &Path,
    namespace: &Namespace,
    id: &str,
    task_dir: &Path,
    events_address: &Address,
) -> Result<()> {
    let output = tokio::process::Command::new(binary)
        .arg("--id")
        .arg(id)
        .arg("--namespace")
        .arg(namespace.as_str())
        .arg("--bundle")
        .arg(task_dir)
        .arg("--events-address")
        .arg(events_address.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| Error::io(format!("starting {}", binary.display()), e))?;
    if !output.status.success() {
        return Err(Error::FailedPrecondition(format!(
            "the shim failed to start: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Connects to the shim serving `task_dir`, giving up after `timeout`.
pub async fn connect(task_dir: &Path, timeout: Duration) -> Result<Shim> {
    let address = Address::Unix(task_dir.join(task::SHIM_SOCKET));
    match tokio::time::timeout(timeout, berth_common::client::connect(&address)).await {
        Ok(Ok(channel)) => Ok(ShimClient::new(channel)),
        Ok(Err(e)) => Err(Error::FailedPrecondition(format!("the shim does not answer: {e}"))),
        Err(_) => Err(Error::FailedPrecondition("the shim does not answer (timed out)".into())),
    }
}
