//! A chain the server holds, as memory has it: from a response back to the one that started
//! it, one lookup per turn (each turn names its parent). Walked only when a request needs it: a
//! chained request that sends items memory knows, or the upstream saying it lost the chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Ledger, LedgerError, RESPONSE_KEYS};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

/// Turns a walk reads at most.
pub const MAX_DEPTH: usize = 1_000;
/// Longest a walk takes, whatever the store: past it the chain is known only in part.
pub const MAX_TIME: Duration = Duration::from_millis(250);

/// The chain ending at response `last`, newest first, up to `depth` turns, until `enough` says
/// the turns read so far suffice, or `MAX_TIME` has passed; it stops early at a turn memory does
/// not hold (the caller sees that the oldest turn still names a parent).
pub async fn walk(
    ledger: &dyn Ledger,
    tenant: TenantKey,
    last: &str,
    depth: usize,
    enough: impl Fn(&[Arc<Turn>]) -> bool,
) -> Result<Vec<Arc<Turn>>, LedgerError> {
    let deadline = Instant::now() + MAX_TIME;
    let mut out: Vec<Arc<Turn>> = Vec::new();
    let mut next: Option<Box<str>> = Some(last.into());
    while let Some(id) = next.take() {
        if out.len() >= depth || enough(&out) || Instant::now() >= deadline {
            break;
        }
        let keys = [&*id];
        let found = ledger.lookup(tenant, &keys, RESPONSE_KEYS).await?;
        let Some(turn) = found
            .into_iter()
            .find(|t| t.link.as_ref().is_some_and(|l| l.response == id))
        else {
            break;
        };
        next = turn.link.as_ref().and_then(|l| l.parent.clone());
        let seen = |p: &str| {
            out.iter()
                .any(|t| t.link.as_ref().is_some_and(|l| &*l.response == p))
        };
        if next.as_deref().is_some_and(|p| p == &*id || seen(p)) {
            // A circle is no chain the server could hold: the walk ends at its first repeat.
            next = None;
        }
        out.push(turn);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::{FullItemBudget, MemoryLedger};
    use crate::repair::items::{tests::turn, Link};
    use futures_util::FutureExt;

    const A: TenantKey = TenantKey([1; 16]);

    fn ledger(links: &[(&str, Option<&str>)]) -> MemoryLedger {
        let budget = FullItemBudget {
            total: 1 << 20,
            per_tenant: 1 << 20,
        };
        let l = MemoryLedger::new(Duration::from_secs(60), 100, budget);
        for (id, parent) in links {
            let mut t = turn("msg", true);
            t.items[0].id = format!("msg_{id}").into();
            t.link = Some(Box::new(Link {
                response: (*id).into(),
                parent: parent.map(Into::into),
                input: None,
                complete: true,
                conversation: None,
            }));
            let _ = l.insert(A, t);
        }
        l
    }

    fn ids(l: &MemoryLedger, last: &str) -> Vec<String> {
        walk(l, A, last, MAX_DEPTH, |_| false)
            .now_or_never()
            .unwrap()
            .unwrap()
            .iter()
            .map(|t| t.link.as_ref().unwrap().response.to_string())
            .collect()
    }

    #[test]
    fn a_chain_is_walked_from_its_last_response_to_its_first() {
        let l = ledger(&[("r1", None), ("r2", Some("r1")), ("r3", Some("r2"))]);
        assert_eq!(ids(&l, "r3"), ["r3", "r2", "r1"]);
        let two = walk(&l, A, "r3", 2, |_| false)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(two.len(), 2, "depth bounds it");
        let one = walk(&l, A, "r3", MAX_DEPTH, |c| !c.is_empty());
        assert_eq!(
            one.now_or_never().unwrap().unwrap().len(),
            1,
            "enough ends it"
        );
    }

    #[test]
    fn a_walk_ends_at_a_missing_turn_a_circle_or_a_turn_that_names_itself() {
        let l = ledger(&[("r2", Some("r1")), ("r3", Some("r2"))]);
        assert_eq!(ids(&l, "r3"), ["r3", "r2"], "r1 is not held");
        let l = ledger(&[("a", Some("b")), ("b", Some("a"))]);
        assert_eq!(ids(&l, "a"), ["a", "b"]);
        let l = ledger(&[("s", Some("s"))]);
        assert_eq!(ids(&l, "s"), ["s"]);
        assert!(ids(&l, "unknown").is_empty());
    }
}
