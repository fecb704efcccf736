//! Container networking through CNI plugins.
//!
//! Modes (`HostConfig.network_mode`): `bridge` (the default network), a user-defined
//! bridge network, `none` (a private namespace with only loopback, made by the runtime),
//! `host` (no network namespace), `container:<id>` (another container's namespace).
//!
//! For bridge networks a namespace file is made under `<exec-root>/netns/` when the
//! container starts, then the CNI list (bridge + host-local, portmap, firewall) is ADDed
//! for each network the container is on, and loopback is brought up. When the container
//! stops, is removed, or is found dead after a daemon restart, everything is DELeted in
//! reverse and the namespace file unmounted. Each step is recorded (`store`) before it is
//! taken, so a crash at any point leaves a record `reclaim` finishes at the next start.
//!
//! Published ports use portmap's DNAT with `snat: true`: for 127.0.0.1 to reach a
//! container the plugin sets `route_localnet` on the bridge and masquerades loopback
//! traffic, so `curl 127.0.0.1:<port>` on the host works without a userland proxy process
//! per port. The catch (as with Kubernetes' hostport): route_localnet on the bridge lets
//! containers on it address the host's 127.0.0.1 services through the bridge.

mod attach;
pub mod bridge;
pub mod cni;
mod hosts;
mod manage;
pub mod netns;
pub mod networks;
pub mod ports;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_common::Namespace;
use berth_proto::containers::v1::{Container, EndpointSettings, HostConfig, Network, NetworkEndpoint, NetworkSettings};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::store::Store;
pub use networks::Settings;
use store::{Attachment, NetStore};

/// How a container is networked, from `HostConfig.network_mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The default bridge or a user-defined bridge network (by name or id).
    Bridge(String),
    None,
    Host,
    Container(String),
}

impl Mode {
    pub fn of(network_mode: &str) -> Mode {
        match network_mode {
            "" | "default" | "bridge" => Mode::Bridge(networks::DEFAULT_NETWORK.into()),
            "none" => Mode::None,
            "host" => Mode::Host,
            other => match other.strip_prefix("container:") {
                Some(target) => Mode::Container(target.to_string()),
                None => Mode::Bridge(other.to_string()),
            },
        }
    }
}

/// What create decides about a container's network.
pub struct CreatePlan {
    /// The namespace the spec joins (bridge modes); None for host, none and container:
    /// (the latter is filled in at start).
    pub netns: Option<PathBuf>,
    pub network_mode: String,
    pub settings: NetworkSettings,
    /// Host mode takes the host's name unless one was given.
    pub hostname: Option<String>,
    pub warnings: Vec<String>,
}

pub struct Manager {
    pub settings: Settings,
    exec_root: PathBuf,
    pub store: NetStore,
    containers: Store,
    /// Serializes attachment changes: port allocation, CNI calls and /etc/hosts updates.
    lock: tokio::sync::Mutex<()>,
}

fn network_error(context: &str, err: impl std::fmt::Display) -> Error {
    Error::Network(format!("{context}: {err}"))
}

/// The hostname in a container's spec.
fn spec_hostname(container: &Container) -> String {
    serde_json::from_slice::<Value>(&container.spec)
        .ok()
        .and_then(|spec| spec["hostname"].as_str().map(str::to_string))
        .unwrap_or_else(|| container.id.chars().take(12).collect())
}

/// The spec with its network namespace joining `path` (or a new one when None).
pub fn with_network_namespace(spec: &[u8], path: Option<&Path>) -> Result<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(spec).map_err(|e| network_error("reading the stored spec", e))?;
    if let Some(namespaces) = value["linux"]["namespaces"].as_array_mut() {
        for namespace in namespaces.iter_mut().filter(|n| n["type"] == "network") {
            match path {
                Some(path) => namespace["path"] = json!(path),
                None => {
                    if let Some(object) = namespace.as_object_mut() {
                        object.remove("path");
                    }
                }
            }
        }
    }
    serde_json::to_vec(&value).map_err(|e| network_error("writing the spec", e))
}

