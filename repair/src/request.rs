//! Reading the few fields of a create request that repair needs, without copying the body.
//!
//! Only `input` (each item's type, id and call_id, and where its bytes lie), `store`,
//! `previous_response_id`, `conversation` and `include` are read; every other field, and every
//! string inside an item (base64 images, file data), is skipped by the parser and never copied.
//! Items are kept as byte ranges of the original body so a plan can be spliced into it.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

/// What repair needs to know about a create request.
#[derive(Clone, Debug)]
pub struct RequestView<'a> {
    /// `store`, which defaults to true.
    pub store: bool,
    /// The request continues a chain the server holds (`previous_response_id` or `conversation`).
    pub chained: bool,
    /// `previous_response_id`, when it is a string.
    pub previous_response_id: Option<Cow<'a, str>>,
    /// `conversation`'s id (the value itself, or its `id`), when it has one.
    pub conversation: Option<Cow<'a, str>>,
    /// `include` already asks for `reasoning.encrypted_content`.
    pub includes_encrypted_reasoning: bool,
    /// Byte range of the `include` value, when present (`null` included: it is replaced, never
    /// written beside).
    pub include_span: Option<Range<usize>>,
    /// `model`, when it is a string.
    pub model: Option<Cow<'a, str>>,
    /// The request sets `reasoning` (only a model that reasons accepts it).
    pub reasoning_param: bool,
    /// `input` when it is a list of items; `None` for a string input or none at all.
    pub input: Option<InputList<'a>>,
}

/// The `input` array, flattened.
#[derive(Clone, Debug)]
pub struct InputList<'a> {
    /// Byte range of the whole `input` value in the body.
    pub span: Range<usize>,
    /// Whether arrays were nested inside it (they are flattened when the body is rewritten).
    pub nested: bool,
    pub items: Vec<InputItem<'a>>,
}

/// One input item: where it lies, and the fields that identify it.
#[derive(Clone, Debug)]
pub struct InputItem<'a> {
    pub span: Range<usize>,
    pub ty: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    pub call_id: Option<Cow<'a, str>>,
    /// Set for role-based ("easy") messages, which never carry an output item's identity.
    pub has_role: bool,
    /// `role` is `assistant`.
    pub assistant: bool,
    /// An `id` key is present (possibly `null`): an id must then not be added beside it.
    pub id_key: bool,
    /// A `summary` key is present.
    pub has_summary: bool,
    /// A reasoning item carrying its `encrypted_content` (usable without stored state).
    pub has_encrypted_content: bool,
    /// Only `type`, `id` (and `status`): the server must look the item up by id.
    pub bare: bool,
}

impl InputItem<'_> {
    pub fn ty(&self) -> Option<&str> {
        self.ty.as_deref()
    }
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    pub fn call_id(&self) -> Option<&str> {
        self.call_id.as_deref()
    }

    /// Whether the server would have to look this item up by id: an `item_reference`, a bare
    /// `{type, id}`, or a reasoning item without its `encrypted_content`. Under `store: false`
    /// nothing can be looked up, so such an item needs its full form.
    pub fn needs_lookup(&self) -> bool {
        match self.ty() {
            Some("item_reference") | None => self.id.is_some() && !self.has_role,
            Some("reasoning") => self.id.is_some() && !self.has_encrypted_content,
            Some(_) => self.bare,
        }
    }
}

/// Why a body was not understood. Such a request is forwarded unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("body is not a JSON object with readable fields: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a value could not be located in the body")]
    Span,
    #[error("body is not a JSON object")]
    NotObject,
    #[error("input arrays are nested more than {MAX_NESTING} deep")]
    TooDeep,
}

/// How deep arrays may nest inside `input` before the request is left alone.
pub const MAX_NESTING: usize = 32;

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    store: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    include: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
}

