//! `berth login [-u USER] [-p PASSWORD | --password-stdin] [SERVER]`: the daemon checks
//! the credentials against the registry; they are then kept like Docker keeps them: in
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`, mode 0600) as base64
//! `user:password`, or in the configured credential helper (`credsStore`, `credHelpers`)
//! through the `docker-credential-<name> store|erase` protocol. Pull and push read them
//! back (docker_credential).
//!
//! Storing is hand-written: the docker_credential crate only reads.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use berth_proto::images::v1::LoginRequest;
use berth_proto::types::v1::RegistryAuth;
use serde_json::{Map, Value, json};

use crate::client::Connection;
use crate::exit::Outcome;

pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Registry server (default: Docker Hub).
    pub server: Option<String>,
    /// Username.
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(long, short = 'p')]
    pub password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

/// The key Docker files a server under: Hub's v1 URL, else host[:port].
pub fn server_key(server: Option<&str>) -> String {
    let server = server.unwrap_or("").trim();
    let host = server.strip_prefix("https://").or_else(|| server.strip_prefix("http://")).unwrap_or(server);
    let host = host.split('/').next().unwrap_or("");
    match host {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_SERVER.to_string(),
        host => host.to_string(),
    }
}

pub fn config_path() -> Result<PathBuf> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".docker"),
    };
    Ok(dir.join("config.json"))
}

/// The whole config.json (other tools' keys are kept as they are).
pub fn read_config(path: &std::path::Path) -> Result<Map<String, Value>> {
    match std::fs::read(path) {
        Ok(raw) if raw.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(raw) => match serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))? {
            Value::Object(map) => Ok(map),
            _ => bail!("{} is not a JSON object", path.display()),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes config.json with mode 0600 through a temporary file and a rename.
pub fn write_config(path: &std::path::Path, config: &Map<String, Value>) -> Result<()> {
    let dir = path.parent().context("config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = dir.join(format!(".config.json.{}", std::process::id()));
    let raw = serde_json::to_vec_pretty(config)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("writing {}", temp.display()))?;
    file.write_all(&raw).and_then(|_| file.write_all(b"\n")).and_then(|_| file.sync_all())?;
    // An existing temp file keeps its old mode: set it explicitly.
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The credential helper for `server`, if config.json names one.
pub fn helper(config: &Map<String, Value>, server: &str) -> Option<String> {
    config
        .get("credHelpers")
        .and_then(|h| h.get(server))
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
pub fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running the credential helper {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).with_context(|| format!("writing to {program}"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let message =
            String::from_utf8_lossy(&out.stdout).trim().to_string() + String::from_utf8_lossy(&out.stderr).trim();
        bail!("{program} {action} failed: {message}");
    }
    Ok(())
}

/// Keeps a password, or an identity token the registry handed out instead.
fn store(server: &str, username: &str, password: &str, identity_token: Option<&str>) -> Result<()> {
    let path = config_path()?;
    let mut config = read_config(&path)?;
    let entry = if let Some(helper) = helper(&config, server) {
        // The helper protocol files identity tokens under the user name "<token>".
        let (user, secret) = match identity_token {
            Some(token) => ("<token>", token),
            None => (username, password),
        };
        let input = json!({ "ServerURL": server, "Username": user, "Secret": secret });
        run_helper(&helper, "store", input.to_string().as_bytes())?;
        json!({})
    } else {
        eprintln!("WARNING! Your password will be stored unencrypted in {}.", path.display());
        let encode = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
        match identity_token {
            Some(token) => json!({ "auth": encode(format!("{username}:")), "identitytoken": token }),
            None => json!({ "auth": encode(format!("{username}:{password}")) }),
        }
    };
    let auths = config.entry("auths").or_insert_with(|| json!({}));
    if !auths.is_object() {
        *auths = json!({});
    }
    if let Some(auths) = auths.as_object_mut() {
        auths.insert(server.to_string(), entry);
    }
    write_config(&path, &config)
}

fn prompt(question: &str) -> Result<String> {
    eprint!("{question}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a line from the terminal with echo off.
fn prompt_hidden(question: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let answer = prompt(question);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    answer
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let server = server_key(args.server.as_deref());
    let interactive = std::io::stdin().is_terminal();
    let mut username = args.username.clone().unwrap_or_default();
    let password = if args.password_stdin {
        if args.password.is_some() {
            return Err(anyhow::anyhow!("--password and --password-stdin are mutually exclusive").into());
        }
        if username.is_empty() {
            return Err(anyhow::anyhow!("Must provide --username with --password-stdin").into());
        }
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the password from stdin")?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(password) = args.password.clone() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        password
    } else {
        if !interactive {
            return Err(anyhow::anyhow!("Cannot perform an interactive login from a non TTY device").into());
        }
        if username.is_empty() {
            username = prompt("Username: ")?;
        }
        prompt_hidden("Password: ")?
    };
    if username.is_empty() {
        return Err(anyhow::anyhow!("Username is required").into());
    }
    if password.is_empty() {
        return Err(anyhow::anyhow!("Password is required").into());
    }
    let request = LoginRequest {
        server_address: server.clone(),
        auth: Some(RegistryAuth { username: username.clone(), password: password.clone(), ..Default::default() }),
    };
    let response = connection.images().login(request).await.map_err(anyhow::Error::from)?.into_inner();
    // A registry that hands out an identity token gets that stored instead of the password.
    let identity_token = Some(response.identity_token.as_str()).filter(|t| !t.is_empty());
    store(&server, &username, &password, identity_token)?;
    println!("{}", if response.status.is_empty() { "Login Succeeded" } else { &response.status });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_filed_like_docker_files_them() {
        assert_eq!(server_key(None), DOCKER_HUB_SERVER);
        assert_eq!(server_key(Some("docker.io")), DOCKER_HUB_SERVER);
        assert_eq!(server_key(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(server_key(Some("http://127.0.0.1:5000/v2/")), "127.0.0.1:5000");
    }

    #[test]
    fn helpers_per_server_win_over_the_store() {
        let config: Map<String, Value> =
            serde_json::from_str(r#"{"credsStore":"pass","credHelpers":{"r.example":"ecr"}}"#).unwrap();
        assert_eq!(helper(&config, "r.example").as_deref(), Some("ecr"));
        assert_eq!(helper(&config, "other").as_deref(), Some("pass"));
        assert_eq!(helper(&Map::new(), "other"), None);
    }
}
