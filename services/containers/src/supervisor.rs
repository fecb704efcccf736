//! Task lifecycle: starting containers through a shim, watching for their exits,
//! stopping, killing, removing, restart policies, and reconnecting to live shims after a
//! daemon restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_common::config::ServiceName;
use berth_common::events::Publisher;
use berth_common::task::{self, ExitRecord};
use berth_common::{Namespace, ServiceContext, namespace};
use berth_proto::containers::v1::{Container, ContainerState, ContainerStatus};
use berth_proto::events::v1::{ContainerDelete, Event, TaskDelete, event::Payload};
use berth_proto::shim::v1 as shim;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::{MountsRequest, RemoveSnapshotRequest};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::registry::{Entry, Registry, Shim};
use crate::runtimes::Runtimes;
use crate::store::Store;

pub const MIN_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A container that ran at least this long resets its restart back-off.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);
pub(crate) const SHIM_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Exit status reported when a process's end could not be observed (Docker uses 255 too).
pub const UNKNOWN_EXIT: i32 = 255;

/// How a container's main process ended.
#[derive(Debug, Clone)]
pub struct ExitInfo {
    pub status: i32,
    pub exited_at: DateTime<Utc>,
    pub oom_killed: bool,
    pub reason: String,
}

impl From<ExitRecord> for ExitInfo {
    fn from(r: ExitRecord) -> ExitInfo {
        ExitInfo {
            status: r.exit_status as i32,
            exited_at: r.exited_at,
            oom_killed: r.oom_killed,
            reason: String::new(),
        }
    }
}

/// A container's filesystem opened for `cp` (and the lock that keeps it stopped).
pub struct RootfsAccess {
    pub rootfs: crate::cp::MountedRootfs,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

pub struct Paths {
    pub exec_root: PathBuf,
    pub data_root: PathBuf,
    pub log_dir: PathBuf,
}

pub struct Supervisor {
    pub ctx: ServiceContext,
    pub store: Store,
    pub registry: Registry,
    pub publisher: Publisher,
    pub runtimes: Runtimes,
    pub paths: Paths,
    pub shim_binary: PathBuf,
    pub execs: crate::exec::Execs,
    pub network: crate::network::Manager,
    pub volumes: crate::volumes::Volumes,
}

pub fn is_running(status: i32) -> bool {
    status == ContainerStatus::Running as i32 || status == ContainerStatus::Paused as i32
}

/// Kill-then-remove rounds `rm -f` tries while other clients keep starting the container.
const REMOVE_ATTEMPTS: usize = 5;

impl Supervisor {
    pub fn entry(&self, namespace: &Namespace, container: &Container) -> Arc<Entry> {
        self.registry.entry(namespace, &container.id, &container.state.clone().unwrap_or_default())
    }

    pub fn task_dir(&self, namespace: &Namespace, id: &str) -> PathBuf {
        task::task_dir(&self.paths.exec_root, namespace.as_str(), id)
    }

    pub fn shim_socket(&self, namespace: &Namespace, id: &str) -> PathBuf {
        task::shim_socket(&self.paths.exec_root, namespace.as_str(), id)
    }

    pub fn container_dir(&self, namespace: &Namespace, id: &str) -> PathBuf {
        self.paths.data_root.join("containers").join(namespace.as_str()).join(id)
    }

    pub fn log_path(&self, namespace: &Namespace, id: &str) -> PathBuf {
        self.paths.log_dir.join(namespace.as_str()).join(format!("{id}.log"))
    }

    fn runtime_root(&self, namespace: &Namespace) -> PathBuf {
        self.paths.exec_root.join("runc").join(namespace.as_str())
    }

    pub(crate) fn snapshots(&self) -> Result<SnapshotsClient<berth_common::client::BerthChannel>> {
        let channel = self.ctx.channel(ServiceName::Snapshots).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        Ok(SnapshotsClient::new(channel))
    }

