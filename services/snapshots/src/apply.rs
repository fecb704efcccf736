//! Apply: unpack a compressed layer while its bytes stream in, verify its diff_id, commit.
//!
//! The async side (request stream or content-service read) feeds a bounded channel; a
//! blocking thread reads it through decompression and a SHA-256 of the uncompressed bytes
//! into the unpacker. Only a few chunks are ever in memory. The work happens in a fresh
//! directory no record points to, so a crash leaves nothing visible and Cleanup removes it.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use berth_common::Namespace;
use berth_common::client::BerthChannel;
use berth_proto::content::v1::ReadContentRequest;
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::snapshots::v1::{ApplyHeader, ApplyResponse};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::core::{Core, blocking, create_dirs};
use crate::error::{Error, Result};
use crate::store::{Kind, Record};
use crate::tree::Tree;
use crate::unpack::{SourceFailure, Unpacker};

/// Chunks in flight between the network and the unpacker.
const CHANNEL_DEPTH: usize = 8;

pub type Chunk = std::result::Result<Vec<u8>, String>;

/// A blocking reader over chunks sent from async code.
pub struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Vec<u8>,
    position: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> ChannelReader {
        ChannelReader { rx, current: Vec::new(), position: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position >= self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Some(Err(message)) => return Err(io::Error::other(SourceFailure(message))),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Compression of a layer: the magic bytes decide (registries mislabel layers); the
/// media type only serves to refuse what we cannot unpack.
pub fn detect_compression(media_type: &str, head: &[u8]) -> Result<Compression> {
    if media_type.contains("encrypted") {
        return Err(Error::InvalidArgument(format!("layer media type {media_type} is encrypted; cannot unpack it")));
    }
    let by_magic = if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(Error::InvalidArgument(
            "layer is bzip2/xz compressed; only gzip, zstd and plain tar are supported".into(),
        ));
    } else {
        Compression::None
    };
    let by_type = if media_type.ends_with("gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with("zstd") {
        Some(Compression::Zstd)
    } else if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    };
    if let Some(declared) = by_type
        && declared != by_magic
    {
        tracing::warn!(media_type, detected = ?by_magic, "layer compression differs from its media type; using the detected one");
    }
    Ok(by_magic)
}

/// Reads up to `n` bytes (fewer only at EOF).
fn read_head(reader: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.by_ref().take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The blocking half: decompress, hash, unpack into `tree`, read to the end. Returns the
/// uncompressed digest and size.
pub fn unpack_layer(mut source: impl Read, media_type: &str, tree: Tree) -> Result<(String, u64)> {
    let head = read_head(&mut source, 6).map_err(source_error)?;
    let compression = detect_compression(media_type, &head)?;
    let source = io::Cursor::new(head).chain(source);
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(source)
                .map_err(|e| Error::InvalidArgument(format!("invalid zstd stream: {e}")))?,
        ),
    };
    let mut hashing = HashingReader { inner: decoded, hasher: Sha256::new(), count: 0 };
    let mut unpacker = Unpacker::new(tree);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        unpacker.unpack(&mut archive)?;
    }
    // The digest covers the whole uncompressed stream, including padding after the end
    // of the archive.
    io::copy(&mut hashing, &mut io::sink()).map_err(source_error)?;
    let digest = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    Ok((digest, hashing.count))
}

fn source_error(err: io::Error) -> Error {
    if err.get_ref().is_some_and(|inner| inner.is::<SourceFailure>()) {
        Error::Aborted(format!("the layer stream failed: {err}"))
    } else {
        Error::InvalidArgument(format!("invalid layer: cannot decompress or read it: {err}"))
    }
}

pub fn validate_digest(digest: &str, what: &str) -> Result<()> {
    let valid = digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{what} {digest:?} is not a sha256 digest (sha256:<64 hex digits>)")))
    }
}

/// Where the compressed bytes come from.
pub enum Source {
    /// Chunks already being sent into the channel by the caller (request stream).
    Channel(mpsc::Receiver<Chunk>),
    /// Read `header.content_digest` from the content service.
    Content(ContentClient<BerthChannel>),
}

