//! What the memory store's full items (recorded JSON, encrypted reasoning, kept inputs) may
//! take: a total and a per-tenant budget, reserved atomically, refunded when a turn leaves. A
//! turn over budget keeps its ids and order, and the request's input goes before the output's
//! full items, which repair more.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::repair::items::Turn;

/// Bounds on the memory full items (recorded JSON, encrypted reasoning) may take.
#[derive(Clone, Copy, Debug)]
pub struct FullItemBudget {
    pub total: usize,
    pub per_tenant: usize,
}

/// The full items' bytes in use, against their budget.
pub(super) struct FullItems {
    budget: FullItemBudget,
    pub(super) total: AtomicUsize,
    /// Bytes per tenant, by the 8 bytes of the tenant a record keeps.
    pub(super) by_tenant: DashMap<u64, usize>,
    /// Turns remembered by id only because they were over budget.
    pub(super) over: AtomicU64,
}

impl FullItems {
    pub(super) fn new(budget: FullItemBudget) -> Self {
        FullItems {
            budget,
            total: AtomicUsize::new(0),
            by_tenant: DashMap::new(),
            over: AtomicU64::new(0),
        }
    }

    /// Charges a turn's full items to the budgets, or drops them (keeping ids and order) when
    /// they would exceed either budget.
    pub(super) fn charge(&self, t8: u64, turn: &mut Turn) -> usize {
        let bytes = full_bytes(turn);
        if bytes == 0 {
            return 0;
        }
        if self.reserve(t8, bytes) {
            return bytes;
        }
        // The request's input goes first: the output's full items repair more.
        if drop_input(turn) {
            let bytes = full_bytes(turn);
            if bytes == 0 || self.reserve(t8, bytes) {
                return bytes;
            }
        }
        drop_full(turn);
        0
    }

    /// Reserves `bytes` of full items for a tenant within both budgets; counts a refusal.
    pub(super) fn reserve(&self, t8: u64, bytes: usize) -> bool {
        let mut used = self.by_tenant.entry(t8).or_insert(0);
        // The tenant's share is guarded by its entry's lock; the total is reserved atomically,
        // so concurrent turns of different tenants cannot both pass the last free bytes.
        let within_tenant = *used + bytes <= self.budget.per_tenant;
        let reserved = within_tenant
            && self
                .total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                    (total + bytes <= self.budget.total).then_some(total + bytes)
                })
                .is_ok();
        if !reserved {
            self.over.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                bytes,
                "full items over budget; remembering this turn by id only"
            );
            metrics::counter!(crate::metrics::FULL_ITEMS_OVER_BUDGET).increment(1);
            return false;
        }
        *used += bytes;
        true
    }

    pub(super) fn refund(&self, tenant: u64, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(mut used) = self.by_tenant.get_mut(&tenant) {
            *used = used.saturating_sub(bytes);
        }
        self.by_tenant.remove_if(&tenant, |_, used| *used == 0);
    }
}

/// The bytes a turn holds in full: its items', and its request's input.
pub(super) fn full_bytes(turn: &Turn) -> usize {
    let items: usize = turn
        .items
        .iter()
        .filter_map(|i| i.full.as_ref())
        .map(|f| f.len())
        .sum();
    items
        + turn
            .link
            .as_ref()
            .and_then(|l| l.input.as_ref())
            .map_or(0, |i| i.len())
}

/// Leaves out the request's input a turn keeps; says whether it had one.
pub(super) fn drop_input(turn: &mut Turn) -> bool {
    turn.link
        .as_mut()
        .is_some_and(|link| link.input.take().is_some())
}

pub(super) fn drop_full(turn: &mut Turn) {
    for item in turn.items.iter_mut() {
        item.full = None;
    }
    if let Some(link) = &mut turn.link {
        link.input = None;
    }
}
