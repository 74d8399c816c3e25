//! What an item says, reduced to a short digest: a reasoning item's encrypted content, an
//! assistant message's text.
//!
//! Clients strip ids from items they send back (a reasoning item kept only with its encrypted
//! content; an assistant message replayed as id-less text). A digest recorded with the turn tells
//! whether such an item *is* a remembered one (its id can be adopted in place) or an edit of it
//! (the client's version wins). Only the digest is kept, never the content.
//!
//! Other items (a hosted tool's call, a call the server stored) are digested whole, in a
//! canonical form: keys sorted, `id` and `status` (the server's) left out, and `null` members
//! dropped (`model_dump()` writes them, N4), so a client's re-serialised copy of an item
//! digests as the item did. A chain's items sent again are then known to be copies even when
//! memory holds no more of them than the digest (N7). An image call's `result` is left out
//! too: capture never reads a stored image's base64 (it is elided as it streams by), and the
//! image's id, prompt and settings still tell an edit from a copy.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A 32-bit digest: enough to tell the few items of one turn apart, small enough to keep with
/// every remembered turn.
pub type Digest = u32;

fn digest_of(bytes: &[u8]) -> Digest {
    short(&blake3::hash(bytes))
}

fn short(hash: &blake3::Hash) -> Digest {
    let b = hash.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// An item's own fields that rethread reads: what it is (type, ids) and what it says (role,
/// encrypted content, content), so that capture reads an answer's item once for both.
#[derive(Deserialize)]
pub struct ItemFields<'a> {
    #[serde(rename = "type", borrow, default)]
    pub ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub call_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub encrypted_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

impl ItemFields<'_> {
    /// The digest of the item's content, `raw` being the item itself: see `digest`.
    pub fn digest(&self, raw: &str) -> Option<Digest> {
        match self.ty.as_deref() {
            Some("reasoning") => text(self.encrypted_content).map(|e| digest_of(e.0.as_bytes())),
            Some("message") | None if text(self.role).is_some_and(|r| r.0 == "assistant") => {
                content_digest(self.content?.get())
            }
            Some("message" | "item_reference") | None => None,
            Some(_) => canonical_digest(raw),
        }
    }
}

/// What capture writes in place of a string it did not keep (its JSON text escapes the NUL).
pub const ELIDED: &str = "\u{0}rethread-elided";

/// The digest of an item in its canonical form (see the module's doc); `None` when a string
/// that counts was elided.
fn canonical_digest(raw: &str) -> Option<Digest> {
    let serde_json::Value::Object(mut item) = serde_json::from_str(raw).ok()? else {
        return None;
    };
    item.remove("id");
    item.remove("status");
    if item.get("type").and_then(serde_json::Value::as_str) == Some("image_generation_call") {
        item.remove("result");
    }
    let mut out = Vec::with_capacity(raw.len());
    canonical(&serde_json::Value::Object(item), &mut out)?;
    Some(digest_of(&out))
}

/// `value` written with sorted keys and without `null` members; `None` if it holds an elided
/// string.
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) -> Option<()> {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect();
            keys.sort_unstable();
            out.push(b'{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).ok()?;
                out.push(b':');
                canonical(&map[key], out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::String(text) if text == ELIDED => return None,
        other => serde_json::to_writer(&mut *out, other).ok()?,
    }
    Some(())
}

/// A string field, borrowed where it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A field's value as a string; `None` when absent or not a string.
fn text(raw: Option<&RawValue>) -> Option<Text<'_>> {
    // Anything but a string is `None` without serde's error (which costs a format).
    serde_json::from_str(raw.filter(|r| r.get().starts_with('"'))?.get()).ok()
}

