//! nginx's GOAWAY after `keepalive_requests` streams, which hyper's server cannot send.
//!
//! hyper (through h2) shuts a connection down in two steps: a GOAWAY naming the highest possible
//! stream id, a PING, then the real last id; a client stops opening streams at the first, so no
//! stream is ever left above the last id. nginx sends one GOAWAY naming the stream that reached
//! its count and ignores the streams the client opened meanwhile; those are the streams a client
//! must send again (RFC 9113 §6.8). This wrapper does what nginx does, between TLS and hyper: it
//! reads the client's frames, counts the streams opened, writes the GOAWAY into the server's
//! frames at a frame boundary once the count is reached, and from then on hides every frame of a
//! later stream from hyper, giving the client back the connection window their DATA used.
//!
//! Hidden header blocks leave hyper's HPACK table behind the client's; that is harmless, because
//! no header block of a stream hyper serves comes after them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: usize = 24;
const HEAD: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
/// Server bytes held before hyper's writes wait for the socket.
const OUT_LIMIT: usize = 64 << 10;

/// Where a direction of the connection is in its frames.
#[derive(Default)]
struct Framing {
    head: [u8; HEAD],
    head_len: usize,
    /// Payload bytes left of the current frame.
    left: usize,
}

impl Framing {
    fn at_boundary(&self) -> bool {
        self.head_len == 0 && self.left == 0
    }
}

fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(HEAD + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A server connection that sends GOAWAY after `after` client streams, as nginx does.
pub(crate) struct GoAwayAfter<T> {
    inner: T,
    after: u32,
    preface_left: usize,
    incoming: Framing,
    /// Whether the current client frame is hidden from hyper.
    hiding: bool,
    opened: u32,
    highest: u32,
    last_id: Option<u32>,
    raw: Box<[u8]>,
    /// Client bytes for hyper.
    ready: Vec<u8>,
    ready_at: usize,
    outgoing: Framing,
    /// Frames of ours waiting for a boundary in the server's frames.
    pending: Vec<u8>,
    /// Server bytes waiting for the socket.
    out: Vec<u8>,
}

impl<T> GoAwayAfter<T> {
    pub(crate) fn new(inner: T, after: u32) -> Self {
        GoAwayAfter {
            inner,
            after: after.max(1),
            preface_left: PREFACE,
            incoming: Framing::default(),
            hiding: false,
            opened: 0,
            highest: 0,
            last_id: None,
            raw: vec![0; 16 << 10].into_boxed_slice(),
            ready: Vec::new(),
            ready_at: 0,
            outgoing: Framing::default(),
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Client bytes: what hyper sees of them goes to `ready`.
    fn read_client(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.ready.extend_from_slice(&bytes[..n]);
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.incoming.left == 0 {
                let f = &mut self.incoming;
                let n = (HEAD - f.head_len).min(bytes.len());
                f.head[f.head_len..f.head_len + n].copy_from_slice(&bytes[..n]);
                f.head_len += n;
                bytes = &bytes[n..];
                if f.head_len == HEAD {
                    f.head_len = 0;
                    let head = f.head;
                    self.client_frame(&head);
                }
            } else {
                let n = self.incoming.left.min(bytes.len());
                if !self.hiding {
                    self.ready.extend_from_slice(&bytes[..n]);
                }
                self.incoming.left -= n;
                bytes = &bytes[n..];
            }
        }
    }

    fn client_frame(&mut self, head: &[u8; HEAD]) {
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
        let kind = head[3];
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        self.incoming.left = len as usize;
        self.hiding = stream != 0 && self.last_id.is_some_and(|last| stream > last);
        if self.hiding {
            if kind == DATA && len > 0 {
                self.pending
                    .extend(frame(WINDOW_UPDATE, 0, &len.to_be_bytes()));
            }
            return;
        }
        self.ready.extend_from_slice(head);
        if kind == HEADERS && stream > self.highest {
            self.highest = stream;
            self.opened += 1;
            if self.opened == self.after {
                self.last_id = Some(stream);
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                self.pending.extend(frame(GOAWAY, 0, &payload));
            }
        }
    }

    /// Server bytes, with our frames put in at the first boundary.
    fn write_server(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.outgoing.at_boundary() && !self.pending.is_empty() {
                self.out.append(&mut self.pending);
            }
            let f = &mut self.outgoing;
            if f.left == 0 {
                let n = (HEAD - f.head_len).min(bytes.len());
                f.head[f.head_len..f.head_len + n].copy_from_slice(&bytes[..n]);
                f.head_len += n;
                if f.head_len == HEAD {
                    f.head_len = 0;
                    f.left = u32::from_be_bytes([0, f.head[0], f.head[1], f.head[2]]) as usize;
                }
                self.out.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
            } else {
                let n = f.left.min(bytes.len());
                f.left -= n;
                self.out.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
            }
        }
        if self.outgoing.at_boundary() && !self.pending.is_empty() {
            self.out.append(&mut self.pending);
        }
    }
}

impl<T: AsyncWrite + Unpin> GoAwayAfter<T> {
    /// Writes what waits for the socket; ready once all of it is written.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GoAwayAfter<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.raw);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            let n = raw.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            let read = this.raw[..n].to_vec();
            this.read_client(&read);
            if !this.pending.is_empty() && this.outgoing.at_boundary() {
                this.out.append(&mut this.pending);
                // Sent now if the socket takes it, else with hyper's next write or flush.
                let _ = this.poll_out(cx);
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GoAwayAfter<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() > OUT_LIMIT {
            std::task::ready!(this.poll_out(cx))?;
        }
        this.write_server(buf);
        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goaway_names_the_nth_stream_and_later_streams_are_hidden() {
        let mut conn = GoAwayAfter::new((), 2);
        // The server is mid-frame when the count is reached: our frames wait for its end.
        let server = frame(DATA, 1, b"answer");
        conn.write_server(&server[..12]);
        let mut client = vec![b'P'; PREFACE];
        client.extend(frame(HEADERS, 1, b"h1"));
        client.extend(frame(HEADERS, 3, b"h3"));
        client.extend(frame(HEADERS, 5, b"h5"));
        client.extend(frame(DATA, 5, b"body"));
        client.extend(frame(DATA, 3, b"ok"));
        // Byte by byte: frames cut anywhere are still read whole.
        for b in &client {
            conn.read_client(std::slice::from_ref(b));
        }
        let mut seen = vec![b'P'; PREFACE];
        seen.extend(frame(HEADERS, 1, b"h1"));
        seen.extend(frame(HEADERS, 3, b"h3"));
        seen.extend(frame(DATA, 3, b"ok"));
        assert_eq!(conn.ready, seen);
        assert_eq!(conn.out, server[..12]);
        conn.write_server(&server[12..]);
        let mut expected = server.clone();
        expected.extend(frame(GOAWAY, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
        expected.extend(frame(WINDOW_UPDATE, 0, &4u32.to_be_bytes()));
        assert_eq!(conn.out, expected);
    }
}
