//! What rethread changes in one create request, decided without I/O and applied to its bytes.
//!
//! One function decides and one applies, and every path uses both: HTTP, WebSocket frames and
//! `rethread explain`, so what `explain` prints is what the proxy sends.

use std::sync::Arc;

use bytes::Bytes;

use super::items::{ItemType, Turn};
use super::plan::{self, Insertion, Replacement, RestorePolicy, Unrepairable};
use super::request::RequestView;
use super::splice::{apply, include_edit, input_edits};

/// What a request's change may do, as settings and model knowledge decide it.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub policy: RestorePolicy,
    /// Add encrypted reasoning to `include` of a stateless request that lacks it.
    pub stateless_include: bool,
    /// The request's model reasons, or is not known not to.
    pub model_may_reason: bool,
}

/// What rethread changes in a request.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub insertions: Vec<Insertion>,
    pub replacements: Vec<Replacement>,
    /// Add `reasoning.encrypted_content` to `include` (a stateless request that lacks it).
    pub include: bool,
    /// Write a nested `input` as the flat list the API takes.
    pub flatten: bool,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.insertions.is_empty() && self.replacements.is_empty() && !self.include && !self.flatten
    }

    /// Items placed into the input: inserted, or rehydrated in full.
    pub fn items(&self) -> usize {
        self.insertions.len() + self.replacements.len()
    }

    pub fn ids(&self) -> Vec<&str> {
        let inserted = self.insertions.iter().map(|i| &*i.id);
        inserted
            .chain(self.replacements.iter().map(|r| &*r.id))
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

    /// The body with the change applied, as chunks of the original buffer and new bytes.
    pub fn apply(&self, body: &Bytes, view: &RequestView<'_>) -> Vec<Bytes> {
        let mut edits = match &view.input {
            Some(input) if self.items() > 0 || (self.flatten && input.nested) => {
                input_edits(body, input, &self.insertions, &self.replacements)
            }
            _ => Vec::new(),
        };
        if self.include {
            edits.extend(include_edit(body, view));
        }
        apply(body, edits)
    }
}

/// Whether a stateless request should ask for encrypted reasoning.
pub fn wants_include(body: &[u8], view: &RequestView<'_>, rules: Rules) -> bool {
    !view.store
        && rules.stateless_include
        && rules.model_may_reason
        && !view.includes_encrypted_reasoning
        && include_edit(body, view).is_some()
}

/// The change for a request, given the remembered turns its items name (none when memory was
/// not asked or not reachable), and why the items it names could not be repaired, if so.
pub fn decide(
    body: &[u8],
    view: &RequestView<'_>,
    turns: &[Arc<Turn>],
    rules: Rules,
) -> (Change, Option<Unrepairable>) {
    let mut change = Change {
        include: wants_include(body, view, rules),
        flatten: view.input.as_ref().is_some_and(|i| i.nested),
        ..Change::default()
    };
    if turns.is_empty() {
        return (change, None);
    }
    let plan = plan::plan(view, turns, rules.policy, rules.model_may_reason);
    change.insertions = plan.insertions;
    change.replacements = plan.replacements;
    (change, plan.unrepairable)
}
