//! `berth history IMAGE`: the image's build history, newest first, like `docker history`.

use berth_proto::images::v1::HistoryRequest;
use serde::Serialize;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::{ago, human_size, print_table, rfc3339};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub image: String,
    /// Print sizes and dates in human readable format (no -H: that is the daemon host).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Format output: table or json (one object per line).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    #[serde(rename = "ID")]
    id: String,
    created_at: String,
    created_since: String,
    created_by: String,
    size: String,
    comment: String,
}

/// Docker cuts at 45 characters with an ellipsis.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc || id == "<missing>" {
        return id.to_string();
    }
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let response = connection
        .images()
        .history(HistoryRequest { reference: args.image.clone() })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner();
    if args.quiet {
        for entry in &response.entries {
            println!("{}", short_id(&entry.id, args.no_trunc));
        }
        return Ok(());
    }
    let rows: Vec<Row> = response
        .entries
        .iter()
        .map(|entry| {
            let created_by = entry.created_by.replace(['\t', '\n'], " ");
            Row {
                id: short_id(&entry.id, args.no_trunc),
                created_at: rfc3339(entry.created.as_ref()),
                created_since: if entry.created.is_some() { ago(entry.created.as_ref()) } else { "N/A".into() },
                created_by: if args.no_trunc { created_by } else { truncate(&created_by, 45) },
                size: if args.human { human_size(entry.size.max(0) as u64) } else { entry.size.to_string() },
                comment: entry.comment.clone(),
            }
        })
        .collect();
    match args.format.as_deref() {
        Some("json") => crate::output::print_json_lines(&rows)?,
        None | Some("table") => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let created = if args.human { r.created_since.clone() } else { r.created_at.clone() };
                    vec![r.id.clone(), created, r.created_by.clone(), r.size.clone(), r.comment.clone()]
                })
                .collect();
            print_table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &cells);
        }
        Some(other) => return Err(anyhow::anyhow!("unsupported --format {other:?}: use table or json").into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_like_docker() {
        assert_eq!(truncate("short", 45), "short");
        let long = "x".repeat(50);
        assert_eq!(truncate(&long, 45).chars().count(), 45);
        assert!(truncate(&long, 45).ends_with('…'));
        assert_eq!(short_id("sha256:0123456789abcdef", false), "0123456789ab");
        assert_eq!(short_id("<missing>", false), "<missing>");
    }
}