    pub async fn publish(
        &self,
        namespace: &Namespace,
        topic: &str,
        action: &str,
        container: &Container,
        payload: Payload,
    ) {
        let mut attributes = std::collections::HashMap::new();
        attributes.insert("name".to_string(), container.name.clone());
        attributes.insert("image".to_string(), container.image.clone());
        for (key, value) in &container.labels {
            attributes.insert(key.clone(), value.clone());
        }
        let event = Event {
            r#type: "container".into(),
            action: action.into(),
            actor_id: container.id.clone(),
            attributes,
            payload: Some(payload),
        };
        self.publisher.publish(namespace, topic, event).await;
    }

    /// Starts a created or stopped container. Starting a running one is a no-op, as in
    /// Docker.
    pub async fn start(self: &Arc<Self>, namespace: &Namespace, reference: &str) -> Result<u32> {
        let container = self.store.resolve(namespace, reference)?;
        let entry = self.entry(namespace, &container);
        let guard = entry.lock.lock().await;
        let mut container =
            self.store.get(namespace, &container.id)?.ok_or_else(|| Error::NotFound(reference.into()))?;
        let state = container.state.clone().unwrap_or_default();
        if is_running(state.status) {
            return Ok(state.pid);
        }
        if state.status == ContainerStatus::Removing as i32 {
            return Err(Error::FailedPrecondition(format!("container {} is being removed", container.id)));
        }
        let result = self.start_locked(namespace, &entry, &mut container).await;
        drop(guard);
        match result {
            Ok((pid, shim)) => {
                self.clone().monitor(namespace.clone(), container.id.clone(), shim);
                Ok(pid)
            }
            Err(err) => Err(err),
        }
    }

