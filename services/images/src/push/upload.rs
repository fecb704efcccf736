//! One blob to a registry: nothing when the repository has it already (HEAD), a
//! cross-repository mount when another repository of the registry is known to hold it,
//! else an upload streamed from the content store: one monolithic PUT, or chunked PATCHes
//! when the registry refuses that (e.g. 413 for a large blob), retried on transient errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use oci_client::errors::OciDistributionError;
use tokio_util::io::ReaderStream;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::registry;
use crate::state::State;

/// Bytes per read from the content store (and per PATCH when uploading in chunks).
const CHUNK: usize = 4 * 1024 * 1024;
const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Existed,
    Mounted(String),
    Uploaded,
}

/// What uploads of one push share.
pub struct Target<'a> {
    pub state: &'a Arc<State>,
    pub client: &'a oci_client::Client,
    /// Used when the registry refuses monolithic uploads.
    pub chunked_client: &'a oci_client::Client,
    pub reference: &'a oci_client::Reference,
    pub registry: &'a str,
}

fn refuses_monolithic(err: &OciDistributionError) -> bool {
    matches!(
        err,
        OciDistributionError::SpecViolationError(_)
            | OciDistributionError::ServerError { code: 400 | 405 | 411 | 413 | 416, .. }
    )
}

fn transient(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        _ => false,
    }
}

impl Target<'_> {
    /// Makes `digest` present in the target repository; `sources` are repositories of the
    /// same registry that hold it; `sent` counts uploaded bytes for progress.
    pub async fn ensure(&self, digest: &Digest, size: u64, sources: &[String], sent: &AtomicU64) -> Result<Outcome> {
        let what = format!("blob {digest}");
        if self.client.blob_exists(self.reference, digest.as_str()).await.map_err(|e| registry::error(&what, e))? {
            return Ok(Outcome::Existed);
        }
        for source in sources.iter().filter(|s| *s != self.reference.repository()) {
            let from = oci_client::Reference::with_tag(self.registry.to_string(), source.clone(), "latest".into());
            match self.client.mount_blob(self.reference, &from, digest.as_str()).await {
                Ok(()) => return Ok(Outcome::Mounted(source.clone())),
                // 202 instead of 201: the registry started an upload instead of mounting.
                Err(err) => tracing::debug!(%digest, %source, error = %err, "cross-repository mount not done"),
            }
        }
        if !self.state.content.exists(digest) {
            return Err(Error::NotFound(format!(
                "{what} is not in the local content store (pull the image again to push it)"
            )));
        }
        let mut chunked = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            sent.store(0, Ordering::Relaxed);
            let client = if chunked { self.chunked_client } else { self.client };
            match self.upload(client, digest, size, sent).await {
                Ok(()) => return Ok(Outcome::Uploaded),
                Err(err) if !chunked && refuses_monolithic(&err) => {
                    tracing::info!(%digest, error = %err, "monolithic upload refused; uploading in chunks");
                    chunked = true;
                }
                Err(err) if attempt < ATTEMPTS && transient(&err) => {
                    tracing::info!(%digest, attempt, error = %err, "retrying the upload");
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(err) => return Err(registry::error(&format!("uploading {what}"), err)),
            }
        }
    }

    async fn upload(
        &self,
        client: &oci_client::Client,
        digest: &Digest,
        size: u64,
        sent: &AtomicU64,
    ) -> std::result::Result<(), OciDistributionError> {
        let file = self.state.content.open_blob(digest, 0).await.map_err(|e| std::io::Error::other(e.to_string()))?;
        // The chunked client sends one PATCH per stream item (at most CHUNK bytes).
        let chunks = ReaderStream::with_capacity(file, CHUNK);
        let counter = Arc::new(AtomicU64::new(0));
        let seen = counter.clone();
        let stream = chunks.map(move |chunk| {
            let chunk = chunk.map_err(OciDistributionError::IoError)?;
            seen.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok(chunk)
        });
        let push = client.push_blob_stream(self.reference, stream, digest.as_str(), Some(size));
        tokio::pin!(push);
        // Mirror the counter into `sent` while the upload runs (the stream must be 'static).
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                result = &mut push => {
                    sent.store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
                    return result.map(|_| ());
                }
                _ = tick.tick() => sent.store(counter.load(Ordering::Relaxed), Ordering::Relaxed),
            }
        }
    }
}
