//! `docker commit`: the container's changes become a new top layer on its image.
//!
//! Through the other services' APIs: the snapshot service computes the layer and writes it
//! to the content store; we write the new config and manifest there too, unpack the new
//! layer as a committed snapshot (so the image runs without a pull), and name the image.
//! A lease protects the new blobs from garbage collection until the image references them.

use berth_common::config::ServiceName;
use berth_common::{Namespace, namespace};
use berth_proto::containers::v1::{CommitContainerRequest, Container, ContainerStatus};
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::content::v1::{WriteAction, WriteContentRequest};
use berth_proto::images::v1::images_client::ImagesClient;
use berth_proto::images::v1::{CreateImageRequest, CreateLeaseRequest, DeleteLeaseRequest, Image, InspectImageRequest};
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::{ApplyHeader, ApplyRequest, DiffRequest, apply_request};
use berth_proto::types::v1::Descriptor;
use serde_json::{Value, json};
use sha2::Digest;
use tonic::metadata::MetadataValue;

use crate::error::{Error, Result};
use crate::supervisor::Supervisor;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn upstream(service: &str) -> impl FnOnce(tonic::Status) -> Error + '_ {
    move |status| Error::Upstream(berth_common::error::from_dependency(service, status))
}

/// A request in `namespace` carrying `lease`.
fn leased<T>(namespace: &Namespace, lease: &str, message: T) -> tonic::Request<T> {
    let mut request = namespace::request(namespace, message);
    if let Ok(value) = MetadataValue::try_from(lease) {
        request.metadata_mut().insert(berth_proto::LEASE_METADATA_KEY, value);
    }
    request
}

/// The OCI chain id of `diff_id` on top of `parent` (empty for a base layer).
fn chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        return diff_id.to_string();
    }
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("{parent} {diff_id}").as_bytes())))
}

async fn write_blob(
    content: &mut ContentClient<berth_common::client::BerthChannel>,
    namespace: &Namespace,
    lease: &str,
    bytes: Vec<u8>,
) -> Result<String> {
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    let message = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: format!("commit-{digest}"),
        total: bytes.len() as i64,
        expected: digest.clone(),
        offset: 0,
        data: bytes,
        labels: Default::default(),
    };
    let outbound = tokio_stream::iter(vec![message]);
    let mut responses =
        content.write(leased(namespace, lease, outbound)).await.map_err(upstream("content"))?.into_inner();
    while responses.message().await.map_err(upstream("content"))?.is_some() {}
    Ok(digest)
}

/// The new image config: the image's, with the container's settings the user chose at
/// create time, the changes, a history entry and the new layer's diff_id.
fn new_config(
    image_config: &[u8],
    container: &Container,
    request: &CommitContainerRequest,
    diff_id: &str,
) -> Result<Value> {
    let mut config: Value = serde_json::from_slice(image_config)
        .map_err(|e| Error::FailedPrecondition(format!("the image config is unreadable: {e}")))?;
    let settings = container.config.clone().unwrap_or_default();
    let runtime = &mut config["config"];
    if !runtime.is_object() {
        *runtime = json!({});
    }
    if !settings.cmd.is_empty() {
        runtime["Cmd"] = json!(settings.cmd);
    }
    if settings.entrypoint_set {
        runtime["Entrypoint"] = json!(settings.entrypoint);
    }
    if !settings.working_dir.is_empty() {
        runtime["WorkingDir"] = json!(settings.working_dir);
    }
    if !settings.user.is_empty() {
        runtime["User"] = json!(settings.user);
    }
    if !settings.env.is_empty() {
        let mut env: Vec<String> = runtime["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for entry in &settings.env {
            let key = entry.split_once('=').map(|(k, _)| k).unwrap_or(entry);
            env.retain(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) != key);
            env.push(entry.clone());
        }
        runtime["Env"] = json!(env);
    }
    berth_common::image_changes::apply_all(runtime, &request.changes)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;

    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    config["created"] = json!(now);
    if !request.author.is_empty() {
        config["author"] = json!(request.author);
    }
    let command = std::iter::once(container.path.as_str())
        .chain(container.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let mut entry = json!({"created": now, "created_by": command});
    if !request.author.is_empty() {
        entry["author"] = json!(request.author);
    }
    if !request.comment.is_empty() {
        entry["comment"] = json!(request.comment);
    }
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = json!([entry]),
    }
    match config["rootfs"]["diff_ids"].as_array_mut() {
        Some(diff_ids) => diff_ids.push(json!(diff_id)),
        None => config["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]}),
    }
    Ok(config)
}

