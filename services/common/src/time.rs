//! Conversions between protobuf timestamps and chrono.

use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;

pub fn to_proto(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

pub fn now() -> Timestamp {
    to_proto(Utc::now())
}

/// `None` for an unset or out-of-range timestamp.
pub fn from_proto(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    Utc.timestamp_opt(timestamp.seconds, nanos).single()
}

/// Unset timestamps (`None` or the zero time) map to `None`.
pub fn from_optional(timestamp: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.filter(|t| t.seconds != 0 || t.nanos != 0).and_then(from_proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_nanoseconds() {
        let time = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(from_proto(&to_proto(time)), Some(time));
        assert_eq!(from_optional(Some(&Timestamp::default())), None);
        assert_eq!(from_proto(&Timestamp { seconds: 1, nanos: -1 }), None);
    }
}
