//! Dockerfile-like instructions applied to an image config (`docker commit --change`,
//! `docker import --change`): CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER,
//! VOLUME, WORKDIR. `config` is the OCI image config's `config` object (the runtime part).

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error(
        "{0:?} is not a supported change: use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR"
    )]
    Unsupported(String),
    #[error("{instruction} needs an argument")]
    MissingArgument { instruction: String },
    #[error("invalid {instruction} argument {argument:?}")]
    Invalid { instruction: String, argument: String },
}

/// JSON array form (`["a","b"]`) or shell form (`a b` runs under `/bin/sh -c`).
fn command_form(argument: &str) -> Value {
    match serde_json::from_str::<Vec<String>>(argument) {
        Ok(words) => json!(words),
        Err(_) => json!(["/bin/sh", "-c", argument]),
    }
}

/// `K=V K2="V 2"` pairs, or the legacy `K V` form with a single pair.
fn pairs(instruction: &str, argument: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let invalid = || ChangeError::Invalid { instruction: instruction.to_string(), argument: argument.to_string() };
    if !argument.contains('=') {
        let (key, value) = argument.split_once(char::is_whitespace).ok_or_else(invalid)?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    let mut result = Vec::new();
    let mut rest = argument.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(invalid)?;
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(invalid)?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            match after.find(char::is_whitespace) {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            }
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(invalid());
        }
        result.push((key.to_string(), value));
        rest = remaining.trim_start();
    }
    Ok(result)
}

fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = config.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    // Just made sure it is an object.
    entry.as_object_mut().expect("an object")
}

pub fn apply(config: &mut Value, changes: &[String]) -> Result<(), ChangeError> {
    if !config.is_object() {
        *config = json!({});
    }
    let Some(config) = config.as_object_mut() else { return Ok(()) };
    for change in changes {
        let change = change.trim();
        let (instruction, argument) = match change.split_once(char::is_whitespace) {
            Some((i, a)) => (i.to_ascii_uppercase(), a.trim()),
            None => (change.to_ascii_uppercase(), ""),
        };
        if argument.is_empty() {
            return Err(ChangeError::MissingArgument { instruction });
        }
        match instruction.as_str() {
            "CMD" => {
                config.insert("Cmd".into(), command_form(argument));
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), command_form(argument));
            }
            "ENV" => {
                let mut env: Vec<String> = config
                    .get("Env")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                for (key, value) in pairs(&instruction, argument)? {
                    env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
                    env.push(format!("{key}={value}"));
                }
                config.insert("Env".into(), json!(env));
            }
            "LABEL" => {
                for (key, value) in pairs(&instruction, argument)? {
                    object(config, "Labels").insert(key, json!(value));
                }
            }
            "EXPOSE" => {
                for port in argument.split_whitespace() {
                    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
                    if number.parse::<u16>().is_err() || !matches!(protocol, "tcp" | "udp" | "sctp") {
                        return Err(ChangeError::Invalid {
                            instruction: instruction.clone(),
                            argument: port.to_string(),
                        });
                    }
                    object(config, "ExposedPorts").insert(format!("{number}/{protocol}"), json!({}));
                }
            }
            "VOLUME" => {
                let paths: Vec<String> = serde_json::from_str(argument)
                    .unwrap_or_else(|_| argument.split_whitespace().map(str::to_string).collect());
                for path in paths {
                    object(config, "Volumes").insert(path, json!({}));
                }
            }
            "USER" => {
                config.insert("User".into(), json!(argument));
            }
            "WORKDIR" => {
                config.insert("WorkingDir".into(), json!(argument));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), json!(argument));
            }
            _ => return Err(ChangeError::Unsupported(change.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_docker_changes() {
        let mut config = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]});
        apply(
            &mut config,
            &[
                r#"CMD ["echo", "hi"]"#.into(),
                "ENTRYPOINT /entry.sh".into(),
                r#"ENV A=2 B="two words""#.into(),
                "ENV C three".into(),
                "EXPOSE 80 53/udp".into(),
                "LABEL version=1".into(),
                "VOLUME /data".into(),
                "USER nobody".into(),
                "WORKDIR /srv".into(),
            ],
        )
        .unwrap();
        assert_eq!(config["Cmd"], json!(["echo", "hi"]));
        assert_eq!(config["Entrypoint"], json!(["/bin/sh", "-c", "/entry.sh"]));
        assert_eq!(config["Env"], json!(["PATH=/bin", "A=2", "B=two words", "C=three"]));
        assert!(config["ExposedPorts"]["53/udp"].is_object() && config["ExposedPorts"]["80/tcp"].is_object());
        assert_eq!(config["Labels"]["version"], "1");
        assert!(config["Volumes"]["/data"].is_object());
        assert_eq!(config["User"], "nobody");
        assert_eq!(config["WorkingDir"], "/srv");
    }

    #[test]
    fn rejects_bad_changes() {
        let mut config = json!({});
        assert!(matches!(apply(&mut config, &["RUN make".into()]), Err(ChangeError::Unsupported(_))));
        assert!(matches!(apply(&mut config, &["CMD".into()]), Err(ChangeError::MissingArgument { .. })));
        assert!(matches!(apply(&mut config, &["EXPOSE http".into()]), Err(ChangeError::Invalid { .. })));
    }
}
