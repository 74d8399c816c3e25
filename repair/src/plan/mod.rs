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

mod group;
mod index;
mod order;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::items::{ItemType, Turn};
use super::request::RequestView;
pub use group::recorded_form;
use group::{orphan_outputs, plan_group, rehydrations, Restore};
use index::Present;
pub(crate) use index::{Index, Loc};
use order::{final_sequence, first_violation};

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
    pub(super) const TAIL: u8 = 0;
    pub(super) const WRITTEN: u8 = 1;
    pub(super) const HEAD: u8 = 2;
    pub(super) const COLD: u8 = 3;
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
    let groups = Groups::of(&locs, turns);
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

    let mut chosen = Chosen::default();
    if model_may_reason {
        for (t, members) in &groups.members {
            match plan_group(view.store, &turns[*t], members, &present, policy) {
                Ok(insertions) => chosen.extend(insertions),
                Err(why) => return rehydrate(Plan::unrepairable(why)),
            }
        }
    }
    let restore = Restore {
        policy,
        reasoning: model_may_reason,
    };
    let orphans = orphan_outputs(
        view.store,
        &input.items,
        &index,
        turns,
        &groups.slot,
        &present,
        restore,
    );
    chosen.extend(orphans);
    let mut insertions = chosen.insertions;
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

/// The client's items by the remembered group they belong to, in order of first appearance.
struct Groups {
    /// Each group's turn, and its members as (input position, turn position), in input order.
    members: Vec<(usize, Vec<(usize, usize)>)>,
    /// A group's place in `members`, by (turn, the group's first turn position).
    slot: HashMap<(usize, usize), usize>,
}

impl Groups {
    fn of(locs: &[Option<Loc>], turns: &[Arc<Turn>]) -> Self {
        let mut groups = Groups {
            members: Vec::new(),
            slot: HashMap::new(),
        };
        for (n, loc) in locs.iter().enumerate() {
            let Some(loc) = *loc else { continue };
            let start = turns[loc.turn].group(loc.pos).start;
            let members = &mut groups.members;
            let k = *groups.slot.entry((loc.turn, start)).or_insert_with(|| {
                members.push((loc.turn, Vec::new()));
                members.len() - 1
            });
            groups.members[k].1.push((n, loc.pos));
        }
        groups
    }
}

/// The insertions chosen so far, each id once.
#[derive(Default)]
struct Chosen {
    ids: HashSet<Box<str>>,
    insertions: Vec<Insertion>,
}

impl Chosen {
    fn extend(&mut self, insertions: Vec<Insertion>) {
        for ins in insertions {
            if self.ids.insert(ins.id.clone()) {
                self.insertions.push(ins);
            }
        }
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
