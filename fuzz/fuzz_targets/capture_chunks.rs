//! Any response body, JSON or SSE, plain or gzip, fed at arbitrary chunk boundaries: capture
//! never panics, and learns the same turn however the body was split.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use rethread::capture::{Capture, CaptureLimits, KeepPolicy};

const LIMITS: CaptureLimits = CaptureLimits {
    max_body: 1 << 20,
    keep: KeepPolicy { full_item_max: 1 << 12, image_max: 1 << 14 },
    stateless: true,
};

fn run(content_type: &str, encoding: Option<&str>, body: &[u8], split: usize) -> Option<String> {
    let mut capture = Capture::new(Some(content_type), encoding, LIMITS).ok()?;
    for chunk in body.chunks(split.max(1)) {
        capture.feed(chunk).ok()?;
    }
    capture.finish().ok().map(|t| format!("{t:?}"))
}

fuzz_target!(|data: &[u8]| {
    let [mode, split, rest @ ..] = data else { return };
    let content_type = if mode & 1 == 0 { "application/json" } else { "text/event-stream" };
    let (encoding, body) = if mode & 2 == 0 {
        (None, rest.to_vec())
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = gz.write_all(rest);
        (Some("gzip"), gz.finish().unwrap_or_default())
    };
    let whole = run(content_type, encoding, &body, body.len());
    let pieces = run(content_type, encoding, &body, usize::from(*split));
    if content_type == "text/event-stream" || whole.is_some() {
        assert_eq!(whole, pieces, "chunk boundaries changed what was learned");
    }
});
