//! Making a request whole where inserting alone cannot: the rewrites of items the client sent.
//!
//! Clients and SDKs break follow-ups in a few recurring ways (answering each parallel call right
//! after it, losing an id, sending an item twice, keeping a reasoning item whose call they
//! dropped). Every SDK that fixed these on its own side did it by moving, dropping, adopting or
//! completing items; this pass does the same, before the insertion planner runs on its result.
//! Each rewrite applies only where memory (or the upstream's own error, through `Directives`)
//! proves that the request as sent would be refused:
//!
//! - **complete**: a full reasoning item without `summary` gets `"summary":[]` (E16);
//! - **adopt**: an id-less reasoning item whose encrypted content is that of a remembered one,
//!   placed right before an item of its group, gets its id (E1 on the follower otherwise); an
//!   id-less assistant message whose text is that of its group's message, right after the
//!   group's reasoning item, gets the message's id (E2 on the reasoning otherwise);
//! - **drop**: a later exact duplicate of an item with an id (E4); a reasoning item that can
//!   never be valid: its group holds nothing else (E12, E13), or only calls whose outputs are not
//!   in the request; a reasoning item whose follower the client replaced with its own edited
//!   message (the edit wins, E2 otherwise); reasoning items for a model that does not reason
//!   (E15);
//! - **move**: items that split a remembered group with a reasoning item (tool outputs, above
//!   all) move after the group, keeping their order; the group's own items go back to their
//!   turn's order (E1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::content;
use super::fields;
use super::items::{is_output_of_call, ItemType, Turn};
use super::plan::{Index, Loc};
use super::request::InputItem;

/// Most item visits regrouping may take (remembered items × input items).
const MAX_REGROUP_WORK: usize = 1 << 22;
/// Earlier copies of one id an item is compared with, byte for byte.
const MAX_COPIES_COMPARED: usize = 8;

/// Which rewrites may apply (each can be switched off; all are on by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switches {
    pub moves: bool,
    pub drops: bool,
    pub adopt: bool,
    pub complete: bool,
    /// Remove `reasoning.encrypted_content` from the client's own `include` for a model that
    /// refused it (E14).
    pub exclude: bool,
    /// Empty a reasoning item's `content`, leave out output-only keys sent as `null` (N3, N4).
    pub sanitise: bool,
    /// Shorten call ids over 64 characters to one alias; leave out an over-long item id (N5).
    pub alias: bool,
    /// Put back a remembered item the client mangled (a `web_search_call`'s action, N12).
    pub restore: bool,
    /// Leave out of a chained request the items its chain already holds (N7).
    pub dedupe: bool,
    /// Send a lost `store: false` chain's whole history in its place (N6).
    pub expand: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            moves: true,
            drops: true,
            adopt: true,
            complete: true,
            exclude: true,
            sanitise: true,
            alias: true,
            restore: true,
            dedupe: true,
            expand: true,
        }
    }
}

/// What the upstream's own refusal asks for, for a retry (the reactive rewrites).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// Reasoning items the upstream named as without their follower (E2): dropped.
    pub drop_ids: Vec<String>,
    /// The model refused reasoning items (E15): all are dropped.
    pub drop_reasoning: bool,
    /// Calls the upstream found no call for (E6): a reference to the call becomes the call.
    pub expand_calls: Vec<String>,
    /// The upstream refused reasoning text or an output-only `null` (N3, N4).
    pub sanitise: bool,
    /// The upstream refused an over-long call id (N5): every one gets its alias.
    pub alias_call_ids: bool,
    /// The upstream refused an over-long item id (N5): it is left out of the item.
    pub drop_long_ids: bool,
    /// The upstream refused an item's `action` (N12): remembered items are put back.
    pub restore_actions: bool,
    /// The upstream refused an item the request's conversation already holds (E4): the items
    /// memory saw in that conversation are left out (`change::without_held`).
    pub conversation_duplicates: bool,
}

/// A change to one client item's own bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemEdit {
    /// Add `"id":…` (the item had none).
    AdoptId(Box<str>),
    /// Add `"summary":[]`.
    CompleteSummary,
    /// Replace a reference to a call with the recorded call.
    ExpandCall {
        text: Bytes,
        ty: ItemType,
        call_id: Option<Box<str>>,
    },
    /// The item's own bytes with fields edited (`fields.rs`), or the recorded item in place of
    /// a mangled copy; other edits apply on top.
    Replace(Bytes),
    /// An output's `id` that is its call's id, renamed `call_id` (N2).
    IdAsCallId(Bytes),
}

