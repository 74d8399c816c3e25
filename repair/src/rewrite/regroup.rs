//! Moving items back into their groups (E1 when a group is split).

use std::collections::HashSet;
use std::sync::Arc;

use crate::items::Turn;
use crate::plan::Loc;

/// Puts each remembered group that has a reasoning item back together: its items in their
/// turn's order where the first of them stood, and the client items that split it right after,
/// in their own order. Returns how many items changed place.
pub(super) fn regroup(order: &mut Vec<usize>, locs: &[Option<Loc>], turns: &[Arc<Turn>]) -> usize {
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
