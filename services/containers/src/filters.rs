//! `docker ps --filter`: values of one key are OR-ed, keys are AND-ed.

use berth_proto::containers::v1::{Container, ContainerStatus};
use berth_proto::types::v1::Filter;

use crate::error::{Error, Result};

pub fn status_name(status: i32) -> &'static str {
    match ContainerStatus::try_from(status).unwrap_or(ContainerStatus::Unspecified) {
        ContainerStatus::Created | ContainerStatus::Unspecified => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Paused => "paused",
        ContainerStatus::Restarting => "restarting",
        ContainerStatus::Removing => "removing",
        ContainerStatus::Exited => "exited",
        ContainerStatus::Dead => "dead",
    }
}

const KEYS: [&str; 10] =
    ["id", "name", "label", "status", "exited", "ancestor", "before", "since", "network", "volume"];

pub fn validate(filters: &[Filter]) -> Result<()> {
    for filter in filters {
        if !KEYS.contains(&filter.key.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "invalid filter '{}': supported filters are {}",
                filter.key,
                KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

fn matches_one(container: &Container, key: &str, value: &str, all: &[Container]) -> bool {
    let state = container.state.clone().unwrap_or_default();
    let created = |c: &Container| c.created_at.as_ref().map(|t| (t.seconds, t.nanos)).unwrap_or_default();
    let reference = |value: &str| all.iter().find(|c| c.id == value || c.name == value || c.id.starts_with(value));
    match key {
        "id" => container.id.starts_with(value),
        "name" => container.name.contains(value.trim_start_matches('/')),
        "label" => match value.split_once('=') {
            Some((k, v)) => container.labels.get(k).is_some_and(|x| x == v),
            None => container.labels.contains_key(value),
        },
        "status" => status_name(state.status) == value,
        "exited" => {
            state.status == ContainerStatus::Exited as i32 && value.parse::<i32>().is_ok_and(|c| c == state.exit_code)
        }
        "ancestor" => {
            container.image == value
                || container.image_id.starts_with(value)
                || container.image_id.trim_start_matches("sha256:").starts_with(value)
        }
        "before" => reference(value).is_some_and(|other| created(container) < created(other)),
        "since" => reference(value).is_some_and(|other| created(container) > created(other)),
        "network" => container.network_settings.as_ref().is_some_and(|settings| {
            settings
                .networks
                .iter()
                .any(|(name, e)| name == value || (!value.is_empty() && e.network_id.starts_with(value)))
        }),
        "volume" => container.mounts.iter().any(|m| m.name == value || m.source == value || m.destination == value),
        _ => false,
    }
}

pub fn matches(container: &Container, filters: &[Filter], all: &[Container]) -> bool {
    filters.iter().all(|f| f.values.is_empty() || f.values.iter().any(|v| matches_one(container, &f.key, v, all)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containers::v1::ContainerState;

    #[test]
    fn docker_filter_semantics() {
        let mut a = Container { id: "aaa1".into(), name: "web".into(), image: "busybox".into(), ..Default::default() };
        a.labels.insert("tier".into(), "front".into());
        a.state = Some(ContainerState { status: ContainerStatus::Exited as i32, exit_code: 3, ..Default::default() });
        let all = vec![a.clone()];
        let f = |key: &str, values: &[&str]| Filter {
            key: key.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        assert!(matches(&a, &[f("status", &["running", "exited"])], &all));
        assert!(!matches(&a, &[f("status", &["running"])], &all));
        assert!(matches(&a, &[f("exited", &["3"]), f("label", &["tier=front"])], &all));
        assert!(!matches(&a, &[f("exited", &["3"]), f("label", &["tier=back"])], &all));
        assert!(matches(&a, &[f("ancestor", &["busybox"]), f("name", &["we"])], &all));
        assert!(validate(&[f("colour", &["red"])]).is_err());
    }

    #[test]
    fn network_and_volume_filters() {
        use berth_proto::containers::v1::{EndpointSettings, MountPoint, NetworkSettings};
        let endpoint = EndpointSettings { network_id: "f00d1234".into(), ..Default::default() };
        let c = Container {
            network_settings: Some(NetworkSettings {
                networks: [("front".to_string(), endpoint)].into_iter().collect(),
                ..Default::default()
            }),
            mounts: vec![MountPoint { name: "data".into(), destination: "/data".into(), ..Default::default() }],
            ..Default::default()
        };
        let f = |key: &str, value: &str| vec![Filter { key: key.into(), values: vec![value.into()] }];
        assert!(matches(&c, &f("network", "front"), &[]));
        assert!(matches(&c, &f("network", "f00d"), &[]));
        assert!(!matches(&c, &f("network", "back"), &[]));
        assert!(matches(&c, &f("volume", "data"), &[]) && matches(&c, &f("volume", "/data"), &[]));
        assert!(!matches(&c, &f("volume", "other"), &[]));
        assert!(validate(&f("network", "x")).is_ok());
    }
}
