// The properties of the CRI log format, shared by the `crilog` fuzz target and
// berth-common's unit tests. Pulled in with `include!`: the including module provides
// `parse`, `encode`, `LineSplitter`, `Stream` and `Record` (berth_common::crilog).

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// Times `encode` writes in a form `parse` reads back (RFC 3339 has 4-digit years).
fn encodable(time: &DateTime<Utc>) -> bool {
    (0..=9999).contains(&time.year())
}

/// Reads the fuzz input as the parameters of a check, then its payload.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.byte()))
    }
}

/// `data` is both a log file (each line must parse or be refused, never panic, and what
/// parses re-encodes to itself) and the parameters + payload of an encode/split round trip.
pub fn check(data: &[u8]) {
    for line in data.split(|b| *b == b'\n') {
        if let Ok(record) = parse(line)
            && encodable(&record.time)
        {
            let mut out = Vec::new();
            encode(&mut out, record.time, record.stream, record.partial, &record.content);
            let again = parse(out.strip_suffix(b"\n").expect("a record ends with a newline"));
            assert_eq!(again.as_ref(), Ok(&record), "re-encoded as {:?}", String::from_utf8_lossy(&out));
        }
    }

    let mut input = Input(data);
    // Any time from year 1 to 9999, including leap seconds (nanos >= 1e9 after :59).
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = MIN + (input.u64() % (MAX - MIN + 1) as u64) as i64;
    let nanos = (input.u64() % 2_000_000_000) as u32;
    let time = Utc
        .timestamp_opt(secs, nanos)
        .single()
        .unwrap_or_else(|| Utc.timestamp_opt(secs, nanos % 1_000_000_000).unwrap());
    let flags = input.byte();
    let stream = if flags & 1 == 0 { Stream::Stdout } else { Stream::Stderr };
    let partial = flags & 2 != 0;
    let max_line = usize::from(input.byte() % 64) + 1;
    let chunk = usize::from(input.byte()) + 1;
    let payload = input.0;

    // encode then parse gives back content, stream, partial flag and time.
    let content: Vec<u8> = payload.iter().copied().filter(|b| *b != b'\n').collect();
    let mut out = Vec::new();
    encode(&mut out, time, stream, partial, &content);
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one record, one line");
    let record = parse(out.strip_suffix(b"\n").expect("a record ends with a newline"))
        .unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(&out)));
    assert_eq!(record, Record { time, stream, partial, content });

    // The splitter's records, parsed, give back the bytes pushed in whatever chunks.
    let mut splitter =
        if flags & 4 == 0 { LineSplitter::with_max_line(stream, max_line) } else { LineSplitter::new(stream) };
    let limit = if flags & 4 == 0 { max_line } else { LineSplitter::DEFAULT_MAX_LINE };
    let mut out = Vec::new();
    for piece in payload.chunks(chunk) {
        splitter.push(piece, time, &mut out);
    }
    splitter.flush(time, &mut out);
    let body = match out.strip_suffix(b"\n") {
        Some(body) => body,
        None => {
            assert!(out.is_empty() && payload.is_empty(), "output does not end with a newline");
            return;
        }
    };
    let records: Vec<Record> = body
        .split(|b| *b == b'\n')
        .map(|line| parse(line).unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(line))))
        .collect();
    let mut rebuilt = Vec::new();
    for (i, record) in records.iter().enumerate() {
        assert_eq!((record.stream, record.time), (stream, time));
        assert!(record.content.len() <= limit, "record longer than the limit");
        if record.partial {
            assert!(!record.content.is_empty(), "empty partial record");
            if i + 1 < records.len() {
                assert_eq!(record.content.len(), limit, "a partial record before the last is a full cut");
            }
        }
        rebuilt.extend_from_slice(&record.content);
        if !record.partial {
            rebuilt.push(b'\n');
        }
    }
    assert_eq!(rebuilt, payload);
}
