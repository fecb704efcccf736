//! Reaching registries with Docker's rules: plain HTTP only for loopback registries and
//! those listed in `insecure-registries` (host[:port] or CIDR); `registry-mirrors` for
//! docker.io and `registry-host-mirrors` per host, tried in order before the origin;
//! credentials from the request, else from the daemon user's `~/.docker/config.json`
//! (including credential helpers) through `docker_credential`.

use std::net::IpAddr;
use std::time::Duration;

use berth_common::Config;
use berth_proto::types::v1::RegistryAuth as AuthProto;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

use crate::error::Error;
use crate::reference::DOCKER_HUB;

/// One place to pull from: a mirror or the origin registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port] as used in references.
    pub host: String,
    pub plain_http: bool,
    pub mirror: bool,
}

/// Where `registry` is pulled from, in order: its mirrors, then the origin.
pub fn endpoints(config: &Config, registry: &str) -> Vec<Endpoint> {
    let mirrors: &[String] = if registry == DOCKER_HUB {
        &config.registry_mirrors
    } else {
        config.registry_host_mirrors.get(registry).map(Vec::as_slice).unwrap_or(&[])
    };
    let mut out: Vec<Endpoint> = mirrors
        .iter()
        .filter_map(|url| {
            let (scheme, rest) = match url.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, url.as_str()),
            };
            let host = rest.split('/').next().filter(|h| !h.is_empty())?.to_string();
            let plain_http = match scheme {
                Some("http") => true,
                Some(_) => false,
                None => is_insecure(config, &host),
            };
            Some(Endpoint { host, plain_http, mirror: true })
        })
        .collect();
    out.push(Endpoint { host: registry.to_string(), plain_http: is_insecure(config, registry), mirror: false });
    out
}

fn host_part(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// Docker's rule: loopback registries may use plain HTTP, and so may those the
/// configuration lists as insecure (by host, host:port or CIDR).
pub fn is_insecure(config: &Config, host_port: &str) -> bool {
    let host = host_part(host_port);
    let ip: Option<IpAddr> = host.parse().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    config.insecure_registries.iter().any(|entry| {
        let entry = entry.trim().trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
        if entry == host_port || entry == host {
            return true;
        }
        match (entry.parse::<ipnet::IpNet>(), ip) {
            (Ok(net), Some(ip)) => net.contains(&ip),
            _ => false,
        }
    })
}

/// An oci-client for these endpoints. Plain HTTP is chosen per host through
/// `ClientProtocol::HttpsExcept` (an insecure registry is spoken to over HTTP rather
/// than first trying HTTPS with unverified certificates; the distribution registry the
/// tests use speaks HTTP).
pub fn client(config: &Config, endpoints: &[Endpoint]) -> oci_client::Client {
    client_with(config, endpoints, false)
}

/// The origin registry alone (push and login never go to a mirror).
pub fn origin(config: &Config, registry: &str) -> Endpoint {
    Endpoint { host: registry.to_string(), plain_http: is_insecure(config, registry), mirror: false }
}

/// Like [`client`]; `monolithic` uploads each blob in one PUT instead of chunked PATCHes.
pub fn client_with(config: &Config, endpoints: &[Endpoint], monolithic: bool) -> oci_client::Client {
    let mut plain: Vec<String> = endpoints.iter().filter(|e| e.plain_http).map(|e| e.host.clone()).collect();
    if plain.iter().any(|h| h == DOCKER_HUB) {
        plain.push("index.docker.io".into());
    }
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        // We resolve indexes ourselves (with variants and --platform).
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(config.registry_read_timeout_seconds)),
        user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

/// Credentials for `registry`: the request's, else the daemon user's Docker config.
pub fn credentials(request: Option<&AuthProto>, registry: &str) -> RegistryAuth {
    if let Some(auth) = request {
        if !auth.registry_token.is_empty() {
            return RegistryAuth::Bearer(auth.registry_token.clone());
        }
        if !auth.username.is_empty() {
            return RegistryAuth::Basic(auth.username.clone(), auth.password.clone());
        }
    }
    let servers: Vec<&str> = if registry == DOCKER_HUB {
        vec!["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    } else {
        vec![registry]
    };
    for server in servers {
        match docker_credential::get_credential(server) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                return RegistryAuth::Basic(user, password);
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => return RegistryAuth::Bearer(token),
            Err(_) => continue,
        }
    }
    RegistryAuth::Anonymous
}

/// Maps an oci-client error to ours, naming what was being fetched.
pub fn error(what: &str, err: OciDistributionError) -> Error {
    match err {
        OciDistributionError::RegistryError { envelope, .. } => {
            let unknown = envelope.errors.iter().any(|e| {
                matches!(e.code, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown)
            });
            let denied =
                envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Denied | OciErrorCode::Unauthorized));
            let messages: Vec<String> =
                envelope.errors.iter().map(|e| e.message.trim().to_string()).filter(|m| !m.is_empty()).collect();
            let detail = if messages.is_empty() { "unknown".to_string() } else { messages.join("; ") };
            if unknown {
                Error::NotFound(format!("{what} not found: {detail}"))
            } else if denied {
                Error::Unauthenticated(format!("{what}: {detail}"))
            } else {
                Error::Registry(format!("{what}: {detail}"))
            }
        }
        OciDistributionError::ImageManifestNotFoundError(message) => {
            Error::NotFound(format!("{what} not found: {message}"))
        }
        OciDistributionError::AuthenticationFailure(message) => Error::Unauthenticated(format!("{what}: {message}")),
        OciDistributionError::UnauthorizedError { url } => {
            Error::Unauthenticated(format!("{what}: not authorized at {url} (run `berth login`?)"))
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch { what: what.to_string(), expected, actual }
        }
        OciDistributionError::ServerError { code: 404, url, .. } => {
            Error::NotFound(format!("{what} not found at {url}"))
        }
        OciDistributionError::ServerError { code: code @ (401 | 403), message, .. } => {
            let detail = registry_message(&message);
            let hint = if code == 401 { " (run `berth login`?)" } else { "" };
            Error::Unauthenticated(format!("{what}: {detail}{hint}"))
        }
        OciDistributionError::ServerError { code, message, url } => {
            Error::Registry(format!("{what}: {url} answered {code}: {}", registry_message(&message)))
        }
        other => Error::Registry(format!("{what}: {}", describe(&other))),
    }
}

