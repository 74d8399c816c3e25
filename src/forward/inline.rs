//! HTTP/1.1 upstream connections (plain or TLS) driven by the task that reads the response.
//!
//! hyper-util's pooled client runs each connection in a task of its own and hands the response body
//! over a one-chunk channel, so every SSE event costs a wake-up of another task (often on the other
//! core) and a write of its own to the client. Here the connection travels with the response body
//! and is polled by whoever polls the body: reading the upstream and writing the client happen in
//! one poll, and `Coalesce` turns the events of one upstream read into one write, as nginx does.
//! hyper's own body channel is skipped too where it can be: a body framed by length or chunks is
//! read by the connection's `Tap` (`tap.rs`), one frame per read. TLS connections offer `h2` and
//! `http/1.1` by ALPN, as the pooled client does; once an upstream picks `h2`, requests go to the
//! pooled client (HTTP/2 multiplexes one shared connection, which cannot travel with one response),
//! and the connection that learned it is handed to that client (`Handoff`) rather than wasted.
//! Protocol upgrades stay pooled too.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};

use super::tap::{says_close, Framing, Sending, Shared, Stream, Tap};
use crate::error::BoxError;

type Connection = http1::Connection<Tap, Sending>;

/// How long an unused connection is kept for the next request.
const KEEP_IDLE: Duration = Duration::from_secs(90);
/// Most unused connections kept; beyond this a finished connection is closed.
const MAX_IDLE: usize = 1024;
/// Largest read buffer of an upstream connection. hyper's default (~408 KiB) lets a buffer grow
/// whenever the upstream writes faster than the client reads, and a pooled connection keeps what
/// it grew to: 64 large responses held ~26 MiB that way. 64 KiB still reads a 100 KB body in
/// two reads; a response head must fit in it (hyper answers a larger one as an error).
const READ_BUF_MAX: usize = 64 << 10;

/// A connection that chose HTTP/2, waiting for the pooled client: since when, and on which event
/// loop (`event_loop`) it was opened.
type Parked = (Stream, Instant, Option<std::thread::ThreadId>);

/// How long a connection that chose HTTP/2 waits for the pooled client to take it.
const HANDOFF_FRESH: Duration = Duration::from_secs(1);

/// Why a request did not get a response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connection failed")]
    Connect(#[source] crate::error::BoxError),
    #[error("connection failed: timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("request failed")]
    Request(#[source] hyper::Error),
}

impl From<SendError> for crate::error::ProxyError {
    fn from(e: SendError) -> Self {
        use crate::error::Stage;
        let (stage, source): (Stage, crate::error::BoxError) = match e {
            SendError::Connect(e) => (Stage::Connect, e),
            SendError::ConnectTimeout(after) => (
                Stage::Connect,
                Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("timed out after {after:?}"),
                )),
            ),
            SendError::Request(e) => (Stage::Request, Box::new(e)),
        };
        Self::Unreachable { stage, source }
    }
}

/// One upstream connection: the handle that sends on it and the state machine that runs it.
struct Link {
    sender: http1::SendRequest<Sending>,
    /// `None` once the connection has ended.
    conn: Option<Connection>,
    /// The event loop the socket is registered with (`event_loop`).
    home: Option<std::thread::ThreadId>,
    /// What the connection's `Tap` and request bodies tell each other.
    shared: Arc<Shared>,
}

impl Link {
    /// Lets the connection make progress (write the request, read the response); records its end.
    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            if Pin::new(conn).poll(cx).is_ready() {
                self.conn = None;
            }
        }
    }

    /// Whether the connection is alive and waiting for its next request, after letting it settle.
    fn settle_idle(&mut self) -> bool {
        self.poll_conn(&mut Context::from_waker(Waker::noop()));
        self.conn.is_some() && self.sender.is_ready()
    }
}

/// What became of a request handed to the pool.
// Returned once per request and taken apart at once: boxing would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Sent {
    /// The response head; its body drives the connection.
    Response(Response<Driven>),
    /// The upstream speaks HTTP/2 (ALPN): the request, unsent, belongs to the pooled client.
    NotHttp1(Request<Body>),
}

/// Unused HTTP/1.1 connections to one upstream, most recently used last.
pub(super) struct InlinePool {
    /// The pooled client's connector (same trust, same ALPN offer).
    connector: HttpsConnector<HttpConnector>,
    /// Where connections go: the upstream's scheme and authority.
    base: Uri,
    connect_timeout: Duration,
    builder: http1::Builder,
    idle: Mutex<VecDeque<(Link, Instant)>>,
    /// Set once the upstream has chosen HTTP/2 by ALPN.
    speaks_h2: AtomicBool,
    /// Where the connection that chose HTTP/2 waits for the pooled client.
    handoff: Arc<Mutex<Option<Parked>>>,
}

