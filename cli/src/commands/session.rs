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
/// output is missed), and copies output until the stream ends. With `tty`, the local
/// terminal is put in raw mode for the session and its size follows SIGWINCH.
pub async fn run<F, Fut>(connection: &Connection, mut open: AttachOpen, tty: bool, then: F) -> Result<Session>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let forward_stdin = open.stdin;
    if tty {
        open.size = crate::terminal::size();
    }
    let (requests, receiver) = mpsc::channel(16);
    requests.send(AttachRequest { item: Some(attach_request::Item::Open(open)) }).await?;
    let mut responses =
        connection.tasks().attach(tokio_stream::wrappers::ReceiverStream::new(receiver)).await?.into_inner();
    match responses.message().await? {
        Some(message) if matches!(message.item, Some(attach_response::Item::Attached(true))) => {}
        _ => bail!("the daemon did not confirm the attach"),
    }
    then().await?;
    // Raw only once the process runs, so a failed start prints normally; restored when
    // this function returns, however it returns.
    let _raw = if tty && forward_stdin { crate::terminal::RawMode::enable()? } else { None };
    if tty {
        let requests = requests.clone();
        tokio::spawn(async move {
            let Ok(mut changes) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
                return;
            };
            while changes.recv().await.is_some() {
                if let Some(size) = crate::terminal::size() {
                    let item = attach_request::Item::Resize(size);
                    if requests.send(AttachRequest { item: Some(item) }).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
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

/// Docker refuses `-it` when stdin is not a terminal (raw mode and resizing need one).
pub fn check_terminal(interactive: bool, tty: bool) -> Result<(), crate::exit::Exit> {
    if interactive && tty && !crate::terminal::stdin_is_terminal() {
        return Err(crate::exit::Exit::with_code(
            crate::exit::CLI_FAILURE,
            anyhow::anyhow!("the input device is not a TTY; drop -t (or run from a terminal)"),
        ));
    }
    Ok(())
}

/// Whether the container was created with a terminal.
pub async fn container_tty(connection: &Connection, container: &str) -> Result<bool, crate::exit::Exit> {
    let request = berth_proto::containers::v1::GetContainerRequest { id: container.to_string(), size: false };
    let container = connection.containers().get(request).await.map_err(anyhow::Error::from)?.into_inner().container;
    Ok(container.and_then(|c| c.config).is_some_and(|c| c.tty))
}
