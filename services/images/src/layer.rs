//! Layer blobs made from tar streams (import): the input, plain or gzip/zstd-compressed,
//! is decompressed, hashed for its diff_id, gzip-compressed and written to the content
//! store in one pass, on a blocking thread, one chunk at a time.

use std::io::{BufRead, BufReader, Read, Write};

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::state::State;

const CHUNK: usize = 1024 * 1024;

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer written to the content store.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// The compressed blob.
    pub digest: Digest,
    pub size: u64,
    pub media_type: &'static str,
    /// The uncompressed tar.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a stream, from its first bytes.
pub fn detect(magic: &[u8]) -> Result<Compression> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Compression::Zstd);
    }
    if magic.starts_with(b"BZh") {
        return Err(Error::Unsupported("bzip2-compressed archives are not supported; use gzip, zstd or none".into()));
    }
    if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Err(Error::Unsupported("xz-compressed archives are not supported; use gzip, zstd or none".into()));
    }
    Ok(Compression::None)
}

/// `reader` decompressed according to its first bytes.
pub fn decompressed<'a, R: Read + Send + 'a>(reader: R) -> Result<Box<dyn Read + Send + 'a>> {
    let mut input = BufReader::with_capacity(CHUNK, reader);
    let magic = input.fill_buf().map_err(|e| Error::io("reading the archive", e))?;
    if magic.is_empty() {
        return Err(Error::InvalidArgument("the archive is empty".into()));
    }
    Ok(match detect(magic)? {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::Decoder::with_buffer(input).map_err(|e| Error::io("opening the zstd stream", e))?)
        }
    })
}

/// A `Write` that hands full chunks to the async side.
struct ChunkSink {
    tx: mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| std::io::Error::other("the content writer stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses, hashes and gzips `tar` (a blocking reader) into the content store under
/// ingest `ingest_ref`. The ingest is removed when anything fails.
pub async fn store_gzip_layer(
    state: &State,
    tar: Box<dyn Read + Send + 'static>,
    ingest_ref: &str,
) -> Result<LayerBlob> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let worker = tokio::task::spawn_blocking(move || -> Result<(Digest, u64)> {
        let mut input = decompressed(tar)?;
        let mut encoder =
            GzEncoder::new(ChunkSink { tx, buffer: Vec::with_capacity(CHUNK) }, flate2::Compression::default());
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = input.read(&mut buffer).map_err(|e| Error::io("reading the archive", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            total += n as u64;
            encoder.write_all(&buffer[..n]).map_err(|e| Error::io("compressing the layer", e))?;
        }
        let mut sink = encoder.finish().map_err(|e| Error::io("compressing the layer", e))?;
        sink.send().map_err(|e| Error::io("compressing the layer", e))?;
        Ok((Digest::from_hasher(hasher), total))
    });
    let written = async {
        let mut writer = state.content.writer(ingest_ref, None, None).await?;
        writer.truncate(0).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = rx.recv().await {
            hasher.update(&chunk);
            writer.write(&chunk).await?;
        }
        Ok::<_, Error>((writer, Digest::from_hasher(hasher)))
    }
    .await;
    // The receiver is gone now (or drained), so the worker cannot block on it.
    let worked = worker.await.map_err(|e| Error::Internal(format!("layer compression task failed: {e}")))?;
    let result = match (written, worked) {
        (Ok((writer, digest)), Ok((diff_id, uncompressed_size))) => {
            let size = writer.offset();
            writer.commit(Some(size), &digest).await.map(|digest| LayerBlob {
                digest,
                size,
                media_type: OCI_LAYER_GZIP,
                diff_id,
                uncompressed_size,
            })
        }
        // The reader's error explains a failed write better than "the writer stopped".
        (_, Err(err)) | (Err(err), _) => Err(err),
    };
    if result.is_err() {
        let _ = state.content.abort(ingest_ref);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_by_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]).unwrap(), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]).unwrap(), Compression::Zstd);
        assert_eq!(detect(b"./\0\0").unwrap(), Compression::None);
        assert!(detect(b"BZh91AY").is_err());
    }

    #[test]
    fn decompresses_gzip_and_zstd() {
        let data = b"hello layer".repeat(100);
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for input in [gz, zst, data.clone()] {
            let mut out = Vec::new();
            decompressed(&input[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        assert!(decompressed(&b""[..]).is_err());
    }
}
