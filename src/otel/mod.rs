//! OpenTelemetry traces: a SERVER span per request and a CLIENT span per upstream attempt, with
//! the stable HTTP conventions, the GenAI ones (`chat {model}`) and what rethread did
//! (`rethread.*`). Operators find rethread in the same trace as the client and the upstream: the
//! incoming `traceparent` is the parent, and the upstream receives rethread's CLIENT span as its
//! own.
//!
//! Off by default (`otel`). Off, `Telemetry` does not exist, every span here is an empty
//! `Option`, and headers pass through byte for byte: the request path pays one branch. Spans are
//! made with the OpenTelemetry API directly, not through `tracing`: two or three spans per request
//! with their kinds and attributes set at creation cost less than a tracing layer, and a span
//! can end with a stream's last event, long after the handler returned.

mod export;
mod names;

use std::borrow::Cow;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Response};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::capture::ResponseFacts;
pub(crate) use export::ExportError;
use names as n;

/// The tracer every span of this process comes from.
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Export over OTLP/HTTP (protobuf) where the standard `OTEL_EXPORTER_OTLP_*` variables say,
    /// in batches from a thread of its own; sampled as `OTEL_TRACES_SAMPLER` says.
    pub(crate) fn export() -> Result<Telemetry, ExportError> {
        let exporter = export::exporter()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        Ok(Telemetry::of(provider))
    }

    /// Each span handed to `exporter` as it ends (the tests' in-memory exporter).
    pub(crate) fn with_exporter(exporter: impl SpanExporter + 'static) -> Telemetry {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource())
            .build();
        Telemetry::of(provider)
    }

    fn of(provider: SdkTracerProvider) -> Telemetry {
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        Telemetry { provider, tracer }
    }

    /// The SERVER span of a request, child of the client's `traceparent` when it sent one.
    pub(crate) fn server(
        &self,
        method: &http::Method,
        route: Option<&'static str>,
        headers: &HeaderMap,
    ) -> ServerSpan {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let mut attributes = vec![KeyValue::new(
            n::HTTP_REQUEST_METHOD,
            method.as_str().to_owned(),
        )];
        let name = match route {
            Some(route) => {
                attributes.push(KeyValue::new(n::HTTP_ROUTE, route));
                format!("{method} {route}")
            }
            None => method.as_str().to_owned(),
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        ServerSpan(Some(Open {
            tracer: self.tracer.clone(),
            cx: parent.with_span(span),
        }))
    }

    /// Sends what is buffered, within `timeout` (at shutdown).
    pub(crate) fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "traces: the last spans could not be exported");
        }
    }
}

/// The process's resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as every SDK
/// reads them; the service is `rethread` unless they name another.
fn resource() -> Resource {
    let builder = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = if named {
        builder
    } else {
        builder.with_service_name(env!("CARGO_PKG_NAME"))
    };
    builder
        .with_attribute(KeyValue::new(n::SERVICE_VERSION, env!("CARGO_PKG_VERSION")))
        .build()
}

/// A span's tracer and context (the span inside).
#[derive(Clone)]
struct Open {
    tracer: SdkTracer,
    cx: Context,
}

/// The SERVER span of one request (empty when traces are off). It ends when dropped: the
/// handler hands it to the response body, so it ends with the body's last byte.
#[derive(Default)]
pub(crate) struct ServerSpan(Option<Open>);

impl ServerSpan {
    /// Where the request's CLIENT spans hang (a WebSocket's turns outlive the upgrade's span).
    pub(crate) fn parent(&self) -> Parent {
        Parent(self.0.clone())
    }

    /// The trace's id, for the request's log line (when traces are on).
    pub(crate) fn trace_id(&self) -> Option<String> {
        let open = self.0.as_ref()?;
        Some(open.cx.span().span_context().trace_id().to_string())
    }

