//! Server-side create from an image: resolve the image, write the container's /etc files,
//! generate the OCI spec, prepare the rootfs snapshot, store the record. A failure at any
//! step undoes the earlier ones, so no half-made container, snapshot or file is left.

use berth_common::config::ServiceName;
use berth_common::{Namespace, namespace};
use berth_proto::containers::v1::{Container, ContainerState, ContainerStatus, CreateContainerRequest};
use berth_proto::events::v1::{ContainerCreate, event::Payload};
use berth_proto::images::v1::InspectImageRequest;
use berth_proto::images::v1::images_client::ImagesClient;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::{MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest};

use crate::error::{Error, Result};
use crate::supervisor::Supervisor;

/// The snapshot label that ties a container's rootfs to it (for GC and humans).
pub const SNAPSHOT_CONTAINER_LABEL: &str = "berth.container";

pub async fn create(
    supervisor: &Supervisor,
    namespace: &Namespace,
    request: CreateContainerRequest,
) -> Result<(Container, Vec<String>)> {
    let mut config = request.config.unwrap_or_default();
    let mut host = request.host_config.unwrap_or_default();
    if config.image.is_empty() {
        return Err(Error::InvalidArgument("an image is required".into()));
    }
    let name = if request.name.is_empty() {
        unused_random_name(supervisor, namespace)?
    } else {
        crate::names::validate(&request.name)?
    };
    if let Ok(existing) = supervisor.store.resolve(namespace, &name)
        && existing.name == name
    {
        return Err(Error::NameInUse { name, id: existing.id });
    }
    let runtime = if host.runtime.is_empty() { supervisor.runtimes.default.clone() } else { host.runtime.clone() };
    supervisor.runtimes.get(&runtime).map_err(Error::FailedPrecondition)?;

    let channel = |service| supervisor.ctx.channel(service).map_err(|e| Error::FailedPrecondition(e.to_string()));
    let image = ImagesClient::new(channel(ServiceName::Images)?)
        .inspect(namespace::request(
            namespace,
            InspectImageRequest { reference: config.image.clone(), platform: request.platform },
        ))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => {
                Error::Upstream(tonic::Status::not_found(format!("No such image: {}", config.image)))
            }
            _ => Error::Upstream(berth_common::error::from_dependency("images", status)),
        })?
        .into_inner();
    let image_config = image.config.clone().unwrap_or_default();
    let parent = image.chain_ids.last().cloned().unwrap_or_default();

    let id = crate::names::new_id();
    // Like Docker, the container's config lists the image's exposed ports and volumes too.
    config.exposed_ports = crate::network::ports::normalize_exposed(
        image_config.exposed_ports.iter().chain(&config.exposed_ports).cloned(),
    )?;
    for volume in &image_config.volumes {
        if !config.volumes.contains(volume) {
            config.volumes.push(volume.clone());
        }
    }
    let network = supervisor.network.plan(namespace, &id, &host, &request.endpoints_config)?;
    host.network_mode = network.network_mode.clone();
    let hostname = match (&network.hostname, config.hostname.is_empty()) {
        (_, false) => config.hostname.clone(),
        (Some(host_name), true) => host_name.clone(),
        (None, true) => id[..12].to_string(),
    };
    let volumes = supervisor.volumes.prepare(namespace, &host, &config.volumes).await?;
    let container_dir = supervisor.container_dir(namespace, &id);
    let cleanup_files = async || {
        let _ = std::fs::remove_dir_all(&container_dir);
        supervisor.volumes.rollback(namespace, &volumes).await;
    };
    let etc = match crate::etcfiles::write(&container_dir, &hostname, None, &host) {
        Ok(etc) => etc,
        Err(err) => {
            cleanup_files().await;
            return Err(Error::io(format!("writing {}", container_dir.display()), err));
        }
    };
    // A user mount over one of these files wins.
    let etc_files: Vec<(&str, &std::path::Path)> = [
        ("/etc/hostname", etc.hostname.as_path()),
        ("/etc/hosts", etc.hosts.as_path()),
        ("/etc/resolv.conf", etc.resolv_conf.as_path()),
    ]
    .into_iter()
    .filter(|(target, _)| !volumes.points.iter().any(|p| p.destination == *target))
    .collect();
    let generated = crate::spec::generate(&crate::spec::SpecInputs {
        id: &id,
        namespace: namespace.as_str(),
        config: &config,
        host: &host,
        image: &image_config,
        hostname: &hostname,
        etc_files: &etc_files,
        network_namespace: network.netns.as_deref(),
        mounts: &volumes.spec_mounts,
    });
    let mut generated = match generated {
        Ok(generated) => generated,
        Err(err) => {
            cleanup_files().await;
            return Err(err.into());
        }
    };
    generated.warnings.extend(network.warnings.iter().cloned());
    let spec_json = serde_json::to_vec(&generated.spec).map_err(|e| Error::InvalidArgument(e.to_string()));
    let spec_json = match spec_json {
        Ok(json) => json,
        Err(err) => {
            cleanup_files().await;
            return Err(err);
        }
    };

    let mut snapshots = SnapshotsClient::new(channel(ServiceName::Snapshots)?);
    let prepare = PrepareSnapshotRequest {
        key: id.clone(),
        parent,
        labels: [(SNAPSHOT_CONTAINER_LABEL.to_string(), id.clone())].into_iter().collect(),
    };
    if let Err(status) = snapshots.prepare(namespace::request(namespace, prepare)).await {
        cleanup_files().await;
        return Err(Error::Upstream(berth_common::error::from_dependency("snapshots", status)));
    }
    if let Err(err) = seed_volumes(supervisor, namespace, &id, &volumes.seeds, &mut snapshots).await {
        let _ = snapshots.remove(namespace::request(namespace, RemoveSnapshotRequest { key: id.clone() })).await;
        cleanup_files().await;
        return Err(err);
    }

    let spec_value = serde_json::to_value(&generated.spec).unwrap_or_default();
    let args: Vec<String> = spec_value["process"]["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let now = berth_common::time::now();
    let container = Container {
        id: id.clone(),
        name: name.clone(),
        image: config.image.clone(),
        image_id: image.id.clone(),
        snapshotter: image.snapshotter.clone(),
        snapshot_key: id.clone(),
        runtime,
        labels: config.labels.clone(),
        created_at: Some(now),
        updated_at: Some(now),
        spec: spec_json,
        state: Some(ContainerState { status: ContainerStatus::Created as i32, ..Default::default() }),
        log_path: supervisor.log_path(namespace, &id).display().to_string(),
        path: args.first().cloned().unwrap_or_default(),
        args: args.iter().skip(1).cloned().collect(),
        resolv_conf_path: etc.resolv_conf.display().to_string(),
        hostname_path: etc.hostname.display().to_string(),
        hosts_path: etc.hosts.display().to_string(),
        platform: "linux".into(),
        network_settings: Some(network.settings),
        mounts: volumes.points.clone(),
        config: Some(config),
        host_config: Some(host),
        ..Default::default()
    };
    if let Err(err) = supervisor.store.insert_new(namespace, &container).await {
        let _ = snapshots.remove(namespace::request(namespace, RemoveSnapshotRequest { key: id.clone() })).await;
        cleanup_files().await;
        return Err(err);
    }
    let payload = Payload::ContainerCreate(ContainerCreate {
        id: container.id.clone(),
        name: container.name.clone(),
        image: container.image.clone(),
        runtime: container.runtime.clone(),
    });
    supervisor.publish(namespace, "/containers/create", "create", &container, payload).await;
    Ok((container, generated.warnings))
}

