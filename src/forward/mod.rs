//! The upstream client: where a request goes, which headers travel, and how long to wait.
//!
//! Bodies are streamed both ways as hyper frames (trailers included), connections are pooled, and
//! HTTPS upstreams negotiate HTTP/2 by ALPN. Hop-by-hop headers (RFC 9110 §7.6.1) stop here;
//! everything else, `accept-encoding` and `x-request-id` included, passes unchanged. HTTPS trusts
//! the system roots and the `upstream_ca` file beside them (`tls.rs`). Silence is
//! bounded by an idle timeout that restarts with every chunk, so a live stream is never cut.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use http::header;
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{ProxyError, Stage};

mod body;
mod chunked;
mod coalesce;
mod headers;
mod inline;
mod resend;
mod tap;
mod tls;

use body::{within_idle, Progress, Watched};
pub(crate) use body::{ChunksBody, IdleTimedOut, IdleTimeout, Prefixed};
pub(crate) use coalesce::Coalesce;
use headers::remove_header;
pub(crate) use headers::{is_upgrade, remove_hop_by_hop};
use resend::Replay;
pub(crate) use resend::REASONS as RESEND_REASONS;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The configured upstream and a pooled client for it.
#[derive(Clone)]
pub(crate) struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    /// Builds each thread's pooled client (`pooled`): HTTP/2 once the upstream chose it.
    per_thread: PerThread,
    /// Pooled HTTP/1.1 connections for protocol upgrades (ALPN `http/1.1` only).
    upgrades: Client<inline::Handoff, Body>,
    /// The pooled client's connector, for `probe`.
    connector: HttpsConnector<HttpConnector>,
    /// HTTP/1.1 connections driven in the request's own task (until the upstream picks HTTP/2).
    inline: std::sync::Arc<inline::InlinePool>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

fn pool_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .http1_preserve_header_case(true);
    builder
}

static NEXT_UPSTREAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// Each thread's pooled clients, by `PerThread::id`.
    static POOLED: std::cell::RefCell<Vec<(u64, Client<inline::Handoff, Body>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// One pooled client per thread. An HTTP/2 connection is driven by a task of the thread that
/// opened it; shared by every worker thread, each DATA frame for another thread's stream was a
/// wake-up across threads (W3 over HTTP/2: 0.91 ms CPU per stream with two workers against
/// 0.68 ms with one). So each worker keeps an HTTP/2 connection of its own, as it keeps its
/// HTTP/1.1 ones.
#[derive(Clone)]
struct PerThread {
    id: u64,
    connector: inline::Handoff,
}

impl PerThread {
    fn client(&self) -> Client<inline::Handoff, Body> {
        POOLED.with(|pooled| {
            let mut pooled = pooled.borrow_mut();
            if let Some((_, client)) = pooled.iter().find(|(id, _)| *id == self.id) {
                return client.clone();
            }
            let client = pool_builder().build(self.connector.clone());
            pooled.push((self.id, client.clone()));
            client
        })
    }
}

/// The chunked decoder of upstream bodies fed in pieces of `split` bytes: the data and how many
/// bytes followed the body's end, or why it was refused. For the fuzz target only.
#[doc(hidden)]
pub fn decode_chunked(body: &[u8], split: usize) -> Result<(Vec<u8>, usize), String> {
    chunked::decode_in_pieces(body, split)
        .map(|(data, after, _)| (data, after))
        .map_err(|e| e.to_string())
}

/// A response body as the client gets it: events of one read written together, bounded by the
/// idle timeout (which so looks at the clock once per write, not once per event).
fn guarded<B>(body: B, idle: Duration) -> Body
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    Body::new(IdleTimeout::new(Coalesce::new(body), idle))
}

/// The protocol an upstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// Plain HTTP/1.1.
    Http1,
    /// HTTP/1.1 over TLS (the upstream did not offer `h2` by ALPN).
    TlsHttp1,
    /// HTTP/2 over TLS.
    TlsHttp2,
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Negotiated::Http1 => "HTTP/1.1",
            Negotiated::TlsHttp1 => "TLS, HTTP/1.1",
            Negotiated::TlsHttp2 => "TLS, HTTP/2",
        })
    }
}

