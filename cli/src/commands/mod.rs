//! One module per command.

mod completion;
mod info;
mod version;

use clap::Subcommand;
use tracing::Instrument;

use crate::Cli;
use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, Subcommand)]
pub enum Command {
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
            Command::Version(_) => "version",
            Command::Info(_) => "info",
            Command::Completion(_) => "completion",
        }
    }
}

async fn run_command(cli: Cli) -> Outcome {
    let connect = || Connection::open(&cli.host, &cli.namespace);
    match cli.command {
        Command::Version(args) => version::run(args, &cli.host, connect().await).await,
        Command::Info(args) => info::run(args, connect().await?).await,
        Command::Completion(args) => completion::run(args),
    }
}
