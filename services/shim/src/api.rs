//! `berth.shim.v1` on top of the task.

use std::sync::Arc;

use berth_common::crilog::Stream;
use berth_proto::events::v1::{TaskPaused, TaskResumed, event::Payload};
use berth_proto::shim::v1::Status as ProcessStatus;
use berth_proto::shim::v1::shim_server::Shim;
use berth_proto::shim::v1::*;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::io::IoHub;
use crate::process::Process;
use crate::service::{CreateOptions, Task};

pub struct ShimApi {
    task: Arc<Task>,
}

impl ShimApi {
    pub fn new(task: Arc<Task>) -> ShimApi {
        ShimApi { task }
    }
}

fn timestamp(record: &berth_common::task::ExitRecord) -> Option<prost_types::Timestamp> {
    Some(berth_common::time::to_proto(record.exited_at))
}

#[tonic::async_trait]
impl Shim for ShimApi {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            shim_pid: std::process::id(),
            task_pid: self.task.init().map(|p| p.pid()).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            container_id: self.task.id.clone(),
        }))
    }

    async fn create(&self, request: Request<CreateTaskRequest>) -> Result<Response<CreateTaskResponse>, Status> {
        let r = request.into_inner();
        let pid = self
            .task
            .create(CreateOptions {
                rootfs: r.rootfs,
                stdin: r.stdin,
                terminal: r.terminal,
                runtime: if r.runtime.is_empty() { "runc".into() } else { r.runtime },
                runtime_args: r.runtime_args,
                log_path: r.log_path,
                log_max_size: r.log_max_size,
                log_max_files: r.log_max_files,
                event_attributes: r.event_attributes.into_iter().collect(),
            })
            .await?;
        Ok(Response::new(CreateTaskResponse { pid }))
    }

    async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let pid = self.task.start(&request.into_inner().exec_id).await?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn state(&self, request: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let exec_id = request.into_inner().exec_id;
        let process = self.task.process(&exec_id)?;
        let exit = process.exit();
        Ok(Response::new(StateResponse {
            id: self.task.id.clone(),
            bundle: self.task.bundle.display().to_string(),
            pid: process.pid(),
            status: process.status() as i32,
            terminal: process.terminal,
            exit_status: exit.as_ref().map(|e| e.exit_status).unwrap_or(0),
            exited_at: exit.as_ref().and_then(timestamp),
            oom_killed: exit.as_ref().is_some_and(|e| e.oom_killed),
            exec_id,
        }))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let process = self.task.process(&r.exec_id)?;
        if process.status() == ProcessStatus::Stopped {
            return Err(Status::not_found("process already finished"));
        }
        if r.exec_id.is_empty() {
            self.task
                .runtime()?
                .kill(&self.task.id, r.signal, r.all)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        } else {
            let signal = nix::sys::signal::Signal::try_from(r.signal as i32)
                .map_err(|_| Status::invalid_argument(format!("invalid signal {}", r.signal)))?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.pid() as i32), signal)
                .map_err(|e| Status::internal(format!("signalling the exec: {e}")))?;
        }
        Ok(Response::new(()))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let process = self.task.process(&request.into_inner().exec_id)?;
        let record = process.wait().await;
        Ok(Response::new(WaitResponse {
            exit_status: record.exit_status,
            exited_at: timestamp(&record),
            oom_killed: record.oom_killed,
        }))
    }

    async fn pids(&self, _request: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        let pids = self.task.runtime()?.ps(&self.task.id).await.map_err(|e| Status::internal(e.to_string()))?;
        let execs = self.task.execs();
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                exec_id: execs.iter().find(|e| e.pid() == pid).map(|e| e.exec_id.clone()).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(PidsResponse { processes }))
    }

    async fn pause(&self, _request: Request<PauseRequest>) -> Result<Response<()>, Status> {
        let init = self.task.process("")?;
        self.task.runtime()?.pause(&self.task.id).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        init.set_status(ProcessStatus::Paused);
        let payload = Payload::TaskPaused(TaskPaused { container_id: self.task.id.clone() });
        self.task.publish("/tasks/paused", "pause", payload, &[]).await;
        Ok(Response::new(()))
    }

    async fn resume(&self, _request: Request<ResumeRequest>) -> Result<Response<()>, Status> {
        let init = self.task.process("")?;
        self.task.runtime()?.resume(&self.task.id).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        init.set_status(ProcessStatus::Running);
        let payload = Payload::TaskResumed(TaskResumed { container_id: self.task.id.clone() });
        self.task.publish("/tasks/resumed", "unpause", payload, &[]).await;
        Ok(Response::new(()))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let exec_id = request.into_inner().exec_id;
        let process = self.task.process(&exec_id)?;
        let exit = match process.exit() {
            Some(exit) => exit,
            None if process.status() == ProcessStatus::Created => berth_common::task::ExitRecord {
                pid: process.pid(),
                exit_status: 0,
                exited_at: chrono::Utc::now(),
                oom_killed: false,
            },
            None => return Err(Status::failed_precondition("the process is still running; kill it first")),
        };
        if exec_id.is_empty() {
            let runtime = self.task.runtime()?;
            if let Err(err) = runtime.delete(&self.task.id, true).await {
                tracing::warn!(error = %err, "runtime delete failed");
            }
            berth_common::mount::unmount_all(&self.task.rootfs()).map_err(|e| Status::internal(e.to_string()))?;
        } else {
            self.task.remove_exec(&exec_id);
            let _ = std::fs::remove_file(self.task.exec_spec_path(&exec_id));
        }
        Ok(Response::new(DeleteResponse {
            pid: exit.pid,
            exit_status: exit.exit_status,
            exited_at: timestamp(&exit),
            oom_killed: exit.oom_killed,
        }))
    }

    async fn exec(&self, request: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("an exec needs an id"));
        }
        let init = self.task.process("")?;
        if init.status() != ProcessStatus::Running {
            return Err(Status::failed_precondition("the container is not running"));
        }
        let mut spec = r.process_spec;
        if !r.user.is_empty() {
            let resolved = crate::user::resolve(&self.task.rootfs(), &r.user)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let mut process: serde_json::Value = serde_json::from_slice(&spec)
                .map_err(|e| Status::invalid_argument(format!("bad process spec: {e}")))?;
            process["user"] = serde_json::json!({
                "uid": resolved.uid,
                "gid": resolved.gid,
                "additionalGids": resolved.additional_gids,
            });
            spec = serde_json::to_vec(&process).map_err(|e| Status::internal(e.to_string()))?;
        }
        let process = Process::new(&r.exec_id, r.terminal, r.stdin, IoHub::new(None));
        self.task.add_exec(process)?;
        if let Err(err) = std::fs::write(self.task.exec_spec_path(&r.exec_id), &spec) {
            self.task.remove_exec(&r.exec_id);
            return Err(Status::internal(format!("writing the exec spec: {err}")));
        }
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, request: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let size = r.size.unwrap_or_default();
        resize(self.task.process(&r.exec_id)?.as_ref(), &size)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, request: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        if r.stdin {
            self.task.process(&r.exec_id)?.io.close_stdin().await;
        }
        Ok(Response::new(()))
    }

    type AttachStream = ReceiverStream<Result<AttachResponse, Status>>;

    async fn attach(&self, request: Request<Streaming<AttachRequest>>) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(AttachRequest { item: Some(attach_request::Item::Open(open)) }) => open,
            _ => return Err(Status::invalid_argument("the first attach message must be AttachOpen")),
        };
        let process = self.task.process(&open.exec_id)?;
        let output = process.io.subscribe();
        let (sender, receiver) = mpsc::channel(64);
        let _ = sender.send(Ok(AttachResponse { item: Some(attach_response::Item::Attached(true)) })).await;
        tokio::spawn(forward_output(process.clone(), output, sender, open.stdout, open.stderr));
        if open.stdin {
            tokio::spawn(async move {
                while let Ok(Some(message)) = inbound.message().await {
                    match message.item {
                        Some(attach_request::Item::Stdin(data)) if process.io.write_stdin(&data).await.is_err() => {
                            break;
                        }
                        Some(attach_request::Item::Stdin(_)) => {}
                        Some(attach_request::Item::CloseStdin(true)) => process.io.close_stdin().await,
                        Some(attach_request::Item::Resize(size)) => {
                            let _ = resize(&process, &size);
                        }
                        _ => {}
                    }
                }
            });
        }
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn stats(&self, _request: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let cgroup = crate::cgroup::Cgroup::from_bundle(&self.task.bundle)
            .ok_or_else(|| Status::failed_precondition("the container has no cgroup"))?;
        let usage = cgroup.usage();
        Ok(Response::new(StatsResponse {
            cpu_usage_ns: usage.cpu_usage_ns,
            memory_usage: usage.memory_usage,
            memory_limit: usage.memory_limit,
            memory_cache: usage.memory_cache,
            pids: usage.pids,
            block_read_bytes: usage.block_read_bytes,
            block_write_bytes: usage.block_write_bytes,
        }))
    }

    async fn shutdown(&self, request: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        let now = request.into_inner().now;
        let running = self
            .task
            .init()
            .is_some_and(|p| p.status() != ProcessStatus::Stopped && p.status() != ProcessStatus::Created);
        if running && !now {
            return Err(Status::failed_precondition("the container is still running"));
        }
        // Answer first, then stop serving.
        let token = self.task.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            token.cancel();
        });
        Ok(Response::new(()))
    }
}

