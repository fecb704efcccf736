//! The options `berth run` and `berth create` share, with Docker's names, and their
//! translation into a server-side create request.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_proto::containers::v1::{
    ContainerConfig, CreateContainerRequest, EndpointSettings, HostConfig, Resources, RestartPolicy, Ulimit,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ContainerOptions {
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 32m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 for unlimited swap
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Restart policy to apply when a container exits (no, always, on-failure[:N], unless-stopped)
    #[arg(long)]
    pub restart: Option<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Runtime to use for this container
    #[arg(long)]
    pub runtime: Option<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i32>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Connect a container to a network (bridge, none, host, container:<name|id>, or a network's name)
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a container's port(s) to the host ([ip:][hostPort:]containerPort[/proto])
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Bind mount a volume (/host:/ctr[:ro], name:/ctr, /ctr)
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container (type=bind|volume|tmpfs,source=,target=,...)
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory (/path[:options])
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Ulimit options (e.g. nofile=1024:2048)
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Security options (e.g. no-new-privileges)
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Sysctl options
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Size of /dev/shm
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The image to run
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Docker's RAMInBytes: a number with an optional b/k/m/g/t suffix (binary units).
pub fn parse_bytes(text: &str) -> Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b');
    let (number, multiplier) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1i64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        Some('t') => (&trimmed[..trimmed.len() - 1], 1 << 40),
        _ => (trimmed, 1),
    };
    let value: f64 = number.parse().with_context(|| format!("invalid size: {text:?}"))?;
    if value < 0.0 {
        bail!("invalid size: {text:?}");
    }
    Ok((value * multiplier as f64) as i64)
}

pub fn parse_restart(text: &str) -> Result<RestartPolicy> {
    let (name, count) = match text.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (text, None),
    };
    match (name, count) {
        ("no" | "always" | "unless-stopped", None) => Ok(RestartPolicy { name: name.into(), maximum_retry_count: 0 }),
        ("on-failure", None) => Ok(RestartPolicy { name: name.into(), maximum_retry_count: 0 }),
        ("on-failure", Some(count)) => Ok(RestartPolicy {
            name: name.into(),
            maximum_retry_count: count.parse().with_context(|| format!("invalid restart count {count:?}"))?,
        }),
        _ => bail!("invalid restart policy {text:?}: use no, always, on-failure[:max-retries] or unless-stopped"),
    }
}

fn parse_ulimit(text: &str) -> Result<Ulimit> {
    let (name, values) =
        text.split_once('=').with_context(|| format!("invalid ulimit {text:?}: use name=soft[:hard]"))?;
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (soft.parse()?, hard.parse()?),
        None => {
            let value: i64 = values.parse()?;
            (value, value)
        }
    };
    Ok(Ulimit { name: name.to_string(), soft, hard })
}

/// `-e KEY=VALUE` as given; `-e KEY` takes KEY from this environment (or is dropped).
fn resolve_env(entries: &[String], files: &[PathBuf]) -> Result<Vec<String>> {
    let mut all = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading env file {}", file.display()))?;
        all.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string));
    }
    all.extend(entries.iter().cloned());
    Ok(all
        .into_iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry)
            } else {
                std::env::var(&entry).ok().map(|value| format!("{entry}={value}"))
            }
        })
        .collect())
}

fn parse_platform(text: &str) -> berth_proto::types::v1::Platform {
    let mut parts = text.split('/');
    berth_proto::types::v1::Platform {
        os: parts.next().unwrap_or_default().to_string(),
        architecture: parts.next().unwrap_or_default().to_string(),
        variant: parts.next().unwrap_or_default().to_string(),
        os_version: String::new(),
    }
}

