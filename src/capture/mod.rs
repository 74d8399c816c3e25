//! Learning turns from responses as they pass: JSON bodies and SSE streams.
//!
//! Capture reads a copy of what the client receives and never holds the client up: it sees each
//! chunk as it goes by, decodes compression on the side, assembles only the events that carry
//! items, and keys streamed items by `output_index` (some compatible servers change ids between
//! events; the final id is the one in `output_item.done` / `response.completed`). A response it
//! cannot read teaches nothing, and says why. What capture keeps of a body is its shape: strings
//! longer than the largest item kept in full (image results, partial images) are dropped as they
//! stream by (`elide.rs`), so an image response costs kilobytes, not a second copy.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

pub mod decode;
mod elide;
mod sse;

use crate::repair::content::ItemFields;
use crate::repair::items::{ItemType, Link, Turn, TurnItem};
use decode::Decoder;
use elide::{Eliding, MARKER};
use sse::{EventKind, SseFramer};

/// Which items are remembered in full, beyond their id and type.
#[derive(Clone, Copy, Debug)]
pub struct KeepPolicy {
    /// Largest item kept in full, in bytes of JSON.
    pub full_item_max: usize,
    /// Largest image call kept in full (an unstored turn's, for the image store's budget); 0:
    /// none.
    pub image_max: usize,
}

impl KeepPolicy {
    /// Client calls are always inserted in full, so they are always kept. Items of unstored
    /// responses can only be replayed in full, so they are kept too; an image result within its
    /// own bound (a stored turn's is looked up by the server, never sent back in full).
    fn keeps(&self, ty: &ItemType, stored: bool, len: usize) -> bool {
        if ty.has_bulky_payload() {
            return !stored && len <= self.image_max;
        }
        len <= self.full_item_max && (ty.is_client_call() || !stored)
    }
}

/// Why a response taught nothing.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("content-encoding rethread cannot decode")]
    Encoding,
    #[error("content-type is neither JSON nor an event stream")]
    ContentType,
    #[error("body could not be decoded: {0}")]
    Decode(std::io::Error),
    #[error("body exceeds the capture limit")]
    TooLarge,
    #[error("body is not a readable response: {0}")]
    Json(#[from] serde_json::Error),
    #[error("an event exceeds the capture limit")]
    EventTooLarge,
}

impl CaptureError {
    /// Every label `reason` can return.
    pub const REASONS: [&'static str; 6] = [
        "encoding",
        "content_type",
        "decode",
        "too_large",
        "json",
        "event_too_large",
    ];

    /// A fixed label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Encoding => "encoding",
            Self::ContentType => "content_type",
            Self::Decode(_) => "decode",
            Self::TooLarge => "too_large",
            Self::Json(_) => "json",
            Self::EventTooLarge => "event_too_large",
        }
    }
}

#[derive(Deserialize)]
struct ResponseFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(borrow, default)]
    output: Option<Vec<&'a RawValue>>,
}

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

fn read_item(
    raw: &RawValue,
    stored: bool,
    keep: KeepPolicy,
) -> Result<Option<TurnItem>, CaptureError> {
    let fields: ItemFields<'_> = serde_json::from_str(raw.get())?;
    let (Some(ty), Some(id)) = (fields.ty.as_deref(), fields.id.as_deref()) else {
        return Ok(None);
    };
    let ty = ItemType::parse(ty);
    let elided = memchr::memmem::find(raw.get().as_bytes(), MARKER).is_some();
    // A reasoning item is only ever inserted in full where nothing can be looked up, and there
    // it is refused without its encrypted content: such a copy is worth nothing.
    let replayable = ty != ItemType::Reasoning || fields.encrypted_content.is_some();
    // An item the API would refuse as input (reasoning text in `content`, an output-only key
    // as `null`: a compatible upstream's answer) is never inserted, so it is not kept.
    let full = (!elided
        && replayable
        && keep.keeps(&ty, stored, raw.get().len())
        && !crate::repair::fields::needs_sanitising(
            raw.get().as_bytes(),
            ty == ItemType::Reasoning,
        ))
    .then(|| Bytes::copy_from_slice(raw.get().as_bytes()));
    // What the item says: a reasoning item's encrypted content, a message's text, and any
    // other item whole when memory keeps no copy to compare a client's with (the canonical
    // form leaves out an image's elided result, and gives none when anything else was elided).
    let typed = matches!(ty, ItemType::Reasoning | ItemType::Message);
    let digest = (if typed { !elided } else { full.is_none() })
        .then(|| fields.digest(raw.get()))
        .flatten();
    Ok(Some(TurnItem {
        id: id.into(),
        call_id: fields.call_id.as_deref().map(Into::into),
        ty,
        full,
        digest,
    }))
}

