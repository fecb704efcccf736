//! What a service is given when berthd hosts it: the configuration, a way to reach the
//! other services (always through their gRPC contracts, even in the same process), and a
//! shutdown signal for its background tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::Config;
use crate::client::{BerthChannel, ClientContext, ConnectError};
use crate::config::ServiceName;

#[derive(Clone)]
pub struct ServiceContext {
    pub config: Arc<Config>,
    shutdown: CancellationToken,
    channels: Arc<Mutex<HashMap<ServiceName, Channel>>>,
}

impl ServiceContext {
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> ServiceContext {
        ServiceContext { config, shutdown, channels: Arc::default() }
    }

    /// Cancelled when the daemon shuts down; background tasks stop on it.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// A lazily connected channel to `service` at its configured address. Requests must
    /// carry the caller's namespace (see [`crate::namespace::request`]).
    pub fn channel(&self, service: ServiceName) -> Result<BerthChannel, ConnectError> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = match channels.get(&service) {
            Some(channel) => channel.clone(),
            None => {
                let channel = crate::client::lazy_channel(self.config.address_of(service))?;
                channels.insert(service, channel.clone());
                channel
            }
        };
        Ok(crate::client::intercept(channel, ClientContext::default()))
    }
}
