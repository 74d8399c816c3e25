//! What rethread changes in one create request, decided without I/O and applied to its bytes.
//!
//! One function decides and one applies, and every path uses both: HTTP, WebSocket frames and
//! `rethread explain`, so what `explain` prints is what the proxy sends. The decision runs in two
//! passes: the rewrites of the client's own items (`rewrite.rs`), then the planner's insertions
//! and rehydrations on the rewritten items (`plan.rs`).

use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;

use super::items::{ItemType, Turn};
use super::plan::{self, Insertion, Replacement, RestorePolicy, Unrepairable};
use super::request::{InputList, RequestView};
use super::rewrite::{self, Directives, ItemEdit, Rewrite, Switches};
use super::splice::{apply, include_edit, include_removal, input_edits, rewritten_input};

/// What a request's change may do, as settings and model knowledge decide it.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub policy: RestorePolicy,
    /// Add encrypted reasoning to `include` of a stateless request that lacks it.
    pub stateless_include: bool,
    /// The request's model reasons, or is not known not to.
    pub model_may_reason: bool,
    /// Which rewrites of the client's own items may apply.
    pub switches: Switches,
    /// Traffic showed the model refuses encrypted reasoning (E14, E15): the client's own
    /// `include` entry for it is removed.
    pub exclude_encrypted: bool,
    /// `unanswered_calls = answer`: the output text given to a call the request leaves
    /// unanswered (`unanswered.rs`).
    pub answer_calls: Option<&'static str>,
    /// The upstream answers this tenant's requests `store: false` whatever they ask (N8): they
    /// are repaired as `store: false` ones.
    pub upstream_unstored: bool,
}

/// What rethread changes in a request.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Gaps are positions in the rewritten input (the client's, when nothing was rewritten).
    pub insertions: Vec<Insertion>,
    /// Indices are positions in the rewritten input.
    pub replacements: Vec<Replacement>,
    /// The client's items moved, dropped or edited, if any.
    pub rewrite: Option<Rewrite>,
    /// Add `reasoning.encrypted_content` to `include` (a stateless request that lacks it).
    pub include: bool,
    /// Write a nested `input` as the flat list the API takes.
    pub flatten: bool,
    /// Remove `reasoning.encrypted_content` from the client's own `include` (a model that
    /// refused it).
    pub exclude: bool,
    /// Call ids given a written output (`unanswered.rs`); their outputs are in `insertions`.
    pub answered: Vec<Box<str>>,
    /// The chain's whole history, sent in place of `previous_response_id` (the server lost the
    /// chain; `chain.rs`).
    pub expand: Option<Arc<[Bytes]>>,
}

/// The rules a change applied, with their counts: the `x-rethread-repairs` header, the log line
/// and the metric labels.
pub const RULE_NAMES: [&str; 15] = [
    "insert",
    "rehydrate",
    "move",
    "drop",
    "adopt",
    "complete",
    "include",
    "flatten",
    "exclude",
    "sanitise",
    "alias",
    "restore",
    "answer",
    "dedupe",
    "expand",
];

impl Change {
    pub fn is_empty(&self) -> bool {
        self.insertions.is_empty()
            && self.replacements.is_empty()
            && self.rewrite.is_none()
            && !self.include
            && !self.flatten
            && !self.exclude
            && self.expand.is_none()
    }

    /// Items placed into the input: inserted, or rehydrated in full.
    pub fn items(&self) -> usize {
        self.insertions.len() + self.replacements.len()
    }

    /// Items whose own fields this change edits (sanitise, alias, restore).
    pub fn field_edits(&self) -> usize {
        self.rewrite
            .as_ref()
            .map_or(0, |r| r.sanitised + r.aliased + r.restored)
    }

    /// Insertions from memory (the written outputs of unanswered calls are not).
    fn remembered(&self) -> usize {
        self.insertions.len() - self.answered.len()
    }

    pub fn ids(&self) -> Vec<&str> {
        let inserted = self.insertions.iter().map(|i| &*i.id);
        inserted
            .chain(self.replacements.iter().map(|r| &*r.id))
            .collect()
    }

    /// Ids of the client's items this change drops.
    pub fn dropped_ids(&self) -> Vec<&str> {
        self.rewrite
            .iter()
            .flat_map(|r| r.dropped_ids.iter().map(|id| &**id))
            .collect()
    }

    /// Types of the items placed into the input.
    pub fn item_types(&self) -> impl Iterator<Item = &ItemType> {
        self.insertions
            .iter()
            .map(|i| &i.ty)
            .chain(self.replacements.iter().map(|r| &r.ty))
    }

    /// Whether any reasoning item is placed into the input.
    pub fn places_reasoning(&self) -> bool {
        self.item_types().any(|t| *t == ItemType::Reasoning)
    }

