//! Attaching clients to a process's stdio: the tasks service proxies between the
//! client's stream and the shim's, and a client that attaches before the container starts
//! (as `berth run` does) is connected to the shim as soon as the shim exists, before the
//! process starts, so no output is missed.

use berth_proto::shim::v1 as shim;
use berth_proto::tasks::v1::{AttachRequest, AttachResponse, attach_request, attach_response};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::error::{Error, Result};
use crate::registry::Shim;

pub struct ShimStreams {
    pub input: mpsc::Sender<shim::AttachRequest>,
    pub output: Streaming<shim::AttachResponse>,
}

/// Opens an attach stream on the shim and waits until it confirms.
pub async fn open_on_shim(shim: &mut Shim, open: shim::AttachOpen) -> Result<ShimStreams> {
    let (input, receiver) = mpsc::channel(64);
    let _ = input.send(shim::AttachRequest { item: Some(shim::attach_request::Item::Open(open)) }).await;
    let mut output = shim.attach(tokio_stream::wrappers::ReceiverStream::new(receiver)).await?.into_inner();
    match output.message().await? {
        Some(shim::AttachResponse { item: Some(shim::attach_response::Item::Attached(true)) }) => {
            Ok(ShimStreams { input, output })
        }
        _ => Err(Error::FailedPrecondition("the shim did not confirm the attach".into())),
    }
}

fn client_message(item: attach_response::Item) -> std::result::Result<AttachResponse, Status> {
    Ok(AttachResponse { item: Some(item) })
}

/// Shuttles data between a client and a shim until the process's output ends or the
/// client goes away. The client's stdin, resizes and close-stdin go up; stdout/stderr
/// come down.
pub async fn proxy(
    mut client_in: Streaming<AttachRequest>,
    client_out: mpsc::Sender<std::result::Result<AttachResponse, Status>>,
    streams: ShimStreams,
) {
    let ShimStreams { input, mut output } = streams;
    let upstream = async move {
        while let Ok(Some(message)) = client_in.message().await {
            let item = match message.item {
                Some(attach_request::Item::Stdin(data)) => shim::attach_request::Item::Stdin(data),
                Some(attach_request::Item::Resize(size)) => shim::attach_request::Item::Resize(size),
                Some(attach_request::Item::CloseStdin(close)) => shim::attach_request::Item::CloseStdin(close),
                _ => continue,
            };
            if input.send(shim::AttachRequest { item: Some(item) }).await.is_err() {
                break;
            }
        }
    };
    let downstream = async move {
        while let Ok(Some(message)) = output.message().await {
            let item = match message.item {
                Some(shim::attach_response::Item::Stdout(data)) => attach_response::Item::Stdout(data),
                Some(shim::attach_response::Item::Stderr(data)) => attach_response::Item::Stderr(data),
                Some(shim::attach_response::Item::Exit(exit)) => {
                    attach_response::Item::Exit(berth_proto::tasks::v1::ProcessExit {
                        exit_code: exit.exit_status as i32,
                        oom_killed: exit.oom_killed,
                    })
                }
                _ => continue,
            };
            if client_out.send(client_message(item)).await.is_err() {
                break;
            }
        }
    };
    // The output ending (the process exited and its pipes drained) ends the session; a
    // client that stops sending stdin keeps receiving output.
    tokio::pin!(upstream);
    tokio::select! {
        () = downstream => {}
        () = async { (&mut upstream).await; std::future::pending::<()>().await } => {}
    }
}
