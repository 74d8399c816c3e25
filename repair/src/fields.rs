//! Edits of an item's own fields, where the API refuses a field the client sent back.
//!
//! 2026 clients replay items in shapes the API refuses although nothing is missing: reasoning
//! with its plain text in `content` (N3: histories from compatible providers), output-only keys
//! as `null` (N4: `model_dump()`), call ids over 64 characters minted by other providers and
//! harnesses (N5), a `web_search_call` whose `action` a client mangled (N12). These edits are
//! asked for by the upstream's own refusal (`rewrite::Directives`), never guessed: in front of a
//! server that wants reasoning text (a compatible provider), nothing here runs.
//!
//! An edited item keeps its members in their order, and the bytes of every member it keeps.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Output-only keys the API refuses as unknown parameters when sent back as `null` (N4).
const OUTPUT_ONLY: [&str; 3] = ["status", "encrypted_content", "created_by"];

/// The API's longest id and call id.
pub const MAX_ID_LEN: usize = 64;

/// An object's members in their order, values as written.
type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

fn members(item: &[u8]) -> Option<Members<'_>> {
    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                out.push((key, map.next_value::<&'de RawValue>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(item);
    let members = (&mut de).deserialize_map(Ordered).ok()?;
    de.end().ok()?;
    Some(members)
}

fn write(members: &[(Cow<'_, str>, Cow<'_, str>)]) -> Bytes {
    let mut out = String::from("{");
    for (n, (key, value)) in members.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.to_string()).to_string());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    Bytes::from(out)
}

/// `item` rewritten member by member: `edit` returns a member's new value, `None` to leave the
/// member out. `None` when nothing changed or the item is not an object.
fn edited<'a>(
    item: &'a [u8],
    mut edit: impl FnMut(&str, &'a RawValue) -> Option<Cow<'a, str>>,
) -> Option<Bytes> {
    let members = members(item)?;
    let mut changed = false;
    let mut out = Vec::with_capacity(members.len());
    for (key, value) in members {
        match edit(&key, value) {
            Some(new) => {
                changed |= new != value.get();
                out.push((key, new));
            }
            None => changed = true,
        }
    }
    changed.then(|| write(&out))
}

/// N3, N4: a reasoning item without its `content` text, and any item without output-only keys
/// sent as `null`. `None` when the item needs neither.
pub fn sanitised(item: &[u8], reasoning: bool) -> Option<Bytes> {
    edited(item, |key, value| {
        let is_null = value.get() == "null";
        if is_null && OUTPUT_ONLY.contains(&key) {
            return None;
        }
        if reasoning && key == "content" && value.get().trim_start().starts_with('[') {
            let empty =
                serde_json::from_str::<Vec<&RawValue>>(value.get()).is_ok_and(|v| v.is_empty());
            return empty.then(|| Cow::Borrowed(value.get()));
        }
        Some(Cow::Borrowed(value.get()))
    })
}

/// Whether a recorded item carries what `sanitised` removes: such an item is never inserted.
pub fn needs_sanitising(item: &[u8], reasoning: bool) -> bool {
    sanitised(item, reasoning).is_some()
}

/// N5: the short alias of an over-long call id: the same for the same id, in every request.
pub fn alias(call_id: &str) -> String {
    // FNV-1a, 64 bits: deterministic across processes and replicas, no key needed (the alias
    // hides nothing; it only has to be short and stable).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call_id.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("call_rt{hash:016x}")
}

/// N5: `item` with an over-long `call_id` replaced by its alias, and (with `drop_long_id`) an
/// over-long `id` left out.
pub fn shortened(item: &[u8], drop_long_id: bool) -> Option<Bytes> {
    edited(item, |key, value| {
        let long = || {
            serde_json::from_str::<Cow<'_, str>>(value.get())
                .ok()
                .filter(|s| s.chars().count() > MAX_ID_LEN)
        };
        match key {
            "call_id" => Some(match long() {
                Some(id) => Cow::Owned(serde_json::Value::String(alias(&id)).to_string()),
                None => Cow::Borrowed(value.get()),
            }),
            "id" if drop_long_id && long().is_some() => None,
            _ => Some(Cow::Borrowed(value.get())),
        }
    })
}

