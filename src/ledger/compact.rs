//! The stores' binary form of a turn's items: ids as decoded bytes, types as a byte.
//!
//! API ids are `<prefix>_<48 hex>`: they are kept as a one-byte tag naming the prefix and the 24
//! bytes the hex spells, so a `[rs, ig, msg]` turn's items take 78 bytes instead of several
//! hundred as separate strings. Other ids (call ids such as `call_bN8rB…`, ids of compatible
//! servers) are kept as they are. The memory store (`memory.rs`) and the Redis store (`redis.rs`)
//! put their own header before the same items; decoding happens only for turns a request names.
//!
//! Items: `varint(count << 1 | stored)`, then per item a head byte (low five bits: the type as an
//! index into `ItemType::KNOWN`, or `OTHER` followed by the name; bit 5: a 4-byte digest of the
//! item's content follows the id; bit 6: a call id follows; bit 7: a full item follows), the id,
//! the digest, the call id, and `varint(len)` + the full item's JSON.
//!
//! Then, for a turn whose response id was seen, its link: a flags byte (`LINK`, bit 1: a parent
//! follows, bit 2: the request's input follows, bit 3: the output was read whole, bit 4: a
//! conversation id follows, after the input), the response id, the parent id, and
//! `varint(len)` + the input's JSON. A turn written before links existed simply ends after its
//! items, and a reader that knows no links stops there, so both forms live side by side in a
//! shared store during a rolling upgrade.

use bytes::Bytes;

use super::KeyKind;
use crate::repair::items::{ItemType, Link, Turn, TurnItem};

/// Type byte: the low five bits are the type (an index into `ItemType::KNOWN`, or `OTHER`
/// followed by the name), bit 5 says a digest follows the id, bit 6 a call id, bit 7 a full item.
const OTHER: u8 = 31;
const HAS_DIGEST: u8 = 1 << 5;
const HAS_CALL_ID: u8 = 1 << 6;
const HAS_FULL: u8 = 1 << 7;
const _: () = assert!(ItemType::KNOWN.len() < OTHER as usize);

/// Id tags: raw bytes (`varint(len)` + bytes); hex packed after a literal prefix (`len` +
/// prefix, `len` + bytes); or hex packed after a known prefix: `KNOWN_PREFIX + 2 * i` with a
/// length byte, `KNOWN_PREFIX + 2 * i + 1` for the API's 24 bytes, without one.
const RAW: u8 = 0;
const PACKED: u8 = 1;
const KNOWN_PREFIX: u8 = 2;
/// The byte length of the API's ids' hex part (48 digits).
const API_BYTES: usize = 24;
const PREFIXES: [&str; 24] = [
    "rs", "msg", "fc", "call", "ig", "ws", "fs", "ci", "mcp", "mcpl", "mcpr", "ctc", "ct", "lsh",
    "sh", "sho", "apc", "cmp", "tsc", "tso", "cm", "cmo", "cu", "resp",
];
const _: () = assert!((KNOWN_PREFIX as usize) + 2 * PREFIXES.len() <= u8::MAX as usize);

pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(2)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn nibble(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b - b'0'
    } else {
        b - b'a' + 10
    }
}

/// Appends an id in its one canonical form: equal ids encode to equal bytes and different ids
/// to different bytes, so stores compare and hash ids encoded.
pub fn put_id(out: &mut Vec<u8>, id: &str) {
    if let Some((prefix, hex)) = id.split_once('_') {
        let bytes = hex.len() / 2;
        if prefix.len() < 16 && is_lower_hex(hex) && bytes <= usize::from(u8::MAX) {
            match PREFIXES.iter().position(|p| *p == prefix) {
                Some(known) if bytes == API_BYTES => out.push(KNOWN_PREFIX + 2 * known as u8 + 1),
                Some(known) => {
                    out.push(KNOWN_PREFIX + 2 * known as u8);
                    out.push(bytes as u8);
                }
                None => {
                    out.push(PACKED);
                    out.push(prefix.len() as u8);
                    out.extend_from_slice(prefix.as_bytes());
                    out.push(bytes as u8);
                }
            }
            out.extend(
                hex.as_bytes()
                    .chunks(2)
                    .map(|p| nibble(p[0]) << 4 | nibble(p[1])),
            );
            return;
        }
    }
    out.push(RAW);
    put_varint(out, id.len() as u64);
    out.extend_from_slice(id.as_bytes());
}

/// An id's encoded form, as `put_id` writes it.
pub fn encode_id(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len());
    put_id(&mut out, id);
    out
}