impl ContainerOptions {
    pub fn to_request(&self, auto_remove: bool, attach: bool) -> Result<CreateContainerRequest> {
        let labels = self
            .label
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect();
        let (entrypoint, entrypoint_set) = match &self.entrypoint {
            Some(e) if e.is_empty() => (Vec::new(), true),
            Some(e) => (vec![e.clone()], true),
            None => (Vec::new(), false),
        };
        let config = ContainerConfig {
            hostname: self.hostname.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            env: resolve_env(&self.env, &self.env_file)?,
            cmd: self.command.clone(),
            entrypoint,
            entrypoint_set,
            working_dir: self.workdir.clone().unwrap_or_default(),
            tty: self.tty,
            open_stdin: self.interactive,
            stdin_once: self.interactive && attach,
            attach_stdin: self.interactive && attach,
            attach_stdout: attach,
            attach_stderr: attach,
            labels,
            image: self.image.clone(),
            stop_signal: self.stop_signal.clone().unwrap_or_default(),
            stop_timeout: self.stop_timeout,
            exposed_ports: self
                .expose
                .iter()
                .map(|e| super::net_options::parse_expose(e))
                .collect::<Result<Vec<_>>>()?
                .concat(),
            ..Default::default()
        };
        let resources = Resources {
            memory: self.memory.as_deref().map(parse_bytes).transpose()?.unwrap_or(0),
            memory_swap: match self.memory_swap.as_deref() {
                Some("-1") => -1,
                Some(text) => parse_bytes(text)?,
                None => 0,
            },
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            cpu_shares: self.cpu_shares.unwrap_or(0),
            cpuset_cpus: self.cpuset_cpus.clone().unwrap_or_default(),
            pids_limit: self.pids_limit.unwrap_or(0),
            ulimits: self.ulimit.iter().map(|u| parse_ulimit(u)).collect::<Result<_>>()?,
            ..Default::default()
        };
        let sysctls = self
            .sysctl
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("invalid sysctl {s:?}"))
            })
            .collect::<Result<_>>()?;
        let host_config = HostConfig {
            network_mode: self.network.clone().unwrap_or_default(),
            dns: self.dns.clone(),
            dns_search: self.dns_search.clone(),
            dns_options: self.dns_option.clone(),
            extra_hosts: self.add_host.clone(),
            restart_policy: self.restart.as_deref().map(parse_restart).transpose()?,
            auto_remove,
            privileged: self.privileged,
            readonly_rootfs: self.read_only,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            security_opt: self.security_opt.clone(),
            resources: Some(resources),
            runtime: self.runtime.clone().unwrap_or_default(),
            shm_size: self.shm_size.as_deref().map(parse_bytes).transpose()?.unwrap_or(0),
            sysctls,
            binds: self.volume.clone(),
            mounts: self.mount.iter().map(|m| super::net_options::parse_mount(m)).collect::<Result<_>>()?,
            tmpfs: self.tmpfs.iter().map(|t| super::net_options::parse_tmpfs(t)).collect(),
            port_bindings: self
                .publish
                .iter()
                .map(|p| super::net_options::parse_publish(p))
                .collect::<Result<Vec<_>>>()?
                .concat(),
            publish_all_ports: self.publish_all,
            ..Default::default()
        };
        if auto_remove && host_config.restart_policy.as_ref().is_some_and(|p| p.name != "no") {
            bail!("conflicting options: cannot specify both --restart and --rm");
        }
        let mut endpoints_config = std::collections::HashMap::new();
        if !self.network_alias.is_empty() || self.ip.is_some() {
            let network = self.network.clone().unwrap_or_else(|| "bridge".into());
            let endpoint = EndpointSettings {
                aliases: self.network_alias.clone(),
                ipam_ipv4_address: self.ip.clone().unwrap_or_default(),
                ..Default::default()
            };
            endpoints_config.insert(network, endpoint);
        }
        Ok(CreateContainerRequest {
            name: self.name.clone().unwrap_or_default(),
            config: Some(config),
            host_config: Some(host_config),
            platform: self.platform.as_deref().map(parse_platform),
            endpoints_config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_sizes_and_policies() {
        assert_eq!(parse_bytes("32m").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64MB").unwrap(), 64 << 20);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_restart("on-failure:3").unwrap().maximum_retry_count, 3);
        assert_eq!(parse_restart("always").unwrap().name, "always");
        assert!(parse_restart("sometimes").is_err());
        assert_eq!(parse_ulimit("nofile=1024:2048").unwrap().hard, 2048);
    }
}
