//! The repaired input as a sequence, checked against the API's pairing rules before a plan is
//! trusted.

use std::sync::Arc;

use super::index::{Index, Loc};
use super::Insertion;
use crate::items::Turn;
use crate::request::InputItem;

/// One position of the repaired input: the remembered item it is (if any), and whether it
/// carries an id (id-less calls are known by `call_id` but never paired by the API).
#[derive(Clone, Copy)]
pub(super) struct Slot {
    loc: Option<Loc>,
    has_id: bool,
}

pub(super) fn final_sequence(
    items: &[InputItem<'_>],
    locs: &[Option<Loc>],
    insertions: &[Insertion],
    index: &Index<'_>,
) -> Vec<Slot> {
    let mut out = Vec::with_capacity(items.len() + insertions.len());
    let mut pending = insertions.iter().peekable();
    for (n, (item, loc)) in items.iter().zip(locs).enumerate() {
        while let Some(ins) = pending.next_if(|i| i.gap <= n) {
            out.push(Slot {
                loc: index.by_id.get(&*ins.id).copied(),
                has_id: true,
            });
        }
        out.push(Slot {
            loc: *loc,
            has_id: item.id().is_some(),
        });
    }
    out.extend(pending.map(|ins| Slot {
        loc: index.by_id.get(&*ins.id).copied(),
        has_id: true,
    }));
    out
}

/// The id of the first remembered item whose pairing the API would refuse in `sequence`:
/// an item not attached to its group's reasoning item, or a reasoning item not followed by an
/// item of its group (an empty group's reasoning item never is).
pub(super) fn first_violation(sequence: &[Slot], turns: &[Arc<Turn>]) -> Option<String> {
    for (k, slot) in sequence.iter().enumerate() {
        let Some(loc) = slot.loc else { continue };
        let turn = &turns[loc.turn];
        let group = turn.group(loc.pos);
        let Some(reasoning) = group.reasoning else {
            continue;
        };
        let same_group = |s: &Slot| {
            s.loc
                .is_some_and(|l| l.turn == loc.turn && group.members().contains(&l.pos))
        };
        if loc.pos == reasoning {
            // A reasoning item whose group holds nothing else (another reasoning item came
            // next, or the turn ended) has no follower it could ever be given.
            let followed = sequence
                .get(k + 1)
                .and_then(|s| s.loc)
                .is_some_and(|l| l.turn == loc.turn && group.members().contains(&l.pos));
            if !followed {
                return Some(turn.items[loc.pos].id.to_string());
            }
        } else if slot.has_id {
            let before = sequence[..k].iter().rev().find(|s| !same_group(s));
            let attached = before
                .and_then(|s| s.loc)
                .is_some_and(|l| l.turn == loc.turn && l.pos == reasoning);
            if !attached {
                return Some(turn.items[loc.pos].id.to_string());
            }
        }
    }
    None
}
