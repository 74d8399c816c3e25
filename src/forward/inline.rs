//! Plain-HTTP/1 upstream connections driven by the task that reads the response.
//!
//! hyper-util's pooled client runs each connection in a task of its own and hands the response
//! body over a one-chunk channel, so every SSE event costs a wake-up of another task (often on
//! the other core) and a write of its own to the client. Here the connection travels with the
//! response body and is polled by whoever polls the body: reading the upstream and writing the
//! client happen in one poll, and `Coalesce` turns the events of one upstream read into one
//! write, as nginx does. Used for `http://` upstreams; TLS upstreams (HTTP/2 by ALPN) and
//! protocol upgrades stay with the pooled client, whose HTTP/2 streams buffer frames anyway.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Connection = http1::Connection<TokioIo<TcpStream>, Body>;

/// How long an unused connection is kept for the next request.
const KEEP_IDLE: Duration = Duration::from_secs(90);
/// Most unused connections kept; beyond this a finished connection is closed.
const MAX_IDLE: usize = 1024;

/// Why a request did not get a response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connection failed")]
    Connect(#[source] std::io::Error),
    #[error("connection failed: timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("request failed")]
    Request(#[source] hyper::Error),
}

impl From<SendError> for crate::error::ProxyError {
    fn from(e: SendError) -> Self {
        use crate::error::Stage;
        let (stage, source): (Stage, crate::error::BoxError) = match e {
            SendError::Connect(io) => (Stage::Connect, Box::new(io)),
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
    sender: http1::SendRequest<Body>,
    /// `None` once the connection has ended.
    conn: Option<Connection>,
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

/// Unused connections to one `http://` upstream, most recently used last.
pub struct InlinePool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    builder: http1::Builder,
    idle: Mutex<VecDeque<(Link, Instant)>>,
}

impl InlinePool {
    pub fn new(authority: &http::uri::Authority, connect_timeout: Duration) -> Self {
        let mut builder = http1::Builder::new();
        builder.preserve_header_case(true);
        InlinePool {
            // IPv6 literals come bracketed in an authority; the socket address wants them bare.
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(80),
            connect_timeout,
            builder,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Sends a prepared request (absolute URI) and returns the response head; the body carries the
    /// connection and drives it. A request that a reused connection closed under before sending
    /// is sent again on another one, as hyper-util's client does.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<Response<Driven>, SendError> {
        let mut request = origin_form(request);
        loop {
            let (mut link, reused) = match self.checkout() {
                Some(link) => (link, true),
                None => (self.connect().await?, false),
            };
            let mut response = pin!(link.sender.try_send_request(request));
            let result = poll_fn(|cx| {
                link.poll_conn(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => {
                    let pool = self.clone();
                    return Ok(response.map(|body| Driven::new(body, link, pool)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<Link> {
        loop {
            let (mut link, since) = self.lock().pop_back()?;
            if since.elapsed() > KEEP_IDLE {
                // The newest is too old, so are all the others.
                self.lock().clear();
                return None;
            }
            if link.settle_idle() {
                return Some(link);
            }
        }
    }

    fn checkin(&self, mut link: Link) {
        if !link.settle_idle() {
            return;
        }
        let mut idle = self.lock();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Link, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self) -> Result<Link, SendError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, conn) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        Ok(Link {
            sender,
            conn: Some(conn),
        })
    }
}

/// HTTP/1 sends the path and query on the request line and the authority as `Host`.
fn origin_form(request: Request<Body>) -> Request<Body> {
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
    let path = parts.uri.path_and_query().cloned();
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = path;
    if let Ok(origin) = Uri::from_parts(uri) {
        parts.uri = origin;
    }
    Request::from_parts(parts, body)
}

/// A response body that drives its connection, and gives it back to the pool once the response
/// has been read to its end. Dropped early (the client left), it closes the connection: the rest
/// of the response would otherwise have to be read first.
pub struct Driven {
    link: Option<Link>,
    pool: Arc<InlinePool>,
    body: Incoming,
}

impl Driven {
    fn new(body: Incoming, link: Link, pool: Arc<InlinePool>) -> Self {
        let mut driven = Driven {
            link: Some(link),
            pool,
            body,
        };
        // No body to read (HEAD, 204, 304): nobody would poll it to its end.
        if driven.body.is_end_stream() {
            driven.release();
        }
        driven
    }

    fn release(&mut self) {
        if let Some(link) = self.link.take() {
            self.pool.checkin(link);
        }
    }
}

impl HttpBody for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(link) = this.link.as_mut() {
            link.poll_conn(cx);
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.body.is_end_stream() => {}
            Some(Ok(_)) | None => this.release(),
            Some(Err(_)) => this.link = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
