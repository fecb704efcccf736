//! The daemon configuration (`/etc/berth/config.toml`). Keys follow Docker's daemon.json
//! where one exists (`data-root`, `exec-root`, `hosts`, `registry-mirrors`,
//! `insecure-registries`, `default-runtime`, `runtimes`, `log-opts`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Address;

pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";
pub const DEFAULT_LOG_DIR: &str = "/var/log/berth";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// The services a berthd process can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    /// Images and content.
    Images,
    Snapshots,
    /// Containers, tasks, networks and volumes.
    Containers,
    Events,
}

impl ServiceName {
    pub const ALL: [ServiceName; 4] =
        [ServiceName::Events, ServiceName::Snapshots, ServiceName::Images, ServiceName::Containers];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Images => "images",
            ServiceName::Snapshots => "snapshots",
            ServiceName::Containers => "containers",
            ServiceName::Events => "events",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown service {0:?}: choose from images, snapshots, containers, events")]
pub struct UnknownService(String);

impl FromStr for ServiceName {
    type Err = UnknownService;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "images" | "content" => Ok(ServiceName::Images),
            "snapshots" => Ok(ServiceName::Snapshots),
            "containers" | "tasks" => Ok(ServiceName::Containers),
            "events" => Ok(ServiceName::Events),
            other => Err(UnknownService(other.to_string())),
        }
    }
}

/// One OCI runtime handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Binary name (looked up in PATH) or absolute path.
    pub path: String,
    /// Extra global arguments passed before the subcommand.
    #[serde(default, alias = "runtimeArgs")]
    pub runtime_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept at most.
    pub max_events: u64,
    /// Oldest event kept, in seconds.
    pub max_age_seconds: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { max_events: 100_000, max_age_seconds: 7 * 24 * 3600 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogOpts {
    /// Rotate a container log once it reaches this many bytes.
    pub max_size: u64,
    /// Rotated files kept besides the live one.
    pub max_file: u32,
}

impl Default for LogOpts {
    fn default() -> Self {
        LogOpts { max_size: 20 * 1024 * 1024, max_file: 3 }
    }
}

/// Container networking (`[network]`): the default bridge network and the pool user
/// networks take their subnets from. Several daemons on one host (tests) must each get
/// their own bridge names and subnets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Directories searched, in order, for the CNI plugin binaries.
    pub cni_path: Vec<PathBuf>,
    /// Host bridge device of the default network ("bridge"); at most 15 characters.
    pub bridge: String,
    /// Subnet of the default network (CIDR); the gateway is its first address.
    pub subnet: String,
    /// Bridge device names of user-defined networks: this prefix plus the network id,
    /// cut to 15 characters.
    pub bridge_prefix: String,
    /// User-defined networks created without `--subnet` get a free /24 from these.
    pub address_pools: Vec<String>,
    /// Turn on net.ipv4.ip_forward so containers reach beyond this host (Docker's
    /// `ip-forward`).
    pub ip_forward: bool,
    /// Masquerade traffic from bridge networks to other hosts (Docker's `ip-masq`).
    pub ip_masq: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_path: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            bridge: "berth0".to_string(),
            subnet: "10.213.0.0/16".to_string(),
            bridge_prefix: "br-".to_string(),
            address_pools: vec!["10.214.0.0/15".to_string()],
            ip_forward: true,
            ip_masq: true,
        }
    }
}

/// The whole daemon configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: content, databases, snapshots, volumes.
    pub data_root: PathBuf,
    /// Runtime state: sockets, task bundles.
    pub exec_root: PathBuf,
    /// Container logs.
    pub log_dir: PathBuf,
    /// Addresses to serve on; the first is the primary one services use to reach each
    /// other when they share a process.
    pub hosts: Vec<Address>,
    /// Services this process hosts; empty means all.
    pub services: Vec<ServiceName>,
    /// Where to reach services this process does not host.
    pub service_addresses: BTreeMap<ServiceName, Address>,
    /// Mirrors for docker.io, tried in order before the origin.
    pub registry_mirrors: Vec<String>,
    /// Per-registry mirrors: "quay.io" = ["http://127.0.0.1:5001"].
    pub registry_host_mirrors: BTreeMap<String, Vec<String>>,
    /// Registries (host[:port] or CIDR) that may use plain HTTP or unverified TLS.
    pub insecure_registries: Vec<String>,
    /// Attempts per blob download before a pull fails (Docker's `max-download-attempts`).
    pub max_download_attempts: u32,
    /// A registry connection that sends nothing for this long is given up (then retried).
    pub registry_read_timeout_seconds: u64,
    pub default_runtime: String,
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    pub events: EventsConfig,
    pub log_opts: LogOpts,
    pub network: NetworkConfig,
    /// Snapshotter: "overlayfs", "native", or "" to choose automatically.
    pub storage_driver: String,
    /// Unix group given access to the API socket (0660), when it exists.
    pub socket_group: String,
}