/// Appends a turn's items. `None` when a type name is too long for the format (such a turn is
/// not remembered, which only costs a repair).
pub fn put_items(out: &mut Vec<u8>, turn: &Turn) -> Option<()> {
    put_varint(out, (turn.items.len() as u64) << 1 | u64::from(turn.stored));
    for item in turn.items.iter() {
        let mut flags = 0;
        if item.call_id.is_some() {
            flags |= HAS_CALL_ID;
        }
        if item.full.is_some() {
            flags |= HAS_FULL;
        }
        if item.digest.is_some() {
            flags |= HAS_DIGEST;
        }
        match ItemType::KNOWN.iter().position(|k| *k == item.ty) {
            Some(code) => out.push(code as u8 | flags),
            None => {
                out.push(OTHER | flags);
                let name = item.ty.as_str();
                out.push(u8::try_from(name.len()).ok()?);
                out.extend_from_slice(name.as_bytes());
            }
        }
        put_id(out, &item.id);
        if let Some(digest) = item.digest {
            out.extend_from_slice(&digest.to_le_bytes());
        }
        if let Some(call_id) = &item.call_id {
            put_id(out, call_id);
        }
        if let Some(full) = &item.full {
            put_varint(out, full.len() as u64);
            out.extend_from_slice(full);
        }
    }
    Some(())
}

/// Link flags: the section is present, a parent follows, the input follows.
const LINK: u8 = 1;
const HAS_PARENT: u8 = 1 << 1;
const HAS_INPUT: u8 = 1 << 2;
const COMPLETE: u8 = 1 << 3;
const HAS_CONVERSATION: u8 = 1 << 4;

/// Appends a turn's link, if it has one.
pub fn put_link(out: &mut Vec<u8>, turn: &Turn) {
    let Some(link) = &turn.link else { return };
    let mut flags = LINK;
    if link.parent.is_some() {
        flags |= HAS_PARENT;
    }
    if link.input.is_some() {
        flags |= HAS_INPUT;
    }
    if link.complete {
        flags |= COMPLETE;
    }
    if link.conversation.is_some() {
        flags |= HAS_CONVERSATION;
    }
    out.push(flags);
    put_id(out, &link.response);
    if let Some(parent) = &link.parent {
        put_id(out, parent);
    }
    if let Some(input) = &link.input {
        put_varint(out, input.len() as u64);
        out.extend_from_slice(input);
    }
    // Last: a reader that knows no conversations stops before it.
    if let Some(conversation) = &link.conversation {
        put_id(out, conversation);
    }
}

/// A link, borrowed: ids encoded.
struct LinkView<'a> {
    response: &'a [u8],
    parent: Option<&'a [u8]>,
    input: Option<&'a [u8]>,
    complete: bool,
    conversation: Option<&'a [u8]>,
}

/// Reads the link after a turn's items: `Some(None)` when the turn has none.
fn walk_link<'a>(r: &mut Reader<'a>) -> Option<Option<LinkView<'a>>> {
    let Some(flags) = r.byte() else {
        return Some(None);
    };
    if flags & LINK == 0 {
        return None;
    }
    let response = r.id_span()?;
    let parent = if flags & HAS_PARENT != 0 {
        Some(r.id_span()?)
    } else {
        None
    };
    let input = if flags & HAS_INPUT != 0 {
        let n = r.len()?;
        Some(r.take(n)?)
    } else {
        None
    };
    let conversation = if flags & HAS_CONVERSATION != 0 {
        Some(r.id_span()?)
    } else {
        None
    };
    Some(Some(LinkView {
        response,
        parent,
        input,
        complete: flags & COMPLETE != 0,
        conversation,
    }))
}

/// The key of the link after a turn's items (its response id, encoded) and the bytes of its
/// input; `Some(None)` when the turn has no link.
pub fn link_key<'a>(r: &mut Reader<'a>) -> Option<Option<(&'a [u8], usize)>> {
    Some(walk_link(r)?.map(|l| (l.response, l.input.map_or(0, <[u8]>::len))))
}

/// Reads encoded bytes; every read is bounds-checked, so damaged bytes decode to `None`.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    pub fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// The next id, as encoded (tag included).
    fn id_span(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        match self.byte()? {
            RAW => {
                let n = self.len()?;
                self.take(n)?;
            }
            PACKED => {
                let n = usize::from(self.byte()?);
                self.take(n)?;
                let m = usize::from(self.byte()?);
                self.take(m)?;
            }
            tag if tag >= KNOWN_PREFIX && usize::from(tag - KNOWN_PREFIX) < 2 * PREFIXES.len() => {
                let m = if (tag - KNOWN_PREFIX) % 2 == 1 {
                    API_BYTES
                } else {
                    usize::from(self.byte()?)
                };
                self.take(m)?;
            }
            _ => return None,
        }
        self.bytes.get(start..self.at)
    }
}

