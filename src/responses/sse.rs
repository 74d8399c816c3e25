//! Server-sent-event framing, incremental and frugal.
//!
//! Chunks arrive split anywhere. Data lines of events capture does not need (partial images,
//! text deltas) are skipped as they stream by, without being buffered; only the events that
//! carry items are assembled. Lines end in `\n` or `\r\n`.

/// Assembles events from chunks.
#[derive(Debug)]
pub struct SseFramer {
    line: Vec<u8>,
    /// Discarding the rest of the current line.
    skipping: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    max_event: usize,
    overflowed: bool,
}

/// Events whose data capture reads; others are skipped when named by an `event:` line.
pub fn is_wanted(event: &str) -> bool {
    matches!(
        event,
        "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.output_item.done"
            | "response.completed"
            | "response.incomplete"
            | "response.failed"
    )
}

impl SseFramer {
    /// `max_event` bounds the data of one event; a larger event is dropped and noted.
    pub fn new(max_event: usize) -> Self {
        SseFramer {
            line: Vec::new(),
            skipping: false,
            event: None,
            data: Vec::new(),
            has_data: false,
            max_event,
            overflowed: false,
        }
    }

    /// Whether an event was dropped for exceeding the bound.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds a chunk; `on_event` receives the data of each complete event worth reading.
    pub fn push(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(&[u8])) {
        while !chunk.is_empty() {
            let newline = memchr::memchr(b'\n', chunk);
            let (part, rest) = match newline {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            if !self.skipping {
                self.line.extend_from_slice(part);
                if self.should_skip_line() {
                    self.skipping = true;
                    self.line.clear();
                }
            }
            match rest {
                Some(rest) => {
                    if !self.skipping {
                        let line = std::mem::take(&mut self.line);
                        self.on_line(&line, on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    self.skipping = false;
                    chunk = rest;
                }
                None => return,
            }
        }
    }

    /// A partial line can be dropped as soon as it is known to be unwanted data, or too long.
    fn should_skip_line(&mut self) -> bool {
        if self.line.len() + self.data.len() > self.max_event {
            self.overflowed = true;
            self.data.clear();
            self.has_data = false;
            return true;
        }
        self.line.starts_with(b"data:") && self.event.as_deref().is_some_and(|e| !is_wanted(e))
    }

    fn on_line(&mut self, line: &[u8], on_event: &mut dyn FnMut(&[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data && self.event.as_deref().is_none_or(is_wanted) {
                on_event(&self.data);
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return, // comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if self.event.as_deref().is_some_and(|e| !is_wanted(e)) {
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8], split: usize) -> Vec<String> {
        let mut framer = SseFramer::new(1 << 20);
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
    fn oversized_events_are_dropped_and_noted() {
        let mut framer = SseFramer::new(8);
        let mut out = Vec::new();
        framer.push(
            b"event: response.completed\ndata: 0123456789abcdef\n\ndata: {}\n\n",
            &mut |d| out.push(d.to_vec()),
        );
        assert!(framer.overflowed());
        assert_eq!(out, vec![b"{}".to_vec()]);
    }
}
