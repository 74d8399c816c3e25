//! Given a request's input and the turns rethread remembers, decide what to insert where.
//!
//! This is the heart of rethread and it does no I/O: the ledger lookup happens before, the
//! splice after. The rules it enforces are the API's, as `ARCHITECTURE.md` states them:
//! a group's reasoning item stands directly before the group's items, a reasoning item is followed
//! by an item of its own group (so never by another reasoning item: a reasoning item whose group
//! holds nothing else can never be replayed), nothing the client sent is removed or reordered, no
//! id is sent twice, and no client call is inserted without its output. For a model that does
//! not reason, no reasoning item is placed at all. When the client's own order makes a valid
//! request impossible, the plan says why and inserts nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::items::{is_output_of_call, ItemType, Turn, TurnItem};
use super::request::{InputItem, RequestView};

/// How much of a group to restore around the items a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestorePolicy {
    /// The whole group, in its original order, as people who fix such requests by hand do.
    #[default]
    Group,
    /// Only what the API requires: the reasoning item, or a follower for a lone reasoning item.
    Minimal,
}

impl std::str::FromStr for RestorePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "group" => Ok(Self::Group),
            "minimal" => Ok(Self::Minimal),
            other => Err(format!(
                "unknown repair policy {other:?}; use `group` or `minimal`"
            )),
        }
    }
}

/// Where an insertion stands among those sharing its gap: the previous group's tail, then the
/// outputs rethread writes for that group's unanswered calls, then the next group's head, then a
/// cold-fallback insertion (each in turn order, or in the order written).
mod phase {
    pub const TAIL: u8 = 0;
    pub const WRITTEN: u8 = 1;
    pub const HEAD: u8 = 2;
    pub const COLD: u8 = 3;
}

/// One item to place before client item `gap` (`gap == items.len()` places it at the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insertion {
    pub gap: usize,
    pub id: Box<str>,
    pub ty: ItemType,
    /// The JSON to insert: an `item_reference` or the recorded item.
    pub text: Bytes,
    /// Orders insertions sharing a gap (`phase`, then turn position or order written).
    order: (u8, usize),
}

impl Insertion {
    /// An item rethread writes itself (an unanswered call's output): after the tail of the group
    /// its call ends, before the next group's reasoning item and what must follow it.
    pub fn new_item(gap: usize, id: Box<str>, ty: ItemType, text: Bytes, nth: usize) -> Self {
        Insertion {
            gap,
            id,
            ty,
            text,
            order: (phase::WRITTEN, nth),
        }
    }
}

/// A client item that the server would have to look up, under `store: false` where nothing can
/// be looked up, replaced by the full recorded item (same id, same place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    pub index: usize,
    pub id: Box<str>,
    pub ty: ItemType,
    pub text: Bytes,
}

/// Why a request that names remembered items is forwarded unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrepairable {
    /// It carries `previous_response_id` or `conversation`: the server holds the chain, and
    /// inserting could duplicate an item it already has.
    Chained,
    /// The client's items of one group are not contiguous or not in their original order.
    ClientOrder { id: String },
    /// A required reasoning item cannot be inserted in the form this request needs.
    NotInsertable { id: String },
    /// A reasoning item has no item of its group that could follow it.
    NoFollower { id: String },
}

impl Unrepairable {
    /// Every label `reason` can return.
    pub const REASONS: [&'static str; 4] =
        ["chained", "client_order", "not_insertable", "no_follower"];

    /// A fixed label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Chained => "chained",
            Self::ClientOrder { .. } => "client_order",
            Self::NotInsertable { .. } => "not_insertable",
            Self::NoFollower { .. } => "no_follower",
        }
    }
}

/// What to do with a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sorted by position.
    pub insertions: Vec<Insertion>,
    pub replacements: Vec<Replacement>,
    pub unrepairable: Option<Unrepairable>,
}

impl Plan {
    fn unrepairable(why: Unrepairable) -> Self {
        Plan {
            insertions: Vec::new(),
            replacements: Vec::new(),
            unrepairable: Some(why),
        }
    }
}

/// The JSON of an `item_reference` to `id`.
pub fn reference_json(id: &str) -> Bytes {
    let id = serde_json::Value::String(id.to_owned());
    Bytes::from(format!(r#"{{"type":"item_reference","id":{id}}}"#))
}

/// Where a remembered item is: its turn (an index into the turns given) and its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Loc {
    pub turn: usize,
    pub pos: usize,
}

/// Remembered items by id, and client calls by `call_id`.
pub(super) struct Index<'t> {
    by_id: HashMap<&'t str, Loc>,
    pub by_call: HashMap<&'t str, Loc>,
}

