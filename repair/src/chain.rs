//! Requests that continue a chain the server holds (`previous_response_id`): what memory of
//! that chain may change in them.
//!
//! A chained request must send only what the chain does not hold: an item sent again is refused
//! as a duplicate (shared/reference/wild-failures-2026.md, N7), and a `store: false` chain lives
//! only on the socket that made it, so on any other connection the server has lost it (N6). A
//! proxy that relayed every response of the chain knows both: which ids the chain holds (its
//! responses' outputs, and the inputs it kept), and, when it kept every turn's input and output
//! in full, the whole history to send in the chain's place. The calls the chain's last response
//! ended with must be answered (N1), which `unanswered.rs` writes when the operator asked.
//!
//! `chain` is the chain as memory holds it, newest turn first, each turn's `link` naming its
//! parent. Everything here is pure: the session walks the chain and applies what this decides.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::items::{is_output_of_call, ItemType, Turn};
use super::plan::Insertion;
use super::request::InputItem;

/// The identifying fields of an item of a kept input.
#[derive(Deserialize)]
struct Kept<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    call_id: Option<Cow<'a, str>>,
}

/// One item the chain holds: its type and call id, and what it says (its JSON when kept in
/// full, else the digest of its text or encrypted content).
struct Held {
    ty: Option<String>,
    call_id: Option<String>,
    full: Option<Bytes>,
    digest: Option<super::content::Digest>,
}

/// The items of the chain, by id: every turn's output, and the inputs kept in full.
fn held(chain: &[Arc<Turn>]) -> HashMap<String, Held> {
    let mut out = HashMap::new();
    for turn in chain {
        for item in turn.items.iter() {
            out.insert(
                item.id.to_string(),
                Held {
                    ty: Some(item.ty.as_str().to_owned()),
                    call_id: item.call_id.as_deref().map(str::to_owned),
                    full: item.full.clone(),
                    digest: item.digest,
                },
            );
        }
        let Some(input) = turn.link.as_ref().and_then(|l| l.input.as_ref()) else {
            continue;
        };
        for raw in elements(input) {
            let Ok(kept) = serde_json::from_str::<Kept<'_>>(raw.get()) else {
                continue;
            };
            if let Some(id) = kept.id {
                out.insert(
                    id.into_owned(),
                    Held {
                        ty: kept.ty.map(Cow::into_owned),
                        call_id: kept.call_id.map(Cow::into_owned),
                        full: Some(input.slice_ref(raw.get().as_bytes())),
                        digest: None,
                    },
                );
            }
        }
    }
    out
}

/// The elements of a JSON array, raw; none if it is not one.
fn elements(array: &[u8]) -> Vec<&RawValue> {
    serde_json::from_slice(array).unwrap_or_default()
}

/// An item's JSON without its `status` (which the server sets), for comparing two copies.
fn without_status(json: &[u8]) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.as_object_mut()?.remove("status");
    Some(value)
}

/// Whether the client's item (`raw`, read as `item`) says what the held one says: a reference
/// says nothing else; an item sent in full must equal the held item's JSON (but for `status`),
/// or carry the same text or encrypted content.
fn same_content(raw: &[u8], item: &InputItem<'_>, held: &Held) -> bool {
    let reference = match item.ty() {
        None => !item.has_role,
        Some("item_reference") => true,
        Some(_) => item.needs_lookup(),
    };
    if reference {
        return true;
    }
    if let Some(full) = &held.full {
        return without_status(raw).is_some_and(|v| Some(v) == without_status(full));
    }
    held.digest
        .is_some_and(|d| super::content::digest(raw) == Some(d))
}