/// A present value as it is, `null` included (serde's `Option` would turn `null` into `None`,
/// hiding the bytes an edit must replace).
fn raw_even_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// An item's identifying fields, read key by key: values of other keys are skipped unread
/// (never copied), and only counted, to tell a bare reference from an item sent in full.
#[derive(Default)]
struct ItemFields<'a> {
    ty: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    call_id: Option<Cow<'a, str>>,
    has_role: bool,
    assistant: bool,
    id_key: bool,
    has_summary: bool,
    has_encrypted_content: bool,
    /// Keys besides `type`, `id` and `status`.
    other_keys: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for ItemFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Fields<'a> {
            type Value = ItemFields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an input item")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = ItemFields::default();
                let mut seen: Vec<Cow<'de, str>> = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if seen.contains(&key) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate key `{key}`"
                        )));
                    }
                    match &*key {
                        "type" => out.ty = Some(map.next_value()?),
                        "id" => {
                            out.id = map.next_value()?;
                            out.id_key = true;
                        }
                        "call_id" => {
                            out.call_id = Some(map.next_value()?);
                            out.other_keys += 1;
                        }
                        "status" => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        other => {
                            let value: Option<&'de RawValue> = map.next_value()?;
                            if other == "role" {
                                out.has_role = true;
                                out.assistant = value.is_some_and(|v| v.get() == "\"assistant\"");
                            }
                            if other == "summary" {
                                out.has_summary = true;
                            }
                            if other == "encrypted_content" {
                                out.has_encrypted_content = value.is_some();
                            }
                            out.other_keys += 1;
                        }
                    }
                    seen.push(key);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
    }
}

/// Reads a create request. Fails on anything that is not a JSON object whose identifying fields
/// have the types the API documents (including duplicated keys, which the API itself would have
/// to guess about).
pub fn parse(body: &[u8]) -> Result<RequestView<'_>, ParseError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ParseError::NotObject);
    }
    let fields: Fields<'_> = serde_json::from_slice(body)?;
    let include_span = fields.include.map(|r| span_of(body, r)).transpose()?;
    let includes_encrypted_reasoning = fields.include.is_some_and(|r| {
        serde_json::from_str::<Vec<Cow<'_, str>>>(r.get())
            .is_ok_and(|list| list.iter().any(|i| i == "reasoning.encrypted_content"))
    });
    let input = match fields.input {
        Some(raw) if raw.get().starts_with('[') => {
            let mut items = Vec::new();
            let mut nested = false;
            collect_items(body, raw, &mut items, &mut nested, 0)?;
            Some(InputList {
                span: span_of(body, raw)?,
                nested,
                items,
            })
        }
        _ => None,
    };
    let model = fields
        .model
        .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok());
    Ok(RequestView {
        store: fields.store.is_none_or(|s| s.get() != "false"),
        chained: fields.previous_response_id.is_some() || fields.conversation.is_some(),
        previous_response_id: fields
            .previous_response_id
            .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()),
        conversation: fields.conversation.and_then(conversation_id),
        includes_encrypted_reasoning,
        include_span,
        model,
        reasoning_param: fields.reasoning.is_some(),
        input,
    })
}

/// A `conversation` value's id: the string itself, or an object's `id`.
fn conversation_id(raw: &RawValue) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
    }
    serde_json::from_str::<Cow<'_, str>>(raw.get())
        .ok()
        .or_else(|| {
            serde_json::from_str::<Object<'_>>(raw.get())
                .ok()
                .map(|o| o.id)
        })
}

fn collect_items<'a>(
    body: &'a [u8],
    list: &'a RawValue,
    out: &mut Vec<InputItem<'a>>,
    nested: &mut bool,
    depth: usize,
) -> Result<(), ParseError> {
    if depth > MAX_NESTING {
        return Err(ParseError::TooDeep);
    }
    let elements: Vec<&'a RawValue> = serde_json::from_str(list.get())?;
    for element in elements {
        let text = element.get();
        if text.starts_with('[') {
            *nested = true;
            collect_items(body, element, out, nested, depth + 1)?;
            continue;
        }
        let span = span_of(body, element)?;
        let item = if text.starts_with('{') {
            let f: ItemFields<'a> = serde_json::from_str(text)?;
            InputItem {
                span,
                bare: f.id.is_some() && f.other_keys == 0,
                ty: f.ty,
                id: f.id,
                call_id: f.call_id,
                has_role: f.has_role,
                assistant: f.assistant,
                id_key: f.id_key,
                has_summary: f.has_summary,
                has_encrypted_content: f.has_encrypted_content,
            }
        } else {
            InputItem {
                span,
                ty: None,
                id: None,
                call_id: None,
                has_role: false,
                assistant: false,
                id_key: false,
                has_summary: false,
                has_encrypted_content: false,
                bare: false,
            }
        };
        out.push(item);
    }
    Ok(())
}