impl<'t> Index<'t> {
    pub fn new(turns: &'t [Arc<Turn>]) -> Self {
        let mut by_id = HashMap::new();
        let mut by_call = HashMap::new();
        for (t, turn) in turns.iter().enumerate() {
            for (pos, item) in turn.items.iter().enumerate() {
                let loc = Loc { turn: t, pos };
                by_id.insert(&*item.id, loc);
                if let Some(call_id) = item.call_id.as_deref() {
                    if item.ty.is_client_call() {
                        by_call.insert(call_id, loc);
                    }
                }
            }
        }
        Index { by_id, by_call }
    }

    /// The remembered item a client item stands for: by id (typed or `item_reference`), or, for a
    /// client call sent without id, by `call_id`.
    pub fn resolve(&self, item: &InputItem<'_>, turns: &[Arc<Turn>]) -> Option<Loc> {
        let same_type = |loc: Loc| match item.ty() {
            None | Some("item_reference") => true,
            Some(ty) => turns[loc.turn].items[loc.pos].ty.as_str() == ty,
        };
        if let Some(id) = item.id() {
            return self.by_id.get(id).copied().filter(|&l| same_type(l));
        }
        let ty = item.ty()?;
        if !ItemType::parse(ty).is_client_call() {
            return None;
        }
        self.by_call
            .get(item.call_id()?)
            .copied()
            .filter(|&l| same_type(l))
    }
}

/// What the client's input already holds.
struct Present<'a> {
    ids: HashSet<&'a str>,
    calls: HashSet<&'a str>,
    /// Last input position of an output item, by the call it answers.
    last_output: HashMap<&'a str, usize>,
}

impl<'a> Present<'a> {
    fn new(items: &'a [InputItem<'a>]) -> Self {
        let mut present = Present {
            ids: HashSet::new(),
            calls: HashSet::new(),
            last_output: HashMap::new(),
        };
        for (n, item) in items.iter().enumerate() {
            if let Some(id) = item.id() {
                present.ids.insert(id);
            }
            let Some(ty) = item.ty() else { continue };
            if is_output_of_call(ty) {
                for key in [item.call_id(), item.id()].into_iter().flatten() {
                    present.last_output.insert(key, n);
                }
            } else if let Some(call_id) = item.call_id() {
                if ItemType::parse(ty).is_client_call() {
                    present.calls.insert(call_id);
                }
            }
        }
        present
    }
}

