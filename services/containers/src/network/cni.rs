//! Running CNI plugins the way the CNI specification describes: one executable per
//! plugin, parameters in `CNI_*` environment variables, the network configuration as JSON
//! on stdin, the result (or an error object) as JSON on stdout. A network configuration
//! list is run in order for ADD, each plugin getting the previous result, and in reverse
//! for DEL, each plugin getting the cached ADD result.
//!
//! Hand-written: the reference client (libcni) is Go, and the Rust crates that exist
//! implement the plugin side of the protocol, not the runtime side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

pub const CNI_VERSION: &str = "1.0.0";
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} was not found in {searched}: install containernetworking-plugins")]
    PluginMissing { plugin: String, searched: String },
    #[error("running CNI plugin {plugin}: {source}")]
    Spawn { plugin: String, source: std::io::Error },
    #[error("CNI plugin {plugin} did not finish within {PLUGIN_TIMEOUT:?}")]
    Timeout { plugin: String },
    #[error("CNI plugin {plugin} failed ({command}): {message}")]
    Failed { plugin: String, command: &'static str, message: String },
    #[error("CNI plugin {plugin} returned an unreadable result: {message}")]
    BadResult { plugin: String, message: String },
}

/// The parameters that identify one attachment.
pub struct Invocation<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub cni_path: &'a [PathBuf],
}

/// The parts of a CNI result Berth reads (spec 1.0.0 "Success" object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    #[serde(default)]
    pub interface: Option<usize>,
    /// CIDR notation: the address and the subnet's prefix length.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// What a container sees of one network: its address, prefix, gateway and MAC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    pub ipv4: String,
    pub prefix_len: i32,
    pub gateway: String,
    pub mac: String,
}

impl CniResult {
    pub fn parse(value: &Value) -> Result<CniResult, serde_json::Error> {
        serde_json::from_value(value.clone())
    }

    /// The first IPv4 address on the interface inside the container (`ifname`).
    pub fn endpoint(&self, ifname: &str) -> Option<Endpoint> {
        let in_sandbox =
            |index: usize| self.interfaces.get(index).is_some_and(|i| i.sandbox.is_some() && i.name == ifname);
        let ip = self
            .ips
            .iter()
            .filter(|ip| ip.address.parse::<ipnet::Ipv4Net>().is_ok())
            .find(|ip| ip.interface.is_none_or(in_sandbox))?;
        let net: ipnet::Ipv4Net = ip.address.parse().ok()?;
        let mac = ip
            .interface
            .and_then(|i| self.interfaces.get(i))
            .or_else(|| self.interfaces.iter().find(|i| i.sandbox.is_some() && i.name == ifname))
            .map(|i| i.mac.clone())
            .unwrap_or_default();
        Some(Endpoint {
            ipv4: net.addr().to_string(),
            prefix_len: i32::from(net.prefix_len()),
            gateway: ip.gateway.clone().unwrap_or_default(),
            mac,
        })
    }
}

/// The configuration one plugin of `list` gets: its own object plus the list's name and
/// version, the previous result, and the runtime values its capabilities ask for.
pub fn plugin_config(list: &Value, plugin: &Value, prev_result: Option<&Value>, runtime_config: &Value) -> Value {
    let mut config = plugin.clone();
    config["name"] = list["name"].clone();
    config["cniVersion"] = list["cniVersion"].clone();
    if let Some(prev) = prev_result {
        config["prevResult"] = prev.clone();
    }
    let mut runtime = serde_json::Map::new();
    if let Some(capabilities) = plugin["capabilities"].as_object() {
        for (capability, enabled) in capabilities {
            if enabled.as_bool() == Some(true)
                && let Some(value) = runtime_config.get(capability)
            {
                runtime.insert(capability.clone(), value.clone());
            }
        }
    }
    if !runtime.is_empty() {
        config["runtimeConfig"] = Value::Object(runtime);
    }
    config
}

fn plugins(list: &Value) -> Vec<Value> {
    list["plugins"].as_array().cloned().unwrap_or_default()
}

fn plugin_type(plugin: &Value) -> String {
    plugin["type"].as_str().unwrap_or_default().to_string()
}

/// ADD through the whole list; the last plugin's result is the attachment's result.
pub async fn add(list: &Value, invocation: &Invocation<'_>, runtime_config: &Value) -> Result<Value, CniError> {
    let mut result: Option<Value> = None;
    for plugin in plugins(list) {
        let config = plugin_config(list, &plugin, result.as_ref(), runtime_config);
        let output = exec(&plugin_type(&plugin), "ADD", invocation, &config).await?;
        result = Some(output);
    }
    Ok(result.unwrap_or_else(|| json!({ "cniVersion": CNI_VERSION })))
}