pub async fn commit(supervisor: &Supervisor, namespace: &Namespace, request: CommitContainerRequest) -> Result<String> {
    let container = supervisor.store.resolve(namespace, &request.id)?;
    let status = container.state.as_ref().map(|s| s.status).unwrap_or_default();
    let pause = request.pause && status == ContainerStatus::Running as i32;
    if pause {
        supervisor.pause(namespace, &container).await?;
    }
    let result = commit_inner(supervisor, namespace, &container, &request).await;
    if pause && let Err(err) = supervisor.resume(namespace, &container).await {
        tracing::warn!(container = %container.id, error = %err, "could not unpause after commit");
    }
    result
}

async fn commit_inner(
    supervisor: &Supervisor,
    namespace: &Namespace,
    container: &Container,
    request: &CommitContainerRequest,
) -> Result<String> {
    let channel = |service| supervisor.ctx.channel(service).map_err(|e| Error::FailedPrecondition(e.to_string()));
    let mut images = ImagesClient::new(channel(ServiceName::Images)?).max_decoding_message_size(64 * 1024 * 1024);
    let mut snapshots = SnapshotsClient::new(channel(ServiceName::Snapshots)?);
    let mut content = ContentClient::new(channel(ServiceName::Images)?);

    let lease = images
        .create_lease(namespace::request(
            namespace,
            CreateLeaseRequest {
                id: String::new(),
                ttl_seconds: 3600,
                labels: [(berth_proto::EPHEMERAL_LEASE_LABEL.to_string(), "true".to_string())].into(),
            },
        ))
        .await
        .map_err(upstream("images"))?
        .into_inner()
        .id;
    let result = async {
        let image = images
            .inspect(namespace::request(
                namespace,
                InspectImageRequest { reference: container.image_id.clone(), platform: None },
            ))
            .await
            .map_err(upstream("images"))?
            .into_inner();
        let diff_request = DiffRequest { key: container.snapshot_key.clone(), ..Default::default() };
        let diff =
            snapshots.diff(leased(namespace, &lease, diff_request)).await.map_err(upstream("snapshots"))?.into_inner();
        let layer =
            diff.diff.ok_or_else(|| Error::FailedPrecondition("the snapshot service returned no layer".into()))?;

        let config = new_config(&image.config_json, container, request, &diff.diff_id)?;
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let config_size = config_bytes.len() as i64;
        let config_digest = write_blob(&mut content, namespace, &lease, config_bytes).await?;

        let mut layers: Vec<Value> = image
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
            .collect();
        layers.push(json!({"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let manifest_size = manifest_bytes.len() as i64;
        let manifest_digest = write_blob(&mut content, namespace, &lease, manifest_bytes).await?;

        // Unpack the new layer so the image runs at once.
        let parent = image.chain_ids.last().cloned().unwrap_or_default();
        let header = ApplyHeader {
            name: chain_id(&parent, &diff.diff_id),
            parent,
            media_type: layer.media_type.clone(),
            diff_id: diff.diff_id.clone(),
            content_digest: layer.digest.clone(),
            labels: Default::default(),
        };
        let apply = tokio_stream::iter(vec![ApplyRequest { payload: Some(apply_request::Payload::Header(header)) }]);
        snapshots.apply(leased(namespace, &lease, apply)).await.map_err(upstream("snapshots"))?;

        // Without a name the image is untagged (`<none>`), as Docker keeps dangling ones.
        let name = request.reference.clone();
        let target = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: manifest_digest,
            size: manifest_size,
            ..Default::default()
        };
        let record =
            Image { name, target: Some(target), labels: Default::default(), created_at: None, updated_at: None };
        images
            .create(namespace::request(namespace, CreateImageRequest { image: Some(record) }))
            .await
            .map_err(upstream("images"))?;
        Ok(config_digest)
    }
    .await;
    let _ = images.delete_lease(namespace::request(namespace, DeleteLeaseRequest { id: lease })).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        assert_eq!(chain_id("", "sha256:aa"), "sha256:aa");
        let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"sha256:aa sha256:bb")));
        assert_eq!(chain_id("sha256:aa", "sha256:bb"), expected);
    }

    #[test]
    fn config_gets_layer_history_and_changes() {
        let image = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "base"}]
        }))
        .unwrap();
        let container = Container {
            path: "touch".into(),
            args: vec!["/x".into()],
            config: Some(berth_proto::containers::v1::ContainerConfig {
                env: vec!["A=1".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = CommitContainerRequest {
            comment: "why".into(),
            changes: vec!["CMD [\"ls\"]".into()],
            ..Default::default()
        };
        let config = new_config(&image, &container, &request, "sha256:bb").unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(config["history"][1]["created_by"], "touch /x");
        assert_eq!(config["history"][1]["comment"], "why");
        assert_eq!(config["config"]["Cmd"], json!(["ls"]));
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin", "A=1"]));
    }
}
