//! An attach session: the local terminal's stdio wired to a container process through
//! the tasks service's bidirectional Attach stream.

use anyhow::{Context, Result, bail};
use berth_proto::tasks::v1::{AttachOpen, AttachRequest, ProcessExit, attach_request, attach_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Connection;

pub struct Session {
    /// The process's exit, when the stream reported it.
    pub exit: Option<ProcessExit>,
    pub detached: bool,
}

/// Attaches, runs `then` once the server confirms (e.g. starting the container, so no
/// output is missed), and copies output until the stream ends.
pub async fn run<F, Fut>(connection: &Connection, open: AttachOpen, then: F) -> Result<Session>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let forward_stdin = open.stdin;
    let (requests, receiver) = mpsc::channel(16);
    requests.send(AttachRequest { item: Some(attach_request::Item::Open(open)) }).await?;
    let mut responses =
        connection.tasks().attach(tokio_stream::wrappers::ReceiverStream::new(receiver)).await?.into_inner();
    match responses.message().await? {
        Some(message) if matches!(message.item, Some(attach_response::Item::Attached(true))) => {}
        _ => bail!("the daemon did not confirm the attach"),
    }
    then().await?;
    if forward_stdin {
        let requests = requests.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buffer = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buffer).await {
                    Ok(0) | Err(_) => {
                        let _ =
                            requests.send(AttachRequest { item: Some(attach_request::Item::CloseStdin(true)) }).await;
                        break;
                    }
                    Ok(n) => {
                        let item = attach_request::Item::Stdin(buffer[..n].to_vec());
                        if requests.send(AttachRequest { item: Some(item) }).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut session = Session { exit: None, detached: false };
    while let Some(message) = responses.message().await.context("attach stream")? {
        match message.item {
            Some(attach_response::Item::Stdout(data)) => {
                stdout.write_all(&data).await?;
                stdout.flush().await?;
            }
            Some(attach_response::Item::Stderr(data)) => {
                stderr.write_all(&data).await?;
                stderr.flush().await?;
            }
            Some(attach_response::Item::Exit(exit)) => session.exit = Some(exit),
            Some(attach_response::Item::Detached(true)) => session.detached = true,
            _ => {}
        }
    }
    drop(requests);
    Ok(session)
}
