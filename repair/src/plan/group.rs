//! What one remembered group needs restored around the client's items: its reasoning item and
//! members (`plan_group`), the calls of outputs sent alone (`orphan_outputs`), and the full form
//! of items the server cannot look up (`rehydrations`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::index::{Index, Loc, Present};
use super::{phase, reference_json, Insertion, Replacement, RestorePolicy, Unrepairable};
use crate::items::{is_output_of_call, ItemType, Turn, TurnItem};
use crate::request::InputItem;

/// What a group is restored with: its other items as `policy` says, and its reasoning item only
/// for a model that may reason.
#[derive(Clone, Copy)]
pub(super) struct Restore {
    pub(super) policy: RestorePolicy,
    pub(super) reasoning: bool,
}

/// Calls whose outputs the client sent without the calls themselves (and without any other item
/// of their group): the group is restored right before the first such output — its reasoning
/// item, the answered calls, and with `RestorePolicy::Group` its other items — as the API needs a
/// call before its output ("No tool call found for function call output").
pub(super) fn orphan_outputs(
    store: bool,
    items: &[InputItem<'_>],
    index: &Index<'_>,
    turns: &[Arc<Turn>],
    touched: &HashMap<(usize, usize), usize>,
    present: &Present<'_>,
    restore: Restore,
) -> Vec<Insertion> {
    let mut first_output: Vec<((usize, usize), usize)> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        if !item.ty().is_some_and(is_output_of_call) {
            continue;
        }
        let Some(loc) = item.call_id().and_then(|c| index.by_call.get(c)).copied() else {
            continue;
        };
        let call = &turns[loc.turn].items[loc.pos];
        let sent = present.ids.contains(&*call.id)
            || call
                .call_id
                .as_deref()
                .is_some_and(|c| present.calls.contains(c));
        let key = (loc.turn, turns[loc.turn].group(loc.pos).start);
        if sent || touched.contains_key(&key) || first_output.iter().any(|(k, _)| *k == key) {
            continue;
        }
        first_output.push((key, n));
    }
    let mut out = Vec::new();
    for ((t, start), gap) in first_output {
        let turn = &turns[t];
        let group = turn.group(start);
        let mut restored = Vec::new();
        let wanted = group.start..group.end;
        for pos in wanted {
            let item = &turn.items[pos];
            let needed = if restore.reasoning {
                Some(pos) == group.reasoning
                    || item.ty.is_client_call()
                    || restore.policy == RestorePolicy::Group
            } else {
                // No pairing rules for this model, and no reasoning allowed: the calls only.
                item.ty.is_client_call()
            };
            if !needed {
                continue;
            }
            match insertable_form(store, turn, pos, gap, present) {
                Some(text) => restored.push(Insertion {
                    gap,
                    id: item.id.clone(),
                    ty: item.ty.clone(),
                    text,
                    order: (phase::HEAD, pos),
                }),
                None if restore.reasoning && Some(pos) == group.reasoning => {
                    restored.clear();
                    break;
                }
                None => {}
            }
        }
        out.extend(restored);
    }
    out
}

