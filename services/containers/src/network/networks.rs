//! Network definitions: the built-in `bridge`, `host` and `none` networks, user-defined
//! bridge networks (stored per namespace), subnet allocation, and the CNI configuration
//! list each bridge network is attached through.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use berth_common::{Config, Namespace};
use berth_proto::containers::v1::{CreateNetworkRequest, IpamConfig, Network};
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use sha2::Digest;

use super::store::NetStore;
use crate::error::{Error, Result};

pub const DEFAULT_NETWORK: &str = "bridge";
pub const BUILTIN: [&str; 3] = ["bridge", "host", "none"];
/// Docker's option naming the bridge device of a network.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
const IFNAMSIZ: usize = 15;

/// `[network]` from the daemon configuration, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cni_path: Vec<PathBuf>,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub bridge_prefix: String,
    pub pools: Vec<Ipv4Net>,
    pub ip_forward: bool,
    pub ip_masq: bool,
    /// host-local's state: one directory per CNI network, a file per leased address.
    pub ipam_dir: PathBuf,
}

fn parse_subnet(text: &str, what: &str) -> std::result::Result<Ipv4Net, String> {
    text.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| format!("{what} {text:?} is not an IPv4 subnet (CIDR)"))
}

impl Settings {
    pub fn from_config(config: &Config) -> std::result::Result<Settings, String> {
        let network = &config.network;
        let subnet = parse_subnet(&network.subnet, "network.subnet")?;
        if subnet.prefix_len() > 30 {
            return Err(format!("network.subnet {subnet} is too small"));
        }
        let pools = network
            .address_pools
            .iter()
            .map(|p| parse_subnet(p, "network.address-pools"))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Settings {
            cni_path: network.cni_path.clone(),
            bridge: network.bridge.clone(),
            subnet,
            bridge_prefix: network.bridge_prefix.clone(),
            pools,
            ip_forward: network.ip_forward,
            ip_masq: network.ip_masq,
            ipam_dir: config.data_root.join("network").join("ipam"),
        })
    }

    /// Whether a host device name is one of ours (the default bridge or a user network's).
    pub fn owns_device(&self, device: &str) -> bool {
        device == self.bridge || (!self.bridge_prefix.is_empty() && device.starts_with(&self.bridge_prefix))
    }
}

fn builtin_id(name: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("berth builtin network {name}").as_bytes()))
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// A built-in network by name.
pub fn builtin(settings: &Settings, name: &str) -> Option<Network> {
    let (driver, ipam, bridge) = match name {
        "bridge" => (
            "bridge",
            vec![IpamConfig {
                subnet: settings.subnet.to_string(),
                gateway: first_host(&settings.subnet).to_string(),
                ip_range: String::new(),
            }],
            settings.bridge.clone(),
        ),
        "host" => ("host", Vec::new(), String::new()),
        "none" => ("null", Vec::new(), String::new()),
        _ => return None,
    };
    Some(Network {
        id: builtin_id(name),
        name: name.to_string(),
        driver: driver.to_string(),
        ipam,
        bridge,
        scope: "local".into(),
        ..Default::default()
    })
}

pub fn is_builtin(network: &Network) -> bool {
    BUILTIN.contains(&network.name.as_str()) && network.id == builtin_id(&network.name)
}

/// Every network of a namespace: the built-in ones first, then user networks by name.
pub fn list(settings: &Settings, store: &NetStore, namespace: &Namespace) -> Result<Vec<Network>> {
    let mut all: Vec<Network> = BUILTIN.iter().filter_map(|name| builtin(settings, name)).collect();
    let mut user = store.networks(namespace)?;
    user.sort_by(|a, b| a.name.cmp(&b.name));
    all.extend(user);
    Ok(all)
}

