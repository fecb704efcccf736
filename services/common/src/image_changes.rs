//! Dockerfile-like instructions applied to an image config (`import -c`, `commit -c`),
//! shared by the images and containers services:
//! CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL, as Docker's
//! `--change` accepts them. The config is Docker's "config" object (PascalCase keys).
//!
//! Hand-written: the crates that parse Dockerfiles pull in a whole build front end; these
//! nine instructions need only a word splitter with Docker's quoting rules.

use serde_json::{Map, Value};

/// A change that cannot be applied; the message says why and what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ChangeError(String);

type Result<T> = std::result::Result<T, ChangeError>;

fn invalid(message: String) -> ChangeError {
    ChangeError(message)
}

/// Splits `text` into words: whitespace separates, "..." and '...' quote, a backslash
/// escapes the next character (inside double quotes only `"` and `\`).
fn words(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(invalid(format!("unterminated double quote in {text:?}"))),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('"' | '\\')) => current.push(escaped),
                            Some(other) => {
                                current.push('\\');
                                current.push(other);
                            }
                            None => return Err(invalid(format!("unterminated double quote in {text:?}"))),
                        },
                        Some(other) => current.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(invalid(format!("unterminated single quote in {text:?}"))),
                        Some('\'') => break,
                        Some(other) => current.push(other),
                    }
                }
            }
            other => {
                in_word = true;
                current.push(other);
            }
        }
    }
    if in_word {
        out.push(current);
    }
    Ok(out)
}

/// `["a", "b"]` (exec form) when `rest` is a JSON array of strings.
fn json_array(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

/// CMD/ENTRYPOINT: exec form as given, shell form through `/bin/sh -c`.
fn command(rest: &str) -> Vec<String> {
    json_array(rest).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

/// `k=v k2="v 2"` or the legacy `k value with spaces`.
fn key_values(instruction: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if first.is_empty() {
        return Err(invalid(format!("{instruction} requires at least one argument")));
    }
    if !first.contains('=') {
        let value = rest[first.len()..].trim();
        if value.is_empty() {
            return Err(invalid(format!("{instruction} {first} needs a value (use {first}=VALUE)")));
        }
        let value = words(value)?.join(" ");
        return Ok(vec![(first.to_string(), value)]);
    }
    words(rest)?
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(invalid(format!("{instruction}: {word:?} is not KEY=VALUE"))),
        })
        .collect()
}

fn set_map_keys(config: &mut Map<String, Value>, field: &str, keys: Vec<String>) {
    let entry = config.entry(field).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Some(map) = entry.as_object_mut() {
        for key in keys {
            map.insert(key, Value::Object(Map::new()));
        }
    }
}

fn port(word: &str) -> Result<String> {
    let (number, protocol) = word.split_once('/').unwrap_or((word, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    let valid_number = |n: &str| n.parse::<u16>().is_ok_and(|n| n > 0);
    let valid = match number.split_once('-') {
        Some((low, high)) => valid_number(low) && valid_number(high),
        None => valid_number(number),
    };
    if !valid || !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid(format!("EXPOSE: invalid port {word:?} (expected PORT[/tcp|udp|sctp])")));
    }
    Ok(format!("{number}/{protocol}"))
}

/// Applies one instruction ("CMD [\"sh\"]", "ENV A=1", ...) to `config`.
/// Applies every change in order to an image config's `config` object (created if it is
/// missing or not an object).
pub fn apply_all(config: &mut Value, changes: &[String]) -> Result<()> {
    if !config.is_object() {
        *config = Value::Object(Map::new());
    }
    if let Some(map) = config.as_object_mut() {
        for change in changes {
            apply(map, change)?;
        }
    }
    Ok(())
}

