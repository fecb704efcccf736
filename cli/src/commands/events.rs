//! `berth events`: the event stream like `docker events`. Without `--until` it follows
//! until interrupted.
//!
//! `--since`/`--until` take a timestamp (RFC 3339, `2006-01-02T15:04:05` or `2006-01-02`
//! in local time, or unix seconds such as `1700000000.5` — a plain number is a time, as in
//! Docker), a duration before now (`10m`, `1h30m`, `90s`), or `seq:N`: with `--since`, the
//! events after sequence number N (pass the last seq you saw to resume); with `--until`,
//! up to and including N.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use berth_proto::events::v1::{Envelope, SubscribeRequest, subscribe_response};
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use futures::StreamExt;

use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show events since a timestamp, a duration before now (10m), or seq:N (after seq N)
    #[arg(long)]
    since: Option<String>,
    /// Stop at a timestamp, a duration before now, or seq:N (N included)
    #[arg(long)]
    until: Option<String>,
    /// Filter output based on conditions provided (container, event, image, type, label,
    /// topic, namespace, id, network, volume)
    #[arg(long, short = 'f', value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Format the output: "json" prints one JSON object per line
    #[arg(long)]
    format: Option<String>,
}

/// A position in the event stream.
#[derive(Debug, Clone, PartialEq)]
enum Point {
    Seq(u64),
    Time(DateTime<Utc>),
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let json = match args.format.as_deref() {
        None | Some("") => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => return Err(anyhow!("unsupported --format {other:?}: use \"json\"").into()),
    };
    let now = Utc::now();
    let mut request = SubscribeRequest { filters: crate::output::parse_filters(&args.filter)?, ..Default::default() };
    match args.since.as_deref().map(|s| parse_point(s, now)).transpose().context("invalid --since")? {
        // seq 0 has no "after" on the wire (0 means live only): from the oldest event.
        Some(Point::Seq(0)) => request.since_time = Some(prost_types::Timestamp { seconds: 0, nanos: 1 }),
        Some(Point::Seq(seq)) => request.since_seq = seq,
        Some(Point::Time(time)) => request.since_time = Some(berth_common::time::to_proto(time)),
        None => {}
    }
    match args.until.as_deref().map(|s| parse_point(s, now)).transpose().context("invalid --until")? {
        Some(Point::Seq(seq)) => request.until_seq = seq,
        Some(Point::Time(time)) => request.until_time = Some(berth_common::time::to_proto(time)),
        None => {}
    }
    let follows = args.until.is_none();

    let mut stream = connection.events().subscribe(request).await.map_err(anyhow::Error::from)?.into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(item) = stream.next().await {
        let line = match item.map_err(anyhow::Error::from)?.item {
            Some(subscribe_response::Item::Envelope(envelope)) if json => json_line(&envelope)?,
            Some(subscribe_response::Item::Envelope(envelope)) => human_line(&envelope),
            Some(subscribe_response::Item::Lost(lost)) => {
                eprintln!("WARNING: events {} to {} were lost: {}", lost.first_seq, lost.last_seq, lost.reason);
                continue;
            }
            None => continue,
        };
        // A closed pipe (`berth events | head`) is a normal way to stop.
        if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
            return Ok(());
        }
    }
    if follows {
        return Err(anyhow!("the event stream ended: the daemon closed it (shutting down?)").into());
    }
    Ok(())
}