    async fn start_locked(
        &self,
        namespace: &Namespace,
        entry: &Entry,
        container: &mut Container,
    ) -> Result<(u32, Shim)> {
        let handler = self.runtimes.get(&container.runtime).map_err(Error::FailedPrecondition)?;
        let Some(runtime_path) = handler.path.clone() else {
            return Err(Error::FailedPrecondition(format!("runtime {} is not installed", handler.name)));
        };
        let task_dir = self.task_dir(namespace, &container.id);
        cleanup_task_dir(&task_dir);
        std::fs::create_dir_all(task_dir.join(task::ROOTFS_DIR))
            .map_err(|e| Error::io(format!("creating {}", task_dir.display()), e))?;
        let spec = match self.network.attach(namespace, container).await {
            Ok(spec) => spec,
            Err(err) => {
                cleanup_task_dir(&task_dir);
                drop(entry.take_pending());
                return Err(err);
            }
        };
        if let Err(err) = std::fs::write(task_dir.join(task::CONFIG_FILE), &spec) {
            self.network.detach(namespace, container).await;
            cleanup_task_dir(&task_dir);
            return Err(Error::io("writing the runtime spec", err));
        }
        let mounts = self
            .snapshots()?
            .mounts(namespace::request(namespace, MountsRequest { key: container.snapshot_key.clone() }))
            .await
            .map_err(|s| Error::Upstream(berth_common::error::from_dependency("snapshots", s)))?
            .into_inner()
            .mounts;

        let events_address = self.ctx.config.address_of(ServiceName::Events).clone();
        let socket = self.shim_socket(namespace, &container.id);
        let launched = async {
            crate::shims::spawn(&self.shim_binary, namespace, &container.id, &task_dir, &socket, &events_address)
                .await?;
            crate::shims::connect(&socket, SHIM_CONNECT_TIMEOUT).await
        };
        let mut shim_client = match launched.await {
            Ok(shim) => shim,
            Err(err) => {
                cleanup_task_dir(&task_dir);
                self.network.detach(namespace, container).await;
                // Clients waiting to attach to this start see their stream end.
                drop(entry.take_pending());
                return Err(err);
            }
        };
        let config = container.config.clone().unwrap_or_default();
        let host = container.host_config.clone().unwrap_or_default();
        let log_opts = &self.ctx.config.log_opts;
        let mut runtime_args = handler.args.clone();
        runtime_args.extend(["--root".to_string(), self.runtime_root(namespace).display().to_string()]);
        let create = shim::CreateTaskRequest {
            id: container.id.clone(),
            bundle: task_dir.display().to_string(),
            rootfs: mounts,
            terminal: config.tty,
            stdin: config.open_stdin,
            runtime: runtime_path.display().to_string(),
            runtime_args,
            log_path: container.log_path.clone(),
            log_max_size: host.log_config.get("max-size").and_then(|v| v.parse().ok()).unwrap_or(log_opts.max_size),
            log_max_files: host.log_config.get("max-file").and_then(|v| v.parse().ok()).unwrap_or(log_opts.max_file),
            event_attributes: [
                ("name".to_string(), container.name.clone()),
                ("image".to_string(), container.image.clone()),
            ]
            .into_iter()
            .collect(),
        };
        let started = async {
            let pid = shim_client.create(create).await?.into_inner().pid;
            for pending in entry.take_pending() {
                match crate::attach::open_on_shim(&mut shim_client, pending.open.clone()).await {
                    Ok(streams) => {
                        let _ = pending.connect.send(streams);
                    }
                    Err(err) => tracing::warn!(error = %err, "could not connect an attached client"),
                }
            }
            shim_client.start(shim::StartRequest { exec_id: String::new() }).await?;
            Ok::<u32, Error>(pid)
        };
        let pid = match started.await {
            Ok(pid) => pid,
            Err(err) => {
                drop(entry.take_pending());
                let _ = shim_client.delete(shim::DeleteRequest { exec_id: String::new() }).await;
                let _ = shim_client.shutdown(shim::ShutdownRequest { now: true }).await;
                cleanup_task_dir(&task_dir);
                self.network.detach(namespace, container).await;
                // Docker keeps the error and the exit code a shell would give.
                let message = match &err {
                    Error::Upstream(status) => status.message().to_string(),
                    other => other.to_string(),
                };
                let mut state = container.state.clone().unwrap_or_default();
                state.error = message.clone();
                state.exit_code = start_failure_exit_code(&message);
                container.state = Some(state);
                self.store.update(namespace, container).await?;
                return Err(Error::FailedPrecondition(message));
            }
        };
        let previous = container.state.clone().unwrap_or_default();
        let state = ContainerState {
            status: ContainerStatus::Running as i32,
            pid,
            exit_code: 0,
            oom_killed: false,
            started_at: Some(berth_common::time::now()),
            finished_at: previous.finished_at,
            error: String::new(),
            restart_count: previous.restart_count,
            stopped_by_user: false,
        };
        container.state = Some(state.clone());
        container.bundle_path = task_dir.display().to_string();
        self.store.update(namespace, container).await?;
        entry.set_shim(Some(shim_client.clone()));
        entry.observe(&state, false);
        Ok((pid, shim_client))
    }

    /// Waits for the container's exit on its shim, then records it.
    fn monitor(self: Arc<Self>, namespace: Namespace, id: String, mut shim_client: Shim) {
        tokio::spawn(async move {
            let exit = match shim_client.wait(shim::WaitRequest { exec_id: String::new() }).await {
                Ok(response) => {
                    let r = response.into_inner();
                    ExitInfo {
                        status: r.exit_status as i32,
                        exited_at: berth_common::time::from_optional(r.exited_at.as_ref()).unwrap_or_else(Utc::now),
                        oom_killed: r.oom_killed,
                        reason: String::new(),
                    }
                }
                // The shim is gone: its exit record is the truth, if it wrote one.
                Err(status) => self.exit_without_shim(&namespace, &id, &status.to_string()),
            };
            self.handle_exit(&namespace, &id, exit).await;
        });
    }