/// The messages of a registry's JSON error envelope, else the body as it is.
fn registry_message(body: &str) -> String {
    let messages: Vec<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .map(|errors| {
            errors.iter().filter_map(|e| e.get("message").and_then(|m| m.as_str()).map(str::to_string)).collect()
        })
        .unwrap_or_default();
    if messages.is_empty() {
        let body = body.trim();
        if body.is_empty() { "no details".into() } else { body.chars().take(300).collect() }
    } else {
        messages.join("; ")
    }
}

/// An error with its causes (reqwest hides the useful part, e.g. "connection refused").
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A download stream's error: a digest verification failure becomes a digest mismatch.
pub fn stream_error(what: &str, err: std::io::Error) -> Error {
    if let Some(oci_client::errors::DigestError::VerificationError { expected, actual }) =
        err.get_ref().and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        return Error::DigestMismatch { what: what.to_string(), expected: expected.clone(), actual: actual.clone() };
    }
    Error::Registry(format!("{what}: {}", describe(&err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let c = config(r#"insecure-registries = ["10.0.0.0/8", "reg.example:5000", "plain.example"]"#);
        assert!(is_insecure(&c, "127.0.0.1:5000"));
        assert!(is_insecure(&c, "localhost:5000"));
        assert!(is_insecure(&c, "[::1]:5000"));
        assert!(is_insecure(&c, "10.1.2.3:443"));
        assert!(is_insecure(&c, "reg.example:5000"));
        assert!(is_insecure(&c, "plain.example:8080"));
        assert!(!is_insecure(&c, "reg.example:5001"));
        assert!(!is_insecure(&c, "docker.io"));
        assert!(!is_insecure(&c, "11.0.0.1"));
    }

    #[test]
    fn mirrors_come_before_the_origin() {
        let c = config(
            r#"
            registry-mirrors = ["http://127.0.0.1:5001", "https://mirror.example/"]
            [registry-host-mirrors]
            "quay.io" = ["127.0.0.1:5002"]
            "#,
        );
        let hub = endpoints(&c, "docker.io");
        assert_eq!(
            hub,
            vec![
                Endpoint { host: "127.0.0.1:5001".into(), plain_http: true, mirror: true },
                Endpoint { host: "mirror.example".into(), plain_http: false, mirror: true },
                Endpoint { host: "docker.io".into(), plain_http: false, mirror: false },
            ]
        );
        let quay = endpoints(&c, "quay.io");
        assert_eq!(quay[0], Endpoint { host: "127.0.0.1:5002".into(), plain_http: true, mirror: true });
        assert_eq!(quay.len(), 2);
        assert_eq!(endpoints(&c, "ghcr.io").len(), 1);
    }

    #[test]
    fn request_credentials_win() {
        let auth = AuthProto { username: "u".into(), password: "p".into(), ..Default::default() };
        assert!(matches!(credentials(Some(&auth), "x.example"), RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        let token = AuthProto { registry_token: "t".into(), ..Default::default() };
        assert!(matches!(credentials(Some(&token), "x.example"), RegistryAuth::Bearer(t) if t == "t"));
    }
}
