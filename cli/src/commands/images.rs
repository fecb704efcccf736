//! `berth images` / `berth image ls`: Docker's columns REPOSITORY TAG IMAGE ID CREATED
//! SIZE, one row per tag.

use berth_proto::images::v1::{ImageSummary, ListImagesRequest};
use berth_proto::types::v1::Filter;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::human_size;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only images of this repository[:tag].
    pub reference: Option<String>,
    /// Show all images (default hides intermediate images).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Only show image IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (reference=, dangling=, label=).
    #[arg(long, short = 'f')]
    pub filter: Vec<String>,
    /// Output format: "table" (default) or "json" (one object per line).
    #[arg(long)]
    pub format: Option<String>,
}

/// Docker's JSON keys for `images --format json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    containers: String,
    created_at: String,
    created_since: String,
    digest: String,
    #[serde(rename = "ID")]
    id: String,
    repository: String,
    shared_size: String,
    size: String,
    tag: String,
    unique_size: String,
    virtual_size: String,
}

/// Docker's "About an hour ago" style.
pub fn human_since(time: DateTime<Utc>) -> String {
    format!("{} ago", crate::output::human_duration((Utc::now() - time).num_seconds().max(0)))
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc { id.to_string() } else { id.trim_start_matches("sha256:").chars().take(12).collect() }
}

/// Splits a familiar "repo:tag" (the tag is after the last ':' that is not in a host).
fn split_tag(repo_tag: &str) -> (&str, &str) {
    match repo_tag.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (repo_tag, "<none>"),
    }
}

fn rows(images: &[ImageSummary], no_trunc: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for image in images {
        let created = image.created.as_ref().and_then(berth_common::time::from_proto);
        let digest_of = |repository: &str| {
            image
                .repo_digests
                .iter()
                .find_map(|d| d.split_once('@').filter(|(r, _)| *r == repository).map(|(_, d)| d.to_string()))
                .unwrap_or_else(|| "<none>".into())
        };
        let mut push = |repository: String, tag: String, digest: String| {
            rows.push(Row {
                containers: if image.containers < 0 { "N/A".into() } else { image.containers.to_string() },
                created_at: created.map(|t| t.format("%Y-%m-%d %H:%M:%S %z UTC").to_string()).unwrap_or_default(),
                created_since: created.map(human_since).unwrap_or_else(|| "N/A".into()),
                digest,
                id: short_id(&image.id, no_trunc),
                repository,
                shared_size: "N/A".into(),
                size: human_size(image.size.max(0) as u64),
                tag,
                unique_size: "N/A".into(),
                virtual_size: human_size(image.size.max(0) as u64),
            });
        };
        if image.repo_tags.is_empty() {
            let (repository, digest) = image
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(r, d)| (r.to_string(), d.to_string()))
                .unwrap_or_else(|| ("<none>".into(), "<none>".into()));
            push(repository, "<none>".into(), digest);
        }
        for repo_tag in &image.repo_tags {
            let (repository, tag) = split_tag(repo_tag);
            push(repository.to_string(), tag.to_string(), digest_of(repository));
        }
    }
    rows
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let mut filters = crate::output::parse_filters(&args.filter)?;
    if let Some(reference) = &args.reference {
        filters.push(Filter { key: "reference".into(), values: vec![reference.clone()] });
    }
    let response = connection
        .images()
        .list(ListImagesRequest { filters, all: args.all })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner();
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for image in &response.images {
            let id = short_id(&image.id, args.no_trunc);
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    let rows = rows(&response.images, args.no_trunc);
    match args.format.as_deref() {
        Some("json") => crate::output::print_json_lines(&rows)?,
        None | Some("table") => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let cells: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| {
                    let mut cells = vec![r.repository, r.tag];
                    if args.digests {
                        cells.push(r.digest);
                    }
                    cells.extend([r.id, r.created_since, r.size]);
                    cells
                })
                .collect();
            crate::output::print_table(&header, &cells);
        }
        Some(other) => {
            return Err(anyhow::anyhow!("unsupported --format {other:?}: use \"table\" or \"json\"").into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_since(Utc::now() - chrono::Duration::seconds(30)), "30 seconds ago");
        assert_eq!(human_since(Utc::now() - chrono::Duration::minutes(90)), "About an hour ago");
        assert_eq!(human_since(Utc::now() - chrono::Duration::days(3)), "3 days ago");
        assert_eq!(human_since(Utc::now() - chrono::Duration::days(20)), "2 weeks ago");
        assert_eq!(split_tag("127.0.0.1:5000/busybox:latest"), ("127.0.0.1:5000/busybox", "latest"));
        assert_eq!(split_tag("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox", "<none>"));
    }
}
