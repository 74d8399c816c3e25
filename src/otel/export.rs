//! OTLP/HTTP export, protobuf encoded, through rethread's own HTTP client stack (hyper and rustls
//! with ring, the system's roots) rather than a second HTTP client crate. The batch processor
//! exports from a thread of its own; each request runs on the runtime that started telemetry.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};

/// Longest an export request may take (the collector may be down: spans are dropped, never
/// waited for on the request path).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read.
const ANSWER_LIMIT: usize = 1 << 20;

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error("OTLP protocol {0:?} is not supported; rethread exports `http/protobuf` (put a collector in between for gRPC or JSON)")]
    Protocol(String),
    #[error("the system's root certificates cannot be read")]
    Roots(#[source] std::io::Error),
    #[error("traces are exported from a runtime, and none is running")]
    Runtime,
    #[error("the OTLP exporter cannot be built")]
    Build(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The span exporter the `OTEL_EXPORTER_OTLP_*` variables describe.
pub(super) fn exporter() -> Result<SpanExporter, ExportError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        match std::env::var(var) {
            Ok(p) if !p.is_empty() && p != "http/protobuf" => return Err(ExportError::Protocol(p)),
            Ok(p) if !p.is_empty() => break,
            _ => {}
        }
    }
    SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient::new()?)
        .build()
        .map_err(ExportError::Build)
}

/// An HTTP client for the exporter, on the runtime that built it.
struct OtlpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl OtlpClient {
    fn new() -> Result<Self, ExportError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(ExportError::Roots)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(OtlpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime: tokio::runtime::Handle::try_current().map_err(|_| ExportError::Runtime)?,
        })
    }
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpClient")
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let answer = tokio::time::timeout(EXPORT_TIMEOUT, async move {
                let response = client.request(request.map(Full::new)).await?;
                let (head, body) = response.into_parts();
                let body = Limited::new(body, ANSWER_LIMIT).collect().await?.to_bytes();
                Ok::<_, HttpError>(http::Response::from_parts(head, body))
            });
            answer
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))?
        });
        task.await?
    }
}
