//! An upstream connection's reads: response heads go to hyper, bodies are read here.
//!
//! hyper's HTTP/1.1 client hands a response body to its reader one chunk at a time, over a channel,
//! with a waker clone and a wake each: 16 % of an SSE stream's CPU in rethread (bench/RESULTS.md,
//! issue 25). hyper still writes the requests and reads the heads: it alone keeps header names'
//! case and order both ways (`preserve_header_case`), which transparency promises. So the socket
//! sits behind a `Tap` that gives hyper one response head at a time and holds back what follows.
//! Once hyper has a final head (and nothing after it) and the request was written whole, the
//! connection is taken from hyper and its body read here (`poll_body`): by length, or chunked
//! (`chunked.rs`) with every chunk of one read in one frame. Whatever is not that plain (a
//! close-delimited body, HTTP/1.0, a head `httparse` cannot read, an answer that came before the
//! request was written) is released to hyper, which reads the rest of the connection as it always
//! did.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::chunked::Chunked;

pub(super) type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Most bytes read ahead while a head is incomplete: hyper's own bound (`inline::READ_BUF_MAX`);
/// a longer head is given to hyper to refuse.
const HEAD_MAX: usize = 64 << 10;
/// Room made in the read buffer before each read.
const READ_ROOM: usize = 32 << 10;

/// What the tap does once hyper has a final head (`Shared::after_head`).
const HOLD: u8 = 0;
const NEXT_HEAD: u8 = 1;
const THROUGH: u8 = 2;

/// What the tap, hyper and the request's body tell each other about one connection.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The request's body gave its last frame.
    request_sent: AtomicBool,
    /// The socket did not take all that was last written to it (hyper may hold the rest).
    write_blocked: AtomicBool,
    /// After a final head: hold the rest, go on to the next head, or let hyper read everything.
    after_head: AtomicU8,
    /// hyper has been given a final head and nothing after it: the body is still in the tap.
    held: AtomicBool,
}

