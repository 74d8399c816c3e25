//! The edits of items' own fields (`fields.rs`) a refusal asked for: sanitise (N3, N4), shorten
//! (N5), put back a mangled remembered item (N12), and rename an output's misplaced call id (N2).

use std::collections::HashSet;

use bytes::Bytes;

use super::{ItemEdit, Pass, Rewrite};
use crate::fields;
use crate::items::{is_output_of_call, ItemType};
use crate::plan::{recorded_form, Loc};
use crate::request::InputItem;

/// The edits of items' own fields that the upstream's refusal asked for (`fields.rs`): each
/// client item kept in the request is sanitised, shortened or put back as the directives say.
pub(super) fn edit_fields(pass: &Pass<'_, '_>, locs: &[Option<Loc>], out: &mut Rewrite) {
    let (body, items, turns) = (pass.body, pass.items, pass.turns);
    let (switches, directives) = (pass.switches, pass.directives);
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
                recorded_form(pass.store, turn, &turn.items[l.pos])
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
