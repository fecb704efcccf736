//! The publisher's on-disk spool: every event is appended and fsynced before `publish`
//! returns, and the file is emptied whenever everything in it has been acknowledged. A
//! publisher that restarts with the same spool sends what is left, under the original
//! idempotency keys, so the bus stores each event once even if it had already taken it.
//!
//! Frame: u32 LE payload length, u32 LE CRC-32 of the payload, payload (a protobuf
//! [`SpooledEvent`]). A torn last frame (crash mid-append, never acknowledged to the
//! caller) is cut off when the spool is opened.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_proto::events::v1::PublishRequest;
use nix::fcntl::{Flock, FlockArg};
use prost::Message;

use crate::Namespace;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the event spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the event spool {path} is in use by another publisher")]
    InUse { path: PathBuf },
}

#[derive(Clone, PartialEq, prost::Message)]
struct SpooledEvent {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(message, optional, tag = "2")]
    request: Option<PublishRequest>,
}

pub struct Spool {
    file: Flock<File>,
    path: PathBuf,
    /// Bytes in the file: appends happen at this offset.
    len: u64,
}

impl Spool {
    /// Opens (creating) the spool and returns the events still in it, oldest first.
    pub fn open(path: &Path) -> Result<(Spool, Vec<(Namespace, PublishRequest)>), SpoolError> {
        let io_error = |source| SpoolError::Io { path: path.to_path_buf(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io_error)?;
        let mut file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| SpoolError::InUse { path: path.to_path_buf() })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error)?;
        let (events, valid) = parse(&bytes);
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - valid, "dropping a torn frame at the end of the event spool");
            file.set_len(valid as u64).map_err(io_error)?;
        }
        Ok((Spool { file, path: path.to_path_buf(), len: valid as u64 }, events))
    }

    /// Appends one event and makes it durable.
    pub fn append(&mut self, namespace: &Namespace, request: &PublishRequest) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let payload = SpooledEvent { namespace: namespace.to_string(), request: Some(request.clone()) }.encode_to_vec();
        let length = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "event too large to spool"))?;
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&length.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        self.file.write_all_at(&frame, self.len)?;
        self.file.sync_data()?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Forgets everything: all of it has been acknowledged. Not synced: if the truncation
    /// is lost, the events are sent again and the bus recognises their keys.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The complete frames in `bytes` and how many bytes they take.
fn parse(bytes: &[u8]) -> (Vec<(Namespace, PublishRequest)>, usize) {
    let mut events = Vec::new();
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + 8) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(offset + 8..offset + 8 + length) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(spooled) = SpooledEvent::decode(payload) else { break };
        offset += 8 + length;
        match (Namespace::new(&spooled.namespace), spooled.request) {
            (Ok(namespace), Some(request)) => events.push((namespace, request)),
            _ => tracing::warn!("skipping an unreadable event in the spool"),
        }
    }
    (events, offset)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn request(key: &str) -> PublishRequest {
        PublishRequest { topic: "/tasks/exit".into(), event: None, timestamp: None, idempotency_key: key.into() }
    }

    #[test]
    fn survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.spool");
        let ns = Namespace::default_namespace();
        {
            let (mut spool, pending) = Spool::open(&path).unwrap();
            assert!(pending.is_empty());
            spool.append(&ns, &request("a")).unwrap();
            spool.append(&ns, &request("b")).unwrap();
            assert!(matches!(Spool::open(&path), Err(SpoolError::InUse { .. })));
        }
        // A crash in the middle of a third append.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        let (mut spool, pending) = Spool::open(&path).unwrap();
        let keys: Vec<_> = pending.iter().map(|(_, r)| r.idempotency_key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        spool.append(&ns, &request("c")).unwrap();
        spool.clear().unwrap();
        spool.append(&ns, &request("d")).unwrap();
        drop(spool);
        let (_, pending) = Spool::open(&path).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.idempotency_key, "d");
    }
}