impl Shared {
    /// A new request starts on the connection.
    pub(super) fn start_request(&self) {
        self.request_sent.store(false, Ordering::Relaxed);
        self.write_blocked.store(false, Ordering::Relaxed);
        self.after_head.store(HOLD, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
    }

    /// Whether the connection can be taken from hyper: the request was handed to the socket
    /// whole, and hyper holds the response's head and nothing of its body (a connection whose
    /// reading was once left to hyper never is again).
    pub(super) fn can_take(&self) -> bool {
        self.request_sent.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && self.held.load(Ordering::Relaxed)
    }

    /// hyper reads this response's body (none, or one it frames itself) and the connection's
    /// later responses: `body` says whether there is one to read.
    pub(super) fn leave_to_hyper(&self, body: bool) {
        let next = if body { THROUGH } else { NEXT_HEAD };
        self.after_head.store(next, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// hyper is given response heads, one at a time.
    Heads,
    /// A final head was given; what follows waits for `Shared::after_head`.
    Held,
    /// hyper reads the socket itself.
    Through,
}

/// The socket of an HTTP/1.1 upstream connection, as hyper sees it.
pub(super) struct Tap {
    io: TokioIo<Stream>,
    /// Read from the socket, not yet given out.
    buf: BytesMut,
    /// Bytes at the front of `buf` that are a head hyper has not taken yet.
    head_left: usize,
    /// Whether that head is a final one (not `1xx`).
    head_final: bool,
    mode: Mode,
    shared: Arc<Shared>,
}

impl Tap {
    pub(super) fn new(stream: Stream, shared: Arc<Shared>) -> Self {
        Tap {
            io: TokioIo::new(stream),
            buf: BytesMut::new(),
            head_left: 0,
            head_final: false,
            mode: Mode::Heads,
            shared,
        }
    }

    /// Taken back from hyper, with what hyper had read and not used (nothing, as it is only
    /// ever given heads; kept anyway), ahead of what the tap holds.
    pub(super) fn taken(mut self, unread: Bytes) -> Self {
        if !unread.is_empty() {
            let mut buf = BytesMut::from(unread);
            buf.extend_from_slice(&self.buf);
            self.buf = buf;
        }
        self
    }

    /// Ready for the connection's next request, or `None` when bytes follow the body (the
    /// upstream broke the framing: the connection is not used again).
    pub(super) fn for_next_request(mut self) -> Option<(Self, Arc<Shared>)> {
        if !self.buf.is_empty() {
            return None;
        }
        self.head_left = 0;
        self.head_final = false;
        self.mode = Mode::Heads;
        let shared = self.shared.clone();
        Some((self, shared))
    }

    /// Reads more of the socket into `buf`: the count read, 0 at its end.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 4 {
            self.buf.reserve(READ_ROOM);
        }
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    /// Gives hyper up to `n` bytes of `buf`.
    fn give(&mut self, n: usize, cursor: &mut ReadBufCursor<'_>) -> usize {
        let n = n.min(cursor.remaining()).min(self.buf.len());
        cursor.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        n
    }

    /// The next frame of a body read here, not by hyper; `None` after its end (and its
    /// trailers).
    pub(super) fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            match framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Chunked(chunked) if chunked.is_done() => {
                    return Poll::Ready(
                        chunked
                            .take_trailers()
                            .map_err(io::Error::from)
                            .transpose()
                            .map(|t| t.map(Frame::trailers)),
                    );
                }
                _ if self.buf.is_empty() => {}
                Framing::Length(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    *left -= n as u64;
                    return Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(n).freeze()))));
                }
                Framing::Chunked(chunked) => {
                    let step = match chunked.decode(&mut self.buf) {
                        Ok(step) => step,
                        Err(e) => return Poll::Ready(Some(Err(e.into()))),
                    };
                    let mut data = self.buf.split_to(step.used);
                    data.truncate(step.data);
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data.freeze()))));
                    }
                    continue;
                }
            }
            match ready!(self.fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the body's end",
                    ))))
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl Read for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.mode {
                Mode::Through if this.buf.is_empty() => {
                    return Pin::new(this.io.inner_mut()).poll_read(cx, cursor)
                }
                Mode::Through => {
                    this.give(usize::MAX, &mut cursor);
                    return Poll::Ready(Ok(()));
                }
                Mode::Held => {
                    match this.shared.after_head.load(Ordering::Relaxed) {
                        HOLD => return Poll::Pending,
                        NEXT_HEAD => {
                            this.shared.after_head.store(HOLD, Ordering::Relaxed);
                            this.mode = Mode::Heads;
                        }
                        _ => this.mode = Mode::Through,
                    }
                    this.shared.held.store(false, Ordering::Relaxed);
                }
                Mode::Heads if this.head_left > 0 => {
                    this.head_left -= this.give(this.head_left, &mut cursor);
                    if this.head_left == 0 && this.head_final {
                        this.mode = Mode::Held;
                        this.shared.held.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(()));
                }
                Mode::Heads => match head_len(&this.buf) {
                    Head::Complete { len, informational } => {
                        this.head_left = len;
                        this.head_final = !informational;
                    }
                    Head::Partial if this.buf.len() < HEAD_MAX => match ready!(this.fill(cx)) {
                        Ok(0) => this.mode = Mode::Through,
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    },
                    Head::Partial | Head::Unreadable => this.mode = Mode::Through,
                },
            }
        }
    }
}

impl Write for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.io.inner_mut()).poll_write(cx, buf);
        self.note_write(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.io.inner_mut()).poll_write_vectored(cx, bufs);
        self.note_write(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.inner().is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(self.io.inner_mut()).poll_flush(cx);
        self.note_write(polled.is_pending());
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_shutdown(cx)
    }
}

impl Tap {
    fn note_write(&self, blocked: bool) {
        self.shared.write_blocked.store(blocked, Ordering::Relaxed);
    }
}

/// Where the next response head in a buffer ends, as hyper's parser (`httparse`, its default
/// settings and header count) would find it.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Complete { len: usize, informational: bool },
    Partial,
    Unreadable,
}

fn head_len(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Head::Complete {
            len,
            // hyper reads past an informational answer to the next head; a 101 ends the exchange.
            informational: matches!(response.code, Some(100 | 102..=199)),
        },
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Unreadable,
    }
}

/// How a body read here ends.
#[derive(Debug)]
pub(super) enum Framing {
    /// After this many more bytes (`Content-Length`).
    Length(u64),
    Chunked(Chunked),
}

