//! The content store on disk: `<root>/content/blobs/sha256/<hex>` holds verified blobs;
//! `<root>/content/ingest/<sha256(ref)>/{data,meta.json}` holds writes in progress.
//!
//! A blob becomes visible only by `rename(2)` of a fully written, fsynced, size- and
//! digest-verified ingest file, followed by an fsync of the blobs directory; so a crash at
//! any point leaves either no blob or a complete one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// Largest blob read wholly into memory (manifests, indexes, configs).
pub const SMALL_BLOB_LIMIT: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub created_at: DateTime<Utc>,
}

/// What `meta.json` of an ingest records; the offset is the data file's length.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IngestMeta {
    reference: String,
    expected: Option<String>,
    total: Option<u64>,
    started_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct IngestStatus {
    pub reference: String,
    pub offset: u64,
    pub total: Option<u64>,
    pub expected: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    /// Refs with an open writer: a second writer of the same ref is refused.
    active: Arc<Mutex<HashSet<String>>>,
}

fn to_utc(time: std::io::Result<SystemTime>) -> DateTime<Utc> {
    time.map(DateTime::<Utc>::from).unwrap_or_else(|_| Utc::now())
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore> {
        let store = ContentStore { root: root.to_path_buf(), active: Arc::default() };
        for dir in [store.blobs_dir(), store.ingest_root()] {
            std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        }
        Ok(store)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.ingest_root().join(hex::encode(Sha256::digest(reference.as_bytes())))
    }

    /// Where the ingest `reference` keeps its data.
    pub fn ingest_data_path(&self, reference: &str) -> PathBuf {
        self.ingest_dir(reference).join("data")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let metadata = match std::fs::metadata(self.blob_path(digest)) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("content {digest} not found")));
            }
            Err(err) => return Err(Error::io(format!("reading {digest}"), err)),
        };
        Ok(BlobInfo { digest: digest.clone(), size: metadata.len(), created_at: to_utc(metadata.modified()) })
    }

    pub fn list(&self) -> Result<Vec<BlobInfo>> {
        let dir = self.blobs_dir();
        let mut blobs = Vec::new();
        for entry in std::fs::read_dir(&dir).context(|| format!("listing {}", dir.display()))? {
            let entry = entry.context(|| format!("listing {}", dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else { continue };
            if let Ok(metadata) = entry.metadata() {
                blobs.push(BlobInfo { digest, size: metadata.len(), created_at: to_utc(metadata.modified()) });
            }
        }
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(blobs)
    }

    /// Removes a blob; answers how many bytes were freed (0 when it was not there).
    pub fn delete(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        let size = match std::fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(Error::io(format!("deleting {digest}"), err)),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(Error::io(format!("deleting {digest}"), err)),
        }
    }

    /// Reads a small blob (manifest, index, config) wholly.
    pub async fn read_small(&self, digest: &Digest) -> Result<Vec<u8>> {
        let info = self.info(digest)?;
        if info.size > SMALL_BLOB_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "{digest} is {} bytes, too large for a manifest or config",
                info.size
            )));
        }
        tokio::fs::read(self.blob_path(digest)).await.context(|| format!("reading {digest}"))
    }

    /// Opens a blob for streaming reads at `offset`.
    pub async fn open_blob(&self, digest: &Digest, offset: u64) -> Result<tokio::fs::File> {
        let mut file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("content {digest} not found")));
            }
            Err(err) => return Err(Error::io(format!("opening {digest}"), err)),
        };
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await.context(|| format!("seeking in {digest}"))?;
        }
        Ok(file)
    }

    /// Writes a small blob in one go (verifying it against `expected` when given).
    pub async fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let digest = Digest::of(data);
        if let Some(expected) = expected
            && expected != &digest
        {
            return Err(Error::DigestMismatch {
                what: expected.to_string(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        if self.exists(&digest) {
            return Ok(digest);
        }
        let reference = format!("write-{}-{}", digest, unique_suffix());
        let mut writer = self.writer(&reference, Some(digest.clone()), Some(data.len() as u64)).await?;
        writer.truncate(0).await?;
        writer.write(data).await?;
        writer.commit(Some(data.len() as u64), &digest).await
    }

    /// Opens (or resumes) the ingest `reference`. Data already written is re-hashed, so
    /// a resumed write continues at [`Writer::offset`].
    pub async fn writer(&self, reference: &str, expected: Option<Digest>, total: Option<u64>) -> Result<Writer> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument("an ingest ref is required".into()));
        }
        let guard = RefGuard::acquire(&self.active, reference)?;
        let dir = self.ingest_dir(reference);
        tokio::fs::create_dir_all(&dir).await.context(|| format!("creating {}", dir.display()))?;
        let meta_path = dir.join("meta.json");
        let mut meta = match tokio::fs::read(&meta_path).await {
            Ok(raw) => serde_json::from_slice::<IngestMeta>(&raw).ok(),
            Err(_) => None,
        }
        .filter(|meta| meta.reference == reference)
        .unwrap_or_else(|| IngestMeta {
            reference: reference.to_string(),
            expected: None,
            total: None,
            started_at: Utc::now(),
        });
        if expected.is_some() {
            meta.expected = expected.as_ref().map(|d| d.to_string());
        }
        if total.is_some() {
            meta.total = total;
        }
        let raw = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        tokio::fs::write(&meta_path, raw).await.context(|| format!("writing {}", meta_path.display()))?;

        let data_path = dir.join("data");
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .await
            .context(|| format!("opening {}", data_path.display()))?;
        let mut hasher = Sha256::new();
        let offset = hash_file(&mut file, &mut hasher).await.context(|| format!("reading {}", data_path.display()))?;
        Ok(Writer { _guard: guard, dir, data_path, file, hasher, offset, blobs_dir: self.blobs_dir(), meta })
    }

    pub fn status(&self, reference: &str) -> Result<IngestStatus> {
        let dir = self.ingest_dir(reference);
        read_status(&dir).ok_or_else(|| Error::NotFound(format!("no ingest in progress for ref {reference:?}")))
    }

    pub fn statuses(&self) -> Vec<IngestStatus> {
        let Ok(entries) = std::fs::read_dir(self.ingest_root()) else { return Vec::new() };
        let mut statuses: Vec<IngestStatus> = entries.filter_map(|e| read_status(&e.ok()?.path())).collect();
        statuses.sort_by(|a, b| a.reference.cmp(&b.reference));
        statuses
    }

    /// Abandons an ingest. Refused while a writer has it open.
    pub fn abort(&self, reference: &str) -> Result<()> {
        let _guard = RefGuard::acquire(&self.active, reference)?;
        let dir = self.ingest_dir(reference);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no ingest in progress for ref {reference:?}")))
            }
            Err(err) => Err(Error::io(format!("removing ingest {reference:?}"), err)),
        }
    }

    /// Removes every ingest whose ref is not in `keep` and that no writer has open;
    /// returns the bytes freed.
    pub fn remove_ingests_except(&self, keep: &HashSet<String>) -> u64 {
        let Ok(entries) = std::fs::read_dir(self.ingest_root()) else { return 0 };
        let mut freed = 0;
        for entry in entries.flatten() {
            let dir = entry.path();
            let status = read_status(&dir);
            let reference = status.as_ref().map(|s| s.reference.clone());
            if let Some(reference) = &reference {
                if keep.contains(reference) {
                    continue;
                }
                let Ok(_guard) = RefGuard::acquire(&self.active, reference) else { continue };
                freed += status.map(|s| s.offset).unwrap_or(0);
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                // Unreadable meta: a write that died before its first record.
                freed += std::fs::metadata(dir.join("data")).map(|m| m.len()).unwrap_or(0);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        freed
    }
}

fn read_status(dir: &Path) -> Option<IngestStatus> {
    let meta: IngestMeta = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
    let data = std::fs::metadata(dir.join("data")).ok();
    Some(IngestStatus {
        reference: meta.reference,
        offset: data.as_ref().map(|m| m.len()).unwrap_or(0),
        total: meta.total,
        expected: meta.expected,
        started_at: meta.started_at,
        updated_at: data.map(|m| to_utc(m.modified())).unwrap_or(meta.started_at),
    })
}

async fn hash_file(file: &mut tokio::fs::File, hasher: &mut Sha256) -> std::io::Result<u64> {
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok(total)
}

pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Marks a ref as having an open writer until dropped.
#[derive(Debug)]
struct RefGuard {
    active: Arc<Mutex<HashSet<String>>>,
    reference: String,
}

impl RefGuard {
    fn acquire(active: &Arc<Mutex<HashSet<String>>>, reference: &str) -> Result<RefGuard> {
        let mut set = active.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(reference.to_string()) {
            return Err(Error::FailedPrecondition(format!(
                "ref {reference:?} is locked: another write of it is in progress"
            )));
        }
        Ok(RefGuard { active: active.clone(), reference: reference.to_string() })
    }
}

impl Drop for RefGuard {
    fn drop(&mut self) {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.reference);
    }
}

