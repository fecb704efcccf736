//! Connecting to a Berth API over a unix socket or TCP. Every client carries the trace
//! context of the current span, and a namespace when one is configured.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::{Address, Namespace};

/// A channel with Berth's client interceptor; use it with the generated clients'
/// `with_interceptor` or via [`Connection::client`].
pub type BerthChannel = InterceptedService<Channel, ClientContext>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Cannot connect to berthd at {address} — is it running? ({reason})")]
    Unreachable { address: Address, reason: String },
    #[error("invalid endpoint {address}: {reason}")]
    Invalid { address: Address, reason: String },
}

/// Adds trace context, and the namespace unless the request already carries one.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    namespace: Option<MetadataValue<Ascii>>,
}

impl ClientContext {
    pub fn with_namespace(namespace: &Namespace) -> ClientContext {
        ClientContext { namespace: MetadataValue::try_from(namespace.as_str()).ok() }
    }
}

impl Interceptor for ClientContext {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject_into_metadata(request.metadata_mut());
        if let Some(namespace) = &self.namespace
            && !request.metadata().contains_key(berth_proto::NAMESPACE_METADATA_KEY)
        {
            request.metadata_mut().insert(berth_proto::NAMESPACE_METADATA_KEY, namespace.clone());
        }
        Ok(request)
    }
}

fn endpoint(address: &Address) -> Result<Endpoint, ConnectError> {
    let uri = match address {
        // The authority is unused for unix sockets, but HTTP/2 needs one.
        Address::Unix(_) => "http://berth.sock".to_string(),
        Address::Tcp(host_port) => format!("http://{host_port}"),
    };
    Endpoint::from_shared(uri)
        .map(|e| e.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true))
        .map_err(|e| ConnectError::Invalid { address: address.clone(), reason: e.to_string() })
}

/// Connects to a unix socket; HTTP/2 runs over the stream as over TCP.
fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

/// A channel that connects on first use and reconnects after failures. Services use it to
/// reach each other, so start-up order does not matter.
pub fn lazy_channel(address: &Address) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(address)?;
    Ok(match address {
        Address::Unix(path) => endpoint.connect_with_connector_lazy(unix_connector(path.clone())),
        Address::Tcp(_) => endpoint.connect_lazy(),
    })
}

/// Connects now, failing with a friendly message when nothing listens.
pub async fn connect(address: &Address) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(address)?;
    let unreachable = |e: tonic::transport::Error| {
        let reason = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
        ConnectError::Unreachable { address: address.clone(), reason }
    };
    match address {
        Address::Unix(path) => endpoint.connect_with_connector(unix_connector(path.clone())).await.map_err(unreachable),
        Address::Tcp(_) => endpoint.connect().await.map_err(unreachable),
    }
}

/// Wraps a channel with Berth's interceptor.
pub fn intercept(channel: Channel, context: ClientContext) -> BerthChannel {
    InterceptedService::new(channel, context)
}
