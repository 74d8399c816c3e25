//! A strict fake of the OpenAI Responses API, for rethread's tests, examples and benchmarks.
//!
//! rethread repairs follow-up requests that left out items the API requires (a reasoning item
//! before its image generation call, …). To prove the repair works, the tests need an upstream
//! that rejects exactly what the real API rejects, with the exact error texts — that is this
//! crate. It also serves a few plain routes (echo, blobs, SSE, status codes) to test that
//! everything else passes through the proxy untouched.
//!
//! With [`FakeOptions::tls`] it serves HTTPS with a test CA of its own ([`TestCa`]), HTTP/2 or
//! HTTP/1.1 by ALPN, and over HTTP/2 it refuses what strict servers (nginx) refuse: a `host`
//! header beside `:authority`, connection-specific headers (400).
//!
//! Test knobs are request headers on `POST …/responses`: `x-fake-shape` (output kinds, e.g.
//! `rs,ig,msg`), `x-fake-rotate-ids: 1`, `x-fake-fail-stream: 1`, `x-fake-delay-ms: N` and
//! `x-fake-encoding: gzip|br|zstd|deflate|identity`.
//!
//! The request's `model` matters in two ways: a model that does not reason (see
//! [`model_reasons`] and [`FakeOptions::non_reasoning_models`]) returns no reasoning items and
//! refuses reasoning input and encrypted content; a model listed in
//! [`FakeOptions::azure_wording_models`] answers E1 in Azure's wording.
//!
//! With [`FakeOptions::detail_errors`] its refusals over HTTP are `{"detail": "<message>"}`, as
//! some Responses servers (the ChatGPT Codex backend) send them, instead of `{"error": {…}}`.
//! With [`FakeOptions::force_store_false`] it behaves as an upstream behind a gateway that
//! forces `store:false`: every request is taken as `store:false`.
//!
//! With [`FakeOptions::faults`] it fails at random, reproducibly from a seed, for load tests of
//! a bad day: some `POST …/responses` get a 500, some a 200 cut mid-body, some a stall first.
//!
//! `POST …/conversations` creates a server-side conversation; a response made in it (request
//! field `conversation`) is appended to it, and its items count as already sent: re-sending one
//! is E4, as for a `previous_response_id` chain (wild-failures-2026.md N7 (c)).
//!
//! WebSocket mode keeps chains of `store:false` responses per socket: such a response can be
//! named by `previous_response_id` only on the socket that produced it.

mod conversations;
mod encoding;
mod encrypted;
mod errors;
mod events;
mod faults;
mod generate;
mod goaway;
mod http2;
mod ids;
mod input;
mod kinds;
mod models;
mod passthrough;
mod query;
mod reply;
mod responses;
mod state;
mod tls;
mod turn;
mod validate;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::query::Query;
use crate::state::Shared;

pub use crate::encrypted::issue as issue_encrypted_content;
pub use crate::faults::{FaultCounts, Faults};
pub use crate::models::reasons as model_reasons;
pub use crate::tls::{Alpn, H2Faults, TestCa};
pub use tokio_rustls::TlsAcceptor;

/// Server settings.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Honour `accept-encoding` on Responses answers (default true).
    pub compress: bool,
    /// Raw bytes of a generated image before base64 (default 2048).
    pub image_bytes: usize,
    /// Exact `model` values that do not reason, besides the names [`model_reasons`] already
    /// refuses (e.g. an Azure deployment of gpt-4.1). Default empty.
    pub non_reasoning_models: Vec<String>,
    /// Exact `model` values (Azure deployments) answered with Azure's wording of E1 (E1b), which
    /// names no reasoning id. Default empty.
    pub azure_wording_models: Vec<String>,
    /// Serve HTTPS with a test CA of its own ([`FakeHandle::ca_pem`]), offering these protocols
    /// by ALPN. Default `None`: plain HTTP (HTTP/1.1, or HTTP/2 with prior knowledge).
    pub tls: Option<Alpn>,
    /// Over HTTPS with HTTP/2: GOAWAY after N streams of a connection, and `REFUSED_STREAM`
    /// resets (default: neither).
    pub h2_faults: H2Faults,
    /// Write HTTP refusals as `{"detail": "<message>"}` (the form of the ChatGPT Codex backend,
    /// shared/reference/wild-failures-2026.md §3 item 7) instead of `{"error": {…}}`; same
    /// status. WebSocket `error` frames keep their form. Default false.
    pub detail_errors: bool,
    /// Take every request as `store:false` whatever it says, as an upstream behind a gateway
    /// that forces it (shared/reference/wild-failures-2026.md N8): nothing is kept for lookups
    /// or chaining, reasoning comes with `encrypted_content`, and the response echoes
    /// `"store": false`. Default false.
    pub force_store_false: bool,
    /// Random 500s, cut answers and stalls on HTTP `POST …/responses`, for load tests (default:
    /// none). Counted by [`FakeHandle::faults_injected`].
    pub faults: Faults,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            compress: true,
            image_bytes: 2048,
            non_reasoning_models: Vec::new(),
            azure_wording_models: Vec::new(),
            tls: None,
            h2_faults: H2Faults::default(),
            detail_errors: false,
            force_store_false: false,
            faults: Faults::default(),
        }
    }
}

impl FakeOptions {
    /// Whether `model` reasons: [`model_reasons`] and not listed in `non_reasoning_models`.
    pub fn reasons(&self, model: &str) -> bool {
        model_reasons(model) && !self.non_reasoning_models.iter().any(|m| m == model)
    }

    /// Whether `model` answers E1 in Azure's wording (listed in `azure_wording_models`).
    pub fn azure_wording(&self, model: &str) -> bool {
        self.azure_wording_models.iter().any(|m| m == model)
    }
}

