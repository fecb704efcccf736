//! Changing attachments and networks while containers live: `network connect` and
//! `disconnect`, removing a network, and reclaiming what crashed containers left.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use berth_common::Namespace;
use berth_proto::containers::v1::{Container, EndpointSettings, Network};

use super::{Manager, Mode, bridge, check_address, cni, namespace_of, netns, network_error, networks};
use crate::error::{Error, Result};
use crate::supervisor::is_running;

impl Manager {
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
