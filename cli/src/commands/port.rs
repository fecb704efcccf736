//! `berth port`: a container's published ports; also the PORTS text of `ps` and the
//! network part of `inspect`.

use berth_proto::containers::v1::{Container, GetContainerRequest, PortBinding};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    container: String,
    /// PRIVATE_PORT[/PROTO]
    port: Option<String>,
}

fn published(container: &Container) -> Vec<PortBinding> {
    container.network_settings.as_ref().map(|s| s.ports.clone()).unwrap_or_default()
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let container = connection
        .containers()
        .get(GetContainerRequest { id: args.container.clone(), size: false })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner()
        .container
        .unwrap_or_default();
    let ports = published(&container);
    match args.port {
        None => {
            for port in &ports {
                println!("{} -> {}:{}", port.container_port, port.host_ip, port.host_port);
            }
        }
        Some(wanted) => {
            let wanted = if wanted.contains('/') { wanted } else { format!("{wanted}/tcp") };
            let matching: Vec<&PortBinding> = ports.iter().filter(|p| p.container_port == wanted).collect();
            if matching.is_empty() {
                eprintln!("Error: No public port '{wanted}' published for {}", args.container);
                return Err(Exit { code: GENERAL_FAILURE, error: None });
            }
            for port in matching {
                println!("{}:{}", port.host_ip, port.host_port);
            }
        }
    }
    Ok(())
}

/// `ps`'s PORTS: published ports as "ip:host->port/proto", exposed ones as "port/proto".
pub fn ports_text(container: &Container) -> String {
    let ports = published(container);
    let mut parts: Vec<String> =
        ports.iter().map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.container_port)).collect();
    if matches!(super::inspect::state_name(container), "running" | "paused") {
        for exposed in container.config.as_ref().map(|c| c.exposed_ports.clone()).unwrap_or_default() {
            if !ports.iter().any(|p| p.container_port == exposed) {
                parts.push(exposed);
            }
        }
    }
    parts.join(", ")
}

fn port_map(bindings: &[PortBinding]) -> Value {
    let mut map = serde_json::Map::new();
    for binding in bindings {
        let entry = map.entry(binding.container_port.clone()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({"HostIp": binding.host_ip, "HostPort": binding.host_port}));
        }
    }
    Value::Object(map)
}

/// `inspect`'s NetworkSettings, plus the HostConfig and Config fields about networks and
/// mounts: (NetworkSettings, HostConfig additions, Config additions).
pub fn inspect_json(c: &Container) -> (Value, Value, Value) {
    let settings = c.network_settings.clone().unwrap_or_default();
    let host = c.host_config.clone().unwrap_or_default();
    let config = c.config.clone().unwrap_or_default();
    let mut ports = port_map(&settings.ports);
    if let Some(map) = ports.as_object_mut() {
        for exposed in &config.exposed_ports {
            map.entry(exposed.clone()).or_insert(Value::Null);
        }
    }
    let networks: serde_json::Map<String, Value> = settings
        .networks
        .iter()
        .map(|(name, e)| {
            let ipam =
                if e.ipam_ipv4_address.is_empty() { Value::Null } else { json!({"IPv4Address": e.ipam_ipv4_address}) };
            (
                name.clone(),
                json!({
                    "IPAMConfig": ipam, "Aliases": e.aliases, "NetworkID": e.network_id,
                    "Gateway": e.gateway, "IPAddress": e.ip_address, "IPPrefixLen": e.ip_prefix_len,
                    "MacAddress": e.mac_address, "GlobalIPv6Address": e.ipv6_address,
                }),
            )
        })
        .collect();
    let primary = settings
        .networks
        .get(&host.network_mode)
        .or_else(|| settings.networks.values().next())
        .cloned()
        .unwrap_or_default();
    let network_settings = json!({
        "SandboxKey": settings.sandbox_key,
        "Ports": ports,
        "IPAddress": primary.ip_address,
        "IPPrefixLen": primary.ip_prefix_len,
        "Gateway": primary.gateway,
        "MacAddress": primary.mac_address,
        "Networks": networks,
    });
    let host_json = json!({
        "Binds": if host.binds.is_empty() { Value::Null } else { json!(host.binds) },
        "PortBindings": port_map(&host.port_bindings),
        "PublishAllPorts": host.publish_all_ports,
        "Tmpfs": host.tmpfs,
        "DnsOptions": host.dns_options,
    });
    let exposed: serde_json::Map<String, Value> = config.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
    let volumes: serde_json::Map<String, Value> = config.volumes.iter().map(|v| (v.clone(), json!({}))).collect();
    let config_json = json!({
        "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
        "Volumes": if volumes.is_empty() { Value::Null } else { Value::Object(volumes) },
    });
    (network_settings, host_json, config_json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containers::v1::{ContainerConfig, NetworkSettings};

    #[test]
    fn ports_column_lists_published_then_exposed() {
        let running = berth_proto::containers::v1::ContainerState {
            status: berth_proto::containers::v1::ContainerStatus::Running as i32,
            ..Default::default()
        };
        let container = Container {
            state: Some(running),
            config: Some(ContainerConfig {
                exposed_ports: vec!["80/tcp".into(), "443/tcp".into()],
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                sandbox_key: "/run/x".into(),
                ports: vec![PortBinding {
                    container_port: "80/tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    host_port: "18080".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ports_text(&container), "127.0.0.1:18080->80/tcp, 443/tcp");
        let stopped = Container { network_settings: None, state: None, ..container };
        assert_eq!(ports_text(&stopped), "");
    }
}
