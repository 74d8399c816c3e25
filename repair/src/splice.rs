//! Placing planned changes into the original request bytes.
//!
//! The body is never re-serialised: the result is a list of slices of the original buffer with
//! new bytes between them, so a 5 MB base64 image in the input is neither decoded nor copied.
//! Every change is an [`Edit`]: new bytes at an offset, optionally replacing a range. Nested
//! `input` arrays are flattened when the input is changed (the API takes a flat list).

use std::ops::Range;

use bytes::Bytes;

use super::plan::{Insertion, Replacement};
use super::request::{InputList, RequestView};

/// New bytes at `at`, replacing `at..until` (empty for a pure insertion).
#[derive(Clone, Debug)]
pub struct Edit {
    at: usize,
    until: usize,
    /// Orders edits at the same offset: insertions before a replacement of what follows.
    order: u8,
    text: Vec<Bytes>,
}

const COMMA: Bytes = Bytes::from_static(b",");

/// The edits that apply a plan to the input list of `body`.
pub fn input_edits(
    body: &Bytes,
    input: &InputList<'_>,
    insertions: &[Insertion],
    replacements: &[Replacement],
) -> Vec<Edit> {
    if input.nested {
        return vec![flattened(body, input, insertions, replacements)];
    }
    let n = input.items.len();
    let mut edits = Vec::new();
    let mut rest = insertions;
    while let Some(first) = rest.first() {
        let gap = first.gap.min(n);
        let count = rest.iter().take_while(|i| i.gap.min(n) == gap).count();
        let (here, later) = rest.split_at(count);
        rest = later;
        let mut text = Vec::with_capacity(here.len() * 2);
        let at = if gap < n {
            // `X,Y,` right before item `gap`.
            for ins in here {
                text.push(ins.text.clone());
                text.push(COMMA);
            }
            input.items[gap].span.start
        } else {
            // `,X,Y` after the last item, or `X,Y` into an empty list.
            for (k, ins) in here.iter().enumerate() {
                if k > 0 || n > 0 {
                    text.push(COMMA);
                }
                text.push(ins.text.clone());
            }
            input
                .items
                .last()
                .map_or(input.span.start + 1, |item| item.span.end)
        };
        edits.push(Edit {
            at,
            until: at,
            order: 0,
            text,
        });
    }
    for rep in replacements {
        if let Some(item) = input.items.get(rep.index) {
            edits.push(Edit {
                at: item.span.start,
                until: item.span.end,
                order: 1,
                text: vec![rep.text.clone()],
            });
        }
    }
    edits
}

/// The whole input written anew as one flat list: the items' own bytes, replaced or not, with
/// insertions between them.
fn flattened(
    body: &Bytes,
    input: &InputList<'_>,
    insertions: &[Insertion],
    replacements: &[Replacement],
) -> Edit {
    let order: Vec<usize> = (0..input.items.len()).collect();
    rewritten_input(input, &order, insertions, replacements, |n| {
        input
            .items
            .get(n)
            .map(|item| vec![body.slice(item.span.clone())])
    })
}

/// The whole input written anew: the client's items at `order` (their indices), each as `own`
/// gives it (`None` leaves it out) unless it is rehydrated, with insertions in their gaps. Gaps
/// and replacement indices count positions in `order`.
pub fn rewritten_input(
    input: &InputList<'_>,
    order: &[usize],
    insertions: &[Insertion],
    replacements: &[Replacement],
    mut own: impl FnMut(usize) -> Option<Vec<Bytes>>,
) -> Edit {
    let mut entries = Vec::with_capacity(order.len() + insertions.len());
    let mut pending = insertions.iter().peekable();
    let replaced: std::collections::HashMap<usize, &Bytes> =
        replacements.iter().map(|r| (r.index, &r.text)).collect();
    for (v, &n) in order.iter().enumerate() {
        while let Some(ins) = pending.next_if(|i| i.gap <= v) {
            entries.push(vec![ins.text.clone()]);
        }
        match replaced.get(&v) {
            Some(text) => entries.push(vec![(*text).clone()]),
            None => entries.extend(own(n)),
        }
    }
    entries.extend(pending.map(|ins| vec![ins.text.clone()]));
    whole_input(input, entries)
}

