//! Diff (a layer from an active snapshot, written to the content store), Changes and
//! Export. Tar generation runs on a blocking thread and hands chunks to async code through
//! a bounded channel.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use berth_common::Namespace;
use berth_common::client::BerthChannel;
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::content::v1::{WriteAction, WriteContentRequest};
use berth_proto::snapshots::v1::{DiffRequest, DiffResponse};
use berth_proto::types::v1::Descriptor;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::archive::{self, TarWriter};
use crate::changes::{self, Change};
use crate::core::{Core, blocking};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::Kind;

pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Bytes per chunk sent to the content store or an Export stream.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Tar,
    Gzip,
    Zstd,
}

pub fn output_for(media_type: &str) -> Result<(String, Output)> {
    Ok(match media_type {
        "" => (MEDIA_TYPE_GZIP.to_string(), Output::Gzip),
        MEDIA_TYPE_GZIP | DOCKER_GZIP => (media_type.to_string(), Output::Gzip),
        MEDIA_TYPE_TAR | DOCKER_TAR => (media_type.to_string(), Output::Tar),
        MEDIA_TYPE_ZSTD => (media_type.to_string(), Output::Zstd),
        other => {
            return Err(Error::InvalidArgument(format!(
                "cannot produce a layer of media type {other:?}: use {MEDIA_TYPE_GZIP}, {MEDIA_TYPE_ZSTD} or {MEDIA_TYPE_TAR}"
            )));
        }
    })
}

