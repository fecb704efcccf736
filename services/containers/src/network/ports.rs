//! Published ports: turning `-p`/`-P` requests into concrete host ports (random ones from
//! the kernel's ephemeral range when none was given), refusing ports already published by
//! another container or bound on the host, and the portmap plugin's `portMappings`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

use berth_proto::containers::v1::PortBinding;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// A published port in use: protocol, host address (unspecified = every address), port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: IpAddr,
    pub port: u16,
}

impl HostPort {
    fn overlaps(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip.is_unspecified() || other.ip.is_unspecified())
    }
}

/// "80", "80/tcp", "53/udp" -> (80, "udp").
pub fn parse_container_port(text: &str) -> Result<(u16, String)> {
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Error::InvalidArgument(format!("invalid protocol {protocol:?} in port {text:?}")));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((port, protocol)),
        _ => Err(Error::InvalidArgument(format!("invalid container port {text:?}"))),
    }
}

fn parse_host_ip(text: &str) -> Result<IpAddr> {
    if text.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    let ip: IpAddr = text.parse().map_err(|_| Error::InvalidArgument(format!("invalid host IP {text:?}")))?;
    if ip.is_ipv6() {
        return Err(Error::InvalidArgument(format!("publishing on IPv6 address {ip} is not supported")));
    }
    Ok(ip)
}

/// The bindings a container asks for: its explicit ones, plus every exposed port with a
/// random host port when `publish_all` (`-P`) is set.
pub fn requested(bindings: &[PortBinding], publish_all: bool, exposed: &[String]) -> Result<Vec<PortBinding>> {
    let mut all = Vec::new();
    for binding in bindings {
        let (port, protocol) = parse_container_port(&binding.container_port)?;
        all.push(PortBinding { container_port: format!("{port}/{protocol}"), ..binding.clone() });
    }
    if publish_all {
        for text in exposed {
            let (port, protocol) = parse_container_port(text)?;
            let key = format!("{port}/{protocol}");
            if !all.iter().any(|b| b.container_port == key) {
                all.push(PortBinding { container_port: key, host_ip: String::new(), host_port: String::new() });
            }
        }
    }
    Ok(all)
}

/// The kernel's ephemeral port range (Docker picks random host ports from it too).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
            match (parts.next(), parts.next()) {
                (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
                _ => None,
            }
        })
        .unwrap_or((32768, 60999))
}

/// Whether nothing on the host holds `port` (a DNAT rule would hide such a listener).
fn free_on_host(port: &HostPort) -> bool {
    let address = (port.ip, port.port);
    match port.protocol.as_str() {
        "udp" => UdpSocket::bind(address).is_ok(),
        // sctp: no portable check from std; the DNAT rule is what matters.
        "sctp" => true,
        _ => TcpListener::bind(address).is_ok(),
    }
}

/// Concrete bindings (host IP "0.0.0.0" when unspecified, a host port always) for the
/// requested ones, none overlapping `taken` (ports other containers publish).
pub fn allocate(requested: &[PortBinding], taken: &[HostPort]) -> Result<Vec<PortBinding>> {
    let mut used: Vec<HostPort> = taken.to_vec();
    let mut bound = Vec::new();
    let (low, high) = ephemeral_range();
    for binding in requested {
        let (container_port, protocol) = parse_container_port(&binding.container_port)?;
        let ip = parse_host_ip(&binding.host_ip)?;
        let explicit = match binding.host_port.as_str() {
            "" | "0" => None,
            text => Some(
                text.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| Error::InvalidArgument(format!("invalid host port {text:?}")))?,
            ),
        };
        let port = match explicit {
            Some(port) => {
                let wanted = HostPort { protocol: protocol.clone(), ip, port };
                if used.iter().any(|u| u.overlaps(&wanted)) || !free_on_host(&wanted) {
                    return Err(Error::FailedPrecondition(format!(
                        "Bind for {ip}:{port} failed: port is already allocated"
                    )));
                }
                port
            }
            None => {
                let span = u32::from(high - low) + 1;
                let start = rand::random::<u32>() % span;
                (0..span)
                    .map(|offset| low + ((start + offset) % span) as u16)
                    .find(|port| {
                        let candidate = HostPort { protocol: protocol.clone(), ip, port: *port };
                        !used.iter().any(|u| u.overlaps(&candidate)) && free_on_host(&candidate)
                    })
                    .ok_or_else(|| Error::FailedPrecondition("no free host port left to publish on".into()))?
            }
        };
        used.push(HostPort { protocol: protocol.clone(), ip, port });
        bound.push(PortBinding {
            container_port: format!("{container_port}/{protocol}"),
            host_ip: ip.to_string(),
            host_port: port.to_string(),
        });
    }
    Ok(bound)
}

