//! `Login`: checks credentials against a registry's own auth flow, as `docker login` does:
//! `GET /v2/`, then by the challenge either the same request with basic auth, or the
//! bearer token endpoint with basic auth (`account=<user>`). Nothing is stored here: the
//! client keeps the credentials.
//!
//! Hand-written on reqwest (the client oci-client uses): oci-client's `auth` does not
//! verify basic credentials (it only remembers them) and never reports a token's refresh
//! token, so it cannot tell a wrong password.

use std::time::Duration;

use berth_common::Config;
use berth_proto::images::v1::{LoginRequest, LoginResponse};
use reqwest::StatusCode;

use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;
use crate::registry;

/// The registry a `login` server address names: "docker.io" for Docker Hub's spellings,
/// else host[:port] without scheme or path.
pub fn registry_of(server: &str) -> String {
    let server = server.trim();
    let without_scheme = server.strip_prefix("https://").or_else(|| server.strip_prefix("http://")).unwrap_or(server);
    let host = without_scheme.split('/').next().unwrap_or("");
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        host => host.to_string(),
    }
}

/// The scheme and parameters of a `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn parse(header: &str) -> Challenge {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = Vec::new();
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let Some((key, after)) = rest.split_once('=') else { break };
            let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            };
            params.push((key, value.to_string()));
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        }
        Challenge { scheme: scheme.to_ascii_lowercase(), params }
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn rejected(registry: &str, status: StatusCode, body: &str) -> Error {
    let detail: Vec<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .map(|errors| errors.iter().filter_map(|e| e["message"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let detail = if detail.is_empty() { "incorrect username or password".to_string() } else { detail.join("; ") };
    Error::Unauthenticated(format!("login to {registry} failed: {detail} ({status})"))
}

pub async fn login(config: &Config, request: &LoginRequest) -> Result<LoginResponse> {
    let registry = registry_of(&request.server_address);
    let auth = request.auth.clone().unwrap_or_default();
    if auth.username.is_empty() || auth.password.is_empty() {
        return Err(Error::InvalidArgument("login needs a username and a password".into()));
    }
    let host = if registry == DOCKER_HUB { "registry-1.docker.io" } else { registry.as_str() };
    let scheme = if registry::is_insecure(config, &registry) { "http" } else { "https" };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let url = format!("{scheme}://{host}/v2/");
    let unreachable = |e: reqwest::Error| Error::Registry(format!("login to {registry}: {}", registry::describe(&e)));
    let response = client.get(&url).send().await.map_err(unreachable)?;
    let succeeded = || LoginResponse { status: "Login Succeeded".into(), identity_token: String::new() };
    if response.status().is_success() {
        // The registry asks for no credentials at all.
        return Ok(succeeded());
    }
    if response.status() != StatusCode::UNAUTHORIZED {
        return Err(Error::Registry(format!("login to {registry}: {url} answered {}", response.status())));
    }
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(Challenge::parse)
        .ok_or_else(|| Error::Registry(format!("login to {registry}: 401 without an authentication challenge")))?;
    match challenge.scheme.as_str() {
        "basic" => {
            let response =
                client.get(&url).basic_auth(&auth.username, Some(&auth.password)).send().await.map_err(unreachable)?;
            let status = response.status();
            if status.is_success() {
                return Ok(succeeded());
            }
            let body = response.text().await.unwrap_or_default();
            Err(rejected(&registry, status, &body))
        }
        "bearer" => {
            let realm = challenge
                .param("realm")
                .ok_or_else(|| Error::Registry(format!("login to {registry}: bearer challenge without a realm")))?;
            let mut query = vec![("account", auth.username.as_str())];
            if let Some(service) = challenge.param("service") {
                query.push(("service", service));
            }
            let response = client
                .get(realm)
                .query(&query)
                .basic_auth(&auth.username, Some(&auth.password))
                .send()
                .await
                .map_err(unreachable)?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(rejected(&registry, status, &body));
            }
            let token: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let identity_token = token["refresh_token"].as_str().unwrap_or_default().to_string();
            Ok(LoginResponse { identity_token, ..succeeded() })
        }
        other => Err(Error::Unsupported(format!("login to {registry}: unsupported authentication scheme {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_registries() {
        assert_eq!(registry_of(""), "docker.io");
        assert_eq!(registry_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_of("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
    }

    #[test]
    fn challenges_parse_like_registries_send_them() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="a:b:pull,push""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("a:b:pull,push"));
        let c = Challenge::parse(r#"Basic realm="berth-test""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("berth-test"));
    }
}
