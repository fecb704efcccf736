//! Volumes: named and anonymous directories under `<data-root>/volumes/<namespace>/<name>/_data`
//! (the local driver), recorded in the `volumes` tree of `containers.db`, and the mounts a
//! container gets from `-v`, `--mount`, `--tmpfs` and the image's `VOLUME`s.
//!
//! Which containers use a volume is not stored: it is read from the container records
//! (their `mounts`), so it cannot drift from them.

pub mod mounts;
pub mod seed;

use std::path::{Path, PathBuf};

use berth_common::Namespace;
use berth_common::store::{ns_key, ns_prefix};
use berth_proto::containers::v1::{Container, HostConfig, MountPoint, Volume};
use berth_proto::types::v1::Filter;
use oci_spec::runtime::{Mount, MountBuilder};
use prost::Message;

use crate::error::{Error, Result};
use crate::store::Store;
use mounts::{Kind, Request};

pub const LOCAL_DRIVER: &str = "local";
/// Label Docker puts on volumes made for one container.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

pub struct Volumes {
    db: sled::Db,
    tree: sled::Tree,
    containers: Store,
    root: PathBuf,
}

/// A new container's mounts: what inspect shows, what the spec mounts, which volumes
/// were created for it (removed again if the create fails), which need seeding.
#[derive(Default)]
pub struct Prepared {
    pub points: Vec<MountPoint>,
    pub spec_mounts: Vec<Mount>,
    pub created: Vec<String>,
    /// (container path, volume directory) for volumes to fill from the image.
    pub seeds: Vec<(String, PathBuf)>,
}

