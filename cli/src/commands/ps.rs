//! `berth ps`: CONTAINER ID IMAGE COMMAND CREATED STATUS PORTS NAMES.

use berth_proto::containers::v1::{Container, ContainerStatus, ListContainersRequest};

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::{Format, ago, human_duration, print_json_lines, print_table, since};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long)]
    last: Option<i32>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    latest: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter output based on conditions provided (key=value)
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn status_text(container: &Container) -> String {
    let state = container.state.clone().unwrap_or_default();
    match ContainerStatus::try_from(state.status).unwrap_or(ContainerStatus::Created) {
        ContainerStatus::Running => format!("Up {}", human_duration(since(state.started_at.as_ref()))),
        ContainerStatus::Paused => format!("Up {} (Paused)", human_duration(since(state.started_at.as_ref()))),
        ContainerStatus::Restarting => format!("Restarting ({}) {}", state.exit_code, ago(state.finished_at.as_ref())),
        ContainerStatus::Exited => format!("Exited ({}) {}", state.exit_code, ago(state.finished_at.as_ref())),
        ContainerStatus::Removing => "Removal In Progress".to_string(),
        ContainerStatus::Dead => "Dead".to_string(),
        ContainerStatus::Created | ContainerStatus::Unspecified => "Created".to_string(),
    }
}

fn command_text(container: &Container, no_trunc: bool) -> String {
    let mut command = std::iter::once(container.path.as_str())
        .chain(container.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    if !no_trunc && command.chars().count() > 20 {
        command = command.chars().take(19).collect::<String>() + "…";
    }
    format!("\"{command}\"")
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let limit = if args.latest { 1 } else { args.last.unwrap_or(0) };
    let request = ListContainersRequest {
        all: args.all || limit > 0,
        limit,
        filters: crate::output::parse_filters(&args.filter)?,
        size: false,
    };
    let containers = connection.containers().list(request).await.map_err(anyhow::Error::from)?.into_inner().containers;
    if args.quiet {
        for c in &containers {
            println!("{}", if args.no_trunc { c.id.as_str() } else { short_id(&c.id) });
        }
        return Ok(());
    }
    if args.format == Format::Json {
        let rows: Vec<serde_json::Value> = containers
            .iter()
            .map(|c| {
                serde_json::json!({
                    "ID": c.id, "Image": c.image, "Command": command_text(c, true), "CreatedAt": crate::output::rfc3339(c.created_at.as_ref()),
                    "RunningFor": ago(c.created_at.as_ref()), "Status": status_text(c),
                    "State": crate::commands::inspect::state_name(c), "Names": c.name, "Ports": super::port::ports_text(c), "Labels": c.labels,
                })
            })
            .collect();
        print_json_lines(&rows)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            vec![
                if args.no_trunc { c.id.clone() } else { short_id(&c.id).to_string() },
                c.image.clone(),
                command_text(c, args.no_trunc),
                ago(c.created_at.as_ref()),
                status_text(c),
                super::port::ports_text(c),
                c.name.clone(),
            ]
        })
        .collect();
    print_table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &rows);
    Ok(())
}
