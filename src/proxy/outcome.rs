//! What a handler reports about a request for its log line and metrics.

use std::time::Duration;

/// A handler's account of one request, beside its response.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Items placed into the request.
    pub inserted: usize,
    /// Time spent waiting for the upstream's response heads.
    pub upstream: Duration,
}