/// The client's items after the rewrites: their new order, and edits to their bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Indices of the client's (flattened) items in their new order; dropped items are absent.
    pub order: Vec<usize>,
    /// Edits by client index.
    pub edits: Vec<(usize, ItemEdit)>,
    pub moved: usize,
    pub dropped: usize,
    pub adopted: usize,
    pub completed: usize,
    pub sanitised: usize,
    pub aliased: usize,
    pub restored: usize,
    /// Items dropped because the chain the request continues holds them (`chain.rs`).
    pub deduped: usize,
    /// Ids of the items dropped, for the debug log.
    pub dropped_ids: Vec<Box<str>>,
}

impl Rewrite {
    /// Whether anything changes.
    pub fn is_empty(&self) -> bool {
        self.moved + self.dropped + self.adopted + self.completed + self.deduped == 0
            && self.edits.is_empty()
    }

    /// The edits of each client item, by its index.
    pub fn edits_by_item(&self) -> HashMap<usize, Vec<&ItemEdit>> {
        let mut by_item: HashMap<usize, Vec<&ItemEdit>> = HashMap::new();
        for (n, edit) in &self.edits {
            by_item.entry(*n).or_default().push(edit);
        }
        by_item
    }

    /// The client's items as the planner should see them: in the new order, with adopted ids.
    pub fn items<'a>(&self, items: &[InputItem<'a>]) -> Vec<InputItem<'a>> {
        let edits = self.edits_by_item();
        self.order
            .iter()
            .map(|&n| {
                let mut item = items[n].clone();
                for edit in edits.get(&n).into_iter().flatten() {
                    match edit {
                        ItemEdit::AdoptId(id) => {
                            item.id = Some(std::borrow::Cow::Owned(id.to_string()));
                        }
                        ItemEdit::ExpandCall { ty, call_id, .. } => {
                            item.ty = Some(std::borrow::Cow::Owned(ty.as_str().to_owned()));
                            item.call_id = call_id.as_deref().map(|c| c.to_owned().into());
                            item.bare = false;
                        }
                        ItemEdit::IdAsCallId(text) => {
                            item.call_id = item.id.take();
                            item.id_key = false;
                            aliased_view(&mut item, text);
                        }
                        ItemEdit::Replace(text) => aliased_view(&mut item, text),
                        ItemEdit::CompleteSummary => {}
                    }
                }
                item
            })
            .collect()
    }
}

/// An edited item's `call_id` as the edit wrote it: an over-long one that `text` carries as its
/// alias (`fields::shortened`) is seen as the alias, so what is planned for the call (an
/// answer) names what is sent.
fn aliased_view(item: &mut InputItem<'_>, text: &[u8]) {
    let Some(call_id) = item
        .call_id()
        .filter(|c| c.chars().count() > fields::MAX_ID_LEN)
    else {
        return;
    };
    let alias = fields::alias(call_id);
    if memchr::memmem::find(text, alias.as_bytes()).is_some() {
        item.call_id = Some(std::borrow::Cow::Owned(alias));
    }
}

