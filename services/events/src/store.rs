//! The event log in `<data_root>/events.db`.
//!
//! Trees:
//! * `log`: big-endian seq -> [`StoredRecord`] (the envelope, its idempotency key and the
//!   bus time at which it was recorded). Compaction only ever removes a prefix, so the
//!   retained seqs are contiguous.
//! * `keys`: `<namespace>/<idempotency key>` -> big-endian seq, pruned with the log.
//! * `meta`: `last_seq`, so numbering continues after retention emptied the log.
//!
//! Only the writer task writes (see `writer.rs`); readers never see a record before the
//! writer has flushed it, because they read at most up to the bus's committed seq.

use std::path::Path;

use berth_proto::events::v1::Envelope;
use prost::Message;
use sled::Transactional;

use crate::error::Error;

const LAST_SEQ_KEY: &[u8] = b"last_seq";

/// What the log stores per event. Private to the bus, so not part of the proto contract.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredRecord {
    #[prost(message, optional, tag = "1")]
    pub envelope: Option<Envelope>,
    /// The namespaced key in the `keys` tree; empty when the publisher sent none.
    #[prost(bytes = "vec", tag = "2")]
    pub idempotency_key: Vec<u8>,
    /// Bus time in unix nanoseconds, never decreasing with seq (unlike the envelope's
    /// timestamp, which a publisher may set to an earlier moment). Time-based replay and
    /// retention use this.
    #[prost(int64, tag = "3")]
    pub recorded_at: i64,
}

/// One event as readers and the live channel see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub envelope: Envelope,
    pub recorded_at: i64,
}

impl Record {
    pub fn seq(&self) -> u64 {
        self.envelope.seq
    }
}

/// What the log held when it was opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovered {
    /// Oldest retained seq, if any.
    pub first: Option<u64>,
    /// Newest seq ever assigned (0 for a new bus).
    pub last: u64,
    pub last_recorded_at: i64,
}

pub struct Log {
    db: sled::Db,
    log: sled::Tree,
    keys: sled::Tree,
    meta: sled::Tree,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt(format!("bad sequence key {bytes:?}")))?;
    Ok(u64::from_be_bytes(array))
}

fn decode(seq_bytes: &[u8], value: &[u8]) -> Result<(Record, Vec<u8>), Error> {
    let seq = seq_of(seq_bytes)?;
    let stored =
        StoredRecord::decode(value).map_err(|e| Error::Corrupt(format!("event {seq} cannot be decoded: {e}")))?;
    let envelope = stored.envelope.ok_or_else(|| Error::Corrupt(format!("event {seq} has no envelope")))?;
    Ok((Record { envelope, recorded_at: stored.recorded_at }, stored.idempotency_key))
}

impl Log {
    pub fn open(root: &Path) -> Result<Log, crate::StartError> {
        let db = berth_common::store::open_db(root, "events.db")?;
        let log = db.open_tree("log").map_err(crate::StartError::Storage)?;
        let keys = db.open_tree("keys").map_err(crate::StartError::Storage)?;
        let meta = db.open_tree("meta").map_err(crate::StartError::Storage)?;
        Ok(Log { db, log, keys, meta })
    }

    pub fn recover(&self) -> Result<Recovered, Error> {
        let first = match self.log.first()? {
            Some((key, _)) => Some(seq_of(&key)?),
            None => None,
        };
        let (mut last, mut last_recorded_at) = (0, 0);
        if let Some((key, value)) = self.log.last()? {
            let (record, _) = decode(&key, &value)?;
            last = record.seq();
            last_recorded_at = record.recorded_at;
        }
        if let Some(value) = self.meta.get(LAST_SEQ_KEY)? {
            last = last.max(seq_of(&value)?);
        }
        Ok(Recovered { first, last, last_recorded_at })
    }

    /// The seq stored under an idempotency key, if the key is still retained.
    pub fn seq_for_key(&self, key: &[u8]) -> Result<Option<u64>, Error> {
        self.keys.get(key)?.map(|value| seq_of(&value)).transpose()
    }

