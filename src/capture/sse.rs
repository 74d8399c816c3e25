//! Server-sent-event framing, incremental and frugal.
//!
//! Chunks arrive split anywhere. Data lines of events capture does not need (partial images,
//! text deltas) are skipped as they stream by, without being buffered; only the events that
//! carry items are assembled. Lines end in `\n` or `\r\n`. A data line is streamed into the
//! event's data as it arrives, with long JSON strings (image results) dropped without a copy.

use super::elide::Eliding;

/// Assembles events from chunks.
#[derive(Debug)]
pub(super) struct SseFramer {
    /// The current line, while it is not a data line being streamed.
    line: Vec<u8>,
    mode: Line,
    /// Whether the current event's name (its `event:` line) is one capture reads; `None`
    /// until a name is given (an unnamed event is read).
    named_wanted: Option<bool>,
    /// The current event's data, with long strings dropped as they stream by.
    data: Eliding,
    has_data: bool,
    /// A data line's leading space is not part of its value.
    strip_space: bool,
    /// A `\r` held back in case a `\n` follows.
    pending_cr: bool,
    max_event: usize,
    overflowed: bool,
}

/// What the current line is, as far as it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Its field name is not known yet.
    Start,
    /// A data line of an event capture reads: streamed into `data`.
    Data,
    /// A line to drop (data of an unwanted event, or too long).
    Skip,
}

/// Longest non-data line kept (event names, ids, comments).
const MAX_FIELD_LINE: usize = 4096;

/// The events capture reads, by `type` (an SSE event's name, a WebSocket frame's `type`);
/// every other is skipped unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventKind {
    /// The response began: whether it is stored, its id and parent.
    Started,
    /// One output item, complete.
    ItemDone,
    /// The response ended, with its whole output.
    Terminal,
    Other,
}

impl EventKind {
    pub(super) fn of(ty: &[u8]) -> Self {
        match ty {
            b"response.created" | b"response.in_progress" | b"response.queued" => Self::Started,
            b"response.output_item.done" => Self::ItemDone,
            b"response.completed" | b"response.incomplete" | b"response.failed" => Self::Terminal,
            _ => Self::Other,
        }
    }
}

/// Events whose data capture reads; others are skipped when named by an `event:` line.
pub(super) fn is_wanted(event: &str) -> bool {
    EventKind::of(event.as_bytes()) != EventKind::Other
}

impl SseFramer {
    /// `max_event` bounds the kept data of one event; `max_string` the longest JSON string kept
    /// in it (longer ones, like image results, are dropped without being copied), `max_result`
    /// an image result's (kept for an unstored turn).
    pub(super) fn new(max_event: usize, max_string: usize, max_result: usize) -> Self {
        SseFramer {
            line: Vec::new(),
            mode: Line::Start,
            named_wanted: None,
            data: Eliding::new(max_string).keeping_results(max_result),
            has_data: false,
            strip_space: false,
            pending_cr: false,
            max_event,
            overflowed: false,
        }
    }