/// The rewrites for a request's items. `body` holds the items' bytes (their spans).
pub fn rewrite(
    body: &[u8],
    items: &[InputItem<'_>],
    turns: &[Arc<Turn>],
    store: bool,
    switches: Switches,
    model_may_reason: bool,
    directives: &Directives,
) -> Rewrite {
    let index = Index::new(turns);
    let mut out = Rewrite {
        order: (0..items.len()).collect(),
        ..Rewrite::default()
    };
    let bytes = |n: usize| body.get(items[n].span.clone()).unwrap_or_default();
    let is_reasoning = |n: usize| items[n].ty() == Some("reasoning");

    if switches.complete {
        for (n, item) in items.iter().enumerate() {
            if is_reasoning(n) && !item.has_summary {
                out.edits.push((n, ItemEdit::CompleteSummary));
                out.completed += 1;
            }
        }
    }

    // What each client item is, as far as memory knows, ids adopted included.
    let mut locs: Vec<Option<Loc>> = items.iter().map(|i| index.resolve(i, turns)).collect();
    let present: HashSet<&str> = items.iter().filter_map(InputItem::id).collect();
    let mut drop: HashSet<usize> = HashSet::new();

    // An id-less copy of a remembered item, at the one place its id is needed.
    let group_of = |loc: Loc| turns[loc.turn].group(loc.pos);
    let mut adopted_ids: HashSet<Box<str>> = HashSet::new();
    for n in 0..items.len() {
        let item = &items[n];
        if item.id_key || !model_may_reason {
            continue;
        }
        let reasoning_copy = is_reasoning(n) && item.has_encrypted_content;
        let message_copy = item.assistant && matches!(item.ty(), None | Some("message"));
        if reasoning_copy {
            // The next item is a member of some remembered group: is this its reasoning item?
            let Some(next) = locs.get(n + 1).copied().flatten() else {
                continue;
            };
            let Some(rs) = group_of(next).reasoning else {
                continue;
            };
            let recorded = &turns[next.turn].items[rs];
            if present.contains(&*recorded.id) || adopted_ids.contains(&recorded.id) {
                continue;
            }
            let digest = content::digest(bytes(n));
            if digest.is_some() && digest == recorded.digest && switches.adopt {
                out.edits.push((n, ItemEdit::AdoptId(recorded.id.clone())));
                adopted_ids.insert(recorded.id.clone());
                locs[n] = Some(Loc {
                    turn: next.turn,
                    pos: rs,
                });
                out.adopted += 1;
            }
        } else if message_copy {
            // Right after a remembered reasoning item whose group has a message: the same text
            // is that message; other text is the client's edit, and the edit wins.
            let Some(prev) = n.checked_sub(1).and_then(|p| locs[p]) else {
                continue;
            };
            let group = group_of(prev);
            if group.reasoning != Some(prev.pos) {
                continue;
            }
            let turn = &turns[prev.turn];
            let members: Vec<usize> = group.members().collect();
            if members
                .iter()
                .any(|&m| present.contains(&*turn.items[m].id))
            {
                continue;
            }
            let messages: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&m| turn.items[m].ty == ItemType::Message)
                .collect();
            if messages.is_empty() {
                continue;
            }
            let digest = content::digest(bytes(n));
            let same = messages.iter().copied().find(|&m| {
                digest.is_some()
                    && turn.items[m].digest == digest
                    && !adopted_ids.contains(&turn.items[m].id)
            });
            match same {
                Some(m) if switches.adopt => {
                    let id = turn.items[m].id.clone();
                    out.edits.push((n, ItemEdit::AdoptId(id.clone())));
                    adopted_ids.insert(id);
                    locs[n] = Some(Loc {
                        turn: prev.turn,
                        pos: m,
                    });
                    out.adopted += 1;
                }
                Some(_) => {}
                None if switches.drops => {
                    drop.insert(n - 1);
                }
                None => {}
            }
        }
    }

    if switches.drops || !directives.drop_ids.is_empty() || directives.drop_reasoning {
        drop_items(
            body,
            items,
            turns,
            &locs,
            switches.drops,
            model_may_reason,
            directives,
            &mut drop,
        );
    }
    if !drop.is_empty() {
        out.order.retain(|n| !drop.contains(n));
        out.edits.retain(|(n, _)| !drop.contains(n));
        out.completed = out
            .edits
            .iter()
            .filter(|(_, e)| *e == ItemEdit::CompleteSummary)
            .count();
        out.dropped = drop.len();
        let mut ids: Vec<(usize, Box<str>)> = drop
            .iter()
            .map(|&n| (n, items[n].id().unwrap_or("").into()))
            .collect();
        ids.sort();
        out.dropped_ids = ids.into_iter().map(|(_, id)| id).collect();
    }

    for call_id in &directives.expand_calls {
        let recorded = index.by_call.get(call_id.as_str()).copied();
        let Some(loc) = recorded else { continue };
        let call = &turns[loc.turn].items[loc.pos];
        let Some(full) = call.full.clone() else {
            continue;
        };
        let reference = out.order.iter().copied().find(|&n| {
            let by_id = items[n].ty().is_none_or(|t| t == "item_reference") || items[n].bare;
            by_id && items[n].id() == Some(&call.id)
        });
        if let Some(n) = reference {
            out.completed += 1;
            out.edits.push((
                n,
                ItemEdit::ExpandCall {
                    text: full,
                    ty: call.ty.clone(),
                    call_id: call.call_id.clone(),
                },
            ));
        }
    }

    edit_fields(
        body, items, turns, &locs, store, switches, directives, &mut out,
    );

    // Regrouping scans the input once per remembered group: bounded, so a hostile input of
    // many items naming many groups costs no more than this.
    let groups = locs.iter().flatten().count();
    if switches.moves
        && model_may_reason
        && groups.saturating_mul(out.order.len()) <= MAX_REGROUP_WORK
    {
        out.moved = regroup(&mut out.order, &locs, turns);
    }
    out
}