impl InlinePool {
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        base: Uri,
        connect_timeout: Duration,
    ) -> Self {
        let mut builder = http1::Builder::new();
        builder
            .preserve_header_case(true)
            .max_buf_size(READ_BUF_MAX);
        InlinePool {
            connector,
            base,
            connect_timeout,
            builder,
            idle: Mutex::new(VecDeque::new()),
            speaks_h2: AtomicBool::new(false),
            handoff: Arc::default(),
        }
    }

    /// The pooled client's connector: takes the connection that chose HTTP/2, if one waits.
    pub(super) fn handoff(&self) -> Handoff {
        Handoff {
            inner: self.connector.clone(),
            parked: self.handoff.clone(),
        }
    }

    /// Whether requests go through this pool: not once the upstream has chosen HTTP/2.
    pub(super) fn is_http1(&self) -> bool {
        !self.speaks_h2.load(Ordering::Relaxed)
    }

    /// Sends a prepared request (absolute URI) and returns the response head; the body carries the
    /// connection and drives it. A request that a reused connection closed under before sending
    /// is sent again on another one, as hyper-util's client does.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Sent, SendError> {
        loop {
            let (mut link, reused) = match self.checkout() {
                Some(link) => (link, true),
                None => match self.connect().await? {
                    Some(link) => (link, false),
                    None => return Ok(Sent::NotHttp1(request)),
                },
            };
            let (origin, absolute) = origin_form(request);
            link.shared.start_request();
            let shared = link.shared.clone();
            let origin = origin.map(|body| Sending::new(body, shared));
            let mut response = pin!(link.sender.try_send_request(origin));
            let result = poll_fn(|cx| {
                link.poll_conn(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => {
                    return Ok(Sent::Response(Driven::new(response, link, self.clone())));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        let mut unsent = unsent.map(Sending::into_inner);
                        *unsent.uri_mut() = absolute;
                        request = unsent;
                    }
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection opened on this event loop. One opened on another worker's is
    /// left to that worker, as nginx's workers keep their own: its socket's readiness is reported
    /// to the worker that opened it, which would then have to wake this one for every read.
    fn checkout(&self) -> Option<Link> {
        let here = event_loop();
        loop {
            let (mut link, since) = {
                let mut idle = lock(&self.idle);
                let at = idle.iter().rposition(|(link, _)| link.home == here)?;
                idle.remove(at)?
            };
            if since.elapsed() <= KEEP_IDLE && link.settle_idle() {
                return Some(link);
            }
        }
    }

    fn checkin(&self, mut link: Link) {
        if !link.settle_idle() {
            return;
        }
        let mut idle = lock(&self.idle);
        while idle
            .front()
            .is_some_and(|(_, since)| since.elapsed() > KEEP_IDLE)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((link, Instant::now()));
        }
    }

    /// A new connection (TCP, then TLS for `https://`), or `None` when the upstream chose HTTP/2.
    async fn connect(&self) -> Result<Option<Link>, SendError> {
        let mut connector = self.connector.clone();
        let connecting = tower::Service::call(&mut connector, self.base.clone());
        let stream: Stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(SendError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            self.speaks_h2.store(true, Ordering::Relaxed);
            // Requests that connected at the same time each learn it; one connection is kept.
            let mut parked = lock(&self.handoff);
            if parked.is_none() {
                *parked = Some((stream, Instant::now(), event_loop()));
            }
            return Ok(None);
        }
        let shared = Arc::new(Shared::default());
        let (sender, conn) = self
            .builder
            .handshake(Tap::new(stream, shared.clone()))
            .await
            .map_err(SendError::Request)?;
        Ok(Some(Link {
            sender,
            conn: Some(conn),
            home: event_loop(),
            shared,
        }))
    }

    /// Gives a connection whose body was read by its `Tap` back to hyper for the next request
    /// (a handshake does no I/O) and to the idle connections.
    fn reattach(&self, tap: Tap, home: Option<std::thread::ThreadId>) {
        let Some((tap, shared)) = tap.for_next_request() else {
            return;
        };
        let mut handshake = pin!(self.builder.handshake(tap));
        let done = handshake
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        if let Poll::Ready(Ok((sender, conn))) = done {
            self.checkin(Link {
                sender,
                conn: Some(conn),
                home,
                shared,
            });
        }
    }
}

/// The event loop a socket opened here is registered with: this thread's on a current-thread
/// runtime (a worker, `server::Workers`); `None` on a multi-thread runtime, whose one event loop
/// serves all its threads.
fn event_loop() -> Option<std::thread::ThreadId> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => Some(std::thread::current().id()),
        _ => None,
    }
}

/// A connector that first gives out the connection the inline pool found speaking HTTP/2.
#[derive(Clone)]
pub(super) struct Handoff {
    inner: HttpsConnector<HttpConnector>,
    parked: Arc<Mutex<Option<Parked>>>,
}

impl Handoff {
    /// A connector with nothing handed to it (for connections of another kind, e.g. upgrades).
    pub(super) fn plain(inner: HttpsConnector<HttpConnector>) -> Self {
        Handoff {
            inner,
            parked: Arc::default(),
        }
    }
}