/// A network by name, full id or unique id prefix, as Docker resolves them.
pub fn find(settings: &Settings, store: &NetStore, namespace: &Namespace, reference: &str) -> Result<Network> {
    if reference.is_empty() {
        return Err(Error::InvalidArgument("a network name or id is required".into()));
    }
    let all = list(settings, store, namespace)?;
    if let Some(network) = all.iter().find(|n| n.id == reference || n.name == reference) {
        return Ok(network.clone());
    }
    let mut prefixed = all.iter().filter(|n| n.id.starts_with(reference));
    match (prefixed.next(), prefixed.next()) {
        (Some(network), None) => Ok(network.clone()),
        (Some(_), Some(_)) => Err(Error::Ambiguous(format!("network {reference} is ambiguous"))),
        _ => Err(Error::NetworkNotFound(reference.to_string())),
    }
}

/// The subnet and gateway of a bridge network.
pub fn addressing(network: &Network) -> Result<(Ipv4Net, Ipv4Addr)> {
    let ipam = network.ipam.first().ok_or_else(|| Error::Network(format!("network {} has no subnet", network.name)))?;
    let subnet = parse_subnet(&ipam.subnet, "subnet").map_err(Error::Network)?;
    let gateway = if ipam.gateway.is_empty() {
        first_host(&subnet)
    } else {
        ipam.gateway.parse().map_err(|_| Error::Network(format!("invalid gateway {}", ipam.gateway)))?
    };
    Ok((subnet, gateway))
}

/// The CNI configuration list of a bridge network: bridge (with host-local IPAM under
/// Berth's own data dir), portmap (published ports, with SNAT so 127.0.0.1 works), and
/// firewall (accept rules in FORWARD, for hosts whose FORWARD policy drops).
pub fn conflist(settings: &Settings, network: &Network) -> Result<Value> {
    let (subnet, gateway) = addressing(network)?;
    let mut range = json!({ "subnet": subnet.to_string(), "gateway": gateway.to_string() });
    if let Some(ip_range) = network.ipam.first().map(|i| i.ip_range.as_str()).filter(|r| !r.is_empty()) {
        let ip_range = parse_subnet(ip_range, "ip-range").map_err(Error::Network)?;
        range["rangeStart"] = json!(ip_range.hosts().next().unwrap_or(ip_range.network()).to_string());
        range["rangeEnd"] = json!(ip_range.hosts().last().unwrap_or(ip_range.broadcast()).to_string());
    }
    let routes = if network.internal { json!([]) } else { json!([{ "dst": "0.0.0.0/0" }]) };
    Ok(json!({
        "cniVersion": super::cni::CNI_VERSION,
        "name": network.bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": false,
                "ipMasq": settings.ip_masq && !network.internal,
                "hairpinMode": true,
                "capabilities": { "ips": true },
                "ipam": {
                    "type": "host-local",
                    "dataDir": settings.ipam_dir,
                    "ranges": [[range]],
                    "routes": routes,
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
            { "type": "firewall", "backend": "iptables" },
        ],
    }))
}

/// IPv4 routes of the host that are not on our own bridges (the default route aside).
fn host_routes(settings: &Settings) -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let device = *fields.first()?;
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // /proc/net/route prints the address's in-memory (network order) bytes as a
            // native-endian number.
            let destination = Ipv4Addr::from(destination.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            if prefix == 0 || settings.owns_device(device) {
                return None;
            }
            Ipv4Net::new(destination, prefix).ok()
        })
        .collect()
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Subnets already taken: the default network's, every user network's (all namespaces),
/// and the host's own routes.
fn taken_subnets(settings: &Settings, store: &NetStore) -> Result<Vec<(Ipv4Net, String)>> {
    let mut taken = vec![(settings.subnet, "the default bridge network".to_string())];
    for network in store.all_networks()? {
        if let Ok((subnet, _)) = addressing(&network) {
            taken.push((subnet, format!("network {}", network.name)));
        }
    }
    taken.extend(host_routes(settings).into_iter().map(|r| (r, "a route of this host".to_string())));
    Ok(taken)
}

