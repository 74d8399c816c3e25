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

mod adopt;
mod drop;
mod edit;
mod regroup;

use super::fields;
use super::items::{ItemType, Turn};
use super::plan::{Index, Loc};
use super::request::InputItem;

/// Most item visits regrouping may take (remembered items × input items).
const MAX_REGROUP_WORK: usize = 1 << 22;

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

/// What one rewrite pass reads: the request's items, what memory knows of them, and what the
/// settings and the upstream's refusals allow.
struct Pass<'p, 'a> {
    /// The body holding the items' bytes (their spans).
    body: &'p [u8],
    items: &'p [InputItem<'a>],
    turns: &'p [Arc<Turn>],
    store: bool,
    switches: Switches,
    model_may_reason: bool,
    directives: &'p Directives,
}

impl Pass<'_, '_> {
    /// Item `n`'s own bytes.
    fn bytes(&self, n: usize) -> &[u8] {
        self.body
            .get(self.items[n].span.clone())
            .unwrap_or_default()
    }

    fn is_reasoning(&self, n: usize) -> bool {
        self.items[n].ty() == Some("reasoning")
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
    let pass = Pass {
        body,
        items,
        turns,
        store,
        switches,
        model_may_reason,
        directives,
    };
    let index = Index::new(turns);
    let mut out = Rewrite {
        order: (0..items.len()).collect(),
        ..Rewrite::default()
    };
    if switches.complete {
        out.complete_summaries(&pass);
    }
    // What each client item is, as far as memory knows, ids adopted included.
    let mut locs: Vec<Option<Loc>> = items.iter().map(|i| index.resolve(i, turns)).collect();
    let mut drop = adopt::adopt(&pass, &mut locs, &mut out);
    if switches.drops || !directives.drop_ids.is_empty() || directives.drop_reasoning {
        drop::drop_items(&pass, &locs, &mut drop);
    }
    out.without(&drop, items);
    out.expand_calls(&pass, &index);
    edit::edit_fields(&pass, &locs, &mut out);
    // Regrouping scans the input once per remembered group: bounded, so a hostile input of
    // many items naming many groups costs no more than this.
    let groups = locs.iter().flatten().count();
    if switches.moves
        && model_may_reason
        && groups.saturating_mul(out.order.len()) <= MAX_REGROUP_WORK
    {
        out.moved = regroup::regroup(&mut out.order, &locs, turns);
    }
    out
}

impl Rewrite {
    /// E16: a full reasoning item without `summary` gets `"summary":[]`.
    fn complete_summaries(&mut self, pass: &Pass<'_, '_>) {
        for (n, item) in pass.items.iter().enumerate() {
            if pass.is_reasoning(n) && !item.has_summary {
                self.edits.push((n, ItemEdit::CompleteSummary));
                self.completed += 1;
            }
        }
    }

    /// The items in `drop` leave the order, with their edits.
    fn without(&mut self, drop: &HashSet<usize>, items: &[InputItem<'_>]) {
        if drop.is_empty() {
            return;
        }
        self.order.retain(|n| !drop.contains(n));
        self.edits.retain(|(n, _)| !drop.contains(n));
        self.completed = self
            .edits
            .iter()
            .filter(|(_, e)| *e == ItemEdit::CompleteSummary)
            .count();
        self.dropped = drop.len();
        let mut ids: Vec<(usize, Box<str>)> = drop
            .iter()
            .map(|&n| (n, items[n].id().unwrap_or("").into()))
            .collect();
        ids.sort();
        self.dropped_ids = ids.into_iter().map(|(_, id)| id).collect();
    }

    /// E6: a reference to a call the upstream found no call for becomes the recorded call.
    fn expand_calls(&mut self, pass: &Pass<'_, '_>, index: &Index<'_>) {
        let items = pass.items;
        for call_id in &pass.directives.expand_calls {
            let Some(loc) = index.by_call.get(call_id.as_str()).copied() else {
                continue;
            };
            let call = &pass.turns[loc.turn].items[loc.pos];
            let Some(full) = call.full.clone() else {
                continue;
            };
            let reference = self.order.iter().copied().find(|&n| {
                let by_id = items[n].ty().is_none_or(|t| t == "item_reference") || items[n].bare;
                by_id && items[n].id() == Some(&call.id)
            });
            if let Some(n) = reference {
                self.completed += 1;
                self.edits.push((
                    n,
                    ItemEdit::ExpandCall {
                        text: full,
                        ty: call.ty.clone(),
                        call_id: call.call_id.clone(),
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
