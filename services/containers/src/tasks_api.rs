//! `berth.tasks.v1.Tasks`: running containers.

use std::sync::Arc;
use std::time::Duration;

use berth_common::{Namespace, namespace};
use berth_proto::containers::v1::{Container, ContainerStatus};
use berth_proto::events::v1::{TaskExecAdded, event::Payload};
use berth_proto::shim::v1 as shim;
use berth_proto::tasks::v1::tasks_server::Tasks;
use berth_proto::tasks::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::exec::{ExecRecord, Execs};
use crate::registry::PendingAttach;
use crate::supervisor::{Supervisor, is_running, parse_signal};

pub struct TasksApi {
    supervisor: Arc<Supervisor>,
}

impl TasksApi {
    pub fn new(supervisor: Arc<Supervisor>) -> TasksApi {
        TasksApi { supervisor }
    }

    fn execs(&self) -> &Execs {
        &self.supervisor.execs
    }

    fn running_shim(&self, ns: &Namespace, container: &Container) -> Result<crate::registry::Shim, Error> {
        let status = container.state.as_ref().map(|s| s.status).unwrap_or_default();
        match self.supervisor.entry(ns, container).shim() {
            Some(shim) if is_running(status) => Ok(shim),
            _ => Err(Error::FailedPrecondition(format!("Container {} is not running", container.id))),
        }
    }
}

fn exit_response(state: &berth_proto::containers::v1::ContainerState) -> WaitResponse {
    WaitResponse {
        exit_code: state.exit_code,
        exited_at: state.finished_at,
        error: state.error.clone(),
        oom_killed: state.oom_killed,
    }
}

