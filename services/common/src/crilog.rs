//! The CRI container log format, written by the shim and read by `berth logs` and the
//! kubelet: `<RFC3339Nano time> <stdout|stderr> <F|P> <content>\n`, where `P` marks a
//! partial line (the content did not end with a newline, or was split because it was long)
//! and `F` the last part of a line.

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    pub partial: bool,
    /// The content, without the record's trailing newline.
    pub content: Vec<u8>,
}

/// Appends one record for `content` (which must not contain a newline) to `out`.
pub fn encode(out: &mut Vec<u8>, time: DateTime<Utc>, stream: Stream, partial: bool, content: &[u8]) {
    out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed CRI log line: {0}")]
pub struct ParseError(&'static str);

/// Parses one line (without its trailing newline).
pub fn parse(line: &[u8]) -> Result<Record, ParseError> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts.next().ok_or(ParseError("missing time"))?;
    let stream = parts.next().ok_or(ParseError("missing stream"))?;
    let tag = parts.next().ok_or(ParseError("missing tag"))?;
    let content = parts.next().unwrap_or_default();
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or(ParseError("bad time"))?
        .with_timezone(&Utc);
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError("bad stream")),
    };
    // Tags may carry more flags after ':' in future CRI versions; only P/F matter here.
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError("bad tag")),
    };
    Ok(Record { time, stream, partial, content: content.to_vec() })
}

/// Splits a byte stream into CRI records, keeping an unfinished line until more bytes come
/// (or `flush`). Lines longer than `max_line` are cut into partial records, as the kubelet
/// and containerd do, so one huge line cannot hold memory.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

    pub fn new(stream: Stream) -> LineSplitter {
        LineSplitter { stream, pending: Vec::new(), max_line: Self::DEFAULT_MAX_LINE }
    }

    pub fn with_max_line(stream: Stream, max_line: usize) -> LineSplitter {
        LineSplitter { stream, pending: Vec::new(), max_line: max_line.max(1) }
    }

    /// Encodes the complete lines in `data` into `out`.
    pub fn push(&mut self, data: &[u8], time: DateTime<Utc>, out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..newline]);
            self.emit_long_prefix(time, out);
            encode(out, time, self.stream, false, &self.pending);
            self.pending.clear();
            rest = &rest[newline + 1..];
        }
        self.pending.extend_from_slice(rest);
        self.emit_long_prefix(time, out);
    }

    /// Emits the unfinished line as a partial record (at EOF).
    pub fn flush(&mut self, time: DateTime<Utc>, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            encode(out, time, self.stream, true, &self.pending);
            self.pending.clear();
        }
    }

    fn emit_long_prefix(&mut self, time: DateTime<Utc>, out: &mut Vec<u8>) {
        while self.pending.len() > self.max_line {
            encode(out, time, self.stream, true, &self.pending[..self.max_line]);
            self.pending.drain(..self.max_line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 5).unwrap()
    }

    #[test]
    fn encodes_like_cri() {
        let mut out = Vec::new();
        encode(&mut out, t(), Stream::Stdout, false, b"hello world");
        assert_eq!(out, b"2023-11-14T22:13:20.000000005Z stdout F hello world\n");
    }

    #[test]
    fn splitter_marks_partials_and_round_trips() {
        let mut splitter = LineSplitter::with_max_line(Stream::Stderr, 4);
        let mut out = Vec::new();
        splitter.push(b"ab\ncdefghij", t(), &mut out);
        splitter.push(b"k\nlast", t(), &mut out);
        splitter.flush(t(), &mut out);
        let records: Vec<Record> =
            out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| parse(l).unwrap()).collect();
        let parts: Vec<(bool, &[u8])> = records.iter().map(|r| (r.partial, r.content.as_slice())).collect();
        assert_eq!(parts, vec![(false, &b"ab"[..]), (true, b"cdef"), (true, b"ghij"), (false, b"k"), (true, b"last"),]);
        assert!(records.iter().all(|r| r.stream == Stream::Stderr && r.time == t()));
    }

    /// The `crilog` fuzz target's checks over its corpus (seeds and inputs it found).
    mod fuzz_corpus {
        use super::super::*;

        include!("../../../fuzz/checks/crilog.rs");
        include!("../../../fuzz/checks/corpus.rs");

        #[test]
        fn corpus_holds() {
            check_corpus("crilog", check);
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse(b"").is_err());
        assert!(parse(b"notatime stdout F x").is_err());
        assert!(parse(b"2023-11-14T22:13:20Z stdin F x").is_err());
        assert!(parse(b"2023-11-14T22:13:20Z stdout X x").is_err());
        assert_eq!(parse(b"2023-11-14T22:13:20Z stdout F").unwrap().content, b"");
        assert_eq!(parse(b"2023-11-14T22:13:20Z stdout F a b c").unwrap().content, b"a b c");
    }
}