/// An open ingest. Dropping it without committing keeps the data for a later resume
/// (until GC removes ingests that no lease protects).
#[derive(Debug)]
pub struct Writer {
    _guard: RefGuard,
    dir: PathBuf,
    data_path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    offset: u64,
    blobs_dir: PathBuf,
    meta: IngestMeta,
}

impl Writer {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn total(&self) -> Option<u64> {
        self.meta.total
    }

    pub fn expected(&self) -> Option<&str> {
        self.meta.expected.as_deref()
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.meta.started_at
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        let context = || format!("writing ingest {:?}", self.meta.reference);
        self.file.write_all(data).await.context(context)?;
        // tokio hands writes to a background thread: wait until the bytes are in the file,
        // so the offset we report is what a reader of the file sees.
        self.file.flush().await.context(context)?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Discards data from `offset` on (0 restarts the write).
    pub async fn truncate(&mut self, offset: u64) -> Result<()> {
        if offset > self.offset {
            return Err(Error::InvalidArgument(format!(
                "cannot write at offset {offset}: ref {:?} has only {} bytes",
                self.meta.reference, self.offset
            )));
        }
        let context = || format!("truncating ingest {:?}", self.meta.reference);
        self.file.set_len(offset).await.context(context)?;
        self.hasher = Sha256::new();
        if offset > 0 {
            // Re-hash the kept prefix.
            self.file.seek(std::io::SeekFrom::Start(0)).await.context(context)?;
            let mut remaining = offset;
            let mut buffer = vec![0u8; 256 * 1024];
            while remaining > 0 {
                let want = buffer.len().min(remaining as usize);
                let n = self.file.read(&mut buffer[..want]).await.context(context)?;
                if n == 0 {
                    break;
                }
                self.hasher.update(&buffer[..n]);
                remaining -= n as u64;
            }
        }
        self.file.seek(std::io::SeekFrom::Start(offset)).await.context(context)?;
        self.offset = offset;
        Ok(())
    }

    /// Verifies size and digest, makes the blob durable and visible, and removes the
    /// ingest. On a mismatch the ingest is removed and nothing becomes visible.
    pub async fn commit(mut self, size: Option<u64>, expected: &Digest) -> Result<Digest> {
        let reference = self.meta.reference.clone();
        self.file.flush().await.context(|| format!("flushing ingest {reference:?}"))?;
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        let expected_size = size.or(self.meta.total);
        let mismatch = if let Some(expected_size) = expected_size.filter(|s| *s != self.offset) {
            Some(Error::SizeMismatch { what: expected.to_string(), expected: expected_size, actual: self.offset })
        } else if &actual != expected {
            Some(Error::DigestMismatch {
                what: expected.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        } else {
            None
        };
        if let Some(err) = mismatch {
            let _ = tokio::fs::remove_dir_all(&self.dir).await;
            return Err(err);
        }
        self.file.sync_all().await.context(|| format!("syncing ingest {reference:?}"))?;
        let target = self.blobs_dir.join(actual.hex());
        let data_path = self.data_path.clone();
        let blobs_dir = self.blobs_dir.clone();
        let dir = self.dir.clone();
        let commit_target = target.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data_path, std::fs::Permissions::from_mode(0o444))?;
            std::fs::rename(&data_path, &commit_target)?;
            std::fs::File::open(&blobs_dir)?.sync_all()?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("commit task failed: {e}")))?
        .context(|| format!("committing {actual}"))?;
        Ok(actual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn verified_write_becomes_visible() {
        let (_dir, store) = store();
        let digest = Digest::of(b"hello world");
        let mut writer = store.writer("r1", Some(digest.clone()), Some(11)).await.unwrap();
        writer.write(b"hello ").await.unwrap();
        assert!(!store.exists(&digest));
        writer.write(b"world").await.unwrap();
        assert_eq!(writer.commit(None, &digest).await.unwrap(), digest);
        assert_eq!(store.read_small(&digest).await.unwrap(), b"hello world");
        assert!(store.statuses().is_empty());
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_blob_failing_verification_is_never_visible() {
        let (_dir, store) = store();
        let claimed = Digest::of(b"good");
        let mut writer = store.writer("bad", None, None).await.unwrap();
        writer.write(b"evil").await.unwrap();
        let err = writer.commit(Some(4), &claimed).await.unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("digest mismatch"));
        assert!(!store.exists(&claimed));
        assert!(!store.exists(&Digest::of(b"evil")));
        assert!(store.statuses().is_empty(), "the failed ingest is removed");

        let mut writer = store.writer("short", None, None).await.unwrap();
        writer.write(b"goo").await.unwrap();
        let err = writer.commit(Some(4), &claimed).await.unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn ingests_resume_at_their_offset_and_are_exclusive() {
        let (_dir, store) = store();
        let digest = Digest::of(b"0123456789");
        let mut writer = store.writer("resume", Some(digest.clone()), Some(10)).await.unwrap();
        writer.write(b"01234").await.unwrap();
        assert!(store.writer("resume", None, None).await.is_err(), "a second writer is refused");
        drop(writer);
        let status = store.status("resume").unwrap();
        assert_eq!(status.offset, 5);
        assert_eq!(status.total, Some(10));
        assert_eq!(status.expected.as_deref(), Some(digest.as_str()));
        let mut writer = store.writer("resume", None, None).await.unwrap();
        assert_eq!(writer.offset(), 5);
        writer.write(b"56789").await.unwrap();
        writer.commit(None, &digest).await.unwrap();
        assert!(store.exists(&digest));
    }

    #[tokio::test]
    async fn truncate_rehashes_the_prefix() {
        let (_dir, store) = store();
        let digest = Digest::of(b"abcXYZ");
        let mut writer = store.writer("t", None, None).await.unwrap();
        writer.write(b"abcdef").await.unwrap();
        writer.truncate(3).await.unwrap();
        writer.write(b"XYZ").await.unwrap();
        writer.commit(Some(6), &digest).await.unwrap();
    }

    #[tokio::test]
    async fn stale_ingests_are_removed_unless_kept() {
        let (_dir, store) = store();
        for reference in ["keep", "drop"] {
            let mut writer = store.writer(reference, None, None).await.unwrap();
            writer.write(b"partial").await.unwrap();
        }
        let keep: HashSet<String> = ["keep".to_string()].into();
        assert_eq!(store.remove_ingests_except(&keep), 7);
        let refs: Vec<String> = store.statuses().into_iter().map(|s| s.reference).collect();
        assert_eq!(refs, vec!["keep".to_string()]);
    }
}
