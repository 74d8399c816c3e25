//! A chain the server holds, as memory has it: from a response back to the one that started
//! it, one lookup per turn (each turn names its parent). Walked only when a request needs it: a
//! chained request that sends items memory knows, or the upstream saying it lost the chain.

use std::sync::Arc;

use super::{Ledger, LedgerError, RESPONSE_KEYS};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

/// Turns a walk reads at most.
pub const MAX_DEPTH: usize = 1_000;

/// The chain ending at response `last`, newest first, up to `depth` turns; it stops early at a
/// turn memory does not hold (the caller sees that the oldest turn still names a parent).
pub async fn walk(
    ledger: &dyn Ledger,
    tenant: TenantKey,
    last: &str,
    depth: usize,
) -> Result<Vec<Arc<Turn>>, LedgerError> {
    let mut out: Vec<Arc<Turn>> = Vec::new();
    let mut next: Option<Box<str>> = Some(last.into());
    while let Some(id) = next.take() {
        if out.len() >= depth {
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
        if next.as_deref().is_some_and(seen) {
            // A circle is no chain the server could hold: the walk ends at its first repeat.
            next = None;
        }
        out.push(turn);
    }
    Ok(out)
}
