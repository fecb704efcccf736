//! Output helpers shared by commands: JSON, tables, sizes and times as Docker prints them.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// `--format` as most commands accept it: a table (default) or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// List commands' `--format json`, as Docker prints it: one compact object per line.
pub fn print_json_lines<T: Serialize>(rows: &[T]) -> Result<()> {
    for row in rows {
        println!("{}", serde_json::to_string(row)?);
    }
    Ok(())
}

/// `--filter key=value` flags, grouped by key (values of one key are OR-ed by the daemon).
pub fn parse_filters(filters: &[String]) -> Result<Vec<berth_proto::types::v1::Filter>> {
    let mut parsed: Vec<berth_proto::types::v1::Filter> = Vec::new();
    for filter in filters {
        let (key, value) = filter
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value): {filter}"))?;
        let key = key.trim().to_ascii_lowercase();
        match parsed.iter_mut().find(|f| f.key == key) {
            Some(existing) => existing.values.push(value.to_string()),
            None => parsed.push(berth_proto::types::v1::Filter { key, values: vec![value.to_string()] }),
        }
    }
    Ok(parsed)
}

/// Prints rows as Docker's tabwriter does: columns padded to the widest cell plus three
/// spaces, the last column unpadded.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        println!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Bytes in Docker's human form: decimal units, three significant digits ("1.23MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 || unit == 0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// Binary units with four significant digits, as Docker's BytesSize prints memory
/// ("22.98GiB", "64MiB", "312KiB").
pub fn human_binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = match value {
        v if v >= 1000.0 => 0,
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// go-units' HumanDuration, which Docker uses for "Up 3 seconds" and "2 minutes ago".
pub fn human_duration(seconds: i64) -> String {
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match seconds {
        s if s < 1 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

pub fn since(time: Option<&prost_types::Timestamp>) -> i64 {
    berth_common::time::from_optional(time).map(|t| (Utc::now() - t).num_seconds()).unwrap_or(0)
}

/// "3 minutes ago", or "" for an unset time.
pub fn ago(time: Option<&prost_types::Timestamp>) -> String {
    match berth_common::time::from_optional(time) {
        Some(t) => format!("{} ago", human_duration((Utc::now() - t).num_seconds())),
        None => String::new(),
    }
}

/// RFC 3339 with nanoseconds, or Docker's zero time for an unset one.
pub fn rfc3339(time: Option<&prost_types::Timestamp>) -> String {
    match berth_common::time::from_optional(time) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// Parses `--since`/`--until` values as Docker does: RFC 3339 times, unix seconds (with
/// fractions), or durations relative to now ("10m", "1h30m", "45s").
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        let secs = seconds.trunc() as i64;
        let nanos = ((seconds.fract()) * 1e9) as u32;
        return DateTime::from_timestamp(secs, nanos).ok_or_else(|| anyhow::anyhow!("timestamp {text} out of range"));
    }
    let duration = parse_duration(text).ok_or_else(|| {
        anyhow::anyhow!("invalid time {text:?}: use an RFC 3339 time, unix seconds, or a duration like 10m or 1h30m")
    })?;
    Ok(Utc::now() - duration)
}

/// "1h30m", "10m", "45s", "1.5h", "300ms".
pub fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        total += value
            * match unit.as_str() {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return None,
            };
        any = true;
    }
    if !number.is_empty() || !any {
        return None;
    }
    chrono::Duration::try_milliseconds((total * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_binary_size(24 * 1024 * 1024 * 1024), "24GiB");
        assert_eq!(human_binary_size(64 << 20), "64MiB");
        assert_eq!(human_binary_size(319_488), "312KiB");
        assert_eq!(human_binary_size(24_676_000_000), "22.98GiB");
    }

    #[test]
    fn filters_group_by_key() {
        let filters = parse_filters(&["event=die".into(), "Event=oom".into(), "label=a=b".into()]).unwrap();
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0].key, "event");
        assert_eq!(filters[0].values, ["die", "oom"]);
        assert_eq!(filters[1].values, ["a=b"]);
        assert!(parse_filters(&["nonsense".into()]).is_err());
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3700), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn times_and_durations_parse() {
        assert_eq!(parse_duration("1h30m").unwrap().num_seconds(), 5400);
        assert_eq!(parse_duration("10m").unwrap().num_seconds(), 600);
        assert_eq!(parse_duration("300ms").unwrap().num_milliseconds(), 300);
        assert!(parse_duration("10").is_none());
        assert!(parse_duration("5x").is_none());
        assert_eq!(parse_time("1700000000").unwrap().timestamp(), 1_700_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap().timestamp(), 1_700_000_000);
        assert!((Utc::now() - parse_time("10m").unwrap()).num_seconds() >= 599);
        assert!(parse_time("yesterday").is_err());
    }
}
