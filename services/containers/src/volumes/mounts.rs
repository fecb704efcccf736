//! What a container asks to have mounted, from its four sources: `-v` strings
//! (`HostConfig.binds`, parsed here, server-side, as Docker's daemon does), `--mount`
//! entries (`HostConfig.mounts`, parsed by the client), `--tmpfs` (`HostConfig.tmpfs`) and
//! the image's `VOLUME`s (anonymous volumes unless something else is mounted there).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use berth_proto::containers::v1::{HostConfig, MountSpec};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A host path; `create_missing` for `-v` (Docker creates it), not for `--mount`.
    Bind {
        source: PathBuf,
        create_missing: bool,
    },
    /// A named volume, or an anonymous one (None) made for this container.
    Volume {
        name: Option<String>,
        nocopy: bool,
    },
    Tmpfs {
        options: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub target: String,
    pub read_only: bool,
    /// Bind propagation (rprivate unless asked).
    pub propagation: String,
    /// The mode text `inspect` shows ("ro", "z", ...).
    pub mode: String,
    pub labels: std::collections::HashMap<String, String>,
}

const PROPAGATIONS: [&str; 6] = ["private", "rprivate", "shared", "rshared", "slave", "rslave"];

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// A clean absolute container path ("/data/" -> "/data"); "/" and relative paths are
/// refused.
pub fn clean_target(target: &str) -> Result<String> {
    if !target.starts_with('/') {
        return Err(invalid(format!("invalid mount config: mount path must be absolute: {target:?}")));
    }
    let mut clean = PathBuf::from("/");
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    if clean == Path::new("/") {
        return Err(invalid("invalid specification: destination can't be '/'".into()));
    }
    Ok(clean.display().to_string())
}

pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One `-v` entry: `/host:/ctr[:opts]`, `name:/ctr[:opts]` or `/ctr`.
pub fn parse_bind(text: &str) -> Result<Request> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => return Err(invalid(format!("invalid volume specification: '{text}'"))),
    };
    if source.is_some_and(str::is_empty) || target.is_empty() {
        return Err(invalid(format!("invalid volume specification: '{text}'")));
    }
    let target = clean_target(target)?;
    let mut read_only = false;
    let mut propagation = String::new();
    let mut nocopy = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            // SELinux relabeling and Docker Desktop's consistency hints mean nothing here.
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            p if PROPAGATIONS.contains(&p) => propagation = p.to_string(),
            other => return Err(invalid(format!("invalid mode: {other} (in volume specification '{text}')"))),
        }
    }
    let kind = match source {
        Some(path) if path.starts_with('/') => {
            if nocopy {
                return Err(invalid(format!("invalid mode: nocopy is for volumes, not bind mounts ('{text}')")));
            }
            Kind::Bind { source: PathBuf::from(path), create_missing: true }
        }
        Some(name) if valid_volume_name(name) => {
            if !propagation.is_empty() {
                return Err(invalid(format!("invalid mode: propagation is for bind mounts, not volumes ('{text}')")));
            }
            Kind::Volume { name: Some(name.to_string()), nocopy }
        }
        Some(name) => {
            return Err(invalid(format!(
                "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        None => Kind::Volume { name: None, nocopy },
    };
    let is_bind = matches!(kind, Kind::Bind { .. });
    Ok(Request {
        kind,
        target,
        read_only,
        propagation: if is_bind && propagation.is_empty() { "rprivate".into() } else { propagation },
        mode: options.to_string(),
        labels: Default::default(),
    })
}

/// One `--mount` entry, already split into fields by the client.
pub fn from_mount_spec(spec: &MountSpec) -> Result<Request> {
    let target = clean_target(&spec.target)?;
    let kind = match spec.r#type.as_str() {
        "bind" => {
            if !spec.source.starts_with('/') {
                return Err(invalid(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{}' mount path must be absolute",
                    spec.source
                )));
            }
            Kind::Bind { source: PathBuf::from(&spec.source), create_missing: false }
        }
        "volume" | "" => {
            if !spec.source.is_empty() && !valid_volume_name(&spec.source) {
                return Err(invalid(format!("invalid volume name {:?}", spec.source)));
            }
            Kind::Volume { name: (!spec.source.is_empty()).then(|| spec.source.clone()), nocopy: spec.volume_nocopy }
        }
        "tmpfs" => {
            if !spec.source.is_empty() {
                return Err(invalid("invalid mount config for type \"tmpfs\": source must not be specified".into()));
            }
            let mut options = spec.options.clone();
            if spec.tmpfs_size > 0 {
                options.push(format!("size={}", spec.tmpfs_size));
            }
            if spec.tmpfs_mode > 0 {
                options.push(format!("mode={:o}", spec.tmpfs_mode));
            }
            Kind::Tmpfs { options }
        }
        other => return Err(invalid(format!("invalid mount config: mount type unknown: {other:?}"))),
    };
    let propagation = match (&kind, spec.propagation.as_str()) {
        (Kind::Bind { .. }, "") => "rprivate".to_string(),
        (Kind::Bind { .. }, p) if PROPAGATIONS.contains(&p) => p.to_string(),
        (Kind::Bind { .. }, p) => return Err(invalid(format!("invalid propagation mode: {p}"))),
        (_, "") => String::new(),
        (_, _) => return Err(invalid("bind-propagation is only valid for bind mounts".into())),
    };
    Ok(Request {
        kind,
        target,
        read_only: spec.read_only,
        propagation,
        mode: String::new(),
        labels: spec.volume_labels.clone(),
    })
}

/// One `--tmpfs target[:options]` entry.
pub fn from_tmpfs(target: &str, options: &str) -> Result<Request> {
    let options: Vec<String> = options.split(',').filter(|o| !o.is_empty()).map(str::to_string).collect();
    let read_only = options.iter().any(|o| o == "ro");
    Ok(Request {
        kind: Kind::Tmpfs { options },
        target: clean_target(target)?,
        read_only,
        propagation: String::new(),
        mode: String::new(),
        labels: Default::default(),
    })
}

/// Every mount of a new container, refusing two at one destination. Image `VOLUME`s
/// nothing else covers become anonymous volumes.
pub fn collect(host: &HostConfig, image_volumes: &[String]) -> Result<Vec<Request>> {
    let mut requests = Vec::new();
    for bind in &host.binds {
        requests.push(parse_bind(bind)?);
    }
    for spec in &host.mounts {
        requests.push(from_mount_spec(spec)?);
    }
    let mut tmpfs: Vec<(&String, &String)> = host.tmpfs.iter().collect();
    tmpfs.sort();
    for (target, options) in tmpfs {
        requests.push(from_tmpfs(target, options)?);
    }
    let mut seen = HashSet::new();
    for request in &requests {
        if !seen.insert(request.target.clone()) {
            return Err(invalid(format!("Duplicate mount point: {}", request.target)));
        }
    }
    let mut image_volumes: Vec<&String> = image_volumes.iter().collect();
    image_volumes.sort();
    image_volumes.dedup();
    for volume in image_volumes {
        let Ok(target) = clean_target(volume) else { continue };
        if seen.insert(target.clone()) {
            requests.push(Request {
                kind: Kind::Volume { name: None, nocopy: false },
                target,
                read_only: false,
                propagation: String::new(),
                mode: String::new(),
                labels: Default::default(),
            });
        }
    }
    // Parents before children, so a mount inside another mount lands on top of it.
    requests.sort_by_key(|r| Path::new(&r.target).components().count());
    Ok(requests)
}

/// The OCI mount options for a tmpfs: Docker's defaults (noexec, nosuid, nodev) unless
/// the user's options say otherwise.
pub fn tmpfs_options(user: &[String], read_only: bool) -> Vec<String> {
    let mut options: Vec<String> = Vec::new();
    let says = |word: &str| user.iter().any(|o| o == word);
    for (default, opposite) in [("noexec", "exec"), ("nosuid", "suid"), ("nodev", "dev")] {
        if !says(opposite) {
            options.push(default.to_string());
        }
    }
    for option in user {
        if !matches!(option.as_str(), "exec" | "suid" | "dev" | "ro" | "rw") && !options.contains(option) {
            options.push(option.clone());
        }
    }
    options.push(if read_only { "ro" } else { "rw" }.to_string());
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse_like_docker() {
        let bind = parse_bind("/srv/www:/www:ro").unwrap();
        assert_eq!(bind.kind, Kind::Bind { source: "/srv/www".into(), create_missing: true });
        assert_eq!((bind.target.as_str(), bind.read_only, bind.propagation.as_str()), ("/www", true, "rprivate"));
        let shared = parse_bind("/a:/b:rw,rshared").unwrap();
        assert_eq!((shared.read_only, shared.propagation.as_str()), (false, "rshared"));

        let named = parse_bind("data:/var/lib/data/").unwrap();
        assert_eq!(named.kind, Kind::Volume { name: Some("data".into()), nocopy: false });
        assert_eq!(named.target, "/var/lib/data");
        assert_eq!(
            parse_bind("cache:/c:nocopy").unwrap().kind,
            Kind::Volume { name: Some("cache".into()), nocopy: true }
        );

        let anonymous = parse_bind("/scratch").unwrap();
        assert_eq!(anonymous.kind, Kind::Volume { name: None, nocopy: false });

        for bad in ["", "/a:", ":/b", "/a:/b:rx", "/a:b", "/a:/", "a b:/c", "x:/c:rshared", "/a:/b:c:d", "/a:/b:nocopy"]
        {
            assert!(parse_bind(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn mount_specs_and_tmpfs() {
        let spec = MountSpec {
            r#type: "tmpfs".into(),
            target: "/run".into(),
            tmpfs_size: 1 << 20,
            tmpfs_mode: 0o1777,
            ..Default::default()
        };
        let tmpfs = from_mount_spec(&spec).unwrap();
        assert_eq!(tmpfs.kind, Kind::Tmpfs { options: vec!["size=1048576".into(), "mode=1777".into()] });
        let bind = MountSpec { r#type: "bind".into(), source: "rel".into(), target: "/x".into(), ..Default::default() };
        assert!(from_mount_spec(&bind).is_err());
        let volume = MountSpec {
            r#type: "volume".into(),
            target: "/x".into(),
            propagation: "shared".into(),
            ..Default::default()
        };
        assert!(from_mount_spec(&volume).is_err());
        let anonymous = MountSpec { r#type: "volume".into(), target: "/x".into(), ..Default::default() };
        assert_eq!(from_mount_spec(&anonymous).unwrap().kind, Kind::Volume { name: None, nocopy: false });

        assert_eq!(tmpfs_options(&[], false), ["noexec", "nosuid", "nodev", "rw"]);
        assert_eq!(tmpfs_options(&["exec".into(), "size=64m".into()], true), ["nosuid", "nodev", "size=64m", "ro"]);
    }

    #[test]
    fn collect_orders_parents_first_and_fills_image_volumes() {
        let host = HostConfig {
            binds: vec!["/h/a:/data/sub".into(), "named:/data".into()],
            tmpfs: [("/run".to_string(), "size=1m".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let requests = collect(&host, &["/data".into(), "/cache".into(), "/cache/".into()]).unwrap();
        let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["/data", "/run", "/cache", "/data/sub"]);
        // /data comes from the user (named), /cache from the image (anonymous).
        assert_eq!(requests[0].kind, Kind::Volume { name: Some("named".into()), nocopy: false });
        assert_eq!(requests[2].kind, Kind::Volume { name: None, nocopy: false });

        let duplicate = HostConfig { binds: vec!["/a:/x".into(), "v1:/x/".into()], ..Default::default() };
        assert!(collect(&duplicate, &[]).unwrap_err().to_string().contains("Duplicate mount point: /x"));
    }
}
