//! The in-memory ledger: a sharded map from (tenant, id) to the turn holding it.
//!
//! Lookups touch one `dashmap` shard per key and never a global lock. Each turn is one compact
//! allocation (`compact.rs`), shared by its index entries and an insertion-ordered queue from
//! which the oldest turns leave when over capacity or past retention (recording takes the queue's
//! short lock, after the response has been delivered).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::compact::{self, Entry};
use super::{keys_of, turn_holds, KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

/// Bounds on the memory full items (recorded JSON, encrypted reasoning) may take.
#[derive(Clone, Copy, Debug)]
pub struct FullItemBudget {
    pub total: usize,
    pub per_tenant: usize,
}

type Stored = Arc<[u8]>;

pub struct MemoryLedger {
    /// Keyed by a hash of (tenant, key kind, key); a hit is checked against the entry, so a hash
    /// collision is a miss, never another tenant's turn.
    index: DashMap<u64, Stored>,
    order: Mutex<VecDeque<Stored>>,
    hasher: std::collections::hash_map::RandomState,
    started: Instant,
    retention: Duration,
    capacity: usize,
    evictions: AtomicU64,
    budget: FullItemBudget,
    full_total: AtomicUsize,
    full_by_tenant: DashMap<TenantKey, usize>,
    over_budget: AtomicU64,
}

impl MemoryLedger {
    pub fn new(retention: Duration, capacity: usize, budget: FullItemBudget) -> Self {
        MemoryLedger {
            index: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            hasher: Default::default(),
            started: Instant::now(),
            retention,
            capacity: capacity.max(1),
            evictions: AtomicU64::new(0),
            budget,
            full_total: AtomicUsize::new(0),
            full_by_tenant: DashMap::new(),
            over_budget: AtomicU64::new(0),
        }
    }

    fn slot(&self, tenant: &TenantKey, kind: KeyKind, key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        tenant.hash(&mut h);
        kind.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn fresh(&self, entry: &[u8], now_ms: u64) -> bool {
        u128::from(now_ms.saturating_sub(Entry(entry).learned_at())) < self.retention.as_millis()
    }

    /// Charges a turn's full items to the budgets, or drops them (keeping ids and order) when
    /// they would exceed either budget.
    fn charge(&self, tenant: TenantKey, turn: &mut Turn) -> usize {
        let bytes: usize = turn
            .items
            .iter()
            .filter_map(|i| i.full.as_ref())
            .map(|f| f.len())
            .sum();
        if bytes == 0 {
            return 0;
        }
        let mut used = self.full_by_tenant.entry(tenant).or_insert(0);
        // The tenant's share is guarded by its entry's lock; the total is reserved atomically,
        // so concurrent turns of different tenants cannot both pass the last free bytes.
        let within_tenant = *used + bytes <= self.budget.per_tenant;
        let reserved = within_tenant
            && self
                .full_total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                    (total + bytes <= self.budget.total).then_some(total + bytes)
                })
                .is_ok();
        if !reserved {
            self.over_budget.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                bytes,
                "full items over budget; remembering this turn by id only"
            );
            metrics::counter!(crate::metrics::FULL_ITEMS_OVER_BUDGET).increment(1);
            for item in turn.items.iter_mut() {
                item.full = None;
            }
            return 0;
        }
        *used += bytes;
        bytes
    }

    fn refund(&self, tenant: TenantKey, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.full_total.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(mut used) = self.full_by_tenant.get_mut(&tenant) {
            *used = used.saturating_sub(bytes);
        }
        self.full_by_tenant.remove_if(&tenant, |_, used| *used == 0);
    }

    fn insert(&self, tenant: TenantKey, mut turn: Turn) {
        let now = self.now_ms();
        let full_bytes = self.charge(tenant, &mut turn);
        let Some(stored) = compact::encode(&tenant, now, full_bytes as u32, &turn) else {
            self.refund(tenant, full_bytes);
            return;
        };
        for (kind, key) in keys_of(&turn) {
            self.index
                .insert(self.slot(&tenant, kind, key), stored.clone());
        }
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back(stored);
        while let Some(oldest) = order.front() {
            let over = order.len() > self.capacity;
            if !over && self.fresh(oldest, now) {
                break;
            }
            if let Some(oldest) = order.pop_front() {
                if over {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                self.forget(&oldest);
            }
        }
    }

    /// Drops an entry's keys, unless a newer recording of the same items took them over.
    fn forget(&self, stored: &Stored) {
        let entry = Entry(stored);
        let (Some(tenant), Some(turn)) = (entry.tenant(), entry.turn()) else {
            return;
        };
        self.refund(tenant, entry.full_bytes() as usize);
        for (kind, key) in keys_of(&turn) {
            self.index
                .remove_if(&self.slot(&tenant, kind, key), |_, e| {
                    Arc::ptr_eq(e, stored)
                });
        }
    }

    /// Forgets turns past retention. Run periodically; lookups ignore them meanwhile.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        while order.front().is_some_and(|e| !self.fresh(e, now)) {
            if let Some(old) = order.pop_front() {
                self.forget(&old);
            }
        }
    }

    fn find(&self, tenant: TenantKey, keys: &[&str]) -> Vec<Arc<Turn>> {
        let now = self.now_ms();
        let mut seen: Vec<Stored> = Vec::new();
        let mut found = Vec::new();
        for key in keys {
            for kind in [KeyKind::ItemId, KeyKind::CallId] {
                let Some(hit) = self
                    .index
                    .get(&self.slot(&tenant, kind, key))
                    .map(|e| e.value().clone())
                else {
                    continue;
                };
                if seen.iter().any(|s| Arc::ptr_eq(s, &hit)) {
                    continue;
                }
                let entry = Entry(&hit);
                if entry.tenant() != Some(tenant) || !self.fresh(&hit, now) {
                    continue;
                }
                if let Some(turn) = entry.turn().filter(|t| turn_holds(t, key)) {
                    found.push(Arc::new(turn));
                    seen.push(hit);
                }
            }
        }
        found
    }
}

