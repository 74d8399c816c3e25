//! Frames already delivered by the upstream go on to the client as one chunk.
//!
//! A burst of SSE events read in one poll becomes one write instead of one per event; a frame
//! still pending is never waited for, so latency is unchanged. The subtle part is an error that
//! follows data: it is held for one poll so the data reaches the client first.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

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
    pub(crate) fn new(inner: B) -> Self {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}