/// The `type` of an event whose JSON starts with it, as the API and the fake write every
/// event (`{"type":"response.output_text.delta",…`); `None` otherwise (another key order,
/// spaces, an escape in the name), and the event is then parsed whole.
fn leading_type(data: &[u8]) -> Option<&[u8]> {
    leading_string(data, br#"{"type":""#)
}

/// The value of the string member `opening` starts (`{"key":"`) when `json` starts with it
/// and the value holds no escape; `None` otherwise.
fn leading_string<'a>(json: &'a [u8], opening: &[u8]) -> Option<&'a [u8]> {
    let rest = json.strip_prefix(opening)?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| &rest[..end])
}

/// What a response says of itself, for its trace: id, model and token usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub id: Option<Box<str>>,
    pub model: Option<Box<str>>,
    pub usage: Option<Usage>,
}

impl ResponseFacts {
    /// What `fields` add (a later event's values win; a missing one keeps the earlier).
    fn read(&mut self, fields: &ResponseFields<'_>) {
        if let Some(id) = text(fields.id) {
            self.id = Some(id.into());
        }
        if let Some(model) = text(fields.model) {
            self.model = Some(model.into());
        }
        if let Some(usage) = fields.usage.and_then(Usage::read) {
            self.usage = Some(usage);
        }
    }
}

/// A response's token counts (`usage`), each where the response carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// `input_tokens_details.cached_tokens`.
    pub cached_input_tokens: Option<u64>,
    /// `output_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct UsageFields {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl Usage {
    /// Read leniently: a compatible server's odd `usage` is no usage, never a lost turn.
    fn read(raw: &RawValue) -> Option<Usage> {
        let fields: UsageFields = serde_json::from_str(raw.get()).ok()?;
        Some(Usage {
            input_tokens: fields.input_tokens,
            output_tokens: fields.output_tokens,
            cached_input_tokens: fields.input_tokens_details.and_then(|d| d.cached_tokens),
            reasoning_tokens: fields
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens),
        })
    }
}

/// The turn in a Response object (a JSON body, or the `response` of a terminal event).
pub fn turn_from_response(body: &[u8], keep: KeepPolicy) -> Result<Option<Turn>, CaptureError> {
    read_response(body, keep, None)
}

/// The turn in a Response object, and what it says of itself into `facts` when they are asked
/// for (a trace wants them).
fn read_response(
    body: &[u8],
    keep: KeepPolicy,
    facts: Option<&mut ResponseFacts>,
) -> Result<Option<Turn>, CaptureError> {
    turn_of(serde_json::from_slice(body)?, keep, facts)
}

/// The turn in a Response object's fields, already read.
fn turn_of(
    fields: ResponseFields<'_>,
    keep: KeepPolicy,
    facts: Option<&mut ResponseFacts>,
) -> Result<Option<Turn>, CaptureError> {
    if let Some(facts) = facts {
        facts.read(&fields);
    }
    let stored = fields.store != Some(false);
    let output = fields.output.unwrap_or_default();
    let mut items = Vec::new();
    for raw in &output {
        items.extend(read_item(raw, stored, keep)?);
    }
    let (id, parent) = (text(fields.id), text(fields.previous_response_id));
    let complete = items.len() == output.len();
    Ok((!items.is_empty()).then(|| Turn {
        stored,
        items: items.into(),
        link: link(id.as_deref(), parent.as_deref(), complete),
    }))
}

/// The link of a response with this id and the `previous_response_id` it echoes (the session
/// puts in what the request said, which wins: an expanded request no longer names its parent).
fn link(id: Option<&str>, parent: Option<&str>, complete: bool) -> Option<Box<Link>> {
    let usable = |id: &&str| !id.is_empty() && id.len() <= MAX_RESPONSE_ID;
    let id = id.filter(usable)?;
    Some(Box::new(Link {
        response: id.into(),
        parent: parent.filter(usable).map(Into::into),
        input: None,
        complete,
        conversation: None,
    }))
}

#[derive(Deserialize)]
struct IdField<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// Whether an item's `id` is `id`: read from the item's start when it opens with it (the
/// API writes `id` first), else from the item parsed.
fn has_id(raw: &RawValue, id: &str) -> bool {
    if let Some(leading) = leading_string(raw.get().as_bytes(), br#"{"id":""#) {
        return leading == id.as_bytes();
    }
    serde_json::from_str::<IdField<'_>>(raw.get())
        .ok()
        .and_then(|f| f.id)
        .is_some_and(|own| own == id)
}

/// A string field of a response read leniently: a compatible server's odd value is no id.
fn text(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    // `null` (a response without a parent) is no string, and serde's error would cost a format.
    raw.filter(|r| r.get().starts_with('"'))
        .and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Longer response ids are not the API's; such a response is not linked.
const MAX_RESPONSE_ID: usize = 256;

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
    facts: Option<ResponseFacts>,
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

/// Limits for capture.
#[derive(Clone, Copy, Debug)]
pub struct CaptureLimits {
    /// Largest decoded JSON body, or SSE event, that is read.
    pub max_body: usize,
    pub keep: KeepPolicy,
    /// The request was `store: false`: image results are read up to `keep.image_max` (its
    /// response says so only after its output, too late for a body streaming by).
    pub stateless: bool,
}

impl CaptureLimits {
    /// The limits the settings give.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let store = &settings.store;
        CaptureLimits {
            max_body: settings.capture.body_limit,
            keep: KeepPolicy {
                full_item_max: settings.capture.full_item_max,
                image_max: store
                    .stateless_image_budget
                    .min(store.tenant_stateless_image_budget),
            },
            stateless: false,
        }
    }

    /// The bound of an image result read from a body streaming by.
    fn result_max(&self) -> usize {
        if self.stateless {
            self.keep.image_max
        } else {
            0
        }
    }
}

