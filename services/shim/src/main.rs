//! berth-shim: one per container. Started by the containers service, it detaches (forks,
//! starts a new session, and its parent exits once it serves), becomes child subreaper,
//! mounts the rootfs, drives the OCI runtime binary, owns the container's stdio and log,
//! reaps exits, and serves `berth.shim.v1` on `<task dir>/shim.sock`. It outlives berthd.

mod api;
mod cgroup;
mod io;
mod logfile;
mod process;
mod pty;
mod reaper;
mod runtime;
mod service;
mod user;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_common::Address;
use clap::Parser;

/// Serve one container's task. Normally started by berthd, not by hand.
#[derive(Debug, Parser)]
#[command(name = "berth-shim", version)]
struct Args {
    /// Container id.
    #[arg(long)]
    id: String,
    /// Namespace of the container.
    #[arg(long)]
    namespace: String,
    /// The task directory (runtime bundle); the shim's socket and exit file live here.
    #[arg(long)]
    bundle: PathBuf,
    /// The API socket to serve on (default: `shim.sock` in the bundle).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Where the event service is reached.
    #[arg(long)]
    events_address: Option<Address>,
    /// Do not detach (debugging).
    #[arg(long)]
    foreground: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Forking must happen before any thread exists, so before the async runtime starts.
    let ready = if args.foreground {
        None
    } else {
        match detach(&args) {
            Ok(ready) => Some(ready),
            Err(err) => {
                eprintln!("berth-shim: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    match run(args, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth-shim: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Forks. The parent waits until the child reports that it serves (or why it failed),
/// then exits with that result, so the starter knows the socket is ready once we exit.
/// The child starts a new session, redirects its stdio to the task's shim log and
/// returns the pipe on which it reports readiness.
fn detach(args: &Args) -> Result<OwnedFd> {
    let (read_end, write_end) = nix::unistd::pipe().context("creating the readiness pipe")?;
    // SAFETY: no other thread exists yet (the runtime starts after this), so the child may
    // keep running Rust code after fork.
    match unsafe { nix::unistd::fork() }.context("forking")? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write_end);
            let mut report = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut report);
            if report == "ok" {
                std::process::exit(0);
            }
            let reason = if report.is_empty() { "the shim exited before serving".to_string() } else { report };
            eprintln!("berth-shim: {reason}");
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            nix::unistd::setsid().context("starting a new session")?;
            std::fs::create_dir_all(&args.bundle).with_context(|| format!("creating {}", args.bundle.display()))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(args.bundle.join(berth_common::task::SHIM_LOG))
                .context("opening the shim log")?;
            let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
            nix::unistd::dup2_stdin(&null).context("redirecting stdin")?;
            nix::unistd::dup2_stdout(&log).context("redirecting stdout")?;
            nix::unistd::dup2_stderr(&log).context("redirecting stderr")?;
            Ok(write_end)
        }
    }
}

fn report_ready(ready: Option<OwnedFd>, result: &Result<()>) {
    if let Some(fd) = ready {
        let message = match result {
            Ok(()) => "ok".to_string(),
            Err(err) => format!("{err:#}"),
        };
        let _ = std::fs::File::from(fd).write_all(message.as_bytes());
    }
}

fn run(args: Args, ready: Option<OwnedFd>) -> Result<()> {
    // Orphaned container processes (runc's init after runc exits, exec processes) are
    // re-parented to us, so we can reap them and report their exits.
    let subreaper = nix::sys::prctl::set_child_subreaper(true).context("becoming child subreaper");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime");
    let (runtime, ()) = match (runtime, subreaper) {
        (Ok(runtime), Ok(())) => (runtime, ()),
        (Err(err), _) | (_, Err(err)) => {
            let result = Err(err);
            report_ready(ready, &result);
            return result;
        }
    };
    runtime.block_on(async move {
        let mut telemetry = berth_common::telemetry::init("berth-shim", "info").ok();
        let result = service::serve(service::Settings {
            id: args.id,
            namespace: args.namespace,
            socket: args.socket.unwrap_or_else(|| args.bundle.join(berth_common::task::SHIM_SOCKET)),
            bundle: args.bundle,
            events_address: args.events_address,
            ready: Box::new(move |result: &Result<()>| report_ready(ready, result)),
        })
        .await;
        if let Some(telemetry) = telemetry.as_mut() {
            telemetry.shutdown();
        }
        result
    })
}