impl Framing {
    /// How the body of a response hyper has read the head of can be read here; `None` when it
    /// is left to hyper. hyper's own reading decides whether there is a body and its length
    /// (`end`, `hint`); chunked is told by the last coding, as hyper tells it.
    pub(super) fn of(
        version: Version,
        status: http::StatusCode,
        headers: &HeaderMap,
        end: bool,
        hint: &SizeHint,
    ) -> Option<Framing> {
        if version != Version::HTTP_11 || end || status.is_informational() {
            return None;
        }
        if let Some(length) = hint.exact() {
            return Some(Framing::Length(length));
        }
        let last_coding = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        last_coding
            .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
            .then(|| Framing::Chunked(Chunked::new()))
    }

    /// Whether nothing is left to give: the body ended, and its trailers were given.
    pub(super) fn is_spent(&self) -> bool {
        match self {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(chunked) => chunked.is_spent(),
        }
    }

    /// What is left to read, as `http_body` says it.
    pub(super) fn size_hint(&self) -> SizeHint {
        match self {
            Framing::Length(left) => SizeHint::with_exact(*left),
            Framing::Chunked(_) => SizeHint::default(),
        }
    }
}

/// Whether a `Connection` header names `close`.
pub(super) fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// A request's body on its way to the upstream: says when its last frame was given.
pub(super) struct Sending {
    body: Body,
    shared: Arc<Shared>,
}

impl Sending {
    pub(super) fn new(body: Body, shared: Arc<Shared>) -> Self {
        if body.is_end_stream() {
            shared.request_sent.store(true, Ordering::Relaxed);
        }
        Sending { body, shared }
    }

    pub(super) fn into_inner(self) -> Body {
        self.body
    }
}

impl HttpBody for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none()
            || (frame.as_ref().is_some_and(Result::is_ok) && this.body.is_end_stream())
        {
            this.shared.request_sent.store(true, Ordering::Relaxed);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    #[test]
    fn a_head_ends_where_hyper_would_end_it() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            head_len(buf),
            Head::Complete {
                len: buf.len() - 2,
                informational: false
            }
        );
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(
            head_len(early),
            Head::Complete {
                len: 40,
                informational: true
            }
        );
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nA: b\r\n"), Head::Partial);
        assert_eq!(
            head_len(b"HTTP/1.1 200 OK\r\nA b\r\n\r\n"),
            Head::Unreadable
        );
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "A: b\r\n".repeat(101));
        assert_eq!(head_len(many.as_bytes()), Head::Unreadable);
    }

    fn framing(version: Version, te: Option<&str>, end: bool, hint: SizeHint) -> Option<String> {
        let mut headers = HeaderMap::new();
        if let Some(te) = te {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_str(te).unwrap(),
            );
        }
        Framing::of(version, StatusCode::OK, &headers, end, &hint).map(|f| match f {
            Framing::Length(n) => format!("length {n}"),
            Framing::Chunked(_) => "chunked".into(),
        })
    }

    #[test]
    fn only_length_and_chunked_bodies_of_http11_are_read_here() {
        let unknown = SizeHint::default();
        let exact = SizeHint::with_exact(5);
        assert_eq!(
            framing(Version::HTTP_11, None, false, exact).as_deref(),
            Some("length 5")
        );
        assert_eq!(
            framing(Version::HTTP_11, Some("chunked"), false, unknown).as_deref(),
            Some("chunked")
        );
        assert_eq!(
            framing(Version::HTTP_11, Some("gzip, Chunked "), false, unknown).as_deref(),
            Some("chunked")
        );
        // Close-delimited: hyper reads it to the connection's end.
        assert_eq!(
            framing(Version::HTTP_11, Some("chunked, gzip"), false, unknown),
            None
        );
        assert_eq!(framing(Version::HTTP_11, None, false, unknown), None);
        assert_eq!(framing(Version::HTTP_10, None, false, exact), None);
        assert_eq!(
            framing(Version::HTTP_11, Some("chunked"), true, unknown),
            None
        );
    }

    #[test]
    fn connection_close_is_found_among_tokens() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!says_close(&headers));
        headers.append(header::CONNECTION, HeaderValue::from_static("x-a, Close"));
        assert!(says_close(&headers));
    }
}