/// The whole input written anew from `entries`, each one item's JSON as chunks (a rewrite that
/// moved, dropped or edited the client's items).
fn whole_input(input: &InputList<'_>, entries: Vec<Vec<Bytes>>) -> Edit {
    let mut text = Vec::with_capacity(entries.len() * 3 + 2);
    text.push(Bytes::from_static(b"["));
    for (k, entry) in entries.into_iter().enumerate() {
        if k > 0 {
            text.push(COMMA);
        }
        text.extend(entry);
    }
    text.push(Bytes::from_static(b"]"));
    Edit {
        at: input.span.start,
        until: input.span.end,
        order: 0,
        text,
    }
}

/// Adds `"reasoning.encrypted_content"` to `include`, so a stateless turn comes back with what a
/// later turn needs to replay it. An `include` of `null` is replaced in place, so the key is
/// never written twice. `None` when `include` is there but neither a list nor `null`.
pub fn include_edit(body: &[u8], view: &RequestView<'_>) -> Option<Edit> {
    const ITEM: &[u8] = b"\"reasoning.encrypted_content\"";
    match &view.include_span {
        Some(span) => {
            let list = body.get(span.clone())?;
            if list == b"null" {
                return Some(Edit {
                    at: span.start,
                    until: span.end,
                    order: 0,
                    text: vec![
                        Bytes::from_static(b"["),
                        Bytes::from_static(ITEM),
                        Bytes::from_static(b"]"),
                    ],
                });
            }
            if list.first() != Some(&b'[') {
                return None;
            }
            let empty = list[1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b']');
            let mut text = vec![Bytes::from_static(ITEM)];
            if !empty {
                text.push(COMMA);
            }
            Some(Edit {
                at: span.start + 1,
                until: span.start + 1,
                order: 0,
                text,
            })
        }
        None => {
            let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
            let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut text = vec![
                Bytes::from_static(b"\"include\":["),
                Bytes::from_static(ITEM),
                Bytes::from_static(b"]"),
            ];
            if !empty {
                text.push(COMMA);
            }
            Some(Edit {
                at: open + 1,
                until: open + 1,
                order: 0,
                text,
            })
        }
    }
}

/// Removes `"reasoning.encrypted_content"` from the client's `include` list, keeping its other
/// entries in their order; when none is left, the `include` member itself goes (with one of the
/// commas around it). `None` when the list holds no such entry or cannot be read.
pub fn include_removal(body: &[u8], view: &RequestView<'_>) -> Option<Edit> {
    const ENTRY: &str = "reasoning.encrypted_content";
    let span = view.include_span.clone()?;
    let list: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body.get(span.clone())?).ok()?;
    let kept: Vec<&str> = list
        .iter()
        .filter(|raw| {
            serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get())
                .ok()
                .as_deref()
                != Some(ENTRY)
        })
        .map(|raw| raw.get())
        .collect();
    if kept.len() == list.len() {
        return None;
    }
    if !kept.is_empty() {
        return Some(Edit {
            at: span.start,
            until: span.end,
            order: 0,
            text: vec![Bytes::from(format!("[{}]", kept.join(",")))],
        });
    }
    let (at, until) = member_range(body, span.clone()).unwrap_or((span.start, span.end));
    let text = if (at, until) == (span.start, span.end) {
        vec![Bytes::from_static(b"[]")]
    } else {
        Vec::new()
    };
    Some(Edit {
        at,
        until,
        order: 0,
        text,
    })
}

/// The bytes of the top-level member `"include": <value at span>` with one comma next to it, so
/// removing them leaves a valid object. `None` when the key is not written plainly.
fn member_range(body: &[u8], value: Range<usize>) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"\"include\"";
    let before = |mut at: usize| {
        while at > 0 && body[at - 1].is_ascii_whitespace() {
            at -= 1;
        }
        at
    };
    let colon = before(value.start).checked_sub(1)?;
    if body.get(colon) != Some(&b':') {
        return None;
    }
    let key_end = before(colon);
    let key_start = key_end.checked_sub(KEY.len())?;
    if body.get(key_start..key_end) != Some(KEY) {
        return None;
    }
    let prior = before(key_start).checked_sub(1)?;
    if body.get(prior) == Some(&b',') {
        return Some((prior, value.end));
    }
    let mut after = value.end;
    while body.get(after).is_some_and(u8::is_ascii_whitespace) {
        after += 1;
    }
    if body.get(after) == Some(&b',') {
        return Some((key_start, after + 1));
    }
    Some((key_start, value.end))
}

