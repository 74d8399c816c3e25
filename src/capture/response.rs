//! Reading a Response object: a JSON body, or the `response` and `item` of a stream's events.
//!
//! Lenient where a compatible server differs (an odd `id` is no id, an odd `usage` no usage) and
//! strict where a turn would be wrong: an item is kept in full only when it could be sent back as
//! the API accepts input, and a turn is linked to its response only by an id the API could mint.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::elide::MARKER;
use super::{CaptureError, KeepPolicy};
use crate::repair::content::ItemFields;
use crate::repair::items::{ItemType, Link, Turn, TurnItem};

#[derive(Deserialize)]
pub(super) struct ResponseFields<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) previous_response_id: Option<&'a RawValue>,
    #[serde(default)]
    pub(super) store: Option<bool>,
    #[serde(borrow, default)]
    pub(super) output: Option<Vec<&'a RawValue>>,
}

/// One item, from its JSON text.
pub(super) fn read_item(
    raw: &str,
    stored: bool,
    keep: KeepPolicy,
) -> Result<Option<TurnItem>, CaptureError> {
    let fields: ItemFields<'_> = serde_json::from_str(raw)?;
    let (Some(ty), Some(id)) = (fields.ty.as_deref(), fields.id.as_deref()) else {
        return Ok(None);
    };
    let ty = ItemType::parse(ty);
    let elided = memchr::memmem::find(raw.as_bytes(), MARKER).is_some();
    // A reasoning item is only ever inserted in full where nothing can be looked up, and there
    // it is refused without its encrypted content: such a copy is worth nothing.
    let replayable = ty != ItemType::Reasoning || fields.encrypted_content.is_some();
    // An item the API would refuse as input (reasoning text in `content`, an output-only key
    // as `null`: a compatible upstream's answer) is never inserted, so it is not kept.
    let full = (!elided
        && replayable
        && keep.keeps(&ty, stored, raw.len())
        && !crate::repair::fields::needs_sanitising(raw.as_bytes(), ty == ItemType::Reasoning))
    .then(|| Bytes::copy_from_slice(raw.as_bytes()));
    // What the item says: a reasoning item's encrypted content, a message's text, and any
    // other item whole when memory keeps no copy to compare a client's with (the canonical
    // form leaves out an image's elided result, and gives none when anything else was elided).
    let typed = matches!(ty, ItemType::Reasoning | ItemType::Message);
    let digest = (if typed { !elided } else { full.is_none() })
        .then(|| fields.digest(raw))
        .flatten();
    Ok(Some(TurnItem {
        id: id.into(),
        call_id: fields.call_id.as_deref().map(Into::into),
        ty,
        full,
        digest,
    }))
}

/// The value of the string member `opening` starts (`{"key":"`) when `json` starts with it
/// and the value holds no escape; `None` otherwise.
pub(super) fn leading_string<'a>(json: &'a [u8], opening: &[u8]) -> Option<&'a [u8]> {
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
    pub(super) fn read(&mut self, fields: &ResponseFields<'_>) {
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
pub(super) fn read_response(
    body: &[u8],
    keep: KeepPolicy,
    facts: Option<&mut ResponseFacts>,
) -> Result<Option<Turn>, CaptureError> {
    turn_of(serde_json::from_slice(body)?, keep, facts)
}

/// The turn in a Response object's fields, already read.
pub(super) fn turn_of(
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
        items.extend(read_item(raw.get(), stored, keep)?);
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
pub(super) fn link(id: Option<&str>, parent: Option<&str>, complete: bool) -> Option<Box<Link>> {
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
pub(super) fn has_id(raw: &RawValue, id: &str) -> bool {
    if let Some(leading) = leading_string(raw.get().as_bytes(), br#"{"id":""#) {
        return leading == id.as_bytes();
    }
    serde_json::from_str::<IdField<'_>>(raw.get())
        .ok()
        .and_then(|f| f.id)
        .is_some_and(|own| own == id)
}

/// A string field of a response read leniently: a compatible server's odd value is no id.
pub(super) fn text(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    // `null` (a response without a parent) is no string, and serde's error would cost a format.
    raw.filter(|r| r.get().starts_with('"'))
        .and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Longer response ids are not the API's; such a response is not linked.
const MAX_RESPONSE_ID: usize = 256;
