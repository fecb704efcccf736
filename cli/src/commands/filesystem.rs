//! `berth diff`, `berth commit`, `berth export`: a container's filesystem.

use anyhow::Context;
use berth_proto::containers::v1::{CommitContainerRequest, ContainerChangesRequest, ExportContainerRequest};
use tokio::io::AsyncWriteExt;

use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    container: String,
}

pub async fn diff(args: DiffArgs, connection: Connection) -> Outcome {
    let changes = connection
        .containers()
        .changes(ContainerChangesRequest { id: args.container })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner()
        .changes;
    for change in changes {
        println!("{} {}", change.kind, change.path);
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Author (e.g. "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set)]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

pub async fn commit(args: CommitArgs, connection: Connection) -> Outcome {
    let request = CommitContainerRequest {
        id: args.container,
        reference: args.reference.unwrap_or_default(),
        comment: args.message.unwrap_or_default(),
        author: args.author.unwrap_or_default(),
        changes: args.change,
        pause: args.pause,
    };
    let image_id = connection.containers().commit(request).await.map_err(anyhow::Error::from)?.into_inner().image_id;
    println!("{image_id}");
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    output: Option<std::path::PathBuf>,
    container: String,
}

pub async fn export(args: ExportArgs, connection: Connection) -> Outcome {
    if args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(anyhow::anyhow!("cowardly refusing to save to a terminal. Use the -o flag or redirect").into());
    }
    let mut stream = connection
        .containers()
        .export(ExportContainerRequest { id: args.container })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner();
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &args.output {
        Some(path) => {
            Box::new(tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(tokio::io::stdout()),
    };
    while let Some(chunk) = stream.message().await.map_err(anyhow::Error::from)? {
        out.write_all(&chunk.data).await.map_err(anyhow::Error::from)?;
    }
    out.flush().await.map_err(anyhow::Error::from)?;
    Ok(())
}
