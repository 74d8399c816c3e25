//! Traces (issue 26): the span tree, attributes and parents rethread exports, read from the SDK's
//! in-memory exporter around an in-process rethread; the `traceparent` the upstream receives;
//! export over OTLP/HTTP to a receiver the test runs; and nothing of it when traces are off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::Value as OtelValue;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use prost::Message as _;
use rethread::config::{Settings, SettingsArgs};
use serde_json::{json, Value};

use crate::common::*;

/// The client's trace: rethread's SERVER span must be its child.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// An in-process rethread whose spans land in memory.
struct Traced {
    addr: SocketAddr,
    spans: InMemorySpanExporter,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Traced {
    async fn start(upstream: &str) -> Traced {
        let args = SettingsArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            upstream: Some(upstream.to_owned()),
            workers: Some(1),
            ..SettingsArgs::default()
        };
        let settings = Settings::load(args).unwrap();
        let spans = InMemorySpanExporter::default();
        let server = rethread::server::bind_with_exporter(settings, spans.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Traced {
            addr,
            spans,
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The finished spans, once there are `n` (spans end with their bodies, just after the
    /// client read them).
    async fn spans(&self, n: usize) -> Vec<SpanData> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let spans = self.spans.get_finished_spans().unwrap();
            if spans.len() >= n || Instant::now() > deadline {
                assert_eq!(spans.len(), n, "{:#?}", names(&spans));
                for span in &spans {
                    let mut keys: Vec<&str> =
                        span.attributes.iter().map(|kv| kv.key.as_str()).collect();
                    keys.sort_unstable();
                    let before = keys.len();
                    keys.dedup();
                    assert_eq!(
                        keys.len(),
                        before,
                        "an attribute set twice on {}: {:?}",
                        span.name,
                        span.attributes
                    );
                }
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

/// A span's attributes by name.
fn attrs(span: &SpanData) -> HashMap<String, OtelValue> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.clone()))
        .collect()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    attrs(span).get(key).map(|v| v.to_string())
}

/// Asserts that `span` has attribute `key` with this value.
fn has(span: &SpanData, key: &str, value: &str) {
    assert_eq!(
        attr(span, key).as_deref(),
        Some(value),
        "{key} of {}",
        span.name
    );
}

fn one(spans: &[SpanData], kind: SpanKind) -> &SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.span_kind == kind).collect();
    assert_eq!(found.len(), 1, "{:#?}", names(spans));
    found[0]
}

fn clients(spans: &[SpanData]) -> Vec<&SpanData> {
    let mut found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    found.sort_by_key(|s| s.start_time);
    found
}

/// The `traceparent` a span puts on the wire.
fn traceparent_of(span: &SpanData) -> String {
    format!(
        "00-{}-{}-01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    )
}

/// The first turn, straight to the fake; the follow-up that needs its reasoning item back.
async fn first_turn(fake: &FakeHandle) -> Value {
    let first = post(&direct_url(fake), KEY, &image_request(), &[]).await;
    image_followup(&output_id(&first.body, "image_generation_call"))
}

fn traced_post(headers: &str) -> [(&'static str, &str); 1] {
    [("traceparent", headers)]
}

/// The first turn through rethread (so memory holds it), then its follow-up: the spans of the
/// follow-up's trace, its SERVER span first.
async fn remembered_followup(
    proxy: &Traced,
    followup: &Value,
    headers: &[(&str, &str)],
) -> (Answer, SpanData, SpanData) {
    let first = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let mut followup = followup.clone();
    followup["input"][1]["id"] = json!(output_id(&first.body, "image_generation_call"));
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, headers).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let spans = proxy.spans(4).await;
    let server = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .max_by_key(|s| s.start_time)
        .unwrap()
        .clone();
    let client = spans
        .iter()
        .find(|s| s.parent_span_id == server.span_context.span_id())
        .unwrap()
        .clone();
    (answer, server, client)
}

#[tokio::test]
async fn a_repaired_request_is_a_server_span_over_a_chat_client_span_the_upstream_continues() {
    let fake = fake().await;
    let proxy = Traced::start(&fake.url()).await;
    let parent = client_traceparent();
    let followup = image_followup("set below");
    let (answer, server, client) =
        remembered_followup(&proxy, &followup, &traced_post(&parent)).await;
    let (server, client) = (&server, &client);
    assert_eq!(server.name, "POST …/responses");
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex(CLIENT_TRACE).unwrap()
    );
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex(CLIENT_SPAN).unwrap()
    );
    has(server, "http.request.method", "POST");
    has(server, "http.route", "…/responses");
    has(server, "http.response.status_code", "200");
    // The span says what the headers say.
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        attr(server, "rethread.repairs"),
        header("x-rethread-repairs")
    );
    assert_eq!(
        attr(server, "rethread.inserted"),
        header("x-rethread-inserted")
    );
    assert!(header("x-rethread-repairs").is_some());
    has(server, "rethread.memory", "hit");

    assert_eq!(client.name, "chat gpt-5");
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(
        client.span_context.trace_id(),
        server.span_context.trace_id()
    );
    let expected = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-5"),
        ("gen_ai.response.model", "gpt-5"),
        ("http.response.status_code", "200"),
    ];
    for (key, value) in expected {
        assert_eq!(attr(client, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(
        attr(client, "gen_ai.response.id").as_deref(),
        answer.body["id"].as_str()
    );
    let usage = &answer.body["usage"];
    assert_eq!(
        attr(client, "gen_ai.usage.input_tokens"),
        Some(usage["input_tokens"].to_string())
    );
    assert_eq!(
        attr(client, "gen_ai.usage.output_tokens"),
        Some(usage["output_tokens"].to_string())
    );
    assert!(attr(client, "http.request.resend_count").is_none());
    assert_eq!(
        attr(client, "rethread.repairs"),
        header("x-rethread-repairs")
    );
    assert!(!attrs(server)
        .keys()
        .any(|k| k.contains("input") && k.starts_with("gen_ai.input")));

    // The upstream's span is rethread's child, not the client's sibling.
    assert_eq!(fake.traceparents().last(), Some(&traceparent_of(client)));
}

#[tokio::test]
async fn a_streamed_answer_ends_its_client_span_with_the_usage_of_its_last_event() {
    let fake = fake().await;
    let proxy = Traced::start(&fake.url()).await;
    let mut streamed = image_followup("set below");
    streamed["stream"] = json!(true);
    let (answer, server, client) = remembered_followup(&proxy, &streamed, &[]).await;
    let (server, client) = (&server, &client);
    assert!(answer.text.contains("response.completed"));
    // No traceparent from the client: rethread's SERVER span starts the trace.
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    let completed: Value = answer
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|e| e["type"] == "response.completed")
        .unwrap();
    let usage = &completed["response"]["usage"];
    for (key, field) in [
        ("gen_ai.usage.input_tokens", &usage["input_tokens"]),
        ("gen_ai.usage.output_tokens", &usage["output_tokens"]),
        (
            "gen_ai.usage.reasoning.output_tokens",
            &usage["output_tokens_details"]["reasoning_tokens"],
        ),
        (
            "gen_ai.usage.cache_read.input_tokens",
            &usage["input_tokens_details"]["cached_tokens"],
        ),
    ] {
        assert_eq!(attr(client, key), Some(field.to_string()), "{key}");
    }
    assert_eq!(
        attr(client, "gen_ai.response.id").as_deref(),
        completed["response"]["id"].as_str()
    );
    // The client span ended with the stream, after the server span's head was answered.
    assert!(client.end_time >= client.start_time);
}

#[tokio::test]
async fn a_cold_fallback_is_two_client_spans_the_second_a_resend() {
    // Memory never saw the first turn: the upstream's E1 names the reasoning item and rethread
    // sends again with it.
    let fake = fake().await;
    let followup = first_turn(&fake).await;
    let proxy = Traced::start(&fake.url()).await;
    let answer = post(&proxy.url("/v1/responses"), KEY, &followup, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let spans = proxy.spans(3).await;
    let server = one(&spans, SpanKind::Server);
    let attempts = clients(&spans);
    assert_eq!(attempts.len(), 2);
    for attempt in &attempts {
        assert_eq!(attempt.name, "chat gpt-5");
        assert_eq!(attempt.parent_span_id, server.span_context.span_id());
    }
    has(attempts[0], "http.response.status_code", "400");
    has(attempts[0], "error.type", "missing_reasoning");
    assert!(matches!(attempts[0].status, Status::Error { .. }));
    assert!(attr(attempts[0], "http.request.resend_count").is_none());
    has(attempts[1], "http.request.resend_count", "1");
    has(attempts[1], "http.response.status_code", "200");
    has(server, "rethread.repairs", "insert=1");
    // Each attempt went upstream under its own span.
    let sent = fake.traceparents();
    assert_eq!(
        sent[sent.len() - 2..],
        [traceparent_of(attempts[0]), traceparent_of(attempts[1])]
    );
}

#[tokio::test]
async fn a_revert_is_a_resend_and_the_server_span_names_its_reason() {
    // A deployment that refuses encrypted reasoning: rethread's `include` is refused, and the
    // client's own request goes once.
    let fake = strict_fake().await;
    let proxy = Traced::start(&fake.url()).await;
    let body = json!({"model": DEPLOYMENT, "store": false, "input": "hi"});
    let answer = post(&proxy.url("/v1/responses"), KEY, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let spans = proxy.spans(3).await;
    let server = one(&spans, SpanKind::Server);
    let attempts = clients(&spans);
    has(server, "rethread.reverted", "encrypted_unsupported");
    assert!(attr(server, "rethread.repairs").is_none());
    has(attempts[0], "error.type", "encrypted_unsupported");
    has(attempts[1], "http.request.resend_count", "1");
    has(attempts[1], "rethread.reverted", "encrypted_unsupported");
    assert_eq!(attempts[1].name, format!("chat {DEPLOYMENT}"));
}

#[tokio::test]
async fn each_websocket_turn_is_a_client_span_under_the_upgrade() {
    let fake = fake().await;
    let followup = first_turn(&fake).await;
    let proxy = Traced::start(&fake.url()).await;
    let mut socket = ws_connect(&format!("ws://{}/v1/responses", proxy.addr), KEY).await;
    let events = ws_create(&mut socket, followup).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{events:?}"
    );
    let events = ws_create(&mut socket, image_request()).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "response.completed",
        "{events:?}"
    );

    // The upgrade: a SERVER span and the CLIENT span of the upgrade request; then a cold
    // fallback's two attempts and a second turn's one.
    let spans = proxy.spans(5).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(server.name, "GET …/responses");
    has(server, "http.response.status_code", "101");
    let chats: Vec<&SpanData> = clients(&spans)
        .into_iter()
        .filter(|s| s.name.starts_with("chat"))
        .collect();
    assert_eq!(chats.len(), 3, "{:#?}", names(&spans));
    for chat in &chats {
        assert_eq!(chat.parent_span_id, server.span_context.span_id());
        assert_eq!(chat.name, "chat gpt-5");
    }
    has(chats[0], "error.type", "missing_reasoning");
    has(chats[1], "http.request.resend_count", "1");
    has(chats[1], "rethread.repairs", "insert=1");
    assert!(attr(chats[1], "gen_ai.usage.output_tokens").is_some());
    assert!(attr(chats[2], "gen_ai.response.id").is_some());
}

#[tokio::test]
async fn with_traces_off_the_clients_traceparent_reaches_the_upstream_byte_for_byte() {
    let fake = fake().await;
    let proxy = Rethread::start(&fake.url(), &[]);
    let parent = client_traceparent();
    let answer = post(
        &proxy.url("/v1/responses"),
        KEY,
        &image_request(),
        &traced_post(&parent),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(fake.traceparents(), [parent]);
}

/// Every OTLP/HTTP request a collector would receive.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, bytes::Bytes)>>>);

impl Receiver {
    async fn start(&self) -> SocketAddr {
        let received = self.0.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
                let received = received.clone();
                async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    received.lock().unwrap().push((kind, body));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}

#[tokio::test]
async fn traces_reach_an_otlp_http_receiver_as_protobuf() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let receiver = Receiver::default();
    let collector = receiver.start().await;
    let fake = fake().await;
    let endpoint = format!("http://{collector}");
    let proxy = Rethread::start_env(
        &fake.url(),
        &["--otel", "true"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "rethread-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let answer = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let requests = receiver.0.lock().unwrap().clone();
        let mut spans = Vec::new();
        for (kind, body) in &requests {
            assert_eq!(kind, "application/x-protobuf");
            let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| format!("{:?}", v.value));
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        let trace: String =
                            span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        spans.push((service.clone(), span.name, trace));
                    }
                }
            }
        }
        if spans.len() >= 2 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = spans.iter().map(|(_, name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"POST …/responses"),
        "{spans:?}\n{}",
        proxy.logs()
    );
    assert!(names.contains(&"chat gpt-5"), "{spans:?}");
    assert!(spans.iter().all(|(service, _, _)| service
        .as_deref()
        .is_some_and(|s| s.contains("rethread-under-test"))));
    // The request's log line names its trace.
    let (_, _, trace) = &spans[0];
    proxy.wait_for_log(trace);
}

#[tokio::test]
async fn a_collector_that_is_down_is_logged_and_costs_no_request() {
    // Nothing listens there: every export fails, and requests go on as if traces were off.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let fake = fake().await;
    let proxy = Rethread::start_env(
        &fake.url(),
        &["--otel", "true"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    for _ in 0..3 {
        let answer = post(&proxy.url("/v1/responses"), KEY, &image_request(), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    proxy.wait_for_log("BatchSpanProcessor.ExportError");
}