impl Manager {
    pub fn new(settings: Settings, exec_root: PathBuf, containers: Store) -> sled::Result<Manager> {
        let store = NetStore::open(containers.db())?;
        Ok(Manager { settings, exec_root, store, containers, lock: tokio::sync::Mutex::new(()) })
    }

    fn default_network_id(&self) -> String {
        networks::builtin(&self.settings, networks::DEFAULT_NETWORK).map(|n| n.id).unwrap_or_default()
    }

    pub fn find(&self, namespace: &Namespace, reference: &str) -> Result<Network> {
        networks::find(&self.settings, &self.store, namespace, reference)
    }

    pub fn list(&self, namespace: &Namespace) -> Result<Vec<Network>> {
        networks::list(&self.settings, &self.store, namespace)
    }

    /// Running containers attached to `network`, for `network inspect`.
    pub fn endpoints(&self, namespace: &Namespace, network: &Network) -> Result<Vec<NetworkEndpoint>> {
        let mut endpoints = Vec::new();
        for attachment in self.store.attachments()?.into_iter().filter(|a| a.namespace == namespace.as_str()) {
            for endpoint in attachment.endpoints.iter().filter(|e| e.network_id == network.id) {
                let container = self.containers.get(namespace, &attachment.container_id)?;
                let mac = container
                    .as_ref()
                    .and_then(|c| c.network_settings.as_ref())
                    .and_then(|s| s.networks.get(&network.name))
                    .map(|e| e.mac_address.clone())
                    .unwrap_or_default();
                endpoints.push(NetworkEndpoint {
                    container_id: attachment.container_id.clone(),
                    name: container.map(|c| c.name).unwrap_or_default(),
                    ipv4_address: endpoint.ipv4.clone(),
                    mac_address: mac,
                });
            }
        }
        Ok(endpoints)
    }

    /// Containers (any state) configured on `network`.
    pub fn users(&self, namespace: &Namespace, network: &Network) -> Result<Vec<Container>> {
        Ok(self
            .containers
            .list(namespace)?
            .into_iter()
            .filter(|c| {
                c.network_settings.as_ref().is_some_and(|s| s.networks.values().any(|e| e.network_id == network.id))
            })
            .collect())
    }

