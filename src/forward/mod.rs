//! The upstream client: where a request goes, which headers travel, and how long to wait.
//!
//! Bodies are streamed both ways as hyper frames (trailers included), connections are pooled, and
//! HTTPS upstreams negotiate HTTP/2 by ALPN. Hop-by-hop headers (RFC 9110 §7.6.1) stop here;
//! everything else, `accept-encoding` and `x-request-id` included, passes unchanged. Silence is
//! bounded by an idle timeout that restarts with every chunk, so a live stream is never cut.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::ProxyError;

mod inline;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The configured upstream and a pooled client for it.
#[derive(Clone)]
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// Connections driven in the request's own task, for a plain-HTTP upstream.
    inline: Option<std::sync::Arc<inline::InlinePool>>,
    idle_timeout: Duration,
}

impl Upstream {
    pub fn new(
        base: &Uri,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> std::io::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let provider = rustls::crypto::ring::default_provider;
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider())
        {
            Ok(builder) => builder,
            Err(_) => {
                // No system roots (an image without CA files): only plain-HTTP upstreams work.
                let config =
                    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider()))
                        .with_safe_default_protocol_versions()
                        .map_err(std::io::Error::other)?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let tls = builder
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http1_preserve_header_case(true)
            .build(tls);
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
        else {
            return Err(std::io::Error::other("upstream must be an absolute URL"));
        };
        let inline = (scheme == http::uri::Scheme::HTTP)
            .then(|| std::sync::Arc::new(inline::InlinePool::new(&authority, connect_timeout)));
        Ok(Upstream {
            scheme,
            authority,
            prefix: base.path().trim_end_matches('/').to_owned(),
            client,
            inline,
            idle_timeout,
        })
    }

    /// The upstream URI for a client's path and query: the upstream's own path prefixed.
    pub fn target(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
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

    /// Sends a prepared request; the response body is guarded by the idle timeout.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let idle = self.idle_timeout;
        match &self.inline {
            Some(pool) if !is_upgrade(request.headers()) => {
                let response = match tokio::time::timeout(idle, pool.send(request)).await {
                    Err(_) => return Err(ProxyError::Timeout(idle)),
                    Ok(Err(e)) => return Err(ProxyError::Unreachable(describe(&e))),
                    Ok(Ok(r)) => r,
                };
                Ok(response.map(|body| Body::new(Coalesce::new(IdleTimeout::new(body, idle)))))
            }
            _ => {
                let response = self.send_raw(request).await?;
                Ok(response.map(|body| Body::new(Coalesce::new(IdleTimeout::new(body, idle)))))
            }
        }
    }

    /// Sends a prepared request and returns the upstream's response as it came (for upgrades,
    /// whose connection outlives the body).
    pub async fn send_raw(
        &self,
        request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        match tokio::time::timeout(self.idle_timeout, self.client.request(request)).await {
            Err(_) => Err(ProxyError::Timeout(self.idle_timeout)),
            Ok(Err(e)) if e.is_connect() => Err(ProxyError::Unreachable(format!(
                "connection failed{}",
                causes(&e)
            ))),
            Ok(Err(e)) => Err(ProxyError::Unreachable(format!(
                "request failed{}",
                causes(&e)
            ))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Rewrites a client's request head for the upstream.
    pub fn prepare(&self, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
        if parts.method == http::Method::CONNECT {
            return Err(ProxyError::NotForwardable);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = self.target(path)?;
        // The pool picks HTTP/1.1 or HTTP/2 per connection; the request must not insist.
        parts.version = Version::HTTP_11;
        let upgrade = is_upgrade(&parts.headers);
        remove_hop_by_hop(&mut parts.headers, upgrade);
        // Replaced in place, so header order is kept.
        if parts.headers.contains_key(header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(self.authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        Ok(())
    }
}

/// An error and its causes, without the request (it may hold credentials).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    format!("{error}{}", causes(error))
}

/// The causes of an error, each after a colon.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a request asks to switch protocols (WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers and those the `Connection` header names; an upgrade keeps
/// `Connection: upgrade` and `Upgrade`, which the next hop needs. The remaining headers keep their
/// order (removing from a `HeaderMap` in place would move others around).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let drop = |name: &HeaderName| {
        let kept_for_upgrade = upgrade && (name == header::CONNECTION || name == header::UPGRADE);
        !kept_for_upgrade && (HOP_BY_HOP.contains(&name.as_str()) || named.contains(name))
    };
    if !headers.keys().any(drop) {
        return;
    }
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        if !drop(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    if upgrade {
        kept.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
    *headers = kept;
}

pin_project_lite::pin_project! {
    /// A body that fails when no frame arrives for `timeout`.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

/// The peer went silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct IdleTimedOut(Duration);

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + *this.timeout;
                this.sleep.reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimedOut(*this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body made of chunks already in memory (a spliced request).
pub struct ChunksBody {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl ChunksBody {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        ChunksBody {
            chunks: chunks.into(),
            remaining,
        }
    }
}

impl HttpBody for ChunksBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Largest chunk `Coalesce` builds from small frames.
const COALESCE_MAX: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// Hands on, as one chunk, the data frames the upstream has already delivered, so a burst of
    /// small SSE events costs one write to the client instead of one per event. It never waits:
    /// what is there goes on at once.
    ///
    /// A failure that follows data is held back for one poll. hyper buffers a body's frames and
    /// writes them out only once the body has nothing ready, and drops that buffer when the body
    /// fails; an upstream that sends its last bytes and breaks in one read would otherwise lose
    /// those bytes (and the response head) on the way to the client.
    pub struct Coalesce<B: HttpBody> {
        #[pin]
        inner: B,
        held: Option<Result<Frame<Bytes>, B::Error>>,
        ended: bool,
        delivered: bool,
        paused: bool,
    }
}

impl<B: HttpBody<Data = Bytes>> Coalesce<B> {
    pub fn new(inner: B) -> Self {
        Coalesce {
            inner,
            held: None,
            ended: false,
            delivered: false,
            paused: false,
        }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Coalesce<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let next = match this.held.take() {
            Some(held) => held,
            None if *this.ended => return Poll::Ready(None),
            None => match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(next) => next,
                None => {
                    *this.ended = true;
                    return Poll::Ready(None);
                }
            },
        };
        let first = match next {
            Err(e) if *this.delivered && !*this.paused => {
                // Let hyper write out what it holds before it sees the failure.
                *this.paused = true;
                *this.held = Some(Err(e));
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Err(e) => return Poll::Ready(Some(Err(e))),
            Ok(frame) => match frame.into_data() {
                Ok(data) if data.len() < COALESCE_MAX => data,
                Ok(data) => {
                    *this.delivered = true;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            },
        };
        let mut batch: Option<bytes::BytesMut> = None;
        while !this.inner.is_end_stream() {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        // Sized for the whole batch at once: no reallocation as frames join.
                        let buf = batch.get_or_insert_with(|| {
                            let mut buf = bytes::BytesMut::with_capacity(COALESCE_MAX);
                            buf.extend_from_slice(&first);
                            buf
                        });
                        if buf.len() + data.len() > COALESCE_MAX {
                            *this.held = Some(Ok(Frame::data(data)));
                            break;
                        }
                        buf.extend_from_slice(&data);
                    }
                    Err(frame) => {
                        *this.held = Some(Ok(frame));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    *this.held = Some(Err(e));
                    break;
                }
                Poll::Ready(None) => {
                    *this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let data = batch.map_or(first, bytes::BytesMut::freeze);
        *this.delivered = true;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.held.is_some() {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Bytes already read from a body, then the rest of it.
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> Prefixed<B> {
    pub fn new(prefix: Bytes, rest: B) -> Self {
        Prefixed {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            rest,
        }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_stop_here() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("accept-encoding", "gzip, br".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["accept-encoding", "x-request-id"]);
    }

    #[test]
    fn an_upgrade_keeps_what_the_next_hop_needs() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert!(h["connection"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("upgrade"));
    }

    #[tokio::test]
    async fn ready_small_frames_go_on_as_one_chunk_and_large_ones_as_they_are() {
        use http_body_util::BodyExt;
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
            Ok(Frame::data(Bytes::from(vec![b'c'; COALESCE_MAX]))),
            Ok(Frame::data(Bytes::from_static(b"d"))),
        ];
        let mut body = Coalesce::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            chunks.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(chunks, vec![2, COALESCE_MAX, 1]);
    }

    #[test]
    fn a_failure_after_data_waits_one_poll_so_the_data_is_written_first() {
        let frames: Vec<Result<Frame<Bytes>, &str>> =
            vec![Ok(Frame::data(Bytes::from_static(b"a"))), Err("cut")];
        let body = Coalesce::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let mut body = std::pin::pin!(body);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = body.as_mut().poll_frame(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(f))) if f.data_ref().unwrap() == "a"));
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(Some(Err("cut")))
        ));
    }

    #[test]
    fn the_upstream_path_is_a_prefix() {
        let u = Upstream::new(
            &"http://h:1/base/".parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            u.target("/v1/responses?a=%2F").unwrap().to_string(),
            "http://h:1/base/v1/responses?a=%2F"
        );
        assert!(u.target("*").is_err());
    }
}