pub fn apply(config: &mut Map<String, Value>, change: &str) -> Result<()> {
    let change = change.trim();
    let (instruction, rest) = match change.split_once(char::is_whitespace) {
        Some((instruction, rest)) => (instruction, rest.trim()),
        None => (change, ""),
    };
    let instruction = instruction.to_ascii_uppercase();
    if rest.is_empty() {
        return Err(invalid(format!("{instruction} requires an argument: {change:?}")));
    }
    match instruction.as_str() {
        "CMD" => {
            config.insert("Cmd".into(), command(rest).into());
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), command(rest).into());
        }
        "ENV" => {
            let mut env: Vec<String> = config
                .get("Env")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            for (key, value) in key_values("ENV", rest)? {
                let prefix = format!("{key}=");
                env.retain(|entry| !entry.starts_with(&prefix) && entry != &key);
                env.push(format!("{key}={value}"));
            }
            config.insert("Env".into(), env.into());
        }
        "LABEL" => {
            let entry = config.entry("Labels").or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let labels = key_values("LABEL", rest)?;
            if let Some(map) = entry.as_object_mut() {
                for (key, value) in labels {
                    map.insert(key, value.into());
                }
            }
        }
        "WORKDIR" => {
            let dir = words(rest)?.join(" ");
            let current = config.get("WorkingDir").and_then(Value::as_str).unwrap_or("/").to_string();
            // Like Dockerfile: a relative WORKDIR continues the previous one.
            let dir = if dir.starts_with('/') { dir } else { format!("{}/{dir}", current.trim_end_matches('/')) };
            config.insert("WorkingDir".into(), dir.into());
        }
        "USER" => {
            config.insert("User".into(), words(rest)?.join(" ").into());
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), rest.to_string().into());
        }
        "EXPOSE" => {
            let ports = words(rest)?.iter().map(|w| port(w)).collect::<Result<Vec<_>>>()?;
            set_map_keys(config, "ExposedPorts", ports);
        }
        "VOLUME" => {
            let volumes = match json_array(rest) {
                Some(volumes) => volumes,
                None => words(rest)?,
            };
            if volumes.iter().any(|v| v.is_empty()) {
                return Err(invalid("VOLUME: a volume path cannot be empty".into()));
            }
            set_map_keys(config, "Volumes", volumes);
        }
        other => {
            return Err(invalid(format!(
                "{other} is not a supported change (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn applied(changes: &[&str]) -> Value {
        let mut config = Map::new();
        for change in changes {
            apply(&mut config, change).unwrap();
        }
        Value::Object(config)
    }

    #[test]
    fn commands_in_exec_and_shell_form() {
        assert_eq!(applied(&[r#"CMD ["sh"]"#])["Cmd"], json!(["sh"]));
        assert_eq!(applied(&["CMD echo hi"])["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(applied(&[r#"entrypoint ["/bin/echo", "x"]"#])["Entrypoint"], json!(["/bin/echo", "x"]));
    }

    #[test]
    fn env_and_labels_take_quotes_and_replace() {
        let config = applied(&["ENV A=1 B=\"two words\"", "ENV A=3", "ENV LEGACY value with spaces"]);
        assert_eq!(config["Env"], json!(["B=two words", "A=3", "LEGACY=value with spaces"]));
        let config = applied(&["LABEL a=b 'c d'=e", "LABEL x y"]);
        assert_eq!(config["Labels"], json!({"a": "b", "c d": "e", "x": "y"}));
    }

    #[test]
    fn ports_volumes_workdir_user() {
        let config = applied(&[
            "EXPOSE 80 53/udp 8000-8001",
            r#"VOLUME ["/data", "/logs"]"#,
            "VOLUME /cache",
            "WORKDIR /app",
            "WORKDIR sub",
            "USER nobody:nogroup",
            "STOPSIGNAL SIGINT",
        ]);
        assert_eq!(config["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}, "8000-8001/tcp": {}}));
        assert_eq!(config["Volumes"], json!({"/data": {}, "/logs": {}, "/cache": {}}));
        assert_eq!(config["WorkingDir"], json!("/app/sub"));
        assert_eq!(config["User"], json!("nobody:nogroup"));
        assert_eq!(config["StopSignal"], json!("SIGINT"));
    }

    #[test]
    fn rejects_what_docker_rejects() {
        let mut config = Map::new();
        for bad in ["RUN echo", "CMD", "EXPOSE 99999", "EXPOSE 80/xyz", "ENV =x", "ENV A", "LABEL \"open"] {
            assert!(apply(&mut config, bad).is_err(), "{bad}");
        }
    }
}
