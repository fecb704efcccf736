//! `berth stats [--no-stream] [-a] [CONTAINER...]`

use std::collections::HashMap;

use berth_proto::containers::v1::ListContainersRequest;
use berth_proto::tasks::v1::{Stats, StatsRequest};
use futures::StreamExt;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::{Format, human_binary_size, human_size, print_json, print_table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    containers: Vec<String>,
}

/// CPU % as Docker computes it: the container's share of the host's CPU time between two
/// samples, times the number of CPUs.
fn cpu_percent(previous: Option<&Stats>, now: &Stats) -> f64 {
    let Some(previous) = previous else { return 0.0 };
    let cpu = now.cpu_usage_ns.saturating_sub(previous.cpu_usage_ns) as f64;
    let system = now.system_cpu_usage_ns.saturating_sub(previous.system_cpu_usage_ns) as f64;
    if system > 0.0 { cpu / system * f64::from(now.online_cpus.max(1)) * 100.0 } else { 0.0 }
}

fn row(stats: &Stats, previous: Option<&Stats>) -> Vec<String> {
    let memory_percent =
        if stats.memory_limit > 0 { stats.memory_usage as f64 / stats.memory_limit as f64 * 100.0 } else { 0.0 };
    vec![
        stats.container_id.chars().take(12).collect(),
        stats.name.clone(),
        format!("{:.2}%", cpu_percent(previous, stats)),
        format!("{} / {}", human_binary_size(stats.memory_usage), human_binary_size(stats.memory_limit)),
        format!("{memory_percent:.2}%"),
        format!("{} / {}", human_size(stats.net_rx_bytes), human_size(stats.net_tx_bytes)),
        format!("{} / {}", human_size(stats.block_read_bytes), human_size(stats.block_write_bytes)),
        stats.pids.to_string(),
    ]
}

const HEADER: [&str; 8] =
    ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"];

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let containers = if args.containers.is_empty() {
        let request = ListContainersRequest { all: args.all, ..Default::default() };
        let list = connection.containers().list(request).await.map_err(anyhow::Error::from)?.into_inner().containers;
        list.into_iter().map(|c| c.id).collect()
    } else {
        args.containers.clone()
    };
    // Two samples a second apart give the first CPU figure even with --no-stream.
    let mut streams = Vec::new();
    for id in &containers {
        let request = StatsRequest { container_id: id.clone(), stream: true };
        let stream = connection.tasks().stats(request).await.map_err(anyhow::Error::from)?.into_inner();
        streams.push(stream.map(move |r| r.map(|s| s.stats)).boxed());
    }
    let mut merged = futures::stream::select_all(streams);
    let mut previous: HashMap<String, Stats> = HashMap::new();
    let mut latest: HashMap<String, Vec<String>> = HashMap::new();
    let mut rounds: HashMap<String, u32> = HashMap::new();
    while let Some(item) = merged.next().await {
        let Some(stats) = item.map_err(anyhow::Error::from)? else { continue };
        let id = stats.container_id.clone();
        latest.insert(id.clone(), row(&stats, previous.get(&id)));
        if args.format == Format::Json && args.no_stream && previous.contains_key(&id) {
            print_json(&serde_json::json!({
                "ID": id, "Name": stats.name, "CPUPerc": format!("{:.2}%", cpu_percent(previous.get(&id), &stats)),
                "MemUsage": stats.memory_usage, "MemLimit": stats.memory_limit, "PIDs": stats.pids,
            }))?;
        }
        previous.insert(id.clone(), stats);
        *rounds.entry(id).or_default() += 1;
        let complete = rounds.len() == containers.len();
        if args.no_stream && complete && rounds.values().all(|n| *n >= 2) {
            break;
        }
        if !args.no_stream && complete && args.format == Format::Table {
            print!("\x1b[2J\x1b[H");
            let rows: Vec<Vec<String>> = containers.iter().filter_map(|id| latest.get(id).cloned()).collect();
            print_table(&HEADER, &rows);
        }
    }
    if args.no_stream && args.format == Format::Table {
        let rows: Vec<Vec<String>> = latest.into_values().collect();
        print_table(&HEADER, &rows);
    }
    Ok(())
}
