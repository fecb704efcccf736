//! The OCI runtime spec for a container: defaults close to Docker's (capabilities, masked
//! and read-only paths, the standard /proc /dev /sys mounts, a deny-all device cgroup),
//! then the image's process settings, then the user's options.
//!
//! Host limits these machines have are respected: capabilities outside our own bounding
//! set are never requested (there is no CAP_SYS_RESOURCE here), rlimits are never raised
//! above the host's hard limits, and oom_score_adj is left to be inherited (never lowered).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use berth_proto::containers::v1::{ContainerConfig, HostConfig, Resources};
use berth_proto::images::v1::ImageConfig;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::command;

/// Docker's default capability set.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability by its kernel number (index = bit in /proc/<pid>/status CapBnd).
const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

pub use berth_common::task::USER_ANNOTATION;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified: the image has no CMD or ENTRYPOINT and none was given")]
    NoCommand,
    #[error("invalid capability {0:?}")]
    BadCapability(String),
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Everything the spec depends on besides the configs.
pub struct SpecInputs<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    pub config: &'a ContainerConfig,
    pub host: &'a HostConfig,
    pub image: &'a ImageConfig,
    pub hostname: &'a str,
    /// Files bind-mounted over /etc/hosts, /etc/hostname, /etc/resolv.conf.
    pub etc_files: &'a [(&'a str, &'a Path)],
    /// Join this network namespace; `None` creates a private one unless the network mode
    /// is `host`.
    pub network_namespace: Option<&'a Path>,
    /// Binds, volumes and tmpfs mounts from the user and the image, parents first.
    pub mounts: &'a [Mount],
}

/// The generated spec plus warnings for the user (e.g. a limit that was lowered).
pub struct Generated {
    pub spec: Spec,
    pub warnings: Vec<String>,
}

fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| SpecError::BadCapability(name.to_string()))
}

/// Names of the capabilities in this process's bounding set: a container cannot get more.
pub fn bounding_set() -> HashSet<&'static str> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES.iter().enumerate().filter(|(bit, _)| mask & (1u64 << bit) != 0).map(|(_, name)| *name).collect()
}

/// Docker's capability rules: defaults (or all, when privileged), minus drops, plus adds;
/// "ALL" works in both lists. Capabilities we do not hold ourselves are left out with a
/// warning instead of making the runtime fail.
fn capabilities(
    host: &HostConfig,
    bounding: &HashSet<&'static str>,
    warnings: &mut Vec<String>,
) -> Result<HashSet<Capability>, SpecError> {
    let normalize = |name: &String| {
        let upper = name.trim().to_ascii_uppercase();
        upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
    };
    let adds: Vec<String> = host.cap_add.iter().map(normalize).collect();
    let drops: Vec<String> = host.cap_drop.iter().map(normalize).collect();
    let mut names: Vec<String> = if host.privileged || adds.iter().any(|a| a == "ALL") {
        ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if !host.privileged {
        if drops.iter().any(|d| d == "ALL") {
            names.clear();
        } else {
            names.retain(|n| !drops.contains(n));
        }
        for add in adds.iter().filter(|a| *a != "ALL") {
            if !names.contains(add) {
                names.push(add.clone());
            }
        }
    }
    let mut set = HashSet::new();
    for name in names {
        let capability = parse_capability(&name)?;
        if bounding.contains(name.as_str()) {
            set.insert(capability);
        } else if host.cap_add.iter().any(|a| normalize(a) == name) {
            warnings.push(format!("capability {name} is not available on this host and was not added"));
        }
    }
    Ok(set)
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn default_mounts(host: &HostConfig) -> Result<Vec<Mount>, SpecError> {
    let shm_size = if host.shm_size > 0 { host.shm_size } else { 64 * 1024 * 1024 };
    let sys_mode = if host.privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", sys_mode])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", sys_mode])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &format!("size={shm_size}")])?,
    ])
}