impl Ledger for MemoryLedger {
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>> {
        self.insert(tenant, turn);
        async { Ok(()) }.boxed()
    }

    fn lookup<'a>(
        &'a self,
        tenant: TenantKey,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>> {
        let found = self.find(tenant, keys);
        async move { Ok(found) }.boxed()
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }

    fn stats(&self) -> LedgerStats {
        LedgerStats {
            turns: self.order.lock().map(|o| o.len() as u64).unwrap_or(0),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::repair::items::tests::turn;

    const A: TenantKey = TenantKey([1; 16]);
    const B: TenantKey = TenantKey([2; 16]);
    const ROOMY: FullItemBudget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };

    #[test]
    fn a_turn_is_found_by_any_of_its_ids_and_call_ids() {
        let l = MemoryLedger::new(Duration::from_secs(60), 10, ROOMY);
        l.insert(A, turn("rs fc msg", true));
        assert_eq!(l.find(A, &["fc_1"]).len(), 1);
        assert_eq!(l.find(A, &["call_fc_1"]).len(), 1);
        assert_eq!(
            l.find(A, &["rs_0", "msg_2", "fc_1"]).len(),
            1,
            "one turn, found once"
        );
        assert!(l.find(A, &["nope"]).is_empty());
        assert_eq!(*l.find(A, &["fc_1"])[0], turn("rs fc msg", true));
    }

    #[test]
    fn tenants_never_see_each_others_turns() {
        let l = MemoryLedger::new(Duration::from_secs(60), 10, ROOMY);
        l.insert(A, turn("rs ig msg", true));
        assert!(l.find(B, &["ig_1"]).is_empty());
    }

    #[test]
    fn the_oldest_turn_is_evicted_over_capacity() {
        let l = MemoryLedger::new(Duration::from_secs(60), 2, ROOMY);
        let mut first = turn("rs msg", true);
        first.items[0].id = "rs_first".into();
        l.insert(A, first);
        l.insert(B, turn("rs msg", true));
        l.insert(A, turn("rs ig", true));
        assert!(l.find(A, &["rs_first"]).is_empty());
        assert_eq!(l.find(A, &["ig_1"]).len(), 1);
        assert_eq!(l.stats().evictions, 1);
        assert_eq!(l.stats().turns, 2);
    }

    #[test]
    fn turns_expire_after_retention() {
        let l = MemoryLedger::new(Duration::from_millis(30), 10, ROOMY);
        l.insert(A, turn("rs msg", true));
        std::thread::sleep(Duration::from_millis(40));
        assert!(l.find(A, &["rs_0"]).is_empty());
        l.sweep();
        assert_eq!(l.stats().turns, 0);
        assert!(l.index.is_empty());
    }

    #[test]
    fn recording_a_response_again_keeps_it_findable_after_the_old_copy_leaves() {
        let l = MemoryLedger::new(Duration::from_secs(60), 1, ROOMY);
        l.insert(A, turn("rs msg", true));
        l.insert(A, turn("rs msg", true));
        assert_eq!(l.find(A, &["rs_0"]).len(), 1);
    }

    #[test]
    fn full_items_beyond_a_tenants_budget_are_dropped_and_refunded_on_eviction() {
        let budget = FullItemBudget {
            total: 1 << 20,
            per_tenant: 300,
        };
        let l = MemoryLedger::new(Duration::from_secs(60), 2, budget);
        l.insert(A, turn("rs fc msg", false));
        assert!(l.find(A, &["fc_1"])[0].items[1].full.is_some());
        l.insert(A, turn("rs fc msg", false));
        assert!(
            l.find(A, &["fc_1"])[0].items[1].full.is_none(),
            "over the tenant's budget"
        );
        assert_eq!(l.over_budget.load(Ordering::Relaxed), 1);
        // Another tenant has its own budget.
        l.insert(B, turn("rs fc msg", false));
        assert!(l.find(B, &["fc_1"])[0].items[1].full.is_some());
        // Evicting A's first turn refunds its bytes.
        l.insert(B, turn("rs", true));
        assert!(l.full_by_tenant.get(&A).is_none());
    }

    #[test]
    fn the_total_budget_holds_under_concurrent_turns_of_many_tenants() {
        let one = turn("rs fc msg", false)
            .items
            .iter()
            .filter_map(|i| i.full.as_ref())
            .map(|f| f.len())
            .sum::<usize>();
        let budget = FullItemBudget {
            total: one,
            per_tenant: 1 << 30,
        };
        let l = Arc::new(MemoryLedger::new(Duration::from_secs(60), 10, budget));
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let (l, start) = (l.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut worst = 0;
                    for _ in 0..20_000 {
                        let mut one = turn("rs fc msg", false);
                        let charged = l.charge(TenantKey([t; 16]), &mut one);
                        worst = worst.max(l.full_total.load(Ordering::Relaxed));
                        l.refund(TenantKey([t; 16]), charged);
                    }
                    worst
                })
            })
            .collect();
        for thread in threads {
            let worst = thread.join().unwrap_or(usize::MAX);
            assert!(worst <= one, "total {worst} over the budget {one}");
        }
    }
}
