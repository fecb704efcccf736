//! `berth version`: client and server blocks like `docker version`.

use anyhow::Result;
use berth_common::Address;
use berth_proto::system::v1::{VersionRequest, VersionResponse};
use serde::Serialize;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::{Format, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ClientVersion {
    version: &'static str,
    api_version: &'static str,
    rust_version: &'static str,
    os: &'static str,
    arch: &'static str,
    host: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServerVersion {
    version: String,
    api_version: String,
    git_commit: String,
    os: String,
    arch: String,
    kernel_version: String,
    services: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Versions {
    client: ClientVersion,
    server: Option<ServerVersion>,
}

pub async fn run(args: Args, host: &Address, connection: Result<Connection>) -> Outcome {
    let client = ClientVersion {
        version: env!("CARGO_PKG_VERSION"),
        api_version: berth_proto::API_VERSION,
        rust_version: env!("CARGO_PKG_RUST_VERSION"),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        host: host.to_string(),
    };
    let server = match connection {
        Ok(connection) => connection
            .system()
            .version(VersionRequest {})
            .await
            .map(|r| server_version(r.into_inner()))
            .map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    // Like docker: the client block is printed even when the daemon is unreachable.
    let (server, error) = match server {
        Ok(server) => (Some(server), None),
        Err(err) => (None, Some(err)),
    };
    let versions = Versions { client, server };
    match args.format {
        Format::Json => print_json(&versions)?,
        Format::Table => print_table(&versions),
    }
    match error {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

fn server_version(v: VersionResponse) -> ServerVersion {
    ServerVersion {
        version: v.version,
        api_version: v.api_version,
        git_commit: v.git_commit,
        os: v.os,
        arch: v.arch,
        kernel_version: v.kernel_version,
        services: v.services,
    }
}

fn print_table(versions: &Versions) {
    let c = &versions.client;
    println!("Client:");
    println!(" Version:           {}", c.version);
    println!(" API version:       {}", c.api_version);
    println!(" Rust version:      {}", c.rust_version);
    println!(" OS/Arch:           {}/{}", c.os, c.arch);
    println!(" Host:              {}", c.host);
    if let Some(s) = &versions.server {
        println!();
        println!("Server: Berth Engine");
        println!(" Engine:");
        println!("  Version:          {}", s.version);
        println!("  API version:      {}", s.api_version);
        println!("  Git commit:       {}", s.git_commit);
        println!("  OS/Arch:          {}/{}", s.os, s.arch);
        println!("  Kernel Version:   {}", s.kernel_version);
        println!("  Services:         {}", s.services.join(", "));
    }
}