/// N2: an output item that carries its call's id in `id` (the Agents SDK's `local_shell_call_output`)
/// with the key renamed `call_id`, in place.
pub fn id_as_call_id(item: &[u8]) -> Option<Bytes> {
    let members = members(item)?;
    if members.iter().any(|(k, _)| k == "call_id") {
        return None;
    }
    let out: Vec<(Cow<'_, str>, Cow<'_, str>)> = members
        .into_iter()
        .map(|(k, v)| {
            let key = if k == "id" {
                Cow::Borrowed("call_id")
            } else {
                k
            };
            (key, Cow::Borrowed(v.get()))
        })
        .collect();
    Some(write(&out))
}

/// N12: whether a `web_search_call`'s `action.type` is one the API takes.
pub fn action_is_valid(item: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Action<'a> {
        #[serde(borrow, rename = "type")]
        ty: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Item<'a> {
        #[serde(borrow)]
        action: Option<Action<'a>>,
    }
    match serde_json::from_slice::<Item<'_>>(item) {
        Ok(Item {
            action: Some(Action { ty: Some(ty) }),
        }) => matches!(&*ty, "search" | "open_page" | "find_in_page"),
        Ok(Item { action: None }) => true,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(b: Option<Bytes>) -> Option<String> {
        b.map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn reasoning_text_and_null_output_keys_go_and_the_rest_keeps_its_order() {
        let item = br#"{"type":"reasoning","id":"rs_1","summary":[],"content":[{"type":"reasoning_text","text":"t"}],"status":null,"encrypted_content":null}"#;
        assert_eq!(
            text(sanitised(item, true)).unwrap(),
            r#"{"type":"reasoning","id":"rs_1","summary":[]}"#
        );
        let call =
            br#"{"type":"function_call","status":null,"call_id":"c","name":"f","arguments":"{}"}"#;
        assert_eq!(
            text(sanitised(call, false)).unwrap(),
            r#"{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}"#
        );
        // Nothing to do: no edit.
        assert_eq!(
            sanitised(br#"{"type":"reasoning","summary":[],"content":[]}"#, true),
            None
        );
        assert_eq!(
            sanitised(br#"{"type":"message","status":"completed"}"#, false),
            None
        );
    }

    #[test]
    fn an_over_long_call_id_gets_one_stable_short_alias() {
        let long = "codex_mcp__server__tool_exec-0123456789abcdef0123456789abcdef0123456789";
        assert!(long.len() > MAX_ID_LEN);
        let call = format!(
            r#"{{"type":"function_call","call_id":"{long}","name":"f","arguments":"{{}}"}}"#
        );
        let output =
            format!(r#"{{"type":"function_call_output","call_id":"{long}","output":"ok"}}"#);
        let a = text(shortened(call.as_bytes(), false)).unwrap();
        let b = text(shortened(output.as_bytes(), false)).unwrap();
        let alias = alias(long);
        assert!(alias.len() <= MAX_ID_LEN);
        assert!(a.contains(&alias) && b.contains(&alias), "{a} {b}");
        assert_eq!(shortened(br#"{"call_id":"short"}"#, true), None);
        let long_id = format!(
            r#"{{"type":"reasoning","id":"{}","summary":[]}}"#,
            "x".repeat(400)
        );
        assert_eq!(
            text(shortened(long_id.as_bytes(), true)).unwrap(),
            r#"{"type":"reasoning","summary":[]}"#
        );
    }

    #[test]
    fn an_output_carrying_its_calls_id_in_id_gets_it_as_call_id() {
        assert_eq!(
            text(id_as_call_id(
                br#"{"type":"local_shell_call_output","id":"call_1","output":"ok"}"#
            ))
            .unwrap(),
            r#"{"type":"local_shell_call_output","call_id":"call_1","output":"ok"}"#
        );
        assert_eq!(id_as_call_id(br#"{"id":"x","call_id":"call_1"}"#), None);
    }

    #[test]
    fn a_web_search_action_is_valid_only_with_the_apis_types() {
        assert!(action_is_valid(
            br#"{"type":"web_search_call","action":{"type":"find_in_page"}}"#
        ));
        assert!(!action_is_valid(
            br#"{"type":"web_search_call","action":{"type":"other"}}"#
        ));
        assert!(action_is_valid(
            br#"{"type":"web_search_call","id":"ws_1"}"#
        ));
    }
}