/// DEL through the list in reverse. Every plugin is run even when one fails (DEL must
/// release as much as it can); the first failure is returned.
pub async fn del(
    list: &Value,
    invocation: &Invocation<'_>,
    runtime_config: &Value,
    prev_result: Option<&Value>,
) -> Result<(), CniError> {
    let mut first_error = None;
    for plugin in plugins(list).iter().rev() {
        let config = plugin_config(list, plugin, prev_result, runtime_config);
        if let Err(err) = exec(&plugin_type(plugin), "DEL", invocation, &config).await {
            tracing::warn!(error = %err, container = invocation.container_id, "CNI DEL failed");
            first_error.get_or_insert(err);
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn find_plugin(name: &str, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') {
        return Err(CniError::PluginMissing { plugin: name.to_string(), searched: "(invalid plugin name)".into() });
    }
    cni_path.iter().map(|dir| dir.join(name)).find(|path| path.is_file()).ok_or_else(|| CniError::PluginMissing {
        plugin: name.to_string(),
        searched: cni_path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
    })
}

/// Runs one plugin. Plugins such as portmap and firewall call iptables, so PATH is kept.
async fn exec(
    plugin: &str,
    command: &'static str,
    invocation: &Invocation<'_>,
    config: &Value,
) -> Result<Value, CniError> {
    let path = find_plugin(plugin, invocation.cni_path)?;
    let cni_path = std::env::join_paths(invocation.cni_path).unwrap_or_default();
    let mut child = tokio::process::Command::new(&path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", invocation.container_id)
        .env("CNI_NETNS", invocation.netns)
        .env("CNI_IFNAME", invocation.ifname)
        .env("CNI_PATH", cni_path)
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CniError::Spawn { plugin: plugin.to_string(), source })?;
    let input = serde_json::to_vec(config).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).await.map_err(|source| CniError::Spawn { plugin: plugin.to_string(), source })?;
    }
    let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CniError::Timeout { plugin: plugin.to_string() })?
        .map_err(|source| CniError::Spawn { plugin: plugin.to_string(), source })?;
    if !output.status.success() {
        return Err(CniError::Failed {
            plugin: plugin.to_string(),
            command,
            message: error_message(&output.stdout, &output.stderr),
        });
    }
    if command != "ADD" {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| CniError::BadResult { plugin: plugin.to_string(), message: e.to_string() })
}

/// The CNI error object (`{"code", "msg", "details"}`) as one line, or whatever the plugin
/// printed when it is not one.
pub fn error_message(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(error) = serde_json::from_slice::<Value>(stdout)
        && let Some(msg) = error["msg"].as_str()
    {
        let code = error["code"].as_u64().unwrap_or_default();
        return match error["details"].as_str().filter(|d| !d.is_empty()) {
            Some(details) => format!("{msg}: {details} (code {code})"),
            None => format!("{msg} (code {code})"),
        };
    }
    let text = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"bt0","mac":"ce:11:88:3d:9b:ba"},
        {"name":"veth8995d934","mac":"ce:11:88:3d:9b:bb"},{"name":"eth0","mac":"ea:a7:c2:34:e3:b0","sandbox":"/run/n/x"}],
        "ips":[{"interface":2,"address":"10.250.77.3/24","gateway":"10.250.77.1"}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

    #[test]
    fn bridge_result_gives_the_container_endpoint() {
        let value: Value = serde_json::from_str(BRIDGE_RESULT).unwrap();
        let result = CniResult::parse(&value).unwrap();
        assert_eq!(
            result.endpoint("eth0"),
            Some(Endpoint {
                ipv4: "10.250.77.3".into(),
                prefix_len: 24,
                gateway: "10.250.77.1".into(),
                mac: "ea:a7:c2:34:e3:b0".into()
            })
        );
        // An IPv6-only or interface-less result has no IPv4 endpoint for eth1.
        let v6: Value = serde_json::from_str(
            r#"{"ips":[{"interface":0,"address":"fd00::2/64"}],"interfaces":[{"name":"eth1","sandbox":"/x"}]}"#,
        )
        .unwrap();
        assert_eq!(CniResult::parse(&v6).unwrap().endpoint("eth1"), None);
    }

    #[test]
    fn plugin_config_carries_name_version_prev_result_and_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "bt0", "plugins": []});
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true});
        let runtime = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "ips": ["10.0.0.9/24"]});
        let prev = json!({"ips": []});
        let config = plugin_config(&list, &portmap, Some(&prev), &runtime);
        assert_eq!(config["name"], "bt0");
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["prevResult"], prev);
        assert_eq!(config["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        // Only capabilities the plugin declares are passed.
        assert!(config["runtimeConfig"].get("ips").is_none());
        let firewall = json!({"type": "firewall"});
        assert!(plugin_config(&list, &firewall, None, &runtime).get("runtimeConfig").is_none());
    }

    #[test]
    fn error_objects_become_one_line() {
        let stdout = br#"{"code":11,"msg":"failed to allocate for range 0","details":"no IP addresses available"}"#;
        assert_eq!(error_message(stdout, b""), "failed to allocate for range 0: no IP addresses available (code 11)");
        assert_eq!(error_message(b"", b"  plain failure\n"), "plain failure");
    }

    #[test]
    fn missing_plugins_say_what_to_install() {
        let err = find_plugin("bridge", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert!(err.to_string().contains("containernetworking-plugins"), "{err}");
        assert!(find_plugin("../bridge", &[PathBuf::from("/usr/lib/cni")]).is_err());
    }
}
