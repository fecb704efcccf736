//! `berth cp [-a] CONTAINER:SRC DEST|-` and `berth cp [-a] SRC|- CONTAINER:DEST`, with
//! Docker's rules for naming the result: copying onto an existing directory puts the
//! source inside it; copying onto a missing path gives the copy that name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use berth_proto::containers::v1::{
    CopyFromRequest, CopyToOptions, CopyToRequest, StatPathRequest, copy_from_response, copy_to_request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    source: String,
    destination: String,
}

/// "name:path" splits at the first ':' when the part before it does not look like a
/// local path, as Docker does.
fn container_path(spec: &str) -> Option<(&str, &str)> {
    if spec.starts_with('/') || spec.starts_with('.') {
        return None;
    }
    spec.split_once(':').filter(|(name, _)| !name.is_empty())
}

fn file_name(path: &str) -> Result<String> {
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("cannot copy {path:?}: it has no file name"))
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let _ = args.follow_link;
    match (container_path(&args.source), container_path(&args.destination)) {
        (Some((container, path)), None) => copy_out(&connection, container, path, &args.destination).await?,
        (None, Some((container, path))) => copy_in(&connection, &args.source, container, path, args.archive).await?,
        (Some(_), Some(_)) => return Err(anyhow!("copying between containers is not supported").into()),
        (None, None) => return Err(anyhow!("must specify at least one container source").into()),
    }
    Ok(())
}

async fn copy_out(connection: &Connection, container: &str, path: &str, destination: &str) -> Result<()> {
    let request = CopyFromRequest { id: container.to_string(), path: path.to_string() };
    let mut stream = connection.containers().copy_from(request).await?.into_inner();
    let stat = match stream.message().await? {
        Some(message) => match message.item {
            Some(copy_from_response::Item::Stat(stat)) => stat,
            _ => bail!("the daemon sent no file information"),
        },
        None => bail!("the daemon sent nothing"),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let forward = async move {
        while let Some(message) = stream.message().await? {
            if let Some(copy_from_response::Item::Data(data)) = message.item
                && sender.send(data).await.is_err()
            {
                break;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    if destination == "-" {
        let mut stdout = tokio::io::stdout();
        let mut receiver = receiver;
        let write = async {
            while let Some(chunk) = receiver.recv().await {
                stdout.write_all(&chunk).await?;
            }
            stdout.flush().await?;
            Ok::<(), anyhow::Error>(())
        };
        let (a, b) = tokio::join!(forward, write);
        return a.and(b);
    }
    // Docker's naming: onto an existing directory the copy keeps its name inside it;
    // otherwise the copy takes the destination's name.
    let destination = PathBuf::from(destination);
    let (directory, name) = if destination.is_dir() {
        (destination.clone(), stat.name.clone())
    } else {
        let parent = destination.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        (parent, file_name(&destination.to_string_lossy())?)
    };
    let source_name = stat.name.clone();
    let extract = tokio::task::spawn_blocking(move || extract_local(receiver, &directory, &source_name, &name));
    let (forwarded, extracted) = tokio::join!(forward, extract);
    forwarded?;
    extracted.context("extracting")??;
    Ok(())
}

/// Unpacks the archive into `directory`, naming its top entry `to` instead of `from`.
fn extract_local(receiver: tokio::sync::mpsc::Receiver<Vec<u8>>, directory: &Path, from: &str, to: &str) -> Result<()> {
    let reader = BlockingReader { receiver, current: Vec::new(), position: 0 };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    if from == to {
        archive.unpack(directory).with_context(|| format!("extracting into {}", directory.display()))?;
        return Ok(());
    }
    // Unpack beside the destination, then rename: the tar crate keeps entries inside the
    // staging directory, and the rename gives the copy its new name.
    let staging = tempfile::Builder::new().prefix(".berth-cp-").tempdir_in(directory)?;
    archive.unpack(staging.path()).with_context(|| format!("extracting into {}", directory.display()))?;
    let wanted = directory.join(to);
    if wanted.is_file() || wanted.is_symlink() {
        std::fs::remove_file(&wanted)?;
    }
    std::fs::rename(staging.path().join(from), &wanted).with_context(|| format!("naming {}", wanted.display()))?;
    Ok(())
}

struct BlockingReader {
    receiver: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.position >= self.current.len() {
            match self.receiver.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.position = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.position);
        out[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

async fn copy_in(connection: &Connection, source: &str, container: &str, path: &str, archive: bool) -> Result<()> {
    let target =
        connection.containers().stat_path(StatPathRequest { id: container.to_string(), path: path.to_string() }).await;
    let is_dir = |mode: u32| mode & 0o170000 == 0o040000;
    // Where to extract, and what to call the source's top entry.
    let (directory, name) = match target {
        Ok(response) if response.get_ref().stat.as_ref().is_some_and(|s| is_dir(s.mode)) => {
            (path.to_string(), if source == "-" { String::new() } else { file_name(source)? })
        }
        Ok(_) if source != "-" && !Path::new(source).is_dir() => {
            let parent = Path::new(path).parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into());
            (parent, file_name(path)?)
        }
        Ok(_) => bail!("{path} exists in the container and is not a directory"),
        Err(status) if status.code() == tonic::Code::NotFound && source != "-" => {
            let parent = Path::new(path).parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into());
            (parent, file_name(path)?)
        }
        Err(status) => return Err(status.into()),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<CopyToRequest>(8);
    let options =
        CopyToOptions { id: container.to_string(), path: directory, copy_uid_gid: archive, ..Default::default() };
    sender.send(CopyToRequest { item: Some(copy_to_request::Item::Options(options)) }).await?;
    let mut containers = connection.containers();
    let upload = containers.copy_to(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let produce = async move {
        if source == "-" {
            let mut stdin = tokio::io::stdin();
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                let n = stdin.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                let item = CopyToRequest { item: Some(copy_to_request::Item::Data(buffer[..n].to_vec())) };
                if sender.send(item).await.is_err() {
                    break;
                }
            }
            return Ok(());
        }
        let source = PathBuf::from(source);
        let (chunks, mut chunk_receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let archiving = tokio::task::spawn_blocking(move || {
            let mut builder = tar::Builder::new(ChunkWriter { sender: chunks, buffer: Vec::new() });
            builder.follow_symlinks(false);
            if source.is_dir() {
                builder.append_dir_all(&name, &source)?;
            } else {
                builder.append_path_with_name(&source, &name)?;
            }
            builder.into_inner()?.flush_all()
        });
        while let Some(chunk) = chunk_receiver.recv().await {
            if sender.send(CopyToRequest { item: Some(copy_to_request::Item::Data(chunk)) }).await.is_err() {
                break;
            }
        }
        archiving.await.context("archiving")?.context("archiving")?;
        Ok::<(), anyhow::Error>(())
    };
    let (uploaded, produced) = tokio::join!(upload, produce);
    produced?;
    uploaded?;
    Ok(())
}

struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn flush_all(mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut self)
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buffer);
        self.sender
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload ended"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_are_recognized_like_docker() {
        assert_eq!(container_path("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(container_path("/tmp/a:b"), None);
        assert_eq!(container_path("./x:y"), None);
        assert_eq!(container_path("plain"), None);
    }
}