/// Indices of the client's items the chain already holds: the same id and type (or a reference
/// to it), no other call id, and the same content. Two different items under one id (an edit,
/// a gateway's merge gone wrong) are not a duplicate this can settle: both are left alone.
pub fn duplicates(body: &[u8], items: &[InputItem<'_>], chain: &[Arc<Turn>]) -> Vec<usize> {
    if chain.is_empty() || items.iter().all(|i| i.id().is_none()) {
        return Vec::new();
    }
    let held = held(chain);
    items
        .iter()
        .enumerate()
        .filter(|(_, item)| {
            let Some(h) = item.id().and_then(|id| held.get(id)) else {
                return false;
            };
            let held_message = matches!(h.ty.as_deref(), None | Some("message"));
            let same_type = match item.ty() {
                None if item.has_role => held_message,
                None | Some("item_reference") => true,
                Some("message") => held_message,
                Some(t) => h.ty.as_deref() == Some(t),
            };
            let same_call = match (item.call_id(), &h.call_id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            let raw = body.get(item.span.clone()).unwrap_or_default();
            same_type && same_call && same_content(raw, item, h)
        })
        .map(|(n, _)| n)
        .collect()
}

/// The whole history of the chain, oldest first, each turn's input then its output (less the
/// reasoning items the API refuses to see replayed), in full;
/// `None` unless memory holds all of it: every turn back to the one that started the chain,
/// each with its input kept and every output item kept in full.
pub fn history(chain: &[Arc<Turn>]) -> Option<Vec<Bytes>> {
    let root = chain.last()?;
    if root.link.as_ref()?.parent.is_some() {
        return None;
    }
    let mut out = Vec::new();
    for turn in chain.iter().rev() {
        let link = turn.link.as_ref().filter(|l| l.complete)?;
        let input = link.input.as_ref()?;
        for raw in serde_json::from_slice::<Vec<&RawValue>>(input).ok()? {
            out.push(input.slice_ref(raw.get().as_bytes()));
        }
        for (pos, item) in turn.items.iter().enumerate() {
            let full = item.full.clone()?;
            // A reasoning item with nothing of its own after it (back to back, or the turn's
            // last) is refused when replayed (E12, E13): it stays out, as `drop` leaves it out.
            if turn.group(pos).members().is_empty() && item.ty == ItemType::Reasoning {
                continue;
            }
            out.push(full);
        }
    }
    Some(out)
}

/// A request member, raw.
type Member<'a> = (Cow<'a, str>, &'a RawValue);

/// The members of a JSON object in their order.
fn members(body: &[u8]) -> Option<Vec<Member<'_>>> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Vec<Member<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            mut map: M,
        ) -> Result<Self::Value, M::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                out.push((key, map.next_value::<&'de RawValue>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = serde::Deserializer::deserialize_map(&mut de, Members).ok()?;
    de.end().ok()?;
    Some(out)
}

/// The items of an `input` value as the API reads them: a string is one user message, arrays
/// nested in the list are flattened.
fn input_items<'a>(input: &'a RawValue, out: &mut Vec<Cow<'a, [u8]>>) -> Option<()> {
    let text = input.get();
    if text.starts_with('"') {
        let message = format!(r#"{{"role":"user","content":{text}}}"#);
        out.push(Cow::Owned(message.into_bytes()));
        return Some(());
    }
    for raw in serde_json::from_str::<Vec<&RawValue>>(text).ok()? {
        if raw.get().starts_with('[') {
            input_items(raw, out)?;
        } else {
            out.push(Cow::Borrowed(raw.get().as_bytes()));
        }
    }
    Some(())
}

/// `body` as a request that carries the chain's `history` itself: `previous_response_id` left
/// out, `input` the history followed by the request's own items. Every other member keeps its
/// bytes and its place. `None` when the body is not an object whose `input` is a string or a
/// list.
pub fn expanded(body: &[u8], history: &[Bytes]) -> Option<Vec<u8>> {
    let members = members(body)?;
    let mut own = Vec::new();
    if let Some((_, input)) = members.iter().find(|(k, _)| k == "input") {
        input_items(input, &mut own)?;
    }
    let mut out = Vec::with_capacity(body.len() + history.iter().map(Bytes::len).sum::<usize>());
    out.push(b'{');
    let mut first = true;
    let mut comma = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let mut wrote_input = false;
    let write_input = |out: &mut Vec<u8>| {
        out.extend_from_slice(br#""input":["#);
        let items = history
            .iter()
            .map(|b| &b[..])
            .chain(own.iter().map(|b| &b[..]));
        for (n, item) in items.enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.push(b']');
    };
    for (key, value) in &members {
        match &**key {
            "previous_response_id" => continue,
            "input" => {
                comma(&mut out);
                write_input(&mut out);
                wrote_input = true;
            }
            _ => {
                comma(&mut out);
                out.extend_from_slice(serde_json::to_string(key).ok()?.as_bytes());
                out.push(b':');
                out.extend_from_slice(value.get().as_bytes());
            }
        }
    }
    if !wrote_input {
        comma(&mut out);
        write_input(&mut out);
    }
    out.push(b'}');
    Some(out)
}

/// The items of a request's `input` as one JSON array (a string input as its user message,
/// nested lists flattened): what a `store: false` chain's turn keeps of its request.
pub fn input_array(body: &[u8]) -> Option<Bytes> {
    let members = members(body)?;
    let (_, input) = members.iter().find(|(k, _)| k == "input")?;
    let mut items = Vec::new();
    input_items(input, &mut items)?;
    let mut out = Vec::with_capacity(input.get().len() + 2);
    out.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    Some(Bytes::from(out))
}

/// The calls the chain's last response ended with that the request does not answer, as written
/// outputs placed first in the input (with `unanswered_calls = answer`; `unanswered.rs`).
pub fn answers(items: &[InputItem<'_>], last: &Turn, text: &str) -> Vec<Insertion> {
    let answered: HashSet<&str> = items
        .iter()
        .filter(|i| i.ty().is_some_and(is_output_of_call))
        .filter_map(|i| i.call_id().or(i.id()))
        .collect();
    let mut out = Vec::new();
    for item in last.items.iter() {
        let Some(call_id) = item.call_id.as_deref() else {
            continue;
        };
        if !super::unanswered::answerable(item.ty.as_str())
            || answered.contains(call_id)
            || out.iter().any(|i: &Insertion| &*i.id == call_id)
        {
            continue;
        }
        out.push(super::unanswered::answer(
            0,
            item.ty.as_str(),
            call_id,
            text,
            out.len(),
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::items::{tests::turn, Link};
    use crate::request::parse;

    /// A chain of `shapes`, oldest first, each turn's input kept as `input`.
    fn chain(shapes: &[(&str, &str)]) -> Vec<Arc<Turn>> {
        let mut out = Vec::new();
        let mut parent: Option<Box<str>> = None;
        for (n, (shape, input)) in shapes.iter().enumerate() {
            let mut t = turn(shape, false);
            for item in t.items.iter_mut() {
                item.id = format!("{}{n}", item.id).into();
                if let Some(c) = &mut item.call_id {
                    *c = format!("{c}{n}").into();
                }
                let (ty, id) = (item.ty.as_str(), &item.id);
                item.full = Some(Bytes::from(match &item.call_id {
                    Some(c) => format!(
                        r#"{{"type":"{ty}","id":"{id}","call_id":"{c}","name":"f","arguments":"{{}}"}}"#
                    ),
                    None => format!(r#"{{"type":"{ty}","id":"{id}"}}"#),
                }));
            }
            let id: Box<str> = format!("resp_{n}").into();
            t.link = Some(Box::new(Link {
                response: id.clone(),
                parent: parent.replace(id),
                input: Some(Bytes::copy_from_slice(input.as_bytes())),
                complete: true,
                conversation: None,
            }));
            out.push(Arc::new(t));
        }
        out.reverse();
        out
    }

    #[test]
    fn items_the_chain_already_holds_are_duplicates() {
        let c = chain(&[("rs fc", r#"[{"role":"user","content":"hi","id":"msg_u"}]"#)]);
        let body = r#"{"previous_response_id":"resp_0","input":[
            {"type":"function_call","id":"fc_10","call_id":"call_fc_10","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_fc_10","output":"ok"},
            {"type":"item_reference","id":"rs_00"},
            {"role":"user","content":"hi","id":"msg_u"},
            {"type":"function_call","id":"fc_10","call_id":"other","name":"f","arguments":"{}"}]}"#;
        let view = parse(body.as_bytes()).unwrap();
        assert_eq!(
            duplicates(body.as_bytes(), &view.input.unwrap().items, &c),
            vec![0, 2, 3]
        );
    }

    #[test]
    fn an_item_that_says_something_else_under_a_held_id_is_no_duplicate() {
        let c = chain(&[("rs fc", r#"[{"role":"user","content":"hi","id":"msg_u"}]"#)]);
        // The chain's call with other arguments, the kept message with other words.
        let body = r#"{"previous_response_id":"resp_0","input":[
            {"type":"function_call","id":"fc_10","call_id":"call_fc_10","name":"f","arguments":"{\"x\":1}"},
            {"role":"user","content":"hello","id":"msg_u"},
            {"type":"reasoning","id":"rs_00","summary":[],"encrypted_content":"other"}]}"#;
        let view = parse(body.as_bytes()).unwrap();
        assert!(duplicates(body.as_bytes(), &view.input.unwrap().items, &c).is_empty());
    }

    #[test]
    fn the_history_is_every_turns_input_then_output_oldest_first() {
        let c = chain(&[("rs msg", r#"["a"]"#), ("fc", r#"[1,2]"#)]);
        let h: Vec<String> = history(&c)
            .unwrap()
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(h[0], r#""a""#);
        assert!(h[1].contains(r#""type":"reasoning""#), "{h:?}");
        assert!(h[2].contains(r#""type":"message""#), "{h:?}");
        assert_eq!(h[3], "1");
        assert_eq!(h[4], "2");
        assert!(h[5].contains(r#""type":"function_call""#), "{h:?}");
    }

    #[test]
    fn the_history_leaves_out_reasoning_with_nothing_of_its_own_after_it() {
        let c = chain(&[("rs rs msg rs", "[]")]);
        let h: Vec<String> = history(&c)
            .unwrap()
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h[0].contains(r#""id":"rs_10""#), "{h:?}");
        assert!(h[1].contains(r#""type":"message""#), "{h:?}");
    }

    #[test]
    fn a_chain_with_any_part_missing_has_no_history() {
        let mut c = chain(&[("rs msg", "[]"), ("fc", "[]")]);
        assert!(history(&c[..1]).is_none(), "its root is not held");
        Arc::make_mut(&mut c[1]).items[0].full = None;
        assert!(history(&c).is_none(), "an output not kept in full");
        let mut c = chain(&[("msg", "[]")]);
        Arc::make_mut(&mut c[0]).link.as_mut().unwrap().input = None;
        assert!(history(&c).is_none(), "an input not kept");
        let mut c = chain(&[("msg", "[]")]);
        Arc::make_mut(&mut c[0]).link.as_mut().unwrap().complete = false;
        assert!(history(&c).is_none(), "an output read in part");
    }

    #[test]
    fn an_expanded_request_carries_the_history_and_no_previous_response_id() {
        let history = [Bytes::from_static(b"{\"a\":1}")];
        let body = br#"{"model":"m","previous_response_id":"resp_1","input":"next","store":false}"#;
        let out = String::from_utf8(expanded(body, &history).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"model":"m","input":[{"a":1},{"role":"user","content":"next"}],"store":false}"#
        );
        let body = br#"{"previous_response_id":"resp_1","input":[{"b":2},[{"c":3}]]}"#;
        let out = String::from_utf8(expanded(body, &history).unwrap()).unwrap();
        assert_eq!(out, r#"{"input":[{"a":1},{"b":2},{"c":3}]}"#);
        let out =
            String::from_utf8(expanded(br#"{"previous_response_id":"r"}"#, &history).unwrap())
                .unwrap();
        assert_eq!(out, r#"{"input":[{"a":1}]}"#);
        assert!(expanded(br#"{"input":3}"#, &history).is_none());
        assert!(expanded(b"[1]", &history).is_none());
    }

    #[test]
    fn a_kept_input_is_the_list_the_api_reads() {
        let array = |body: &[u8]| input_array(body).map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(
            array(br#"{"input":"hi"}"#).unwrap(),
            r#"[{"role":"user","content":"hi"}]"#
        );
        assert_eq!(
            array(br#"{"input":[{"a":1},[{"b":2}]]}"#).unwrap(),
            r#"[{"a":1},{"b":2}]"#
        );
        assert!(array(br#"{"model":"m"}"#).is_none());
    }

    #[test]
    fn the_last_responses_unanswered_calls_are_answered_first() {
        let c = chain(&[("rs fc fc", "[]")]);
        let body = r#"{"previous_response_id":"resp_0","input":[
            {"type":"function_call_output","call_id":"call_fc_10","output":"ok"}]}"#;
        let view = parse(body.as_bytes()).unwrap();
        let out = answers(&view.input.unwrap().items, &c[0], "interrupted");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].gap, 0);
        assert_eq!(&*out[0].id, "call_fc_20");
    }
}