fn allocate_subnet(settings: &Settings, taken: &[(Ipv4Net, String)]) -> Result<Ipv4Net> {
    for pool in &settings.pools {
        let candidates = pool.subnets(24.max(pool.prefix_len())).map_err(|e| Error::Network(e.to_string()))?;
        for candidate in candidates {
            if !taken.iter().any(|(t, _)| overlaps(t, &candidate)) {
                return Ok(candidate);
            }
        }
    }
    Err(Error::FailedPrecondition(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
            .into(),
    ))
}

fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(())
}

/// Creates a user-defined bridge network (the bridge device itself appears on first use).
pub async fn create(
    settings: &Settings,
    store: &NetStore,
    namespace: &Namespace,
    request: CreateNetworkRequest,
) -> Result<Network> {
    validate_name(&request.name)?;
    if BUILTIN.contains(&request.name.as_str()) || request.name == "default" {
        return Err(Error::FailedPrecondition(format!(
            "{} is a pre-defined network and cannot be created",
            request.name
        )));
    }
    if !matches!(request.driver.as_str(), "" | "bridge") {
        return Err(Error::InvalidArgument(format!(
            "network driver {:?} is not supported: only \"bridge\" networks can be created",
            request.driver
        )));
    }
    if store.networks(namespace)?.iter().any(|n| n.name == request.name) {
        return Err(Error::Conflict(format!("network with name {} already exists", request.name)));
    }
    if request.ipam.len() > 1 {
        return Err(Error::InvalidArgument("only one IPv4 subnet per network is supported".into()));
    }
    let taken = taken_subnets(settings, store)?;
    let wanted = request.ipam.first().cloned().unwrap_or_default();
    let subnet = if wanted.subnet.is_empty() {
        if !wanted.gateway.is_empty() || !wanted.ip_range.is_empty() {
            return Err(Error::InvalidArgument("--gateway and --ip-range need --subnet".into()));
        }
        allocate_subnet(settings, &taken)?
    } else {
        let subnet = parse_subnet(&wanted.subnet, "subnet").map_err(Error::InvalidArgument)?;
        if subnet.prefix_len() > 30 {
            return Err(Error::InvalidArgument(format!("subnet {subnet} is too small")));
        }
        if let Some((_, owner)) = taken.iter().find(|(t, _)| overlaps(t, &subnet)) {
            return Err(Error::FailedPrecondition(format!(
                "Pool overlaps with other one on this address space ({owner})"
            )));
        }
        subnet
    };
    let gateway = if wanted.gateway.is_empty() {
        first_host(&subnet)
    } else {
        let gateway: Ipv4Addr = wanted
            .gateway
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("invalid gateway {}", wanted.gateway)))?;
        if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(Error::InvalidArgument(format!("gateway {gateway} is not a host address of {subnet}")));
        }
        gateway
    };
    if !wanted.ip_range.is_empty() {
        let range = parse_subnet(&wanted.ip_range, "ip-range").map_err(Error::InvalidArgument)?;
        if !subnet.contains(&range) {
            return Err(Error::InvalidArgument(format!("ip-range {range} is not inside subnet {subnet}")));
        }
    }
    let id = crate::names::new_id();
    let bridge = match request.options.get(BRIDGE_NAME_OPTION) {
        Some(name) if !name.is_empty() && name.len() <= IFNAMSIZ => name.clone(),
        Some(name) => return Err(Error::InvalidArgument(format!("bridge name {name:?} must be 1 to 15 characters"))),
        None => {
            let mut name = settings.bridge_prefix.clone();
            let room = IFNAMSIZ.saturating_sub(name.len());
            name.push_str(&id[..room.min(id.len())]);
            name
        }
    };
    let in_use: HashMap<String, String> =
        store.all_networks()?.into_iter().map(|n| (n.bridge.clone(), n.name.clone())).collect();
    if bridge == settings.bridge || in_use.contains_key(&bridge) {
        return Err(Error::Conflict(format!("bridge {bridge} is already used by another network")));
    }
    let network = Network {
        id,
        name: request.name,
        driver: "bridge".into(),
        ipam: vec![IpamConfig { subnet: subnet.to_string(), gateway: gateway.to_string(), ip_range: wanted.ip_range }],
        labels: request.labels,
        options: request.options,
        created: Some(berth_common::time::now()),
        internal: request.internal,
        bridge,
        containers: Vec::new(),
        scope: "local".into(),
    };
    store.put_network(namespace, &network).await?;
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> Settings {
        let mut config = Config { data_root: dir.to_path_buf(), ..Default::default() };
        config.network.bridge = "bt-test0".into();
        config.network.bridge_prefix = "btt-".into();
        config.network.subnet = "10.251.0.0/24".into();
        config.network.address_pools = vec!["10.251.0.0/22".into()];
        Settings::from_config(&config).unwrap()
    }

    #[tokio::test]
    async fn user_networks_get_free_subnets_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = NetStore::open(&db).unwrap();
        let ns = Namespace::default_namespace();
        let request = |name: &str| CreateNetworkRequest { name: name.into(), ..Default::default() };

        let first = create(&settings, &store, &ns, request("front")).await.unwrap();
        // The default network holds 10.251.0.0/24, so the pool's next /24 is used.
        assert_eq!(first.ipam[0].subnet, "10.251.1.0/24");
        assert_eq!(first.ipam[0].gateway, "10.251.1.1");
        assert!(first.bridge.starts_with("btt-") && first.bridge.len() == 15, "{}", first.bridge);
        let second = create(&settings, &store, &ns, request("back")).await.unwrap();
        assert_eq!(second.ipam[0].subnet, "10.251.2.0/24");

        assert!(matches!(create(&settings, &store, &ns, request("front")).await, Err(Error::Conflict(_))));
        assert!(create(&settings, &store, &ns, request("bridge")).await.is_err());
        assert!(create(&settings, &store, &ns, request("-bad")).await.is_err());
        let overlapping = CreateNetworkRequest {
            name: "x".into(),
            ipam: vec![IpamConfig { subnet: "10.251.1.128/25".into(), ..Default::default() }],
            ..Default::default()
        };
        assert!(create(&settings, &store, &ns, overlapping).await.unwrap_err().to_string().contains("overlaps"));

        assert_eq!(find(&settings, &store, &ns, "front").unwrap().id, first.id);
        assert_eq!(find(&settings, &store, &ns, &first.id[..10]).unwrap().id, first.id);
        assert_eq!(find(&settings, &store, &ns, "bridge").unwrap().bridge, "bt-test0");
        assert!(matches!(find(&settings, &store, &ns, "nope"), Err(Error::NetworkNotFound(_))));
        let names: Vec<String> = list(&settings, &store, &ns).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["bridge", "host", "none", "back", "front"]);
    }

    #[test]
    fn conflist_uses_our_ipam_dir_and_the_configured_masquerading() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let bridge = builtin(&settings, "bridge").unwrap();
        let list = conflist(&settings, &bridge).unwrap();
        assert_eq!(list["name"], "bt-test0");
        let plugins: Vec<&str> =
            list["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(plugins, ["bridge", "portmap", "firewall"]);
        assert_eq!(list["plugins"][0]["ipam"]["dataDir"], dir.path().join("network/ipam").display().to_string());
        assert_eq!(list["plugins"][0]["ipam"]["ranges"][0][0]["gateway"], "10.251.0.1");
        assert_eq!(list["plugins"][0]["isGateway"], false);
        assert_eq!(list["plugins"][0]["ipMasq"], true);
        let internal = Network { internal: true, ..bridge };
        let list = conflist(&settings, &internal).unwrap();
        assert_eq!(list["plugins"][0]["ipMasq"], false);
        assert_eq!(list["plugins"][0]["ipam"]["routes"], json!([]));
    }
}
