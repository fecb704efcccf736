//! Reading a container's CRI-format log for `berth logs`: all rotated files oldest first,
//! filtered by stream and time, the last N lines, and following new lines (across
//! rotations) while the container runs. File reading is blocking, so [`stream`] runs on a
//! blocking thread and hands batches to the async side through a channel.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_common::crilog::{self, Record, Stream};
use berth_proto::tasks::v1::{LogEntry, LogStream, LogsResponse};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tonic::Status;

const BATCH: usize = 256;
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub tail: Option<usize>,
    pub follow: bool,
}

impl LogQuery {
    fn wants(&self, record: &Record) -> bool {
        let stream_ok = match record.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream_ok && self.since.is_none_or(|s| record.time >= s) && self.until.is_none_or(|u| record.time <= u)
    }

    fn past_until(&self, record: &Record) -> bool {
        self.until.is_some_and(|u| record.time > u)
    }
}

/// The log's files, oldest first: `<log>.N` ... `<log>.1`, `<log>`.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if let Some(n) =
                file_name.strip_prefix(name).and_then(|rest| rest.strip_prefix('.')).and_then(|n| n.parse().ok())
            {
                rotated.push((n, entry.path()));
            }
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(path.to_path_buf());
    files
}

fn to_entry(record: Record) -> LogEntry {
    let mut data = record.content;
    if !record.partial {
        data.push(b'\n');
    }
    LogEntry {
        timestamp: Some(berth_common::time::to_proto(record.time)),
        stream: match record.stream {
            Stream::Stdout => LogStream::Stdout as i32,
            Stream::Stderr => LogStream::Stderr as i32,
        },
        data,
        partial: record.partial,
    }
}

/// Reads complete lines from `reader`; an unfinished last line stays unread (the writer
/// may still be writing it).
fn read_records(reader: &mut BufReader<File>, out: &mut Vec<Record>) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        let start = reader.stream_position()?;
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            reader.seek(SeekFrom::Start(start))?;
            return Ok(());
        }
        line.pop();
        if let Ok(record) = crilog::parse(&line) {
            out.push(record);
        }
    }
}

fn send_batch(sender: &mpsc::Sender<Result<LogsResponse, Status>>, entries: Vec<LogEntry>) -> bool {
    entries.is_empty() || sender.blocking_send(Ok(LogsResponse { entries })).is_ok()
}

/// Streams the log to `sender` (call from a blocking thread). `running` tells whether the
/// container may still write.
pub fn stream(
    path: PathBuf,
    query: LogQuery,
    sender: mpsc::Sender<Result<LogsResponse, Status>>,
    running: impl Fn() -> bool,
) {
    let files = log_files(&path);
    let mut tail: VecDeque<Record> = VecDeque::new();
    let mut batch = Vec::new();
    let mut live: Option<BufReader<File>> = None;
    for (index, file_path) in files.iter().enumerate() {
        let Ok(file) = File::open(file_path) else { continue };
        let mut reader = BufReader::new(file);
        let mut records = Vec::new();
        if read_records(&mut reader, &mut records).is_err() {
            continue;
        }
        for record in records {
            if query.past_until(&record) {
                break;
            }
            if !query.wants(&record) {
                continue;
            }
            match query.tail {
                Some(n) => {
                    tail.push_back(record);
                    if tail.len() > n {
                        tail.pop_front();
                    }
                }
                None => {
                    batch.push(to_entry(record));
                    if batch.len() >= BATCH && !send_batch(&sender, std::mem::take(&mut batch)) {
                        return;
                    }
                }
            }
        }
        if index == files.len() - 1 {
            live = Some(reader);
        }
    }
    batch.extend(tail.into_iter().map(to_entry));
    if !send_batch(&sender, batch) || !query.follow {
        return;
    }
    let Some(mut reader) = live.or_else(|| File::open(&path).ok().map(BufReader::new)) else { return };
    loop {
        let still_running = running();
        let mut records = Vec::new();
        if read_records(&mut reader, &mut records).is_err() {
            return;
        }
        let mut batch = Vec::new();
        for record in records {
            if query.past_until(&record) {
                let _ = send_batch(&sender, batch);
                return;
            }
            if query.wants(&record) {
                batch.push(to_entry(record));
            }
        }
        if !send_batch(&sender, batch) {
            return;
        }
        // Rotation: the name now points at a new file; we already drained the old one.
        let rotated = match (std::fs::metadata(&path), reader.get_ref().metadata()) {
            (Ok(current), Ok(ours)) => current.ino() != ours.ino(),
            _ => false,
        };
        if rotated {
            match File::open(&path) {
                Ok(file) => reader = BufReader::new(file),
                Err(_) => return,
            }
            continue;
        }
        if !still_running {
            return;
        }
        if sender.is_closed() {
            return;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn write_log(path: &Path, lines: &[(i64, Stream, &str)]) {
        let mut out = Vec::new();
        for (secs, stream, text) in lines {
            crilog::encode(&mut out, Utc.timestamp_opt(*secs, 0).unwrap(), *stream, false, text.as_bytes());
        }
        std::fs::write(path, out).unwrap();
    }

    async fn collect(path: &Path, query: LogQuery) -> Vec<String> {
        let (sender, mut receiver) = mpsc::channel(16);
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || stream(path, query, sender, || false)).await.unwrap();
        let mut lines = Vec::new();
        while let Some(Ok(response)) = receiver.recv().await {
            lines.extend(response.entries.into_iter().map(|e| String::from_utf8_lossy(&e.data).trim_end().to_string()));
        }
        lines
    }

    #[tokio::test]
    async fn reads_rotated_files_in_order_with_filters_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&dir.path().join("c.log.2"), &[(1, Stream::Stdout, "one")]);
        write_log(&dir.path().join("c.log.1"), &[(2, Stream::Stderr, "two"), (3, Stream::Stdout, "three")]);
        write_log(&path, &[(4, Stream::Stdout, "four"), (5, Stream::Stdout, "five")]);
        let all = LogQuery { stdout: true, stderr: true, ..Default::default() };
        assert_eq!(collect(&path, all.clone()).await, ["one", "two", "three", "four", "five"]);
        assert_eq!(collect(&path, LogQuery { stderr: false, ..all.clone() }).await, ["one", "three", "four", "five"]);
        assert_eq!(collect(&path, LogQuery { tail: Some(2), ..all.clone() }).await, ["four", "five"]);
        let since = Some(Utc.timestamp_opt(3, 0).unwrap());
        let until = Some(Utc.timestamp_opt(4, 0).unwrap());
        assert_eq!(collect(&path, LogQuery { since, until, ..all.clone() }).await, ["three", "four"]);
        assert_eq!(collect(&path, LogQuery { tail: Some(0), ..all }).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn follow_picks_up_new_lines_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, &[(1, Stream::Stdout, "first")]);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (sender, mut receiver) = mpsc::channel(16);
        let query = LogQuery { stdout: true, stderr: true, follow: true, ..Default::default() };
        let flag = running.clone();
        let follow_path = path.clone();
        let reader = tokio::task::spawn_blocking(move || {
            stream(follow_path, query, sender, move || flag.load(std::sync::atomic::Ordering::SeqCst))
        });
        let first = receiver.recv().await.unwrap().unwrap();
        assert_eq!(first.entries[0].data, b"first\n");
        let mut more = Vec::new();
        crilog::encode(&mut more, Utc::now(), Stream::Stdout, false, b"second");
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &more).unwrap();
        let second = receiver.recv().await.unwrap().unwrap();
        assert_eq!(second.entries[0].data, b"second\n");
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
    }
}
