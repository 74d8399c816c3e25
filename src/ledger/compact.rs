//! The memory ledger's storage format: one allocation per remembered turn.
//!
//! A turn is kept as bytes: the tenant, the time it was learned, and its items (type as a byte,
//! ids with the API's hex part packed two digits to a byte, call ids, and the few full items
//! repair must insert whole). API ids are `<prefix>_<48 hex>`, so a `[rs, ig, msg]` turn takes
//! about 130 bytes instead of several hundred as separate strings. Decoding happens only for turns
//! a request names.

use std::sync::Arc;

use bytes::Bytes;

use crate::repair::items::{ItemType, Turn, TurnItem};
use crate::tenant::TenantKey;

/// Type byte: the low five bits are the type (an index into `ItemType::KNOWN`, or `OTHER`
/// followed by the name), bit 5 says a digest follows the id, bit 6 a call id, bit 7 a full item.
const OTHER: u8 = 31;
const HAS_DIGEST: u8 = 1 << 5;
const HAS_CALL_ID: u8 = 1 << 6;
const HAS_FULL: u8 = 1 << 7;
/// Id tags: raw bytes, hex packed after a literal prefix, or hex packed after a known prefix
/// (`PREFIXES[tag - KNOWN_PREFIX]`).
const RAW: u8 = 0;
const PACKED: u8 = 1;
const KNOWN_PREFIX: u8 = 2;
const PREFIXES: [&str; 24] = [
    "rs", "msg", "fc", "call", "ig", "ws", "fs", "ci", "mcp", "mcpl", "mcpr", "ctc", "ct", "lsh",
    "sh", "sho", "apc", "cmp", "tsc", "tso", "cm", "cmo", "cu", "resp",
];

/// Header: tenant (16), learned-at milliseconds (8), full-item bytes (4), stored flag (1),
/// item count (2).
const HEADER: usize = 31;
const _: () = assert!(ItemType::KNOWN.len() < OTHER as usize);

fn put_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    out.extend_from_slice(&u16::try_from(len).ok()?.to_le_bytes());
    Some(())
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.len() % 2 == 0
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

fn put_id(out: &mut Vec<u8>, id: &str) -> Option<()> {
    if let Some((prefix, hex)) = id.split_once('_') {
        if prefix.len() < 16 && is_lower_hex(hex) && hex.len() / 2 <= usize::from(u8::MAX) {
            match PREFIXES.iter().position(|p| *p == prefix) {
                Some(known) => out.push(KNOWN_PREFIX + known as u8),
                None => {
                    out.push(PACKED);
                    out.push(prefix.len() as u8);
                    out.extend_from_slice(prefix.as_bytes());
                }
            }
            out.push((hex.len() / 2) as u8);
            out.extend(
                hex.as_bytes()
                    .chunks(2)
                    .map(|p| nibble(p[0]) << 4 | nibble(p[1])),
            );
            return Some(());
        }
    }
    out.push(RAW);
    put_len(out, id.len())?;
    out.extend_from_slice(id.as_bytes());
    Some(())
}

/// Encodes an entry; `None` when an id or item is too large for the format (such a turn is
/// not remembered, which only costs a repair).
pub fn encode(tenant: &TenantKey, at: u64, full_bytes: u32, turn: &Turn) -> Option<Arc<[u8]>> {
    let mut out = Vec::with_capacity(HEADER + turn.items.len() * 32);
    out.extend_from_slice(&tenant.0);
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&full_bytes.to_le_bytes());
    out.push(u8::from(turn.stored));
    put_len(&mut out, turn.items.len())?;
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
        put_id(&mut out, &item.id)?;
        if let Some(digest) = item.digest {
            out.extend_from_slice(&digest.to_le_bytes());
        }
        if let Some(call_id) = &item.call_id {
            put_id(&mut out, call_id)?;
        }
        if let Some(full) = &item.full {
            out.extend_from_slice(&u32::try_from(full.len()).ok()?.to_le_bytes());
            out.extend_from_slice(full);
        }
    }
    Some(Arc::from(out.into_boxed_slice()))
}