/// The edits of items' own fields that the upstream's refusal asked for (`fields.rs`): each
/// client item kept in the request is sanitised, shortened or put back as the directives say.
#[allow(clippy::too_many_arguments)] // one pass over what `rewrite` already holds
fn edit_fields(
    body: &[u8],
    items: &[InputItem<'_>],
    turns: &[Arc<Turn>],
    locs: &[Option<Loc>],
    store: bool,
    switches: Switches,
    directives: &Directives,
    out: &mut Rewrite,
) {
    let sanitise = switches.sanitise && directives.sanitise;
    let shorten = switches.alias && (directives.alias_call_ids || directives.drop_long_ids);
    let restore = switches.restore && directives.restore_actions;
    let misplaced = |i: &InputItem<'_>| {
        i.ty().is_some_and(is_output_of_call) && i.call_id().is_none() && i.id().is_some()
    };
    let rename = switches.restore && items.iter().any(misplaced);
    if !(sanitise || shorten || restore || rename) {
        return;
    }
    // Calls a misplaced output id may name: those of the request, and remembered ones.
    let calls: HashSet<&str> = items
        .iter()
        .filter(|i| i.ty().is_some_and(|t| ItemType::parse(t).is_client_call()))
        .filter_map(InputItem::call_id)
        .chain(
            turns
                .iter()
                .flat_map(|t| t.items.iter().filter_map(|i| i.call_id.as_deref())),
        )
        .collect();
    for &n in &out.order {
        let item = &items[n];
        let own = body.get(item.span.clone()).unwrap_or_default();
        // An output without `call_id` is refused whatever else it holds; with its call's id
        // in `id`, the rename is all it lacks.
        if rename && misplaced(item) && item.id().is_some_and(|id| calls.contains(id)) {
            if let Some(text) = fields::id_as_call_id(own) {
                // An over-long id becomes an over-long call id: aliased like the call's.
                let text = shorten
                    .then(|| fields::shortened(&text, false))
                    .flatten()
                    .unwrap_or(text);
                out.edits.push((n, ItemEdit::IdAsCallId(text)));
                out.restored += 1;
                continue;
            }
        }
        if !(sanitise || shorten || restore) {
            continue;
        }
        if restore && item.ty() == Some("web_search_call") && !fields::action_is_valid(own) {
            let text = locs[n].and_then(|l| {
                let turn = &turns[l.turn];
                super::plan::recorded_form(store, turn, &turn.items[l.pos])
            });
            if let Some(text) = text {
                out.edits.push((n, ItemEdit::Replace(text)));
                out.restored += 1;
                continue;
            }
        }
        let mut text: Option<Bytes> = None;
        if sanitise {
            if let Some(clean) = fields::sanitised(own, item.ty() == Some("reasoning")) {
                text = Some(clean);
                out.sanitised += 1;
            }
        }
        if shorten {
            let current = text.as_deref().unwrap_or(own);
            if let Some(short) = fields::shortened(current, directives.drop_long_ids) {
                text = Some(short);
                out.aliased += 1;
            }
        }
        if let Some(text) = text {
            out.edits.push((n, ItemEdit::Replace(text)));
        }
    }
}

/// Decides which client items to drop (into `drop`): later exact duplicates, reasoning that can
/// never be valid, and what the upstream's refusal named.
#[allow(clippy::too_many_arguments)]
fn drop_items(
    body: &[u8],
    items: &[InputItem<'_>],
    turns: &[Arc<Turn>],
    locs: &[Option<Loc>],
    proactive: bool,
    model_may_reason: bool,
    directives: &Directives,
    drop: &mut HashSet<usize>,
) {
    let bytes = |n: usize| -> &[u8] {
        body.get(items[n].span.clone())
            .unwrap_or_default()
            .trim_ascii()
    };
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

/// Puts each remembered group that has a reasoning item back together: its items in their
/// turn's order where the first of them stood, and the client items that split it right after,
/// in their own order. Returns how many items changed place.
fn regroup(order: &mut Vec<usize>, locs: &[Option<Loc>], turns: &[Arc<Turn>]) -> usize {
    let before = order.clone();
    let key = |n: usize| {
        locs[n].map(|l| {
            let g = turns[l.turn].group(l.pos);
            (l.turn, g.start, g.reasoning.is_some())
        })
    };
    let mut done: HashSet<(usize, usize)> = HashSet::new();
    let mut k = 0;
    while k < order.len() {
        let Some((turn, start, with_reasoning)) = key(order[k]) else {
            k += 1;
            continue;
        };
        if !with_reasoning || !done.insert((turn, start)) {
            k += 1;
            continue;
        }
        let in_group = |n: usize| key(n).is_some_and(|(t, s, _)| t == turn && s == start);
        let last = (k..order.len())
            .rev()
            .find(|&j| in_group(order[j]))
            .unwrap_or(k);
        let span: Vec<usize> = order[k..=last].to_vec();
        let mut members: Vec<usize> = span.iter().copied().filter(|&n| in_group(n)).collect();
        members.sort_by_key(|&n| locs[n].map_or(0, |l| l.pos));
        let twice = members
            .windows(2)
            .any(|w| locs[w[0]].map(|l| l.pos) == locs[w[1]].map(|l| l.pos));
        if twice {
            // Two items claim one remembered place (E4): no order makes that whole.
            k += 1;
            continue;
        }
        let others: Vec<usize> = span.iter().copied().filter(|&n| !in_group(n)).collect();
        let rebuilt: Vec<usize> = members.iter().chain(&others).copied().collect();
        order.splice(k..=last, rebuilt);
        k += 1;
    }
    order.iter().zip(&before).filter(|(a, b)| a != b).count()
}

#[cfg(test)]
mod tests;
