//! Keeping a JSON text small as it streams by: string values longer than a bound are dropped.
//!
//! Capture needs the shape of a response (types, ids, call ids, small items), never the megabytes
//! of base64 an image result or a partial image carries. Strings are the only JSON values that
//! can be large, and their boundaries can be found without parsing the rest, so the copy capture
//! keeps is the body with every long string replaced by a marker: bounded memory, no second
//! buffering of the body, and no copy of the payload.

/// What a dropped string becomes; an item containing it is never kept in full.
pub(super) const MARKER: &[u8] = b"\"\\u0000rethread-elided\"";

/// Keys whose string values are payloads no kept item needs (an image call's base64 `result`;
/// image calls are never kept in full): such a value is dropped once it passes `BULKY_MAX`
/// instead of being copied up to the general bound first, which for a 1.5 MB image was 256 KiB
/// copied and thrown away per response. The key alone decides: servers order an item's keys
/// differently (the API writes `type` first, a sorted map writes `result` first). No item type
/// kept in full has a string `result` in the API's schema; an unknown item that had one would
/// lose only its full copy (it is still remembered by id), never a repair that was correct.
const BULKY_KEYS: [&[u8]; 2] = [RESULT_KEY, b"\"partial_image_b64\""];
const RESULT_KEY: &[u8] = b"\"result\"";
const BULKY_MAX: usize = 1024;

#[derive(Debug)]
pub(super) struct Eliding {
    out: Vec<u8>,
    max_string: usize,
    in_string: bool,
    escaped: bool,
    /// Where the current string's opening quote was written.
    string_start: usize,
    /// Inside a string already dropped: scanning for its end without writing.
    dropping: bool,
    /// The bound of the current string.
    bound: usize,
    /// Where the last kept string (a key, if a `:` follows it) starts and ends in `out`.
    last_string: Option<(usize, usize)>,
    /// The bound of a `result` value: an image kept for an unstored turn (`keeping_results`).
    result_max: usize,
}

impl Eliding {
    pub(super) fn new(max_string: usize) -> Self {
        Eliding {
            out: Vec::new(),
            max_string,
            in_string: false,
            escaped: false,
            string_start: 0,
            dropping: false,
            bound: max_string,
            last_string: None,
            result_max: BULKY_MAX.min(max_string),
        }
    }

    /// Keeps `result` values up to `max` bytes (the image results of an unstored turn, which
    /// can only be replayed in full).
    pub(super) fn keeping_results(mut self, max: usize) -> Self {
        self.result_max = self.result_max.max(max);
        self
    }

    /// The length up to which a text pushed after `clear` passes unchanged: no string in it can
    /// be long enough to be dropped (the smallest bound is a bulky key's).
    pub(super) fn unchanged_up_to(&self) -> usize {
        BULKY_MAX.min(self.max_string)
    }