/// Client items sent by reference (or a reasoning item without its content) where the server
/// cannot look them up, replaced by the full recorded items where rethread has them: every
/// such item of a stateless request, and, in a stored one, those of a turn that was not stored
/// (a client that flipped `store` between turns).
pub(super) fn rehydrations(
    store: bool,
    items: &[InputItem<'_>],
    locs: &[Option<Loc>],
    turns: &[Arc<Turn>],
    model_may_reason: bool,
) -> Vec<Replacement> {
    items
        .iter()
        .zip(locs)
        .enumerate()
        .filter(|(_, (item, _))| item.needs_lookup())
        .filter_map(|(index, (_, loc))| {
            let loc = (*loc)?;
            if store && turns[loc.turn].stored {
                return None;
            }
            let recorded = &turns[loc.turn].items[loc.pos];
            if !model_may_reason && recorded.ty == ItemType::Reasoning {
                return None;
            }
            Some(Replacement {
                index,
                id: recorded.id.clone(),
                ty: recorded.ty.clone(),
                text: recorded.full.clone()?,
            })
        })
        .collect()
}

/// The insertions one group needs. `members` are the client's items of the group as
/// (input position, turn position), in input order.
pub(super) fn plan_group(
    store: bool,
    turn: &Turn,
    members: &[(usize, usize)],
    present: &Present<'_>,
    policy: RestorePolicy,
) -> Result<Vec<Insertion>, Unrepairable> {
    let (Some(&(first, first_pos)), Some(&(last, last_pos))) = (members.first(), members.last())
    else {
        return Ok(Vec::new());
    };
    let group = turn.group(first_pos);
    for pair in members.windows(2) {
        let ((n0, p0), (n1, p1)) = (pair[0], pair[1]);
        if n1 != n0 + 1 || p1 <= p0 {
            return Err(Unrepairable::ClientOrder {
                id: turn.items[p1].id.to_string(),
            });
        }
    }
    let sent = |pos: usize| members.iter().any(|&(_, p)| p == pos);
    // Where a missing item of the group goes: before the client's first item of the group, after
    // its last, or between the two client items it originally sat between.
    let slot_for = |pos: usize| -> (usize, u8) {
        if pos < first_pos {
            (first, phase::HEAD)
        } else if pos > last_pos {
            (last + 1, phase::TAIL)
        } else {
            let next = members
                .iter()
                .find(|&&(_, p)| p > pos)
                .map_or(last + 1, |&(n, _)| n);
            (next, phase::HEAD)
        }
    };
    let insertion = |pos: usize| -> Option<Insertion> {
        let (gap, phase) = slot_for(pos);
        let item = &turn.items[pos];
        let text = insertable_form(store, turn, pos, gap, present)?;
        Some(Insertion {
            gap,
            id: item.id.clone(),
            ty: item.ty.clone(),
            text,
            order: (phase, pos),
        })
    };

    // A call whose output the client sent must stand before it, whatever the policy.
    let answered_call = |p: &usize| turn.items[*p].ty.is_client_call();
    let Some(reasoning) = group.reasoning else {
        // Items before a turn's first reasoning item need nothing beside them but their calls.
        return Ok(group
            .members()
            .filter(|&p| !sent(p))
            .filter(answered_call)
            .filter_map(insertion)
            .collect());
    };
    let mut out = Vec::new();
    if !sent(reasoning) {
        out.push(
            insertion(reasoning).ok_or_else(|| Unrepairable::NotInsertable {
                id: turn.items[reasoning].id.to_string(),
            })?,
        );
    }
    let restore = |p: &usize| policy == RestorePolicy::Group || answered_call(p);
    out.extend(
        group
            .members()
            .filter(|&p| !sent(p))
            .filter(restore)
            .filter_map(insertion),
    );
    // A reasoning item must be followed by an item of its group (when it has one).
    let followed =
        |out: &[Insertion]| members.len() > 1 || out.iter().any(|i| i.order.1 > reasoning);
    if sent(reasoning) && !group.members().is_empty() && !followed(&out) {
        let follower = group.members().filter(|&p| !sent(p)).find_map(insertion);
        out.extend(follower);
        if !followed(&out) {
            return Err(Unrepairable::NoFollower {
                id: turn.items[reasoning].id.to_string(),
            });
        }
    }
    Ok(out)
}

/// The JSON to insert for turn item `pos` at `gap`, or `None` when it must not or cannot be
/// inserted: it is already present, it is a client call whose output does not follow, or this
/// request needs the full item and only a reference is known.
fn insertable_form(
    store: bool,
    turn: &Turn,
    pos: usize,
    gap: usize,
    present: &Present<'_>,
) -> Option<Bytes> {
    let item = &turn.items[pos];
    if present.ids.contains(&*item.id) {
        return None;
    }
    if item.ty.is_client_call() {
        let call_id = item.call_id.as_deref()?;
        if present.calls.contains(call_id) {
            return None;
        }
        let answered = [call_id, &*item.id]
            .iter()
            .any(|key| present.last_output.get(key).is_some_and(|&n| n >= gap));
        return if answered { item.full.clone() } else { None };
    }
    if item.ty.has_bulky_payload() && !(store && turn.stored) {
        // An image result is put back only where the client named its call (a rehydration): a
        // stateless follow-up may leave the image out, and megabytes it did not send stay out.
        return None;
    }
    recorded_form(store, turn, item)
}

/// How a remembered item goes into a request: a reference where the server can look it up (the
/// request and its turn both stored), else the recorded item, if rethread kept it.
pub fn recorded_form(store: bool, turn: &Turn, item: &TurnItem) -> Option<Bytes> {
    if store && turn.stored {
        Some(reference_json(&item.id))
    } else {
        item.full.clone()
    }
}
