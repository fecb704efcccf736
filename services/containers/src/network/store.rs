//! The networking state kept in `containers.db`: user-defined networks (tree `networks`,
//! `<namespace>/<id>` -> `Network`) and attachments (tree `net_attachments`,
//! `<namespace>/<container id>` -> JSON), i.e. what was added through CNI for a container
//! and must be deleted again. An attachment is written before the first CNI ADD, so
//! even a crash in the middle leaves a record that says what to clean up.

use berth_common::Namespace;
use berth_common::store::{ns_key, ns_prefix};
use berth_proto::containers::v1::{Network, PortBinding};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One network a container is attached to through CNI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub network_name: String,
    /// The interface inside the container (eth0, eth1, ...).
    pub ifname: String,
    /// The configuration list the ADD used (kept, so DEL works after the network changed).
    pub conflist: Value,
    pub runtime_config: Value,
    /// The ADD result, passed to DEL as prevResult; None until ADD succeeded.
    pub result: Option<Value>,
    pub ipv4: String,
    /// Names peers on the same user network resolve to this address.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortRecord {
    pub container_port: String,
    pub host_ip: String,
    pub host_port: String,
}

impl From<&PortBinding> for PortRecord {
    fn from(b: &PortBinding) -> PortRecord {
        PortRecord {
            container_port: b.container_port.clone(),
            host_ip: b.host_ip.clone(),
            host_port: b.host_port.clone(),
        }
    }
}

impl From<&PortRecord> for PortBinding {
    fn from(r: &PortRecord) -> PortBinding {
        PortBinding {
            container_port: r.container_port.clone(),
            host_ip: r.host_ip.clone(),
            host_port: r.host_port.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub namespace: String,
    pub container_id: String,
    pub netns: std::path::PathBuf,
    pub ports: Vec<PortRecord>,
    pub endpoints: Vec<EndpointRecord>,
}

#[derive(Clone)]
pub struct NetStore {
    db: sled::Db,
    networks: sled::Tree,
    attachments: sled::Tree,
}

impl NetStore {
    pub fn open(db: &sled::Db) -> sled::Result<NetStore> {
        Ok(NetStore {
            db: db.clone(),
            networks: db.open_tree("networks")?,
            attachments: db.open_tree("net_attachments")?,
        })
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub async fn put_network(&self, namespace: &Namespace, network: &Network) -> Result<()> {
        self.networks.insert(ns_key(namespace, &network.id), network.encode_to_vec())?;
        self.flush().await
    }

    pub async fn remove_network(&self, namespace: &Namespace, id: &str) -> Result<()> {
        self.networks.remove(ns_key(namespace, id))?;
        self.flush().await
    }

    pub fn networks(&self, namespace: &Namespace) -> Result<Vec<Network>> {
        self.networks.scan_prefix(ns_prefix(namespace)).values().map(|v| Ok(Network::decode(v?.as_ref())?)).collect()
    }

    /// User networks of every namespace (bridge names and subnets are host-wide).
    pub fn all_networks(&self) -> Result<Vec<Network>> {
        self.networks.iter().values().map(|v| Ok(Network::decode(v?.as_ref())?)).collect()
    }

    pub async fn put_attachment(&self, attachment: &Attachment) -> Result<()> {
        let namespace =
            Namespace::new(&attachment.namespace).map_err(|s| Error::InvalidArgument(s.message().into()))?;
        let bytes = serde_json::to_vec(attachment).map_err(|e| Error::Network(e.to_string()))?;
        self.attachments.insert(ns_key(&namespace, &attachment.container_id), bytes)?;
        self.flush().await
    }

    pub async fn remove_attachment(&self, namespace: &str, container_id: &str) -> Result<()> {
        if let Ok(namespace) = Namespace::new(namespace) {
            self.attachments.remove(ns_key(&namespace, container_id))?;
            self.flush().await?;
        }
        Ok(())
    }

    pub fn attachment(&self, namespace: &Namespace, container_id: &str) -> Result<Option<Attachment>> {
        match self.attachments.get(ns_key(namespace, container_id))? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    /// Every attachment of every namespace; unreadable records are skipped with a warning.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let mut all = Vec::new();
        for value in self.attachments.iter().values() {
            match serde_json::from_slice::<Attachment>(&value?) {
                Ok(attachment) => all.push(attachment),
                Err(err) => tracing::warn!(error = %err, "skipping an unreadable network attachment record"),
            }
        }
        Ok(all)
    }
}
