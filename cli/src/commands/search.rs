//! `berth search [--registry HOST] TERM`: Docker Hub's search, or any registry's catalog
//! filtered by the term. The registry is `--registry`, or a host prefix of the term
//! (`127.0.0.1:5000/busy`, as `docker search` reads it).

use berth_proto::images::v1::SearchRequest;
use berth_proto::types::v1::Filter;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::print_table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Search term; `HOST[:PORT]/TERM` searches that registry.
    pub term: String,
    /// Registry to search (default: Docker Hub).
    #[arg(long)]
    pub registry: Option<String>,
    /// Max number of search results.
    #[arg(long, default_value_t = 25)]
    pub limit: i32,
    /// Filter output based on conditions provided (is-official=true|false, stars=N).
    #[arg(long, short = 'f', value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: table or json (one object per line).
    #[arg(long)]
    pub format: Option<String>,
}

/// (registry, term) from a term with a host prefix, by Docker's rule for the first
/// component (a '.' or ':' in it, or "localhost").
fn split_term(term: &str) -> (Option<&str>, &str) {
    match term.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, term),
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let (prefix, term) = split_term(&args.term);
    let registry = args.registry.clone().or(prefix.map(str::to_string)).unwrap_or_default();
    let mut filters: Vec<Filter> = Vec::new();
    for text in &args.filter {
        let (key, value) =
            text.split_once('=').ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value)"))?;
        filters.push(Filter { key: key.into(), values: vec![value.into()] });
    }
    let auth = super::pull::credentials(&format!("{}/x", if registry.is_empty() { "docker.io" } else { &registry }));
    let request = SearchRequest { term: term.to_string(), limit: args.limit, filters, auth, registry };
    let response = connection.images().search(request).await.map_err(anyhow::Error::from)?.into_inner();
    match args.format.as_deref() {
        Some("json") => {
            for result in &response.results {
                let row = serde_json::json!({
                    "Name": result.name,
                    "Description": result.description,
                    "StarCount": result.star_count.to_string(),
                    "IsOfficial": result.is_official.to_string(),
                });
                println!("{row}");
            }
        }
        None | Some("table") => {
            let rows: Vec<Vec<String>> = response
                .results
                .iter()
                .map(|r| {
                    let description = r.description.replace(['\n', '\r', '\t'], " ");
                    vec![
                        r.name.clone(),
                        if args.no_trunc { description } else { truncate(&description, 45) },
                        r.star_count.to_string(),
                        if r.is_official { "[OK]".into() } else { String::new() },
                    ]
                })
                .collect();
            print_table(&["NAME", "DESCRIPTION", "STARS", "OFFICIAL"], &rows);
        }
        Some(other) => return Err(anyhow::anyhow!("unsupported --format {other:?}: use table or json").into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes_name_the_registry() {
        assert_eq!(split_term("127.0.0.1:5000/busy"), (Some("127.0.0.1:5000"), "busy"));
        assert_eq!(split_term("busybox"), (None, "busybox"));
        assert_eq!(split_term("library/busybox"), (None, "library/busybox"));
    }
}