/// The text of an encoded id.
pub fn decode_id(span: &[u8]) -> Option<String> {
    let mut r = Reader::new(span);
    let tag = r.byte()?;
    if tag == RAW {
        let n = r.len()?;
        return String::from_utf8(r.take(n)?.to_vec()).ok();
    }
    let (prefix, m) = if tag == PACKED {
        let n = usize::from(r.byte()?);
        let prefix = std::str::from_utf8(r.take(n)?).ok()?;
        (prefix, usize::from(r.byte()?))
    } else {
        let code = usize::from(tag.checked_sub(KNOWN_PREFIX)?);
        let prefix = *PREFIXES.get(code / 2)?;
        let m = if code % 2 == 1 {
            API_BYTES
        } else {
            usize::from(r.byte()?)
        };
        (prefix, m)
    };
    let mut id = String::with_capacity(prefix.len() + 1 + m * 2);
    id.push_str(prefix);
    id.push('_');
    for b in r.take(m)? {
        for nib in [b >> 4, b & 15] {
            id.push(char::from_digit(u32::from(nib), 16)?);
        }
    }
    Some(id)
}

/// One encoded item, borrowed.
pub struct ItemView<'a> {
    /// The type's index in `ItemType::KNOWN`, or `Err(name)`.
    pub ty: Result<usize, &'a [u8]>,
    pub id: &'a [u8],
    pub call_id: Option<&'a [u8]>,
    pub full: Option<&'a [u8]>,
    pub digest: Option<u32>,
}

impl ItemView<'_> {
    /// The keys the item is found by, as `keys_of` names them: its id, and a client call's
    /// call id.
    pub fn keys(&self) -> impl Iterator<Item = (KeyKind, &[u8])> {
        let client_call = self.ty.is_ok_and(|code| {
            ItemType::KNOWN
                .get(code)
                .is_some_and(ItemType::is_client_call)
        });
        let call = self
            .call_id
            .filter(|_| client_call)
            .map(|c| (KeyKind::CallId, c));
        std::iter::once((KeyKind::ItemId, self.id)).chain(call)
    }
}

/// Reads the items at `r`, calling `each` per item; returns the stored flag.
pub fn walk_items<'a>(r: &mut Reader<'a>, mut each: impl FnMut(ItemView<'a>)) -> Option<bool> {
    let head = r.varint()?;
    let stored = head & 1 == 1;
    for _ in 0..head >> 1 {
        let byte = r.byte()?;
        let ty = match byte & OTHER {
            OTHER => {
                let len = usize::from(r.byte()?);
                Err(r.take(len)?)
            }
            code => Ok(usize::from(code)),
        };
        let id = r.id_span()?;
        let digest = if byte & HAS_DIGEST != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let call_id = if byte & HAS_CALL_ID != 0 {
            Some(r.id_span()?)
        } else {
            None
        };
        let full = if byte & HAS_FULL != 0 {
            let n = r.len()?;
            Some(r.take(n)?)
        } else {
            None
        };
        each(ItemView {
            ty,
            id,
            call_id,
            full,
            digest,
        });
    }
    Some(stored)
}

/// Decodes the items at `r` into a turn.
pub fn read_turn(r: &mut Reader<'_>) -> Option<Turn> {
    let mut items = Vec::new();
    let mut broken = false;
    let stored = walk_items(r, |view| {
        let ty = match view.ty {
            Ok(code) => ItemType::KNOWN.get(code).cloned(),
            Err(name) => std::str::from_utf8(name).ok().map(ItemType::parse),
        };
        let id = decode_id(view.id);
        let call_id = view.call_id.map(decode_id);
        match (ty, id, call_id) {
            (Some(ty), Some(id), call_id) if call_id.as_ref().is_none_or(Option::is_some) => {
                items.push(TurnItem {
                    id: id.into(),
                    ty,
                    call_id: call_id.flatten().map(Into::into),
                    full: view.full.map(Bytes::copy_from_slice),
                    digest: view.digest,
                });
            }
            _ => broken = true,
        }
    })?;
    if broken {
        return None;
    }
    let link = match walk_link(r)? {
        Some(view) => Some(Box::new(Link {
            response: decode_id(view.response)?.into(),
            parent: match view.parent {
                Some(p) => Some(decode_id(p)?.into()),
                None => None,
            },
            input: view.input.map(Bytes::copy_from_slice),
            complete: view.complete,
            conversation: match view.conversation {
                Some(c) => Some(decode_id(c)?.into()),
                None => None,
            },
        })),
        None => None,
    };
    Some(Turn {
        stored,
        items: items.into(),
        link,
    })
}

/// Whether the items at `r` hold `key` (encoded) as a key of `kind`.
pub fn holds(r: &mut Reader<'_>, kind: KeyKind, key: &[u8]) -> bool {
    let mut found = false;
    let read = walk_items(r, |view| {
        found |= view.keys().any(|(k, bytes)| k == kind && bytes == key);
    });
    if kind == KeyKind::ResponseId {
        return read.is_some() && walk_link(r).flatten().is_some_and(|l| l.response == key);
    }
    read.is_some() && found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
