//! `docker exec`: an extra process in a running container, defined in the shim at create
//! time (so clients can attach before it starts) and run at start.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_proto::containers::v1::Container;
use berth_proto::tasks::v1::ExecCreateRequest;

use crate::error::{Error, Result};

/// What was asked for, kept for inspect.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
}

#[derive(Default)]
pub struct Execs {
    records: Mutex<HashMap<String, ExecRecord>>,
}

impl Execs {
    pub fn insert(&self, exec_id: &str, record: ExecRecord) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).insert(exec_id.to_string(), record);
    }

    pub fn get(&self, exec_id: &str) -> Result<ExecRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::ExecNotFound(exec_id.to_string()))
    }

    pub fn remove_container(&self, container_id: &str) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, r| r.container_id != container_id);
    }
}

/// The OCI process for an exec: the container's process settings, with the exec's
/// command, extra environment, working directory and terminal.
pub fn process_spec(container: &Container, request: &ExecCreateRequest) -> Result<Vec<u8>> {
    if request.cmd.is_empty() {
        return Err(Error::InvalidArgument("no exec command specified".into()));
    }
    let spec: serde_json::Value = serde_json::from_slice(&container.spec)
        .map_err(|e| Error::InvalidArgument(format!("the container's spec is unreadable: {e}")))?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(request.cmd);
    process["terminal"] = serde_json::json!(request.tty);
    if !request.working_dir.is_empty() {
        process["cwd"] = serde_json::json!(request.working_dir);
    }
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for entry in &request.env {
        let key = entry.split_once('=').map(|(k, _)| k).unwrap_or(entry);
        env.retain(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) != key);
        env.push(entry.clone());
    }
    process["env"] = serde_json::json!(env);
    if request.privileged {
        let all: Vec<String> = crate::spec::bounding_set().into_iter().map(|c| format!("CAP_{c}")).collect();
        for set in ["bounding", "effective", "permitted"] {
            process["capabilities"][set] = serde_json::json!(all);
        }
    }
    serde_json::to_vec(&process).map_err(|e| Error::InvalidArgument(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_inherits_and_overrides() {
        let container = Container {
            spec: serde_json::to_vec(&serde_json::json!({
                "process": {"args": ["sh"], "env": ["PATH=/bin", "A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
            }))
            .unwrap(),
            ..Default::default()
        };
        let request = ExecCreateRequest {
            cmd: vec!["ls".into(), "-l".into()],
            env: vec!["A=2".into(), "B=3".into()],
            working_dir: "/tmp".into(),
            ..Default::default()
        };
        let process: serde_json::Value = serde_json::from_slice(&process_spec(&container, &request).unwrap()).unwrap();
        assert_eq!(process["args"], serde_json::json!(["ls", "-l"]));
        assert_eq!(process["env"], serde_json::json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(process["cwd"], "/tmp");
        assert!(process_spec(&container, &ExecCreateRequest::default()).is_err());
    }
}
