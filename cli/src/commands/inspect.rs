//! `berth inspect` (and `container inspect`): Docker-like JSON for containers.

use berth_proto::containers::v1::{Container, ContainerStatus, GetContainerRequest};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};
use crate::output::rfc3339;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Display total file sizes
    #[arg(short = 's', long)]
    size: bool,
    #[arg(required = true)]
    objects: Vec<String>,
}

pub fn state_name(container: &Container) -> &'static str {
    let status = container.state.as_ref().map(|s| s.status).unwrap_or_default();
    match ContainerStatus::try_from(status).unwrap_or(ContainerStatus::Created) {
        ContainerStatus::Running => "running",
        ContainerStatus::Paused => "paused",
        ContainerStatus::Restarting => "restarting",
        ContainerStatus::Removing => "removing",
        ContainerStatus::Exited => "exited",
        ContainerStatus::Dead => "dead",
        ContainerStatus::Created | ContainerStatus::Unspecified => "created",
    }
}

pub fn container_json(c: &Container) -> Value {
    let state = c.state.clone().unwrap_or_default();
    let config = c.config.clone().unwrap_or_default();
    let host = c.host_config.clone().unwrap_or_default();
    let resources = host.resources.clone().unwrap_or_default();
    let restart = host.restart_policy.clone().unwrap_or_default();
    let status = state_name(c);
    let env: Vec<String> = serde_json::from_slice::<Value>(&c.spec)
        .ok()
        .and_then(|spec| spec["process"]["env"].as_array().cloned())
        .map(|env| env.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let (network_settings, host_network, config_network) = super::port::inspect_json(c);
    let mut doc = json!({
        "Id": c.id,
        "Created": rfc3339(c.created_at.as_ref()),
        "Path": c.path,
        "Args": c.args,
        "State": {
            "Status": status,
            "Running": status == "running" || status == "paused",
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": state.oom_killed,
            "Dead": status == "dead",
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": rfc3339(state.started_at.as_ref()),
            "FinishedAt": rfc3339(state.finished_at.as_ref()),
        },
        "Image": c.image_id,
        "ResolvConfPath": c.resolv_conf_path,
        "HostnamePath": c.hostname_path,
        "HostsPath": c.hosts_path,
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name),
        "RestartCount": state.restart_count,
        "Driver": c.snapshotter,
        "Platform": c.platform,
        "Runtime": c.runtime,
        "Config": {
            "Hostname": config.hostname,
            "User": config.user,
            "Tty": config.tty,
            "OpenStdin": config.open_stdin,
            "StdinOnce": config.stdin_once,
            "Env": env,
            "Cmd": if c.config.as_ref().is_some_and(|x| !x.cmd.is_empty()) { json!(config.cmd) } else { Value::Null },
            "Image": c.image,
            "WorkingDir": config.working_dir,
            "Entrypoint": if config.entrypoint_set { json!(config.entrypoint) } else { Value::Null },
            "Labels": config.labels,
            "StopSignal": config.stop_signal,
            "StopTimeout": config.stop_timeout,
        },
        "HostConfig": {
            "NetworkMode": if host.network_mode.is_empty() { "bridge".to_string() } else { host.network_mode.clone() },
            "RestartPolicy": {"Name": if restart.name.is_empty() { "no".to_string() } else { restart.name.clone() }, "MaximumRetryCount": restart.maximum_retry_count},
            "AutoRemove": host.auto_remove,
            "Privileged": host.privileged,
            "ReadonlyRootfs": host.readonly_rootfs,
            "CapAdd": host.cap_add,
            "CapDrop": host.cap_drop,
            "SecurityOpt": host.security_opt,
            "Dns": host.dns,
            "DnsSearch": host.dns_search,
            "ExtraHosts": host.extra_hosts,
            "Runtime": c.runtime,
            "Memory": resources.memory,
            "MemorySwap": resources.memory_swap,
            "NanoCpus": resources.nano_cpus,
            "CpuShares": resources.cpu_shares,
            "CpusetCpus": resources.cpuset_cpus,
            "PidsLimit": if resources.pids_limit > 0 { json!(resources.pids_limit) } else { Value::Null },
            "ShmSize": host.shm_size,
        },
        "Mounts": c.mounts.iter().map(|m| json!({
            "Type": m.r#type, "Name": m.name, "Source": m.source, "Destination": m.destination,
            "Driver": m.driver, "Mode": m.mode, "RW": m.rw, "Propagation": m.propagation,
        })).collect::<Vec<_>>(),
        "NetworkSettings": network_settings,
    });
    for (section, extra) in [("HostConfig", host_network), ("Config", config_network)] {
        if let (Some(target), Value::Object(extra)) = (doc[section].as_object_mut(), extra) {
            target.extend(extra);
        }
    }
    doc
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let mut found = Vec::new();
    let mut missing = false;
    for object in &args.objects {
        match connection.containers().get(GetContainerRequest { id: object.clone(), size: args.size }).await {
            Ok(response) => {
                if let Some(container) = response.into_inner().container {
                    found.push(container_json(&container));
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                eprintln!("Error: No such object: {object}");
                missing = true;
            }
            Err(status) => return Err(anyhow::Error::from(status).into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&found).map_err(anyhow::Error::from)?);
    if missing { Err(Exit { code: GENERAL_FAILURE, error: None }) } else { Ok(()) }
}