    /// Validates the network options of a new container and records its endpoints.
    pub fn plan(
        &self,
        namespace: &Namespace,
        container_id: &str,
        host: &HostConfig,
        endpoints_config: &HashMap<String, EndpointSettings>,
    ) -> Result<CreatePlan> {
        let mut warnings = Vec::new();
        let builtin = |name: &str| networks::builtin(&self.settings, name).unwrap_or_default();
        let endpoint_of = |network: &Network| EndpointSettings {
            network_id: network.id.clone(),
            network_name: network.name.clone(),
            ..Default::default()
        };
        let mode = Mode::of(&host.network_mode);
        if !matches!(mode, Mode::Bridge(_)) && !endpoints_config.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "network-scoped aliases and addresses need a bridge network, not {}",
                host.network_mode
            )));
        }
        let plan = match mode {
            Mode::Bridge(reference) => {
                let network = self.find(namespace, &reference)?;
                if network.driver != "bridge" {
                    // `--network <id of host/none>`: treat as that mode.
                    let mut renamed = host.clone();
                    renamed.network_mode = network.name.clone();
                    return self.plan(namespace, container_id, &renamed, endpoints_config);
                }
                let wanted = endpoints_config
                    .get(&network.name)
                    .or_else(|| endpoints_config.get(&reference))
                    .or_else(|| endpoints_config.get(&network.id))
                    .cloned()
                    .unwrap_or_default();
                let is_default = network.name == networks::DEFAULT_NETWORK;
                if is_default && !wanted.aliases.is_empty() {
                    return Err(Error::InvalidArgument(
                        "network-scoped alias is supported only for containers in user defined networks".into(),
                    ));
                }
                if !wanted.ipam_ipv4_address.is_empty() {
                    if is_default {
                        return Err(Error::InvalidArgument(
                            "user specified IP address is supported on user defined networks only".into(),
                        ));
                    }
                    check_address(&network, &wanted.ipam_ipv4_address)?;
                }
                let endpoint = EndpointSettings {
                    aliases: wanted.aliases,
                    ipam_ipv4_address: wanted.ipam_ipv4_address,
                    ..endpoint_of(&network)
                };
                CreatePlan {
                    netns: Some(netns::path(&self.exec_root, container_id)),
                    network_mode: network.name.clone(),
                    settings: NetworkSettings {
                        networks: [(network.name.clone(), endpoint)].into_iter().collect(),
                        ..Default::default()
                    },
                    hostname: None,
                    warnings: Vec::new(),
                }
            }
            Mode::None | Mode::Host => {
                let name = if mode == Mode::None { "none" } else { "host" };
                if !host.port_bindings.is_empty() || host.publish_all_ports {
                    warnings.push(format!("Published ports are discarded when using {name} network mode"));
                }
                let hostname = (mode == Mode::Host)
                    .then(|| nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned()))
                    .flatten();
                CreatePlan {
                    netns: None,
                    network_mode: name.to_string(),
                    settings: NetworkSettings {
                        networks: [(name.to_string(), endpoint_of(&builtin(name)))].into_iter().collect(),
                        ..Default::default()
                    },
                    hostname,
                    warnings: Vec::new(),
                }
            }
            Mode::Container(target) => {
                let target = self.containers.resolve(namespace, &target)?;
                if target.id == container_id {
                    return Err(Error::InvalidArgument("a container cannot join its own network namespace".into()));
                }
                if !host.port_bindings.is_empty() || host.publish_all_ports {
                    return Err(Error::InvalidArgument(
                        "conflicting options: port publishing and the container type network mode".into(),
                    ));
                }
                CreatePlan {
                    netns: None,
                    network_mode: format!("container:{}", target.id),
                    settings: NetworkSettings::default(),
                    hostname: None,
                    warnings: Vec::new(),
                }
            }
        };
        Ok(CreatePlan { warnings, ..plan })
    }
}

fn namespace_of(attachment: &Attachment) -> Result<Namespace> {
    Namespace::new(&attachment.namespace).map_err(|s| Error::InvalidArgument(s.message().to_string()))
}

/// A requested address must be a host address of the network (and not its gateway).
fn check_address(network: &Network, address: &str) -> Result<()> {
    let (subnet, gateway) = networks::addressing(network)?;
    let ip: std::net::Ipv4Addr =
        address.parse().map_err(|_| Error::InvalidArgument(format!("invalid IPv4 address {address:?}")))?;
    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() || ip == gateway {
        return Err(Error::InvalidArgument(format!(
            "address {ip} is not a free host address of network {} ({subnet})",
            network.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::of(""), Mode::Bridge("bridge".into()));
        assert_eq!(Mode::of("default"), Mode::Bridge("bridge".into()));
        assert_eq!(Mode::of("front"), Mode::Bridge("front".into()));
        assert_eq!(Mode::of("none"), Mode::None);
        assert_eq!(Mode::of("host"), Mode::Host);
        assert_eq!(Mode::of("container:web"), Mode::Container("web".into()));
    }

    #[test]
    fn spec_network_namespace_is_set_or_cleared() {
        let spec = br#"{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/old"}]}}"#;
        let joined: Value =
            serde_json::from_slice(&with_network_namespace(spec, Some(Path::new("/run/x/netns/abc"))).unwrap())
                .unwrap();
        assert_eq!(joined["linux"]["namespaces"][1]["path"], "/run/x/netns/abc");
        assert!(joined["linux"]["namespaces"][0].get("path").is_none());
        let fresh: Value = serde_json::from_slice(&with_network_namespace(spec, None).unwrap()).unwrap();
        assert!(fresh["linux"]["namespaces"][1].get("path").is_none());
    }
}
