//! `Search`: Docker Hub's search API (`/v1/search`) where a registry offers it, else the
//! registry's `/v2/_catalog` filtered by substring (no descriptions or stars there).
//! Filters as `docker search` takes them: `is-official=true|false`, `stars=N`.

use std::time::Duration;

use berth_common::Config;
use berth_proto::images::v1::{SearchRequest, SearchResponse, SearchResult};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;
use crate::registry;

/// Docker's default and largest `--limit`.
const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 100;
/// Repositories per catalog page.
const CATALOG_PAGE: usize = 1000;
/// A registry with more repositories than this is searched only this far.
const CATALOG_MAX: usize = 100_000;

#[derive(Debug, Default)]
struct Filters {
    official: Option<bool>,
    automated: Option<bool>,
    stars: u32,
}

fn filters(request: &SearchRequest) -> Result<Filters> {
    let mut out = Filters::default();
    for filter in &request.filters {
        for value in &filter.values {
            let invalid = || Error::InvalidArgument(format!("invalid filter value {}={value}", filter.key));
            match filter.key.as_str() {
                "is-official" => out.official = Some(value.parse().map_err(|_| invalid())?),
                "is-automated" => out.automated = Some(value.parse().map_err(|_| invalid())?),
                "stars" => out.stars = value.parse().map_err(|_| invalid())?,
                other => return Err(Error::InvalidArgument(format!("invalid filter '{other}'"))),
            }
        }
    }
    Ok(out)
}

impl Filters {
    fn keep(&self, result: &SearchResult) -> bool {
        self.official.is_none_or(|o| o == result.is_official)
            && self.automated.is_none_or(|a| a == result.is_automated)
            && result.star_count.max(0) as u32 >= self.stars
    }
}

#[derive(Deserialize)]
struct V1Results {
    #[serde(default)]
    results: Vec<V1Result>,
}

#[derive(Deserialize)]
struct V1Result {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    star_count: i32,
    #[serde(default)]
    is_official: bool,
    #[serde(default)]
    is_automated: bool,
}

/// `/v1/search`; `None` when the registry does not offer it.
async fn v1_search(scheme: &str, host: &str, term: &str, limit: usize) -> Result<Option<Vec<SearchResult>>> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let url = format!("{scheme}://{host}/v1/search");
    let response = client
        .get(&url)
        .query(&[("q", term), ("n", &limit.to_string())])
        .send()
        .await
        .map_err(|e| Error::Registry(format!("searching {host}: {}", registry::describe(&e))))?;
    let status = response.status();
    if matches!(status.as_u16(), 404 | 405 | 501) {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(Error::Registry(format!("searching {host}: {url} answered {status}")));
    }
    let body: V1Results = match response.json().await {
        Ok(body) => body,
        // Something else answers there (e.g. an HTML page): no search API.
        Err(_) => return Ok(None),
    };
    Ok(Some(
        body.results
            .into_iter()
            .map(|r| SearchResult {
                name: r.name,
                description: r.description,
                star_count: r.star_count,
                is_official: r.is_official,
                is_automated: r.is_automated,
            })
            .collect(),
    ))
}

/// Every repository of the registry's catalog whose name contains `term`.
async fn catalog_search(
    config: &Config,
    registry_host: &str,
    term: &str,
    request: &SearchRequest,
) -> Result<Vec<SearchResult>> {
    let endpoint = registry::origin(config, registry_host);
    let client = registry::client(config, std::slice::from_ref(&endpoint));
    let auth = registry::credentials(request.auth.as_ref(), registry_host);
    let reference = oci_client::Reference::with_tag(registry_host.to_string(), "catalog".into(), "latest".into());
    let needle = term.to_lowercase();
    let mut found = Vec::new();
    let mut last: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = client
            .catalog(&reference, &auth, Some(CATALOG_PAGE), last.as_deref())
            .await
            .map_err(|e| registry::error(&format!("the catalog of {registry_host}"), e))?;
        let count = page.repositories.len();
        seen += count;
        last = page.repositories.last().cloned();
        found.extend(
            page.repositories
                .into_iter()
                .filter(|r| r.to_lowercase().contains(&needle))
                .map(|name| SearchResult { name: format!("{registry_host}/{name}"), ..Default::default() }),
        );
        if count < CATALOG_PAGE || seen >= CATALOG_MAX || last.is_none() {
            break;
        }
    }
    Ok(found)
}

pub async fn search(config: &Config, request: &SearchRequest) -> Result<SearchResponse> {
    let filters = filters(request)?;
    let limit = match request.limit {
        0 => DEFAULT_LIMIT,
        n if n < 0 || n as usize > MAX_LIMIT => {
            return Err(Error::InvalidArgument(format!("limit {n} is outside the range of [1, {MAX_LIMIT}]")));
        }
        n => n as usize,
    };
    let registry_host = match request.registry.trim() {
        "" | "docker.io" | "index.docker.io" => DOCKER_HUB.to_string(),
        other => crate::login::registry_of(other),
    };
    let term = request.term.trim();
    if term.is_empty() {
        return Err(Error::InvalidArgument("search needs a term".into()));
    }
    let (scheme, host) = if registry_host == DOCKER_HUB {
        ("https", "index.docker.io")
    } else {
        (if registry::is_insecure(config, &registry_host) { "http" } else { "https" }, registry_host.as_str())
    };
    let results = match v1_search(scheme, host, term, limit).await? {
        Some(results) => results,
        None if registry_host == DOCKER_HUB => {
            return Err(Error::Registry("Docker Hub did not answer the search API".into()));
        }
        None => catalog_search(config, &registry_host, term, request).await?,
    };
    let results = results.into_iter().filter(|r| filters.keep(r)).take(limit).collect();
    Ok(SearchResponse { results })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::types::v1::Filter;

    #[test]
    fn filters_follow_docker() {
        let request = SearchRequest {
            filters: vec![
                Filter { key: "is-official".into(), values: vec!["true".into()] },
                Filter { key: "stars".into(), values: vec!["3".into()] },
            ],
            ..Default::default()
        };
        let f = filters(&request).unwrap();
        let official = SearchResult { is_official: true, star_count: 5, ..Default::default() };
        assert!(f.keep(&official));
        assert!(!f.keep(&SearchResult { star_count: 5, ..Default::default() }));
        assert!(!f.keep(&SearchResult { is_official: true, star_count: 2, ..Default::default() }));
        let bad = SearchRequest {
            filters: vec![Filter { key: "color".into(), values: vec!["x".into()] }],
            ..Default::default()
        };
        assert!(filters(&bad).is_err());
    }
}
