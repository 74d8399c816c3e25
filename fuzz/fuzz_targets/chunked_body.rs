//! Any upstream body read as chunked, fed at arbitrary boundaries: the decoder never panics,
//! and decodes (or refuses) the same bytes the same way however a read splits them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [split, body @ ..] = data else { return };
    let whole = rethread::decode_chunked(body, body.len());
    let pieces = rethread::decode_chunked(body, usize::from(*split));
    assert_eq!(whole, pieces, "read boundaries changed the decoded body");
});
