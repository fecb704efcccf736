//! Parsing the networking and mount flags of `run`/`create` as the Docker CLI does:
//! `-p`, `--expose`, `--mount`, `--tmpfs`. (`-v` strings go to the daemon as given.)

use anyhow::{Context, Result, bail};
use berth_proto::containers::v1::{MountSpec, PortBinding};

/// "8000-8002" -> [8000, 8001, 8002]; "80" -> [80].
fn port_range(text: &str) -> Result<Vec<u16>> {
    let parse = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).with_context(|| format!("invalid port {text:?}"));
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                bail!("invalid port range {text:?}");
            }
            Ok((low..=high).collect())
        }
        None => Ok(vec![parse(text)?]),
    }
}

/// `-p [ip:][hostPort:]containerPort[/proto]`, with port ranges of equal length.
pub fn parse_publish(text: &str) -> Result<Vec<PortBinding>> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, protocol.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        bail!("invalid proto: {protocol}");
    }
    // An IPv6 host address comes in brackets: [::1]:8080:80.
    let (ip, rest) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed.split_once("]:").with_context(|| format!("invalid publish spec {text:?}"))?;
            (ip.to_string(), rest.to_string())
        }
        None => (String::new(), spec.to_string()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip.is_empty(), parts.as_slice()) {
        (true, [container]) => (String::new(), "", *container),
        (true, [host, container]) => (String::new(), *host, *container),
        (true, [ip, host, container]) => (ip.to_string(), *host, *container),
        (false, [host, container]) => (ip, *host, *container),
        _ => bail!("invalid publish spec {text:?}: use [ip:][hostPort:]containerPort[/protocol]"),
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        bail!("invalid IP address {ip:?} in {text:?}");
    }
    let container_ports = port_range(container)?;
    let host_ports: Vec<Option<u16>> = if host.is_empty() {
        vec![None; container_ports.len()]
    } else {
        let hosts = port_range(host)?;
        if hosts.len() != container_ports.len() {
            bail!("invalid ranges in {text:?}: the host and container ranges must be the same length");
        }
        hosts.into_iter().map(Some).collect()
    };
    Ok(container_ports
        .into_iter()
        .zip(host_ports)
        .map(|(container, host)| PortBinding {
            container_port: format!("{container}/{protocol}"),
            host_ip: ip.clone(),
            host_port: host.map(|p| p.to_string()).unwrap_or_default(),
        })
        .collect())
}

/// `--expose 80`, `--expose 8000-8002/udp`.
pub fn parse_expose(text: &str) -> Result<Vec<String>> {
    let (ports, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    Ok(port_range(ports)?.into_iter().map(|p| format!("{p}/{protocol}")).collect())
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => bail!("invalid value for {key}: {other}"),
    }
}

/// `--mount type=bind,source=/a,target=/b,readonly` and friends.
pub fn parse_mount(text: &str) -> Result<MountSpec> {
    let mut mount = MountSpec { r#type: "volume".into(), ..Default::default() };
    for field in text.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_lowercase(), Some(value.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let required = || value.with_context(|| format!("invalid field '{field}' must be a key=value pair"));
        match key.as_str() {
            "type" => mount.r#type = required()?.to_string(),
            "source" | "src" => mount.source = required()?.to_string(),
            "target" | "destination" | "dst" => mount.target = required()?.to_string(),
            "readonly" | "ro" => mount.read_only = parse_bool(&key, value)?,
            "bind-propagation" => mount.propagation = required()?.to_string(),
            "volume-nocopy" => mount.volume_nocopy = parse_bool(&key, value)?,
            "volume-label" => {
                let label = required()?;
                let (k, v) = label.split_once('=').unwrap_or((label, ""));
                mount.volume_labels.insert(k.to_string(), v.to_string());
            }
            "tmpfs-size" => mount.tmpfs_size = super::container_options::parse_bytes(required()?)?,
            "tmpfs-mode" => {
                mount.tmpfs_mode =
                    u32::from_str_radix(required()?, 8).with_context(|| format!("invalid tmpfs-mode in '{field}'"))?
            }
            "consistency" | "bind-nonrecursive" => {}
            _ => bail!("unexpected key '{key}' in '{field}'"),
        }
    }
    if mount.target.is_empty() {
        bail!("invalid mount config: target is required ({text:?})");
    }
    if !matches!(mount.r#type.as_str(), "bind" | "volume" | "tmpfs") {
        bail!("invalid mount type {:?}: use bind, volume or tmpfs", mount.r#type);
    }
    Ok(mount)
}

/// `--tmpfs /run[:options]` -> (target, options).
pub fn parse_tmpfs(text: &str) -> (String, String) {
    match text.split_once(':') {
        Some((target, options)) => (target.to_string(), options.to_string()),
        None => (text.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(container: &str, ip: &str, host: &str) -> PortBinding {
        PortBinding { container_port: container.into(), host_ip: ip.into(), host_port: host.into() }
    }

    #[test]
    fn publish_specs_parse_like_docker() {
        assert_eq!(parse_publish("80").unwrap(), [binding("80/tcp", "", "")]);
        assert_eq!(parse_publish("8080:80").unwrap(), [binding("80/tcp", "", "8080")]);
        assert_eq!(parse_publish("127.0.0.1:18080:80").unwrap(), [binding("80/tcp", "127.0.0.1", "18080")]);
        assert_eq!(parse_publish("127.0.0.1::80/udp").unwrap(), [binding("80/udp", "127.0.0.1", "")]);
        assert_eq!(parse_publish("[::1]:8080:80").unwrap(), [binding("80/tcp", "::1", "8080")]);
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            [binding("80/tcp", "", "8000"), binding("81/tcp", "", "8001")]
        );
        for bad in ["", "http", "1:2:3:4", "8000-8002:80", "80/icmp", "999999", "nope:80:80", "0"] {
            assert!(parse_publish(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_expose("8000-8001/udp").unwrap(), ["8000/udp", "8001/udp"]);
    }

    #[test]
    fn mount_flags_parse_like_docker() {
        let bind = parse_mount("type=bind,source=/srv,target=/www,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(
            (bind.r#type.as_str(), bind.source.as_str(), bind.target.as_str(), bind.read_only),
            ("bind", "/srv", "/www", true)
        );
        assert_eq!(bind.propagation, "rslave");
        let volume = parse_mount("src=data,dst=/data,volume-nocopy,volume-label=a=b,ro=false").unwrap();
        assert_eq!((volume.r#type.as_str(), volume.source.as_str(), volume.read_only), ("volume", "data", false));
        assert!(volume.volume_nocopy);
        assert_eq!(volume.volume_labels["a"], "b");
        let tmpfs = parse_mount("type=tmpfs,destination=/run,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!((tmpfs.tmpfs_size, tmpfs.tmpfs_mode), (1 << 20, 0o1770));
        for bad in ["type=bind,source=/a", "target=/x,colour=red", "type=nfs,target=/x", "target=/x,readonly=maybe"] {
            assert!(parse_mount(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_tmpfs("/run:rw,size=64m"), ("/run".to_string(), "rw,size=64m".to_string()));
        assert_eq!(parse_tmpfs("/tmp"), ("/tmp".to_string(), String::new()));
    }
}
