//! Body wrappers of the upstream path: an idle timeout that restarts with every frame, a request
//! body whose progress keeps the wait for the response alive, a body of chunks already in memory
//! (a spliced request), and bytes already read put back in front of the rest of a body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::BoxError;

pin_project_lite::pin_project! {
    /// A body that fails when no frame arrives for `timeout`.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        // Armed lazily: a frame only notes when it came; the timer is moved only when it fires
        // early (once per `timeout` at most), not on every frame of a busy stream.
        #[pin]
        sleep: tokio::time::Sleep,
        timeout: Duration,
        last_frame: tokio::time::Instant,
    }
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: tokio::time::sleep(timeout),
            timeout,
            last_frame: tokio::time::Instant::now(),
        }
    }
}

/// The peer went silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub(crate) struct IdleTimedOut(Duration);

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
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.last_frame = tokio::time::Instant::now();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => loop {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The timer fired: a frame since it was set moves the deadline on.
                let deadline = *this.last_frame + *this.timeout;
                if deadline <= tokio::time::Instant::now() {
                    return Poll::Ready(Some(Err(Box::new(IdleTimedOut(*this.timeout)))));
                }
                this.sleep.as_mut().reset(deadline);
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
pub(crate) struct ChunksBody {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl ChunksBody {
    pub(crate) fn new(chunks: Vec<Bytes>) -> Self {
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

pin_project_lite::pin_project! {
    /// Bytes already read from a body, then the rest of it.
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> Prefixed<B> {
    pub(crate) fn new(prefix: Bytes, rest: B) -> Self {
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

/// When a request body last moved, shared by the body and the wait for the response head.
#[derive(Debug)]
pub(super) struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last frame.
    last_ms: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

pin_project_lite::pin_project! {
    /// A request body that records its progress: an upload that is still moving is not silence.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        progress: Arc<Progress>,
    }
}

impl<B> Watched<B> {
    pub(super) fn new(inner: B, progress: Arc<Progress>) -> Self {
        Watched { inner, progress }
    }
}

impl<B: HttpBody> HttpBody for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `response`, unless `idle` passes without it and without the request body moving: silence is
/// measured from the upload's last frame, so a slow upload that is still going is never cut.
pub(super) async fn within_idle<F: Future>(
    response: F,
    idle: Duration,
    progress: &Progress,
) -> Option<F::Output> {
    let mut response = std::pin::pin!(response);
    loop {
        let deadline = progress.last() + idle;
        tokio::select! {
            out = &mut response => return Some(out),
            () = tokio::time::sleep_until(deadline.into()) => {
                if progress.last() + idle <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body whose frames come from `frames`, each after its delay.
    fn paced(frames: Vec<Duration>) -> impl HttpBody<Data = Bytes, Error = BoxError> {
        let stream = futures_util::stream::unfold(frames.into_iter(), |mut left| async move {
            let delay = left.next()?;
            tokio::time::sleep(delay).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))),
                left,
            ))
        });
        http_body_util::StreamBody::new(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_keeps_moving_outlives_its_idle_timeout() {
        // Five frames 600 ms apart: 3 s in all against a 1 s timeout that the deadline, moved
        // on lazily, never reaches.
        let body = IdleTimeout::new(
            paced(vec![Duration::from_millis(600); 5]),
            Duration::from_secs(1),
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"xxxxx");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_idle_timeout_ends_the_body_at_the_timeout() {
        let started = tokio::time::Instant::now();
        let delays = vec![
            Duration::from_millis(600),
            Duration::from_millis(600),
            Duration::from_secs(5),
        ];
        let body = IdleTimeout::new(paced(delays), Duration::from_secs(1));
        let error = body.collect().await.unwrap_err();
        assert!(error.is::<IdleTimedOut>(), "{error}");
        // Two frames, then one second of silence.
        assert_eq!(started.elapsed(), Duration::from_millis(2200));
    }
}
