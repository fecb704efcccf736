//! `berth volume ...`: create, ls, inspect, rm, prune.

use berth_proto::containers::v1::{
    CreateVolumeRequest, InspectVolumeRequest, ListVolumesRequest, PruneVolumesRequest, RemoveVolumeRequest, Volume,
};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};
use crate::output::{Format, human_size, print_json, print_json_lines, print_table, rfc3339};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(NamesArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long)]
    filter: Vec<String>,
}

pub async fn run(command: Command, connection: Connection) -> Outcome {
    match command {
        Command::Create(args) => {
            let request = CreateVolumeRequest {
                name: args.name.unwrap_or_default(),
                driver: args.driver,
                labels: super::network::key_values(&args.label),
                options: super::network::key_values(&args.opt),
            };
            let volume = connection.volumes().create(request).await.map_err(anyhow::Error::from)?.into_inner().volume;
            println!("{}", volume.map(|v| v.name).unwrap_or_default());
            Ok(())
        }
        Command::Ls(args) => ls(args, connection).await,
        Command::Inspect(args) => inspect(args, connection).await,
        Command::Rm(args) => super::for_each(&args.volumes, |name| {
            let mut volumes = connection.volumes();
            async move {
                volumes.remove(RemoveVolumeRequest { name, force: args.force }).await?;
                Ok(())
            }
        })
        .await
        .map_err(|()| Exit { code: GENERAL_FAILURE, error: None }),
        Command::Prune(args) => prune(args, connection).await,
    }
}

async fn ls(args: LsArgs, connection: Connection) -> Outcome {
    let filters = crate::output::parse_filters(&args.filter)?;
    let volumes = connection
        .volumes()
        .list(ListVolumesRequest { filters })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner()
        .volumes;
    if args.quiet {
        for volume in &volumes {
            println!("{}", volume.name);
        }
        return Ok(());
    }
    if args.format == Format::Json {
        print_json_lines(&volumes.iter().map(volume_json).collect::<Vec<_>>())?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = volumes.iter().map(|v| vec![v.driver.clone(), v.name.clone()]).collect();
    print_table(&["DRIVER", "VOLUME NAME"], &rows);
    Ok(())
}

pub fn volume_json(v: &Volume) -> Value {
    json!({
        "CreatedAt": rfc3339(v.created_at.as_ref()),
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": v.options,
        "Scope": v.scope,
        "UsedBy": v.used_by,
    })
}

async fn inspect(args: NamesArgs, connection: Connection) -> Outcome {
    let mut found = Vec::new();
    let mut missing = false;
    for name in &args.volumes {
        match connection.volumes().inspect(InspectVolumeRequest { name: name.clone() }).await {
            Ok(response) => found.extend(response.into_inner().volume.as_ref().map(volume_json)),
            Err(status) if status.code() == tonic::Code::NotFound => {
                eprintln!("Error: No such volume: {name}");
                missing = true;
            }
            Err(status) => return Err(anyhow::Error::from(status).into()),
        }
    }
    print_json(&found)?;
    if missing { Err(Exit { code: GENERAL_FAILURE, error: None }) } else { Ok(()) }
}

async fn prune(args: PruneArgs, connection: Connection) -> Outcome {
    let warning = if args.all {
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    };
    if !args.force && !super::network::confirm(warning) {
        return Ok(());
    }
    let filters = crate::output::parse_filters(&args.filter)?;
    let response = connection
        .volumes()
        .prune(PruneVolumesRequest { filters, all: args.all })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner();
    if !response.deleted.is_empty() {
        println!("Deleted Volumes:");
        for name in &response.deleted {
            println!("{name}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(response.space_reclaimed));
    Ok(())
}