/// Runs an Apply. For [`Source::Channel`] the caller feeds the sender half it kept.
pub async fn apply(core: Arc<Core>, ns: Namespace, header: ApplyHeader, source: Source) -> Result<ApplyResponse> {
    if header.name.is_empty() {
        return Err(Error::InvalidArgument("apply needs a name for the committed layer (its chain id)".into()));
    }
    validate_digest(&header.diff_id, "diff_id")?;
    let lock = core.apply_lock(&ns, &header.name);
    let _applying = lock.lock().await;
    if let Some(existing) = core.store.get(&ns, &header.name)? {
        if existing.kind != Kind::Committed {
            return Err(Error::AlreadyExists(format!("snapshot {} exists and is not a committed layer", header.name)));
        }
        return Ok(ApplyResponse {
            name: header.name,
            diff_id: existing.diff_id.unwrap_or(header.diff_id),
            size: existing.size.unwrap_or(0) as i64,
            already_existed: true,
        });
    }
    let chain = core.chain(&ns, &header.parent)?;
    let id = core.store.next_id()?;
    let _busy = core.busy(id);
    let layout = core.layout.clone();
    let copy_from = (core.driver() == crate::driver::Driver::Native).then(|| chain.first().copied()).flatten();
    let result = async {
        blocking(move || create_dirs(&layout, id, Kind::Committed, copy_from)).await?;
        let tree = core.writable_tree(id, &chain)?;
        let (digest, size) = run_pipeline(&ns, &header, source, tree).await?;
        if digest != header.diff_id {
            return Err(Error::InvalidArgument(format!(
                "layer content does not match its diff_id: expected {}, computed {digest}",
                header.diff_id
            )));
        }
        let now = Utc::now();
        let record = Record {
            id,
            kind: Kind::Committed,
            parent: header.parent.clone(),
            labels: header.labels.clone().into_iter().collect::<BTreeMap<_, _>>(),
            created: now,
            updated: now,
            diff_id: Some(digest.clone()),
            size: Some(size),
        };
        core.commit_applied(&ns, &header.name, &header.parent, id, record).await?;
        Ok(ApplyResponse { name: header.name.clone(), diff_id: digest, size: size as i64, already_existed: false })
    }
    .await;
    if result.is_err() {
        let dir = core.layout.dir(id);
        let _ = blocking(move || crate::fsutil::remove_tree(&dir).map_err(Error::io("removing a failed layer"))).await;
    }
    result
}

async fn run_pipeline(ns: &Namespace, header: &ApplyHeader, source: Source, tree: Tree) -> Result<(String, u64)> {
    let media_type = header.media_type.clone();
    match source {
        Source::Channel(rx) => {
            let reader = ChannelReader::new(rx);
            blocking(move || unpack_layer(reader, &media_type, tree)).await
        }
        Source::Content(client) => {
            validate_digest(&header.content_digest, "content_digest")?;
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let reader = ChannelReader::new(rx);
            let unpack = tokio::task::spawn_blocking(move || unpack_layer(reader, &media_type, tree));
            let feed = feed_from_content(client, ns, &header.content_digest, tx);
            let (fed, unpacked) = tokio::join!(feed, unpack);
            let unpacked = unpacked.map_err(|e| Error::Internal(format!("unpack thread failed: {e}")))?;
            // A failed read explains a failed unpack better than the unpacker's view of it.
            fed?;
            unpacked
        }
    }
}

/// Streams blob `digest` from the content service into `tx`, verifying its digest.
async fn feed_from_content(
    mut client: ContentClient<BerthChannel>,
    ns: &Namespace,
    digest: &str,
    tx: mpsc::Sender<Chunk>,
) -> Result<()> {
    let request =
        berth_common::namespace::request(ns, ReadContentRequest { digest: digest.into(), offset: 0, size: 0 });
    let dependency = |status| Error::Dependency { service: "content", status };
    let mut stream = match client.read(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let _ = tx.send(Err(format!("reading {digest} from the content store failed"))).await;
            return Err(dependency(status));
        }
    };
    let mut hasher = Sha256::new();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk.data);
                if tx.send(Ok(chunk.data)).await.is_err() {
                    return Ok(()); // the unpacker stopped; its error is the one to report
                }
            }
            Ok(None) => break,
            Err(status) => {
                let _ = tx.send(Err(format!("reading {digest} from the content store failed"))).await;
                return Err(dependency(status));
            }
        }
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        let message = format!("blob {digest} read from the content store has digest {actual}");
        let _ = tx.send(Err(message.clone())).await;
        return Err(Error::FailedPrecondition(message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_follows_magic_bytes() {
        let gz = detect_compression("application/vnd.oci.image.layer.v1.tar", &[0x1f, 0x8b, 8, 0]).unwrap();
        assert_eq!(gz, Compression::Gzip);
        let zst = detect_compression("application/vnd.oci.image.layer.v1.tar+zstd", &[0x28, 0xb5, 0x2f, 0xfd]).unwrap();
        assert_eq!(zst, Compression::Zstd);
        let plain = detect_compression("application/vnd.docker.image.rootfs.diff.tar.gzip", b"etc/").unwrap();
        assert_eq!(plain, Compression::None);
        assert!(detect_compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", &[0x1f, 0x8b]).is_err());
        assert!(detect_compression("", b"BZh91AY").is_err());
    }

    #[test]
    fn digests_are_validated() {
        assert!(validate_digest(&format!("sha256:{}", "a".repeat(64)), "diff_id").is_ok());
        assert!(validate_digest("sha256:abc", "diff_id").is_err());
        assert!(validate_digest(&format!("sha512:{}", "a".repeat(64)), "diff_id").is_err());
        assert!(validate_digest(&format!("sha256:{}", "A".repeat(64)), "diff_id").is_err());
    }

    #[test]
    fn channel_reader_reports_source_failures_distinctly() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"abc".to_vec())).unwrap();
        tx.try_send(Err("client went away".into())).unwrap();
        let mut reader = ChannelReader::new(rx);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        let err = reader.read(&mut buf).unwrap_err();
        assert!(matches!(source_error(err), Error::Aborted(_)));
    }
}
