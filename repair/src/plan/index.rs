//! Finding what a client item stands for in memory (`Index`), and what the client's input
//! already holds (`Present`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::items::{is_output_of_call, ItemType, Turn};
use crate::request::InputItem;

/// Where a remembered item is: its turn (an index into the turns given) and its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Loc {
    pub turn: usize,
    pub pos: usize,
}

/// Remembered items by id, and client calls by `call_id`.
pub(crate) struct Index<'t> {
    pub(super) by_id: HashMap<&'t str, Loc>,
    pub by_call: HashMap<&'t str, Loc>,
}

impl<'t> Index<'t> {
    pub(crate) fn new(turns: &'t [Arc<Turn>]) -> Self {
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
    pub(crate) fn resolve(&self, item: &InputItem<'_>, turns: &[Arc<Turn>]) -> Option<Loc> {
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
pub(super) struct Present<'a> {
    pub(super) ids: HashSet<&'a str>,
    pub(super) calls: HashSet<&'a str>,
    /// Last input position of an output item, by the call it answers.
    pub(super) last_output: HashMap<&'a str, usize>,
}

impl<'a> Present<'a> {
    pub(super) fn new(items: &'a [InputItem<'a>]) -> Self {
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
