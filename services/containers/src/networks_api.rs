//! `berth.containers.v1.Networks` on top of the network manager.

use std::sync::Arc;

use berth_common::namespace;
use berth_proto::containers::v1::networks_server::Networks;
use berth_proto::containers::v1::*;
use berth_proto::types::v1::Filter;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::network::networks;
use crate::supervisor::Supervisor;

pub struct NetworksApi {
    supervisor: Arc<Supervisor>,
}

impl NetworksApi {
    pub fn new(supervisor: Arc<Supervisor>) -> NetworksApi {
        NetworksApi { supervisor }
    }
}

const FILTERS: [&str; 5] = ["name", "id", "driver", "label", "type"];

fn matches(network: &Network, filters: &[Filter]) -> Result<bool, Error> {
    for filter in filters {
        if !FILTERS.contains(&filter.key.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "invalid filter '{}': supported filters are {}",
                filter.key,
                FILTERS.join(", ")
            )));
        }
        let hit = filter.values.iter().any(|value| match filter.key.as_str() {
            "name" => network.name.contains(value.as_str()),
            "id" => network.id.starts_with(value.as_str()),
            "driver" => network.driver == *value,
            "label" => match value.split_once('=') {
                Some((k, v)) => network.labels.get(k).is_some_and(|x| x == v),
                None => network.labels.contains_key(value),
            },
            "type" => (value == "builtin") == networks::is_builtin(network),
            _ => false,
        });
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tonic::async_trait]
impl Networks for NetworksApi {
    async fn create(&self, request: Request<CreateNetworkRequest>) -> Result<Response<CreateNetworkResponse>, Status> {
        let ns = namespace::of(&request)?;
        let manager = &self.supervisor.network;
        let network = networks::create(&manager.settings, &manager.store, &ns, request.into_inner()).await?;
        Ok(Response::new(CreateNetworkResponse { network: Some(network), warning: String::new() }))
    }

    async fn list(&self, request: Request<ListNetworksRequest>) -> Result<Response<ListNetworksResponse>, Status> {
        let ns = namespace::of(&request)?;
        let filters = request.into_inner().filters;
        let mut found = Vec::new();
        for network in self.supervisor.network.list(&ns)? {
            if matches(&network, &filters)? {
                found.push(network);
            }
        }
        Ok(Response::new(ListNetworksResponse { networks: found }))
    }

    async fn inspect(
        &self,
        request: Request<InspectNetworkRequest>,
    ) -> Result<Response<InspectNetworkResponse>, Status> {
        let ns = namespace::of(&request)?;
        let manager = &self.supervisor.network;
        let mut network = manager.find(&ns, &request.into_inner().id)?;
        network.containers = manager.endpoints(&ns, &network)?;
        Ok(Response::new(InspectNetworkResponse { network: Some(network) }))
    }

    async fn remove(&self, request: Request<RemoveNetworkRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let manager = &self.supervisor.network;
        let network = manager.find(&ns, &request.into_inner().id)?;
        manager.remove(&ns, &network).await?;
        Ok(Response::new(()))
    }

    async fn connect_container(&self, request: Request<ConnectNetworkRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let network = self.supervisor.network.find(&ns, &r.network)?;
        let container = self.supervisor.store.resolve(&ns, &r.container)?;
        let entry = self.supervisor.entry(&ns, &container);
        let _guard = entry.lock.lock().await;
        let mut container =
            self.supervisor.store.get(&ns, &container.id)?.ok_or_else(|| Error::NotFound(r.container.clone()))?;
        let wanted = EndpointSettings { aliases: r.aliases, ipam_ipv4_address: r.ipv4_address, ..Default::default() };
        self.supervisor.network.connect(&ns, &mut container, &network, wanted).await?;
        self.supervisor.store.update(&ns, &container).await?;
        Ok(Response::new(()))
    }

    async fn disconnect_container(&self, request: Request<DisconnectNetworkRequest>) -> Result<Response<()>, Status> {
        let ns = namespace::of(&request)?;
        let r = request.into_inner();
        let network = self.supervisor.network.find(&ns, &r.network)?;
        let container = self.supervisor.store.resolve(&ns, &r.container)?;
        let entry = self.supervisor.entry(&ns, &container);
        let _guard = entry.lock.lock().await;
        let mut container =
            self.supervisor.store.get(&ns, &container.id)?.ok_or_else(|| Error::NotFound(r.container.clone()))?;
        self.supervisor.network.disconnect(&ns, &mut container, &network).await?;
        self.supervisor.store.update(&ns, &container).await?;
        Ok(Response::new(()))
    }

    async fn prune(&self, request: Request<PruneNetworksRequest>) -> Result<Response<PruneNetworksResponse>, Status> {
        let ns = namespace::of(&request)?;
        let filters = request.into_inner().filters;
        let manager = &self.supervisor.network;
        let mut deleted = Vec::new();
        for network in manager.list(&ns)? {
            if networks::is_builtin(&network)
                || !matches(&network, &filters)?
                || !manager.users(&ns, &network)?.is_empty()
            {
                continue;
            }
            match manager.remove(&ns, &network).await {
                Ok(()) => deleted.push(network.name),
                Err(err) => tracing::warn!(network = %network.name, error = %err, "prune could not remove"),
            }
        }
        Ok(Response::new(PruneNetworksResponse { deleted }))
    }
}