/// The digest of an assistant message's text: its `content` a string, or its parts' texts one
/// after another. Told apart by the first character rather than as an untagged enum, which would
/// first copy every part (annotations, logprobs) into serde's generic form.
fn content_digest(raw: &str) -> Option<Digest> {
    let mut hasher = blake3::Hasher::new();
    match raw.trim_start().as_bytes().first()? {
        b'"' => {
            let text: Text<'_> = serde_json::from_str(raw).ok()?;
            hasher.update(text.0.as_bytes());
        }
        b'[' => {
            let parts: Vec<Part<'_>> = serde_json::from_str(raw).ok()?;
            for text in parts.iter().filter_map(|p| p.text.as_deref()) {
                hasher.update(text.as_bytes());
            }
        }
        _ => return None,
    }
    Some(short(&hasher.finalize()))
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// The digest of an item's content: the encrypted content of a reasoning item, the text of an
/// assistant message (its text parts joined), any other typed item whole in canonical form.
/// `None` for a user's message, a reference, or a reasoning item with nothing to digest.
pub fn digest(item_json: &[u8]) -> Option<Digest> {
    let raw = std::str::from_utf8(item_json).ok()?;
    serde_json::from_str::<ItemFields<'_>>(raw)
        .ok()?
        .digest(raw)
}

/// The digest the test turns give an item: that of its id as text, so a test can build a
/// matching copy with `test_digest`.
#[cfg(any(test, feature = "test-support"))]
pub fn test_digest(id: &str) -> Digest {
    digest_of(id.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_re_serialised_copy_of_a_hosted_call_has_its_digest_and_an_edit_does_not() {
        let recorded = br#"{"id":"ws_1","type":"web_search_call","status":"completed","action":{"type":"search","query":"q"}}"#;
        // Another key order, `status` and `id` gone, a `model_dump()` null added.
        let copy =
            br#"{"action":{"query":"q","type":"search","sources":null},"type":"web_search_call"}"#;
        let edited =
            br#"{"id":"ws_1","type":"web_search_call","action":{"type":"search","query":"r"}}"#;
        let d = digest(recorded).unwrap();
        assert_eq!(digest(copy), Some(d));
        assert_ne!(digest(edited), Some(d));
        // The same fields under another type are another item.
        let other = br#"{"type":"file_search_call","action":{"type":"search","query":"q"}}"#;
        assert_ne!(digest(other), Some(d));
        // A string capture did not keep: no digest, unless it is an image's result.
        let elided = br#"{"type":"web_search_call","action":{"type":"search","query":"\u0000rethread-elided"}}"#;
        assert_eq!(digest(elided), None);
        let stored_image = br#"{"id":"ig_1","type":"image_generation_call","status":"completed","result":"\u0000rethread-elided","size":"1024x1024"}"#;
        let image_copy = br#"{"type":"image_generation_call","id":"ig_1","result":"iVBORw0KGgo","size":"1024x1024"}"#;
        assert_eq!(digest(image_copy), digest(stored_image));
        assert!(digest(stored_image).is_some());
    }

    #[test]
    fn an_id_less_copy_has_the_digest_of_the_item_it_copies() {
        let recorded = br#"{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Hello "},{"type":"output_text","text":"there"}]}"#;
        let easy = br#"{"role":"assistant","content":"Hello there"}"#;
        let typed = br#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello there"}]}"#;
        let edited = br#"{"role":"assistant","content":"Hello, there"}"#;
        let d = digest(recorded).unwrap();
        // Stores keep digests across restarts: the digest is that of the text, parts joined.
        assert_eq!(d, digest_of(b"Hello there"));
        assert_eq!(digest(easy), Some(d));
        assert_eq!(digest(typed), Some(d));
        assert_ne!(digest(edited), Some(d));
        let rs =
            br#"{"id":"rs_1","type":"reasoning","summary":[],"encrypted_content":"gAAA\u002b"}"#;
        let copy = br#"{"type":"reasoning","summary":[],"encrypted_content":"gAAA+"}"#;
        assert_eq!(digest(rs), digest(copy));
        assert!(digest(rs).is_some());
        for none in [
            &br#"{"role":"user","content":"Hello there"}"#[..],
            br#"{"type":"reasoning","summary":[]}"#,
            br#"{"type":"item_reference","id":"ws_1"}"#,
            br#"{"role":"assistant","content":7}"#,
            br#"{"role":"assistant","content":[7]}"#,
            b"not json",
        ] {
            assert_eq!(digest(none), None);
        }
    }
}
