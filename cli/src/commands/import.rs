//! `berth import file.tar|URL|- [REPOSITORY[:TAG]]`: a one-layer image from a rootfs
//! tarball (plain, gzip or zstd), streamed to the daemon in chunks; prints the image id.

use anyhow::Context;
use berth_proto::images::v1::{ImportOptions, ImportRequest, import_progress, import_request};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Connection;
use crate::exit::Outcome;

/// Bytes per request message (well below gRPC's 4 MiB default limit).
const CHUNK: usize = 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tarball: a file, an http(s) URL, or "-" for stdin.
    pub file: String,
    /// Name for the image; without it the image is untagged.
    pub reference: Option<String>,
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR).
    #[arg(long = "change", short = 'c')]
    pub changes: Vec<String>,
    /// Set commit message for imported image.
    #[arg(long, short = 'm', default_value = "")]
    pub message: String,
    /// Set platform if server is multi-platform capable (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Streams `path` ("-" for stdin) into `tx` as messages made by `wrap`, in chunks. A read
/// failure is sent on the returned receiver while `tx` is kept open, so the daemon never
/// sees a clean end of a truncated file: the caller returns the error, which cancels the
/// call.
pub async fn send_file<T: Send + 'static>(
    path: &str,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(Vec<u8>) -> T + Send + 'static,
) -> anyhow::Result<oneshot::Receiver<anyhow::Error>> {
    let mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = if path == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(path).await.with_context(|| format!("opening {path}"))?)
    };
    let path = path.to_string();
    let (failed, failure) = oneshot::channel();
    tokio::spawn(async move {
        loop {
            let mut buffer = vec![0u8; CHUNK];
            let mut filled = 0;
            // Fill whole chunks: stdin pipes hand out 64 KiB at a time.
            while filled < CHUNK {
                match reader.read(&mut buffer[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(err) => {
                        let _ = failed.send(anyhow::Error::new(err).context(format!("reading {path}")));
                        tx.closed().await;
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buffer.truncate(filled);
            if tx.send(wrap(buffer)).await.is_err() {
                // The daemon ended the call; its answer says why.
                return;
            }
        }
    });
    Ok(failure)
}

/// Resolves with the reader's error; pends forever once the reader finished cleanly.
pub async fn read_failure(failure: &mut Option<oneshot::Receiver<anyhow::Error>>) -> anyhow::Error {
    if let Some(receiver) = failure.as_mut() {
        match receiver.await {
            Ok(err) => return err,
            // The reader ended without failing; never poll the spent receiver again.
            Err(_) => *failure = None,
        }
    }
    std::future::pending().await
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let is_url = args.file.starts_with("http://") || args.file.starts_with("https://");
    let options = ImportOptions {
        reference: args.reference.clone().unwrap_or_default(),
        changes: args.changes,
        message: args.message,
        platform: args.platform.as_deref().map(super::pull::parse_platform).transpose()?,
        url: if is_url { args.file.clone() } else { String::new() },
    };
    let (tx, rx) = mpsc::channel(4);
    tx.send(ImportRequest { payload: Some(import_request::Payload::Options(options)) })
        .await
        .context("starting the import")?;
    let mut failure = if is_url {
        drop(tx);
        None
    } else {
        Some(
            send_file(&args.file, tx, |data| ImportRequest { payload: Some(import_request::Payload::Data(data)) })
                .await?,
        )
    };
    let mut client = connection.images();
    let mut stream = tokio::select! {
        biased;
        err = read_failure(&mut failure) => return Err(err.into()),
        response = client.import(ReceiverStream::new(rx)) => response.map_err(anyhow::Error::from)?.into_inner(),
    };
    let mut image_id = None;
    loop {
        let message = tokio::select! {
            biased;
            err = read_failure(&mut failure) => return Err(err.into()),
            message = stream.next() => message,
        };
        let Some(message) = message else { break };
        match message.map_err(anyhow::Error::from)?.event {
            Some(import_progress::Event::ImageId(id)) => image_id = Some(id),
            Some(import_progress::Event::Message(text)) => eprintln!("{text}"),
            None => {}
        }
    }
    println!("{}", image_id.context("the import ended without an image id")?);
    Ok(())
}