    /// Inserts `records` (with their namespaced idempotency keys) atomically. Not durable
    /// until [`Log::flush`] returns.
    pub fn append(&self, records: &[(Record, Vec<u8>)]) -> Result<(), Error> {
        let Some((newest, _)) = records.last() else { return Ok(()) };
        let encoded: Vec<(u64, Vec<u8>, &[u8])> = records
            .iter()
            .map(|(record, key)| {
                let stored = StoredRecord {
                    envelope: Some(record.envelope.clone()),
                    idempotency_key: key.clone(),
                    recorded_at: record.recorded_at,
                };
                (record.seq(), stored.encode_to_vec(), key.as_slice())
            })
            .collect();
        let newest = newest.seq();
        (&self.log, &self.keys, &self.meta)
            .transaction(|(log, keys, meta)| {
                for (seq, value, key) in &encoded {
                    log.insert(&seq_key(*seq), value.as_slice())?;
                    if !key.is_empty() {
                        keys.insert(*key, &seq_key(*seq))?;
                    }
                }
                meta.insert(LAST_SEQ_KEY, &seq_key(newest))?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => Error::Storage(e),
                sled::transaction::TransactionError::Abort(()) => Error::Corrupt("append aborted".into()),
            })
    }

    /// Makes everything appended so far durable.
    pub async fn flush(&self) -> Result<(), Error> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn get(&self, seq: u64) -> Result<Option<Record>, Error> {
        match self.log.get(seq_key(seq))? {
            Some(value) => Ok(Some(decode(&seq_key(seq), &value)?.0)),
            None => Ok(None),
        }
    }

    /// Up to `limit` retained records with `from <= seq <= to`, in seq order.
    pub fn read(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Record>, Error> {
        let mut records = Vec::new();
        if from > to {
            return Ok(records);
        }
        for entry in self.log.range(seq_key(from)..=seq_key(to)).take(limit) {
            let (key, value) = entry?;
            records.push(decode(&key, &value)?.0);
        }
        Ok(records)
    }

    /// The first seq in `first..=last` recorded at or after `time` (unix nanoseconds), or
    /// `last + 1` when there is none. `recorded_at` never decreases with seq, so a binary
    /// search finds it; a record pruned meanwhile counts as older.
    pub fn first_recorded_at_or_after(&self, time: i64, first: u64, last: u64) -> Result<u64, Error> {
        let (mut low, mut high) = (first, last.saturating_add(1));
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle)? {
                Some(record) if record.recorded_at >= time => high = middle,
                _ => low = middle + 1,
            }
        }
        Ok(low)
    }

    /// Removes every record with seq `< keep_from` or recorded before `min_recorded_at`,
    /// with their idempotency keys. Returns the new first retained seq (`last + 1` when
    /// nothing is left). Removals need no flush: one lost to a crash is redone later.
    pub fn prune(&self, keep_from: u64, min_recorded_at: i64) -> Result<Option<u64>, Error> {
        const CHUNK: usize = 1024;
        loop {
            let mut log_batch = sled::Batch::default();
            let mut keys_batch = sled::Batch::default();
            let mut removed = 0;
            let mut stop = false;
            for entry in self.log.iter().take(CHUNK) {
                let (key, value) = entry?;
                let (record, idempotency_key) = decode(&key, &value)?;
                if record.seq() >= keep_from && record.recorded_at >= min_recorded_at {
                    stop = true;
                    break;
                }
                log_batch.remove(key);
                if !idempotency_key.is_empty() {
                    keys_batch.remove(idempotency_key);
                }
                removed += 1;
            }
            if removed > 0 {
                self.keys.apply_batch(keys_batch)?;
                self.log.apply_batch(log_batch)?;
            }
            if stop || removed < CHUNK {
                break;
            }
        }
        match self.log.first()? {
            Some((key, _)) => Ok(Some(seq_of(&key)?)),
            None => Ok(None),
        }
    }
}
