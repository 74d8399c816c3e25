//! Server-sent-event framing, incremental and frugal.
//!
//! Chunks arrive split anywhere. Data lines of events capture does not need (partial images,
//! text deltas) are skipped as they stream by, without being buffered; only the events that
//! carry items are assembled. An event is known unneeded by its name (`event:`), or, when no
//! name comes before its data (some servers write none), by the `type` its data starts with.
//! Lines end in `\n` or `\r\n`. A data line is streamed into the event's data as it arrives,
//! with long JSON strings (image results) dropped without a copy.

use super::elide::Eliding;
use super::response::leading_string;

/// Assembles events from chunks.
#[derive(Debug)]
pub(super) struct SseFramer {
    /// The current line, while it is not a data line being streamed.
    line: Vec<u8>,
    mode: Line,
    /// Whether the current event's name (its `event:` line) is one capture reads; `None`
    /// until a name is given (an unnamed event is read).
    named_wanted: Option<bool>,
    /// The current event, unnamed so far, has data that starts with a `type` capture does not
    /// read: the rest of it is skipped whatever name comes later (the builder would pass over
    /// the whole of it). Named events are told apart by their names alone.
    typed_out: bool,
    /// The current event's data, with long strings dropped as they stream by.
    data: Eliding,
    has_data: bool,
    /// A data line's leading space is not part of its value.
    strip_space: bool,
    /// A `\r` held back in case a `\n` follows.
    pending_cr: bool,
    max_event: usize,
    overflowed: bool,
    /// Whole lines are read without being collected where that changes nothing
    /// (`whole_line`); off only to test that it changes nothing.
    whole_lines: bool,
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
    /// The kind an event's data names by its leading `type`, when the JSON starts with it, as
    /// the API and the fake write every event (`{"type":"response.output_text.delta",…`);
    /// `None` otherwise (another key order, spaces, an escape in the name): such an event is
    /// parsed whole.
    pub(super) fn leading(data: &[u8]) -> Option<Self> {
        leading_string(data, br#"{"type":""#).map(Self::of)
    }

    pub(super) fn of(ty: &[u8]) -> Self {
        match ty {
            b"response.created" | b"response.in_progress" | b"response.queued" => Self::Started,
            b"response.output_item.done" => Self::ItemDone,
            b"response.completed" | b"response.incomplete" | b"response.failed" => Self::Terminal,
            _ => Self::Other,
        }
    }
}

/// Whether an event's data starts with a `type` capture does not read (`EventKind::leading`).
fn names_nothing_read(data: &[u8]) -> bool {
    EventKind::leading(data) == Some(EventKind::Other)
}

/// Whether an `event:` line's value (after the colon, without its line end) names an event
/// whose data capture reads; others are skipped. The wanted names are ASCII: a value that is not
/// UTF-8 is none of them.
fn names_wanted(value: &[u8]) -> bool {
    let name = value.strip_prefix(b" ").unwrap_or(value);
    EventKind::of(name) != EventKind::Other
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
            typed_out: false,
            data: Eliding::new(max_string).keeping_results(max_result),
            has_data: false,
            strip_space: false,
            pending_cr: false,
            max_event,
            overflowed: false,
            whole_lines: true,
        }
    }

    /// Whether an event was dropped for exceeding the bound.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    fn wanted(&self) -> bool {
        !self.typed_out && self.named_wanted.unwrap_or(true)
    }

    /// Feeds a chunk; `on_event` receives the data of each complete event worth reading.
    pub(super) fn push(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(&[u8])) {
        while !chunk.is_empty() {
            if self.whole_lines && self.mode == Line::Start && self.line.is_empty() {
                let used = self.whole_line(chunk, on_event);
                if used > 0 {
                    chunk = &chunk[used..];
                    continue;
                }
            }
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

    /// At a line's start, the lines most of a stream is made of, read in one step when the
    /// chunk holds them whole: a blank line (the event ends), an `event:` line, any line of an
    /// event capture does not read but the two that can change that (a blank line, an `event:`
    /// line), and the first data line of an unnamed event that names a type capture does not
    /// read (`first_data_line_typed_out`). Returns the bytes used; 0 leaves the line to the
    /// general path, which reads it with the same result byte by byte however it is split.
    fn whole_line(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(&[u8])) -> usize {
        match chunk[0] {
            b'\n' => {
                self.end_line(on_event);
                1
            }
            b'e' => {
                let Some(rest) = chunk.strip_prefix(b"event:") else {
                    return 0;
                };
                match memchr::memchr(b'\n', rest) {
                    // Longer lines are dropped by the general path, name and all.
                    Some(end) if b"event:".len() + end <= MAX_FIELD_LINE => {
                        let value = &rest[..end];
                        let value = value.strip_suffix(b"\r").unwrap_or(value);
                        self.named_wanted = Some(names_wanted(value));
                        b"event:".len() + end + 1
                    }
                    _ => 0,
                }
            }
            b'\r' => 0,
            _ if !self.wanted() => match memchr::memchr(b'\n', chunk) {
                Some(end) => end + 1,
                None => {
                    // The rest of the line, in later chunks, is dropped as it comes.
                    self.mode = Line::Skip;
                    chunk.len()
                }
            },
            b'd' if !self.has_data && self.named_wanted.is_none() => {
                self.first_data_line_typed_out(chunk)
            }
            _ => 0,
        }
    }

    /// At a line's start, the first data line of an event not named yet, when the chunk holds it
    /// whole and its value passes through `data` unchanged and within bounds (so the general
    /// path would keep exactly these bytes): when it starts with a `type` capture does not read,
    /// the event is skipped from here (`typed_out`) and the line is used; else 0, and the
    /// general path reads it, deciding the same at its end (`end_line`).
    #[inline(never)] // only for unnamed events: kept out of the named stream's path
    fn first_data_line_typed_out(&mut self, chunk: &[u8]) -> usize {
        let Some(rest) = chunk.strip_prefix(b"data:") else {
            return 0;
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        // The events capture reads (an item, the response) have long lines: told apart by their
        // leading `type` before their end is looked for.
        if !names_nothing_read(rest) {
            return 0;
        }
        let Some(end) = memchr::memchr(b'\n', rest) else {
            return 0;
        };
        let value = &rest[..end];
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        if value.len() > self.max_event.min(self.data.unchanged_up_to())
            || !names_nothing_read(value)
        {
            return 0;
        }
        self.typed_out = true;
        chunk.len() - rest.len() + end + 1
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
            // (A named event is left to the builder: checking it here would cost every event
            // capture reads and change nothing the builder learns.)
            if mode == Line::Data
                && self.named_wanted.is_none()
                && names_nothing_read(self.data.bytes())
            {
                // At an event's first data line, the whole-line path decides the same at the
                // line's start.
                self.typed_out = true;
                self.data.clear();
                self.has_data = false;
            }
            return;
        }
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        if text.is_empty() {
            if self.has_data && self.wanted() {
                on_event(self.data.bytes());
            }
            self.named_wanted = None;
            self.typed_out = false;
            self.data.clear();
            self.has_data = false;
        } else if let Some(value) = text.strip_prefix(b"event:") {
            self.named_wanted = Some(names_wanted(value));
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
    fn an_events_leading_type_is_read_only_from_the_apis_own_form() {
        let leading = EventKind::leading;
        assert_eq!(
            leading(br#"{"type":"response.output_text.delta","delta":"x"}"#),
            Some(EventKind::Other)
        );
        assert_eq!(
            leading(br#"{"type":"response.output_item.done","item":{}}"#),
            Some(EventKind::ItemDone)
        );
        assert_eq!(
            leading(br#"{"delta":"x","type":"response.completed"}"#),
            None
        );
        assert_eq!(leading(br#"{ "type":"response.completed"}"#), None);
        assert_eq!(leading(br#"{"type":"response.\u0063ompleted"}"#), None);
        assert_eq!(leading(br#"{"type":"response.completed"#), None);
    }

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

    /// The events a framer gives for `stream` fed in `cuts`, and whether it overflowed.
    fn framed(
        stream: &[u8],
        cuts: &[usize],
        whole_lines: bool,
        max_string: usize,
    ) -> (Vec<Vec<u8>>, bool) {
        let mut framer = SseFramer::new(64, max_string, 0);
        framer.whole_lines = whole_lines;
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            let cut = cut.clamp(at, stream.len());
            framer.push(&stream[at..cut], &mut |d| out.push(d.to_vec()));
            at = cut;
        }
        (out, framer.overflowed())
    }

    /// Lines of the kinds a stream holds, and the odd ones the general path must settle (the
    /// 17th, an `event:` line longer than any field line kept, is made in `stream_of`).
    const LINES: [&str; 23] = [
        "event: response.output_item.done",
        "event: response.output_text.delta",
        "event:response.completed",
        "event: response.created\r",
        "event",
        "ev: x",
        "data: {\"type\":\"response.output_text.delta\"}",
        "data: {\"a\":1}\r",
        "data:xyz",
        "data",
        "data: 0123456789012345678901234567890123456789012345678901234567890123456789",
        ": comment",
        "id: 7",
        "\r",
        "",
        "",
        "event: response.output_item.done and a name too long to keep",
        // Unnamed events' first data lines, read by their leading `type`.
        "data:{\"type\":\"response.output_text.delta\",\"delta\":\"a b\"}\r",
        "data: {\"type\":\"response.output_item.done\",\"x\":1}",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"0123456789012345678901234567890123456789\"}",
        "data: {\"type\":\"response.output_text.delta\"",
        // Values of 64 and 65 bytes: at the bound on an event's data (`framed`) and past it.
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"xxxxxxxxxxxxxxxx\"}",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"xxxxxxxxxxxxxxxxx\"}",
    ];

    /// `lines` (indices into `LINES`) as a stream, each line ended by `\n`.
    fn stream_of(lines: &[usize]) -> String {
        let long_name = "x".repeat(MAX_FIELD_LINE);
        lines
            .iter()
            .map(|&l| match l {
                16 => format!("event: response.output_item.done{long_name}\n"),
                l => format!("{}\n", LINES[l]),
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        #[test]
        fn reading_whole_lines_gives_what_reading_byte_by_byte_gives(
            lines in proptest::collection::vec(0..LINES.len(), 0..40),
            cuts in proptest::collection::vec(0usize..6000, 0..12),
        ) {
            let stream = stream_of(&lines);
            let mut cuts = cuts;
            cuts.sort_unstable();
            // Strings kept whole, and strings of more than 8 bytes dropped (a `type` among them).
            for max_string in [1 << 20, 8] {
                let fast = framed(stream.as_bytes(), &cuts, true, max_string);
                let slow = framed(stream.as_bytes(), &cuts, false, max_string);
                proptest::prop_assert_eq!(fast, slow, "{:?}", stream);
            }
        }
    }

    #[test]
    fn an_unnamed_event_whose_first_line_names_a_type_not_read_is_skipped_whole() {
        // A server that names no event: a delta runs over two data lines, past the bound on
        // kept data, and names a wanted event after its first line; then an item. The delta is
        // skipped from its first line on (not kept, not counted against the bound); the item is
        // read, at any split.
        let stream = concat!(
            "data: {\"type\":\"response.output_text.delta\",\r\n",
            "data: \"delta\":\"0123456789012345678901234567890123456789012345678901234567890123\"}\n",
            "event: response.output_item.done\n",
            "data: {}\n\n",
            "data: {\"type\":\"response.output_item.done\"}\n\n",
        );
        for whole_lines in [true, false] {
            for split in 1..stream.len() {
                let cuts: Vec<usize> = (split..stream.len()).step_by(split).collect();
                let (events, overflowed) = framed(stream.as_bytes(), &cuts, whole_lines, 1 << 20);
                assert_eq!(
                    (events, overflowed),
                    (
                        vec![br#"{"type":"response.output_item.done"}"#.to_vec()],
                        false
                    ),
                    "split {split}, whole lines {whole_lines}"
                );
            }
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
