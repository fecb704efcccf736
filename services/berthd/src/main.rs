//! berthd: hosts Berth's services on one socket (the default) or a chosen subset, each
//! service reaching the others through their gRPC contracts.

mod system;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_common::config::{DEFAULT_CONFIG_PATH, ServiceName};
use berth_common::lock::RootLock;
use berth_common::{Address, Config, ServiceContext, serve};
use berth_proto::system::v1::system_server::SystemServer;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The Berth container engine daemon.
#[derive(Debug, Parser)]
#[command(name = "berthd", version = system::VERSION)]
struct Args {
    /// Persistent state directory (content, databases, snapshots, volumes).
    #[arg(long, env = "BERTHD_ROOT")]
    root: Option<PathBuf>,
    /// Runtime state directory (sockets, task bundles).
    #[arg(long, env = "BERTHD_STATE")]
    state: Option<PathBuf>,
    /// Directory for container logs.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Address to serve on (repeatable): unix:///path.sock or tcp://host:port.
    #[arg(long = "address", short = 'a')]
    addresses: Vec<Address>,
    /// Configuration file (TOML).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Host only these services (comma separated): images, snapshots, containers, events.
    #[arg(long, value_delimiter = ',')]
    services: Vec<ServiceName>,
}

fn load_config(args: &Args) -> Result<Config> {
    let (path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, explicit)?;
    if let Some(root) = &args.root {
        config.data_root = root.clone();
    }
    if let Some(state) = &args.state {
        config.exec_root = state.clone();
        // The default socket lives in the state directory.
        if args.addresses.is_empty() && config.hosts == Config::default().hosts {
            config.hosts = vec![Address::Unix(state.join("berth.sock"))];
        }
    }
    if let Some(log_dir) = &args.log_dir {
        config.log_dir = log_dir.clone();
    }
    if !args.addresses.is_empty() {
        config.hosts = args.addresses.clone();
    }
    if !args.services.is_empty() {
        config.services = args.services.clone();
    }
    config.data_root = absolute(&config.data_root)?;
    config.exec_root = absolute(&config.exec_root)?;
    config.log_dir = absolute(&config.log_dir)?;
    config.validate()?;
    Ok(config)
}

fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

async fn register(
    service: ServiceName,
    ctx: &ServiceContext,
    routes: &mut tonic::service::RoutesBuilder,
) -> Result<()> {
    match service {
        ServiceName::Events => berth_events::register(ctx, routes).await?,
        ServiceName::Snapshots => berth_snapshots::register(ctx, routes).await?,
        ServiceName::Images => berth_images::register(ctx, routes).await?,
        ServiceName::Containers => berth_containers::register(ctx, routes).await?,
    }
    Ok(())
}

async fn shutdown_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// How long a stopping daemon waits for open client streams.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

async fn run(config: Config) -> Result<()> {
    let hosted = config.hosted_services();
    for dir in [&config.data_root, &config.exec_root, &config.log_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // One berthd per root and service; the kernel drops these locks if we die.
    let _locks: Vec<RootLock> =
        hosted.iter().map(|s| RootLock::acquire(&config.data_root, s.as_str())).collect::<Result<_, _>>()?;

    // Bind before registering services, so a second daemon fails fast and services can
    // call each other on the primary address as soon as serving starts.
    let mut listeners = Vec::new();
    for address in &config.hosts {
        listeners.push((address.clone(), serve::bind(address, &config.socket_group).await?));
    }

    let shutdown = CancellationToken::new();
    let ctx = ServiceContext::new(Arc::new(config), shutdown.clone());
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(SystemServer::new(system::SystemService::new(ctx.clone())));
    for service in &hosted {
        register(*service, &ctx, &mut routes).await.with_context(|| format!("starting the {service} service"))?;
    }
    let routes = routes.routes();

    let mut servers = Vec::new();
    for (address, listener) in listeners {
        let token = shutdown.clone();
        let routes = routes.clone();
        tracing::info!(%address, "serving");
        servers.push(tokio::spawn(async move {
            serve::serve(listener, routes, async move { token.cancelled().await })
                .await
                .with_context(|| format!("serving on {address}"))
        }));
    }
    let services: Vec<&str> = hosted.iter().map(|s| s.as_str()).collect();
    tracing::info!(services = ?services, root = %ctx.config.data_root.display(), "berthd ready");

    let mut failed = None;
    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal = signal?, "shutting down; containers keep running"),
        (result, _, _) = futures::future::select_all(servers.iter_mut()) => {
            failed = Some(result.context("server task panicked").and_then(|r| r));
        }
    }
    shutdown.cancel();
    // Long-lived streams (logs -f, attach, events) would hold a graceful shutdown open
    // forever; give them a moment to finish, then stop anyway. Containers keep running.
    let drained = futures::future::join_all(servers);
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("client streams still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    for address in &ctx.config.hosts {
        if let Address::Unix(path) = address {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(result) = failed {
        result?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("berthd").build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("berthd: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut telemetry = berth_common::telemetry::init("berthd", "info")?;
        let config = load_config(&args)?;
        let result = run(config).await;
        telemetry.shutdown();
        result
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berthd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