impl Upstream {
    /// A client for `base`; HTTPS trusts the system roots and, beside them, the CAs in
    /// `upstream_ca` (a PEM file).
    /// The client for the configured upstream.
    pub(crate) fn from_settings(
        settings: &crate::config::UpstreamSettings,
    ) -> std::io::Result<Self> {
        Self::new(
            &settings.url,
            settings.connect_timeout,
            settings.idle_timeout,
            settings.ca.as_deref(),
        )
    }

    pub(crate) fn new(
        base: &Uri,
        connect_timeout: Duration,
        idle_timeout: Duration,
        upstream_ca: Option<&Path>,
    ) -> std::io::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let roots = tls::roots(upstream_ca)?;
        let connector = HttpsConnector::from((
            http.clone(),
            tls::client_config(roots.clone(), tls::H2_AND_HTTP1)?,
        ));
        // HTTP/2 has no `Upgrade` (a WebSocket would need RFC 8441's extended CONNECT, which the
        // upstream may not offer): protocol switches go on HTTP/1.1 connections of their own.
        let upgrades = pool_builder().build(inline::Handoff::plain(HttpsConnector::from((
            http,
            tls::client_config(roots, tls::HTTP1_ONLY)?,
        ))));
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
        else {
            return Err(std::io::Error::other("upstream must be an absolute URL"));
        };
        let inline = std::sync::Arc::new(inline::InlinePool::new(
            connector.clone(),
            base.clone(),
            connect_timeout,
        ));
        let per_thread = PerThread {
            id: NEXT_UPSTREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            connector: inline.handoff(),
        };
        Ok(Upstream {
            scheme,
            authority,
            prefix: base.path().trim_end_matches('/').to_owned(),
            per_thread,
            upgrades,
            connector,
            inline,
            connect_timeout,
            idle_timeout,
        })
    }

    /// Connects to the upstream as a request would (same trust, same ALPN) and says which
    /// protocol was agreed on; sends no request.
    pub(crate) async fn probe(&self) -> Result<Negotiated, ProxyError> {
        let uri = self.target("/")?;
        let mut connector = self.connector.clone();
        let connecting = tower::Service::call(&mut connector, uri);
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => Err(ProxyError::Unreachable {
                stage: Stage::Connect,
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                )),
            }),
            Ok(Err(source)) => Err(ProxyError::Unreachable {
                stage: Stage::Connect,
                source,
            }),
            Ok(Ok(stream)) => Ok(match &stream {
                hyper_rustls::MaybeHttpsStream::Http(_) => Negotiated::Http1,
                hyper_rustls::MaybeHttpsStream::Https(_)
                    if stream.connected().is_negotiated_h2() =>
                {
                    Negotiated::TlsHttp2
                }
                hyper_rustls::MaybeHttpsStream::Https(_) => Negotiated::TlsHttp1,
            }),
        }
    }

    /// The upstream URI for a client's path and query: the upstream's own path prefixed.
    pub(crate) fn target(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        if !path_and_query.starts_with('/') {
            return Err(ProxyError::NotForwardable);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.prefix))
            .build()
            .map_err(|_| ProxyError::NotForwardable)
    }

    /// Sends a prepared request; the response body is guarded by the idle timeout. A request the
    /// upstream did not process is sent again (`resend.rs`) if its body was not read past
    /// `resend::KEEP_LIMIT`.
    pub(crate) async fn send(&self, request: Request<Body>) -> Result<Response<Body>, ProxyError> {
        self.send_keeping(request, resend::KEEP_LIMIT).await
    }

    /// `send` for a body the caller holds whole in memory: it can always be sent again, and
    /// keeping it costs references to the same bytes.
    pub(crate) async fn send_held(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        self.send_keeping(request, usize::MAX).await
    }

    async fn send_keeping(
        &self,
        request: Request<Body>,
        keep: usize,
    ) -> Result<Response<Body>, ProxyError> {
        let idle = self.idle_timeout;
        if !self.goes_inline(request.headers()) {
            return Ok(self
                .send_pooled(request, keep)
                .await?
                .map(|b| guarded(b, idle)));
        }
        let progress = Progress::new();
        let request = request.map(|b| Body::new(Watched::new(b, progress.clone())));
        match within_idle(self.inline.send(request), idle, &progress).await {
            None => Err(ProxyError::Timeout(idle)),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(inline::Sent::Response(response))) => Ok(response.map(|b| guarded(b, idle))),
            Some(Ok(inline::Sent::NotHttp1(request))) => Ok(self
                .send_pooled(request, keep)
                .await?
                .map(|b| guarded(b, idle))),
        }
    }

    /// Whether a request goes on an HTTP/1.1 connection of the request's own: every request but
    /// an upgrade, until the upstream has chosen HTTP/2.
    fn goes_inline(&self, headers: &http::HeaderMap) -> bool {
        self.inline.is_http1() && !is_upgrade(headers)
    }

    /// Sends a request through the pooled client, again on a new connection when the upstream
    /// proves it did not process it (at most `resend::MAX_RESENDS` times).
    async fn send_pooled(
        &self,
        request: Request<Body>,
        keep: usize,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        let (head, body) = request.into_parts();
        let (replay, mut body) = Replay::start(body, keep);
        let mut resends = 0;
        loop {
            let error = match self
                .send_raw(Request::from_parts(copy_head(&head), body))
                .await
            {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let (reason, source) = match error {
                ProxyError::Unreachable {
                    stage: Stage::Request,
                    source,
                } if resends < resend::MAX_RESENDS => match resend::unprocessed(&*source) {
                    Some(reason) => (reason, source),
                    None => {
                        return Err(ProxyError::Unreachable {
                            stage: Stage::Request,
                            source,
                        })
                    }
                },
                other => return Err(other),
            };
            body = match replay.attempt() {
                Some(next) => next,
                None => {
                    return Err(ProxyError::NotResent {
                        reason,
                        limit: replay.limit(),
                        source,
                    })
                }
            };
            resends += 1;
            metrics::counter!(crate::metrics::UPSTREAM_RESENDS, "reason" => reason).increment(1);
            tracing::debug!(
                reason,
                resends,
                "the upstream did not process the request; sending it again"
            );
        }
    }

    /// Sends a prepared request through the pooled client once and returns the upstream's
    /// response as it came (for upgrades, whose connection outlives the body).
    pub(crate) async fn send_raw(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        // Every request the pooled client sends (HTTP/2, an upgrade, or one prepared for an inline
        // connection before the upstream was found to speak HTTP/2) leaves without a `Host`:
        // HTTP/2 carries the authority in `:authority` and strict servers refuse a `host` beside
        // it (RFC 9113 §8.3.1; nginx answers 400); on HTTP/1 the pool writes `Host` from the URI.
        remove_header(request.headers_mut(), &header::HOST);
        let client = if is_upgrade(request.headers()) {
            self.upgrades.clone()
        } else {
            self.per_thread.client()
        };
        let progress = Progress::new();
        let request = request.map(|b| Body::new(Watched::new(b, progress.clone())));
        match within_idle(client.request(request), self.idle_timeout, &progress).await {
            None => Err(ProxyError::Timeout(self.idle_timeout)),
            Some(Err(e)) => Err(ProxyError::Unreachable {
                stage: if e.is_connect() {
                    Stage::Connect
                } else {
                    Stage::Request
                },
                source: Box::new(e),
            }),
            Some(Ok(r)) => Ok(r),
        }
    }

    /// Rewrites a client's request head for the upstream.
    pub(crate) fn prepare(&self, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
        if parts.method == http::Method::CONNECT {
            return Err(ProxyError::NotForwardable);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = self.target(path)?;
        // The pool picks HTTP/1.1 or HTTP/2 per connection; the request must not insist.
        parts.version = Version::HTTP_11;
        let upgrade = is_upgrade(&parts.headers);
        remove_hop_by_hop(&mut parts.headers, upgrade);
        // HTTP/1.1 on a connection of our own: the client's `Host` is replaced in place, so header
        // order is kept (`inline` writes one when the client sent none). A request for the pooled
        // client loses its `Host` in `send_raw`.
        if self.goes_inline(&parts.headers) && parts.headers.contains_key(header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(self.authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        Ok(())
    }
}

/// A copy of a request head for another attempt (extensions are not needed upstream).
pub(crate) fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_path_is_a_prefix() {
        let u = Upstream::new(
            &"http://h:1/base/".parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(
            u.target("/v1/responses?a=%2F").unwrap().to_string(),
            "http://h:1/base/v1/responses?a=%2F"
        );
        assert!(u.target("*").is_err());
    }
}
