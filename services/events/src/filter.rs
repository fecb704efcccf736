//! Subscription filters with Docker's semantics: values of one key are OR-ed, different
//! keys are AND-ed. Keys: topic, namespace, type, event (the action), container, image,
//! id, label, network, volume.

use std::collections::BTreeMap;

use berth_common::Namespace;
use berth_proto::events::v1::{Envelope, Event};
use berth_proto::types::v1::Filter;

use crate::error::Error;

const KEYS: &str = "topic, namespace, type, event, container, image, id, label, network, volume";

#[derive(Debug, Clone)]
pub struct Matcher {
    /// `None`: every namespace.
    namespaces: Option<Vec<String>>,
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone)]
enum Clause {
    Topic(Vec<String>),
    Type(Vec<String>),
    Action(Vec<String>),
    Container(Vec<String>),
    Image(Vec<String>),
    Id(Vec<String>),
    Label(Vec<(String, Option<String>)>),
    Network(Vec<String>),
    Volume(Vec<String>),
}

impl Matcher {
    /// Namespaces: all with `all_namespaces`, else those named by `namespace` filters, else
    /// the request's own.
    pub fn new(filters: &[Filter], all_namespaces: bool, own: &Namespace) -> Result<Matcher, Error> {
        let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for filter in filters {
            let values = by_key.entry(filter.key.as_str()).or_default();
            values.extend(filter.values.iter().filter(|v| !v.is_empty()).cloned());
        }
        let mut namespaces = if all_namespaces { None } else { Some(vec![own.to_string()]) };
        let mut clauses = Vec::new();
        for (key, values) in by_key {
            if values.is_empty() {
                continue;
            }
            let clause = match key {
                "namespace" => {
                    if !all_namespaces {
                        namespaces = Some(values);
                    }
                    continue;
                }
                "topic" => Clause::Topic(values),
                "type" => Clause::Type(values),
                "event" => Clause::Action(values),
                "container" => Clause::Container(values),
                "image" => Clause::Image(values.iter().map(|v| normalize_image(v)).collect()),
                "id" => Clause::Id(values),
                "label" => Clause::Label(
                    values
                        .into_iter()
                        .map(|v| match v.split_once('=') {
                            Some((k, v)) => (k.to_string(), Some(v.to_string())),
                            None => (v, None),
                        })
                        .collect(),
                ),
                "network" => Clause::Network(values),
                "volume" => Clause::Volume(values),
                other => return Err(Error::InvalidArgument(format!("invalid filter {other:?}: use one of {KEYS}"))),
            };
            clauses.push(clause);
        }
        Ok(Matcher { namespaces, clauses })
    }

    pub fn matches(&self, envelope: &Envelope) -> bool {
        if let Some(namespaces) = &self.namespaces
            && !namespaces.contains(&envelope.namespace)
        {
            return false;
        }
        let empty = Event::default();
        let event = envelope.event.as_ref().unwrap_or(&empty);
        self.clauses.iter().all(|clause| clause.matches(&envelope.topic, event))
    }
}