/// Reads an encoded entry.
pub struct Entry<'a>(pub &'a [u8]);

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at + n)?;
        self.at += n;
        Some(out)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn len16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    }
    fn id(&mut self) -> Option<String> {
        let tag = self.byte()?;
        if tag == RAW {
            let n = self.len16()?;
            return String::from_utf8(self.take(n)?.to_vec()).ok();
        }
        let prefix = if tag == PACKED {
            let n = usize::from(self.byte()?);
            std::str::from_utf8(self.take(n)?).ok()?
        } else {
            PREFIXES.get(usize::from(tag - KNOWN_PREFIX))?
        };
        let m = usize::from(self.byte()?);
        let mut id = String::with_capacity(prefix.len() + 1 + m * 2);
        id.push_str(prefix);
        id.push('_');
        for b in self.take(m)? {
            for nib in [b >> 4, b & 15] {
                id.push(char::from_digit(u32::from(nib), 16)?);
            }
        }
        Some(id)
    }
}

impl Entry<'_> {
    pub fn tenant(&self) -> Option<TenantKey> {
        let mut key = [0u8; 16];
        key.copy_from_slice(self.0.get(..16)?);
        Some(TenantKey(key))
    }

    fn u32_at(&self, at: usize) -> u32 {
        self.0
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Milliseconds since the ledger started.
    pub fn learned_at(&self) -> u64 {
        self.0.get(16..24).map_or(0, |b| {
            let mut ms = [0u8; 8];
            ms.copy_from_slice(b);
            u64::from_le_bytes(ms)
        })
    }

    pub fn full_bytes(&self) -> u32 {
        self.u32_at(24)
    }

    pub fn turn(&self) -> Option<Turn> {
        let mut r = Reader {
            bytes: self.0,
            at: 28,
        };
        let stored = r.byte()? == 1;
        let n = r.len16()?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let head = r.byte()?;
            let ty = match head & OTHER {
                OTHER => {
                    let len = usize::from(r.byte()?);
                    ItemType::parse(std::str::from_utf8(r.take(len)?).ok()?)
                }
                code => ItemType::KNOWN.get(usize::from(code))?.clone(),
            };
            let id = r.id()?;
            let digest = if head & HAS_DIGEST != 0 {
                let d = r.take(4)?;
                Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
            } else {
                None
            };
            let call_id = if head & HAS_CALL_ID != 0 {
                Some(r.id()?)
            } else {
                None
            };
            let full = if head & HAS_FULL != 0 {
                let len = r.take(4)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                Some(Bytes::copy_from_slice(r.take(len)?))
            } else {
                None
            };
            items.push(TurnItem {
                id: id.into(),
                ty,
                call_id: call_id.map(Into::into),
                full,
                digest,
            });
        }
        Some(Turn {
            stored,
            items: items.into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::repair::items::tests::turn;

    #[test]
    fn entries_round_trip_with_packed_and_odd_ids() {
        let mut t = turn("mcpl rs fc ig rs msg future_kind", false);
        t.items[1].id = "rs_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff".into();
        t.items[2].call_id = Some("call_bN8rBNGyOxaLsg2ScY4EDjBS".into());
        t.items[3].id = "ig_ABCDEF".into();
        t.items[4].id = "odd id with spaces_and_ünïcode".into();
        t.items[5].id = "msg_0".into();
        let tenant = TenantKey([7; 16]);
        let bytes = encode(&tenant, 42, 99, &t).unwrap();
        let entry = Entry(&bytes);
        assert_eq!(entry.tenant(), Some(tenant));
        assert_eq!(entry.learned_at(), 42);
        assert_eq!(entry.full_bytes(), 99);
        assert_eq!(entry.turn().unwrap(), t);
    }

    #[test]
    fn an_api_shaped_image_turn_is_small() {
        let mut t = turn("rs ig msg", true);
        for (item, p) in t.items.iter_mut().zip(["rs", "ig", "msg"]) {
            item.id = format!("{p}_{}", "0123456789abcdef".repeat(3)).into();
        }
        let bytes = encode(&TenantKey([0; 16]), 0, 0, &t).unwrap();
        // 112 bytes, and a 4-byte digest for each of the reasoning item and the message.
        assert!(bytes.len() <= 120, "{}", bytes.len());
    }

    #[test]
    fn truncated_entries_decode_to_nothing() {
        let t = turn("rs fc", false);
        let bytes = encode(&TenantKey([0; 16]), 0, 0, &t).unwrap();
        for cut in 0..bytes.len() {
            assert!(Entry(&bytes[..cut]).turn().is_none() || cut >= bytes.len());
        }
    }
}
