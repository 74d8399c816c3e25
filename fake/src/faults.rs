//! Random upstream faults for "bad day" load tests: some `POST …/responses` answered 500, some
//! cut mid-body (the connection aborted), some stalled before anything is sent.
//!
//! A proxy's retry and error paths only run when the upstream fails, and the real one fails at
//! random. Here the randomness is reproducible: which request gets which fault follows from
//! [`Faults::seed`] and the request's arrival number at the server, so the same request order gives
//! the same faults. A cut answer's turn is never remembered, as if the server had failed, so a
//! follow-up naming its items is refused like one naming unknown items. Off by default.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Which faults `POST …/responses` gets (HTTP only: not WebSocket mode, not GET). The rates are
/// fractions of all such requests; at most one fault applies to a request. Default: none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Answered `500` with the API's `server_error` body (`{"detail": …}` with
    /// `FakeOptions::detail_errors`) before any check, even of the key; nothing is remembered.
    pub error_rate: f64,
    /// Answered `200`, then the connection is aborted part-way through the body (after a few SSE
    /// events, or about half the JSON bytes); the turn is not remembered. A request the fake
    /// refuses (4xx) is refused as usual, and no reset is counted.
    pub reset_rate: f64,
    /// Wait [`Faults::stall`] before answering (then answer normally).
    pub stall_rate: f64,
    /// How long a stalled request waits.
    pub stall: Duration,
    /// Seed of the draws; with the same seed and request order, the same requests get faults.
    pub seed: u64,
}

/// Faults injected so far, by kind ([`crate::FakeHandle::faults_injected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    pub errors: u64,
    pub resets: u64,
    pub stalls: u64,
}

/// The fault one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Error,
    Reset,
    Stall,
}

impl Faults {
    /// Whether any rate is set.
    fn any(&self) -> bool {
        self.error_rate > 0.0 || self.reset_rate > 0.0 || self.stall_rate > 0.0
    }

    /// The fault for a uniform draw `u` in [0, 1): the rates are consecutive slices of [0, 1).
    fn pick(&self, u: f64) -> Option<Fault> {
        let reset_to = self.error_rate + self.reset_rate;
        match u {
            u if u < self.error_rate => Some(Fault::Error),
            u if u < reset_to => Some(Fault::Reset),
            u if u < reset_to + self.stall_rate => Some(Fault::Stall),
            _ => None,
        }
    }
}

/// Per-server fault state: requests drawn for, and faults injected.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    drawn: AtomicU64,
    errors: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
}

impl FaultState {
    /// The fault of the next request (`None` when `faults` has none).
    pub(crate) fn draw(&self, faults: &Faults) -> Option<Fault> {
        if !faults.any() {
            return None;
        }
        let n = self.drawn.fetch_add(1, Ordering::Relaxed);
        faults.pick(unit(splitmix64(faults.seed, n)))
    }

    /// Record that `fault` was injected.
    pub(crate) fn count(&self, fault: Fault) {
        let counter = match fault {
            Fault::Error => &self.errors,
            Fault::Reset => &self.resets,
            Fault::Stall => &self.stalls,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> FaultCounts {
        FaultCounts {
            errors: self.errors.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
        }
    }
}

/// The `n`th output of SplitMix64 seeded with `seed`: well mixed even for adjacent `n`.
fn splitmix64(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from the top 53 bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// SSE events sent before the connection is aborted: `response.created`, `response.in_progress`
/// and the first `response.output_item.added`, so the client has seen an item id.
const EVENTS_BEFORE_RESET: usize = 3;

/// The pause between the last bytes sent and the abort, so hyper flushes them first.
const FLUSH_PAUSE: Duration = Duration::from_millis(10);

/// `resp` with its body cut: the first few SSE events (`stream`) or the first half of the bytes,
/// then an error, on which hyper aborts the connection (over HTTP/2, resets the stream).
pub(crate) async fn cut(resp: Response, stream: bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = match stream {
        true => aborted_after(
            body.into_data_stream()
                .take(EVENTS_BEFORE_RESET)
                .map(|chunk| chunk.map_err(io::Error::other)),
        ),
        false => {
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len() / 2);
            aborted_after(futures_util::stream::iter([Ok(half)]))
        }
    };
    Response::from_parts(parts, body)
}

/// A body that yields `head`, pauses, then fails.
fn aborted_after<S>(head: S) -> Body
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let abort = futures_util::stream::once(async {
        tokio::time::sleep(FLUSH_PAUSE).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "fault injected: connection reset",
        ))
    });
    Body::from_stream(head.chain(abort))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(error_rate: f64, reset_rate: f64, stall_rate: f64) -> Faults {
        Faults {
            error_rate,
            reset_rate,
            stall_rate,
            stall: Duration::ZERO,
            seed: 7,
        }
    }

    #[test]
    fn slices_follow_the_rates() {
        let f = faults(0.1, 0.2, 0.3);
        assert_eq!(f.pick(0.0), Some(Fault::Error));
        assert_eq!(f.pick(0.15), Some(Fault::Reset));
        assert_eq!(f.pick(0.45), Some(Fault::Stall));
        assert_eq!(f.pick(0.65), None);
        assert_eq!(faults(1.0, 0.0, 0.0).pick(0.999_999), Some(Fault::Error));
        assert_eq!(Faults::default().pick(0.0), None);
    }

    #[test]
    fn draws_are_uniform_and_reproducible() {
        let f = faults(0.25, 0.25, 0.25);
        let (a, b) = (FaultState::default(), FaultState::default());
        let mut seen = [0u32; 4];
        for _ in 0..40_000 {
            let fault = a.draw(&f);
            assert_eq!(fault, b.draw(&f));
            let slot = match fault {
                Some(Fault::Error) => 0,
                Some(Fault::Reset) => 1,
                Some(Fault::Stall) => 2,
                None => 3,
            };
            seen[slot] += 1;
        }
        assert!(
            seen.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn no_faults_draw_nothing() {
        let state = FaultState::default();
        assert_eq!(state.draw(&Faults::default()), None);
        assert_eq!(state.drawn.load(Ordering::Relaxed), 0);
    }
}
