//! The shim's core: the task's processes, the runtime, and the events they produce.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_common::client::{ClientContext, intercept};
use berth_common::events::Publisher;
use berth_common::task::{self, ExitRecord};
use berth_common::{Address, Namespace};
use berth_proto::events::v1::{Event, TaskCreate, TaskExecStarted, TaskExit, TaskOom, TaskStart, event::Payload};
use berth_proto::shim::v1::Status;
use berth_proto::shim::v1::shim_server::ShimServer;
use berth_proto::types::v1::Mount;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tonic::Status as RpcStatus;

use crate::cgroup::Cgroup;
use crate::io::{IoHub, pipe_pair};
use crate::logfile::LogFile;
use crate::process::Process;
use crate::pty::ConsoleSocket;
use crate::reaper::Reaper;
use crate::runtime::{ProcessStdio, Runtime};

/// Reports, once, whether the shim serves (Ok) or why it cannot.
pub type ReadyReport = Box<dyn FnOnce(&Result<()>) + Send>;

pub struct Settings {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub socket: PathBuf,
    pub events_address: Option<Address>,
    pub ready: ReadyReport,
}

/// How long after an exit we wait for the process's output pipes to close (a background
/// child that kept them open must not hold the exit back forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an exiting shim waits for its events to reach the bus.
const PUBLISH_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutting-down shim waits for open streams.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub struct Task {
    pub id: String,
    pub namespace: Namespace,
    pub bundle: PathBuf,
    pub reaper: Reaper,
    publisher: Option<Publisher>,
    runtime: Mutex<Option<Runtime>>,
    init: Mutex<Option<Arc<Process>>>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    event_attributes: Mutex<HashMap<String, String>>,
    pub shutdown: CancellationToken,
    socket: PathBuf,
    console_counter: std::sync::atomic::AtomicU32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `create` needs besides the bundle.
pub struct CreateOptions {
    pub rootfs: Vec<Mount>,
    pub stdin: bool,
    pub terminal: bool,
    pub runtime: String,
    pub runtime_args: Vec<String>,
    pub log_path: String,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub event_attributes: HashMap<String, String>,
}

impl Task {
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join(task::ROOTFS_DIR)
    }

    pub fn runtime(&self) -> Result<Runtime, RpcStatus> {
        lock(&self.runtime).clone().ok_or_else(|| RpcStatus::failed_precondition("the task has not been created"))
    }

    pub fn init(&self) -> Option<Arc<Process>> {
        lock(&self.init).clone()
    }

    /// The init process ("" ) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>, RpcStatus> {
        if exec_id.is_empty() {
            self.init().ok_or_else(|| RpcStatus::not_found("the task has not been created"))
        } else {
            lock(&self.execs)
                .get(exec_id)
                .cloned()
                .ok_or_else(|| RpcStatus::not_found(format!("no exec process {exec_id}")))
        }
    }

    pub fn execs(&self) -> Vec<Arc<Process>> {
        lock(&self.execs).values().cloned().collect()
    }

    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        lock(&self.execs).remove(exec_id)
    }

    pub fn add_exec(&self, process: Arc<Process>) -> Result<(), RpcStatus> {
        let mut execs = lock(&self.execs);
        if execs.contains_key(&process.exec_id) {
            return Err(RpcStatus::already_exists(format!("exec {} already exists", process.exec_id)));
        }
        execs.insert(process.exec_id.clone(), process);
        Ok(())
    }

    pub fn exec_spec_path(&self, exec_id: &str) -> PathBuf {
        self.bundle.join(format!("exec-{exec_id}.json"))
    }

    /// Publishes a container event with this task's attributes plus `extra`.
    pub async fn publish(&self, topic: &str, action: &str, payload: Payload, extra: &[(&str, String)]) {
        let Some(publisher) = &self.publisher else { return };
        let mut attributes = lock(&self.event_attributes).clone();
        for (key, value) in extra {
            attributes.insert(key.to_string(), value.clone());
        }
        let event = Event {
            r#type: "container".into(),
            action: action.into(),
            actor_id: self.id.clone(),
            attributes,
            payload: Some(payload),
        };
        publisher.publish(&self.namespace, topic, event).await;
    }

    /// Mounts the rootfs, wires stdio, and runs `runtime create`.
    pub async fn create(self: &Arc<Self>, options: CreateOptions) -> Result<u32, RpcStatus> {
        if self.init().is_some() {
            return Err(RpcStatus::already_exists("the task was already created"));
        }
        let binary = berth_common::host::find_binary(&options.runtime).ok_or_else(|| {
            RpcStatus::failed_precondition(format!("runtime {:?} not found on this host", options.runtime))
        })?;
        let runtime = Runtime::new(binary, options.runtime_args, &self.bundle, self.reaper.clone());
        *lock(&self.event_attributes) = options.event_attributes;

        let rootfs = self.rootfs();
        berth_common::mount::mount_all(&options.rootfs, &rootfs).map_err(|e| RpcStatus::internal(e.to_string()))?;
        match self
            .create_mounted(
                &runtime,
                &options.log_path,
                options.log_max_size,
                options.log_max_files,
                options.stdin,
                options.terminal,
            )
            .await
        {
            Ok(pid) => {
                *lock(&self.runtime) = Some(runtime);
                Ok(pid)
            }
            Err(status) => {
                let _ = berth_common::mount::unmount_all(&rootfs);
                Err(status)
            }
        }
    }

    async fn create_mounted(
        self: &Arc<Self>,
        runtime: &Runtime,
        log_path: &str,
        log_max_size: u64,
        log_max_files: u32,
        stdin: bool,
        terminal: bool,
    ) -> Result<u32, RpcStatus> {
        resolve_user_in_spec(&self.bundle, &self.rootfs())?;
        let log = if log_path.is_empty() {
            None
        } else {
            Some(
                LogFile::open(Path::new(log_path), log_max_size, log_max_files)
                    .map_err(|e| RpcStatus::internal(format!("cannot open the container log {log_path}: {e}")))?,
            )
        };
        let process = Process::new("", terminal, stdin, IoHub::new(log));
        let pid_file = self.bundle.join("init.pid");
        self.create_process(&process, "create", |stdio, console| {
            let pid_file = pid_file.clone();
            async move { runtime.create(&self.id, &self.bundle, &pid_file, console.as_deref(), stdio).await }
        })
        .await?;
        let pid = read_pid(&pid_file).map_err(|e| RpcStatus::internal(format!("reading the init pid: {e}")))?;
        process.set_pid(pid);
        *lock(&self.init) = Some(process.clone());
        self.watch_exit(process, pid);
        self.watch_oom();
        self.publish(
            "/tasks/create",
            "create_task",
            Payload::TaskCreate(TaskCreate {
                container_id: self.id.clone(),
                bundle: self.bundle.display().to_string(),
                pid,
            }),
            &[],
        )
        .await;
        Ok(pid)
    }

    /// Starts the init process or a created exec.
    pub async fn start(self: &Arc<Self>, exec_id: &str) -> Result<u32, RpcStatus> {
        let runtime = self.runtime()?;
        let process = self.process(exec_id)?;
        if process.status() != Status::Created {
            return Err(RpcStatus::failed_precondition(format!(
                "{} is not in the created state",
                if exec_id.is_empty() { "the container" } else { "the exec" }
            )));
        }
        if exec_id.is_empty() {
            runtime
                .start(&self.id)
                .await
                .map_err(|e| RpcStatus::failed_precondition(format!("OCI runtime start failed: {e}")))?;
            process.set_status(Status::Running);
            let pid = process.pid();
            self.publish(
                "/tasks/start",
                "start",
                Payload::TaskStart(TaskStart { container_id: self.id.clone(), pid }),
                &[],
            )
            .await;
            return Ok(pid);
        }
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        let spec = self.exec_spec_path(exec_id);
        self.create_process(&process, "exec", |stdio, console| {
            let pid_file = pid_file.clone();
            async move { runtime.exec(&self.id, &spec, &pid_file, console.as_deref(), stdio).await }
        })
        .await?;
        let pid = read_pid(&pid_file).map_err(|e| RpcStatus::internal(format!("reading the exec pid: {e}")))?;
        process.set_pid(pid);
        process.set_status(Status::Running);
        self.watch_exit(process, pid);
        self.publish(
            "/tasks/exec-started",
            "exec_start",
            Payload::TaskExecStarted(TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
                pid,
            }),
            &[("execID", exec_id.to_string())],
        )
        .await;
        Ok(pid)
    }

    /// Runs the runtime command that creates `process` with its stdio wired: pipes, or a
    /// console socket on which the pty master arrives while the runtime runs.
    async fn create_process<F, Fut>(&self, process: &Arc<Process>, command: &str, run: F) -> Result<(), RpcStatus>
    where
        F: FnOnce(ProcessStdio, Option<PathBuf>) -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::runtime::RuntimeError>>,
    {
        let failed = |e: crate::runtime::RuntimeError| {
            RpcStatus::failed_precondition(format!("OCI runtime {command} failed: {e}"))
        };
        if !process.terminal {
            let stdio = wire_pipes(process).await.map_err(|e| RpcStatus::internal(format!("creating stdio: {e}")))?;
            return run(stdio, None).await.map_err(failed);
        }
        let console = ConsoleSocket::bind(&self.console_socket_path())
            .map_err(|e| RpcStatus::internal(format!("creating the console socket: {e}")))?;
        let path = console.path().to_path_buf();
        let receiving = tokio::spawn(console.receive());
        if let Err(err) = run(ProcessStdio::default(), Some(path)).await {
            receiving.abort();
            return Err(failed(err));
        }
        let master = receiving
            .await
            .map_err(|e| RpcStatus::internal(format!("receiving the terminal: {e}")))?
            .map_err(|e| RpcStatus::internal(format!("receiving the terminal: {e}")))?;
        process.io.attach_terminal(master).await;
        Ok(())
    }

    /// A fresh console socket path next to the shim's own socket (short enough for the
    /// 108-byte limit, unlike the task directory).
    fn console_socket_path(&self) -> PathBuf {
        let n = self.console_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PathBuf::from(format!("{}.console-{n}", self.socket.display()))
    }

    fn watch_exit(self: &Arc<Self>, process: Arc<Process>, pid: u32) {
        let exited = self.reaper.subscribe(pid);
        let task = self.clone();
        tokio::spawn(async move {
            let Ok(exit) = exited.await else { return };
            let exited_at = Utc::now();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, process.io.drained()).await;
            let is_init = process.exec_id.is_empty();
            let oom_killed = is_init && Cgroup::from_bundle(&task.bundle).is_some_and(|c| c.oom_kills() > 0);
            let record = ExitRecord { pid, exit_status: exit.status, exited_at, oom_killed };
            if is_init && let Err(err) = record.write(&task.bundle) {
                tracing::error!(error = %err, "cannot write the exit record");
            }
            process.set_exited(record.clone());
            let (action, mut extra) =
                if is_init { ("die", vec![]) } else { ("exec_die", vec![("execID", process.exec_id.clone())]) };
            extra.push(("exitCode", exit.status.to_string()));
            task.publish(
                "/tasks/exit",
                action,
                Payload::TaskExit(TaskExit {
                    container_id: task.id.clone(),
                    exec_id: process.exec_id.clone(),
                    pid,
                    exit_status: exit.status as i32,
                    exited_at: Some(berth_common::time::to_proto(exited_at)),
                    oom_killed,
                    reason: String::new(),
                }),
                &extra,
            )
            .await;
        });
    }

    fn watch_oom(self: &Arc<Self>) {
        let Some(cgroup) = Cgroup::from_bundle(&self.bundle) else { return };
        let mut events = match cgroup.oom_events() {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, "OOM events unavailable for this container");
                return;
            }
        };
        let task = self.clone();
        tokio::spawn(async move {
            while events.next().await.is_ok() {
                if task.init().is_some_and(|p| p.status() == Status::Stopped) {
                    break;
                }
                task.publish("/tasks/oom", "oom", Payload::TaskOom(TaskOom { container_id: task.id.clone() }), &[])
                    .await;
            }
        });
    }
}