impl Clause {
    fn matches(&self, topic: &str, event: &Event) -> bool {
        let attribute = |name: &str| event.attributes.get(name).map(String::as_str).unwrap_or("");
        match self {
            Clause::Topic(patterns) => patterns.iter().any(|p| topic_matches(p, topic)),
            Clause::Type(types) => types.contains(&event.r#type),
            // Docker's actions may carry a detail ("exec_start: sh -c ..."); the filter
            // names the action only.
            Clause::Action(actions) => actions.iter().any(|a| {
                event.action == *a || event.action.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with(':'))
            }),
            // Ids match by prefix (short ids), names exactly, as `docker events` does.
            Clause::Container(values) => values.iter().any(|v| {
                (event.r#type == "container" && prefix_match(v, &event.actor_id))
                    || prefix_match(v, attribute("container_id"))
                    || (event.r#type == "container" && v.trim_start_matches('/') == attribute("name"))
                    || (event.r#type == "container" && v == attribute("container"))
            }),
            Clause::Image(images) => {
                let mut candidates = vec![attribute("image")];
                if event.r#type == "image" {
                    candidates.push(&event.actor_id);
                    candidates.push(attribute("name"));
                }
                images.iter().any(|image| {
                    candidates.iter().filter(|c| !c.is_empty()).any(|c| *c == image || normalize_image(c) == *image)
                })
            }
            Clause::Id(ids) => ids.iter().any(|id| prefix_match(id, &event.actor_id)),
            Clause::Label(labels) => labels.iter().any(|(key, value)| match (event.attributes.get(key), value) {
                (Some(actual), Some(wanted)) => actual == wanted,
                (Some(_), None) => true,
                (None, _) => false,
            }),
            Clause::Network(values) => {
                event.r#type == "network"
                    && values.iter().any(|v| prefix_match(v, &event.actor_id) || v == attribute("name"))
            }
            Clause::Volume(values) => event.r#type == "volume" && values.contains(&event.actor_id),
        }
    }
}

fn prefix_match(value: &str, id: &str) -> bool {
    !id.is_empty() && id.starts_with(value)
}

/// A topic filter is a glob (`*`, `?`) when it has one, else the topic itself or a parent
/// path: "/tasks" matches "/tasks" and "/tasks/exit".
fn topic_matches(pattern: &str, topic: &str) -> bool {
    if pattern.contains(['*', '?']) {
        return glob_match(pattern.as_bytes(), topic.as_bytes());
    }
    let parent = pattern.trim_end_matches('/');
    topic == pattern || topic.strip_prefix(parent).is_some_and(|rest| rest.starts_with('/'))
}

/// `*` (any run of characters, '/' included) and `?` (one character). Hand-written: topic
/// filters need nothing more, and path-glob crates give '/' and `[` special meanings
/// that topics do not want.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The full reference Docker would use: "busybox" -> "docker.io/library/busybox:latest".
/// Image ids ("sha256:...") stay as they are.
fn normalize_image(reference: &str) -> String {
    if reference.starts_with("sha256:") {
        return reference.to_string();
    }
    let (domain, rest) = match reference.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest.to_string()),
        _ => ("docker.io", reference.to_string()),
    };
    let path = if domain == "docker.io" && !rest.contains('/') { format!("library/{rest}") } else { rest };
    let last = path.rsplit('/').next().unwrap_or("");
    let tagged = last.contains(':') || last.contains('@');
    format!("{domain}/{path}{}", if tagged { "" } else { ":latest" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(key: &str, values: &[&str]) -> Filter {
        Filter { key: key.into(), values: values.iter().map(|v| v.to_string()).collect() }
    }

    fn envelope(ns: &str, topic: &str, kind: &str, action: &str, actor: &str, attrs: &[(&str, &str)]) -> Envelope {
        Envelope {
            seq: 1,
            timestamp: None,
            namespace: ns.into(),
            topic: topic.into(),
            event: Some(Event {
                r#type: kind.into(),
                action: action.into(),
                actor_id: actor.into(),
                attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                payload: None,
            }),
        }
    }

    fn matcher(filters: &[Filter]) -> Matcher {
        Matcher::new(filters, false, &Namespace::default_namespace()).unwrap()
    }

    #[test]
    fn globs_and_parent_topics() {
        assert!(glob_match(b"/tasks/*", b"/tasks/exit"));
        assert!(glob_match(b"*exit", b"/tasks/exit"));
        assert!(glob_match(b"/t?sks/*it", b"/tasks/exit"));
        assert!(!glob_match(b"/tasks/*", b"/images/pull"));
        assert!(!glob_match(b"/tasks/?", b"/tasks/exit"));
        assert!(topic_matches("/tasks", "/tasks/exit"));
        assert!(topic_matches("/tasks/", "/tasks/exit"));
        assert!(topic_matches("/tasks/exit", "/tasks/exit"));
        assert!(!topic_matches("/task", "/tasks/exit"));
    }

    #[test]
    fn same_key_or_different_keys_and() {
        let die = envelope("default", "/tasks/exit", "container", "die", "abc123", &[("name", "web")]);
        let start = envelope("default", "/tasks/start", "container", "start", "abc123", &[("name", "web")]);
        let other = envelope("default", "/tasks/exit", "container", "die", "fff000", &[("name", "db")]);
        let m = matcher(&[filter("event", &["die", "oom"]), filter("container", &["web"])]);
        assert!(m.matches(&die));
        assert!(!m.matches(&start));
        assert!(!m.matches(&other));
        let m = matcher(&[filter("container", &["abc"]), filter("container", &["db"])]);
        assert!(m.matches(&die) && m.matches(&other));
        assert!(matcher(&[filter("topic", &["/tasks/*"])]).matches(&start));
        assert!(!matcher(&[filter("type", &["image"])]).matches(&start));
    }

    #[test]
    fn images_compare_normalized() {
        let run = envelope("default", "/tasks/start", "container", "start", "abc", &[("image", "busybox")]);
        let pull = envelope("default", "/images/pull", "image", "pull", "docker.io/library/busybox:latest", &[]);
        for wanted in ["busybox", "busybox:latest", "docker.io/library/busybox"] {
            let m = matcher(&[filter("image", &[wanted])]);
            assert!(m.matches(&run), "{wanted}");
            assert!(m.matches(&pull), "{wanted}");
        }
        assert!(!matcher(&[filter("image", &["alpine"])]).matches(&run));
        assert_eq!(normalize_image("localhost:5000/x/y"), "localhost:5000/x/y:latest");
        assert_eq!(normalize_image("quay.io/a/b@sha256:00"), "quay.io/a/b@sha256:00");
    }

    #[test]
    fn labels_actions_and_namespaces() {
        let exec = envelope("k8s.io", "/tasks/exec-started", "container", "exec_start: sh", "c1", &[("app", "x")]);
        assert!(!matcher(&[]).matches(&exec), "other namespaces are hidden by default");
        let all = Matcher::new(&[filter("event", &["exec_start"])], true, &Namespace::default_namespace()).unwrap();
        assert!(all.matches(&exec));
        let m = matcher(&[filter("namespace", &["k8s.io"]), filter("label", &["app=x"])]);
        assert!(m.matches(&exec));
        assert!(!matcher(&[filter("namespace", &["k8s.io"]), filter("label", &["app=y"])]).matches(&exec));
        assert!(matcher(&[filter("namespace", &["k8s.io"]), filter("label", &["app"])]).matches(&exec));
        assert!(!matcher(&[filter("namespace", &["k8s.io"]), filter("event", &["exec"])]).matches(&exec));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Matcher::new(&[filter("colour", &["red"])], false, &Namespace::default_namespace()).unwrap_err();
        assert!(err.to_string().contains("invalid filter \"colour\""), "{err}");
    }
}
