//! `berth load [-i FILE]`: loads a docker-archive or OCI layout tar (optionally gzip or
//! zstd-compressed) from a file or stdin, streamed to the daemon in chunks.

use anyhow::Context;
use berth_proto::images::v1::{LoadOptions, LoadRequest, load_progress, load_request};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::import::{read_failure, send_file};
use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read from tar archive file, instead of STDIN.
    #[arg(long, short = 'i')]
    pub input: Option<String>,
    /// Suppress the load output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Load only this platform of a multi-platform archive (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let input = args.input.clone().unwrap_or_else(|| "-".into());
    if input == "-" && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(anyhow::anyhow!("requested load from stdin, but stdin is empty").into());
    }
    let options = LoadOptions {
        quiet: args.quiet,
        platform: args.platform.as_deref().map(super::pull::parse_platform).transpose()?,
    };
    let (tx, rx) = mpsc::channel(4);
    tx.send(LoadRequest { payload: Some(load_request::Payload::Options(options)) })
        .await
        .context("starting the load")?;
    let mut failure =
        Some(send_file(&input, tx, |data| LoadRequest { payload: Some(load_request::Payload::Data(data)) }).await?);
    let mut client = connection.images();
    let mut stream = tokio::select! {
        biased;
        err = read_failure(&mut failure) => return Err(err.into()),
        response = client.load(ReceiverStream::new(rx)) => response.map_err(anyhow::Error::from)?.into_inner(),
    };
    loop {
        let message = tokio::select! {
            biased;
            err = read_failure(&mut failure) => return Err(err.into()),
            message = stream.next() => message,
        };
        let Some(message) = message else { break };
        match message.map_err(anyhow::Error::from)?.event {
            Some(load_progress::Event::LoadedImage(name)) => println!("Loaded image: {name}"),
            Some(load_progress::Event::LoadedImageId(id)) => println!("Loaded image ID: {id}"),
            Some(load_progress::Event::Message(text)) if !args.quiet => eprintln!("{text}"),
            _ => {}
        }
    }
    Ok(())
}
