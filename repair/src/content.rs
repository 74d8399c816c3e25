//! What an item says, reduced to a short digest: a reasoning item's encrypted content, an
//! assistant message's text.
//!
//! Clients strip ids from items they send back (a reasoning item kept only with its encrypted
//! content; an assistant message replayed as id-less text). A digest recorded with the turn tells
//! whether such an item *is* a remembered one (its id can be adopted in place) or an edit of it
//! (the client's version wins). Only the digest is kept, never the content.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A 32-bit digest: enough to tell the few items of one turn apart, small enough to keep with
/// every remembered turn.
pub type Digest = u32;

fn digest_of(bytes: &[u8]) -> Digest {
    let hash = blake3::hash(bytes);
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
    /// The digest of the item's content: see `digest`.
    pub fn digest(&self) -> Option<Digest> {
        match self.ty.as_deref() {
            Some("reasoning") => text(self.encrypted_content).map(|e| digest_of(e.0.as_bytes())),
            Some("message") | None if text(self.role).is_some_and(|r| r.0 == "assistant") => {
                let content: Content<'_> = serde_json::from_str(self.content?.get()).ok()?;
                let text = match content {
                    Content::Text(text) => text.into_owned(),
                    Content::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
                };
                Some(digest_of(text.as_bytes()))
            }
            _ => None,
        }
    }
}

/// A string field, borrowed where it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A field's value as a string; `None` when absent or not a string.
fn text(raw: Option<&RawValue>) -> Option<Text<'_>> {
    serde_json::from_str(raw?.get()).ok()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// The digest of an item's content: the encrypted content of a reasoning item, the text of an
/// assistant message (its text parts joined). `None` for other items, or when there is nothing
/// to digest.
pub fn digest(item_json: &[u8]) -> Option<Digest> {
    serde_json::from_slice::<ItemFields<'_>>(item_json)
        .ok()?
        .digest()
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
    fn an_id_less_copy_has_the_digest_of_the_item_it_copies() {
        let recorded = br#"{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Hello "},{"type":"output_text","text":"there"}]}"#;
        let easy = br#"{"role":"assistant","content":"Hello there"}"#;
        let typed = br#"{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello there"}]}"#;
        let edited = br#"{"role":"assistant","content":"Hello, there"}"#;
        let d = digest(recorded).unwrap();
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
            br#"{"type":"function_call","call_id":"c","arguments":"{}"}"#,
            b"not json",
        ] {
            assert_eq!(digest(none), None);
        }
    }
}