    /// The kept text so far.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.out
    }

    pub(super) fn len(&self) -> usize {
        self.out.len()
    }

    pub(super) fn clear(&mut self) {
        self.out.clear();
        self.in_string = false;
        self.escaped = false;
        self.dropping = false;
        self.last_string = None;
    }

    /// The bound of a string opening at the end of `out`: a bulky key's value has its own.
    fn bound_of_value(&self) -> usize {
        let Some((start, end)) = self.last_string else {
            return self.max_string;
        };
        let between = &self.out[end..];
        let key = &self.out[start..end];
        if !between.iter().filter(|b| !b.is_ascii_whitespace()).eq(b":") {
            self.max_string
        } else if key == RESULT_KEY {
            self.result_max
        } else if BULKY_KEYS.contains(&key) {
            BULKY_MAX.min(self.max_string)
        } else {
            self.max_string
        }
    }

    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if !self.in_string {
                // Outside strings everything is kept, up to the next opening quote.
                match memchr::memchr(b'"', bytes) {
                    Some(i) => {
                        self.out.extend_from_slice(&bytes[..i]);
                        self.bound = self.bound_of_value();
                        self.string_start = self.out.len();
                        self.out.push(b'"');
                        self.in_string = true;
                        self.escaped = false;
                        self.dropping = false;
                        bytes = &bytes[i + 1..];
                    }
                    None => {
                        self.out.extend_from_slice(bytes);
                        return;
                    }
                }
                continue;
            }
            if self.escaped {
                self.escaped = false;
                if !self.dropping {
                    self.out.push(bytes[0]);
                }
                bytes = &bytes[1..];
                continue;
            }
            // Inside a string: jump to the next quote or backslash.
            let next = memchr::memchr2(b'"', b'\\', bytes);
            let run = next.unwrap_or(bytes.len());
            if !self.dropping {
                self.out.extend_from_slice(&bytes[..run]);
                if self.out.len() - self.string_start > self.bound {
                    self.out.truncate(self.string_start);
                    self.dropping = true;
                }
            }
            let Some(i) = next else { return };
            if bytes[i] == b'\\' {
                self.escaped = true;
                if !self.dropping {
                    self.out.push(b'\\');
                }
            } else {
                self.in_string = false;
                if self.dropping {
                    self.out.extend_from_slice(MARKER);
                    self.dropping = false;
                    self.last_string = None;
                } else {
                    self.out.push(b'"');
                    self.last_string = Some((self.string_start, self.out.len()));
                }
            }
            bytes = &bytes[i + 1..];
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn elide(text: &str, max: usize, split: usize) -> String {
        let mut e = Eliding::new(max);
        for chunk in text.as_bytes().chunks(split) {
            e.push(chunk);
        }
        String::from_utf8(e.bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_marker_reads_as_the_string_repair_knows_as_elided() {
        let text: String = serde_json::from_slice(MARKER).unwrap();
        assert_eq!(text, crate::repair::content::ELIDED);
    }

    #[test]
    fn long_strings_are_dropped_at_any_chunk_boundary() {
        let text = r#"{"id":"ig_1","result":"QUFBQUFBQUFBQUFBQUFB","esc":"a\"b\\","n":[1,2]}"#;
        for split in 1..text.len() {
            let out = elide(text, 8, split);
            assert_eq!(
                out, r#"{"id":"ig_1","result":"\u0000rethread-elided","esc":"a\"b\\","n":[1,2]}"#,
                "{split}"
            );
            assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
        }
    }

    #[test]
    fn an_image_result_is_dropped_without_being_copied_first() {
        let image = "QUFB".repeat(25_000);
        let text =
            format!(r#"{{"type":"image_generation_call","result" : "{image}","note":"{image}"}}"#);
        for split in [7, 1000, 16 * 1024, text.len()] {
            let mut e = Eliding::new(256 << 10);
            for chunk in text.as_bytes().chunks(split) {
                e.push(chunk);
                assert!(
                    e.len() < 100_000 + 2048,
                    "split {split}: the result was copied ({} bytes)",
                    e.len()
                );
            }
            let out = String::from_utf8(e.bytes().to_vec()).unwrap();
            // Only the bulky key's value goes early; another long string keeps the general bound.
            assert_eq!(
                out,
                format!(
                    r#"{{"type":"image_generation_call","result" : "\u0000rethread-elided","note":"{image}"}}"#
                ),
                "{split}"
            );
        }
        let mut e = Eliding::new(256 << 10);
        e.push(format!(r#"{{"items":["result","{image}"]}}"#).as_bytes());
        assert!(e.len() > 100_000, "a value after a comma is not a key's");
    }

    #[test]
    fn short_texts_pass_unchanged() {
        let text = r#"{"type":"reasoning","summary":[{"text":"é \" \\u00e9"}]}"#;
        assert_eq!(elide(text, 1000, 3), text);
    }

    #[test]
    fn a_long_string_full_of_escapes_is_dropped() {
        let text = format!(r#"{{"a":"{}"}}"#, "\\\"".repeat(100));
        assert_eq!(elide(&text, 10, 7), r#"{"a":"\u0000rethread-elided"}"#);
    }
}
