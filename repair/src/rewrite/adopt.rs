//! An id-less copy of a remembered item, at the one place its id is needed, gets that id: a
//! reasoning item right before an item of its group (E1 on the follower otherwise), an assistant
//! message right after its group's reasoning item (E2 on the reasoning otherwise). A message
//! there with other text is the client's edit: the edit wins and the reasoning item goes.

use std::collections::HashSet;

use super::{ItemEdit, Pass, Rewrite};
use crate::content;
use crate::items::ItemType;
use crate::plan::Loc;
use crate::request::InputItem;

/// Adopts ids into `out` (and `locs`); returns the reasoning items an edited message leaves
/// without their follower, to be dropped.
pub(super) fn adopt(
    pass: &Pass<'_, '_>,
    locs: &mut [Option<Loc>],
    out: &mut Rewrite,
) -> HashSet<usize> {
    let mut adoption = Adoption {
        present: pass.items.iter().filter_map(InputItem::id).collect(),
        adopted: HashSet::new(),
        drop: HashSet::new(),
    };
    if !pass.model_may_reason {
        return adoption.drop;
    }
    for n in 0..pass.items.len() {
        let item = &pass.items[n];
        if item.id_key {
            continue;
        }
        let adopted = if pass.is_reasoning(n) && item.has_encrypted_content {
            adoption.reasoning(pass, locs, n)
        } else if item.assistant && matches!(item.ty(), None | Some("message")) {
            adoption.message(pass, locs, n)
        } else {
            None
        };
        if let Some(loc) = adopted {
            let id = pass.turns[loc.turn].items[loc.pos].id.clone();
            out.edits.push((n, ItemEdit::AdoptId(id.clone())));
            adoption.adopted.insert(id);
            locs[n] = Some(loc);
            out.adopted += 1;
        }
    }
    adoption.drop
}

struct Adoption<'p> {
    /// Ids the request carries.
    present: HashSet<&'p str>,
    /// Ids already given to an item.
    adopted: HashSet<Box<str>>,
    /// Reasoning items whose follower the client replaced with its own edited message.
    drop: HashSet<usize>,
}

impl Adoption<'_> {
    /// The remembered reasoning item reasoning item `n` is a copy of, when the next item is a
    /// member of its group and the group's reasoning is not sent.
    fn reasoning(&self, pass: &Pass<'_, '_>, locs: &[Option<Loc>], n: usize) -> Option<Loc> {
        let next = locs.get(n + 1).copied().flatten()?;
        let rs = pass.turns[next.turn].group(next.pos).reasoning?;
        let recorded = &pass.turns[next.turn].items[rs];
        if self.present.contains(&*recorded.id) || self.adopted.contains(&recorded.id) {
            return None;
        }
        let digest = content::digest(pass.bytes(n));
        let same = digest.is_some() && digest == recorded.digest && pass.switches.adopt;
        same.then_some(Loc {
            turn: next.turn,
            pos: rs,
        })
    }

    /// Right after a remembered reasoning item whose group has a message: the same text is that
    /// message (adopted); other text is the client's edit, and the edit wins (the reasoning item
    /// is dropped).
    fn message(&mut self, pass: &Pass<'_, '_>, locs: &[Option<Loc>], n: usize) -> Option<Loc> {
        let prev = n.checked_sub(1).and_then(|p| locs[p])?;
        let turn = &pass.turns[prev.turn];
        let group = turn.group(prev.pos);
        if group.reasoning != Some(prev.pos) {
            return None;
        }
        let members: Vec<usize> = group.members().collect();
        if members
            .iter()
            .any(|&m| self.present.contains(&*turn.items[m].id))
        {
            return None;
        }
        let messages: Vec<usize> = members
            .into_iter()
            .filter(|&m| turn.items[m].ty == ItemType::Message)
            .collect();
        if messages.is_empty() {
            return None;
        }
        let digest = content::digest(pass.bytes(n));
        let same = messages.iter().copied().find(|&m| {
            digest.is_some()
                && turn.items[m].digest == digest
                && !self.adopted.contains(&turn.items[m].id)
        });
        match same {
            Some(pos) if pass.switches.adopt => Some(Loc {
                turn: prev.turn,
                pos,
            }),
            Some(_) => None,
            None => {
                if pass.switches.drops {
                    self.drop.insert(n - 1);
                }
                None
            }
        }
    }
}
