//! A process's stdio: output (pipes, or a pty master) pumped into the log and to every
//! attached client, and the input clients write to.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use berth_common::crilog::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, watch};

use crate::pty::PtyMaster;

type Input = Box<dyn AsyncWrite + Send + Unpin>;

use crate::logfile::LogFile;

/// One chunk of output.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Arc<[u8]>,
}

/// Chunks buffered per attached client before it is considered too slow and skips ahead.
const ATTACH_BUFFER: usize = 1024;
const READ_SIZE: usize = 32 * 1024;

/// The hub exists from the moment a process is defined, so clients can attach before it
/// starts and miss nothing.
pub struct IoHub {
    output: broadcast::Sender<Chunk>,
    /// Number of output streams still open; 0 once every stream hit EOF (or never opened).
    open_streams: watch::Sender<usize>,
    stdin: tokio::sync::Mutex<Option<Input>>,
    /// Set for a process with a terminal.
    terminal: Mutex<Option<PtyMaster>>,
    /// A size asked for before the terminal exists (an exec attached before it starts).
    pending_size: Mutex<Option<(u16, u16)>>,
    log: Option<Arc<Mutex<LogFile>>>,
}

impl IoHub {
    pub fn new(log: Option<LogFile>) -> IoHub {
        let (output, _) = broadcast::channel(ATTACH_BUFFER);
        let (open_streams, _) = watch::channel(0);
        IoHub {
            output,
            open_streams,
            stdin: tokio::sync::Mutex::new(None),
            terminal: Mutex::new(None),
            pending_size: Mutex::new(None),
            log: log.map(|l| Arc::new(Mutex::new(l))),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        self.output.subscribe()
    }

    /// Starts pumping an output pipe. Call for each stream before the process starts.
    pub fn pump(self: &Arc<Self>, stream: Stream, read_end: OwnedFd) -> std::io::Result<()> {
        self.pump_reader(stream, pipe::Receiver::from_owned_fd(read_end)?);
        Ok(())
    }

    /// Wires a terminal: its output is the process's stdout, its input the stdin.
    pub async fn attach_terminal(self: &Arc<Self>, master: PtyMaster) {
        if let Some((width, height)) = self.pending_size.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = master.resize(width, height);
        }
        *self.terminal.lock().unwrap_or_else(|p| p.into_inner()) = Some(master.clone());
        *self.stdin.lock().await = Some(Box::new(master.clone()));
        self.pump_reader(Stream::Stdout, master);
    }

    /// Resizes the terminal, or remembers the size until the terminal exists.
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        match self.terminal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(master) => master.resize(width, height),
            None => {
                *self.pending_size.lock().unwrap_or_else(|p| p.into_inner()) = Some((width, height));
                Ok(())
            }
        }
    }

    fn pump_reader(self: &Arc<Self>, stream: Stream, mut reader: impl AsyncRead + Unpin + Send + 'static) {
        self.open_streams.send_modify(|n| *n += 1);
        let hub = self.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; READ_SIZE];
            loop {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => hub.emit(stream, &buffer[..n]),
                }
            }
            if let Some(log) = &hub.log {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(err) = log.finish(stream) {
                    tracing::warn!(error = %err, "cannot write the container log");
                }
            }
            hub.open_streams.send_modify(|n| *n = n.saturating_sub(1));
        });
    }

    fn emit(&self, stream: Stream, data: &[u8]) {
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(err) = log.write(stream, data) {
                tracing::warn!(error = %err, "cannot write the container log");
            }
        }
        // No receivers is fine: output then only goes to the log.
        let _ = self.output.send(Chunk { stream, data: Arc::from(data) });
    }

    /// Resolves once every output stream reached EOF.
    pub async fn drained(&self) {
        let mut open = self.open_streams.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    pub async fn set_stdin(&self, write_end: OwnedFd) -> std::io::Result<()> {
        *self.stdin.lock().await = Some(Box::new(pipe::Sender::from_owned_fd(write_end)?));
        Ok(())
    }

    pub async fn write_stdin(&self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.lock().await.as_mut() {
            Some(stdin) => stdin.write_all(data).await,
            None => Ok(()),
        }
    }

    /// Closes stdin, so the process reads EOF. A terminal has no separate input to close;
    /// like Docker, send it an end-of-file character instead.
    pub async fn close_stdin(&self) {
        let has_terminal = self.terminal.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if has_terminal {
            let _ = self.write_stdin(&[0x04]).await;
        } else {
            self.stdin.lock().await.take();
        }
    }
}

/// A pipe whose write end the process gets and whose read end we keep (or the reverse for
/// stdin); close-on-exec so no other child inherits it.
pub fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}