fn rlimit_type(name: &str) -> Option<(PosixRlimitType, nix::sys::resource::Resource)> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "nofile" => (PosixRlimitType::RlimitNofile, R::RLIMIT_NOFILE),
        "nproc" => (PosixRlimitType::RlimitNproc, R::RLIMIT_NPROC),
        "core" => (PosixRlimitType::RlimitCore, R::RLIMIT_CORE),
        "memlock" => (PosixRlimitType::RlimitMemlock, R::RLIMIT_MEMLOCK),
        "stack" => (PosixRlimitType::RlimitStack, R::RLIMIT_STACK),
        "fsize" => (PosixRlimitType::RlimitFsize, R::RLIMIT_FSIZE),
        "cpu" => (PosixRlimitType::RlimitCpu, R::RLIMIT_CPU),
        "data" => (PosixRlimitType::RlimitData, R::RLIMIT_DATA),
        "as" => (PosixRlimitType::RlimitAs, R::RLIMIT_AS),
        "locks" => (PosixRlimitType::RlimitLocks, R::RLIMIT_LOCKS),
        "sigpending" => (PosixRlimitType::RlimitSigpending, R::RLIMIT_SIGPENDING),
        "msgqueue" => (PosixRlimitType::RlimitMsgqueue, R::RLIMIT_MSGQUEUE),
        "nice" => (PosixRlimitType::RlimitNice, R::RLIMIT_NICE),
        "rtprio" => (PosixRlimitType::RlimitRtprio, R::RLIMIT_RTPRIO),
        _ => return None,
    })
}

/// `--ulimit` values, clamped to the host's hard limits: raising a hard limit needs
/// CAP_SYS_RESOURCE, which these hosts do not grant, and the runtime would fail.
fn rlimits(
    resources: &Resources,
    warnings: &mut Vec<String>,
) -> Result<Vec<oci_spec::runtime::PosixRlimit>, SpecError> {
    let mut limits = Vec::new();
    for ulimit in &resources.ulimits {
        let (kind, resource) = rlimit_type(&ulimit.name).ok_or_else(|| SpecError::Invalid {
            what: "ulimit",
            message: format!("unknown limit {:?}", ulimit.name),
        })?;
        let host_hard = nix::sys::resource::getrlimit(resource).map(|(_, hard)| hard).unwrap_or(u64::MAX);
        let want_hard = if ulimit.hard < 0 { u64::MAX } else { ulimit.hard as u64 };
        let want_soft = if ulimit.soft < 0 { u64::MAX } else { ulimit.soft as u64 };
        let hard = want_hard.min(host_hard);
        if hard < want_hard {
            warnings.push(format!("ulimit {} hard limit lowered to the host's {hard}", ulimit.name));
        }
        let soft = want_soft.min(hard);
        limits.push(PosixRlimitBuilder::default().typ(kind).hard(hard).soft(soft).build()?);
    }
    Ok(limits)
}

fn resources(host: &HostConfig) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let r = host.resources.clone().unwrap_or_default();
    let mut builder = LinuxResourcesBuilder::default();
    let devices = if host.privileged {
        vec![LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build()?]
    } else {
        vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?]
    };
    builder = builder.devices(devices);
    if r.memory > 0 || r.memory_swap != 0 || r.memory_reservation > 0 {
        let mut memory = LinuxMemoryBuilder::default();
        if r.memory > 0 {
            memory = memory.limit(r.memory);
        }
        // Swap is only limited when asked: the host may lack swap accounting.
        if r.memory_swap != 0 {
            memory = memory.swap(r.memory_swap);
        }
        if r.memory_reservation > 0 {
            memory = memory.reservation(r.memory_reservation);
        }
        builder = builder.memory(memory.build()?);
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut has_cpu = false;
    if r.nano_cpus > 0 {
        let period: u64 = 100_000;
        cpu = cpu.period(period).quota((r.nano_cpus as i128 * period as i128 / 1_000_000_000) as i64);
        has_cpu = true;
    } else if r.cpu_quota > 0 {
        cpu = cpu.quota(r.cpu_quota).period(if r.cpu_period > 0 { r.cpu_period as u64 } else { 100_000 });
        has_cpu = true;
    }
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
        has_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        has_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        has_cpu = true;
    }
    if has_cpu {
        builder = builder.cpu(cpu.build()?);
    }
    if r.pids_limit > 0 {
        builder = builder.pids(LinuxPidsBuilder::default().limit(r.pids_limit).build()?);
    }
    Ok(builder.build()?)
}

