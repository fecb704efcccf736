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

pub mod bridge;
pub mod cni;
mod hosts;
pub mod netns;
pub mod networks;
pub mod ports;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use berth_common::Namespace;
use berth_proto::containers::v1::{Container, EndpointSettings, HostConfig, Network, NetworkEndpoint, NetworkSettings};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::supervisor::is_running;
pub use networks::Settings;
use store::{Attachment, EndpointRecord, NetStore, PortRecord};

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

    /// Sets up the container's network before it starts and returns the spec to run
    /// with. Updates `container.network_settings` (addresses, ports, sandbox).
    pub async fn attach(&self, namespace: &Namespace, container: &mut Container) -> Result<Vec<u8>> {
        let host = container.host_config.clone().unwrap_or_default();
        match Mode::of(&host.network_mode) {
            Mode::Host | Mode::None => Ok(container.spec.clone()),
            Mode::Container(target) => {
                let target = self.containers.resolve(namespace, &target)?;
                let state = target.state.clone().unwrap_or_default();
                if !is_running(state.status) || state.pid == 0 {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot join network namespace of a non running container: {}",
                        target.id
                    )));
                }
                // Share the target's names too, as Docker does.
                for (ours, theirs) in [
                    (&container.hosts_path, &target.hosts_path),
                    (&container.resolv_conf_path, &target.resolv_conf_path),
                ] {
                    if let Ok(text) = std::fs::read(theirs) {
                        let _ = std::fs::write(ours, text);
                    }
                }
                let path = PathBuf::from(format!("/proc/{}/ns/net", state.pid));
                let mut settings = container.network_settings.clone().unwrap_or_default();
                settings.sandbox_key = path.display().to_string();
                container.network_settings = Some(settings);
                with_network_namespace(&container.spec, Some(&path))
            }
            Mode::Bridge(_) => {
                let _guard = self.lock.lock().await;
                if let Some(stale) = self.store.attachment(namespace, &container.id)? {
                    // Left by a crash or a failed teardown: clear it before starting over.
                    let _ = self.teardown(&stale).await;
                }
                let path = netns::path(&self.exec_root, &container.id);
                let attachment = match self.setup(namespace, container, &path).await {
                    Ok(attachment) => attachment,
                    Err(err) => {
                        if let Ok(Some(partial)) = self.store.attachment(namespace, &container.id) {
                            let _ = self.teardown(&partial).await;
                        }
                        netns::remove(&path);
                        return Err(err);
                    }
                };
                self.refresh_hosts(&attachment).await;
                with_network_namespace(&container.spec, Some(&path))
            }
        }
    }

    async fn setup(&self, namespace: &Namespace, container: &mut Container, path: &Path) -> Result<Attachment> {
        let host = container.host_config.clone().unwrap_or_default();
        let config = container.config.clone().unwrap_or_default();
        let mut settings = container.network_settings.clone().unwrap_or_default();
        let primary = Mode::of(&host.network_mode);
        let mut names: Vec<String> = settings.networks.keys().cloned().collect();
        names.sort_by_key(|name| (Mode::Bridge(name.clone()) != primary, name.clone()));

        let mut endpoints = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let configured = settings.networks.get(name).cloned().unwrap_or_default();
            let reference = if configured.network_id.is_empty() { name.clone() } else { configured.network_id.clone() };
            let network = self.find(namespace, &reference)?;
            endpoints.push(self.endpoint_record(container, &network, &configured, &format!("eth{index}"))?);
        }

        let ports = if endpoints.is_empty() {
            Vec::new()
        } else {
            let wanted = ports::requested(&host.port_bindings, host.publish_all_ports, &config.exposed_ports)?;
            let taken: Vec<ports::HostPort> = self
                .store
                .attachments()?
                .iter()
                .flat_map(|a| ports::in_use(&a.ports.iter().map(Into::into).collect::<Vec<_>>()))
                .collect();
            ports::allocate(&wanted, &taken)?
        };
        if let Some(first) = endpoints.first_mut() {
            first.runtime_config["portMappings"] = ports::port_mappings(&ports);
        }
        let mut attachment = Attachment {
            namespace: namespace.as_str().to_string(),
            container_id: container.id.clone(),
            netns: path.to_path_buf(),
            ports: ports.iter().map(PortRecord::from).collect(),
            endpoints,
        };
        // Recorded before anything is made, so a crash from here on is reclaimed.
        self.store.put_attachment(&attachment).await?;

        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || netns::create(&owned))
            .await
            .map_err(|e| network_error("creating the network namespace", e))?
            .map_err(|e| network_error(&format!("creating network namespace {}", path.display()), e))?;
        let loopback =
            json!({"cniVersion": cni::CNI_VERSION, "name": "berth-loopback", "plugins": [{"type": "loopback"}]});
        let invocation = |ifname: &'static str| cni::Invocation {
            container_id: &container.id,
            netns: path,
            ifname,
            cni_path: &self.settings.cni_path,
        };
        cni::add(&loopback, &invocation("lo"), &json!({}))
            .await
            .map_err(|e| network_error("bringing up loopback", e))?;

        for index in 0..attachment.endpoints.len() {
            self.add_endpoint(&mut attachment, index, &mut settings).await?;
        }
        settings.sandbox_key = path.display().to_string();
        settings.ports = ports;
        container.network_settings = Some(settings);
        Ok(attachment)
    }

    fn endpoint_record(
        &self,
        container: &Container,
        network: &Network,
        configured: &EndpointSettings,
        ifname: &str,
    ) -> Result<EndpointRecord> {
        if network.driver != "bridge" {
            return Err(Error::FailedPrecondition(format!(
                "container cannot be connected to network {} (driver {})",
                network.name, network.driver
            )));
        }
        let (subnet, _) = networks::addressing(network)?;
        let mut runtime_config = json!({});
        if !configured.ipam_ipv4_address.is_empty() {
            check_address(network, &configured.ipam_ipv4_address)?;
            runtime_config["ips"] = json!([format!("{}/{}", configured.ipam_ipv4_address, subnet.prefix_len())]);
        }
        let mut names = vec![container.name.clone()];
        for alias in &configured.aliases {
            if !names.contains(alias) {
                names.push(alias.clone());
            }
        }
        names.push(container.id.chars().take(12).collect());
        Ok(EndpointRecord {
            network_id: network.id.clone(),
            network_name: network.name.clone(),
            ifname: ifname.to_string(),
            conflist: networks::conflist(&self.settings, network)?,
            runtime_config,
            result: None,
            ipv4: String::new(),
            names,
        })
    }

    /// CNI ADD of one recorded endpoint (the bridge device first), recording the result.
    async fn add_endpoint(
        &self,
        attachment: &mut Attachment,
        index: usize,
        settings: &mut NetworkSettings,
    ) -> Result<()> {
        let endpoint = attachment.endpoints[index].clone();
        let network = self.find(&namespace_of(attachment)?, &endpoint.network_id)?;
        let (subnet, gateway) = networks::addressing(&network)?;
        let gateway_cidr = format!("{gateway}/{}", subnet.prefix_len());
        bridge::ensure(&network.bridge, &gateway_cidr).await.map_err(|e| network_error("preparing the bridge", e))?;
        if self.settings.ip_forward {
            bridge::enable_ip_forward().map_err(|e| network_error("enabling IP forwarding", e))?;
        }
        let invocation = cni::Invocation {
            container_id: &attachment.container_id,
            netns: &attachment.netns,
            ifname: &endpoint.ifname,
            cni_path: &self.settings.cni_path,
        };
        let result = cni::add(&endpoint.conflist, &invocation, &endpoint.runtime_config)
            .await
            .map_err(|e| network_error(&format!("attaching to network {}", network.name), e))?;
        let parsed = cni::CniResult::parse(&result).map_err(|e| network_error("reading the CNI result", e))?;
        let address = parsed.endpoint(&endpoint.ifname).ok_or_else(|| {
            Error::Network(format!(
                "network {}: the CNI result has no IPv4 address for {}",
                network.name, endpoint.ifname
            ))
        })?;
        attachment.endpoints[index].result = Some(result);
        attachment.endpoints[index].ipv4 = address.ipv4.clone();
        self.store.put_attachment(attachment).await?;
        let entry = settings.networks.entry(network.name.clone()).or_default();
        entry.network_id = network.id.clone();
        entry.network_name = network.name.clone();
        entry.ip_address = address.ipv4;
        entry.ip_prefix_len = address.prefix_len;
        entry.gateway = address.gateway;
        entry.mac_address = address.mac;
        Ok(())
    }

    /// DELs every endpoint of an attachment, unpins its namespace and forgets it. When a
    /// DEL fails the record stays, so the next start (or `reclaim`) tries again.
    async fn teardown(&self, attachment: &Attachment) -> Result<()> {
        let mut failure = None;
        for endpoint in attachment.endpoints.iter().rev() {
            let invocation = cni::Invocation {
                container_id: &attachment.container_id,
                netns: &attachment.netns,
                ifname: &endpoint.ifname,
                cni_path: &self.settings.cni_path,
            };
            if let Err(err) =
                cni::del(&endpoint.conflist, &invocation, &endpoint.runtime_config, endpoint.result.as_ref()).await
            {
                failure.get_or_insert(network_error(&format!("detaching from network {}", endpoint.network_name), err));
            }
        }
        let path = attachment.netns.clone();
        let _ = tokio::task::spawn_blocking(move || netns::remove(&path)).await;
        match failure {
            None => self.store.remove_attachment(&attachment.namespace, &attachment.container_id).await,
            Some(err) => {
                tracing::warn!(container = %attachment.container_id, error = %err, "network teardown incomplete; retried later");
                Err(err)
            }
        }
    }

    /// Tears the container's network down (after it stopped, or before removal) and
    /// clears the addresses from its record. Safe to call when nothing is set up.
    pub async fn detach(&self, namespace: &Namespace, container: &mut Container) {
        let _guard = self.lock.lock().await;
        match self.store.attachment(namespace, &container.id) {
            Ok(Some(attachment)) => {
                let _ = self.teardown(&attachment).await;
                self.refresh_hosts(&attachment).await;
            }
            Ok(None) => netns::remove(&netns::path(&self.exec_root, &container.id)),
            Err(err) => tracing::warn!(container = %container.id, error = %err, "reading the network attachment"),
        }
        if let Some(settings) = container.network_settings.as_mut() {
            settings.sandbox_key.clear();
            settings.ports.clear();
            for endpoint in settings.networks.values_mut() {
                endpoint.ip_address.clear();
                endpoint.ip_prefix_len = 0;
                endpoint.gateway.clear();
                endpoint.mac_address.clear();
            }
        }
    }

    /// Rewrites /etc/hosts of the containers sharing a user network with `changed`
    /// (and of `changed` itself, when it is still attached).
    async fn refresh_hosts(&self, changed: &Attachment) {
        let Ok(all) = self.store.attachments() else { return };
        let Ok(namespace) = namespace_of(changed) else { return };
        let default_id = self.default_network_id();
        let networks: HashSet<&str> =
            changed.endpoints.iter().map(|e| e.network_id.as_str()).filter(|id| *id != default_id).collect();
        for attachment in all.iter().filter(|a| {
            a.namespace == changed.namespace
                && (a.container_id == changed.container_id
                    || a.endpoints.iter().any(|e| networks.contains(e.network_id.as_str())))
        }) {
            let Ok(Some(container)) = self.containers.get(&namespace, &attachment.container_id) else { continue };
            if container.hosts_path.is_empty() {
                continue;
            }
            let host = container.host_config.clone().unwrap_or_default();
            let own = attachment.endpoints.first().map(|e| e.ipv4.as_str()).filter(|ip| !ip.is_empty());
            let peers = hosts::peers(attachment, &all, &default_id);
            let text = hosts::render(&spec_hostname(&container), own, &host.extra_hosts, &peers);
            if let Err(err) = std::fs::write(&container.hosts_path, text) {
                tracing::warn!(container = %container.id, error = %err, "updating /etc/hosts");
            }
        }
    }

    /// `network connect`: records the network for the container and, when it runs,
    /// attaches it right away on the next free interface.
    pub async fn connect(
        &self,
        namespace: &Namespace,
        container: &mut Container,
        network: &Network,
        wanted: EndpointSettings,
    ) -> Result<()> {
        let host = container.host_config.clone().unwrap_or_default();
        if !matches!(Mode::of(&host.network_mode), Mode::Bridge(_)) || network.driver != "bridge" {
            return Err(Error::FailedPrecondition(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        let mut settings = container.network_settings.clone().unwrap_or_default();
        if settings.networks.values().any(|e| e.network_id == network.id) {
            return Err(Error::FailedPrecondition(format!(
                "endpoint with name {} already exists in network {}",
                container.name, network.name
            )));
        }
        if network.name == networks::DEFAULT_NETWORK
            && (!wanted.aliases.is_empty() || !wanted.ipam_ipv4_address.is_empty())
        {
            return Err(Error::InvalidArgument(
                "aliases and addresses are supported on user defined networks only".into(),
            ));
        }
        if !wanted.ipam_ipv4_address.is_empty() {
            check_address(network, &wanted.ipam_ipv4_address)?;
        }
        let configured = EndpointSettings {
            network_id: network.id.clone(),
            network_name: network.name.clone(),
            aliases: wanted.aliases,
            ipam_ipv4_address: wanted.ipam_ipv4_address,
            ..Default::default()
        };
        let running = is_running(container.state.as_ref().map(|s| s.status).unwrap_or_default());
        if running {
            let _guard = self.lock.lock().await;
            let mut attachment = self.store.attachment(namespace, &container.id)?.ok_or_else(|| {
                Error::FailedPrecondition(format!("container {} has no network namespace to connect", container.id))
            })?;
            let used: HashSet<String> = attachment.endpoints.iter().map(|e| e.ifname.clone()).collect();
            let ifname = (0..).map(|i| format!("eth{i}")).find(|name| !used.contains(name)).unwrap_or_default();
            attachment.endpoints.push(self.endpoint_record(container, network, &configured, &ifname)?);
            let index = attachment.endpoints.len() - 1;
            self.store.put_attachment(&attachment).await?;
            settings.networks.insert(network.name.clone(), configured);
            if let Err(err) = self.add_endpoint(&mut attachment, index, &mut settings).await {
                let endpoint = attachment.endpoints.remove(index);
                let invocation = cni::Invocation {
                    container_id: &attachment.container_id,
                    netns: &attachment.netns,
                    ifname: &endpoint.ifname,
                    cni_path: &self.settings.cni_path,
                };
                let _ =
                    cni::del(&endpoint.conflist, &invocation, &endpoint.runtime_config, endpoint.result.as_ref()).await;
                self.store.put_attachment(&attachment).await?;
                return Err(err);
            }
            self.refresh_hosts(&attachment).await;
        } else {
            settings.networks.insert(network.name.clone(), configured);
        }
        container.network_settings = Some(settings);
        Ok(())
    }

    /// `network disconnect`: detaches a running container's endpoint and forgets the
    /// network for the container.
    pub async fn disconnect(&self, namespace: &Namespace, container: &mut Container, network: &Network) -> Result<()> {
        let mut settings = container.network_settings.clone().unwrap_or_default();
        let Some(name) = settings.networks.iter().find(|(_, e)| e.network_id == network.id).map(|(n, _)| n.clone())
        else {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not connected to network {}",
                container.id, network.name
            )));
        };
        if network.driver != "bridge" {
            return Err(Error::FailedPrecondition(format!(
                "container cannot be disconnected from network {}",
                network.name
            )));
        }
        let _guard = self.lock.lock().await;
        if let Some(mut attachment) = self.store.attachment(namespace, &container.id)?
            && let Some(index) = attachment.endpoints.iter().position(|e| e.network_id == network.id)
        {
            let endpoint = attachment.endpoints[index].clone();
            let invocation = cni::Invocation {
                container_id: &attachment.container_id,
                netns: &attachment.netns,
                ifname: &endpoint.ifname,
                cni_path: &self.settings.cni_path,
            };
            cni::del(&endpoint.conflist, &invocation, &endpoint.runtime_config, endpoint.result.as_ref())
                .await
                .map_err(|e| network_error(&format!("detaching from network {}", network.name), e))?;
            // Peers that shared only this network lose the name now.
            let before = attachment.clone();
            attachment.endpoints.remove(index);
            self.store.put_attachment(&attachment).await?;
            self.refresh_hosts(&before).await;
        }
        settings.networks.remove(&name);
        container.network_settings = Some(settings);
        Ok(())
    }

    /// Removes a user network no running container is attached to, with its bridge
    /// device and IPAM state.
    pub async fn remove(&self, namespace: &Namespace, network: &Network) -> Result<()> {
        if networks::is_builtin(network) {
            return Err(Error::FailedPrecondition(format!(
                "{} is a pre-defined network and cannot be removed",
                network.name
            )));
        }
        let _guard = self.lock.lock().await;
        let active: Vec<String> = self
            .store
            .attachments()?
            .into_iter()
            .filter(|a| a.endpoints.iter().any(|e| e.network_id == network.id))
            .map(|a| a.container_id)
            .collect();
        if !active.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                network.name,
                network.id,
                active.iter().map(|id| &id[..12.min(id.len())]).collect::<Vec<_>>().join(", ")
            )));
        }
        bridge::delete(&network.bridge).await.map_err(|e| network_error("removing the bridge", e))?;
        let _ = std::fs::remove_dir_all(self.settings.ipam_dir.join(&network.bridge));
        self.store.remove_network(namespace, &network.id).await
    }

    /// After a daemon restart (and once exits found meanwhile are recorded): tears down
    /// every attachment whose container no longer runs, then removes namespace files and
    /// address leases no attachment accounts for.
    pub async fn reclaim(&self) -> Result<()> {
        let _guard = self.lock.lock().await;
        let mut kept = HashSet::new();
        for attachment in self.store.attachments()? {
            let running = namespace_of(&attachment)
                .ok()
                .and_then(|ns| self.containers.get(&ns, &attachment.container_id).ok().flatten())
                .is_some_and(|c| is_running(c.state.as_ref().map(|s| s.status).unwrap_or_default()));
            if running {
                kept.insert(attachment.container_id.clone());
                continue;
            }
            tracing::info!(container = %attachment.container_id, "reclaiming the network of a stopped container");
            if self.teardown(&attachment).await.is_err() {
                kept.insert(attachment.container_id.clone());
            }
        }
        if let Ok(entries) = std::fs::read_dir(netns::dir(&self.exec_root)) {
            for entry in entries.flatten() {
                if !kept.contains(&entry.file_name().to_string_lossy().into_owned()) {
                    tracing::info!(path = %entry.path().display(), "removing a stale network namespace");
                    netns::remove(&entry.path());
                }
            }
        }
        for lease in stale_leases(&self.settings.ipam_dir, &kept) {
            tracing::info!(path = %lease.display(), "releasing a stale address lease");
            let _ = std::fs::remove_file(lease);
        }
        Ok(())
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

/// host-local lease files (`<ipam>/<network>/<address>`, holding the container id on the
/// first line) of containers not in `kept`.
fn stale_leases(ipam_dir: &Path, kept: &HashSet<String>) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    let Ok(networks) = std::fs::read_dir(ipam_dir) else { return stale };
    for network in networks.flatten() {
        let Ok(files) = std::fs::read_dir(network.path()) else { continue };
        for file in files.flatten() {
            if file.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_err() {
                continue;
            }
            let owner = std::fs::read_to_string(file.path()).unwrap_or_default();
            let owner = owner.lines().next().unwrap_or_default().trim().to_string();
            if !kept.contains(&owner) {
                stale.push(file.path());
            }
        }
    }
    stale
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

    #[test]
    fn leases_of_unknown_containers_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let network = dir.path().join("bt0");
        std::fs::create_dir_all(&network).unwrap();
        std::fs::write(network.join("10.1.0.2"), "aaa\r\neth0").unwrap();
        std::fs::write(network.join("10.1.0.3"), "bbb\r\neth0").unwrap();
        std::fs::write(network.join("last_reserved_ip.0"), "10.1.0.3").unwrap();
        std::fs::write(network.join("lock"), "").unwrap();
        let kept: HashSet<String> = ["aaa".to_string()].into_iter().collect();
        assert_eq!(stale_leases(dir.path(), &kept), vec![network.join("10.1.0.3")]);
    }
}
