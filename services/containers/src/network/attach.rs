//! Attaching a container at start (namespace file, loopback, CNI ADD per network,
//! published ports, /etc/hosts) and detaching it when it stops or goes away.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use berth_common::Namespace;
use berth_proto::containers::v1::{Container, EndpointSettings, Network, NetworkSettings};
use serde_json::json;

use super::store::{Attachment, EndpointRecord, PortRecord};
use super::{
    Manager, Mode, bridge, check_address, cni, hosts, namespace_of, netns, network_error, networks, ports,
    spec_hostname, with_network_namespace,
};
use crate::error::{Error, Result};
use crate::supervisor::is_running;

impl Manager {
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

    pub(super) fn endpoint_record(
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
    pub(super) async fn add_endpoint(
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
    pub(super) async fn teardown(&self, attachment: &Attachment) -> Result<()> {
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
    pub(super) async fn refresh_hosts(&self, changed: &Attachment) {
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
}
