//! Image records as Docker shows them: summaries, inspect details, tag, delete, prune.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::Namespace;
use berth_common::config::ServiceName;
use berth_proto::containers::v1::ListContainersRequest;
use berth_proto::containers::v1::containers_client::ContainersClient;
use berth_proto::images::v1::{ImageConfig as ImageConfigProto, ImageSummary, InspectImageResponse};
use berth_proto::types::v1::{Descriptor, Filter};
use chrono::Utc;

use crate::db::{ImageRecord, PlatformRecord};
use crate::error::{Error, Result};
use crate::manifest::{self, string_list};
use crate::reference::{ImageRef, familiar, split_name};
use crate::resolve::{Lookup, Resolved};
use crate::state::State;

/// Untagged images (import or commit without a name) are stored as "<none>@<manifest
/// digest>": not a valid reference, so no name a user gives can collide with it.
const UNTAGGED: &str = "<none>";

pub fn untagged_name(digest: &str) -> String {
    format!("{UNTAGGED}@{digest}")
}

pub fn is_untagged_name(name: &str) -> bool {
    name.strip_prefix(UNTAGGED).is_some_and(|rest| rest.starts_with('@'))
}

/// "busybox:latest" for a tag record, None for a digest record.
pub fn repo_tag(name: &str) -> Option<String> {
    let (repository, tag, _) = split_name(name);
    tag.map(|tag| format!("{}:{tag}", familiar(&repository)))
}

/// "busybox@sha256:..." for a record (the digest of what it points at).
pub fn repo_digest(record: &ImageRecord) -> String {
    let (repository, _, _) = split_name(&record.name);
    format!("{}@{}", familiar(&repository), record.target.digest)
}

/// Docker-style glob: `*` matches within one path segment... close enough: `*` matches
/// any run of characters except '/', `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn inner(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => inner(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && inner(p, &t[1..])),
            (Some(b'?'), Some(_)) => inner(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => inner(&p[1..], &t[1..]),
            _ => false,
        }
    }
    inner(pattern.as_bytes(), text.as_bytes())
}

/// `--filter reference=PATTERN`: matches the familiar repository, or repository:tag.
pub fn reference_matches(pattern: &str, name: &str) -> bool {
    let (repository, tag, _) = split_name(name);
    let short = familiar(&repository);
    let candidates = [
        short.clone(),
        repository.clone(),
        format!("{short}:{}", tag.clone().unwrap_or_default()),
        format!("{repository}:{}", tag.unwrap_or_default()),
    ];
    candidates.iter().any(|c| glob(pattern, c))
}

fn filter_values<'a>(filters: &'a [Filter], key: &str) -> Vec<&'a str> {
    filters.iter().filter(|f| f.key == key).flat_map(|f| f.values.iter().map(String::as_str)).collect()
}

impl State {
    /// Ids of containers created from `image_id`; `None` when the containers service does
    /// not answer `List` yet (Unimplemented): the image then counts as unused.
    pub async fn containers_using(&self, namespace: &Namespace, image_id: &str) -> Result<Option<Vec<String>>> {
        let channel = self.ctx.channel(ServiceName::Containers).map_err(|e| Error::Internal(e.to_string()))?;
        let mut client = ContainersClient::new(channel);
        let request = ListContainersRequest {
            all: true,
            filters: vec![Filter { key: "ancestor".into(), values: vec![image_id.to_string()] }],
            ..Default::default()
        };
        match client.list(berth_common::namespace::request(namespace, request)).await {
            Ok(response) => Ok(Some(response.into_inner().containers.into_iter().map(|c| c.id).collect())),
            Err(status) if crate::error::is_unimplemented(&status) => Ok(None),
            Err(status) => Err(Error::Dependency(berth_common::error::from_dependency("containers", status))),
        }
    }

    /// Records grouped by image id (records whose content is missing are skipped).
    pub async fn grouped(&self, namespace: &Namespace) -> Result<BTreeMap<String, (Resolved, Vec<ImageRecord>)>> {
        let mut groups: BTreeMap<String, (Resolved, Vec<ImageRecord>)> = BTreeMap::new();
        for record in self.db.images(namespace)? {
            let resolved = match self.resolve(&record, None).await {
                Ok(resolved) => resolved,
                Err(err) => {
                    tracing::debug!(name = %record.name, error = %err, "skipping an image whose content is missing");
                    continue;
                }
            };
            let id = resolved.id().to_string();
            groups.entry(id).or_insert_with(|| (resolved, Vec::new())).1.push(record);
        }
        Ok(groups)
    }

