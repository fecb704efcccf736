//! Where a Berth API is served: a unix socket or a TCP host:port.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A listen or connect address: `unix:///run/berth/berth.sock`, `/run/berth/berth.sock`,
/// `tcp://127.0.0.1:2375` or `127.0.0.1:2375`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid address {input:?}: {reason} (use unix:///path/to.sock or tcp://host:port)")]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| AddressError { input: input.to_string(), reason };
        if let Some(path) = input.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(error("a unix socket path must be absolute"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if input.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(input)));
        }
        let host_port = input
            .strip_prefix("tcp://")
            .or_else(|| input.strip_prefix("http://"))
            .unwrap_or(input)
            .trim_end_matches('/');
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(host_port.to_string()))
            }
            _ => Err(error("expected host:port")),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Tcp(host_port) => write!(f, "tcp://{host_port}"),
        }
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp_forms() {
        assert_eq!("unix:///run/b.sock".parse::<Address>().unwrap(), Address::Unix("/run/b.sock".into()));
        assert_eq!("/run/b.sock".parse::<Address>().unwrap(), Address::Unix("/run/b.sock".into()));
        assert_eq!("tcp://127.0.0.1:2375".parse::<Address>().unwrap(), Address::Tcp("127.0.0.1:2375".into()));
        assert_eq!("localhost:1".parse::<Address>().unwrap(), Address::Tcp("localhost:1".into()));
        assert_eq!("[::1]:80".parse::<Address>().unwrap(), Address::Tcp("[::1]:80".into()));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = "unix://relative.sock".parse::<Address>().unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = "tcp://nohost".parse::<Address>().unwrap_err().to_string();
        assert!(err.contains("host:port"), "{err}");
        assert!("tcp://:80".parse::<Address>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["unix:///a/b.sock", "tcp://127.0.0.1:9"] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
    }
}
