//! `berth logout [SERVER]`: forgets the credentials `login` stored (in config.json or
//! the credential helper).

use serde_json::Value;

use super::login::{config_path, helper, read_config, run_helper, server_key, write_config};
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Registry server (default: Docker Hub).
    pub server: Option<String>,
}

/// Needs no daemon: only the client's own files change.
pub fn run(args: Args) -> Outcome {
    let server = server_key(args.server.as_deref());
    let path = config_path()?;
    let mut config = read_config(&path)?;
    let stored = config.get("auths").and_then(|a| a.get(&server)).is_some();
    let helper = helper(&config, &server);
    if !stored && helper.is_none() {
        println!("Not logged in to {server}");
        return Ok(());
    }
    println!("Removing login credentials for {server}");
    if let Some(helper) = helper
        && let Err(err) = run_helper(&helper, "erase", server.as_bytes())
    {
        // Like docker: the file entry still goes.
        eprintln!("WARNING: could not erase credentials from the {helper} helper: {err:#}");
    }
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        auths.remove(&server);
    }
    if stored {
        write_config(&path, &config)?;
    }
    Ok(())
}
