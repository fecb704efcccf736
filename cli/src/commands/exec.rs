//! `berth exec [-d] [-i] [-e] [-u] [-w] CONTAINER COMMAND...`

use anyhow::anyhow;
use berth_proto::tasks::v1::{AttachOpen, ExecCreateRequest, ExecInspectRequest, StartRequest};

use crate::client::Connection;
use crate::exit::{CLI_FAILURE, Exit, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Override the key sequence for detaching (default ctrl-p,ctrl-q)
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    container: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    super::session::check_terminal(args.interactive && !args.detach, args.tty)?;
    let cli_failure = |status: tonic::Status| Exit::with_code(CLI_FAILURE, anyhow!(status));
    let request = ExecCreateRequest {
        container_id: args.container.clone(),
        cmd: args.command.clone(),
        env: args.env.clone(),
        user: args.user.clone().unwrap_or_default(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        tty: args.tty,
        attach_stdin: args.interactive && !args.detach,
        attach_stdout: !args.detach,
        attach_stderr: !args.detach,
        privileged: args.privileged,
        detach_keys: args.detach_keys.clone().unwrap_or_default(),
    };
    let exec_id = connection.tasks().exec_create(request).await.map_err(cli_failure)?.into_inner().exec_id;
    let start = |connection: Connection, exec_id: String| async move {
        connection.tasks().start(StartRequest { container_id: String::new(), exec_id }).await
    };
    if args.detach {
        start(connection.clone(), exec_id)
            .await
            .map_err(|s| Exit::with_code(super::run::start_failure_code(s.message()), anyhow!(s)))?;
        return Ok(());
    }
    let open = AttachOpen {
        container_id: args.container.clone(),
        exec_id: exec_id.clone(),
        stdin: args.interactive,
        stdout: true,
        stderr: true,
        stream: true,
        detach_keys: args.detach_keys.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut start_failure = None;
    let session = super::session::run(&connection, open, args.tty, || async {
        match start(connection.clone(), exec_id.clone()).await {
            Ok(_) => Ok(()),
            Err(status) => {
                start_failure = Some(status);
                Err(anyhow!("the exec did not start"))
            }
        }
    })
    .await;
    if let Some(status) = start_failure {
        return Err(Exit::with_code(super::run::start_failure_code(status.message()), anyhow!(status)));
    }
    let session = session.map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
    let code = match session.exit {
        Some(exit) => exit.exit_code,
        None => {
            let inspect = connection
                .tasks()
                .exec_inspect(ExecInspectRequest { container_id: args.container, exec_id })
                .await
                .map_err(cli_failure)?;
            inspect.into_inner().exit_code
        }
    };
    if code == 0 { Ok(()) } else { Err(Exit::status(code)) }
}
