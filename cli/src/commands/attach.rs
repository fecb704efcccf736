//! `berth attach [--no-stdin] [--detach-keys] CONTAINER`

use anyhow::anyhow;
use berth_proto::containers::v1::GetContainerRequest;
use berth_proto::tasks::v1::{AttachOpen, WaitCondition, WaitRequest};

use crate::client::Connection;
use crate::exit::{Exit, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    container: String,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let request = GetContainerRequest { id: args.container.clone(), size: false };
    let container = connection
        .containers()
        .get(request)
        .await
        .map_err(anyhow::Error::from)?
        .into_inner()
        .container
        .ok_or_else(|| anyhow!("no such container: {}", args.container))?;
    let config = container.config.clone().unwrap_or_default();
    if !matches!(super::inspect::state_name(&container), "running" | "paused") {
        return Err(anyhow!("You cannot attach to a stopped container, start it first").into());
    }
    let stdin = config.open_stdin && !args.no_stdin;
    super::session::check_terminal(stdin, config.tty)?;
    let open = AttachOpen {
        container_id: container.id.clone(),
        stdin,
        stdout: true,
        stderr: true,
        stream: true,
        detach_keys: args.detach_keys.clone().unwrap_or_default(),
        ..Default::default()
    };
    let session = super::session::run(&connection, open, config.tty, || async { Ok(()) }).await?;
    if session.detached {
        return Ok(());
    }
    let code = match session.exit {
        Some(exit) => exit.exit_code,
        None => {
            let request = WaitRequest {
                container_id: container.id,
                condition: WaitCondition::NotRunning as i32,
                exec_id: String::new(),
            };
            connection.tasks().wait(request).await.map_err(anyhow::Error::from)?.into_inner().exit_code
        }
    };
    if code == 0 { Ok(()) } else { Err(Exit::status(code)) }
}
