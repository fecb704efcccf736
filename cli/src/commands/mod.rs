//! One module per command.

mod completion;
mod events;
mod info;
mod version;

use clap::Subcommand;

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
    /// Get real time events from the server
    Events(events::Args),
}

pub async fn run(cli: Cli) -> Outcome {
    let connect = || Connection::open(&cli.host, &cli.namespace);
    match cli.command {
        Command::Version(args) => version::run(args, &cli.host, connect().await).await,
        Command::Info(args) => info::run(args, connect().await?).await,
        Command::Completion(args) => completion::run(args),
        Command::Events(args) => events::run(args, connect().await?).await,
    }
}
