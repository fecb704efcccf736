//! /etc/hostname, /etc/hosts and /etc/resolv.conf for a container, kept in its directory
//! under `<root>/containers/<ns>/<id>/` and bind-mounted into the rootfs.

use std::path::{Path, PathBuf};

use berth_proto::containers::v1::HostConfig;

pub struct EtcFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Docker's fallback when the host only has loopback resolvers, which would not work
/// from inside a private network namespace.
const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

fn is_loopback(address: &str) -> bool {
    address.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// resolv.conf for the container: the host's without loopback nameservers (unless the
/// container shares the host's network), then `--dns`, `--dns-search`, `--dns-option`.
pub fn resolv_conf(host_resolv: &str, host: &HostConfig) -> String {
    let host_network = host.network_mode == "host";
    let mut nameservers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host_resolv.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => {
                if let Some(address) = fields.next()
                    && (host_network || !is_loopback(address))
                {
                    nameservers.push(address.to_string());
                }
            }
            Some("search") | Some("domain") => search = fields.map(str::to_string).collect(),
            Some("options") => options.extend(fields.map(str::to_string)),
            _ => {}
        }
    }
    if !host.dns.is_empty() {
        nameservers = host.dns.clone();
    }
    if nameservers.is_empty() {
        nameservers = FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect();
    }
    if !host.dns_search.is_empty() {
        search = host.dns_search.clone();
    }
    if !host.dns_options.is_empty() {
        options = host.dns_options.clone();
    }
    let mut text = String::new();
    for nameserver in nameservers {
        text.push_str(&format!("nameserver {nameserver}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

/// /etc/hosts: localhost entries, the container's own address (when it has one), and
/// `--add-host` entries.
pub fn hosts(hostname: &str, address: Option<&str>, extra_hosts: &[String]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for entry in extra_hosts {
        if let Some((name, ip)) = entry.split_once(':') {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    if let Some(address) = address {
        text.push_str(&format!("{address}\t{hostname}\n"));
    }
    text
}

pub fn write(dir: &Path, hostname: &str, address: Option<&str>, host: &HostConfig) -> std::io::Result<EtcFiles> {
    std::fs::create_dir_all(dir)?;
    let files =
        EtcFiles { hostname: dir.join("hostname"), hosts: dir.join("hosts"), resolv_conf: dir.join("resolv.conf") };
    std::fs::write(&files.hostname, format!("{hostname}\n"))?;
    std::fs::write(&files.hosts, hosts(hostname, address, &host.extra_hosts))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(&files.resolv_conf, resolv_conf(&host_resolv, host))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_replaced() {
        let host_resolv = "nameserver 127.0.0.53\nsearch corp.example\noptions edns0\n";
        let text = resolv_conf(host_resolv, &HostConfig::default());
        assert_eq!(text, "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch corp.example\noptions edns0\n");
        let host_network = HostConfig { network_mode: "host".into(), ..Default::default() };
        assert!(resolv_conf(host_resolv, &host_network).starts_with("nameserver 127.0.0.53\n"));
        let custom = HostConfig { dns: vec!["10.0.0.2".into()], dns_search: vec!["a.b".into()], ..Default::default() };
        assert_eq!(resolv_conf("nameserver 10.1.1.1\n", &custom), "nameserver 10.0.0.2\nsearch a.b\n");
    }

    #[test]
    fn hosts_has_localhost_extra_and_self() {
        let text = hosts("web", Some("10.88.0.2"), &["db:10.0.0.9".into()]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.0.0.9\tdb\n"));
        assert!(text.ends_with("10.88.0.2\tweb\n"));
    }
}