/// Counts and hashes what passes through.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> HashWriter<W> {
        HashWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    pub fn finish(self) -> (W, String, u64) {
        (self.inner, format!("sha256:{}", hex::encode(self.hasher.finalize())), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(output: Output, inner: W) -> io::Result<Compressor<W>> {
        Ok(match output {
            Output::Tar => Compressor::Plain(inner),
            Output::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(inner, flate2::Compression::default())),
            Output::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

/// Sends what is written, in chunks, into a channel (blocking when it is full).
pub struct ChunkSender<T, F: FnMut(Vec<u8>) -> T> {
    tx: mpsc::Sender<T>,
    make: F,
    buf: Vec<u8>,
}

impl<T, F: FnMut(Vec<u8>) -> T> ChunkSender<T, F> {
    pub fn new(tx: mpsc::Sender<T>, make: F) -> Self {
        ChunkSender { tx, make, buf: Vec::with_capacity(CHUNK) }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send((self.make)(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the receiving side went away"))
    }
}

impl<T, F: FnMut(Vec<u8>) -> T> Write for ChunkSender<T, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = buf.len().min(room);
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// What the diff of a snapshot is made from.
pub enum DiffSource {
    /// An overlay upper directory.
    Upper(OwnedFd),
    /// A native tree and its parent's.
    Trees { new: OwnedFd, old: Option<OwnedFd> },
}

/// The digests of a produced layer.
#[derive(Debug, Clone)]
pub struct Produced {
    pub diff_id: String,
    pub uncompressed_size: u64,
    pub digest: String,
    pub size: u64,
}

/// Writes the layer tar of `source` through `output` compression into `sink`.
pub fn produce_layer<W: Write>(source: &DiffSource, output: Output, sink: W) -> io::Result<(W, Produced)> {
    let compressed = HashWriter::new(sink);
    let compressor = Compressor::new(output, compressed)?;
    let uncompressed = HashWriter::new(compressor);
    let mut writer = TarWriter::new(uncompressed);
    match source {
        DiffSource::Upper(upper) => archive::write_upper(&mut writer, upper)?,
        DiffSource::Trees { new, old } => {
            let changes = changes::tree_changes(new, old.as_ref())?;
            changes::write_changes(&mut writer, new, &changes)?;
        }
    }
    let uncompressed = writer.finish()?;
    let (compressor, diff_id, uncompressed_size) = uncompressed.finish();
    let compressed = compressor.finish()?;
    let (mut sink, digest, size) = compressed.finish();
    sink.flush()?;
    Ok((sink, Produced { diff_id, uncompressed_size, digest, size }))
}

impl Core {
    fn diff_source(&self, ns: &Namespace, key: &str) -> Result<DiffSource> {
        let record = self.get(ns, key)?;
        if record.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key} is not active; diff compares an active snapshot with its parent"
            )));
        }
        let open = |path: std::path::PathBuf| {
            fsutil::open_dir_path(&path).map_err(Error::io(format!("opening {}", path.display())))
        };
        let chain = self.chain(ns, &record.parent)?;
        Ok(match self.driver() {
            Driver::Overlay => DiffSource::Upper(open(self.layout.fs(record.id))?),
            Driver::Native => DiffSource::Trees {
                new: open(self.layout.fs(record.id))?,
                old: chain.first().map(|p| open(self.layout.fs(*p))).transpose()?,
            },
        })
    }

    /// Changes of active snapshot `key` against its parent.
    pub async fn changes(&self, ns: &Namespace, key: &str) -> Result<Vec<Change>> {
        let record = self.get(ns, key)?;
        if record.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!("snapshot {key} is not active")));
        }
        let chain = self.chain(ns, &record.parent)?;
        let top = self.layout.fs(record.id);
        let parent_fs = chain.first().map(|p| self.layout.fs(*p));
        let driver = self.driver();
        let lowers: Vec<std::path::PathBuf> = chain.iter().map(|p| self.layout.fs(*p)).collect();
        blocking(move || {
            let open = |path: &std::path::PathBuf| {
                fsutil::open_dir_path(path).map_err(Error::io(format!("opening {}", path.display())))
            };
            let top = open(&top)?;
            match driver {
                Driver::Overlay => {
                    let lowers = lowers.iter().map(open).collect::<Result<Vec<_>>>()?;
                    changes::overlay_changes(&top, &lowers).map_err(Error::io("listing changes"))
                }
                Driver::Native => {
                    let old = parent_fs.as_ref().map(open).transpose()?;
                    changes::tree_changes(&top, old.as_ref()).map_err(Error::io("listing changes"))
                }
            }
        })
        .await
    }

    /// Streams the merged tree of `key` as an uncompressed tar into `tx`.
    pub fn export(
        self: &Arc<Self>,
        ns: &Namespace,
        key: &str,
        tx: mpsc::Sender<std::result::Result<Vec<u8>, Error>>,
    ) -> Result<()> {
        let (_, dirs, _) = self.tree_dirs_of(ns, key)?;
        let whiteouts = self.driver() == Driver::Overlay;
        tokio::task::spawn_blocking(move || {
            let result = (|| -> Result<()> {
                let layers = dirs
                    .iter()
                    .map(|p| fsutil::open_dir_path(p).map_err(Error::io(format!("opening {}", p.display()))))
                    .collect::<Result<Vec<_>>>()?;
                let sink = ChunkSender::new(tx.clone(), Ok);
                let mut writer = TarWriter::new(sink);
                archive::write_merged(&mut writer, &layers, whiteouts).map_err(Error::io("exporting"))?;
                let mut sink = writer.finish().map_err(Error::io("exporting"))?;
                sink.flush().map_err(Error::io("exporting"))
            })();
            if let Err(err) = result {
                let _ = tx.blocking_send(Err(err));
            }
        });
        Ok(())
    }

    /// Computes the layer of active snapshot `key` and writes it to the content store.
    pub async fn diff(
        &self,
        ns: &Namespace,
        request: DiffRequest,
        content: ContentClient<BerthChannel>,
        lease: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<DiffResponse> {
        let (media_type, output) = output_for(&request.media_type)?;
        let source = self.diff_source(ns, &request.key)?;
        let reference = if request.r#ref.is_empty() {
            format!("diff-{}-{}-{}", ns, request.key, chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default())
        } else {
            request.r#ref.clone()
        };
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(8);
        let mut offset = 0i64;
        let chunk_ref = reference.clone();
        let make = move |data: Vec<u8>| {
            let message = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: chunk_ref.clone(),
                offset,
                data,
                ..Default::default()
            };
            offset += message.data.len() as i64;
            message
        };
        let producer_tx = tx.clone();
        let producer = tokio::task::spawn_blocking(move || {
            produce_layer(&source, output, ChunkSender::new(producer_tx, make)).map(|(_, produced)| produced)
        });
        let mut client = content;
        let mut outbound = berth_common::namespace::request(ns, tokio_stream::wrappers::ReceiverStream::new(rx));
        // The caller's lease protects the new blob from GC until it is referenced.
        if let Some(lease) = lease {
            outbound.metadata_mut().insert(berth_proto::LEASE_METADATA_KEY, lease);
        }
        let call = tokio::spawn(async move {
            let mut responses = client.write(outbound).await?.into_inner();
            let mut last = None;
            while let Some(message) = responses.message().await? {
                last = Some(message);
            }
            Ok::<_, tonic::Status>(last)
        });
        let produced = producer.await.map_err(|e| Error::Internal(format!("diff thread failed: {e}")))?;
        let produced = match produced {
            Ok(produced) => produced,
            Err(err) => {
                drop(tx);
                // A broken pipe means the content service ended the call; its status says why.
                if err.kind() == io::ErrorKind::BrokenPipe
                    && let Ok(Err(status)) = call.await
                {
                    return Err(Error::Dependency { service: "content", status });
                }
                return Err(Error::Io { context: format!("computing the diff of {}", request.key), source: err });
            }
        };
        let mut labels = request.labels.clone();
        labels.insert("containerd.io/uncompressed".into(), produced.diff_id.clone());
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total: produced.size as i64,
            expected: produced.digest.clone(),
            offset: produced.size as i64,
            data: Vec::new(),
            labels,
        };
        let _ = tx.send(commit).await;
        drop(tx);
        let last = call
            .await
            .map_err(|e| Error::Internal(format!("content write task failed: {e}")))?
            .map_err(|status| Error::Dependency { service: "content", status })?;
        if let Some(last) = &last
            && !last.digest.is_empty()
            && last.digest != produced.digest
        {
            return Err(Error::Internal(format!(
                "the content store committed {} but the diff has digest {}",
                last.digest, produced.digest
            )));
        }
        Ok(DiffResponse {
            diff: Some(Descriptor {
                media_type,
                digest: produced.digest,
                size: produced.size as i64,
                ..Default::default()
            }),
            diff_id: produced.diff_id,
            uncompressed_size: produced.uncompressed_size as i64,
        })
    }
}
