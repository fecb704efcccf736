//! `stop`, `restart`, `kill`, `rm`, `pause`, `unpause`, `wait`: one action per container,
//! printing each name as given on success, like Docker.

use berth_proto::containers::v1::DeleteContainerRequest;
use berth_proto::tasks::v1::{
    KillRequest, PauseRequest, RestartRequest, ResumeRequest, StopRequest, WaitCondition, WaitRequest,
};

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<i32>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ContainersArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

fn failed(_: ()) -> Exit {
    Exit { code: GENERAL_FAILURE, error: None }
}

pub async fn stop(args: StopArgs, connection: Connection) -> Outcome {
    super::for_each(&args.containers, |id| {
        let mut tasks = connection.tasks();
        let signal = args.signal.clone().unwrap_or_default();
        async move {
            tasks.stop(StopRequest { container_id: id, timeout: args.time, signal }).await?;
            Ok(())
        }
    })
    .await
    .map_err(failed)
}

pub async fn restart(args: StopArgs, connection: Connection) -> Outcome {
    super::for_each(&args.containers, |id| {
        let mut tasks = connection.tasks();
        async move {
            tasks.restart(RestartRequest { container_id: id, timeout: args.time }).await?;
            Ok(())
        }
    })
    .await
    .map_err(failed)
}

pub async fn kill(args: KillArgs, connection: Connection) -> Outcome {
    super::for_each(&args.containers, |id| {
        let mut tasks = connection.tasks();
        let signal = args.signal.clone();
        async move {
            tasks.kill(KillRequest { container_id: id, signal, exec_id: String::new(), all: false }).await?;
            Ok(())
        }
    })
    .await
    .map_err(failed)
}

pub async fn rm(args: RmArgs, connection: Connection) -> Outcome {
    super::for_each(&args.containers, |id| {
        let mut containers = connection.containers();
        async move {
            containers.delete(DeleteContainerRequest { id, force: args.force, remove_volumes: args.volumes }).await?;
            Ok(())
        }
    })
    .await
    .map_err(failed)
}

pub async fn pause(args: ContainersArgs, connection: Connection) -> Outcome {
    super::for_each(&args.containers, |id| {
        let mut tasks = connection.tasks();
        async move {
            tasks.pause(PauseRequest { container_id: id }).await?;
            Ok(())
        }
    })
    .await
    .map_err(failed)
}

pub async fn unpause(args: ContainersArgs, connection: Connection) -> Outcome {
    super::for_each(&args.containers, |id| {
        let mut tasks = connection.tasks();
        async move {
            tasks.resume(ResumeRequest { container_id: id }).await?;
            Ok(())
        }
    })
    .await
    .map_err(failed)
}

/// `berth wait`: prints each container's exit code once it stops.
pub async fn wait(args: ContainersArgs, connection: Connection) -> Outcome {
    let mut failures = 0;
    for id in &args.containers {
        let request = WaitRequest {
            container_id: id.clone(),
            condition: WaitCondition::NotRunning as i32,
            exec_id: String::new(),
        };
        match connection.tasks().wait(request).await {
            Ok(response) => println!("{}", response.into_inner().exit_code),
            Err(status) => {
                eprintln!("Error response from daemon: {}", status.message());
                failures += 1;
            }
        }
    }
    if failures == 0 { Ok(()) } else { Err(failed(())) }
}