/// Creates the process's pipes: output read ends go to the hub (which feeds the log and
/// attached clients; an exec has no log, so unattached exec output is dropped as Docker
/// drops it), the other ends to the runtime.
async fn wire_pipes(process: &Arc<Process>) -> std::io::Result<ProcessStdio> {
    let mut stdio = ProcessStdio::default();
    let (out_read, out_write) = pipe_pair()?;
    let (err_read, err_write) = pipe_pair()?;
    process.io.pump(berth_common::crilog::Stream::Stdout, out_read)?;
    process.io.pump(berth_common::crilog::Stream::Stderr, err_read)?;
    stdio.stdout = Some(out_write);
    stdio.stderr = Some(err_write);
    if process.stdin {
        let (in_read, in_write) = pipe_pair()?;
        process.io.set_stdin(in_write).await?;
        stdio.stdin = Some(in_read);
    }
    Ok(stdio)
}

fn read_pid(path: &Path) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad pid {text:?}")))
}

/// Applies the `berth.user` annotation: resolves the user inside the mounted rootfs and
/// writes uid, gid and supplementary groups into config.json.
fn resolve_user_in_spec(bundle: &Path, rootfs: &Path) -> Result<(), RpcStatus> {
    let path = bundle.join(task::CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| RpcStatus::internal(format!("reading {}: {e}", path.display())))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| RpcStatus::internal(format!("parsing {}: {e}", path.display())))?;
    let Some(user) = spec["annotations"][crate::user::USER_ANNOTATION].as_str().map(str::to_string) else {
        return Ok(());
    };
    let resolved = crate::user::resolve(rootfs, &user).map_err(|e| RpcStatus::invalid_argument(e.to_string()))?;
    spec["process"]["user"] = serde_json::json!({
        "uid": resolved.uid,
        "gid": resolved.gid,
        "additionalGids": resolved.additional_gids,
    });
    let bytes = serde_json::to_vec(&spec).map_err(|e| RpcStatus::internal(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(|e| RpcStatus::internal(format!("writing {}: {e}", path.display())))
}

/// Runs the shim until it is told to shut down.
pub async fn serve(settings: Settings) -> Result<()> {
    let Settings { id, namespace, bundle, socket, events_address, ready } = settings;
    let setup = async {
        let namespace = Namespace::new(&namespace).map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
        let reaper = Reaper::start().context("installing the SIGCHLD handler")?;
        let publisher = match &events_address {
            Some(address) => {
                let channel = berth_common::client::lazy_channel(address)?;
                Some(Publisher::new(
                    intercept(channel, ClientContext::with_namespace(&namespace)),
                    &format!("shim-{id}"),
                ))
            }
            None => None,
        };
        let listener = berth_common::serve::bind(&Address::Unix(socket.clone()), "").await?;
        std::fs::write(bundle.join(task::SHIM_PID_FILE), std::process::id().to_string())
            .context("writing the shim pid file")?;
        let task = Arc::new(Task {
            id: id.clone(),
            namespace,
            bundle: bundle.clone(),
            reaper,
            publisher,
            runtime: Mutex::new(None),
            init: Mutex::new(None),
            execs: Mutex::new(HashMap::new()),
            event_attributes: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            socket: socket.clone(),
            console_counter: std::sync::atomic::AtomicU32::new(0),
        });
        anyhow::Ok((task, listener))
    };
    let (task, listener) = match setup.await {
        Ok(ok) => {
            ready(&Ok(()));
            ok
        }
        Err(err) => {
            let result = Err(err);
            ready(&result);
            return result;
        }
    };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(ShimServer::new(crate::api::ShimApi::new(task.clone())));
    let shutdown = task.shutdown.clone();
    let serving = berth_common::serve::serve(listener, routes.routes(), async move { shutdown.cancelled().await });
    // Streams still open at shutdown (an attach to a process that never started) must not
    // keep the shim alive: give them a moment, then go.
    let deadline = async {
        task.shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = serving => result.context("serving the shim API")?,
        () = deadline => tracing::warn!("streams still open at shutdown; exiting anyway"),
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(publisher) = &task.publisher
        && tokio::time::timeout(PUBLISH_FLUSH_TIMEOUT, publisher.flush()).await.is_err()
    {
        tracing::warn!(pending = publisher.pending(), "events not delivered before exit; they stay in the spool");
    }
    Ok(())
}
