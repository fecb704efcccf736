//! How Docker turns an image config and a container config into the process to run:
//! entrypoint and cmd resolution, environment merging, working directory and user.

use berth_proto::containers::v1::ContainerConfig;
use berth_proto::images::v1::ImageConfig;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The argv: an explicit `--entrypoint` replaces the image's entrypoint and drops the
/// image's cmd; explicit args replace the image's cmd.
pub fn argv(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let entrypoint = if config.entrypoint_set { &config.entrypoint } else { &image.entrypoint };
    let cmd: &[String] = if !config.cmd.is_empty() {
        &config.cmd
    } else if config.entrypoint_set {
        &[]
    } else {
        &image.cmd
    };
    // `--entrypoint ""` clears the entrypoint; an empty word is never a program.
    entrypoint.iter().filter(|s| !s.is_empty()).chain(cmd.iter()).cloned().collect()
}

fn key_of(entry: &str) -> &str {
    entry.split_once('=').map(|(k, _)| k).unwrap_or(entry)
}

/// Image env, overridden key by key by the user's; PATH defaulted; HOSTNAME first and
/// TERM for terminals, as Docker sets them.
pub fn environment(config: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    fn set(env: &mut Vec<String>, entry: &str) {
        let key = key_of(entry);
        match env.iter_mut().find(|e| key_of(e) == key) {
            Some(existing) => *existing = entry.to_string(),
            None => env.push(entry.to_string()),
        }
    }
    let mut env: Vec<String> = Vec::new();
    set(&mut env, &format!("HOSTNAME={hostname}"));
    for entry in image.env.iter().chain(config.env.iter()) {
        // "KEY" without "=" from `-e KEY` was resolved by the client; skip leftovers.
        if entry.contains('=') {
            set(&mut env, entry);
        }
    }
    if !env.iter().any(|e| key_of(e) == "PATH") {
        set(&mut env, DEFAULT_PATH);
    }
    if config.tty && !env.iter().any(|e| key_of(e) == "TERM") {
        set(&mut env, "TERM=xterm");
    }
    env
}

pub fn working_dir(config: &ContainerConfig, image: &ImageConfig) -> String {
    let dir = if !config.working_dir.is_empty() { &config.working_dir } else { &image.working_dir };
    if dir.is_empty() { "/".to_string() } else { dir.clone() }
}

pub fn user(config: &ContainerConfig, image: &ImageConfig) -> String {
    if !config.user.is_empty() { config.user.clone() } else { image.user.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["A=1".into(), "PATH=/img".into()],
            working_dir: "/app".into(),
            user: "app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn docker_entrypoint_and_cmd_rules() {
        let image = image();
        let plain = ContainerConfig::default();
        assert_eq!(argv(&plain, &image), ["/entry", "default"]);
        let args = ContainerConfig { cmd: vec!["x".into()], ..Default::default() };
        assert_eq!(argv(&args, &image), ["/entry", "x"]);
        let entry = ContainerConfig { entrypoint: vec!["sh".into()], entrypoint_set: true, ..Default::default() };
        assert_eq!(argv(&entry, &image), ["sh"]);
        let cleared = ContainerConfig {
            entrypoint: vec!["".into()],
            entrypoint_set: true,
            cmd: vec!["ls".into()],
            ..Default::default()
        };
        assert_eq!(argv(&cleared, &image), ["ls"]);
        assert!(
            argv(&ContainerConfig { entrypoint_set: true, ..Default::default() }, &ImageConfig::default()).is_empty()
        );
    }

    #[test]
    fn env_merges_like_docker() {
        let config = ContainerConfig { env: vec!["A=2".into(), "B=3".into()], tty: true, ..Default::default() };
        let env = environment(&config, &image(), "abc");
        assert_eq!(env, ["HOSTNAME=abc", "A=2", "PATH=/img", "B=3", "TERM=xterm"]);
        let env = environment(&ContainerConfig::default(), &ImageConfig::default(), "h");
        assert_eq!(env, ["HOSTNAME=h", DEFAULT_PATH]);
    }

    #[test]
    fn workdir_and_user_fall_back_to_the_image() {
        assert_eq!(working_dir(&ContainerConfig::default(), &image()), "/app");
        assert_eq!(working_dir(&ContainerConfig::default(), &ImageConfig::default()), "/");
        assert_eq!(user(&ContainerConfig { user: "1:2".into(), ..Default::default() }, &image()), "1:2");
        assert_eq!(user(&ContainerConfig::default(), &image()), "app");
    }
}
