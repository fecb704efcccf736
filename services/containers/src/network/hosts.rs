//! /etc/hosts of containers on user-defined networks: besides localhost, `--add-host`
//! entries and the container's own address, one line per peer on a shared user network
//! (its name, aliases and short id), so containers reach each other by name. The file
//! is rewritten in place (the bind mount follows the inode) whenever a peer comes or goes.

use std::collections::BTreeMap;

use super::store::Attachment;

/// Peers of `me`: (address, names) of every other container of its namespace on one of
/// its networks, except the default bridge (Docker gives that one no name resolution).
pub fn peers(me: &Attachment, all: &[Attachment], default_network_id: &str) -> Vec<(String, Vec<String>)> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for mine in me.endpoints.iter().filter(|e| e.network_id != default_network_id) {
        for other in all.iter().filter(|a| a.namespace == me.namespace && a.container_id != me.container_id) {
            for theirs in other.endpoints.iter().filter(|e| e.network_id == mine.network_id && !e.ipv4.is_empty()) {
                let names = found.entry(theirs.ipv4.clone()).or_default();
                for name in &theirs.names {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
        }
    }
    found.into_iter().collect()
}

pub fn render(
    hostname: &str,
    own_address: Option<&str>,
    extra_hosts: &[String],
    peers: &[(String, Vec<String>)],
) -> String {
    let mut text = crate::etcfiles::hosts(hostname, own_address, extra_hosts);
    for (address, names) in peers {
        text.push_str(&format!("{address}\t{}\n", names.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::store::EndpointRecord;
    use serde_json::Value;

    fn attachment(namespace: &str, id: &str, endpoints: &[(&str, &str, &str)]) -> Attachment {
        Attachment {
            namespace: namespace.into(),
            container_id: id.into(),
            netns: Default::default(),
            ports: Vec::new(),
            endpoints: endpoints
                .iter()
                .map(|(network, ip, name)| EndpointRecord {
                    network_id: network.to_string(),
                    network_name: network.to_string(),
                    ifname: "eth0".into(),
                    conflist: Value::Null,
                    runtime_config: Value::Null,
                    result: None,
                    ipv4: ip.to_string(),
                    names: vec![name.to_string(), format!("{id}-short")],
                })
                .collect(),
        }
    }

    #[test]
    fn peers_share_a_user_network_in_the_same_namespace() {
        let web = attachment("default", "w", &[("front", "10.1.0.2", "web")]);
        let all = vec![
            web.clone(),
            attachment("default", "d", &[("front", "10.1.0.3", "db"), ("back", "10.2.0.3", "db")]),
            attachment("default", "x", &[("back", "10.2.0.4", "other")]),
            attachment("other", "o", &[("front", "10.1.0.9", "elsewhere")]),
            attachment("default", "b", &[("bridge-id", "10.9.0.2", "on-default")]),
            attachment("default", "s", &[("front", "", "starting")]),
        ];
        assert_eq!(
            peers(&web, &all, "bridge-id"),
            vec![("10.1.0.3".to_string(), vec!["db".to_string(), "d-short".into()])]
        );
        let on_default = attachment("default", "c", &[("bridge-id", "10.9.0.3", "c")]);
        assert!(peers(&on_default, &all, "bridge-id").is_empty());
        let text = render("web", Some("10.1.0.2"), &["gw:10.0.0.1".into()], &peers(&web, &all, "bridge-id"));
        assert!(text.contains("10.0.0.1\tgw\n") && text.contains("10.1.0.2\tweb\n"), "{text}");
        assert!(text.ends_with("10.1.0.3\tdb d-short\n"), "{text}");
    }
}
