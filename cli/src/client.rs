//! The connection to berthd, shared by every command.

use anyhow::Result;
use berth_common::client::{BerthChannel, ClientContext};
use berth_common::{Address, Namespace};
use berth_proto::containers::v1::containers_client::ContainersClient;
use berth_proto::containers::v1::networks_client::NetworksClient;
use berth_proto::containers::v1::volumes_client::VolumesClient;
use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::images::v1::images_client::ImagesClient;
use berth_proto::system::v1::system_client::SystemClient;
use berth_proto::tasks::v1::tasks_client::TasksClient;

#[derive(Clone)]
pub struct Connection {
    channel: BerthChannel,
}

impl Connection {
    pub async fn open(host: &Address, namespace: &str) -> Result<Connection> {
        let namespace = Namespace::new(namespace).map_err(|status| anyhow::anyhow!(status.message().to_string()))?;
        let channel = berth_common::client::connect(host).await?;
        Ok(Connection { channel: berth_common::client::intercept(channel, ClientContext::with_namespace(&namespace)) })
    }

    pub fn system(&self) -> SystemClient<BerthChannel> {
        SystemClient::new(self.channel.clone())
    }

    pub fn containers(&self) -> ContainersClient<BerthChannel> {
        ContainersClient::new(self.channel.clone())
    }

    pub fn networks(&self) -> NetworksClient<BerthChannel> {
        NetworksClient::new(self.channel.clone())
    }

    pub fn volumes(&self) -> VolumesClient<BerthChannel> {
        VolumesClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> TasksClient<BerthChannel> {
        TasksClient::new(self.channel.clone())
    }

    pub fn images(&self) -> ImagesClient<BerthChannel> {
        // Inspect answers carry the raw config; allow large ones.
        ImagesClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn events(&self) -> EventsClient<BerthChannel> {
        EventsClient::new(self.channel.clone())
    }
}
