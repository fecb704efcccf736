//! `berth create`, and the create-then-pull-if-missing step `run` shares.

use anyhow::{Result, anyhow};
use berth_proto::containers::v1::{Container, CreateContainerRequest};
use berth_proto::images::v1::{PullRequest, pull_progress};

use super::container_options::ContainerOptions;
use crate::client::Connection;
use crate::exit::{CLI_FAILURE, Exit, Outcome};

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    #[command(flatten)]
    pub options: ContainerOptions,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let request = args.options.to_request(false, false).map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
    let container =
        create_pulling(&connection, request, &args.options).await.map_err(|e| Exit::with_code(CLI_FAILURE, e))?;
    println!("{}", container.id);
    Ok(())
}

fn is_missing_image(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound && status.message().starts_with("No such image")
}

/// Creates the container, pulling the image first when it is missing (or always, with
/// `--pull always`), as `docker run` does.
pub async fn create_pulling(
    connection: &Connection,
    request: CreateContainerRequest,
    options: &ContainerOptions,
) -> Result<Container> {
    if options.pull == "always" {
        pull(connection, &options.image, request.platform.clone()).await?;
    }
    let response = match connection.containers().create(request.clone()).await {
        Err(status) if is_missing_image(&status) && options.pull != "never" => {
            eprintln!("Unable to find image '{}' locally", options.image);
            pull(connection, &options.image, request.platform.clone()).await?;
            connection.containers().create(request).await?
        }
        other => other?,
    };
    let response = response.into_inner();
    for warning in &response.warnings {
        eprintln!("WARNING: {warning}");
    }
    response.container.ok_or_else(|| anyhow!("the daemon returned no container"))
}

/// Pulls an image, printing one status line per change to stderr.
async fn pull(connection: &Connection, image: &str, platform: Option<berth_proto::types::v1::Platform>) -> Result<()> {
    let request = PullRequest { reference: image.to_string(), platform, ..Default::default() };
    let mut stream = connection.images().pull(request).await?.into_inner();
    while let Some(progress) = stream.message().await? {
        match progress.event {
            Some(pull_progress::Event::Resolved(resolved)) => {
                eprintln!("{}: Pulling from {}", resolved.tag, resolved.name)
            }
            Some(pull_progress::Event::Done(done)) => {
                eprintln!("Digest: {}", done.digest);
                eprintln!("Status: Downloaded newer image for {}", done.name);
            }
            Some(pull_progress::Event::Message(message)) => eprintln!("{message}"),
            _ => {}
        }
    }
    Ok(())
}
