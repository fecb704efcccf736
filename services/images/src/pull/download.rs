//! Blob downloads into the content store, shared between pulls: the first pull that needs
//! a blob starts its download; later pulls join it (same progress, same file). Readers can
//! follow a download while it is written (that is how a layer is unpacked while it
//! downloads). Each pull holds a [`Claim`] on the downloads it uses; when the last claim
//! goes (every pull that wanted the blob failed or went away) the download is cancelled.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use oci_client::manifest::OciDescriptor;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::registry;
use crate::state::State;

#[derive(Debug, Clone, Default)]
pub struct DownloadState {
    pub started: bool,
    pub written: u64,
    pub verifying: bool,
    /// `Some` once finished: the blob is committed (Ok) or the download failed. The
    /// failure is kept as a status (code and message) because every waiter gets a copy.
    pub outcome: Option<Result<(), tonic::Status>>,
    /// True when the blob was already in the store (nothing was downloaded).
    pub present: bool,
}

#[derive(Clone)]
pub struct Download {
    pub digest: Digest,
    pub size: u64,
    /// The ingest data file while downloading; the same inode is the blob afterwards.
    pub ingest_path: PathBuf,
    pub blob_path: PathBuf,
    pub state: watch::Receiver<DownloadState>,
    /// Claims of the pulls that want this blob; changed only under the downloads lock.
    claims: Arc<AtomicUsize>,
    cancel: CancellationToken,
}

/// A pull's hold on a download; dropping the last one cancels the download.
pub struct Claim {
    state: Arc<State>,
    download: Download,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let downloads = self.state.downloads.lock().unwrap_or_else(|p| p.into_inner());
        if self.download.claims.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.download.cancel.cancel();
        }
        drop(downloads);
    }
}

impl Download {
    /// Whether the download was cancelled because no pull wants it any more.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn is(&self, other: &Download) -> bool {
        Arc::ptr_eq(&self.claims, &other.claims)
    }

    /// Waits until the download ends.
    pub async fn finished(&self) -> Result<()> {
        let mut state = self.state.clone();
        let outcome = state
            .wait_for(|s| s.outcome.is_some())
            .await
            .map_err(|_| Error::Internal(format!("the download of {} ended without a result", self.digest)))?
            .outcome
            .clone();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => Err(Error::Dependency(status)),
            None => Err(Error::Internal("unreachable".into())),
        }
    }

    /// A reader of the blob's bytes from the start, following the download while it is
    /// written: it yields bytes as they land and ends when the committed blob ends.
    pub async fn follow(&self) -> Result<FollowReader> {
        let mut state = self.state.clone();
        state
            .wait_for(|s| s.started || s.outcome.is_some())
            .await
            .map_err(|_| Error::Internal(format!("the download of {} vanished", self.digest)))?;
        let open = |path: PathBuf| async move { tokio::fs::File::open(&path).await };
        let file = match open(self.ingest_path.clone()).await {
            Ok(file) if !state.borrow().present => file,
            _ => {
                // Already committed (renamed into the blob store) or never downloaded.
                self.finished().await?;
                open(self.blob_path.clone()).await.map_err(|e| Error::io(format!("opening blob {}", self.digest), e))?
            }
        };
        Ok(FollowReader { file, state, position: 0, digest: self.digest.clone() })
    }
}

pub struct FollowReader {
    file: tokio::fs::File,
    state: watch::Receiver<DownloadState>,
    position: u64,
    digest: Digest,
}

impl FollowReader {
    /// Up to `max` next bytes; empty at the end of the blob.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Vec<u8>> {
        loop {
            let (available, outcome) = {
                let state = self.state.borrow_and_update();
                let available =
                    if state.present || matches!(state.outcome, Some(Ok(()))) { u64::MAX } else { state.written };
                (available, state.outcome.clone())
            };
            if let Some(Err(status)) = outcome {
                return Err(Error::Dependency(status));
            }
            if available > self.position {
                let want = (available - self.position).min(max as u64) as usize;
                let mut buffer = vec![0u8; want];
                let n = self
                    .file
                    .read(&mut buffer)
                    .await
                    .map_err(|e| Error::io(format!("reading the download of {}", self.digest), e))?;
                if n > 0 {
                    buffer.truncate(n);
                    self.position += n as u64;
                    return Ok(buffer);
                }
                if available == u64::MAX {
                    return Ok(Vec::new());
                }
            }
            if self.state.changed().await.is_err() {
                // The sender is gone; the final state decides.
                let final_state = self.state.borrow().clone();
                if !matches!(final_state.outcome, Some(Ok(()))) {
                    return Err(Error::Internal(format!("the download of {} stopped", self.digest)));
                }
            }
        }
    }
}

