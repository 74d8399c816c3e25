//! A response body that lets capture read each chunk on its way to the client.
//!
//! The chunk is handed to the client unchanged right after capture has looked at it. The capture
//! is finished (a JSON body parsed, the turn recorded) as the body ends, or as the last byte of a
//! body of known length passes, before that chunk is handed on, so a follow-up can never outrun
//! it; only a remote ledger write goes on in a task.
//! A body dropped before its end (the client went away) captures nothing.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::capture::{Capture, CaptureError};

/// Called once the body has ended: with the capture (to finish) or why it failed, and whether the
/// body ended cleanly.
pub(super) type OnEnd = Box<dyn FnOnce(Result<Capture, CaptureError>, bool) + Send>;

pin_project_lite::pin_project! {
    pub struct Tee<B> {
        #[pin]
        inner: B,
        capture: Option<Result<Capture, CaptureError>>,
        on_end: Option<OnEnd>,
    }
}

impl<B> Tee<B> {
    pub(super) fn new(inner: B, capture: Result<Capture, CaptureError>, on_end: OnEnd) -> Self {
        Tee {
            inner,
            capture: Some(capture),
            on_end: Some(on_end),
        }
    }
}

fn end(
    capture: &mut Option<Result<Capture, CaptureError>>,
    on_end: &mut Option<OnEnd>,
    clean: bool,
) {
    if let (Some(capture), Some(on_end)) = (capture.take(), on_end.take()) {
        on_end(capture, clean);
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(data), Some(Ok(capture))) = (frame.data_ref(), this.capture.as_mut()) {
                    if let Err(e) = capture.feed(data) {
                        *this.capture = Some(Err(e));
                    }
                }
                // A body of known length may never be polled past its last chunk; and once its
                // last byte has passed, the client has it all even if the end of the stream comes
                // in a later frame (HTTP/2 may send END_STREAM on an empty DATA frame, as nginx
                // does), so the turn must be recorded now for the follow-up to find it.
                if this.inner.is_end_stream() || this.inner.size_hint().exact() == Some(0) {
                    end(this.capture, this.on_end, true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                end(this.capture, this.on_end, false);
                Poll::Ready(Some(Err(e)))
            }
            None => {
                end(this.capture, this.on_end, true);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