/// How a body is read.
#[allow(clippy::large_enum_variant)] // one per response body: boxing would only add an allocation
enum Format {
    Json(Eliding),
    /// The framer, the builder, and the first event that could not be read.
    Sse(SseFramer, TurnBuilder, Option<CaptureError>),
}

/// Capture of one response body, fed chunk by chunk.
pub struct Capture {
    decoder: Decoder,
    format: Format,
    limits: CaptureLimits,
    /// What the response says of itself is read too (`with_facts`).
    facts: bool,
}

impl Capture {
    /// Starts capturing a body with these headers.
    pub fn new(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        limits: CaptureLimits,
    ) -> Result<Self, CaptureError> {
        let mime = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        let format = match mime.as_deref() {
            Some("text/event-stream") => Format::Sse(
                SseFramer::new(
                    limits.max_body,
                    limits.keep.full_item_max,
                    limits.result_max(),
                ),
                TurnBuilder::new(limits.keep),
                None,
            ),
            Some(m) if m == "application/json" || m.ends_with("+json") => Format::Json(
                Eliding::new(limits.keep.full_item_max).keeping_results(limits.result_max()),
            ),
            _ => return Err(CaptureError::ContentType),
        };
        // Decoded output may be larger than the body limit by the SSE stream's length; bound it
        // generously but finitely.
        let decoded_limit = limits.max_body.saturating_mul(16);
        let decoder =
            Decoder::for_encoding(content_encoding, decoded_limit).ok_or(CaptureError::Encoding)?;
        Ok(Capture {
            decoder,
            format,
            limits,
            facts: false,
        })
    }

    /// Also reads what the response says of itself (`finish_with_facts`): for a trace, and only
    /// then.
    pub fn with_facts(mut self) -> Self {
        self.facts = true;
        if let Format::Sse(_, builder, _) = &mut self.format {
            builder.facts = Some(ResponseFacts::default());
        }
        self
    }

    /// Reads one chunk of the body as the client receives it.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CaptureError> {
        self.pump(Some(chunk))
    }

    /// Runs the decoder over `chunk` (or flushes it, at the end) and reads what it yields.
    fn pump(&mut self, chunk: Option<&[u8]>) -> Result<(), CaptureError> {
        let Capture {
            decoder,
            format,
            limits,
            ..
        } = self;
        let mut failure = None;
        {
            let mut read = |decoded: &[u8]| {
                if failure.is_none() {
                    failure = Self::consume(format, limits, decoded).err();
                }
            };
            match chunk {
                Some(chunk) => decoder.feed(chunk, &mut read),
                None => decoder.finish(&mut read),
            }
            .map_err(CaptureError::Decode)?;
        }
        failure.map_or(Ok(()), Err)
    }

    fn consume(
        format: &mut Format,
        limits: &CaptureLimits,
        decoded: &[u8],
    ) -> Result<(), CaptureError> {
        match format {
            Format::Json(kept) => {
                kept.push(decoded);
                if kept.len() > limits.max_body {
                    return Err(CaptureError::TooLarge);
                }
                Ok(())
            }
            Format::Sse(framer, builder, unreadable) => {
                framer.push(decoded, &mut |event| {
                    // One unreadable event does not spoil the others.
                    if let Err(e) = builder.on_event(event) {
                        unreadable.get_or_insert(e);
                    }
                });
                if framer.overflowed() {
                    return Err(CaptureError::EventTooLarge);
                }
                Ok(())
            }
        }
    }

    /// The turn the body held, once it has ended.
    pub fn finish(self) -> Result<Option<Turn>, CaptureError> {
        self.finish_with_facts().0
    }

    /// The turn the body held, and what the response said of itself (as far as it was read;
    /// `None` unless `with_facts` asked for it).
    pub fn finish_with_facts(
        mut self,
    ) -> (Result<Option<Turn>, CaptureError>, Option<ResponseFacts>) {
        if let Err(e) = self.pump(None) {
            return (Err(e), None);
        }
        match self.format {
            Format::Json(kept) => {
                let mut facts = self.facts.then(ResponseFacts::default);
                let turn = read_response(kept.bytes(), self.limits.keep, facts.as_mut());
                (turn, facts)
            }
            Format::Sse(_, mut builder, unreadable) => {
                let facts = builder.facts.take();
                let turn = match (builder.finish(), unreadable) {
                    (None, Some(e)) => Err(e),
                    (turn, _) => Ok(turn),
                };
                (turn, facts)
            }
        }
    }
}

#[cfg(test)]
mod tests;