impl Default for Config {
    fn default() -> Self {
        let runtimes = ["runc", "crun", "youki"]
            .into_iter()
            .map(|name| (name.to_string(), RuntimeConfig { path: name.to_string(), runtime_args: Vec::new() }))
            .collect();
        Config {
            data_root: PathBuf::from(DEFAULT_ROOT),
            exec_root: PathBuf::from(DEFAULT_STATE),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            hosts: vec![Address::Unix(PathBuf::from(DEFAULT_SOCKET))],
            services: Vec::new(),
            service_addresses: BTreeMap::new(),
            registry_mirrors: Vec::new(),
            registry_host_mirrors: BTreeMap::new(),
            insecure_registries: Vec::new(),
            max_download_attempts: 3,
            registry_read_timeout_seconds: 120,
            default_runtime: "runc".to_string(),
            runtimes,
            events: EventsConfig::default(),
            log_opts: LogOpts::default(),
            network: NetworkConfig::default(),
            storage_driver: String::new(),
            socket_group: "berth".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a config file. A missing file at the default path is not an error (defaults
    /// apply); a missing file that was asked for explicitly is.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hosts.is_empty() {
            return Err(ConfigError::Invalid("`hosts` must name at least one address".into()));
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(ConfigError::Invalid(format!(
                "default-runtime {:?} is not defined under [runtimes]",
                self.default_runtime
            )));
        }
        if self.max_download_attempts == 0 || self.registry_read_timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "max-download-attempts and registry-read-timeout-seconds must be at least 1".into(),
            ));
        }
        let bridge = &self.network.bridge;
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(ConfigError::Invalid(format!(
                "network.bridge {bridge:?} must be a device name of 1 to 15 characters"
            )));
        }
        if self.network.bridge_prefix.len() > 7 {
            return Err(ConfigError::Invalid(format!(
                "network.bridge-prefix {:?} is too long: keep it to 7 characters so the network id still fits",
                self.network.bridge_prefix
            )));
        }
        for dir in [&self.data_root, &self.exec_root, &self.log_dir] {
            if !dir.is_absolute() {
                return Err(ConfigError::Invalid(format!("{} must be an absolute path", dir.display())));
            }
        }
        Ok(())
    }

    /// The services this process hosts.
    pub fn hosted_services(&self) -> Vec<ServiceName> {
        if self.services.is_empty() {
            ServiceName::ALL.to_vec()
        } else {
            let mut services = self.services.clone();
            services.sort();
            services.dedup();
            services
        }
    }

    /// The address at which `service` is reached: the configured one, or this process's
    /// primary address.
    pub fn address_of(&self, service: ServiceName) -> &Address {
        self.service_addresses.get(&service).unwrap_or(&self.hosts[0])
    }

    pub fn primary_address(&self) -> &Address {
        &self.hosts[0]
    }

    pub fn content_dir(&self) -> PathBuf {
        self.data_root.join("content")
    }

    pub fn tasks_dir(&self) -> PathBuf {
        self.exec_root.join("tasks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::default().hosted_services().len(), 4);
    }

    #[test]
    fn docker_style_keys_parse() {
        let config = Config::parse(
            r#"
            data-root = "/tmp/b"
            hosts = ["unix:///tmp/b.sock", "tcp://127.0.0.1:2375"]
            services = ["events"]
            registry-mirrors = ["http://127.0.0.1:5000"]
            insecure-registries = ["10.0.0.0/8"]
            default-runtime = "crun"
            [service-addresses]
            images = "unix:///tmp/images.sock"
            [runtimes.crun]
            path = "/usr/bin/crun"
            "#,
        )
        .unwrap();
        assert_eq!(config.data_root, PathBuf::from("/tmp/b"));
        assert_eq!(config.hosts[1], Address::Tcp("127.0.0.1:2375".into()));
        assert_eq!(config.hosted_services(), vec![ServiceName::Events]);
        assert_eq!(config.address_of(ServiceName::Images), &Address::Unix("/tmp/images.sock".into()));
        assert_eq!(config.address_of(ServiceName::Events), &Address::Unix("/tmp/b.sock".into()));
        assert_eq!(config.runtimes["crun"].path, "/usr/bin/crun");
    }

    #[test]
    fn shipped_config_shows_the_defaults() {
        assert_eq!(Config::parse(include_str!("../../../deploy/config.toml")).unwrap(), Config::default());
        assert!(Config::parse("[network]\nbridge = \"a-very-long-bridge-name\"").unwrap_err().contains("15"));
    }

    #[test]
    fn mistakes_are_reported_clearly() {
        assert!(Config::parse("data-rot = \"/x\"").unwrap_err().contains("data-rot"));
        assert!(Config::parse("default-runtime = \"kata\"").unwrap_err().contains("kata"));
        assert!(Config::parse("data-root = \"relative\"").unwrap_err().contains("absolute"));
        assert!(Config::parse("services = [\"imgs\"]").is_err());
    }
}