    /// The response's status; a 5xx (or rethread's own error `code`) is an error.
    pub(crate) fn respond(&self, status: u16, error_code: Option<&'static str>) {
        let Some(open) = &self.0 else { return };
        let span = open.cx.span();
        span.set_attribute(KeyValue::new(
            n::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
        let error = match error_code {
            Some(code) => Some(code.to_owned()),
            None if status >= 500 => Some(status.to_string()),
            None => None,
        };
        if let Some(error) = error {
            span.set_attribute(KeyValue::new(n::ERROR_TYPE, error));
            span.set_status(Status::error(""));
        }
    }

    /// What rethread did to the request (`rethread.*`).
    pub(crate) fn repaired(&self, done: &Repaired<'_>) {
        if let Some(open) = &self.0 {
            done.record(&open.cx);
        }
    }
}

impl Repaired<'_> {
    fn record(&self, cx: &Context) {
        let (span, done) = (cx.span(), self);
        span.set_attribute(KeyValue::new(n::RETHREAD_MEMORY, done.memory));
        if let Some(rules) = done.rules {
            span.set_attribute(KeyValue::new(n::RETHREAD_REPAIRS, rules.to_owned()));
            span.set_attribute(KeyValue::new(n::RETHREAD_INSERTED, done.inserted as i64));
        }
        if let Some(reason) = done.reverted {
            span.set_attribute(KeyValue::new(n::RETHREAD_REVERTED, reason));
        }
        if let Some(reason) = done.unchanged {
            span.set_attribute(KeyValue::new(n::RETHREAD_UNCHANGED, reason));
        }
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.cx.span().end();
        }
    }
}

/// What a request's `Attempt` did, for the SERVER span.
pub(crate) struct Repaired<'a> {
    /// `hit` (memory held turns the request names), `none` (it held none), `unavailable` (the
    /// store did not answer), `not_asked` (nothing to ask for).
    pub(crate) memory: &'static str,
    pub(crate) rules: Option<&'a str>,
    pub(crate) inserted: usize,
    pub(crate) reverted: Option<&'static str>,
    /// Why a request naming remembered items was left unchanged.
    pub(crate) unchanged: Option<&'static str>,
}

/// Where CLIENT spans hang: a request's SERVER span (empty when traces are off).
#[derive(Clone, Default)]
pub(crate) struct Parent(Option<Open>);

impl Parent {
    /// Whether spans hang here (traces are on).
    pub(crate) fn is_open(&self) -> bool {
        self.0.is_some()
    }

    /// The CLIENT span of one Responses call, `chat {model}` with the GenAI attributes.
    /// `resend`: attempts of the same request before this one (a cold fallback, a rewrite a
    /// refusal asked for, the client's own request after a refusal).
    pub(crate) fn responses(
        &self,
        upstream: &http::Uri,
        model: Option<&str>,
        resend: u32,
    ) -> ClientSpan {
        let Some(open) = &self.0 else {
            return ClientSpan(None);
        };
        let mut attributes = http_client(&http::Method::POST, upstream);
        if resend > 0 {
            attributes.push(KeyValue::new(
                n::HTTP_REQUEST_RESEND_COUNT,
                i64::from(resend),
            ));
        }
        attributes.extend([
            KeyValue::new(n::GEN_AI_OPERATION_NAME, "chat"),
            KeyValue::new(n::GEN_AI_PROVIDER_NAME, "openai"),
        ]);
        let name = match model {
            Some(model) => {
                attributes.push(KeyValue::new(n::GEN_AI_REQUEST_MODEL, model.to_owned()));
                format!("chat {model}")
            }
            None => "chat".to_owned(),
        };
        open.client(name, attributes)
    }

    /// The CLIENT span of a request forwarded as it came (named after its method).
    pub(crate) fn forward(&self, method: &http::Method, upstream: &http::Uri) -> ClientSpan {
        match &self.0 {
            Some(open) => open.client(method.as_str().to_owned(), http_client(method, upstream)),
            None => ClientSpan(None),
        }
    }
}

impl Open {
    fn client(&self, name: String, attributes: Vec<KeyValue>) -> ClientSpan {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        ClientSpan(Some(Client {
            cx: self.cx.with_span(span),
            error: None,
        }))
    }
}

/// The HTTP client attributes set at a CLIENT span's start (samplers may read them).
fn http_client(method: &http::Method, upstream: &http::Uri) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new(n::HTTP_REQUEST_METHOD, method.as_str().to_owned()),
        KeyValue::new(n::SERVER_ADDRESS, upstream.host().unwrap_or("").to_owned()),
    ];
    let port = upstream.port_u16().or(match upstream.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    });
    if let Some(port) = port {
        attributes.push(KeyValue::new(n::SERVER_PORT, i64::from(port)));
    }
    attributes
}