    pub async fn summaries(&self, namespace: &Namespace, filters: &[Filter]) -> Result<Vec<ImageSummary>> {
        let references = filter_values(filters, "reference");
        let dangling = filter_values(filters, "dangling");
        let labels = filter_values(filters, "label");
        let mut out = Vec::new();
        for (id, (resolved, records)) in self.grouped(namespace).await? {
            let mut repo_tags: Vec<String> = records.iter().filter_map(|r| repo_tag(&r.name)).collect();
            let repo_digests: BTreeSet<String> =
                records.iter().filter(|r| !is_untagged_name(&r.name)).map(repo_digest).collect();
            if !references.is_empty() {
                let matching: Vec<&ImageRecord> =
                    records.iter().filter(|r| references.iter().any(|p| reference_matches(p, &r.name))).collect();
                if matching.is_empty() {
                    continue;
                }
                repo_tags = matching.iter().filter_map(|r| repo_tag(&r.name)).collect();
            }
            repo_tags.sort();
            let is_dangling = repo_tags.is_empty();
            if let Some(want) = dangling.first()
                && (*want == "true") != is_dangling
            {
                continue;
            }
            let config_labels: BTreeMap<String, String> =
                resolved.config.parsed.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
            if !labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => config_labels.get(k).is_some_and(|x| x == v),
                None => config_labels.contains_key(*l),
            }) {
                continue;
            }
            let created = manifest::created_time(&resolved.config.parsed).map(berth_common::time::to_proto);
            out.push(ImageSummary {
                id,
                repo_tags,
                repo_digests: repo_digests.into_iter().collect(),
                created,
                size: resolved.size(self),
                labels: config_labels.into_iter().collect(),
                containers: -1,
                dangling: is_dangling,
            });
        }
        // Newest first, like `docker images`.
        out.sort_by(|a, b| {
            let key = |s: &ImageSummary| s.created.as_ref().map(|t| (t.seconds, t.nanos)).unwrap_or_default();
            key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(out)
    }

    pub async fn inspect(
        &self,
        namespace: &Namespace,
        reference: &str,
        platform: Option<&PlatformRecord>,
    ) -> Result<InspectImageResponse> {
        let lookup = self.lookup(namespace, reference).await?;
        let resolved = self.resolve(lookup.first(), platform).await?;
        let records: Vec<ImageRecord> = self
            .grouped(namespace)
            .await?
            .remove(resolved.id())
            .map(|(_, records)| records)
            .unwrap_or_else(|| vec![lookup.first().clone()]);
        let config = &resolved.config.parsed;
        let run = config.config.clone().unwrap_or_default();
        let unpacked = match resolved.chain_ids.last() {
            Some(top) => crate::pull::unpack::snapshot_exists(self, namespace, top.as_str()).await.unwrap_or(false),
            None => true,
        };
        let mut repo_tags: Vec<String> = records.iter().filter_map(|r| repo_tag(&r.name)).collect();
        repo_tags.sort();
        let repo_digests: BTreeSet<String> =
            records.iter().filter(|r| !is_untagged_name(&r.name)).map(repo_digest).collect();
        let descriptor = |d: &manifest::DescriptorJson| Descriptor::from(&d.record());
        Ok(InspectImageResponse {
            id: resolved.id().to_string(),
            repo_tags,
            repo_digests: repo_digests.into_iter().collect(),
            created: manifest::created_time(config).map(berth_common::time::to_proto),
            config: Some(ImageConfigProto {
                user: run.user.clone(),
                env: run.env.clone().unwrap_or_default(),
                entrypoint: string_list(&run.entrypoint),
                cmd: string_list(&run.cmd),
                working_dir: run.working_dir.clone(),
                labels: run.labels.clone().unwrap_or_default().into_iter().collect(),
                exposed_ports: run.exposed_ports.clone().unwrap_or_default().into_keys().collect(),
                volumes: run.volumes.clone().unwrap_or_default().into_keys().collect(),
                stop_signal: run.stop_signal.clone(),
                healthcheck_json: run.healthcheck.as_ref().map(|h| h.to_string()).unwrap_or_default(),
                shell: run.shell.clone().unwrap_or_default(),
                cmd_set: resolved.config.cmd_set,
                entrypoint_set: resolved.config.entrypoint_set,
            }),
            diff_ids: resolved.config.diff_ids.iter().map(|d| d.to_string()).collect(),
            chain_ids: resolved.chain_ids.iter().map(|d| d.to_string()).collect(),
            size: resolved.size(self),
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone().unwrap_or_default(),
            author: config.author.clone(),
            comment: config.comment.clone(),
            docker_version: config.docker_version.clone(),
            target: Some(Descriptor::from(&resolved.record.target)),
            manifest: Some(Descriptor::from(&resolved.manifest)),
            config_descriptor: Some(descriptor(&resolved.config_descriptor)),
            layers: resolved.layers.iter().map(descriptor).collect(),
            name: resolved.record.name.clone(),
            labels: resolved.record.labels.clone().into_iter().collect(),
            config_json: resolved.config.raw.clone(),
            snapshotter: if unpacked { "default".into() } else { String::new() },
            unpacked,
        })
    }

    pub async fn tag(&self, namespace: &Namespace, source: &str, target: &str) -> Result<ImageRecord> {
        let lookup = self.lookup(namespace, source).await?;
        let target_ref = ImageRef::parse(target)?;
        if target_ref.digest.is_some() {
            return Err(Error::InvalidArgument(format!("refusing to create a tag with a digest reference: {target}")));
        }
        let now = Utc::now();
        let source_record = lookup.first();
        let name = target_ref.name();
        let previous = self.db.image(namespace, &name)?;
        let record = ImageRecord {
            name: name.clone(),
            target: source_record.target.clone(),
            labels: source_record.labels.clone(),
            created_at: previous.map(|p| p.created_at).unwrap_or(now),
            updated_at: now,
        };
        self.db.put_image(namespace, &record)?;
        self.db.flush().await?;
        crate::events::tag(self, namespace, &source_record.name, &name).await;
        Ok(record)
    }

    /// `docker rmi`: removing one of several names only untags; removing the last name
    /// (or an id) deletes the image, refused while a container uses it unless forced.
    pub async fn delete(
        &self,
        namespace: &Namespace,
        reference: &str,
        force: bool,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let lookup = self.lookup(namespace, reference).await?;
        let resolved = self.resolve(lookup.first(), None).await?;
        let id = resolved.id().to_string();
        let short = id.trim_start_matches("sha256:").chars().take(12).collect::<String>();
        let siblings: Vec<ImageRecord> =
            self.grouped(namespace).await?.remove(&id).map(|(_, records)| records).unwrap_or_default();
        let to_remove: Vec<ImageRecord> = match &lookup {
            Lookup::Name(record) => {
                if siblings.iter().any(|s| s.name != record.name) {
                    // Other names keep the image: only this one goes.
                    self.db.delete_image(namespace, &record.name)?;
                    self.db.flush().await?;
                    crate::events::delete(self, namespace, &record.name, false).await;
                    return Ok((vec![display_name(record)], Vec::new()));
                }
                vec![(**record).clone()]
            }
            Lookup::Id(records) => {
                let repositories: BTreeSet<String> = records.iter().map(|r| split_name(&r.name).0).collect();
                if repositories.len() > 1 && !force {
                    return Err(Error::Conflict(format!(
                        "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
                    )));
                }
                records.clone()
            }
        };
        if !force
            && let Some(users) = self.containers_using(namespace, &id).await?
            && let Some(container) = users.first()
        {
            let container = container.chars().take(12).collect::<String>();
            let what = match &lookup {
                Lookup::Name(record) => format!("remove repository reference \"{}\"", display_name(record)),
                Lookup::Id(..) => format!("delete {short}"),
            };
            return Err(Error::Conflict(format!(
                "conflict: unable to {what} (must force) - container {container} is using its referenced image {short}"
            )));
        }
        let mut untagged = Vec::new();
        for record in &to_remove {
            self.db.delete_image(namespace, &record.name)?;
            if !is_untagged_name(&record.name) {
                untagged.push(display_name(record));
            }
        }
        self.db.flush().await?;
        for record in &to_remove {
            crate::events::delete(self, namespace, &record.name, true).await;
        }
        Ok((untagged, vec![id]))
    }
}

/// How `rmi` names a record: "busybox:latest" or "busybox@sha256:...".
fn display_name(record: &ImageRecord) -> String {
    repo_tag(&record.name).unwrap_or_else(|| repo_digest(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter_globs_like_docker() {
        assert!(reference_matches("busybox", "docker.io/library/busybox:latest"));
        assert!(reference_matches("busy*", "docker.io/library/busybox:latest"));
        assert!(reference_matches("busybox:lat*", "docker.io/library/busybox:latest"));
        assert!(reference_matches("127.0.0.1:5000/*", "127.0.0.1:5000/busybox:latest"));
        assert!(!reference_matches("alpine", "docker.io/library/busybox:latest"));
        // `*` does not cross a '/': "*" matches only single-segment names.
        assert!(reference_matches("*", "docker.io/library/busybox:latest"));
        assert_eq!(repo_tag("docker.io/library/busybox:1"), Some("busybox:1".into()));
        assert_eq!(repo_tag("docker.io/library/busybox@sha256:00"), None);
    }
}