    fn exit_without_shim(&self, namespace: &Namespace, id: &str, why: &str) -> ExitInfo {
        match ExitRecord::read(&self.task_dir(namespace, id)) {
            Ok(Some(record)) => record.into(),
            _ => ExitInfo {
                status: UNKNOWN_EXIT,
                exited_at: Utc::now(),
                oom_killed: false,
                reason: format!("the container's shim died without recording an exit ({why})"),
            },
        }
    }

    /// Records an exit, acknowledges it to the shim (which then cleans up and leaves),
    /// and applies --rm and the restart policy.
    pub async fn handle_exit(self: &Arc<Self>, namespace: &Namespace, id: &str, exit: ExitInfo) {
        if let Err(err) = self.handle_exit_inner(namespace, id, exit).await {
            tracing::error!(container = id, error = %err, "recording an exit failed");
        }
    }

    async fn handle_exit_inner(self: &Arc<Self>, namespace: &Namespace, id: &str, exit: ExitInfo) -> Result<()> {
        let Some(mut container) = self.store.get(namespace, id)? else { return Ok(()) };
        let entry = self.entry(namespace, &container);
        let guard = entry.lock.lock().await;
        let Some(fresh) = self.store.get(namespace, id)? else { return Ok(()) };
        container = fresh;
        let mut state = container.state.clone().unwrap_or_default();
        if !is_running(state.status) {
            return Ok(());
        }
        let ran_for = berth_common::time::from_optional(state.started_at.as_ref())
            .map(|started| (exit.exited_at - started).to_std().unwrap_or_default())
            .unwrap_or_default();
        state.status = ContainerStatus::Exited as i32;
        state.exit_code = exit.status;
        state.oom_killed = exit.oom_killed;
        state.finished_at = Some(berth_common::time::to_proto(exit.exited_at));
        state.pid = 0;
        state.error = exit.reason.clone();
        container.state = Some(state.clone());
        self.store.update(namespace, &container).await?;

        // Exec processes die with the container.
        self.execs.remove_container(id);
        // The record is durable: now the shim may forget the exit.
        let task_dir = self.task_dir(namespace, id);
        match entry.take_shim() {
            Some(mut shim_client) => {
                if let Err(status) = shim_client.delete(shim::DeleteRequest { exec_id: String::new() }).await {
                    tracing::warn!(container = id, error = %status.message(), "shim delete failed");
                    self.force_cleanup(namespace, id, &container).await;
                }
                let _ = shim_client.shutdown(shim::ShutdownRequest { now: true }).await;
            }
            None => self.force_cleanup(namespace, id, &container).await,
        }
        cleanup_task_dir(&task_dir);
        let payload = Payload::TaskDelete(TaskDelete {
            container_id: id.to_string(),
            pid: 0,
            exit_status: exit.status,
            exited_at: Some(berth_common::time::to_proto(exit.exited_at)),
        });
        self.publish(namespace, "/tasks/delete", "delete_task", &container, payload).await;
        entry.observe(&state, true);
        // After the exit is visible (CNI DEL takes a while), still under the entry lock so
        // a new start waits for it. A crash before this point is reclaimed at start.
        self.network.detach(namespace, &mut container).await;
        self.store.update(namespace, &container).await?;

        let host = container.host_config.clone().unwrap_or_default();
        if host.auto_remove {
            self.remove_locked_with(namespace, &container, true).await?;
            drop(guard);
            return Ok(());
        }
        let delay = {
            let mut delay = entry.restart_delay.lock().unwrap_or_else(|p| p.into_inner());
            if ran_for >= RESTART_RESET_AFTER {
                *delay = MIN_RESTART_DELAY;
            }
            let current = *delay;
            *delay = (*delay * 2).min(MAX_RESTART_DELAY);
            current
        };
        drop(guard);
        if should_restart(&container, &state) {
            let supervisor = self.clone();
            let namespace = namespace.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                supervisor.policy_restart(&namespace, &id).await;
            });
        }
        Ok(())
    }

    async fn policy_restart(self: &Arc<Self>, namespace: &Namespace, id: &str) {
        let Ok(Some(mut container)) = self.store.get(namespace, id) else { return };
        let mut state = container.state.clone().unwrap_or_default();
        if state.status != ContainerStatus::Exited as i32 || state.stopped_by_user {
            return;
        }
        state.restart_count += 1;
        container.state = Some(state);
        if self.store.update(namespace, &container).await.is_err() {
            return;
        }
        if let Err(err) = self.start(namespace, id).await {
            tracing::warn!(container = id, error = %err, "restart by policy failed");
        }
    }

    /// Removes runtime state and mounts of a task whose shim is gone.
    pub(crate) async fn force_cleanup(&self, namespace: &Namespace, id: &str, container: &Container) {
        if let Ok(handler) = self.runtimes.get(&container.runtime)
            && let Some(path) = handler.path
        {
            let _ = tokio::process::Command::new(path)
                .args(&handler.args)
                .arg("--root")
                .arg(self.runtime_root(namespace))
                .args(["delete", "--force", id])
                .output()
                .await;
        }
        cleanup_task_dir(&self.task_dir(namespace, id));
    }

    /// Sends `signal` to the main process (or every process with `all`).
    pub async fn signal(&self, namespace: &Namespace, container: &Container, signal: u32, all: bool) -> Result<()> {
        let entry = self.entry(namespace, container);
        let Some(mut shim_client) = entry.shim() else {
            return Err(Error::FailedPrecondition(format!("Container {} is not running", container.id)));
        };
        match shim_client.kill(shim::KillRequest { exec_id: String::new(), signal, all }).await {
            Ok(_) => Ok(()),
            // It exited on its own meanwhile.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(status.into()),
        }
    }

    async fn mark_stopped_by_user(&self, namespace: &Namespace, container: &mut Container) -> Result<()> {
        let mut state = container.state.clone().unwrap_or_default();
        state.stopped_by_user = true;
        container.state = Some(state);
        self.store.update(namespace, container).await
    }

    /// Waits until the container is not running, up to `timeout`. True when it stopped.
    pub async fn wait_stopped(&self, namespace: &Namespace, container: &Container, timeout: Duration) -> bool {
        let mut observed = self.entry(namespace, container).subscribe();
        tokio::time::timeout(timeout, observed.wait_for(|o| o.removed || !is_running(o.state.status)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// `docker stop`: the stop signal, then SIGKILL after the timeout.
    pub async fn stop(
        &self,
        namespace: &Namespace,
        reference: &str,
        timeout: Option<i32>,
        signal: Option<u32>,
    ) -> Result<()> {
        let mut container = self.store.resolve(namespace, reference)?;
        if !is_running(container.state.as_ref().map(|s| s.status).unwrap_or_default()) {
            return Ok(());
        }
        self.mark_stopped_by_user(namespace, &mut container).await?;
        let config = container.config.clone().unwrap_or_default();
        let timeout = timeout.or(config.stop_timeout).unwrap_or(10);
        let signal = match signal {
            Some(signal) => signal,
            None => parse_signal(if config.stop_signal.is_empty() { "SIGTERM" } else { &config.stop_signal })?,
        };
        if container.state.as_ref().is_some_and(|s| s.status == ContainerStatus::Paused as i32) {
            self.resume(namespace, &container).await?;
        }
        if timeout != 0 {
            self.signal(namespace, &container, signal, false).await?;
            let wait = if timeout < 0 { Duration::MAX } else { Duration::from_secs(timeout as u64) };
            if self.wait_stopped(namespace, &container, wait).await {
                return Ok(());
            }
        }
        self.signal(namespace, &container, libc::SIGKILL as u32, true).await?;
        if self.wait_stopped(namespace, &container, Duration::from_secs(30)).await {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!("container {} did not stop after SIGKILL", container.id)))
        }
    }

    /// `docker kill`.
    pub async fn kill(&self, namespace: &Namespace, reference: &str, signal: u32) -> Result<()> {
        let mut container = self.store.resolve(namespace, reference)?;
        if !is_running(container.state.as_ref().map(|s| s.status).unwrap_or_default()) {
            return Err(Error::FailedPrecondition(format!("Container {} is not running", container.id)));
        }
        self.mark_stopped_by_user(namespace, &mut container).await?;
        self.signal(namespace, &container, signal, false).await
    }

    pub async fn pause(&self, namespace: &Namespace, container: &Container) -> Result<()> {
        self.set_paused(namespace, container, true).await
    }

    pub async fn resume(&self, namespace: &Namespace, container: &Container) -> Result<()> {
        self.set_paused(namespace, container, false).await
    }

    async fn set_paused(&self, namespace: &Namespace, container: &Container, paused: bool) -> Result<()> {
        let entry = self.entry(namespace, container);
        let _guard = entry.lock.lock().await;
        let mut container =
            self.store.get(namespace, &container.id)?.ok_or_else(|| Error::NotFound(container.id.clone()))?;
        let mut state = container.state.clone().unwrap_or_default();
        let (from, to) = if paused {
            (ContainerStatus::Running, ContainerStatus::Paused)
        } else {
            (ContainerStatus::Paused, ContainerStatus::Running)
        };
        if state.status != from as i32 {
            let what = if paused { "is not running" } else { "is not paused" };
            return Err(Error::FailedPrecondition(format!("Container {} {what}", container.id)));
        }
        let mut shim_client =
            entry.shim().ok_or_else(|| Error::FailedPrecondition("the container has no shim".into()))?;
        if paused {
            shim_client.pause(shim::PauseRequest {}).await?;
        } else {
            shim_client.resume(shim::ResumeRequest {}).await?;
        }
        state.status = to as i32;
        container.state = Some(state.clone());
        self.store.update(namespace, &container).await?;
        entry.observe(&state, false);
        Ok(())
    }

    /// `docker rm`: refuses a running container unless forced.
    pub async fn remove(&self, namespace: &Namespace, reference: &str, force: bool) -> Result<()> {
        self.remove_container(namespace, reference, force, false).await
    }

    /// `docker rm [-v]`: also removes the container's anonymous volumes with `volumes`.
    pub async fn remove_container(
        &self,
        namespace: &Namespace,
        reference: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let mut container = self.store.resolve(namespace, reference)?;
        // A start racing with this removal can make the container run again between the
        // kill and the lock; then it is killed again.
        for _ in 0..REMOVE_ATTEMPTS {
            if is_running(container.state.as_ref().map(|s| s.status).unwrap_or_default()) {
                if !force {
                    return Err(Error::FailedPrecondition(format!(
                        "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                        container.id
                    )));
                }
                self.kill_for_removal(namespace, &mut container).await?;
            }
            let entry = self.entry(namespace, &container);
            let _guard = entry.lock.lock().await;
            // --rm may have removed it while we waited.
            let Some(fresh) = self.store.get(namespace, &container.id)? else { return Ok(()) };
            if !is_running(fresh.state.as_ref().map(|s| s.status).unwrap_or_default()) {
                return self.remove_locked_with(namespace, &fresh, volumes).await;
            }
            container = fresh;
        }
        Err(Error::FailedPrecondition(format!(
            "container {} kept being started while it was being removed; try again",
            container.id
        )))
    }

    async fn kill_for_removal(&self, namespace: &Namespace, container: &mut Container) -> Result<()> {
        self.mark_stopped_by_user(namespace, container).await?;
        if container.state.as_ref().is_some_and(|s| s.status == ContainerStatus::Paused as i32) {
            let _ = self.resume(namespace, container).await;
        }
        self.signal(namespace, container, libc::SIGKILL as u32, true).await?;
        if !self.wait_stopped(namespace, container, Duration::from_secs(30)).await {
            return Err(Error::FailedPrecondition(format!("container {} did not stop after SIGKILL", container.id)));
        }
        Ok(())
    }

    /// Deletes everything a stopped container owns, and its anonymous volumes with
    /// `volumes`. The caller holds the entry lock.
    pub async fn remove_locked_with(&self, namespace: &Namespace, container: &Container, volumes: bool) -> Result<()> {
        let removal = self
            .snapshots()?
            .remove(namespace::request(namespace, RemoveSnapshotRequest { key: container.snapshot_key.clone() }))
            .await;
        match removal {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(Error::Upstream(berth_common::error::from_dependency("snapshots", status))),
        }
        cleanup_task_dir(&self.task_dir(namespace, &container.id));
        self.network.detach(namespace, &mut container.clone()).await;
        let _ = std::fs::remove_dir_all(self.container_dir(namespace, &container.id));
        for file in crate::logs::log_files(std::path::Path::new(&container.log_path)) {
            let _ = std::fs::remove_file(file);
        }
        self.store.remove(namespace, container).await?;
        self.volumes.release(namespace, container, volumes).await;
        let payload =
            Payload::ContainerDelete(ContainerDelete { id: container.id.clone(), name: container.name.clone() });
        self.publish(namespace, "/containers/delete", "destroy", container, payload).await;
        self.registry.remove(namespace, &container.id);
        Ok(())
    }

    /// The container's filesystem for `cp`: the running container's own mount, or a
    /// temporary mount of its snapshot, held under the container's lock so it cannot start
    /// (and mount the same layer) meanwhile.
    pub async fn open_rootfs(&self, namespace: &Namespace, container: &Container) -> Result<RootfsAccess> {
        let entry = self.entry(namespace, container);
        let running = is_running(container.state.as_ref().map(|s| s.status).unwrap_or_default());
        if running {
            let rootfs =
                crate::cp::MountedRootfs::existing(&self.task_dir(namespace, &container.id).join(task::ROOTFS_DIR))
                    .map_err(|e| Error::io("opening the container's root filesystem", e))?;
            return Ok(RootfsAccess { rootfs, _lock: None });
        }
        let lock = entry.lock.clone().lock_owned().await;
        let mounts = self
            .snapshots()?
            .mounts(namespace::request(namespace, MountsRequest { key: container.snapshot_key.clone() }))
            .await
            .map_err(|s| Error::Upstream(berth_common::error::from_dependency("snapshots", s)))?
            .into_inner()
            .mounts;
        let target = self.paths.exec_root.join("cp").join(format!("{}-{}", container.id, crate::names::new_id()));
        let rootfs = crate::cp::MountedRootfs::mount(&mounts, &target)
            .map_err(|e| Error::io("mounting the container's filesystem", e))?;
        Ok(RootfsAccess { rootfs, _lock: Some(lock) })
    }

    /// After a daemon restart: reconnect to every live shim and collect exits that
    /// happened while we were down.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let containers = self.store.list_all()?;
        let mut tasks = Vec::new();
        for (namespace, container) in containers {
            let status = container.state.as_ref().map(|s| s.status).unwrap_or_default();
            let supervisor = self.clone();
            if is_running(status) {
                tasks.push(tokio::spawn(async move { supervisor.recover_one(namespace, container).await }));
            } else if self.task_dir(&namespace, &container.id).exists() {
                // The daemon died in the middle of starting it: the start never counted.
                tasks.push(tokio::spawn(async move { supervisor.abandon_start(&namespace, &container).await }));
            }
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }

    async fn recover_one(self: &Arc<Self>, namespace: Namespace, container: Container) {
        match crate::shims::connect(&self.shim_socket(&namespace, &container.id), SHIM_CONNECT_TIMEOUT).await {
            Ok(mut shim_client) => {
                let state = shim_client.state(shim::StateRequest { exec_id: String::new() }).await;
                match state {
                    Ok(state) if state.get_ref().status == shim::Status::Stopped as i32 => {
                        let s = state.into_inner();
                        let entry = self.entry(&namespace, &container);
                        entry.set_shim(Some(shim_client));
                        let exit = ExitInfo {
                            status: s.exit_status as i32,
                            exited_at: berth_common::time::from_optional(s.exited_at.as_ref()).unwrap_or_else(Utc::now),
                            oom_killed: s.oom_killed,
                            reason: String::new(),
                        };
                        self.handle_exit(&namespace, &container.id, exit).await;
                    }
                    Ok(_) => {
                        self.entry(&namespace, &container).set_shim(Some(shim_client.clone()));
                        self.clone().monitor(namespace, container.id.clone(), shim_client);
                    }
                    Err(status) => {
                        let exit = self.exit_without_shim(&namespace, &container.id, status.message());
                        self.handle_exit(&namespace, &container.id, exit).await;
                    }
                }
            }
            Err(err) => {
                let exit = self.exit_without_shim(&namespace, &container.id, &err.to_string());
                self.handle_exit(&namespace, &container.id, exit).await;
            }
        }
    }
}