impl tower::Service<Uri> for Handoff {
    type Response = Stream;
    type Error = crate::error::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let parked = {
            let mut parked = lock(&self.parked);
            // Taken at once by the request that parked it; one left over from a crowd of first
            // requests is not trusted later (the upstream may have closed it meanwhile).
            if parked
                .as_ref()
                .is_some_and(|(_, since, _)| since.elapsed() >= HANDOFF_FRESH)
            {
                *parked = None;
            }
            // Only by a client on the event loop the socket is registered with (`checkout`).
            match parked.as_ref() {
                Some((_, _, home)) if *home == event_loop() => parked.take(),
                _ => None,
            }
        };
        match parked {
            Some((stream, ..)) => Box::pin(std::future::ready(Ok(stream))),
            None => Box::pin(self.inner.call(uri)),
        }
    }
}

/// HTTP/1 sends the path and query on the request line and the authority as `Host`; the
/// absolute URI is given back for a request that has to be handed on unsent.
fn origin_form(request: Request<Body>) -> (Request<Body>, Uri) {
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(header::HOST) {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, host);
        }
    }
    let absolute = parts.uri.clone();
    let path = parts.uri.path_and_query().cloned();
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = path;
    if let Ok(origin) = Uri::from_parts(uri) {
        parts.uri = origin;
    }
    (Request::from_parts(parts, body), absolute)
}

/// A response body that drives its connection, and gives it back to the pool once the response
/// has been read to its end. Dropped early (the client left), it closes the connection: the rest
/// of the response would otherwise have to be read first.
pub(super) struct Driven(Reading);

/// Who reads a response's body.
// One per response, boxed once with the rest of the body (`guarded`): boxing a variant would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Reading {
    /// Read by hyper, which the body polls.
    Hyper {
        link: Option<Link>,
        pool: Arc<InlinePool>,
        body: Incoming,
    },
    /// Read from the connection's `Tap`, taken from hyper after the head (`tap.rs`).
    Tapped {
        /// `None` once the body has ended.
        tap: Option<Tap>,
        framing: Framing,
        /// Whether the connection may carry another request after this one.
        reuse: bool,
        home: Option<std::thread::ThreadId>,
        pool: Arc<InlinePool>,
    },
}

impl Driven {
    /// The response's body: read from the tap when the request was written whole, the tap
    /// holds the body, and it is framed by length or chunks; by hyper otherwise.
    fn new(
        response: Response<Incoming>,
        mut link: Link,
        pool: Arc<InlinePool>,
    ) -> Response<Driven> {
        let (head, body) = response.into_parts();
        let framing = Framing::of(
            head.version,
            head.status,
            &head.headers,
            body.is_end_stream(),
            &body.size_hint(),
        )
        .filter(|_| link.shared.can_take());
        let driven = match (framing, link.conn.take()) {
            (Some(framing), Some(conn)) => {
                let parts = conn.into_parts();
                Driven(Reading::Tapped {
                    tap: Some(parts.io.taken(parts.read_buf)),
                    framing,
                    // The request carries no `Connection` (`Upstream::prepare`): the response decides.
                    reuse: !says_close(&head.headers),
                    home: link.home,
                    pool,
                })
            }
            (_, conn) => {
                link.conn = conn;
                link.shared.leave_to_hyper(!body.is_end_stream());
                let mut driven = Driven(Reading::Hyper {
                    link: Some(link),
                    pool,
                    body,
                });
                // No body to read (HEAD, 204, 304): nobody would poll it to its end.
                if driven.is_end_stream() {
                    driven.release();
                }
                driven
            }
        };
        Response::from_parts(head, driven)
    }

    /// The response has been read to its end: the connection goes back to the pool.
    fn release(&mut self) {
        match &mut self.0 {
            Reading::Hyper { link, pool, .. } => {
                if let Some(link) = link.take() {
                    pool.checkin(link);
                }
            }
            Reading::Tapped {
                tap,
                reuse,
                home,
                pool,
                ..
            } => {
                if let Some(tap) = tap.take().filter(|_| *reuse) {
                    pool.reattach(tap, *home);
                }
            }
        }
    }
}

impl HttpBody for Driven {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match &mut this.0 {
            Reading::Hyper { link, body, .. } => {
                if let Some(link) = link.as_mut() {
                    link.poll_conn(cx);
                }
                let frame = std::task::ready!(Pin::new(&mut *body).poll_frame(cx));
                frame.map(|f| f.map_err(BoxError::from))
            }
            Reading::Tapped {
                tap: Some(tap),
                framing,
                ..
            } => std::task::ready!(tap.poll_body(framing, cx)).map(|f| f.map_err(BoxError::from)),
            Reading::Tapped { tap: None, .. } => None,
        };
        match &frame {
            Some(Ok(_)) if !this.is_end_stream() => {}
            Some(Ok(_)) | None => this.release(),
            Some(Err(_)) => match &mut this.0 {
                Reading::Hyper { link, .. } => *link = None,
                Reading::Tapped { tap, .. } => *tap = None,
            },
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Reading::Hyper { body, .. } => body.is_end_stream(),
            Reading::Tapped { tap, framing, .. } => tap.is_none() || framing.is_spent(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Reading::Hyper { body, .. } => body.size_hint(),
            Reading::Tapped { framing, .. } => framing.size_hint(),
        }
    }
}
