//! OCI runtime handlers (runc, crun, youki, configured ones) and whether each can start a
//! container on this host. The probe runs a real container from a tiny busybox rootfs,
//! because "installed" is not "usable": crun 1.8, for one, refuses this machine's hybrid
//! cgroup layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_common::config::RuntimeConfig;
use berth_proto::containers::v1::RuntimeHandler;

#[derive(Debug, Clone)]
pub struct Handler {
    pub name: String,
    pub path: Option<PathBuf>,
    pub args: Vec<String>,
    /// None until probed.
    pub usable: Option<Result<String, String>>,
}

#[derive(Clone)]
pub struct Runtimes {
    handlers: Arc<Mutex<BTreeMap<String, Handler>>>,
    /// True once every installed handler has been probed.
    probed: Arc<tokio::sync::watch::Sender<bool>>,
    pub default: String,
}

impl Runtimes {
    pub fn new(configured: &BTreeMap<String, RuntimeConfig>, default: &str) -> Runtimes {
        let handlers = configured
            .iter()
            .map(|(name, config)| {
                let path = berth_common::host::find_binary(&config.path);
                let usable = if path.is_none() { Some(Err(format!("{} not found", config.path))) } else { None };
                (name.clone(), Handler { name: name.clone(), path, args: config.runtime_args.clone(), usable })
            })
            .collect();
        Runtimes {
            handlers: Arc::new(Mutex::new(handlers)),
            probed: Arc::new(tokio::sync::watch::channel(false).0),
            default: default.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Handler>> {
        self.handlers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handler for `name` ("" is the default), refusing ones known to be unusable.
    pub fn get(&self, name: &str) -> Result<Handler, String> {
        let name = if name.is_empty() { self.default.as_str() } else { name };
        let handlers = self.lock();
        let handler = handlers.get(name).ok_or_else(|| {
            format!("unknown runtime {name:?}; configured: {}", handlers.keys().cloned().collect::<Vec<_>>().join(", "))
        })?;
        match &handler.usable {
            Some(Err(reason)) => Err(format!("runtime {name} cannot run containers on this host: {reason}")),
            _ => Ok(handler.clone()),
        }
    }

    pub fn describe(&self) -> Vec<RuntimeHandler> {
        self.lock()
            .values()
            .map(|h| RuntimeHandler {
                name: h.name.clone(),
                path: h.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                usable: matches!(h.usable, Some(Ok(_))),
                detail: match &h.usable {
                    Some(Ok(version)) => version.clone(),
                    Some(Err(reason)) => reason.clone(),
                    None => "not probed yet".into(),
                },
            })
            .collect()
    }

    /// Probes every installed handler (in the background at start).
    pub async fn probe_all(&self, work_dir: &Path) {
        let pending: Vec<Handler> = self.lock().values().filter(|h| h.usable.is_none()).cloned().collect();
        for handler in pending {
            let Some(path) = handler.path.clone() else { continue };
            let dir = work_dir.join(format!("probe-{}", handler.name));
            let result = probe(&path, &handler.args, &dir).await;
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(h) = self.lock().get_mut(&handler.name) {
                h.usable = Some(result);
            }
        }
        self.probed.send_replace(true);
    }

    /// Waits (up to `limit`) for the probes, so a report right after start-up is complete.
    pub async fn wait_probed(&self, limit: std::time::Duration) {
        let mut probed = self.probed.subscribe();
        let _ = tokio::time::timeout(limit, probed.wait_for(|done| *done)).await;
    }
}

/// Runs `busybox true` in a throwaway container: Ok(version line) when it works.
async fn probe(binary: &Path, args: &[String], dir: &Path) -> Result<String, String> {
    let version = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .map_err(|e| e.to_string())
        .map(|out| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| format!("{version} (not probed: busybox-static is not installed)"))?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, rootfs.join("bin/busybox")).map_err(|e| e.to_string())?;
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/busybox", "true"], "cwd": "/",
                    "env": ["PATH=/bin"]},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
                  "cgroupsPath": format!("/berth/probe-{}", std::process::id())}
    });
    std::fs::write(dir.join("config.json"), spec.to_string()).map_err(|e| e.to_string())?;
    let id = format!("berth-probe-{}", std::process::id());
    let out = tokio::process::Command::new(binary)
        .args(args)
        .arg("--root")
        .arg(dir.join("state"))
        .arg("run")
        .arg("--bundle")
        .arg(dir)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(version)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("the probe container failed");
        Err(format!("{version}: {}", reason.trim()))
    }
}
