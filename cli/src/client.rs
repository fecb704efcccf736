//! The connection to berthd, shared by every command.

use anyhow::Result;
use berth_common::client::{BerthChannel, ClientContext};
use berth_common::{Address, Namespace};
use berth_proto::events::v1::events_client::EventsClient;
use berth_proto::system::v1::system_client::SystemClient;

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

    pub fn events(&self) -> EventsClient<BerthChannel> {
        EventsClient::new(self.channel.clone())
    }
}