/// A running fake; dropping it (or calling `shutdown`) stops it.
pub struct FakeHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca: Option<Arc<TestCa>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl FakeHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The PEM of the test CA that signed its certificate, when it serves TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_deref().map(TestCa::ca_pem)
    }

    /// Number of requests received over HTTP/2.
    pub fn http2_requests(&self) -> u64 {
        self.shared.http2_requests.load(Ordering::Relaxed)
    }

    /// Number of POSTs to any `…/responses` path received.
    pub fn responses_posts(&self) -> u64 {
        self.shared.responses_posts.load(Ordering::Relaxed)
    }

    /// Number of HTTP requests received (any route).
    pub fn requests_total(&self) -> u64 {
        self.shared.requests_total.load(Ordering::Relaxed)
    }

    /// Faults of [`FakeOptions::faults`] injected so far.
    pub fn faults_injected(&self) -> FaultCounts {
        self.shared.faults.counts()
    }

    /// The `traceparent` header of every request received that carried one, in order.
    pub fn traceparents(&self) -> Vec<String> {
        self.shared.traceparents()
    }

    /// Body of the last `POST …/responses` (or WebSocket `response.create` frame).
    pub fn last_request_body(&self) -> Option<Bytes> {
        self.shared.last_body()
    }

    /// Stop accepting connections and wait (briefly) for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Bind `127.0.0.1:0` and serve in a background task (HTTPS with a new test CA when
/// `opts.tls` is set).
pub async fn spawn(opts: FakeOptions) -> std::io::Result<FakeHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let ca = match opts.tls {
        Some(_) => Some(Arc::new(TestCa::new().map_err(std::io::Error::other)?)),
        None => None,
    };
    let tls = tls_acceptor(&opts, ca.as_deref())?;
    let shared = Arc::new(Shared::new(opts));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, shared.clone(), tls, async move {
        let _ = stopped.await;
    }));
    Ok(FakeHandle {
        addr,
        shared,
        ca,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Serve on `listener` until the process ends; HTTPS with `ca`'s certificate when `opts.tls` is
/// set (`ca` is then required).
pub async fn serve(
    listener: TcpListener,
    opts: FakeOptions,
    ca: Option<&TestCa>,
) -> std::io::Result<()> {
    let tls = tls_acceptor(&opts, ca)?;
    run(
        listener,
        Arc::new(Shared::new(opts)),
        tls,
        std::future::pending(),
    )
    .await
}

fn tls_acceptor(
    opts: &FakeOptions,
    ca: Option<&TestCa>,
) -> std::io::Result<Option<tokio_rustls::TlsAcceptor>> {
    match (opts.tls, ca) {
        (None, _) => Ok(None),
        (Some(alpn), Some(ca)) => ca.acceptor(alpn).map(Some).map_err(std::io::Error::other),
        (Some(_), None) => Err(std::io::Error::other("TLS needs a test CA")),
    }
}

async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let faults = shared.opts.h2_faults;
    let app = Router::new().fallback(dispatch).with_state(shared);
    if let Some(acceptor) = tls {
        return tls::serve(listener, acceptor, app, faults, stop).await;
    }
    // Streams are written one small event at a time: without TCP_NODELAY each would wait for
    // the peer's delayed ACK, and benchmarks would measure that stall.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// All routing, by hand: the Responses and Conversations endpoints are recognised by their last
/// path segment, which axum's path patterns cannot express.
async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.requests_total.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    if let Some(traceparent) = parts.headers.get("traceparent") {
        let traceparent = String::from_utf8_lossy(traceparent.as_bytes()).into_owned();
        shared
            .traceparents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(traceparent);
    }
    if parts.version == Version::HTTP_2 {
        shared.http2_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(refusal) = http2::refusal(&parts) {
            return refusal;
        }
    }
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let query = Query::parse(parts.uri.query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    let is_get = method == Method::GET;

    if path == "/v1/echo" || path.starts_with("/v1/echo/") {
        return passthrough::echo(parts.method, parts.uri, parts.version, parts.headers, body)
            .await;
    }
    match (segs.as_slice(), is_get) {
        (["v1", "blob"], true) => return passthrough::blob(&query),
        (["v1", "sse"], true) => return passthrough::sse(&query),
        (["v1", "status", code], _) => return passthrough::status(code),
        (["v1", "headers"], true) => return passthrough::headers(),
        (["v1", "json"], _) if is_get || method == Method::POST => {
            return passthrough::json_blob(&query, body).await
        }
        (["fake", "stats"], true) => return passthrough::stats(&shared).await,
        _ => {}
    }
    if n >= 1 && segs[n - 1] == "responses" {
        if method == Method::POST {
            return responses::create(shared, parts.headers, body).await;
        }
        if is_get && ws::is_upgrade(&parts.headers) {
            return ws::upgrade(shared, parts).await;
        }
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if n >= 1 && segs[n - 1] == "conversations" {
        if method == Method::POST {
            return conversations::create(shared, parts.headers, body).await;
        }
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if n >= 2 && segs[n - 2] == "responses" {
        let id = segs[n - 1].to_string();
        return responses::by_id(shared, method, parts.headers, &id, query, false).await;
    }
    if n >= 3 && segs[n - 3] == "responses" && segs[n - 1] == "input_items" {
        let id = segs[n - 2].to_string();
        return responses::by_id(shared, method, parts.headers, &id, query, true).await;
    }
    drop(body);
    not_found()
}

fn not_found() -> Response {
    let body = Body::from(
        r#"{"error":{"message":"Unknown route.","type":"invalid_request_error","param":null,"code":null}}"#,
    );
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}
