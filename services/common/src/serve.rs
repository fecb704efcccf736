//! Serving Berth APIs: binding unix sockets (mode 0660, stale sockets removed) and TCP
//! ports, and the request-context layer every server runs (namespace + trace context).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::{TcpListener, UnixListener};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::Address;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another process is already serving on {0}; stop it or choose another address")]
    InUse(Address),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: Address, source: std::io::Error },
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Binds `address`. For a unix socket: creates the parent directory, removes a stale
/// socket file (one nobody answers on), refuses one that is live, and sets mode 0660 with
/// group `socket_group` when that group exists.
pub async fn bind(address: &Address, socket_group: &str) -> Result<Listener, ServeError> {
    let bind_error = |source| ServeError::Bind { address: address.clone(), source };
    match address {
        Address::Unix(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(bind_error)?;
            }
            if path.exists() {
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(ServeError::InUse(address.clone()));
                }
                std::fs::remove_file(path).map_err(bind_error)?;
            }
            let listener = UnixListener::bind(path).map_err(bind_error)?;
            restrict_socket(path, socket_group).map_err(bind_error)?;
            Ok(Listener::Unix(listener))
        }
        Address::Tcp(host_port) => {
            let listener = TcpListener::bind(host_port).await.map_err(|source| {
                if source.kind() == std::io::ErrorKind::AddrInUse {
                    ServeError::InUse(address.clone())
                } else {
                    bind_error(source)
                }
            })?;
            Ok(Listener::Tcp(listener))
        }
    }
}

fn restrict_socket(path: &Path, socket_group: &str) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if !socket_group.is_empty()
        && let Ok(Some(group)) = nix::unistd::Group::from_name(socket_group)
    {
        nix::unistd::chown(path, None, Some(group.gid)).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Serves `routes` on `listener` until `shutdown` resolves, with the request-context
/// layer applied.
pub async fn serve(
    listener: Listener,
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let server = tonic::transport::Server::builder().layer(RequestContextLayer).add_routes(routes);
    match listener {
        Listener::Unix(listener) => {
            server
                .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
                .await
        }
        Listener::Tcp(listener) => {
            server
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
                .await
        }
    }
}

/// Server layer run in front of every service: validates the `berth-namespace` metadata
/// (answering InvalidArgument for a bad one), stores the [`crate::Namespace`] in the
/// request extensions, and runs the handler in a span that continues the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContextLayer;

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for RequestContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let namespace = match crate::namespace::from_headers(request.headers()) {
            Ok(namespace) => namespace,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %request.uri().path(),
            rpc.system = "grpc",
            namespace = %namespace,
        );
        crate::telemetry::adopt_remote_parent(&span, request.headers());
        request.extensions_mut().insert(namespace);
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await }.instrument(span))
    }
}
