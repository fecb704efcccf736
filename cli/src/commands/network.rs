//! `berth network ...`: create, ls, inspect, rm, connect, disconnect, prune.

use std::io::{BufRead, Write};

use berth_proto::containers::v1::{
    ConnectNetworkRequest, CreateNetworkRequest, DisconnectNetworkRequest, InspectNetworkRequest, IpamConfig,
    ListNetworksRequest, Network, PruneNetworksRequest, RemoveNetworkRequest,
};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};
use crate::output::{Format, print_json, print_json_lines, print_table, rfc3339};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(NamesArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(NamesArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    subnet: Option<String>,
    /// IPv4 Gateway for the master subnet
    #[arg(long)]
    gateway: Option<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    ip_range: Option<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Set metadata on a network
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only display network IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Add network-scoped alias for the container
    #[arg(long)]
    alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    ip: Option<String>,
    network: String,
    container: String,
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long)]
    filter: Vec<String>,
}

pub async fn run(command: Command, connection: Connection) -> Outcome {
    match command {
        Command::Create(args) => create(args, connection).await,
        Command::Ls(args) => ls(args, connection).await,
        Command::Inspect(args) => inspect(args, connection).await,
        Command::Rm(args) => super::for_each(&args.networks, |id| {
            let mut networks = connection.networks();
            async move {
                networks.remove(RemoveNetworkRequest { id }).await?;
                Ok(())
            }
        })
        .await
        .map_err(|()| Exit { code: GENERAL_FAILURE, error: None }),
        Command::Connect(args) => {
            let request = ConnectNetworkRequest {
                network: args.network,
                container: args.container,
                aliases: args.alias,
                ipv4_address: args.ip.unwrap_or_default(),
            };
            connection.networks().connect_container(request).await.map_err(anyhow::Error::from)?;
            Ok(())
        }
        Command::Disconnect(args) => {
            let request =
                DisconnectNetworkRequest { network: args.network, container: args.container, force: args.force };
            connection.networks().disconnect_container(request).await.map_err(anyhow::Error::from)?;
            Ok(())
        }
        Command::Prune(args) => prune(args, connection).await,
    }
}

pub fn key_values(entries: &[String]) -> std::collections::HashMap<String, String> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// Asks Docker's confirmation question; true to go on.
pub fn confirm(warning: &str) -> bool {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

async fn create(args: CreateArgs, connection: Connection) -> Outcome {
    let ipam = if args.subnet.is_some() || args.gateway.is_some() || args.ip_range.is_some() {
        vec![IpamConfig {
            subnet: args.subnet.unwrap_or_default(),
            gateway: args.gateway.unwrap_or_default(),
            ip_range: args.ip_range.unwrap_or_default(),
        }]
    } else {
        Vec::new()
    };
    let request = CreateNetworkRequest {
        name: args.name,
        driver: args.driver,
        ipam,
        labels: key_values(&args.label),
        options: key_values(&args.opt),
        internal: args.internal,
    };
    let response = connection.networks().create(request).await.map_err(anyhow::Error::from)?.into_inner();
    if !response.warning.is_empty() {
        eprintln!("WARNING: {}", response.warning);
    }
    println!("{}", response.network.map(|n| n.id).unwrap_or_default());
    Ok(())
}

async fn ls(args: LsArgs, connection: Connection) -> Outcome {
    let filters = crate::output::parse_filters(&args.filter)?;
    let networks = connection
        .networks()
        .list(ListNetworksRequest { filters })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner()
        .networks;
    let id = |n: &Network| if args.no_trunc { n.id.clone() } else { n.id.chars().take(12).collect() };
    if args.quiet {
        for network in &networks {
            println!("{}", id(network));
        }
        return Ok(());
    }
    if args.format == Format::Json {
        let rows: Vec<Value> = networks
            .iter()
            .map(|n| json!({"ID": id(n), "Name": n.name, "Driver": n.driver, "Scope": n.scope, "Internal": n.internal, "Labels": n.labels}))
            .collect();
        print_json_lines(&rows)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> =
        networks.iter().map(|n| vec![id(n), n.name.clone(), n.driver.clone(), n.scope.clone()]).collect();
    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
    Ok(())
}

pub fn network_json(n: &Network) -> Value {
    let prefix = n.ipam.first().and_then(|i| i.subnet.split_once('/')).map(|(_, p)| p.to_string()).unwrap_or_default();
    let containers: serde_json::Map<String, Value> = n
        .containers
        .iter()
        .map(|c| {
            let address =
                if c.ipv4_address.is_empty() { String::new() } else { format!("{}/{prefix}", c.ipv4_address) };
            (
                c.container_id.clone(),
                json!({"Name": c.name, "MacAddress": c.mac_address, "IPv4Address": address, "IPv6Address": ""}),
            )
        })
        .collect();
    let mut options = n.options.clone();
    if !n.bridge.is_empty() {
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created.as_ref()),
        "Scope": n.scope,
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": n.ipam.iter().map(|i| {
                let mut config = json!({"Subnet": i.subnet, "Gateway": i.gateway});
                if !i.ip_range.is_empty() {
                    config["IPRange"] = json!(i.ip_range);
                }
                config
            }).collect::<Vec<_>>(),
        },
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

async fn inspect(args: NamesArgs, connection: Connection) -> Outcome {
    let mut found = Vec::new();
    let mut missing = false;
    for name in &args.networks {
        match connection.networks().inspect(InspectNetworkRequest { id: name.clone() }).await {
            Ok(response) => found.extend(response.into_inner().network.as_ref().map(network_json)),
            Err(status) if status.code() == tonic::Code::NotFound => {
                eprintln!("Error: No such network: {name}");
                missing = true;
            }
            Err(status) => return Err(anyhow::Error::from(status).into()),
        }
    }
    print_json(&found)?;
    if missing { Err(Exit { code: GENERAL_FAILURE, error: None }) } else { Ok(()) }
}

async fn prune(args: PruneArgs, connection: Connection) -> Outcome {
    if !args.force && !confirm("WARNING! This will remove all custom networks not used by at least one container.") {
        return Ok(());
    }
    let filters = crate::output::parse_filters(&args.filter)?;
    let deleted = connection
        .networks()
        .prune(PruneNetworksRequest { filters })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner()
        .deleted;
    if !deleted.is_empty() {
        println!("Deleted Networks:");
        for name in deleted {
            println!("{name}");
        }
    }
    Ok(())
}