#[tonic::async_trait]
impl Tasks for TasksApi {
    async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        if r.exec_id.is_empty() {
            let pid = self.supervisor.start(&ns, &r.container_id).await?;
            return Ok(Response::new(StartResponse { pid }));
        }
        let exec = self.execs().get(&r.exec_id)?;
        let container = self.supervisor.store.resolve(&ns, &exec.container_id)?;
        let mut shim = self.running_shim(&ns, &container)?;
        let pid = shim.start(shim::StartRequest { exec_id: r.exec_id }).await?.into_inner().pid;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let signal = if r.signal.is_empty() { None } else { Some(parse_signal(&r.signal)?) };
        self.supervisor.stop(&ns, &r.container_id, r.timeout, signal).await?;
        Ok(Response::new(()))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let signal = parse_signal(if r.signal.is_empty() { "SIGKILL" } else { &r.signal })?;
        if r.exec_id.is_empty() {
            self.supervisor.kill(&ns, &r.container_id, signal).await?;
        } else {
            let exec = self.execs().get(&r.exec_id)?;
            let container = self.supervisor.store.resolve(&ns, &exec.container_id)?;
            self.running_shim(&ns, &container)?
                .kill(shim::KillRequest { exec_id: r.exec_id, signal, all: false })
                .await?;
        }
        Ok(Response::new(()))
    }

    async fn restart(&self, request: Request<RestartRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        self.supervisor.stop(&ns, &r.container_id, r.timeout, None).await?;
        self.supervisor.start(&ns, &r.container_id).await?;
        Ok(Response::new(()))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.container_id)?;
        let mut observed = self.supervisor.entry(&ns, &container).subscribe();
        let start = observed.borrow_and_update().clone();
        let condition = WaitCondition::try_from(r.condition).unwrap_or(WaitCondition::NotRunning);
        let done = match condition {
            WaitCondition::NotRunning => observed.wait_for(|o| o.removed || !is_running(o.state.status)).await,
            WaitCondition::NextExit => observed.wait_for(|o| o.removed || o.exits > start.exits).await,
            WaitCondition::Removed => observed.wait_for(|o| o.removed).await,
        };
        let observed = done.map_err(|_| Status::unavailable("the daemon is shutting down"))?.clone();
        Ok(Response::new(exit_response(&observed.state)))
    }

    async fn pause(&self, request: Request<PauseRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let container = self.supervisor.store.resolve(&ns, &request.into_inner().container_id)?;
        self.supervisor.pause(&ns, &container).await?;
        Ok(Response::new(()))
    }

    async fn resume(&self, request: Request<ResumeRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let container = self.supervisor.store.resolve(&ns, &request.into_inner().container_id)?;
        self.supervisor.resume(&ns, &container).await?;
        Ok(Response::new(()))
    }

    type AttachStream = ReceiverStream<Result<AttachResponse, Status>>;

    async fn attach(&self, request: Request<Streaming<AttachRequest>>) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace::of(&request)?;
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(AttachRequest { item: Some(attach_request::Item::Open(open)) }) => open,
            _ => return Err(Status::invalid_argument("the first attach message must be AttachOpen")),
        };
        let (container_ref, exec_tty) = if open.exec_id.is_empty() {
            (open.container_id.clone(), None)
        } else {
            let exec = self.execs().get(&open.exec_id)?;
            (exec.container_id, Some(exec.tty))
        };
        let container = self.supervisor.store.resolve(&ns, &container_ref)?;
        let tty = exec_tty.unwrap_or_else(|| container.config.as_ref().is_some_and(|c| c.tty));
        // The detach sequence only makes sense where a person types: a terminal session
        // with stdin attached.
        let detach_keys =
            if open.stdin && tty { Some(crate::attach::parse_detach_keys(&open.detach_keys)?) } else { None };
        let proxy_options = crate::attach::ProxyOptions { detach_keys, size: open.size.filter(|_| tty) };
        let (sender, receiver) = mpsc::channel(64);
        if open.logs {
            let query = crate::logs::LogQuery { stdout: open.stdout, stderr: open.stderr, ..Default::default() };
            let (log_sender, mut log_receiver) = mpsc::channel(16);
            let path = container.log_path.clone().into();
            tokio::task::spawn_blocking(move || crate::logs::stream(path, query, log_sender, || false));
            while let Some(Ok(batch)) = log_receiver.recv().await {
                for entry in batch.entries {
                    let item = if entry.stream == LogStream::Stderr as i32 {
                        attach_response::Item::Stderr(entry.data)
                    } else {
                        attach_response::Item::Stdout(entry.data)
                    };
                    let _ = sender.send(Ok(AttachResponse { item: Some(item) })).await;
                }
            }
        }
        if !open.stream {
            return Ok(Response::new(ReceiverStream::new(receiver)));
        }
        let shim_open = shim::AttachOpen {
            exec_id: open.exec_id.clone(),
            stdin: open.stdin,
            stdout: open.stdout,
            stderr: open.stderr,
        };
        let entry = self.supervisor.entry(&ns, &container);
        let running = is_running(container.state.as_ref().map(|s| s.status).unwrap_or_default());
        let streams = match entry.shim() {
            Some(mut shim) if running || !open.exec_id.is_empty() => {
                let streams = crate::attach::open_on_shim(&mut shim, shim_open).await?;
                futures::future::Either::Left(std::future::ready(Ok(streams)))
            }
            _ => {
                // Not running: connect at the next start.
                let (connect, connected) = tokio::sync::oneshot::channel();
                entry.add_pending(PendingAttach { open: shim_open, connect });
                futures::future::Either::Right(connected)
            }
        };
        let _ = sender.send(Ok(AttachResponse { item: Some(attach_response::Item::Attached(true)) })).await;
        tokio::spawn(async move {
            if let Ok(streams) = streams.await {
                crate::attach::proxy(inbound, sender, streams, proxy_options).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn resize_pty(&self, request: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container_ref =
            if r.exec_id.is_empty() { r.container_id.clone() } else { self.execs().get(&r.exec_id)?.container_id };
        let container = self.supervisor.store.resolve(&ns, &container_ref)?;
        self.running_shim(&ns, &container)?
            .resize_pty(shim::ResizePtyRequest { exec_id: r.exec_id, size: r.size })
            .await?;
        Ok(Response::new(()))
    }

    async fn close_stdin(&self, request: Request<CloseStdinRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.container_id)?;
        self.running_shim(&ns, &container)?.close_io(shim::CloseIoRequest { exec_id: r.exec_id, stdin: true }).await?;
        Ok(Response::new(()))
    }

    async fn exec_create(&self, request: Request<ExecCreateRequest>) -> Result<Response<ExecCreateResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.container_id)?;
        let mut shim = self.running_shim(&ns, &container)?;
        if container.state.as_ref().is_some_and(|s| s.status == ContainerStatus::Paused as i32) {
            return Err(Error::FailedPrecondition(format!(
                "Container {} is paused, unpause the container before exec",
                container.id
            ))
            .into());
        }
        let process_spec = crate::exec::process_spec(&container, &r)?;
        let exec_id = crate::names::new_id();
        shim.exec(shim::ExecProcessRequest {
            exec_id: exec_id.clone(),
            terminal: r.tty,
            stdin: r.attach_stdin,
            process_spec,
            user: r.user.clone(),
        })
        .await?;
        self.execs()
            .insert(&exec_id, ExecRecord { container_id: container.id.clone(), cmd: r.cmd.clone(), tty: r.tty });
        let payload =
            Payload::TaskExecAdded(TaskExecAdded { container_id: container.id.clone(), exec_id: exec_id.clone() });
        self.supervisor.publish(&ns, "/tasks/exec-added", "exec_create", &container, payload).await;
        Ok(Response::new(ExecCreateResponse { exec_id }))
    }

    async fn exec_inspect(
        &self,
        request: Request<ExecInspectRequest>,
    ) -> Result<Response<ExecInspectResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let exec = self.execs().get(&r.exec_id)?;
        let container = self.supervisor.store.resolve(&ns, &exec.container_id)?;
        let mut response = ExecInspectResponse {
            exec_id: r.exec_id.clone(),
            container_id: container.id.clone(),
            cmd: exec.cmd.clone(),
            tty: exec.tty,
            ..Default::default()
        };
        if let Some(mut shim) = self.supervisor.entry(&ns, &container).shim()
            && let Ok(state) = shim.state(shim::StateRequest { exec_id: r.exec_id }).await
        {
            let state = state.into_inner();
            response.pid = state.pid;
            response.running = state.status == shim::Status::Running as i32;
            response.exited = state.status == shim::Status::Stopped as i32;
            response.exit_code = state.exit_status as i32;
        }
        Ok(Response::new(response))
    }

    type LogsStream = ReceiverStream<Result<LogsResponse, Status>>;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.container_id)?;
        let query = crate::logs::LogQuery {
            stdout: r.stdout || !r.stderr,
            stderr: r.stderr || !r.stdout,
            since: berth_common::time::from_optional(r.since.as_ref()),
            until: berth_common::time::from_optional(r.until.as_ref()),
            tail: r.tail.filter(|t| *t >= 0).map(|t| t as usize),
            follow: r.follow,
        };
        let observed = self.supervisor.entry(&ns, &container).subscribe();
        let (sender, receiver) = mpsc::channel(16);
        let path = container.log_path.clone().into();
        tokio::task::spawn_blocking(move || {
            crate::logs::stream(path, query, sender, move || {
                let o = observed.borrow();
                !o.removed && is_running(o.state.status)
            })
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn top(&self, request: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.container_id)?;
        let pids: Vec<u32> = self
            .running_shim(&ns, &container)?
            .pids(shim::PidsRequest {})
            .await?
            .into_inner()
            .processes
            .into_iter()
            .map(|p| p.pid)
            .collect();
        let args = if r.ps_args.is_empty() { vec!["-ef".to_string()] } else { r.ps_args };
        let output =
            tokio::process::Command::new("ps").args(&args).output().await.map_err(|e| Error::io("running ps", e))?;
        if !output.status.success() {
            return Err(Error::InvalidArgument(format!(
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
            .into());
        }
        let (titles, processes) = crate::top::filter_ps(&String::from_utf8_lossy(&output.stdout), &pids)?;
        Ok(Response::new(TopResponse { titles, processes }))
    }

    type StatsStream = ReceiverStream<Result<StatsResponse, Status>>;

    async fn stats(&self, request: Request<StatsRequest>) -> Result<Response<Self::StatsStream>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let container = self.supervisor.store.resolve(&ns, &r.container_id)?;
        let mut shim = self.running_shim(&ns, &container)?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let Ok(usage) = shim.stats(shim::StatsRequest {}).await else { break };
                let usage = usage.into_inner();
                let stats = Stats {
                    read: Some(berth_common::time::now()),
                    container_id: container.id.clone(),
                    name: container.name.clone(),
                    cpu_usage_ns: usage.cpu_usage_ns,
                    system_cpu_usage_ns: crate::top::system_cpu_ns(),
                    online_cpus: berth_common::host::cpu_count(),
                    memory_usage: usage.memory_usage,
                    memory_limit: usage.memory_limit.min(berth_common::host::memory_total_bytes()),
                    memory_cache: usage.memory_cache,
                    pids: usage.pids,
                    block_read_bytes: usage.block_read_bytes,
                    block_write_bytes: usage.block_write_bytes,
                    ..Default::default()
                };
                if sender.send(Ok(StatsResponse { stats: Some(stats) })).await.is_err() || !r.stream {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