fn parse_point(text: &str, now: DateTime<Utc>) -> Result<Point> {
    let text = text.trim();
    if let Some(seq) = text.strip_prefix("seq:") {
        return Ok(Point::Seq(seq.parse().with_context(|| format!("{seq:?} is not a sequence number"))?));
    }
    if let Some(time) = parse_unix(text) {
        return Ok(Point::Time(time));
    }
    if let Some(duration) = parse_duration(text) {
        let duration = chrono::Duration::from_std(duration).map_err(|_| anyhow!("{text:?} is too long ago"))?;
        return Ok(Point::Time(now - duration));
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(Point::Time(time.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local(naive);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return local(date.and_time(chrono::NaiveTime::MIN));
    }
    bail!("{text:?} is not a timestamp, a duration (10m, 1h30m) or seq:N")
}

fn local(naive: NaiveDateTime) -> Result<Point> {
    let time = Local.from_local_datetime(&naive).earliest().ok_or_else(|| anyhow!("{naive} does not exist locally"))?;
    Ok(Point::Time(time.with_timezone(&Utc)))
}

/// Unix seconds with an optional fraction: "1700000000" or "1700000000.123456789".
fn parse_unix(text: &str) -> Option<DateTime<Utc>> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if seconds.is_empty()
        || !seconds.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let nanos = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").get(..9)?.parse().ok()? };
    Utc.timestamp_opt(seconds.parse().ok()?, nanos).single()
}

/// Go's duration syntax, as Docker accepts it: "10m", "1h30m", "1.5h", "250ms".
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

fn event_time(envelope: &Envelope) -> DateTime<Utc> {
    envelope.timestamp.as_ref().and_then(berth_common::time::from_proto).unwrap_or_default()
}

/// `2026-11-28T00:00:00.000000000Z container die <id> (exitCode=0, image=busybox, name=foo)`
fn human_line(envelope: &Envelope) -> String {
    let event = envelope.event.clone().unwrap_or_default();
    let mut line = format!(
        "{} {} {} {}",
        event_time(envelope).format("%Y-%m-%dT%H:%M:%S%.9fZ"),
        event.r#type,
        event.action,
        event.actor_id
    );
    if !event.attributes.is_empty() {
        let attributes: BTreeMap<_, _> = event.attributes.iter().collect();
        let attributes: Vec<String> = attributes.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" ({})", attributes.join(", ")));
    }
    line
}

/// Docker's JSON message, plus berth's seq, namespace and topic.
fn json_line(envelope: &Envelope) -> Result<String> {
    let event = envelope.event.clone().unwrap_or_default();
    let time = event_time(envelope);
    let attributes: BTreeMap<_, _> = event.attributes.iter().collect();
    let mut message = serde_json::json!({
        "Type": event.r#type,
        "Action": event.action,
        "Actor": { "ID": event.actor_id, "Attributes": attributes },
        "scope": "local",
        "time": time.timestamp(),
        "timeNano": time.timestamp_nanos_opt().unwrap_or_default(),
        "seq": envelope.seq,
        "namespace": envelope.namespace,
        "topic": envelope.topic,
    });
    // Docker's legacy fields, for container and image events.
    if event.r#type == "container" || event.r#type == "image" {
        message["status"] = event.action.clone().into();
        message["id"] = event.actor_id.clone().into();
        if let Some(image) = event.attributes.get("image") {
            message["from"] = image.clone().into();
        }
    }
    Ok(serde_json::to_string(&message)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_in_time_and_sequence() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        assert_eq!(parse_point("seq:42", now).unwrap(), Point::Seq(42));
        assert_eq!(parse_point("10m", now).unwrap(), Point::Time(now - chrono::Duration::minutes(10)));
        assert_eq!(parse_point("1h30m", now).unwrap(), Point::Time(now - chrono::Duration::minutes(90)));
        assert_eq!(parse_point("1700000000", now).unwrap(), Point::Time(Utc.timestamp_opt(1_700_000_000, 0).unwrap()));
        assert_eq!(
            parse_point("1700000000.25", now).unwrap(),
            Point::Time(Utc.timestamp_opt(1_700_000_000, 250_000_000).unwrap())
        );
        assert_eq!(
            parse_point("2026-11-28T00:00:00.5Z", now).unwrap(),
            Point::Time(Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(500))
        );
        assert!(matches!(parse_point("2026-11-28", now).unwrap(), Point::Time(_)));
        for bad in ["", "seq:x", "10y", "yesterday", "1.2.3"] {
            assert!(parse_point(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_read_like_docker() {
        let envelope = Envelope {
            seq: 7,
            timestamp: Some(prost_types::Timestamp { seconds: 1_795_824_000, nanos: 5 }),
            namespace: "default".into(),
            topic: "/tasks/exit".into(),
            event: Some(berth_proto::events::v1::Event {
                r#type: "container".into(),
                action: "die".into(),
                actor_id: "abc".into(),
                attributes: [("name", "foo"), ("image", "busybox"), ("exitCode", "0")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                payload: None,
            }),
        };
        assert_eq!(
            human_line(&envelope),
            "2026-11-28T00:00:00.000000005Z container die abc (exitCode=0, image=busybox, name=foo)"
        );
        let json: serde_json::Value = serde_json::from_str(&json_line(&envelope).unwrap()).unwrap();
        assert_eq!(json["status"], "die");
        assert_eq!(json["from"], "busybox");
        assert_eq!(json["Actor"]["Attributes"]["exitCode"], "0");
        assert_eq!(json["timeNano"], 1_795_824_000_000_000_005i64);
        assert_eq!(json["seq"], 7);
    }
}