/// The body with the edits applied, as chunks.
pub fn apply(body: &Bytes, mut edits: Vec<Edit>) -> Vec<Bytes> {
    edits.sort_by_key(|e| (e.at, e.order));
    let mut chunks = Vec::with_capacity(edits.len() * 3 + 1);
    let mut cursor = 0;
    for edit in edits {
        if edit.at < cursor || edit.until > body.len() {
            continue; // overlapping edits cannot come from one plan; never corrupt the body
        }
        chunks.push(body.slice(cursor..edit.at));
        chunks.extend(edit.text);
        cursor = edit.until;
    }
    chunks.push(body.slice(cursor..));
    chunks.retain(|c| !c.is_empty());
    chunks
}

/// Applies insertions and replacements to the input of `body` (tests, `explain`).
pub fn splice(
    body: &Bytes,
    input: &InputList<'_>,
    insertions: &[Insertion],
    replacements: &[Replacement],
) -> Vec<Bytes> {
    apply(body, input_edits(body, input, insertions, replacements))
}

/// The chunks as one buffer (tests, `explain`).
pub fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::request::parse;

    fn with_include(body: &str) -> Option<String> {
        let bytes = Bytes::from(body.to_owned());
        let view = parse(&bytes).unwrap();
        let edit = include_edit(&bytes, &view)?;
        Some(String::from_utf8(concat(&apply(&bytes, vec![edit]))).unwrap())
    }

    #[test]
    fn encrypted_reasoning_is_added_to_include() {
        assert_eq!(
            with_include(r#" {"store":false}"#).unwrap(),
            r#" {"include":["reasoning.encrypted_content"],"store":false}"#
        );
        assert_eq!(
            with_include("{}").unwrap(),
            r#"{"include":["reasoning.encrypted_content"]}"#
        );
        assert_eq!(
            with_include(r#"{"include":[ ]}"#).unwrap(),
            r#"{"include":["reasoning.encrypted_content" ]}"#
        );
        assert_eq!(
            with_include(r#"{"include":["file_search_call.results"]}"#).unwrap(),
            r#"{"include":["reasoning.encrypted_content","file_search_call.results"]}"#
        );
        assert_eq!(with_include(r#"{"include":"odd"}"#), None);
        assert_eq!(
            with_include(r#"{"store":false,"include":null,"input":[]}"#).unwrap(),
            r#"{"store":false,"include":["reasoning.encrypted_content"],"input":[]}"#
        );
        for body in [
            r#" {"store":false}"#,
            "{}",
            r#"{"include":[ ]}"#,
            r#"{"include":["x"]}"#,
        ] {
            let out = with_include(body).unwrap();
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                "{out}"
            );
        }
    }

    fn without_encrypted(body: &str) -> Option<String> {
        let bytes = Bytes::from(body.to_owned());
        let view = parse(&bytes).unwrap();
        let edit = include_removal(&bytes, &view)?;
        Some(String::from_utf8(concat(&apply(&bytes, vec![edit]))).unwrap())
    }

    #[test]
    fn the_clients_encrypted_reasoning_entry_is_removed_and_the_rest_kept() {
        let cases = [
            (
                r#"{"include":["reasoning.encrypted_content"],"store":false}"#,
                r#"{"store":false}"#,
            ),
            (
                r#"{"store":false, "include" : [ "reasoning.encrypted_content" ] }"#,
                r#"{"store":false }"#,
            ),
            (r#"{"include":["reasoning.encrypted_content"]}"#, "{}"),
            (
                r#"{"store":false,"include":["file_search_call.results","reasoning.encrypted_content"],"input":"hi"}"#,
                r#"{"store":false,"include":["file_search_call.results"],"input":"hi"}"#,
            ),
            (
                r#"{"include":["reasoning.encrypted_content","reasoning.encrypted_content","x"]}"#,
                r#"{"include":["x"]}"#,
            ),
            (
                r#"{"include":["reasoning\u002eencrypted_content"],"input":[]}"#,
                r#"{"input":[]}"#,
            ),
        ];
        for (body, expected) in cases {
            let out = without_encrypted(body).unwrap();
            assert_eq!(out, expected, "{body}");
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                "{out}"
            );
        }
        assert_eq!(without_encrypted(r#"{"include":["x"]}"#), None);
        assert_eq!(without_encrypted(r#"{"include":null}"#), None);
        assert_eq!(without_encrypted(r#"{"input":"hi"}"#), None);
    }
}
