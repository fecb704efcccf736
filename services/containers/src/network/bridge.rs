//! The host side of a bridge network: the bridge device carrying the gateway address.
//!
//! Berth makes the bridge itself (with iproute2) instead of letting the CNI bridge plugin
//! do it with `isGateway`, because that plugin then also switches on IP forwarding for the
//! whole host; here forwarding is a separate, configurable decision (`ip-forward`), and a
//! daemon configured without it leaves the host's routing alone. The CNI bridge plugin
//! finds the bridge ready and only adds the veth pairs.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{device} exists and is not a bridge; choose another bridge name")]
    NotABridge { device: String },
    #[error("`ip {args}` failed: {message}")]
    Ip { args: String, message: String },
}

async fn ip(args: &[&str]) -> Result<(), BridgeError> {
    let output = tokio::process::Command::new("ip").args(args).output().await;
    let failure = |message: String| BridgeError::Ip { args: args.join(" "), message };
    match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(failure(String::from_utf8_lossy(&out.stderr).trim().to_string())),
        Err(err) => Err(failure(format!("{err} (is iproute2 installed?)"))),
    }
}

pub fn exists(device: &str) -> bool {
    Path::new("/sys/class/net").join(device).exists()
}

/// Makes sure `device` is an up bridge holding `gateway` (CIDR, e.g. "10.213.0.1/16").
pub async fn ensure(device: &str, gateway: &str) -> Result<(), BridgeError> {
    // Another start may have made it meanwhile: only a failure that left no device counts.
    if !exists(device)
        && let Err(err) = ip(&["link", "add", "name", device, "type", "bridge"]).await
        && !exists(device)
    {
        return Err(err);
    }
    if !Path::new("/sys/class/net").join(device).join("bridge").exists() {
        return Err(BridgeError::NotABridge { device: device.to_string() });
    }
    ip(&["addr", "replace", gateway, "dev", device]).await?;
    ip(&["link", "set", device, "up"]).await
}

/// Deletes a bridge device (its veths went with their namespaces).
pub async fn delete(device: &str) -> Result<(), BridgeError> {
    if !exists(device) {
        return Ok(());
    }
    ip(&["link", "del", device]).await
}

/// Turns on IPv4 forwarding for the host (Docker's `ip-forward`).
pub fn enable_ip_forward() -> std::io::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1")
}