/// The blob, downloaded (or joined, or found present), and this pull's claim on it.
/// `semaphore` bounds concurrent downloads of one pull.
pub fn start(
    state: &Arc<State>,
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    descriptor: &OciDescriptor,
    semaphore: Arc<Semaphore>,
) -> Result<(Download, Claim)> {
    let digest = Digest::parse(&descriptor.digest)?;
    let size = u64::try_from(descriptor.size).unwrap_or(0);
    let ingest_ref = format!("pull-{digest}");
    let blob_path = state.content.blob_path(&digest);
    let ingest_path = state.content.ingest_data_path(&ingest_ref);
    let claim = |download: &Download| {
        download.claims.fetch_add(1, Ordering::SeqCst);
        Claim { state: state.clone(), download: download.clone() }
    };
    let mut downloads = state.downloads.lock().unwrap_or_else(|p| p.into_inner());
    // A cancelled download is still cleaning up its ingest: the new one starts after it.
    let mut predecessor = None;
    if let Some(existing) = downloads.get(digest.as_str()) {
        if !existing.cancelled() {
            let claim = claim(existing);
            return Ok((existing.clone(), claim));
        }
        predecessor = Some(existing.clone());
    }
    let fresh = |outcome| {
        let (tx, rx) = watch::channel(outcome);
        let download = Download {
            digest: digest.clone(),
            size,
            ingest_path: ingest_path.clone(),
            blob_path: blob_path.clone(),
            state: rx,
            claims: Arc::default(),
            cancel: CancellationToken::new(),
        };
        (tx, download)
    };
    if state.content.exists(&digest) {
        let (_tx, download) = fresh(DownloadState {
            started: true,
            written: size,
            present: true,
            outcome: Some(Ok(())),
            ..Default::default()
        });
        let claim = claim(&download);
        return Ok((download, claim));
    }
    let (tx, download) = fresh(DownloadState::default());
    let claim = claim(&download);
    downloads.insert(digest.to_string(), download.clone());
    drop(downloads);

    let state = state.clone();
    let client = client.clone();
    let reference = reference.clone();
    let descriptor = descriptor.clone();
    let this = download.clone();
    tokio::spawn(async move {
        if let Some(previous) = predecessor {
            let _ = previous.finished().await;
        }
        let work = async {
            match semaphore.acquire_owned().await {
                Ok(_permit) => run(&state, &client, &reference, &descriptor, &digest, &ingest_ref, &tx).await,
                Err(_) => Err(Error::Internal("download slots closed".into())),
            }
        };
        // Cancelling drops the writer: the partial ingest is then the garbage collector's.
        let result = tokio::select! {
            result = work => result,
            _ = this.cancel.cancelled() => Err(Error::Cancelled(format!("the download of {digest} was cancelled: no pull needs it any more"))),
        };
        if let Err(err) = &result {
            tracing::warn!(digest = %digest, error = %err, "download failed");
        }
        // Leave the map before announcing the outcome, so a pull that starts after a
        // failure tries again instead of joining the failed download.
        let mut downloads = state.downloads.lock().unwrap_or_else(|p| p.into_inner());
        if downloads.get(digest.as_str()).is_some_and(|listed| listed.is(&this)) {
            downloads.remove(digest.as_str());
        }
        drop(downloads);
        tx.send_modify(|s| {
            s.started = true;
            s.outcome = Some(result.map_err(tonic::Status::from));
        });
    });
    Ok((download, claim))
}

async fn run(
    state: &State,
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    descriptor: &OciDescriptor,
    digest: &Digest,
    ingest_ref: &str,
    tx: &watch::Sender<DownloadState>,
) -> Result<()> {
    let size = u64::try_from(descriptor.size).ok().filter(|s| *s > 0);
    let mut writer = state.content.writer(ingest_ref, Some(digest.clone()), size).await?;
    if size.is_some_and(|size| writer.offset() >= size) {
        writer.truncate(0).await?;
    }
    tx.send_modify(|s| {
        s.started = true;
        s.written = writer.offset();
    });
    let what = format!("layer {digest}");
    // Transient registry errors resume where the last attempt stopped.
    let attempts = state.ctx.config.max_download_attempts;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = fetch_into(client, reference, descriptor, &what, &mut writer, tx).await;
        match result {
            Ok(()) => break,
            Err(err @ Error::DigestMismatch { .. }) => {
                let _ = writer.truncate(0).await;
                return Err(err);
            }
            Err(err) if attempt < attempts && matches!(err, Error::Registry(_)) => {
                tracing::info!(%digest, attempt, error = %err, "retrying the download");
                tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
            }
            Err(Error::Registry(message)) if attempts > 1 => {
                return Err(Error::Registry(format!("{message} (gave up after {attempt} attempts)")));
            }
            Err(err) => return Err(err),
        }
    }
    tx.send_modify(|s| s.verifying = true);
    writer.commit(size, digest).await?;
    Ok(())
}

/// Streams the blob (from the writer's offset, when resuming) into the writer.
async fn fetch_into(
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    descriptor: &OciDescriptor,
    what: &str,
    writer: &mut crate::content::store::Writer,
    tx: &watch::Sender<DownloadState>,
) -> Result<()> {
    let mut stream = if writer.offset() > 0 {
        match client
            .pull_blob_stream_partial(reference, descriptor, writer.offset(), None)
            .await
            .map_err(|e| registry::error(what, e))?
        {
            oci_client::client::BlobResponse::Partial(stream) => stream,
            oci_client::client::BlobResponse::Full(stream) => {
                writer.truncate(0).await?;
                tx.send_modify(|s| s.written = 0);
                stream
            }
        }
    } else {
        client.pull_blob_stream(reference, descriptor).await.map_err(|e| registry::error(what, e))?
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| registry::stream_error(what, e))?;
        writer.write(&chunk).await?;
        let written = writer.offset();
        tx.send_modify(|s| s.written = written);
    }
    Ok(())
}
