//! A turn built from a stream's events as they pass (SSE events and WebSocket frames alike).
//!
//! Items are keyed by `output_index` (some compatible servers change ids between events; the
//! final id is the one in `output_item.done` / `response.completed`), and the terminal event's
//! repeat of every item is not read again when each already arrived in its own
//! `output_item.done`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::response::{has_id, link, read_item, text, turn_of, ResponseFacts, ResponseFields};
use super::sse::EventKind;
use super::{CaptureError, KeepPolicy};
use crate::repair::items::{Turn, TurnItem};

#[derive(Deserialize)]
struct EventFields<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(borrow, default)]
    item: Option<&'a RawValue>,
    /// Read in the same pass as the event (a response's text is not scanned twice).
    #[serde(borrow, default)]
    response: Option<ResponseFields<'a>>,
}

/// An `output_item.done` event in the API's own form,
/// `{"type":"response.output_item.done","sequence_number":7,"output_index":1,"item":{…}}`:
/// its index and its item's text, found without reading the item, so that the item is read
/// once (`read_item`) instead of skipped over and then read. `None` for any other form (another
/// key order or key, spaces, a number that is not plain digits), which is parsed whole.
///
/// The slice is the item the whole parse would give only because the caller reads it with
/// `read_item`, which refuses anything after the item's object: `{…},"item":{…}` or
/// `{…},"output_index":2` do not read, and the event then goes to the whole parse.
fn item_done_in_api_form(data: &[u8]) -> Option<(u64, &str)> {
    let rest = data.strip_prefix(br#"{"type":"response.output_item.done","#)?;
    let rest = match rest.strip_prefix(br#""sequence_number":"#) {
        Some(after) => after.get(plain_number(after)?.1..)?.strip_prefix(b",")?,
        None => rest,
    };
    let rest = rest.strip_prefix(br#""output_index":"#)?;
    let (index, digits) = plain_number(rest)?;
    let item = rest[digits..]
        .strip_prefix(br#","item":"#)?
        .strip_suffix(b"}")?;
    if !(item.starts_with(b"{") && item.ends_with(b"}")) {
        return None;
    }
    Some((index, std::str::from_utf8(item).ok()?))
}

/// The digits of a non-negative integer as JSON writes it (no leading zero) at `text`'s start:
/// its value and its length; `None` past `u64::MAX`. (The caller requires a `,` next: no
/// fraction, no exponent.)
fn plain_number(text: &[u8]) -> Option<(u64, usize)> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && text[0] == b'0') {
        return None;
    }
    let value = text[..digits].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((value, digits))
}

/// Builds a turn from stream events.
#[derive(Debug)]
pub struct TurnBuilder {
    keep: KeepPolicy,
    stored: bool,
    /// A start event (`response.created`, `in_progress`, `queued`) gave the response's id and
    /// whether it is stored: the later ones repeat the same response and are not read again.
    /// One that gave less does not count (a later one still fills what it left out).
    started: bool,
    /// The response's id and `previous_response_id`, from `response.created`.
    id: Option<Box<str>>,
    parent: Option<Box<str>>,
    done: BTreeMap<u64, TurnItem>,
    terminal: Option<Turn>,
    /// What the response says of itself, read only when asked for (`with_facts`).
    pub(super) facts: Option<ResponseFacts>,
}

impl TurnBuilder {
    pub fn new(keep: KeepPolicy) -> Self {
        TurnBuilder {
            keep,
            stored: true,
            started: false,
            id: None,
            parent: None,
            done: BTreeMap::new(),
            terminal: None,
            facts: None,
        }
    }

    /// Also reads what the response says of itself (`facts`): for a trace, and only then.
    pub fn with_facts(mut self) -> Self {
        self.facts = Some(ResponseFacts::default());
        self
    }

    /// Reads one event's data; says whether it was a terminal event (the response is over).
    /// Unknown events are ignored.
    pub fn on_event(&mut self, data: &[u8]) -> Result<bool, CaptureError> {
        // Most of a stream is deltas: an event whose leading `type` says capture does not read
        // it is passed over unparsed, and so is a start event after the first.
        match EventKind::leading(data) {
            Some(EventKind::Other) => return Ok(false),
            Some(EventKind::Started) if self.started => return Ok(false),
            Some(EventKind::ItemDone) if self.read_item_done_in_api_form(data) => return Ok(false),
            _ => {}
        }
        let event: EventFields<'_> = serde_json::from_slice(data)?;
        let kind = event
            .ty
            .as_deref()
            .map_or(EventKind::Other, |ty| EventKind::of(ty.as_bytes()));
        match kind {
            EventKind::Started if !self.started => {
                if let Some(fields) = event.response {
                    let id = text(fields.id);
                    self.started = id.is_some() && fields.store.is_some();
                    if let Some(facts) = &mut self.facts {
                        facts.read(&fields);
                    }
                    self.stored = fields.store != Some(false);
                    self.id = id.map(Into::into);
                    self.parent = text(fields.previous_response_id).map(Into::into);
                }
            }
            EventKind::ItemDone => {
                if let (Some(index), Some(item)) = (event.output_index, event.item) {
                    self.read_done_item(index, item.get())?;
                }
            }
            EventKind::Terminal => {
                if let Some(response) = event.response {
                    self.terminal = self.terminal_turn(response)?;
                }
                return Ok(true);
            }
            EventKind::Started | EventKind::Other => {}
        }
        Ok(false)
    }

    /// Reads an `output_item.done` event in the API's form (`item_done_in_api_form`); false
    /// when it is not in that form or its item does not read: the general path reads it then
    /// (and gives the error, if any).
    fn read_item_done_in_api_form(&mut self, data: &[u8]) -> bool {
        item_done_in_api_form(data)
            .is_some_and(|(index, item)| self.read_done_item(index, item).is_ok())
    }

    /// Keeps the item at `index` of the output, from its JSON text.
    fn read_done_item(&mut self, index: u64, item: &str) -> Result<(), CaptureError> {
        if let Some(item) = read_item(item, self.stored, self.keep)? {
            self.done.insert(index, item);
        }
        Ok(())
    }

    /// The turn a terminal event's response holds. When every item of its `output` was read
    /// already, from its own `output_item.done`, the repeat is not read again: only the
    /// response's own fields are.
    fn terminal_turn(&mut self, fields: ResponseFields<'_>) -> Result<Option<Turn>, CaptureError> {
        let stored = fields.store != Some(false);
        let output = fields.output.as_deref().unwrap_or_default();
        let count = output.len();
        let all_read = count > 0
            && stored == self.stored
            && self.done.len() == count
            && self.done.keys().copied().eq(0..count as u64)
            && output
                .iter()
                .zip(self.done.values())
                .all(|(raw, item)| has_id(raw, &item.id));
        if !all_read {
            return turn_of(fields, self.keep, self.facts.as_mut());
        }
        if let Some(facts) = &mut self.facts {
            facts.read(&fields);
        }
        let (id, parent) = (text(fields.id), text(fields.previous_response_id));
        Ok(Some(Turn {
            stored,
            items: std::mem::take(&mut self.done).into_values().collect(),
            link: link(id.as_deref(), parent.as_deref(), true),
        }))
    }

    /// What the response's events said of it so far.
    pub fn facts(&self) -> Option<&ResponseFacts> {
        self.facts.as_ref()
    }

    /// The turn: the terminal event's output, or else the items completed before the stream
    /// ended.
    pub fn finish(self) -> Option<Turn> {
        if self.terminal.is_some() {
            return self.terminal;
        }
        (!self.done.is_empty()).then(|| Turn {
            stored: self.stored,
            items: self.done.into_values().collect(),
            // The stream ended before its terminal event: its output is not whole.
            link: link(self.id.as_deref(), self.parent.as_deref(), false),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::capture::tests::LIMITS;

    /// The item of an `output_item.done` event as the whole parse reads it (`Err`: it does not
    /// read).
    fn item_done_parsed_whole(data: &[u8]) -> Result<Option<(u64, TurnItem)>, CaptureError> {
        let event: EventFields<'_> = serde_json::from_slice(data)?;
        let (Some(index), Some(item)) = (event.output_index, event.item) else {
            return Ok(None);
        };
        // As an unstored turn's: its items are kept in full, so their bytes are compared too.
        Ok(read_item(item.get(), false, LIMITS.keep)?.map(|item| (index, item)))
    }

    const MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}"#;

    #[test]
    fn an_item_done_event_in_the_apis_form_is_read_in_one_pass() {
        let data = format!(
            r#"{{"type":"response.output_item.done","sequence_number":12,"output_index":3,"item":{MESSAGE}}}"#
        );
        let (index, item) = item_done_in_api_form(data.as_bytes()).unwrap();
        assert_eq!((index, item), (3, MESSAGE));
        let mut builder = TurnBuilder::new(LIMITS.keep);
        builder.stored = false;
        assert!(builder.read_item_done_in_api_form(data.as_bytes()));
        assert!(builder.done[&3].full.is_some());
        let whole = item_done_parsed_whole(data.as_bytes()).unwrap().unwrap();
        assert_eq!((3, &builder.done[&3]), (whole.0, &whole.1));
    }

    /// Pieces of `output_item.done` events: the API's form and its near misses.
    const SEQUENCES: [&str; 7] = [
        "",
        r#""sequence_number":7,"#,
        r#""sequence_number":0,"#,
        r#""sequence_number":07,"#,
        r#""sequence_number":1e3,"#,
        r#""sequence_number":-1,"#,
        r#""sequence_number":99999999999999999999999,"#,
    ];
    const INDEXES: [&str; 10] = [
        "0",
        "1",
        "01",
        "1.0",
        "2e1",
        "-1",
        " 1",
        "18446744073709551615",
        "18446744073709551616",
        "",
    ];
    const ITEMS: [&str; 12] = [
        MESSAGE,
        r#"{"id":"msg_1","type":"message","content":[]} "#,
        r#" {"id":"msg_1","type":"message","content":[]}"#,
        r#"{"id":"rs_1","type":"reasoning","summary":[],"encrypted_content":"gAAA"}"#,
        r#"{"id":"msg_\u0031","type":"message","content":[{"type":"output_text","text":"\"}"}]}"#,
        r#"{"type":"message"}"#,
        "{}",
        r#""msg_1""#,
        r#"{"id":"msg_1","type":"message"},"extra":1"#,
        r#"{"id":"msg_1","type":"message"},"item":{"id":"msg_2","type":"message"}"#,
        r#"{"id":"msg_1","type":"message" "#,
        r#"{"id":"msg_1","type":"message"} "#,
    ];
    const ENDS: [&str; 5] = ["}", " }", "}}", "}\n", ""];

    /// Whether the one-pass read takes `data`, and if so, that it gives what the whole parse
    /// gives.
    fn one_pass_read_agrees(data: &[u8]) -> bool {
        let mut builder = TurnBuilder::new(LIMITS.keep);
        builder.stored = false;
        if !builder.read_item_done_in_api_form(data) {
            return false;
        }
        let text = String::from_utf8_lossy(data);
        let whole = item_done_parsed_whole(data);
        assert!(
            whole.is_ok(),
            "taken, but the whole parse refuses it: {text}"
        );
        let read = builder.done.into_iter().next();
        assert_eq!(read, whole.ok().flatten(), "{text}");
        true
    }

    /// Whatever an `output_item.done` event looks like (every combination of the pieces above,
    /// in both key orders), the one-pass read takes it only when it gives what the whole parse
    /// gives.
    #[test]
    fn the_one_pass_read_of_an_item_gives_what_the_whole_parse_gives() {
        let mut taken = 0;
        for sequence in SEQUENCES {
            for index in INDEXES {
                for item in ITEMS {
                    for end in ENDS {
                        let api_order = format!(
                            r#"{{"type":"response.output_item.done",{sequence}"output_index":{index},"item":{item}{end}"#
                        );
                        let other_order = format!(
                            r#"{{"type":"response.output_item.done",{sequence}"item":{item},"output_index":{index}{end}"#
                        );
                        taken += usize::from(one_pass_read_agrees(api_order.as_bytes()));
                        assert!(!one_pass_read_agrees(other_order.as_bytes()));
                    }
                }
            }
        }
        assert!(taken > 0);
        // Near misses the pieces do not make.
        for data in [
            // The envelope never closes; the item's own closing braces could pass for it.
            &br#"{"type":"response.output_item.done","output_index":1,"item":{"id":"msg_1","type":"message","o":{}}"#[..],
            // A lone surrogate, a raw control character, bytes that are not UTF-8.
            br#"{"type":"response.output_item.done","output_index":1,"item":{"id":"msg_\ud800","type":"message"}}"#,
            b"{\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"id\":\"msg_\x01\",\"type\":\"message\"}}",
            b"{\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"id\":\"msg_\xff\",\"type\":\"message\"}}",
            // Spaces between members.
            br#"{"type":"response.output_item.done", "output_index":1,"item":{"id":"msg_1","type":"message"}}"#,
            br#"{"type":"response.output_item.done","sequence_number":1 ,"output_index":1,"item":{"id":"msg_1","type":"message"}}"#,
        ] {
            one_pass_read_agrees(data);
        }
    }

    #[test]
    fn a_start_event_after_the_first_is_not_read_again() {
        let mut builder = TurnBuilder::new(LIMITS.keep);
        let created = br#"{"type":"response.created","response":{"id":"resp_A","store":false}}"#;
        let again = br#"{"type":"response.in_progress","response":{"id":"resp_B","store":true}}"#;
        builder.on_event(created).unwrap();
        builder.on_event(again).unwrap();
        assert_eq!(
            (builder.id.as_deref(), builder.stored),
            (Some("resp_A"), false)
        );
        // Not even parsed: a broken repeat spoils nothing.
        let broken = br#"{"type":"response.in_progress","response":{"id":"#;
        assert!(matches!(builder.on_event(broken), Ok(false)));
        // A start event that does not give the response's id and whether it is stored does not
        // count as the first: a later one fills what it left out.
        for first in [
            &br#"{"type":"response.created"}"#[..],
            br#"{"type":"response.created","response":{}}"#,
            br#"{"type":"response.created","response":{"id":"resp_A"}}"#,
            br#"{"type":"response.created","response":{"store":false}}"#,
        ] {
            let mut builder = TurnBuilder::new(LIMITS.keep);
            builder.on_event(first).unwrap();
            builder.on_event(again).unwrap();
            assert_eq!(
                (builder.id.as_deref(), builder.stored),
                (Some("resp_B"), true),
                "{}",
                String::from_utf8_lossy(first)
            );
        }
    }
}
