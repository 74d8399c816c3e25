//! Placing planned items into the original request bytes.
//!
//! The body is never re-serialised: the result is a list of slices of the original buffer with
//! the inserted items between them, so a 5 MB base64 image in the input is neither decoded nor
//! copied. Nested `input` arrays are flattened while at it (the API takes a flat list).

use bytes::Bytes;

use super::repair::Insertion;
use super::request::InputList;

/// The repaired body as chunks, in order.
pub fn splice(body: &Bytes, input: &InputList<'_>, insertions: &[Insertion]) -> Vec<Bytes> {
    if input.nested {
        return rebuild(body, input, insertions);
    }
    let n = input.items.len();
    let mut chunks = Vec::with_capacity(insertions.len() * 2 + 2);
    let mut cursor = 0;
    let mut rest = insertions;
    while let Some(first) = rest.first() {
        let gap = first.gap.min(n);
        let count = rest.iter().take_while(|i| i.gap.min(n) == gap).count();
        let (here, later) = rest.split_at(count);
        rest = later;
        if gap < n {
            // `X,Y,` right before item `gap`.
            let at = input.items[gap].span.start;
            chunks.push(body.slice(cursor..at));
            for ins in here {
                chunks.push(ins.text.clone());
                chunks.push(Bytes::from_static(b","));
            }
            cursor = at;
        } else {
            // `,X,Y` after the last item, or `X,Y` into an empty list.
            let at = match input.items.last() {
                Some(item) => item.span.end,
                None => input.span.start + 1,
            };
            chunks.push(body.slice(cursor..at));
            for (k, ins) in here.iter().enumerate() {
                if k > 0 || n > 0 {
                    chunks.push(Bytes::from_static(b","));
                }
                chunks.push(ins.text.clone());
            }
            cursor = at;
        }
    }
    chunks.push(body.slice(cursor..));
    chunks.retain(|c| !c.is_empty());
    chunks
}

/// Writes `input` anew as one flat list: the original item bytes with insertions between them.
fn rebuild(body: &Bytes, input: &InputList<'_>, insertions: &[Insertion]) -> Vec<Bytes> {
    let mut chunks = vec![body.slice(..input.span.start), Bytes::from_static(b"[")];
    let mut rest = insertions.iter().peekable();
    let mut first = true;
    let mut push = |chunks: &mut Vec<Bytes>, b: Bytes| {
        if !first {
            chunks.push(Bytes::from_static(b","));
        }
        first = false;
        chunks.push(b);
    };
    for (n, item) in input.items.iter().enumerate() {
        while let Some(ins) = rest.next_if(|i| i.gap <= n) {
            push(&mut chunks, ins.text.clone());
        }
        push(&mut chunks, body.slice(item.span.clone()));
    }
    for ins in rest {
        push(&mut chunks, ins.text.clone());
    }
    chunks.push(Bytes::from_static(b"]"));
    chunks.push(body.slice(input.span.end..));
    chunks.retain(|c| !c.is_empty());
    chunks
}

/// The chunks as one buffer (tests, `explain`).
pub fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}
