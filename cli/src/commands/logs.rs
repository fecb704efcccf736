//! `berth logs [-f] [-t] [--tail N] [--since] [--until] CONTAINER`

use anyhow::Result;
use berth_proto::tasks::v1::{LogStream, LogsRequest};
use tokio::io::AsyncWriteExt;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::parse_time;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Number of lines to show from the end of the logs ("all" for everything)
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or relative time
    #[arg(long)]
    until: Option<String>,
    container: String,
}

fn timestamp(text: &Option<String>) -> Result<Option<prost_types::Timestamp>> {
    text.as_deref().map(|t| parse_time(t).map(berth_common::time::to_proto)).transpose()
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let tail = if args.tail == "all" {
        None
    } else {
        Some(args.tail.parse::<i64>().map_err(|_| anyhow::anyhow!("invalid --tail value {:?}", args.tail))?)
    };
    let request = LogsRequest {
        container_id: args.container.clone(),
        follow: args.follow,
        stdout: true,
        stderr: true,
        since: timestamp(&args.since)?,
        until: timestamp(&args.until)?,
        tail,
        timestamps: args.timestamps,
    };
    let mut stream = connection.tasks().logs(request).await.map_err(anyhow::Error::from)?.into_inner();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(batch) = stream.message().await.map_err(anyhow::Error::from)? {
        for entry in batch.entries {
            let mut line = Vec::with_capacity(entry.data.len() + 32);
            if args.timestamps {
                line.extend_from_slice(crate::output::rfc3339(entry.timestamp.as_ref()).as_bytes());
                line.push(b' ');
            }
            line.extend_from_slice(&entry.data);
            if entry.stream == LogStream::Stderr as i32 {
                stderr.write_all(&line).await.map_err(anyhow::Error::from)?;
            } else {
                stdout.write_all(&line).await.map_err(anyhow::Error::from)?;
            }
        }
        stdout.flush().await.map_err(anyhow::Error::from)?;
        stderr.flush().await.map_err(anyhow::Error::from)?;
    }
    Ok(())
}