/// Where a borrowed value lies in the body it was parsed from.
fn span_of(body: &[u8], value: &RawValue) -> Result<Range<usize>, ParseError> {
    let text = value.get();
    let start = (text.as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .ok_or(ParseError::Span)?;
    let end = start + text.len();
    if end > body.len() {
        return Err(ParseError::Span);
    }
    Ok(start..end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn items_are_located_in_the_original_bytes() {
        let body = br#"{"model":"m", "input": [ {"role":"user","content":"hi"}, {"type":"image_generation_call","id":"ig_1"} ]}"#;
        let view = parse(body).unwrap();
        let input = view.input.unwrap();
        assert_eq!(input.items.len(), 2);
        assert_eq!(
            &body[input.items[1].span.clone()],
            br#"{"type":"image_generation_call","id":"ig_1"}"#
        );
        assert!(input.items[0].has_role);
        assert_eq!(input.items[1].id(), Some("ig_1"));
        assert!(view.store);
        assert!(!view.chained);
    }

    #[test]
    fn nested_arrays_are_flattened() {
        let body = br#"{"input":[{"role":"user","content":"x"},[{"type":"reasoning","id":"rs_1","summary":[]},[{"id":"ig_1","type":"image_generation_call"}]]]}"#;
        let input = parse(body).unwrap().input.unwrap();
        assert!(input.nested);
        let ids: Vec<_> = input.items.iter().map(|i| i.id()).collect();
        assert_eq!(ids, vec![None, Some("rs_1"), Some("ig_1")]);
    }

    #[test]
    fn store_false_chain_and_include_are_read() {
        let body = br#"{"store":false,"previous_response_id":"resp_1","include":["reasoning.encrypted_content"],"input":"hi"}"#;
        let view = parse(body).unwrap();
        assert!(!view.store);
        assert!(view.chained);
        assert!(view.includes_encrypted_reasoning);
        assert!(view.input.is_none());
        assert_eq!(
            &body[view.include_span.unwrap()],
            br#"["reasoning.encrypted_content"]"#
        );
    }

    #[test]
    fn a_null_include_is_located_so_it_can_be_replaced() {
        let body =
            br#"{"store":false,"include":null,"model":"gpt-5","reasoning":{"effort":"low"}}"#;
        let view = parse(body).unwrap();
        assert_eq!(&body[view.include_span.unwrap()], b"null");
        assert!(!view.includes_encrypted_reasoning);
        assert_eq!(view.model.as_deref(), Some("gpt-5"));
        assert!(view.reasoning_param);
        let view = parse(br#"{"model":null,"reasoning":null}"#).unwrap();
        assert_eq!(view.model, None);
        assert!(!view.reasoning_param);
    }

    #[test]
    fn null_chain_fields_do_not_count() {
        let view =
            parse(br#"{"previous_response_id":null,"conversation":null,"input":[]}"#).unwrap();
        assert!(!view.chained);
        assert!(view.input.unwrap().items.is_empty());
    }

    #[test]
    fn bare_items_and_references_need_a_lookup() {
        let body = br#"{"input":[
            {"type":"item_reference","id":"rs_1"},
            {"id":"rs_2"},
            {"type":"reasoning","id":"rs_3","summary":[]},
            {"type":"reasoning","id":"rs_4","summary":[],"encrypted_content":"gAAA"},
            {"type":"image_generation_call","id":"ig_1","status":"completed"},
            {"type":"image_generation_call","id":"ig_2","result":"QUFB"},
            {"type":"message","id":"msg_1","role":"assistant","content":[]},
            {"role":"user","content":"hi"}
        ]}"#;
        let needs: Vec<bool> = parse(body)
            .unwrap()
            .input
            .unwrap()
            .items
            .iter()
            .map(|i| i.needs_lookup())
            .collect();
        assert_eq!(needs, [true, true, true, false, true, false, false, false]);
    }

    #[test]
    fn escaped_ids_are_decoded() {
        let body = br#"{"input":[{"type":"item_reference","id":"rs_\u0041\"q"}]}"#;
        let input = parse(body).unwrap().input.unwrap();
        assert_eq!(input.items[0].id(), Some("rs_A\"q"));
    }

    #[test]
    fn unreadable_bodies_are_refused() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"input\":[{\"type\":1}]}",
            b"{\"input\":[],\"input\":[]}",
            b"{\"input\":[{\"id\":\"a\",\"id\":\"b\"}]}",
            b"{\"input\":\"\xff\"}",
        ] {
            assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut body = b"{\"input\":".to_vec();
        body.extend(std::iter::repeat_n(b'[', 200_000));
        body.extend(std::iter::repeat_n(b']', 200_000));
        body.push(b'}');
        assert!(parse(&body).is_err());
    }

    #[test]
    fn odd_input_types_have_no_items() {
        for body in [
            &br#"{"input":null}"#[..],
            br#"{"input":5}"#,
            br#"{"input":{"a":1}}"#,
        ] {
            assert!(parse(body).unwrap().input.is_none());
        }
    }
}