    /// Each rule this change applies, with how many items it touched (`include`, `flatten` and
    /// `exclude` count 1), in the order of `RULE_NAMES`.
    pub fn rules(&self) -> Vec<(&'static str, usize)> {
        let r = self.rewrite.as_ref();
        let counts = [
            self.remembered(),
            self.replacements.len(),
            r.map_or(0, |r| r.moved),
            r.map_or(0, |r| r.dropped),
            r.map_or(0, |r| r.adopted),
            r.map_or(0, |r| r.completed),
            usize::from(self.include),
            usize::from(self.flatten),
            usize::from(self.exclude),
            r.map_or(0, |r| r.sanitised),
            r.map_or(0, |r| r.aliased),
            r.map_or(0, |r| r.restored),
            self.answered.len(),
            r.map_or(0, |r| r.deduped),
            usize::from(self.expand.is_some()),
        ];
        RULE_NAMES
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The rules as a header value: `insert=2, move=1`.
    pub fn rules_text(&self) -> String {
        let mut text = String::new();
        for (rule, n) in self.rules() {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let _ = write!(text, "{rule}={n}");
        }
        text
    }

    /// The body with the change applied, as chunks of the original buffer and new bytes.
    pub fn apply(&self, body: &Bytes, view: &RequestView<'_>) -> Vec<Bytes> {
        let mut edits = match (&view.input, &self.rewrite) {
            (Some(input), Some(rewrite)) => {
                let edits = rewrite.edits_by_item();
                vec![rewritten_input(
                    input,
                    &rewrite.order,
                    &self.insertions,
                    &self.replacements,
                    |n| edited_item(body, input, edits.get(&n).map_or(&[], Vec::as_slice), n),
                )]
            }
            (Some(input), None) if self.items() > 0 || (self.flatten && input.nested) => {
                input_edits(body, input, &self.insertions, &self.replacements)
            }
            _ => Vec::new(),
        };
        if self.include {
            edits.extend(include_edit(body, view));
        }
        if self.exclude {
            edits.extend(include_removal(body, view));
        }
        let chunks = apply(body, edits);
        match &self.expand {
            Some(history) => {
                let edited = super::splice::concat(&chunks);
                match super::chain::expanded(&edited, history) {
                    Some(expanded) => vec![Bytes::from(expanded)],
                    None => chunks,
                }
            }
            None => chunks,
        }
    }
}

/// A client item's bytes after the rewrite's edits: an adopted id or a completed summary added
/// after its opening brace, or the recorded call in place of a reference to it.
fn edited_item(
    body: &Bytes,
    input: &InputList<'_>,
    edits: &[&ItemEdit],
    n: usize,
) -> Option<Vec<Bytes>> {
    let replaced = edits.iter().find_map(|e| match e {
        ItemEdit::Replace(text) | ItemEdit::IdAsCallId(text) => Some(text.clone()),
        _ => None,
    });
    let own = match replaced {
        Some(text) => text,
        None => body.slice(input.items.get(n)?.span.clone()),
    };
    let mut added: Vec<Bytes> = Vec::new();
    for edit in edits {
        match edit {
            ItemEdit::Replace(_) | ItemEdit::IdAsCallId(_) => {}
            ItemEdit::AdoptId(id) => {
                let id = serde_json::Value::String(id.to_string());
                added.push(Bytes::from(format!("\"id\":{id}")));
            }
            ItemEdit::CompleteSummary => added.push(Bytes::from_static(b"\"summary\":[]")),
            ItemEdit::ExpandCall { text, .. } => return Some(vec![text.clone()]),
        }
    }
    Some(with_fields(own, added))
}

/// An object's bytes with `fields` (`"key":value`) added right after its opening brace.
fn with_fields(object: Bytes, fields: Vec<Bytes>) -> Vec<Bytes> {
    let open = object.iter().position(|&b| b == b'{');
    let (Some(open), false) = (open, fields.is_empty()) else {
        return vec![object];
    };
    let empty = object[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|&b| b == b'}');
    let mut out = vec![object.slice(..=open)];
    for (k, field) in fields.into_iter().enumerate() {
        if k > 0 {
            out.push(Bytes::from_static(b","));
        }
        out.push(field);
    }
    if !empty {
        out.push(Bytes::from_static(b","));
    }
    out.push(object.slice(open + 1..));
    out
}

/// Whether a stateless request should ask for encrypted reasoning.
pub fn wants_include(body: &[u8], view: &RequestView<'_>, rules: Rules) -> bool {
    !view.store
        && rules.stateless_include
        && rules.model_may_reason
        && !view.includes_encrypted_reasoning
        && include_edit(body, view).is_some()
}

/// Whether the client's own `include` entry for encrypted reasoning goes: the model refused it.
pub fn wants_exclude(body: &[u8], view: &RequestView<'_>, rules: Rules) -> bool {
    rules.exclude_encrypted
        && rules.switches.exclude
        && view.includes_encrypted_reasoning
        && include_removal(body, view).is_some()
}

/// The change for a request, given the remembered turns its items name (none when memory was
/// not asked or not reachable) and what an upstream refusal asked for, and why the items it
/// names could not be repaired, if so.
pub fn decide(
    body: &[u8],
    view: &RequestView<'_>,
    turns: &[Arc<Turn>],
    rules: Rules,
    directives: &Directives,
) -> (Change, Option<Unrepairable>) {
    if rules.upstream_unstored && view.store {
        let unstored = RequestView {
            store: false,
            ..view.clone()
        };
        let rules = Rules {
            upstream_unstored: false,
            ..rules
        };
        return decide(body, &unstored, turns, rules, directives);
    }
    let mut change = Change {
        include: wants_include(body, view, rules),
        exclude: wants_exclude(body, view, rules),
        flatten: view.input.as_ref().is_some_and(|i| i.nested),
        ..Change::default()
    };
    let Some(input) = &view.input else {
        return (change, None);
    };
    // The model refused reasoning items: it is one that does not reason.
    let rules = Rules {
        model_may_reason: rules.model_may_reason && !directives.drop_reasoning,
        ..rules
    };
    if view.chained {
        // The server holds the chain: nothing is inserted or rewritten (the plan says why).
        let plan = plan::plan(view, turns, rules.policy, rules.model_may_reason);
        return (change, plan.unrepairable);
    }
    let rewrite = rewrite::rewrite(
        body,
        &input.items,
        turns,
        view.store,
        rules.switches,
        rules.model_may_reason,
        directives,
    );
    let rewritten = !rewrite.is_empty();
    let items = if rewritten {
        rewrite.items(&input.items)
    } else {
        input.items.clone()
    };
    if turns.is_empty() {
        change.rewrite = rewritten.then_some(rewrite);
        answer_calls(&mut change, &items, rules);
        return (change, None);
    }
    let seen = RequestView {
        store: view.store,
        chained: view.chained,
        previous_response_id: view.previous_response_id.clone(),
        conversation: view.conversation.clone(),
        includes_encrypted_reasoning: view.includes_encrypted_reasoning,
        include_span: view.include_span.clone(),
        model: view.model.clone(),
        reasoning_param: view.reasoning_param,
        input: Some(InputList {
            span: input.span.clone(),
            nested: input.nested,
            items,
        }),
    };
    let plan = plan::plan(&seen, turns, rules.policy, rules.model_may_reason);
    change.insertions = plan.insertions;
    change.replacements = plan.replacements;
    change.rewrite = rewritten.then_some(rewrite);
    if let Some(input) = &seen.input {
        answer_calls(&mut change, &input.items, rules);
    }
    (change, plan.unrepairable)
}

/// What the chain a request continues changes in it (`chain.rs`; `chain` newest first, its
/// first turn the request's `previous_response_id`): the items the chain holds left out (N7),
/// the last response's calls the request leaves unanswered answered (`unanswered_calls =
/// answer`, N1), and the chain's `history` sent in its place when the server lost it (N6).
pub fn with_chain(
    mut change: Change,
    body: &[u8],
    view: &RequestView<'_>,
    chain: &[Arc<Turn>],
    rules: Rules,
    history: Option<Arc<[Bytes]>>,
) -> Change {
    let (Some(input), Some(last)) = (&view.input, chain.first()) else {
        change.expand = history;
        return change;
    };
    change = without_held(change, body, view, chain, rules);
    if let Some(text) = rules.answer_calls {
        let items = match &change.rewrite {
            Some(rewrite) => rewrite.items(&input.items),
            None => input.items.clone(),
        };
        for answer in super::chain::answers(&items, last, text) {
            change.answered.push(answer.id.clone());
            change.insertions =
                plan::with_insertion(std::mem::take(&mut change.insertions), answer);
        }
    }
    change.expand = history;
    change
}

/// `change` with the client's items that `held` turns already hold left out (`dedupe`): the
/// chain's (N7), or a conversation's once the upstream said it holds one of them.
pub fn without_held(
    mut change: Change,
    body: &[u8],
    view: &RequestView<'_>,
    held: &[Arc<Turn>],
    rules: Rules,
) -> Change {
    let Some(input) = &view.input else {
        return change;
    };
    if !rules.switches.dedupe || change.rewrite.is_some() {
        return change;
    }
    let dups = super::chain::duplicates(body, &input.items, held);
    if !dups.is_empty() {
        change.rewrite = Some(Rewrite {
            order: (0..input.items.len())
                .filter(|n| !dups.contains(n))
                .collect(),
            deduped: dups.len(),
            dropped_ids: dups
                .iter()
                .filter_map(|&n| input.items[n].id().map(Into::into))
                .collect(),
            ..Rewrite::default()
        });
    }
    change
}

/// With `unanswered_calls = answer`, the written outputs of the calls `items` leave unanswered.
fn answer_calls(change: &mut Change, items: &[super::request::InputItem<'_>], rules: Rules) {
    let Some(text) = rules.answer_calls else {
        return;
    };
    for answer in super::unanswered::answers(items, text) {
        change.answered.push(answer.id.clone());
        change.insertions = plan::with_insertion(std::mem::take(&mut change.insertions), answer);
    }
}
