//! `berth image ...`: ls, inspect, prune, pull, rm, tag.

use std::io::{BufRead, Write};

use berth_proto::images::v1::{InspectImageRequest, InspectImageResponse, PruneImagesRequest};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};
use crate::output::human_size;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List images
    #[command(visible_alias = "list")]
    Ls(super::images::Args),
    /// Display detailed information on one or more images
    Inspect(InspectArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Download an image from a registry
    Pull(super::pull::Args),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(super::rmi::Args),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(super::tag::Args),
    /// Upload an image to a registry
    Push(super::push::Args),
    /// Save one or more images to a tar archive
    Save(super::save::Args),
    /// Load an image from a tar archive or STDIN
    Load(super::load::Args),
    /// Import the contents from a tarball to create a filesystem image
    Import(super::import::Args),
    /// Show the history of an image
    History(super::history::Args),
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Format the output: "json" (default) or a Go-template-like path such as '{{.Id}}'.
    #[arg(long, short = 'f')]
    pub format: Option<String>,
    /// Inspect a specific platform of a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>").
    #[arg(long)]
    pub filter: Vec<String>,
}

pub async fn run(command: Command, connection: Connection) -> Outcome {
    match command {
        Command::Ls(args) => super::images::run(args, connection).await,
        Command::Inspect(args) => inspect(args, connection).await,
        Command::Prune(args) => prune(args, connection).await,
        Command::Pull(args) => super::pull::run(args, connection).await,
        Command::Rm(args) => super::rmi::run(args, connection).await,
        Command::Tag(args) => super::tag::run(args, connection).await,
        Command::Push(args) => super::push::run(args, connection).await,
        Command::Save(args) => super::save::run(args, connection).await,
        Command::Load(args) => super::load::run(args, connection).await,
        Command::Import(args) => super::import::run(args, connection).await,
        Command::History(args) => super::history::run(args, connection).await,
    }
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Value {
    timestamp
        .and_then(berth_common::time::from_proto)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        .unwrap_or(Value::Null)
}

/// Docker's `image inspect` document. `Config` is the image config's own "config"
/// object, so every field the image sets is shown as the image has it.
pub fn docker_json(image: &InspectImageResponse) -> Value {
    let raw: Value = serde_json::from_slice(&image.config_json).unwrap_or(Value::Null);
    json!({
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": "",
        "Comment": image.comment,
        "Created": time(image.created.as_ref()),
        "DockerVersion": image.docker_version,
        "Author": image.author,
        "Config": raw.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": image.architecture,
        "Variant": if image.variant.is_empty() { Value::Null } else { Value::String(image.variant.clone()) },
        "Os": image.os,
        "Size": image.size,
        "RootFS": { "Type": "layers", "Layers": image.diff_ids },
        "Metadata": { "LastTagTime": Value::Null },
        "Descriptor": image.target.as_ref().map(|d| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size})),
    })
}

/// `{{.A.B}}` (and `{{json .A}}`) over the JSON document; other text is copied.
pub fn render(template: &str, value: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expression = rest[start + 2..start + end].trim();
        let (as_json, path) = match expression.strip_prefix("json ") {
            Some(path) => (true, path.trim()),
            None => (false, expression),
        };
        let mut current = value;
        for key in path.trim_start_matches('.').split('.').filter(|k| !k.is_empty()) {
            current = current.get(key).unwrap_or(&Value::Null);
        }
        match current {
            Value::String(s) if !as_json => out.push_str(s),
            Value::Null if !as_json => out.push_str("<no value>"),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

async fn inspect(args: InspectArgs, connection: Connection) -> Outcome {
    let platform = args.platform.as_deref().map(super::pull::parse_platform).transpose()?;
    let mut documents = Vec::new();
    let mut failed = false;
    for image in &args.images {
        let request = InspectImageRequest { reference: image.clone(), platform: platform.clone() };
        match connection.images().inspect(request).await {
            Ok(response) => documents.push(docker_json(&response.into_inner())),
            Err(status) => {
                eprintln!("Error: {}", status.message());
                failed = true;
            }
        }
    }
    match args.format.as_deref() {
        None | Some("json") => crate::output::print_json(&documents)?,
        Some(template) => {
            for document in &documents {
                println!("{}", render(template, document));
            }
        }
    }
    if failed { Err(Exit::status(i32::from(GENERAL_FAILURE))) } else { Ok(()) }
}

async fn prune(args: PruneArgs, connection: Connection) -> Outcome {
    if !args.force {
        let warning = if args.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        print!("{warning}\nAre you sure you want to continue? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let filters = crate::output::parse_filters(&args.filter)?;
    let response = connection
        .images()
        .prune(PruneImagesRequest { all: args.all, filters })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner();
    if !response.untagged.is_empty() || !response.deleted.is_empty() {
        println!("Deleted Images:");
        for name in &response.untagged {
            println!("untagged: {name}");
        }
        for id in &response.deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(response.space_reclaimed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_read_paths() {
        let doc = json!({"Id": "sha256:ab", "Config": {"Cmd": ["sh"]}, "Os": "linux"});
        assert_eq!(render("{{.Id}}", &doc), "sha256:ab");
        assert_eq!(render("{{.Os}}/{{json .Config.Cmd}}", &doc), "linux/[\"sh\"]");
        assert_eq!(render("{{.Missing}}", &doc), "<no value>");
    }
}
