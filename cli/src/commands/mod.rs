//! One module per command.

mod attach;
mod completion;
mod container_options;
mod cp;
mod create;
mod events;
mod exec;
mod filesystem;
mod history;
mod image;
mod images;
mod import;
mod info;
pub mod inspect;
mod lifecycle;
mod load;
mod login;
mod logout;
mod logs;
mod net_options;
mod network;
mod port;
mod progress;
mod ps;
mod pull;
mod push;
mod rmi;
mod run;
mod save;
mod search;
mod session;
mod start;
mod stats;
mod tag;
mod top;
mod version;
mod volume;

use clap::Subcommand;
use tracing::Instrument;

use crate::Cli;
use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a new container from an image
    Run(run::Args),
    /// Create a new container
    Create(create::Args),
    /// Start one or more stopped containers
    Start(start::Args),
    /// Attach local standard input, output, and error streams to a running container
    Attach(attach::Args),
    /// Stop one or more running containers
    Stop(lifecycle::StopArgs),
    /// Restart one or more containers
    Restart(lifecycle::StopArgs),
    /// Kill one or more running containers
    Kill(lifecycle::KillArgs),
    /// Remove one or more containers
    Rm(lifecycle::RmArgs),
    /// Pause all processes within one or more containers
    Pause(lifecycle::ContainersArgs),
    /// Unpause all processes within one or more containers
    Unpause(lifecycle::ContainersArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(lifecycle::ContainersArgs),
    /// List containers
    #[command(alias = "ls")]
    Ps(ps::Args),
    /// Fetch the logs of a container
    Logs(logs::Args),
    /// Return low-level information on containers
    Inspect(inspect::Args),
    /// Execute a command in a running container
    Exec(exec::Args),
    /// Display the running processes of a container
    Top(top::Args),
    /// List port mappings or a specific mapping for the container
    Port(port::Args),
    /// Manage networks
    #[command(subcommand)]
    Network(network::Command),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::Command),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::Args),
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::Args),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(filesystem::DiffArgs),
    /// Create a new image from a container's changes
    Commit(filesystem::CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(filesystem::ExportArgs),
    /// Download an image from a registry
    Pull(pull::Args),
    /// Search registries for images
    Search(search::Args),
    /// Show the history of an image
    History(history::Args),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(save::Args),
    /// Load an image from a tar archive or STDIN
    Load(load::Args),
    /// Log in to a registry
    Login(login::Args),
    /// Log out from a registry
    Logout(logout::Args),
    /// Upload an image to a registry
    Push(push::Args),
    /// List images
    Images(images::Args),
    /// Manage images
    #[command(subcommand)]
    Image(image::Command),
    /// Import the contents from a tarball to create a filesystem image
    Import(import::Args),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(tag::Args),
    /// Remove one or more images
    Rmi(rmi::Args),
    /// Get real time events from the server
    Events(events::Args),
    /// Show the Berth version information
    Version(version::Args),
    /// Display system-wide information
    Info(info::Args),
    /// Generate the autocompletion script for the specified shell
    Completion(completion::Args),
}

pub async fn run(cli: Cli) -> Outcome {
    // One span per invocation: its context travels to berthd, so a command is one trace.
    let span = tracing::info_span!("berth", otel.name = %format!("berth {}", cli.command.name()));
    run_command(cli).instrument(span).await
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Create(_) => "create",
            Command::Start(_) => "start",
            Command::Attach(_) => "attach",
            Command::Stop(_) => "stop",
            Command::Restart(_) => "restart",
            Command::Kill(_) => "kill",
            Command::Rm(_) => "rm",
            Command::Pause(_) => "pause",
            Command::Unpause(_) => "unpause",
            Command::Wait(_) => "wait",
            Command::Ps(_) => "ps",
            Command::Logs(_) => "logs",
            Command::Inspect(_) => "inspect",
            Command::Exec(_) => "exec",
            Command::Top(_) => "top",
            Command::Port(_) => "port",
            Command::Network(_) => "network",
            Command::Volume(_) => "volume",
            Command::Stats(_) => "stats",
            Command::Cp(_) => "cp",
            Command::Diff(_) => "diff",
            Command::Commit(_) => "commit",
            Command::Export(_) => "export",
            Command::Events(_) => "events",
            Command::Pull(_) => "pull",
            Command::Search(_) => "search",
            Command::History(_) => "history",
            Command::Save(_) => "save",
            Command::Load(_) => "load",
            Command::Login(_) => "login",
            Command::Logout(_) => "logout",
            Command::Push(_) => "push",
            Command::Images(_) => "images",
            Command::Image(_) => "image",
            Command::Import(_) => "import",
            Command::Tag(_) => "tag",
            Command::Rmi(_) => "rmi",
            Command::Version(_) => "version",
            Command::Info(_) => "info",
            Command::Completion(_) => "completion",
        }
    }

    /// Commands that run a container report engine failures with 125, as Docker does.
    fn runs_a_container(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Create(_) | Command::Start(_) | Command::Exec(_))
    }
}

