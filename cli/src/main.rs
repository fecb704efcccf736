//! berth: a Docker-style command line for Berth. A thin client: every command is one or a
//! few gRPC calls; no container logic lives here.

mod client;
mod commands;
mod exit;
mod output;
mod terminal;

use std::process::ExitCode;

use berth_common::Address;
use clap::Parser;

pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// A container engine: build, ship and run any app, anywhere.
#[derive(Debug, Parser)]
#[command(name = "berth", version = env!("CARGO_PKG_VERSION"), disable_help_subcommand = true)]
pub struct Cli {
    /// Daemon socket to connect to: unix:///path.sock or tcp://host:port.
    #[arg(short = 'H', long = "host", env = "BERTH_HOST", default_value = DEFAULT_HOST, global = true)]
    host: Address,
    /// Namespace to work in.
    #[arg(long, env = "BERTH_NAMESPACE", default_value = "default", global = true)]
    namespace: String,
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("berth: cannot start the async runtime: {err}");
            return ExitCode::from(exit::CLI_FAILURE);
        }
    };
    let outcome = runtime.block_on(async {
        let mut telemetry = match berth_common::telemetry::init("berth", "warn") {
            Ok(telemetry) => Some(telemetry),
            Err(err) => {
                eprintln!("berth: tracing disabled: {err}");
                None
            }
        };
        let outcome = commands::run(cli).await;
        if let Some(telemetry) = telemetry.as_mut() {
            telemetry.shutdown();
        }
        outcome
    });
    // Do not wait for a stdin reader blocked in a read: the session is over.
    runtime.shutdown_background();
    exit::report(outcome)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Catches clashing flags (clap only checks them when a subcommand is first used).
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