/// Fills new, empty volumes from the image (Docker's copy-up on first use), reading the
/// image through the container's freshly prepared rootfs snapshot.
async fn seed_volumes(
    supervisor: &Supervisor,
    namespace: &Namespace,
    id: &str,
    seeds: &[(String, std::path::PathBuf)],
    snapshots: &mut SnapshotsClient<berth_common::client::BerthChannel>,
) -> Result<()> {
    if seeds.is_empty() {
        return Ok(());
    }
    let mounts = snapshots
        .mounts(namespace::request(namespace, MountsRequest { key: id.to_string() }))
        .await
        .map_err(|s| Error::Upstream(berth_common::error::from_dependency("snapshots", s)))?
        .into_inner()
        .mounts;
    let scratch = supervisor.paths.exec_root.join("seed").join(id);
    let seeds = seeds.to_vec();
    tokio::task::spawn_blocking(move || crate::volumes::seed(&seeds, &mounts, &scratch))
        .await
        .map_err(|e| Error::FailedPrecondition(format!("copying image content into volumes: {e}")))?
}

fn unused_random_name(supervisor: &Supervisor, namespace: &Namespace) -> Result<String> {
    for _ in 0..32 {
        let name = crate::names::random_name();
        if supervisor.store.resolve(namespace, &name).map(|c| c.name != name).unwrap_or(true) {
            return Ok(name);
        }
    }
    // Docker appends a digit when the space gets crowded.
    Ok(format!("{}{}", crate::names::random_name(), rand::random::<u8>() % 10))
}