async fn run_command(cli: Cli) -> Outcome {
    if let Command::Completion(args) = cli.command {
        return completion::run(args);
    }
    if let Command::Logout(args) = cli.command {
        return logout::run(args);
    }
    if let Command::Version(args) = cli.command {
        return version::run(args, &cli.host, Connection::open(&cli.host, &cli.namespace).await).await;
    }
    let connection = match Connection::open(&cli.host, &cli.namespace).await {
        Ok(connection) => connection,
        Err(err) if cli.command.runs_a_container() => {
            return Err(crate::exit::Exit::with_code(crate::exit::CLI_FAILURE, err));
        }
        Err(err) => return Err(err.into()),
    };
    match cli.command {
        Command::Run(args) => run::run(args, connection).await,
        Command::Create(args) => create::run(args, connection).await,
        Command::Start(args) => start::run(args, connection).await,
        Command::Attach(args) => attach::run(args, connection).await,
        Command::Stop(args) => lifecycle::stop(args, connection).await,
        Command::Restart(args) => lifecycle::restart(args, connection).await,
        Command::Kill(args) => lifecycle::kill(args, connection).await,
        Command::Rm(args) => lifecycle::rm(args, connection).await,
        Command::Pause(args) => lifecycle::pause(args, connection).await,
        Command::Unpause(args) => lifecycle::unpause(args, connection).await,
        Command::Wait(args) => lifecycle::wait(args, connection).await,
        Command::Ps(args) => ps::run(args, connection).await,
        Command::Logs(args) => logs::run(args, connection).await,
        Command::Inspect(args) => inspect::run(args, connection).await,
        Command::Exec(args) => exec::run(args, connection).await,
        Command::Top(args) => top::run(args, connection).await,
        Command::Port(args) => port::run(args, connection).await,
        Command::Network(command) => network::run(command, connection).await,
        Command::Volume(command) => volume::run(command, connection).await,
        Command::Stats(args) => stats::run(args, connection).await,
        Command::Cp(args) => cp::run(args, connection).await,
        Command::Diff(args) => filesystem::diff(args, connection).await,
        Command::Commit(args) => filesystem::commit(args, connection).await,
        Command::Export(args) => filesystem::export(args, connection).await,
        Command::Events(args) => events::run(args, connection).await,
        Command::Pull(args) => pull::run(args, connection).await,
        Command::Search(args) => search::run(args, connection).await,
        Command::History(args) => history::run(args, connection).await,
        Command::Save(args) => save::run(args, connection).await,
        Command::Load(args) => load::run(args, connection).await,
        Command::Login(args) => login::run(args, connection).await,
        Command::Push(args) => push::run(args, connection).await,
        Command::Images(args) => images::run(args, connection).await,
        Command::Image(command) => image::run(command, connection).await,
        Command::Import(args) => import::run(args, connection).await,
        Command::Tag(args) => tag::run(args, connection).await,
        Command::Rmi(args) => rmi::run(args, connection).await,
        Command::Info(args) => info::run(args, connection).await,
        Command::Version(_) | Command::Completion(_) | Command::Logout(_) => Ok(()),
    }
}

/// Runs `action` for each name, printing the name on success and Docker's error line on
/// failure; Err when any failed.
pub async fn for_each<F, Fut>(names: &[String], mut action: F) -> Result<(), ()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for name in names {
        match action(name.clone()).await {
            Ok(()) => println!("{name}"),
            Err(status) => {
                eprintln!("Error response from daemon: {}", status.message());
                failed = true;
            }
        }
    }
    if failed { Err(()) } else { Ok(()) }
}