fn should_restart(container: &Container, state: &ContainerState) -> bool {
    if state.stopped_by_user {
        return false;
    }
    let policy = container.host_config.as_ref().and_then(|h| h.restart_policy.clone()).unwrap_or_default();
    match policy.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            state.exit_code != 0
                && (policy.maximum_retry_count <= 0 || state.restart_count < policy.maximum_retry_count)
        }
        _ => false,
    }
}

/// The exit code a shell would give for a process that could not be started.
pub fn start_failure_exit_code(message: &str) -> i32 {
    let lower = message.to_ascii_lowercase();
    if lower.contains("executable file not found") || lower.contains("no such file or directory") {
        127
    } else if lower.contains("permission denied") {
        126
    } else {
        128
    }
}

/// Unmounts a task directory's rootfs and removes the directory.
pub fn cleanup_task_dir(task_dir: &std::path::Path) {
    let rootfs = task_dir.join(task::ROOTFS_DIR);
    for _ in 0..8 {
        if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(task_dir);
}

/// "SIGTERM", "TERM", "term", "15" -> 15.
pub fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(number) = text.parse::<u32>() {
        if number == 0 || number > 64 {
            return Err(Error::InvalidArgument(format!("invalid signal: {text}")));
        }
        return Ok(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .map_err(|_| Error::InvalidArgument(format!("invalid signal: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containers::v1::{HostConfig, RestartPolicy};

    #[test]
    fn signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("HUP").unwrap(), 1);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn restart_policies() {
        let with = |name: &str, max: i32| Container {
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy { name: name.into(), maximum_retry_count: max }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let exited = |code: i32, count: i32, by_user: bool| ContainerState {
            exit_code: code,
            restart_count: count,
            stopped_by_user: by_user,
            ..Default::default()
        };
        assert!(!should_restart(&with("no", 0), &exited(1, 0, false)));
        assert!(should_restart(&with("always", 0), &exited(0, 5, false)));
        assert!(!should_restart(&with("always", 0), &exited(0, 0, true)));
        assert!(should_restart(&with("on-failure", 2), &exited(1, 1, false)));
        assert!(!should_restart(&with("on-failure", 2), &exited(1, 2, false)));
        assert!(!should_restart(&with("on-failure", 0), &exited(0, 0, false)));
        assert!(should_restart(&with("unless-stopped", 0), &exited(0, 0, false)));
    }

    #[test]
    fn start_failures_map_to_shell_codes() {
        assert_eq!(start_failure_exit_code("exec: \"nope\": executable file not found in $PATH"), 127);
        assert_eq!(start_failure_exit_code("exec /x: permission denied"), 126);
        assert_eq!(start_failure_exit_code("something else"), 128);
    }
}
