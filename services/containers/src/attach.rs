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

/// What the proxy does besides copying.
#[derive(Debug, Default, Clone)]
pub struct ProxyOptions {
    /// Detach when the client types this sequence (terminal sessions).
    pub detach_keys: Option<Vec<u8>>,
    /// Size the terminal first.
    pub size: Option<berth_proto::types::v1::WindowSize>,
}

pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses Docker's detach-key notation: comma-separated keys, each a single character or
/// `ctrl-<x>` (`ctrl-a`..`ctrl-z`, `ctrl-@`, `ctrl-[`, `ctrl-\`, `ctrl-]`, `ctrl-^`, `ctrl-_`).
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>> {
    let text = if text.is_empty() { DEFAULT_DETACH_KEYS } else { text };
    let bad = || Error::InvalidArgument(format!("invalid detach keys {text:?}: use e.g. ctrl-p,ctrl-q"));
    text.split(',')
        .map(|key| match key.strip_prefix("ctrl-") {
            Some(rest) if rest.len() == 1 => match rest.as_bytes()[0].to_ascii_lowercase() {
                c @ b'a'..=b'z' => Ok(c - b'a' + 1),
                b'@' => Ok(0),
                b'[' => Ok(27),
                b'\\' => Ok(28),
                b']' => Ok(29),
                b'^' => Ok(30),
                b'_' => Ok(31),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
            None if key.len() == 1 => Ok(key.as_bytes()[0]),
            None => Err(bad()),
        })
        .collect()
}

/// Watches stdin for the detach sequence. Bytes that could start the sequence are held
/// back until it is clear whether they complete it.
struct DetachMatcher {
    keys: Vec<u8>,
    held: Vec<u8>,
}

enum Scan {
    /// Forward these bytes.
    Forward(Vec<u8>),
    /// The sequence was typed; forward these bytes first.
    Detach(Vec<u8>),
}

impl DetachMatcher {
    fn scan(&mut self, data: &[u8]) -> Scan {
        let mut out = Vec::with_capacity(data.len());
        for &byte in data {
            self.held.push(byte);
            // Release held bytes from the front until what is held could still become
            // the sequence.
            while !self.held.is_empty() && !self.keys.starts_with(&self.held) {
                out.push(self.held.remove(0));
            }
            if self.held.len() == self.keys.len() {
                self.held.clear();
                return Scan::Detach(out);
            }
        }
        Scan::Forward(out)
    }
}

fn stdin_item(data: Vec<u8>) -> shim::AttachRequest {
    shim::AttachRequest { item: Some(shim::attach_request::Item::Stdin(data)) }
}

/// Shuttles data between a client and a shim until the process's output ends, the
/// client detaches, or the client goes away. The client's stdin, resizes and close-stdin
/// go up; stdout/stderr (and the exit) come down.
pub async fn proxy(
    mut client_in: Streaming<AttachRequest>,
    client_out: mpsc::Sender<std::result::Result<AttachResponse, Status>>,
    streams: ShimStreams,
    options: ProxyOptions,
) {
    let ShimStreams { input, mut output } = streams;
    if let Some(size) = options.size {
        let _ = input.send(shim::AttachRequest { item: Some(shim::attach_request::Item::Resize(size)) }).await;
    }
    let detached_out = client_out.clone();
    let mut matcher = options.detach_keys.map(|keys| DetachMatcher { keys, held: Vec::new() });
    let upstream = async move {
        while let Ok(Some(message)) = client_in.message().await {
            let item = match message.item {
                Some(attach_request::Item::Stdin(data)) => match matcher.as_mut().map(|m| m.scan(&data)) {
                    None => shim::attach_request::Item::Stdin(data),
                    Some(Scan::Forward(data)) if data.is_empty() => continue,
                    Some(Scan::Forward(data)) => shim::attach_request::Item::Stdin(data),
                    Some(Scan::Detach(before)) => {
                        if !before.is_empty() {
                            let _ = input.send(stdin_item(before)).await;
                        }
                        let _ = detached_out.send(client_message(attach_response::Item::Detached(true))).await;
                        return;
                    }
                },
                Some(attach_request::Item::Resize(size)) => shim::attach_request::Item::Resize(size),
                Some(attach_request::Item::CloseStdin(close)) => shim::attach_request::Item::CloseStdin(close),
                _ => continue,
            };
            if input.send(shim::AttachRequest { item: Some(item) }).await.is_err() {
                break;
            }
        }
        // The client stopped sending but may still read output.
        std::future::pending::<()>().await;
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
    // The output ending (the process exited and its output drained) or a detach ends the
    // session.
    tokio::select! {
        () = downstream => {}
        () = upstream => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert_eq!(parse_detach_keys("ctrl-\\").unwrap(), vec![28]);
        assert!(parse_detach_keys("ctrl-p,ctrl-").is_err());
        assert!(parse_detach_keys("alt-x").is_err());
    }

    #[test]
    fn matcher_holds_prefixes_and_releases_mismatches() {
        let mut m = DetachMatcher { keys: vec![16, 17], held: Vec::new() };
        assert!(matches!(m.scan(b"ab"), Scan::Forward(ref v) if v == b"ab"));
        assert!(matches!(m.scan(&[b'x', 16]), Scan::Forward(ref v) if v == b"x"));
        // The held ctrl-p was not followed by ctrl-q: it goes through; the new one is held.
        assert!(matches!(m.scan(&[16, b'y']), Scan::Forward(ref v) if v == &[16, 16, b'y']));
        assert!(matches!(m.scan(&[b'z', 16, 17]), Scan::Detach(ref v) if v == b"z"));
    }
}
