//! Which client items leave the request: what the upstream's refusal named (E2, E15), and on
//! memory's evidence later exact duplicates (E4) and reasoning that can never be valid (E12,
//! E13, a group whose calls go unanswered).

use std::collections::{HashMap, HashSet};

use super::Pass;
use crate::items::{is_output_of_call, ItemType};
use crate::plan::Loc;
use crate::request::InputItem;

/// Earlier copies of one id an item is compared with, byte for byte.
const MAX_COPIES_COMPARED: usize = 8;

/// Decides which client items to drop (into `drop`): later exact duplicates, reasoning that can
/// never be valid, and what the upstream's refusal named.
pub(super) fn drop_items(pass: &Pass<'_, '_>, locs: &[Option<Loc>], drop: &mut HashSet<usize>) {
    let (items, turns, directives) = (pass.items, pass.turns, pass.directives);
    let (proactive, model_may_reason) = (pass.switches.drops, pass.model_may_reason);
    let bytes = |n: usize| pass.bytes(n).trim_ascii();
    let reasoning = |n: usize| {
        items[n].ty() == Some("reasoning")
            || locs[n].is_some_and(|l| turns[l.turn].items[l.pos].ty == ItemType::Reasoning)
    };
    for (n, item) in items.iter().enumerate() {
        if directives.drop_reasoning && reasoning(n) {
            drop.insert(n);
        }
        // The upstream named it as a reasoning item without its follower.
        if item
            .id()
            .is_some_and(|id| directives.drop_ids.iter().any(|d| d == id))
        {
            drop.insert(n);
        }
    }
    if !proactive {
        return;
    }
    if !model_may_reason {
        // The model refuses reasoning items (E15).
        drop.extend((0..items.len()).filter(|&n| reasoning(n)));
    }
    // A later exact copy of an item that has an id (E4): the same reference, or the same bytes.
    let mut seen: HashMap<&str, Vec<usize>> = HashMap::new();
    for n in 0..items.len() {
        let Some(id) = items[n].id() else { continue };
        let earlier = seen.entry(id).or_default();
        let same = earlier.iter().any(|&e| {
            bytes(e) == bytes(n)
                || (items[e].ty() == Some("item_reference")
                    && items[n].ty() == Some("item_reference"))
        });
        if same && !drop.contains(&n) {
            drop.insert(n);
        } else if earlier.len() < MAX_COPIES_COMPARED {
            earlier.push(n);
        }
    }
    // Reasoning that can never be valid: nothing else in its group, or only calls the request
    // does not answer (and none of the group's items is sent).
    let answered: HashSet<&str> = items
        .iter()
        .filter(|i| i.ty().is_some_and(is_output_of_call))
        .filter_map(InputItem::call_id)
        .collect();
    let sent: HashSet<Loc> = locs.iter().flatten().copied().collect();
    for (n, loc) in locs.iter().enumerate() {
        let Some(loc) = *loc else { continue };
        let turn = &turns[loc.turn];
        let group = turn.group(loc.pos);
        if group.reasoning != Some(loc.pos) {
            continue;
        }
        let members: Vec<usize> = group.members().collect();
        let any_sent = members.iter().any(|&m| {
            sent.contains(&Loc {
                turn: loc.turn,
                pos: m,
            })
        });
        let followable = members.iter().any(|&m| {
            let item = &turn.items[m];
            !item.ty.is_client_call()
                || item
                    .call_id
                    .as_deref()
                    .is_some_and(|c| answered.contains(c))
        });
        if members.is_empty() || (!any_sent && !followable) {
            drop.insert(n);
        }
    }
}
