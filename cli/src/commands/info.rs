//! `berth info`: a summary like `docker info`.

use berth_proto::system::v1::{InfoRequest, InfoResponse};
use serde::Serialize;

use crate::client::Connection;
use crate::exit::Outcome;
use crate::output::{Format, human_binary_size, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t)]
    format: Format,
}

/// Docker's key names where one exists.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Info {
    name: String,
    server_version: String,
    containers: u64,
    containers_running: u64,
    containers_paused: u64,
    containers_stopped: u64,
    images: u64,
    driver: String,
    driver_status: Vec<[String; 2]>,
    logging_driver: String,
    cgroup_driver: String,
    cgroup_version: String,
    default_runtime: String,
    runtimes: Vec<Runtime>,
    kernel_version: String,
    operating_system: String,
    #[serde(rename = "OSType")]
    os_type: String,
    architecture: String,
    #[serde(rename = "NCPU")]
    ncpu: u32,
    mem_total: u64,
    docker_root_dir: String,
    state_dir: String,
    log_dir: String,
    registry_mirrors: Vec<String>,
    insecure_registries: Vec<String>,
    services: Vec<String>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Runtime {
    name: String,
    path: String,
    usable: bool,
    detail: String,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let response = connection.system().info(InfoRequest {}).await.map_err(anyhow::Error::from)?.into_inner();
    let info = Info::from(response);
    match args.format {
        Format::Json => print_json(&info)?,
        Format::Table => print_table(&info),
    }
    Ok(())
}

impl From<InfoResponse> for Info {
    fn from(r: InfoResponse) -> Info {
        let registry = r.registry_config.unwrap_or_default();
        let mut driver_status: Vec<[String; 2]> = r.storage_driver_status.into_iter().map(|(k, v)| [k, v]).collect();
        driver_status.sort();
        Info {
            name: r.name,
            server_version: r.server_version,
            containers: r.containers,
            containers_running: r.containers_running,
            containers_paused: r.containers_paused,
            containers_stopped: r.containers_stopped,
            images: r.images,
            driver: r.storage_driver,
            driver_status,
            logging_driver: r.logging_driver,
            cgroup_driver: r.cgroup_driver,
            cgroup_version: r.cgroup_version,
            default_runtime: r.default_runtime,
            runtimes: r
                .runtimes
                .into_iter()
                .map(|rt| Runtime { name: rt.name, path: rt.path, usable: rt.usable, detail: rt.detail })
                .collect(),
            kernel_version: r.kernel_version,
            operating_system: r.operating_system,
            os_type: r.os_type,
            architecture: r.architecture,
            ncpu: r.ncpu,
            mem_total: r.mem_total,
            docker_root_dir: r.root_dir,
            state_dir: r.state_dir,
            log_dir: r.log_dir,
            registry_mirrors: registry.mirrors,
            insecure_registries: registry.insecure_registries,
            services: r.services,
            warnings: r.warnings,
        }
    }
}

fn print_table(info: &Info) {
    println!("Server:");
    println!(" Containers: {}", info.containers);
    println!("  Running: {}", info.containers_running);
    println!("  Paused: {}", info.containers_paused);
    println!("  Stopped: {}", info.containers_stopped);
    println!(" Images: {}", info.images);
    println!(" Server Version: {}", info.server_version);
    println!(" Storage Driver: {}", if info.driver.is_empty() { "unknown" } else { &info.driver });
    for [key, value] in &info.driver_status {
        println!("  {key}: {value}");
    }
    println!(" Logging Driver: {}", info.logging_driver);
    println!(" Cgroup Driver: {}", info.cgroup_driver);
    println!(" Cgroup Version: {}", info.cgroup_version);
    let usable: Vec<&str> = info.runtimes.iter().filter(|r| r.usable).map(|r| r.name.as_str()).collect();
    println!(" Runtimes: {}", if usable.is_empty() { "none usable".to_string() } else { usable.join(" ") });
    for runtime in &info.runtimes {
        let state = if runtime.usable { "usable" } else { "not usable" };
        let path = if runtime.path.is_empty() { "-" } else { &runtime.path };
        println!("  {}: {} ({state}; {})", runtime.name, path, runtime.detail);
    }
    println!(" Default Runtime: {}", info.default_runtime);
    println!(" Services: {}", info.services.join(", "));
    println!(" Kernel Version: {}", info.kernel_version);
    println!(" Operating System: {}", info.operating_system);
    println!(" OSType: {}", info.os_type);
    println!(" Architecture: {}", info.architecture);
    println!(" CPUs: {}", info.ncpu);
    println!(" Total Memory: {}", human_binary_size(info.mem_total));
    println!(" Name: {}", info.name);
    println!(" Berth Root Dir: {}", info.docker_root_dir);
    println!(" State Dir: {}", info.state_dir);
    println!(" Log Dir: {}", info.log_dir);
    if !info.insecure_registries.is_empty() {
        println!(" Insecure Registries:");
        for registry in &info.insecure_registries {
            println!("  {registry}");
        }
    }
    if !info.registry_mirrors.is_empty() {
        println!(" Registry Mirrors:");
        for mirror in &info.registry_mirrors {
            println!("  {mirror}");
        }
    }
    for warning in &info.warnings {
        eprintln!("WARNING: {warning}");
    }
}