fn namespaces(
    host: &HostConfig,
    network_namespace: Option<&Path>,
) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let mut list = Vec::new();
    let mut add = |kind: LinuxNamespaceType, path: Option<&Path>| -> Result<(), SpecError> {
        let mut builder = LinuxNamespaceBuilder::default().typ(kind);
        if let Some(path) = path {
            builder = builder.path(path);
        }
        list.push(builder.build()?);
        Ok(())
    };
    add(LinuxNamespaceType::Mount, None)?;
    if host.pid_mode != "host" {
        add(LinuxNamespaceType::Pid, None)?;
    }
    if host.ipc_mode != "host" {
        add(LinuxNamespaceType::Ipc, None)?;
    }
    if host.uts_mode != "host" {
        add(LinuxNamespaceType::Uts, None)?;
    }
    if host.network_mode != "host" {
        add(LinuxNamespaceType::Network, network_namespace)?;
    }
    Ok(list)
}

fn no_new_privileges(host: &HostConfig) -> bool {
    host.security_opt
        .iter()
        .any(|o| matches!(o.as_str(), "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"))
}

pub fn generate(inputs: &SpecInputs<'_>) -> Result<Generated, SpecError> {
    let SpecInputs { id, namespace, config, host, image, hostname, etc_files, network_namespace, mounts: user_mounts } =
        *inputs;
    let mut warnings = Vec::new();
    let args = command::argv(config, image);
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let caps = capabilities(host, &bounding_set(), &mut warnings)?;
    let empty = Resources::default();
    let rlimits = rlimits(host.resources.as_ref().unwrap_or(&empty), &mut warnings)?;
    let capability_set = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(args)
        .env(command::environment(config, image, hostname))
        .cwd(command::working_dir(config, image))
        .capabilities(capability_set)
        .no_new_privileges(no_new_privileges(host))
        .build()?;
    process.set_rlimits(if rlimits.is_empty() { None } else { Some(rlimits) });

    let mut mounts = default_mounts(host)?;
    for (destination, source) in etc_files {
        mounts.push(mount(destination, "bind", &source.display().to_string(), &["rbind", "rprivate"])?);
    }
    mounts.extend(user_mounts.iter().cloned());

    let mut sysctl: HashMap<String, String> = host.sysctls.clone().into_iter().collect();
    if host.network_mode != "host" {
        // Docker's defaults for a private network namespace: ping and low ports work for
        // every user inside it.
        sysctl.entry("net.ipv4.ip_unprivileged_port_start".into()).or_insert_with(|| "0".into());
        sysctl.entry("net.ipv4.ping_group_range".into()).or_insert_with(|| "0 2147483647".into());
    }
    let (masked, readonly): (Vec<String>, Vec<String>) = if host.privileged {
        (Vec::new(), Vec::new())
    } else {
        let masked = if host.masked_paths.is_empty() {
            MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        } else {
            host.masked_paths.clone()
        };
        let readonly = if host.readonly_paths.is_empty() {
            READONLY_PATHS.iter().map(|s| s.to_string()).collect()
        } else {
            host.readonly_paths.clone()
        };
        (masked, readonly)
    };
    let linux = LinuxBuilder::default()
        .namespaces(namespaces(host, network_namespace)?)
        .resources(resources(host)?)
        .cgroups_path(format!("/berth/{namespace}/{id}"))
        .masked_paths(masked)
        .readonly_paths(readonly)
        .sysctl(sysctl)
        .build()?;

    let mut annotations = HashMap::new();
    let user = command::user(config, image);
    if !user.is_empty() {
        annotations.insert(USER_ANNOTATION.to_string(), user);
    }
    let spec = SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path("rootfs").readonly(host.readonly_rootfs).build()?)
        .process(process)
        .hostname(hostname)
        .mounts(mounts)
        .annotations(annotations)
        .linux(linux)
        .build()?;
    Ok(Generated { spec, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(config: &'a ContainerConfig, host: &'a HostConfig, image: &'a ImageConfig) -> SpecInputs<'a> {
        SpecInputs {
            id: "abc",
            namespace: "default",
            config,
            host,
            image,
            hostname: "abc",
            etc_files: &[],
            network_namespace: None,
            mounts: &[],
        }
    }

    fn caps_of(spec: &Spec) -> HashSet<String> {
        let value = serde_json::to_value(spec).unwrap();
        value["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn defaults_look_like_docker() {
        let image = ImageConfig { cmd: vec!["sh".into()], ..Default::default() };
        let spec = generate(&inputs(&ContainerConfig::default(), &HostConfig::default(), &image)).unwrap().spec;
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["args"], serde_json::json!(["sh"]));
        assert_eq!(json["linux"]["cgroupsPath"], "/berth/default/abc");
        assert!(json["linux"]["maskedPaths"].as_array().unwrap().iter().any(|p| p == "/proc/kcore"));
        assert!(json["process"]["oomScoreAdj"].is_null(), "oom_score_adj must be inherited, never set");
        assert!(json["process"]["rlimits"].is_null(), "rlimits are inherited unless asked for");
        let caps = caps_of(&spec);
        assert!(caps.contains("CAP_CHOWN") && caps.contains("CAP_NET_BIND_SERVICE"));
        assert!(!caps.contains("CAP_SYS_ADMIN"));
        let kinds: Vec<&str> =
            json["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"network") && kinds.contains(&"pid"));
    }

    #[test]
    fn cap_add_drop_and_privileged() {
        let image = ImageConfig { cmd: vec!["sh".into()], ..Default::default() };
        let host =
            HostConfig { cap_add: vec!["NET_ADMIN".into()], cap_drop: vec!["cap_chown".into()], ..Default::default() };
        let caps = caps_of(&generate(&inputs(&ContainerConfig::default(), &host, &image)).unwrap().spec);
        assert!(caps.contains("CAP_NET_ADMIN"));
        assert!(!caps.contains("CAP_CHOWN"));
        let host = HostConfig { cap_drop: vec!["ALL".into()], cap_add: vec!["KILL".into()], ..Default::default() };
        assert_eq!(
            caps_of(&generate(&inputs(&ContainerConfig::default(), &host, &image)).unwrap().spec),
            HashSet::from(["CAP_KILL".to_string()])
        );
        let host = HostConfig { privileged: true, ..Default::default() };
        let caps = caps_of(&generate(&inputs(&ContainerConfig::default(), &host, &image)).unwrap().spec);
        // Everything we hold ourselves, and nothing more.
        assert_eq!(caps.len(), bounding_set().len());
        let host = HostConfig { cap_add: vec!["NOT_A_CAP".into()], ..Default::default() };
        assert!(matches!(
            generate(&inputs(&ContainerConfig::default(), &host, &image)),
            Err(SpecError::BadCapability(_))
        ));
    }

    #[test]
    fn limits_and_ulimits() {
        let image = ImageConfig { cmd: vec!["sh".into()], ..Default::default() };
        let host = HostConfig {
            resources: Some(Resources {
                memory: 32 << 20,
                nano_cpus: 1_500_000_000,
                pids_limit: 100,
                ulimits: vec![berth_proto::containers::v1::Ulimit { name: "nofile".into(), soft: 100, hard: i64::MAX }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let generated = generate(&inputs(&ContainerConfig::default(), &host, &image)).unwrap();
        let json = serde_json::to_value(&generated.spec).unwrap();
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 100);
        let (_, host_hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(json["process"]["rlimits"][0]["hard"], host_hard);
        assert_eq!(json["process"]["rlimits"][0]["soft"], 100);
        assert!(generated.warnings.iter().any(|w| w.contains("nofile")));
    }

    #[test]
    fn no_command_is_an_error_and_user_is_annotated() {
        let host = HostConfig::default();
        assert!(matches!(
            generate(&inputs(&ContainerConfig::default(), &host, &ImageConfig::default())),
            Err(SpecError::NoCommand)
        ));
        let image = ImageConfig { cmd: vec!["id".into()], user: "nobody".into(), ..Default::default() };
        let spec = generate(&inputs(&ContainerConfig::default(), &host, &image)).unwrap().spec;
        assert_eq!(spec.annotations().as_ref().unwrap()[USER_ANNOTATION], "nobody");
    }
}
