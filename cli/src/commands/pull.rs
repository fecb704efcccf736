//! `berth pull`: like `docker pull`, one progress bar per layer on a terminal, plain
//! status lines otherwise, only the name with `-q`.

use anyhow::{Context, Result};
use berth_proto::images::v1::{PullProgress, PullRequest, pull_progress};
use berth_proto::types::v1::{Platform, RegistryAuth};
use futures::StreamExt;

use super::progress::Display;
use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to pull: NAME[:TAG|@DIGEST].
    pub image: String,
    /// Pull every tagged image of the repository.
    #[arg(long, short = 'a')]
    pub all_tags: bool,
    /// Set platform if server is multi-platform capable (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn parse_platform(text: &str) -> Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    let (os, architecture, variant) = match parts.as_slice() {
        [arch] => ("linux", *arch, ""),
        [os, arch] => (*os, *arch, ""),
        [os, arch, variant] => (*os, *arch, *variant),
        _ => anyhow::bail!("invalid platform {text:?}: expected os/arch[/variant]"),
    };
    anyhow::ensure!(
        !os.is_empty() && !architecture.is_empty(),
        "invalid platform {text:?}: expected os/arch[/variant]"
    );
    Ok(Platform {
        os: os.into(),
        architecture: architecture.into(),
        variant: variant.into(),
        os_version: String::new(),
    })
}

/// The registry a reference names, by Docker's rule (a first component with '.' or ':',
/// or "localhost"; else docker.io).
fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Credentials from the user's ~/.docker/config.json (and credential helpers), if any.
pub fn credentials(reference: &str) -> Option<RegistryAuth> {
    let registry = registry_of(reference);
    let servers: Vec<&str> =
        if registry == "docker.io" { vec!["https://index.docker.io/v1/", "docker.io"] } else { vec![registry] };
    servers.into_iter().find_map(|server| match docker_credential::get_credential(server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
            Some(RegistryAuth { username, password, ..Default::default() })
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
            Some(RegistryAuth { identity_token: token, ..Default::default() })
        }
        Err(_) => None,
    })
}

/// Docker's short name: "busybox:latest" for docker.io/library/busybox:latest.
pub fn familiar(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(rest) => match rest.strip_prefix("library/") {
            Some(official) if !official.split(['@', ':']).next().unwrap_or("").contains('/') => official.to_string(),
            _ => rest.to_string(),
        },
        None => name.to_string(),
    }
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let platform = args.platform.as_deref().map(parse_platform).transpose()?;
    let request = PullRequest {
        reference: args.image.clone(),
        platform,
        auth: credentials(&args.image),
        all_tags: args.all_tags,
        no_unpack: false,
    };
    let mut display = Display::new(args.quiet);
    let mut stream = connection.images().pull(request).await.map_err(anyhow::Error::from)?.into_inner();
    let mut done = None;
    while let Some(message) = stream.next().await {
        let message: PullProgress = message.map_err(anyhow::Error::from)?;
        match message.event {
            Some(pull_progress::Event::Resolved(resolved)) => {
                let (repository, tag) = split_repository(&resolved.name);
                let path = repository.split_once('/').map(|(_, p)| p).unwrap_or(&repository);
                display.line(&format!("{tag}: Pulling from {path}"));
            }
            Some(pull_progress::Event::Layer(layer)) => display.layer(&layer),
            Some(pull_progress::Event::Message(text)) => display.line(&text),
            Some(pull_progress::Event::Done(finished)) => done = Some(finished),
            None => {}
        }
    }
    let done = done.context("the pull ended without a result")?;
    display.finish();
    if !args.quiet {
        println!("Digest: {}", done.digest);
        let status = if done.updated { "Downloaded newer image for" } else { "Image is up to date for" };
        println!("Status: {status} {}", familiar(&done.name));
    }
    println!("{}", done.name);
    Ok(())
}

/// ("127.0.0.1:5000/busybox", "latest") or ("repo", "sha256:...") for a digest name.
fn split_repository(name: &str) -> (String, String) {
    if let Some((repository, digest)) = name.split_once('@') {
        return (repository.to_string(), digest.to_string());
    }
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_string(), tag.to_string()),
        _ => (name.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_platforms() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("docker.io/user/app:1"), "user/app:1");
        assert_eq!(familiar("127.0.0.1:5000/busybox:latest"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(registry_of("127.0.0.1:5000/busybox"), "127.0.0.1:5000");
        assert_eq!(registry_of("user/app"), "docker.io");
        assert_eq!(parse_platform("linux/arm64/v8").unwrap().variant, "v8");
        assert!(parse_platform("a/b/c/d").is_err());
        assert_eq!(split_repository("h:5/r:t"), ("h:5/r".into(), "t".into()));
    }
}