/// Decides what to insert into `view`'s input, given the remembered `turns` its items name.
/// `model_may_reason` is false for a model known not to reason: the API neither pairs items with
/// reasoning for it nor accepts reasoning items, so only calls that outputs need are restored.
pub fn plan(
    view: &RequestView<'_>,
    turns: &[Arc<Turn>],
    policy: RestorePolicy,
    model_may_reason: bool,
) -> Plan {
    let Some(input) = &view.input else {
        return Plan::default();
    };
    let index = Index::new(turns);
    let locs: Vec<Option<Loc>> = input
        .items
        .iter()
        .map(|item| index.resolve(item, turns))
        .collect();
    let present = Present::new(&input.items);

    // Client items by the group they belong to, in order of first appearance.
    let mut groups: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
    let mut slot: HashMap<(usize, usize), usize> = HashMap::new();
    for (n, loc) in locs.iter().enumerate() {
        let Some(loc) = *loc else { continue };
        let start = turns[loc.turn].group(loc.pos).start;
        let k = *slot.entry((loc.turn, start)).or_insert_with(|| {
            groups.push((loc.turn, Vec::new()));
            groups.len() - 1
        });
        groups[k].1.push((n, loc.pos));
    }

    let mut chosen_ids: HashSet<Box<str>> = HashSet::new();
    let mut insertions = Vec::new();
    let reasoning_groups = if model_may_reason { &groups[..] } else { &[] };
    let mut broken = None;
    for (t, members) in reasoning_groups {
        match plan_group(view.store, &turns[*t], members, &present, policy) {
            Ok(group_insertions) => {
                for ins in group_insertions {
                    if chosen_ids.insert(ins.id.clone()) {
                        insertions.push(ins);
                    }
                }
            }
            Err(why) => {
                broken = Some(why);
                break;
            }
        }
    }
    let rehydrate = |plan: Plan| -> Plan {
        // Items sent by reference where nothing can be looked up are rehydrated whatever else
        // happens: one group that cannot be repaired does not keep the others from their full
        // form.
        if view.chained {
            return plan;
        }
        Plan {
            replacements: rehydrations(view.store, &input.items, &locs, turns, model_may_reason),
            ..plan
        }
    };
    if let Some(why) = broken {
        return rehydrate(Plan::unrepairable(why));
    }
    for ins in orphan_outputs(
        view.store,
        &input.items,
        &index,
        turns,
        &slot,
        &present,
        Restore {
            policy,
            reasoning: model_may_reason,
        },
    ) {
        if chosen_ids.insert(ins.id.clone()) {
            insertions.push(ins);
        }
    }
    insertions.sort_by_key(|i| (i.gap, i.order));
    if model_may_reason && !insertions.is_empty() {
        let sequence = final_sequence(&input.items, &locs, &insertions, &index);
        if let Some(id) = first_violation(&sequence, turns) {
            // The repaired request would still break a pairing rule (a reasoning item whose
            // only follower is in another group the client did not send, say): insert nothing.
            return rehydrate(Plan::unrepairable(Unrepairable::NoFollower { id }));
        }
    }
    let replacements = rehydrations(view.store, &input.items, &locs, turns, model_may_reason);
    if insertions.is_empty() && replacements.is_empty() {
        return Plan::default();
    }
    if view.chained {
        return Plan::unrepairable(Unrepairable::Chained);
    }
    Plan {
        insertions,
        replacements,
        unrepairable: None,
    }
}

/// What a group is restored with: its other items as `policy` says, and its reasoning item only
/// for a model that may reason.
#[derive(Clone, Copy)]
struct Restore {
    policy: RestorePolicy,
    reasoning: bool,
}

/// Calls whose outputs the client sent without the calls themselves (and without any other item
/// of their group): the group is restored right before the first such output — its reasoning
/// item, the answered calls, and with `RestorePolicy::Group` its other items — as the API needs a
/// call before its output ("No tool call found for function call output").
fn orphan_outputs(
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

/// One position of the repaired input: the remembered item it is (if any), and whether it
/// carries an id (id-less calls are known by `call_id` but never paired by the API).
#[derive(Clone, Copy)]
struct Slot {
    loc: Option<Loc>,
    has_id: bool,
}

fn final_sequence(
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
fn first_violation(sequence: &[Slot], turns: &[Arc<Turn>]) -> Option<String> {
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

/// Client items sent by reference (or a reasoning item without its content) where the server
/// cannot look them up, replaced by the full recorded items where rethread has them: every
/// such item of a stateless request, and, in a stored one, those of a turn that was not stored
/// (a client that flipped `store` between turns).
fn rehydrations(
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
fn plan_group(
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

/// The insertion that answers an upstream error naming `reasoning_id` as missing before
/// `item_id`, for an item rethread did not remember: an `item_reference` right before the item.
///
/// The API reports the first offending item in input order, so the named item is the first of
/// its group that the client sent; placing the reasoning item directly before it attaches it.
pub fn cold_insertion(
    view: &RequestView<'_>,
    planned: &[Insertion],
    item_id: &str,
    reasoning_id: &str,
) -> Option<Insertion> {
    let input = view.input.as_ref()?;
    if !view.store || view.chained {
        return None;
    }
    let already = |id: &str| {
        input.items.iter().any(|i| i.id() == Some(id)) || planned.iter().any(|i| &*i.id == id)
    };
    if already(reasoning_id) {
        return None;
    }
    let gap = input.items.iter().position(|i| i.id() == Some(item_id))?;
    Some(Insertion {
        gap,
        id: reasoning_id.into(),
        ty: ItemType::Reasoning,
        text: reference_json(reasoning_id),
        order: (phase::COLD, 0),
    })
}

/// Adds a cold-fallback insertion to a plan, keeping it sorted.
pub fn with_insertion(mut insertions: Vec<Insertion>, extra: Insertion) -> Vec<Insertion> {
    insertions.push(extra);
    insertions.sort_by_key(|i| (i.gap, i.order));
    insertions
}

#[cfg(test)]
mod tests;
