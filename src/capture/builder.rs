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

use super::response::{
    has_id, leading_string, link, read_item, text, turn_of, ResponseFacts, ResponseFields,
};
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

/// The `type` of an event whose JSON starts with it, as the API and the fake write every
/// event (`{"type":"response.output_text.delta",…`); `None` otherwise (another key order,
/// spaces, an escape in the name), and the event is then parsed whole.
fn leading_type(data: &[u8]) -> Option<&[u8]> {
    leading_string(data, br#"{"type":""#)
}

/// Builds a turn from stream events.
#[derive(Debug)]
pub struct TurnBuilder {
    keep: KeepPolicy,
    stored: bool,
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
        // it is passed over unparsed.
        if leading_type(data).is_some_and(|ty| EventKind::of(ty) == EventKind::Other) {
            return Ok(false);
        }
        let event: EventFields<'_> = serde_json::from_slice(data)?;
        let kind = event
            .ty
            .as_deref()
            .map_or(EventKind::Other, |ty| EventKind::of(ty.as_bytes()));
        match kind {
            EventKind::Started => {
                if let Some(fields) = event.response {
                    if let Some(facts) = &mut self.facts {
                        facts.read(&fields);
                    }
                    self.stored = fields.store != Some(false);
                    self.id = text(fields.id).map(Into::into);
                    self.parent = text(fields.previous_response_id).map(Into::into);
                }
            }
            EventKind::ItemDone => {
                if let (Some(index), Some(item)) = (event.output_index, event.item) {
                    if let Some(item) = read_item(item, self.stored, self.keep)? {
                        self.done.insert(index, item);
                    }
                }
            }
            EventKind::Terminal => {
                if let Some(response) = event.response {
                    self.terminal = self.terminal_turn(response)?;
                }
                return Ok(true);
            }
            EventKind::Other => {}
        }
        Ok(false)
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
mod tests {
    use super::*;

    #[test]
    fn an_events_leading_type_is_read_only_from_the_apis_own_form() {
        assert_eq!(
            leading_type(br#"{"type":"response.output_text.delta","delta":"x"}"#),
            Some(&b"response.output_text.delta"[..])
        );
        assert_eq!(
            leading_type(br#"{"delta":"x","type":"response.completed"}"#),
            None
        );
        assert_eq!(leading_type(br#"{ "type":"response.completed"}"#), None);
        assert_eq!(leading_type(br#"{"type":"response.\u0063ompleted"}"#), None);
        assert_eq!(leading_type(br#"{"type":"response.completed"#), None);
    }
}