fn resize(process: &Process, size: &berth_proto::types::v1::WindowSize) -> Result<(), Status> {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    process.io.resize(clamp(size.width), clamp(size.height)).map_err(|e| Status::failed_precondition(e.to_string()))
}

/// Sends the process's output to one attached client until the process has exited and
/// its output is drained.
async fn forward_output(
    process: Arc<Process>,
    mut output: broadcast::Receiver<crate::io::Chunk>,
    sender: mpsc::Sender<Result<AttachResponse, Status>>,
    stdout: bool,
    stderr: bool,
) {
    let wanted = |stream: Stream| match stream {
        Stream::Stdout => stdout,
        Stream::Stderr => stderr,
    };
    let to_response = |chunk: crate::io::Chunk| {
        let data = chunk.data.to_vec();
        AttachResponse {
            item: Some(match chunk.stream {
                Stream::Stdout => attach_response::Item::Stdout(data),
                Stream::Stderr => attach_response::Item::Stderr(data),
            }),
        }
    };
    let finished = async {
        process.wait().await;
        process.io.drained().await;
    };
    tokio::pin!(finished);
    loop {
        tokio::select! {
            biased;
            received = output.recv() => match received {
                Ok(chunk) if wanted(chunk.stream) => {
                    if sender.send(Ok(to_response(chunk))).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "an attached client fell behind; output skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = &mut finished => break,
        }
    }
    // Everything emitted before the drain is already buffered.
    while let Ok(chunk) = output.try_recv() {
        if wanted(chunk.stream) && sender.send(Ok(to_response(chunk))).await.is_err() {
            return;
        }
    }
    if let Some(exit) = process.exit() {
        let item =
            attach_response::Item::Exit(ProcessExit { exit_status: exit.exit_status, oom_killed: exit.oom_killed });
        let _ = sender.send(Ok(AttachResponse { item: Some(item) })).await;
    }
}