    /// Whether an event was dropped for exceeding the bound.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    fn wanted(&self) -> bool {
        self.named_wanted.unwrap_or(true)
    }

    /// Feeds a chunk; `on_event` receives the data of each complete event worth reading.
    pub(super) fn push(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(&[u8])) {
        while !chunk.is_empty() {
            let newline = memchr::memchr(b'\n', chunk);
            let (part, rest) = match newline {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            match self.mode {
                Line::Start => {
                    // Only the field name is collected here; a data value streams on.
                    let named = memchr::memchr(b':', &self.line).is_some();
                    let take = match memchr::memchr(b':', part) {
                        Some(i) if !named => i + 1,
                        _ => part.len(),
                    };
                    self.line.extend_from_slice(&part[..take]);
                    self.classify();
                    let value = &part[take..];
                    match self.mode {
                        Line::Data => self.stream_data(value, rest.is_some()),
                        Line::Start => {
                            self.line.extend_from_slice(value);
                            self.classify();
                        }
                        Line::Skip => {}
                    }
                }
                Line::Data => self.stream_data(part, rest.is_some()),
                Line::Skip => {}
            }
            match rest {
                Some(rest) => {
                    self.end_line(on_event);
                    chunk = rest;
                }
                None => return,
            }
        }
    }

    /// Decides what the current line is once its field name is known.
    fn classify(&mut self) {
        let data_colon = memchr::memchr(b':', &self.line).filter(|&c| &self.line[..c] == b"data");
        let Some(colon) = data_colon else {
            // Not (yet) a data line: kept whole, unless it grows past any real field line.
            if self.line.len() > MAX_FIELD_LINE {
                self.line.clear();
                self.mode = Line::Skip;
            }
            return;
        };
        if !self.wanted() {
            self.line.clear();
            self.mode = Line::Skip;
            return;
        }
        let value = self.line.split_off(colon + 1);
        self.line.clear();
        self.mode = Line::Data;
        if self.has_data {
            self.data.push(b"\n");
        }
        self.has_data = true;
        self.strip_space = true;
        self.stream_data(&value, false);
    }

    fn stream_data(&mut self, mut part: &[u8], line_ends: bool) {
        if self.strip_space && !part.is_empty() {
            self.strip_space = false;
            if part[0] == b' ' {
                part = &part[1..];
            }
        }
        if self.pending_cr {
            self.pending_cr = false;
            if !(line_ends && part.is_empty()) {
                self.data.push(b"\r");
            }
        }
        if let Some(stripped) = part.strip_suffix(b"\r") {
            if line_ends {
                part = stripped;
            } else {
                self.pending_cr = true;
                part = stripped;
            }
        }
        self.data.push(part);
        if self.data.len() > self.max_event {
            self.overflowed = true;
            self.data.clear();
            self.has_data = false;
            self.mode = Line::Skip;
        }
    }

    fn end_line(&mut self, on_event: &mut dyn FnMut(&[u8])) {
        let mode = std::mem::replace(&mut self.mode, Line::Start);
        self.pending_cr = false;
        self.strip_space = false;
        if mode != Line::Start {
            self.line.clear();
            return;
        }
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        if text.is_empty() {
            if self.has_data && self.wanted() {
                on_event(self.data.bytes());
            }
            self.named_wanted = None;
            self.data.clear();
            self.has_data = false;
        } else if let Some(name) = text.strip_prefix(b"event:") {
            let name = name.strip_prefix(b" ").unwrap_or(name);
            // The wanted names are ASCII: a name that is not UTF-8 is not one of them.
            self.named_wanted = Some(std::str::from_utf8(name).is_ok_and(is_wanted));
        } else if text == b"data" {
            // `data` with no colon: an empty data line.
            if self.wanted() {
                if self.has_data {
                    self.data.push(b"\n");
                }
                self.has_data = true;
            }
        }
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8], split: usize) -> Vec<String> {
        let mut framer = SseFramer::new(1 << 20, 1 << 20, 0);
        let mut out = Vec::new();
        for chunk in stream.chunks(split.max(1)) {
            framer.push(chunk, &mut |d| {
                out.push(String::from_utf8_lossy(d).into_owned())
            });
        }
        out
    }

    const STREAM: &[u8] = b"event: response.created\ndata: {\"a\":1}\n\n: comment\nevent: response.output_text.delta\ndata: {\"skip\":true}\n\nevent: response.output_item.done\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata: {\"unnamed\":3}\n\n";

    #[test]
    fn wanted_events_are_assembled_at_any_chunk_boundary() {
        for split in 1..STREAM.len() {
            assert_eq!(
                events(STREAM, split),
                vec!["{\"a\":1}", "{\"b\":\n2}", "{\"unnamed\":3}"],
                "split {split}"
            );
        }
    }

    #[test]
    fn long_strings_in_event_data_are_dropped_as_they_stream() {
        let image = "QUFB".repeat(100_000);
        let stream = format!(
            "event: response.output_item.done\ndata: {{\"item\":{{\"id\":\"ig_1\",\"result\":\"{image}\"}}}}\n\n"
        );
        for split in [1usize, 7, 4096, stream.len()] {
            let mut framer = SseFramer::new(1 << 20, 1024, 0);
            let mut out = Vec::new();
            for chunk in stream.as_bytes().chunks(split) {
                framer.push(chunk, &mut |d| {
                    out.push(String::from_utf8_lossy(d).into_owned())
                });
            }
            assert_eq!(
                out,
                vec![r#"{"item":{"id":"ig_1","result":"\u0000rethread-elided"}}"#],
                "{split}"
            );
            assert!(
                framer.line.capacity() < 8192,
                "the line was never buffered whole"
            );
        }
    }

    #[test]
    fn oversized_events_are_dropped_and_noted() {
        let mut framer = SseFramer::new(8, 1 << 20, 0);
        let mut out = Vec::new();
        framer.push(
            b"event: response.completed\ndata: 0123456789abcdef\n\ndata: {}\n\n",
            &mut |d| out.push(d.to_vec()),
        );
        assert!(framer.overflowed());
        assert_eq!(out, vec![b"{}".to_vec()]);
    }
}