/// One upstream attempt's CLIENT span (empty when traces are off). It ends when dropped: with
/// the response's last event when capture holds it.
#[derive(Default)]
pub(crate) struct ClientSpan(Option<Client>);

struct Client {
    cx: Context,
    /// `error.type`, written once as the span ends: the status, unless a refusal's kind was
    /// read from the body (or a WebSocket `error` event) after it.
    error: Option<Cow<'static, str>>,
}

impl ClientSpan {
    /// Puts this span in the upstream request's `traceparent` (and `tracestate`), in place of
    /// the client's: the upstream's span is then rethread's child, not its sibling.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        if let Some(client) = &self.0 {
            TraceContextPropagator::new().inject_context(&client.cx, &mut HeadersMut(headers));
        }
    }

    /// The upstream's status; 4xx and 5xx are errors.
    pub(crate) fn status(&mut self, status: u16) {
        let Some(client) = &mut self.0 else { return };
        let span = client.cx.span();
        span.set_attribute(KeyValue::new(
            n::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
        if status >= 400 {
            span.set_status(Status::error(""));
            client.error = Some(status.to_string().into());
        }
    }

    /// What rethread did to the request (`rethread.*`), on the attempt that went through.
    pub(crate) fn repaired(&self, done: &Repaired<'_>) {
        if let Some(client) = &self.0 {
            done.record(&client.cx);
        }
    }

    /// The upstream refused what this attempt sent (the refusal's kind as `error.type`).
    pub(crate) fn refused(&mut self, refusal: &'static str) {
        let Some(client) = &mut self.0 else { return };
        client.cx.span().set_status(Status::error(""));
        client.error = Some(refusal.into());
    }

    /// Whether this span records anything (traces are on): capture then reads what the answer
    /// says of itself for it.
    pub(crate) fn is_open(&self) -> bool {
        self.0.is_some()
    }

    /// What the answer said of itself: its id, model and token usage.
    pub(crate) fn answered(&self, facts: Option<&ResponseFacts>) {
        let (Some(client), Some(facts)) = (&self.0, facts) else {
            return;
        };
        let span = client.cx.span();
        if let Some(id) = &facts.id {
            span.set_attribute(KeyValue::new(n::GEN_AI_RESPONSE_ID, id.to_string()));
        }
        if let Some(model) = &facts.model {
            span.set_attribute(KeyValue::new(n::GEN_AI_RESPONSE_MODEL, model.to_string()));
        }
        let Some(usage) = facts.usage else { return };
        let counts = [
            (n::GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
            (n::GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
            (
                n::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                usage.cached_input_tokens,
            ),
            (
                n::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
                usage.reasoning_tokens,
            ),
        ];
        for (name, count) in counts {
            if let Some(count) = count {
                span.set_attribute(KeyValue::new(name, count as i64));
            }
        }
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if let Some(client) = &mut self.0 {
            let span = client.cx.span();
            if let Some(error) = client.error.take() {
                span.set_attribute(KeyValue::new(n::ERROR_TYPE, error));
            }
            span.end();
        }
    }
}

/// Request headers read by the propagator.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Upstream request headers written by the propagator.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

impl ServerSpan {
    /// `response` with a body that holds this span until its last byte (or until the client
    /// leaves): the span then ends.
    pub(crate) fn hold(self, response: Response<Body>) -> Response<Body> {
        let open = self.0.is_some();
        held(response, self, open)
    }
}

impl ClientSpan {
    /// `response` with a body that holds this span until its last byte.
    pub(crate) fn hold(self, response: Response<Body>) -> Response<Body> {
        let open = self.0.is_some();
        held(response, self, open)
    }
}

/// `response` with its body holding `span` (unchanged when the span is empty: traces off).
fn held<S: Unpin + Send + 'static>(
    response: Response<Body>,
    span: S,
    open: bool,
) -> Response<Body> {
    if !open {
        return response;
    }
    response.map(|body| Body::new(Holding { body, _span: span }))
}

/// A body and a span that ends when the body is done with.
struct Holding<S> {
    body: Body,
    _span: S,
}

impl<S: Unpin> http_body::Body for Holding<S> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
