//! `berth start [-a] [-i] CONTAINER...`

use anyhow::anyhow;
use berth_proto::tasks::v1::{AttachOpen, StartRequest};

use crate::client::Connection;
use crate::exit::{CLI_FAILURE, Exit, GENERAL_FAILURE, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Containers to start
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            return Err(Exit::with_code(
                CLI_FAILURE,
                anyhow!("you cannot start and attach multiple containers at once"),
            ));
        }
        let id = args.containers[0].clone();
        let tty = super::session::container_tty(&connection, &id).await?;
        super::session::check_terminal(args.interactive, tty)?;
        let open = AttachOpen {
            container_id: id.clone(),
            stdin: args.interactive,
            stdout: true,
            stderr: true,
            stream: true,
            detach_keys: args.detach_keys.clone().unwrap_or_default(),
            ..Default::default()
        };
        let session = super::session::run(&connection, open, tty, || async {
            connection.tasks().start(StartRequest { container_id: id.clone(), exec_id: String::new() }).await?;
            Ok(())
        })
        .await
        .map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
        return match session.exit {
            Some(exit) if exit.exit_code != 0 => Err(Exit::status(exit.exit_code)),
            _ => Ok(()),
        };
    }
    super::for_each(&args.containers, |id| {
        let connection = connection.clone();
        async move {
            connection.tasks().start(StartRequest { container_id: id, exec_id: String::new() }).await?;
            Ok(())
        }
    })
    .await
    .map_err(|_| Exit { code: GENERAL_FAILURE, error: None })
}
