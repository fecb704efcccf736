//! `berth run`: create (pulling if needed), attach, start, stream, exit with the
//! container's code.

use anyhow::anyhow;
use berth_proto::containers::v1::DeleteContainerRequest;
use berth_proto::tasks::v1::{AttachOpen, StartRequest, WaitCondition, WaitRequest};

use super::container_options::ContainerOptions;
use crate::client::Connection;
use crate::exit::{CLI_FAILURE, Exit, Outcome};

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    #[command(flatten)]
    options: ContainerOptions,
}

/// Exit code for a process that could not be started, as Docker picks it.
pub fn start_failure_code(message: &str) -> u8 {
    let lower = message.to_ascii_lowercase();
    if lower.contains("executable file not found") || lower.contains("no such file or directory") {
        127
    } else if lower.contains("permission denied") {
        126
    } else {
        CLI_FAILURE
    }
}

fn start_error(status: tonic::Status) -> Exit {
    let code = start_failure_code(status.message());
    Exit::with_code(code, anyhow!(status))
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    super::session::check_terminal(args.options.interactive && !args.detach, args.options.tty)?;
    let request = args.options.to_request(args.rm, !args.detach).map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
    let container = super::create::create_pulling(&connection, request, &args.options)
        .await
        .map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
    let id = container.id.clone();
    let remove = || async {
        if args.rm {
            let _ = connection
                .containers()
                .delete(DeleteContainerRequest { id: id.clone(), force: true, remove_volumes: true })
                .await;
        }
    };

    if args.detach {
        if let Err(status) =
            connection.tasks().start(StartRequest { container_id: id.clone(), exec_id: String::new() }).await
        {
            remove().await;
            return Err(start_error(status));
        }
        println!("{id}");
        return Ok(());
    }

    let open = AttachOpen {
        container_id: id.clone(),
        stdin: args.options.interactive,
        stdout: true,
        stderr: true,
        stream: true,
        detach_keys: args.detach_keys.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut start_failure = None;
    let session = super::session::run(&connection, open, args.options.tty, || async {
        if let Err(status) =
            connection.tasks().start(StartRequest { container_id: id.clone(), exec_id: String::new() }).await
        {
            start_failure = Some(status);
        }
        Ok(())
    })
    .await;
    if let Some(status) = start_failure {
        remove().await;
        return Err(start_error(status));
    }
    let session = session.map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
    if session.detached {
        return Ok(());
    }
    // The exit on the attach stream comes straight from the shim; waiting for NotRunning
    // as well returns once the daemon has recorded it, so a `ps` right after `run` never
    // still shows the container running (Docker's run waits the same way).
    // (With --rm it may be gone already: then the session's exit is all there is.)
    let waited = connection
        .tasks()
        .wait(WaitRequest {
            container_id: id.clone(),
            condition: WaitCondition::NotRunning as i32,
            exec_id: String::new(),
        })
        .await;
    let code = match (session.exit, waited) {
        (Some(exit), _) => exit.exit_code,
        (None, Ok(waited)) => waited.into_inner().exit_code,
        (None, Err(status)) => return Err(Exit::with_code(CLI_FAILURE, anyhow!(status))),
    };
    if args.rm {
        // The daemon removes it; return once it is gone, as Docker does.
        let _ = connection
            .tasks()
            .wait(WaitRequest { container_id: id, condition: WaitCondition::Removed as i32, exec_id: String::new() })
            .await;
    }
    if code == 0 { Ok(()) } else { Err(Exit::status(code)) }
}
