//! One module per command.

mod completion;
mod image;
mod images;
mod info;
mod pull;
mod rmi;
mod tag;
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
    /// Download an image from a registry
    Pull(pull::Args),
    /// List images
    Images(images::Args),
    /// Manage images
    #[command(subcommand)]
    Image(image::Command),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(tag::Args),
    /// Remove one or more images
    Rmi(rmi::Args),
}

pub async fn run(cli: Cli) -> Outcome {
    let connect = || Connection::open(&cli.host, &cli.namespace);
    match cli.command {
        Command::Version(args) => version::run(args, &cli.host, connect().await).await,
        Command::Info(args) => info::run(args, connect().await?).await,
        Command::Completion(args) => completion::run(args),
        Command::Pull(args) => pull::run(args, connect().await?).await,
        Command::Images(args) => images::run(args, connect().await?).await,
        Command::Image(command) => image::run(command, connect().await?).await,
        Command::Tag(args) => tag::run(args, connect().await?).await,
        Command::Rmi(args) => rmi::run(args, connect().await?).await,
    }
}
