//! A request the upstream did not process is sent again, on a new connection, without the client
//! noticing.
//!
//! HTTP/2 says which streams a server never processed: those above the last stream id of a
//! GOAWAY, and those reset with `REFUSED_STREAM` (RFC 9113 §6.8, §8.7). nginx sends a GOAWAY
//! after every `keepalive_requests` streams, and servers in front of the public API do on
//! restarts and connection ageing; under concurrency some streams are always in flight above the
//! last id. Every production proxy sends those again; rethread does too, at most `MAX_RESENDS`
//! times. A stream that may have been processed (an I/O error, a reset with another reason, any
//! error after the response head) is never sent again: sending a `POST` twice could make two
//! responses.
//!
//! A resend needs the body again. `Replay` keeps what it hands to the upstream, up to a limit,
//! as references to the same bytes; the part not read yet stays in the original body, so an
//! upload streams as before. A body read past the limit cannot be resent, and its error says so.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::BoxError;

/// Most resends of one request.
pub(super) const MAX_RESENDS: usize = 2;

/// Most bytes of a streamed request body kept for a resend (a body the caller holds whole is kept
/// whole: its frames share the caller's memory).
pub(super) const KEEP_LIMIT: usize = 64 << 10;

/// Why the upstream did not process a request, as a metric label.
pub(crate) const REASONS: [&str; 2] = ["goaway", "refused_stream"];

/// Why the upstream did not process a request, when its error proves it did not; `None` when it
/// may have.
pub(super) fn unprocessed(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // h2 gives the peer's GOAWAY error only to streams above its last stream id, and to
            // requests opened after it; a stream at or below it that the connection's end cut
            // gets an I/O error instead.
            if h2.is_go_away() && h2.is_remote() {
                return Some(REASONS[0]);
            }
            if h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(REASONS[1]);
            }
            return None;
        }
        cause = e.source();
    }
    None
}

/// A frame kept for a resend.
enum Kept {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

impl Kept {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Kept::Data(data) => Frame::data(data.clone()),
            Kept::Trailers(trailers) => Frame::trailers(trailers.clone()),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Kept::Data(data) => data.len() as u64,
            Kept::Trailers(_) => 0,
        }
    }
}

struct Shared {
    /// What has not been read yet.
    rest: Body,
    kept: Vec<Kept>,
    kept_bytes: usize,
    limit: usize,
    /// Read past `limit` (or failed): no further attempt can have the whole body.
    spent: bool,
    /// The attempt allowed to read; an older one still held by a dying connection reads nothing.
    current: u64,
}

/// A request body that can be handed to the upstream more than once.
pub(super) struct Replay {
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    /// Keeps what `body` hands out, up to `limit` bytes; with the first attempt's body.
    pub(super) fn start(body: Body, limit: usize) -> (Self, Body) {
        let replay = Replay {
            shared: Arc::new(Mutex::new(Shared {
                rest: body,
                kept: Vec::new(),
                kept_bytes: 0,
                limit,
                spent: false,
                current: 1,
            })),
        };
        let first = Body::new(Attempt {
            shared: replay.shared.clone(),
            id: 1,
            at: 0,
        });
        (replay, first)
    }

    /// The body for the next attempt: what earlier attempts read, then the rest. `None` once the
    /// body was read past its limit.
    pub(super) fn attempt(&self) -> Option<Body> {
        let mut shared = lock(&self.shared);
        if shared.spent {
            return None;
        }
        shared.current += 1;
        Some(Body::new(Attempt {
            shared: self.shared.clone(),
            id: shared.current,
            at: 0,
        }))
    }

    /// The limit a spent body went past, for the error that says why it was not resent.
    pub(super) fn limit(&self) -> usize {
        lock(&self.shared).limit
    }
}

struct Attempt {
    shared: Arc<Mutex<Shared>>,
    id: u64,
    /// Kept frames this attempt has replayed.
    at: usize,
}

/// An older attempt polled after a newer one began.
#[derive(Debug, thiserror::Error)]
#[error("this attempt's body was handed to a newer attempt")]
struct Superseded;

impl HttpBody for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut shared = lock(&this.shared);
        if shared.current != this.id {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if let Some(kept) = shared.kept.get(this.at) {
            this.at += 1;
            return Poll::Ready(Some(Ok(kept.frame())));
        }
        let polled = Pin::new(&mut shared.rest).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if !shared.spent => {
                let kept = match frame.data_ref() {
                    Some(data) => Kept::Data(data.clone()),
                    None => Kept::Trailers(frame.trailers_ref().cloned().unwrap_or_default()),
                };
                shared.kept_bytes = shared.kept_bytes.saturating_add(kept.len() as usize);
                if shared.kept_bytes > shared.limit {
                    shared.spent = true;
                    shared.kept = Vec::new();
                } else {
                    shared.kept.push(kept);
                    this.at += 1;
                }
            }
            Poll::Ready(Some(Err(_))) => shared.spent = true,
            _ => {}
        }
        polled.map(|f| f.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        let shared = lock(&self.shared);
        self.at >= shared.kept.len() && shared.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let shared = lock(&self.shared);
        let replayed: u64 = shared.kept.iter().skip(self.at).map(Kept::len).sum();
        let rest = shared.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + replayed);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + replayed);
        }
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunks(parts: &[&'static str]) -> Body {
        let frames = parts
            .iter()
            .map(|p| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(p.as_bytes())))
            })
            .collect::<Vec<_>>();
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_second_attempt_reads_what_the_first_read_then_the_rest() {
        let (replay, mut first) = Replay::start(chunks(&["ab", "cd", "ef"]), 1024);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap(), "ab");
        drop(first);
        let second = replay.attempt().unwrap().collect().await.unwrap();
        assert_eq!(second.to_bytes(), "abcdef");
        let third = replay.attempt().unwrap().collect().await.unwrap();
        assert_eq!(third.to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn a_body_read_past_its_limit_cannot_be_sent_again() {
        let (replay, first) = Replay::start(chunks(&["abcd", "efgh"]), 6);
        let all = first.collect().await.unwrap();
        assert_eq!(
            all.to_bytes(),
            "abcdefgh",
            "the first attempt streams it all"
        );
        assert!(replay.attempt().is_none());
    }

    #[tokio::test]
    async fn an_older_attempt_reads_nothing_once_a_newer_one_began() {
        let (replay, mut old) = Replay::start(chunks(&["ab", "cd"]), 1024);
        let _new = replay.attempt().unwrap();
        assert!(old.frame().await.unwrap().is_err());
    }

    #[test]
    fn the_exact_size_of_a_known_body_is_kept_across_attempts() {
        let (_replay, first) = Replay::start(Body::from("hello"), 1024);
        assert_eq!(first.size_hint().exact(), Some(5));
    }

    #[test]
    fn only_errors_that_prove_the_request_unprocessed_allow_a_resend() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        // A reason made locally is not the peer's word.
        assert_eq!(unprocessed(&refused), None);
        let io = std::io::Error::other("broken pipe");
        assert_eq!(unprocessed(&io), None);
    }
}