/// The host ports a container's stored bindings occupy.
pub fn in_use(bindings: &[PortBinding]) -> Vec<HostPort> {
    bindings
        .iter()
        .filter_map(|b| {
            let (_, protocol) = parse_container_port(&b.container_port).ok()?;
            Some(HostPort { protocol, ip: parse_host_ip(&b.host_ip).ok()?, port: b.host_port.parse().ok()? })
        })
        .collect()
}

/// The portmap plugin's `runtimeConfig.portMappings`.
pub fn port_mappings(bindings: &[PortBinding]) -> Value {
    let mappings: Vec<Value> = bindings
        .iter()
        .filter_map(|b| {
            let (container_port, protocol) = parse_container_port(&b.container_port).ok()?;
            let host_ip = if b.host_ip == "0.0.0.0" { "" } else { b.host_ip.as_str() };
            Some(json!({
                "hostPort": b.host_port.parse::<u16>().ok()?,
                "containerPort": container_port,
                "protocol": protocol,
                "hostIP": host_ip,
            }))
        })
        .collect();
    Value::Array(mappings)
}

/// Exposed ports as Docker normalizes them ("80" -> "80/tcp"), deduplicated in order.
pub fn normalize_exposed(ports: impl IntoIterator<Item = String>) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for text in ports {
        let (port, protocol) = parse_container_port(&text)?;
        let key = format!("{port}/{protocol}");
        if seen.insert(key.clone()) {
            out.push(key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(container: &str, ip: &str, host: &str) -> PortBinding {
        PortBinding { container_port: container.into(), host_ip: ip.into(), host_port: host.into() }
    }

    #[test]
    fn container_ports_parse_like_docker() {
        assert_eq!(parse_container_port("80").unwrap(), (80, "tcp".to_string()));
        assert_eq!(parse_container_port("53/UDP").unwrap(), (53, "udp".to_string()));
        assert!(parse_container_port("0").is_err());
        assert!(parse_container_port("80/icmp").is_err());
        assert!(parse_container_port("http").is_err());
        assert_eq!(
            normalize_exposed(["80".to_string(), "80/tcp".into(), "53/udp".into()]).unwrap(),
            ["80/tcp", "53/udp"]
        );
    }

    #[test]
    fn publish_all_adds_exposed_ports_once() {
        let explicit = [binding("80", "127.0.0.1", "8080")];
        let all = requested(&explicit, true, &["80/tcp".into(), "443/tcp".into()]).unwrap();
        assert_eq!(all, vec![binding("80/tcp", "127.0.0.1", "8080"), binding("443/tcp", "", "")]);
        assert_eq!(requested(&[], false, &["443/tcp".into()]).unwrap(), vec![]);
    }

    #[test]
    fn random_ports_avoid_taken_ones_and_explicit_conflicts_fail() {
        let (low, high) = ephemeral_range();
        let bound = allocate(&[binding("80/tcp", "127.0.0.1", "")], &[]).unwrap();
        let port: u16 = bound[0].host_port.parse().unwrap();
        assert!((low..=high).contains(&port), "{port} outside {low}-{high}");
        assert_eq!(bound[0].host_ip, "127.0.0.1");

        let taken = in_use(&[binding("80/tcp", "0.0.0.0", "18123")]);
        let err = allocate(&[binding("80/tcp", "127.0.0.1", "18123")], &taken).unwrap_err();
        assert!(err.to_string().contains("port is already allocated"), "{err}");
        // Another protocol on the same port is fine.
        assert!(allocate(&[binding("80/udp", "127.0.0.1", "18123")], &taken).is_ok());

        // A port something on the host listens on is refused too.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = listener.local_addr().unwrap().port().to_string();
        assert!(allocate(&[binding("80/tcp", "127.0.0.1", &busy)], &[]).is_err());

        // Two random bindings in one request never collide.
        let two = allocate(&[binding("80/tcp", "", ""), binding("81/tcp", "", "")], &[]).unwrap();
        assert_ne!(two[0].host_port, two[1].host_port);
        assert_eq!(two[0].host_ip, "0.0.0.0");
    }

    #[test]
    fn port_mappings_for_portmap() {
        let mappings = port_mappings(&[binding("80/tcp", "0.0.0.0", "8080"), binding("53/udp", "127.0.0.1", "5353")]);
        assert_eq!(
            mappings,
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            ])
        );
    }
}