fn oci_mount(destination: &str, kind: &str, source: &str, options: Vec<String>) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("mount {destination}: {e}")))
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).map(|mut entries| entries.next().is_none()).unwrap_or(false)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Volumes {
    pub fn new(containers: Store, data_root: &Path) -> sled::Result<Volumes> {
        let db = containers.db().clone();
        let tree = db.open_tree("volumes")?;
        Ok(Volumes { db, tree, containers, root: data_root.join("volumes") })
    }

    fn dir(&self, namespace: &Namespace, name: &str) -> PathBuf {
        self.root.join(namespace.as_str()).join(name)
    }

    fn with_users(&self, namespace: &Namespace, mut volume: Volume) -> Result<Volume> {
        volume.used_by = self.users(namespace, &volume.name)?;
        Ok(volume)
    }

    /// Ids of the containers (any state) that mount the volume.
    pub fn users(&self, namespace: &Namespace, name: &str) -> Result<Vec<String>> {
        Ok(self
            .containers
            .list(namespace)?
            .into_iter()
            .filter(|c| c.mounts.iter().any(|m| m.r#type == "volume" && m.name == name))
            .map(|c| c.id)
            .collect())
    }

    pub fn get(&self, namespace: &Namespace, name: &str) -> Result<Volume> {
        match self.tree.get(ns_key(namespace, name))? {
            Some(bytes) => self.with_users(namespace, Volume::decode(bytes.as_ref())?),
            None => Err(Error::VolumeNotFound(name.to_string())),
        }
    }

    pub fn list(&self, namespace: &Namespace, filters: &[Filter]) -> Result<Vec<Volume>> {
        for filter in filters {
            if !matches!(filter.key.as_str(), "name" | "label" | "dangling" | "driver") {
                return Err(Error::InvalidArgument(format!(
                    "invalid filter '{}': supported filters are name, label, dangling, driver",
                    filter.key
                )));
            }
        }
        let mut volumes = Vec::new();
        for value in self.tree.scan_prefix(ns_prefix(namespace)).values() {
            let volume = self.with_users(namespace, Volume::decode(value?.as_ref())?)?;
            if filters.iter().all(|f| f.values.iter().any(|v| matches_filter(&volume, &f.key, v))) {
                volumes.push(volume);
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Creates a volume, or returns the existing one of that name (as Docker does).
    pub async fn create(
        &self,
        namespace: &Namespace,
        name: &str,
        driver: &str,
        labels: std::collections::HashMap<String, String>,
        options: &std::collections::HashMap<String, String>,
    ) -> Result<(Volume, bool)> {
        if !matches!(driver, "" | LOCAL_DRIVER) {
            return Err(Error::InvalidArgument(format!("volume driver {driver:?} is not supported: only \"local\"")));
        }
        if !options.is_empty() {
            return Err(Error::InvalidArgument(
                "volume options (-o) are not supported yet: the local driver here only makes directories".into(),
            ));
        }
        let (name, anonymous) =
            if name.is_empty() { (crate::names::new_id(), true) } else { (name.to_string(), false) };
        if !mounts::valid_volume_name(&name) {
            return Err(Error::InvalidArgument(format!(
                "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            )));
        }
        if let Some(bytes) = self.tree.get(ns_key(namespace, &name))? {
            return Ok((self.with_users(namespace, Volume::decode(bytes.as_ref())?)?, false));
        }
        let data = self.dir(namespace, &name).join("_data");
        std::fs::create_dir_all(&data).map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
        let mut labels = labels;
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
        }
        let volume = Volume {
            name: name.clone(),
            driver: LOCAL_DRIVER.into(),
            mountpoint: data.display().to_string(),
            labels,
            options: Default::default(),
            created_at: Some(berth_common::time::now()),
            scope: "local".into(),
            used_by: Vec::new(),
            anonymous,
            size: 0,
        };
        self.tree.insert(ns_key(namespace, &name), volume.encode_to_vec())?;
        self.db.flush_async().await?;
        Ok((volume, true))
    }

    /// Removes a volume no container uses (with `force`: none that runs).
    pub async fn remove(&self, namespace: &Namespace, name: &str, force: bool) -> Result<()> {
        let volume = match self.get(namespace, name) {
            Ok(volume) => volume,
            Err(Error::VolumeNotFound(_)) if force => return Ok(()),
            Err(err) => return Err(err),
        };
        let blocking: Vec<String> = if force {
            volume
                .used_by
                .iter()
                .filter(|id| {
                    self.containers.get(namespace, id).ok().flatten().is_some_and(|c| {
                        crate::supervisor::is_running(c.state.as_ref().map(|s| s.status).unwrap_or_default())
                    })
                })
                .cloned()
                .collect()
        } else {
            volume.used_by.clone()
        };
        if !blocking.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "remove {name}: volume is in use - [{}]",
                blocking.join(", ")
            )));
        }
        self.delete(namespace, name).await
    }

    async fn delete(&self, namespace: &Namespace, name: &str) -> Result<()> {
        let dir = self.dir(namespace, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(format!("removing {}", dir.display()), err)),
        }
        self.tree.remove(ns_key(namespace, name))?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Removes unused volumes: anonymous ones, or all with `all`. Returns the names and
    /// the bytes freed.
    pub async fn prune(&self, namespace: &Namespace, filters: &[Filter], all: bool) -> Result<(Vec<String>, u64)> {
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for volume in self.list(namespace, filters)? {
            if !volume.used_by.is_empty() || !(all || volume.anonymous) {
                continue;
            }
            let size = dir_size(Path::new(&volume.mountpoint));
            match self.delete(namespace, &volume.name).await {
                Ok(()) => {
                    reclaimed += size;
                    deleted.push(volume.name);
                }
                Err(err) => tracing::warn!(volume = %volume.name, error = %err, "prune could not remove"),
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Resolves a new container's mounts, creating the volumes it needs.
    pub async fn prepare(
        &self,
        namespace: &Namespace,
        host: &HostConfig,
        image_volumes: &[String],
    ) -> Result<Prepared> {
        let requests = mounts::collect(host, image_volumes)?;
        let mut prepared = Prepared::default();
        for request in requests {
            if let Err(err) = self.prepare_one(namespace, &request, &mut prepared).await {
                self.rollback(namespace, &prepared).await;
                return Err(err);
            }
        }
        Ok(prepared)
    }

    async fn prepare_one(&self, namespace: &Namespace, request: &Request, prepared: &mut Prepared) -> Result<()> {
        let access = if request.read_only { "ro" } else { "rw" }.to_string();
        match &request.kind {
            Kind::Bind { source, create_missing } => {
                if !source.exists() {
                    if !create_missing {
                        return Err(Error::InvalidArgument(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            source.display()
                        )));
                    }
                    std::fs::create_dir_all(source)
                        .map_err(|e| Error::io(format!("creating bind source {}", source.display()), e))?;
                }
                let source_text = source.display().to_string();
                let options = vec!["rbind".to_string(), access, request.propagation.clone()];
                prepared.spec_mounts.push(oci_mount(&request.target, "bind", &source_text, options)?);
                prepared.points.push(MountPoint {
                    r#type: "bind".into(),
                    source: source_text,
                    destination: request.target.clone(),
                    mode: request.mode.clone(),
                    rw: !request.read_only,
                    propagation: request.propagation.clone(),
                    ..Default::default()
                });
            }
            Kind::Volume { name, nocopy } => {
                let (volume, created) = self
                    .create(
                        namespace,
                        name.as_deref().unwrap_or_default(),
                        LOCAL_DRIVER,
                        request.labels.clone(),
                        &Default::default(),
                    )
                    .await?;
                if created {
                    prepared.created.push(volume.name.clone());
                }
                let data = PathBuf::from(&volume.mountpoint);
                if !nocopy && is_empty_dir(&data) {
                    prepared.seeds.push((request.target.clone(), data.clone()));
                }
                let options = vec!["rbind".to_string(), access, "rprivate".to_string()];
                prepared.spec_mounts.push(oci_mount(&request.target, "bind", &volume.mountpoint, options)?);
                prepared.points.push(MountPoint {
                    r#type: "volume".into(),
                    name: volume.name,
                    source: volume.mountpoint,
                    destination: request.target.clone(),
                    driver: LOCAL_DRIVER.into(),
                    mode: request.mode.clone(),
                    rw: !request.read_only,
                    propagation: String::new(),
                });
            }
            Kind::Tmpfs { options } => {
                let options = mounts::tmpfs_options(options, request.read_only);
                prepared.spec_mounts.push(oci_mount(&request.target, "tmpfs", "tmpfs", options)?);
                prepared.points.push(MountPoint {
                    r#type: "tmpfs".into(),
                    destination: request.target.clone(),
                    rw: !request.read_only,
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    /// Removes the volumes a failed create made.
    pub async fn rollback(&self, namespace: &Namespace, prepared: &Prepared) {
        for name in &prepared.created {
            let _ = self.delete(namespace, name).await;
        }
    }

    /// After a container is removed: its anonymous volumes go too when asked (`rm -v`,
    /// `--rm`), unless another container still uses them.
    pub async fn release(&self, namespace: &Namespace, container: &Container, remove_anonymous: bool) {
        if !remove_anonymous {
            return;
        }
        for point in container.mounts.iter().filter(|m| m.r#type == "volume") {
            let Ok(volume) = self.get(namespace, &point.name) else { continue };
            if !volume.anonymous || volume.used_by.iter().any(|id| *id != container.id) {
                continue;
            }
            if let Err(err) = self.delete(namespace, &volume.name).await {
                tracing::warn!(volume = %volume.name, error = %err, "removing an anonymous volume");
            }
        }
    }
}

/// Copies the image's content at each volume's path into the still-empty volumes, with
/// the container's rootfs mounted on a scratch directory. Blocking: run it off the runtime.
pub fn seed(
    seeds: &[(String, PathBuf)],
    rootfs_mounts: &[berth_proto::types::v1::Mount],
    scratch: &Path,
) -> Result<()> {
    if seeds.is_empty() {
        return Ok(());
    }
    let rootfs = seed::MountedRootfs::mount(rootfs_mounts, scratch)
        .map_err(|e| Error::io("mounting the image to copy its content into a volume", e))?;
    for (target, data) in seeds {
        let Some(source) = seed::resolve_in_root(&rootfs.path, target) else { continue };
        if !source.is_dir() || !is_empty_dir(data) {
            continue;
        }
        seed::copy_tree(&source, data)
            .and_then(|()| seed::copy_root_attributes(&source, data))
            .map_err(|e| Error::io(format!("copying the image's {target} into its volume"), e))?;
    }
    Ok(())
}

fn matches_filter(volume: &Volume, key: &str, value: &str) -> bool {
    match key {
        "name" => volume.name.contains(value),
        "driver" => volume.driver == value,
        "dangling" => (value == "true" || value == "1") == volume.used_by.is_empty(),
        "label" => match value.split_once('=') {
            Some((k, v)) => volume.labels.get(k).is_some_and(|x| x == v),
            None => volume.labels.contains_key(value),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn volumes_are_created_once_listed_and_removed_unless_used() {
        let dir = tempfile::tempdir().unwrap();
        let containers = Store::open(dir.path()).unwrap();
        let volumes = Volumes::new(containers.clone(), dir.path()).unwrap();
        let ns = Namespace::default_namespace();
        let none = Default::default();
        let (data, created) = volumes.create(&ns, "data", "", Default::default(), &none).await.unwrap();
        assert!(created && !data.anonymous);
        assert_eq!(data.mountpoint, dir.path().join("volumes/default/data/_data").display().to_string());
        assert!(Path::new(&data.mountpoint).is_dir());
        let (again, created) = volumes.create(&ns, "data", "local", Default::default(), &none).await.unwrap();
        assert!(!created && again.name == "data");
        let (anonymous, _) = volumes.create(&ns, "", "", Default::default(), &none).await.unwrap();
        assert!(anonymous.anonymous && anonymous.name.len() == 64);
        assert!(volumes.create(&ns, "x", "nfs", Default::default(), &none).await.is_err());
        assert!(volumes.create(&ns, "bad/name", "", Default::default(), &none).await.is_err());

        let user = Container {
            id: "c1".into(),
            name: "user".into(),
            mounts: vec![MountPoint { r#type: "volume".into(), name: "data".into(), ..Default::default() }],
            ..Default::default()
        };
        containers.insert_new(&ns, &user).await.unwrap();
        assert_eq!(volumes.get(&ns, "data").unwrap().used_by, ["c1"]);
        let err = volumes.remove(&ns, "data", false).await.unwrap_err();
        assert!(err.to_string().contains("volume is in use - [c1]"), "{err}");
        // Forced removal is fine while the user is not running.
        let dangling = Filter { key: "dangling".into(), values: vec!["true".into()] };
        assert_eq!(volumes.list(&ns, std::slice::from_ref(&dangling)).unwrap().len(), 1);

        let (deleted, _) = volumes.prune(&ns, &[], false).await.unwrap();
        assert_eq!(deleted, std::slice::from_ref(&anonymous.name));
        assert!(volumes.get(&ns, &anonymous.name).is_err());
        volumes.remove(&ns, "data", true).await.unwrap();
        assert!(matches!(volumes.get(&ns, "data"), Err(Error::VolumeNotFound(_))));
        assert!(!dir.path().join("volumes/default/data").exists());
    }
}
