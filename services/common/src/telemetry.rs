//! Tracing for every Berth binary: a `RUST_LOG`-style filter on stderr, plus an
//! OpenTelemetry OTLP/gRPC exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Trace
//! context travels between processes in W3C `traceparent` metadata, so one `berth run`
//! is one trace across the CLI, berthd's services and the shim.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("cannot start the telemetry runtime: {0}")]
    Runtime(std::io::Error),
}

/// Flushes and stops the exporter when dropped (or on [`Telemetry::shutdown`]).
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span, then stops. Safe to call from inside a tokio runtime.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The SDK blocks while it flushes; keep that off any async worker thread.
            let _ = std::thread::spawn(move || {
                let _ = provider.shutdown();
            })
            .join();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global tracing subscriber. `default_filter` applies when `RUST_LOG` is
/// unset (e.g. "warn" for the CLI, "info" for berthd).
pub fn init(service_name: &str, default_filter: &str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);

    let endpoint = std::env::var(OTLP_ENDPOINT_ENV).ok().filter(|e| !e.trim().is_empty());
    let Some(endpoint) = endpoint else {
        let _ = tracing_subscriber::registry().with(fmt_layer).try_init();
        return Ok(Telemetry { provider: None });
    };

    let exporter = RuntimeBackedExporter::new(&endpoint)?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_string()).build())
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer(service_name.to_string());
    // Spans are exported at INFO and above unless RUST_LOG asks for more.
    let otel_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(otel_filter);
    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init();
    Ok(Telemetry { provider: Some(provider) })
}

/// The OTLP tonic exporter needs a tokio reactor, but the SDK's batch processor exports
/// from its own plain thread. This wrapper owns a one-thread runtime and runs every export
/// on it, so exports work whether or not the caller is inside a runtime.
#[derive(Debug)]
struct RuntimeBackedExporter {
    runtime: Arc<tokio::runtime::Runtime>,
    inner: opentelemetry_otlp::SpanExporter,
}

impl RuntimeBackedExporter {
    fn new(endpoint: &str) -> Result<Self, TelemetryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-otlp")
            .enable_all()
            .build()
            .map_err(TelemetryError::Runtime)?;
        let endpoint_owned = endpoint.to_string();
        let inner = run_on(&runtime, async move {
            opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint_owned).build()
        })
        .map_err(|e| TelemetryError::Exporter { endpoint: endpoint.to_string(), message: e.to_string() })?;
        Ok(RuntimeBackedExporter { runtime: Arc::new(runtime), inner })
    }
}

/// Runs a future to completion on `runtime` from a fresh thread, which is valid whether or
/// not the calling thread is itself inside a tokio runtime.
fn run_on<F: Future + Send>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| runtime.block_on(future));
        match handle.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl SpanExporter for RuntimeBackedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        run_on(&self.runtime, self.inner.export(batch))
    }

    fn shutdown_with_timeout(&mut self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the trace context carried in incoming request headers.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_into_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}
