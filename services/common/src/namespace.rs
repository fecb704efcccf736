//! Namespaces partition every stored object. The namespace travels in the
//! `berth-namespace` gRPC metadata key; the server-side [`crate::serve::RequestContextLayer`]
//! validates it and puts a [`Namespace`] into the request's extensions.

use berth_proto::NAMESPACE_METADATA_KEY;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

pub const DEFAULT_NAMESPACE: &str = "default";
/// The namespace the Kubernetes CRI uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// A validated namespace name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// Rules as containerd's: 1-76 characters of `[a-zA-Z0-9_.-]`, starting and ending with
    /// a letter or digit, and no `..` (the name becomes a path component).
    pub fn new(name: &str) -> Result<Namespace, Status> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if name.is_empty()
            || name.len() > 76
            || !name.chars().all(valid_char)
            || !edge_ok(name.chars().next())
            || !edge_ok(name.chars().last())
            || name.contains("..")
        {
            return Err(Status::invalid_argument(format!(
                "invalid namespace {name:?}: use 1-76 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            )));
        }
        Ok(Namespace(name.to_string()))
    }

    pub fn default_namespace() -> Namespace {
        Namespace(DEFAULT_NAMESPACE.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads the namespace from raw HTTP headers (the server layer uses this).
pub fn from_headers(headers: &http::HeaderMap) -> Result<Namespace, Status> {
    match headers.get(NAMESPACE_METADATA_KEY) {
        None => Ok(Namespace::default_namespace()),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Status::invalid_argument("the berth-namespace metadata is not valid ASCII"))?;
            Namespace::new(text)
        }
    }
}

/// The namespace of a request: from the extensions set by the server layer, else from
/// its metadata, else the default.
pub fn of<T>(request: &Request<T>) -> Result<Namespace, Status> {
    if let Some(namespace) = request.extensions().get::<Namespace>() {
        return Ok(namespace.clone());
    }
    match request.metadata().get(NAMESPACE_METADATA_KEY) {
        None => Ok(Namespace::default_namespace()),
        Some(value) => Namespace::new(
            value.to_str().map_err(|_| Status::invalid_argument("the berth-namespace metadata is not valid ASCII"))?,
        ),
    }
}

/// Builds a request carrying `namespace`, for service-to-service calls made on behalf of
/// a caller.
pub fn request<T>(namespace: &Namespace, message: T) -> Request<T> {
    let mut request = Request::new(message);
    set(&mut request, namespace);
    request
}

pub fn set<T>(request: &mut Request<T>, namespace: &Namespace) {
    // A validated namespace is always valid ASCII metadata.
    if let Ok(value) = MetadataValue::try_from(namespace.as_str()) {
        request.metadata_mut().insert(NAMESPACE_METADATA_KEY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_names() {
        for name in ["default", "k8s.io", "a", "team_1-prod", "x".repeat(76).as_str()] {
            assert!(Namespace::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_path_like_and_odd_names() {
        for name in ["", "-a", "a-", "../etc", "a/b", "a..b", "ns with space", "x".repeat(77).as_str(), "ü"] {
            let err = Namespace::new(name).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}");
        }
    }

    #[test]
    fn request_metadata_round_trip() {
        let ns = Namespace::new("k8s.io").unwrap();
        let req = request(&ns, ());
        assert_eq!(of(&req).unwrap(), ns);
        assert_eq!(of(&Request::new(())).unwrap(), Namespace::default_namespace());
    }
}
