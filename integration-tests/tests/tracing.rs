//! With OTEL_EXPORTER_OTLP_ENDPOINT set, one `berth info` produces spans from the CLI and
//! from berthd that belong to one trace. A tiny OTLP/gRPC receiver on loopback collects them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_integration_tests::{Daemon, DaemonOptions, registry::free_port};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// trace id -> service names that sent spans in it
type Seen = Arc<Mutex<HashMap<Vec<u8>, HashSet<String>>>>;

struct Receiver(Seen);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    seen.entry(span.trace_id).or_default().insert(service.clone());
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[test]
fn one_info_is_one_trace_across_cli_and_daemon() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seen: Seen = Arc::default();
    let port = free_port();
    let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).unwrap();
    let receiver = Receiver(seen.clone());
    runtime.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let endpoint = format!("http://127.0.0.1:{port}");

    let daemon = Daemon::start_with(DaemonOptions {
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone())],
        ..Default::default()
    });
    let out = std::process::Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "info"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .output()
        .expect("running berth");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The daemon exports in batches (every few seconds); the CLI flushes before exiting.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shared =
            seen.lock().unwrap().values().any(|services| services.contains("berth") && services.contains("berthd"));
        if shared {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no trace with spans from both berth and berthd: {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(daemon);
}
