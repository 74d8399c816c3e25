//! The image results of unstored turns, kept beside the store in their own budget.
//!
//! Under `store: false` the API cannot look an image call up, so a follow-up that sends it back
//! bare (`{type, id}`) or by reference is refused (E3) unless the call comes back whole, result
//! included: about 2 MB of base64 for a 1024×1024 image. The stores keep turns in small records
//! (the memory store's log is made of 1 MiB chunks; a Redis lookup must answer in milliseconds),
//! so the results live here, in this replica's RAM, within a total and a per-tenant budget,
//! oldest evicted first, gone after the retention. A lookup puts them back into the turns they
//! came from. Keyed by tenant and id, so one tenant's image never completes another's turn.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::{ItemType, Turn};
use crate::tenant::TenantKey;

/// How much the kept images may take.
#[derive(Clone, Copy, Debug)]
pub struct ImageBudget {
    pub total: usize,
    pub per_tenant: usize,
}

type Key = (TenantKey, Box<str>);

#[derive(Default)]
struct Shelf {
    items: HashMap<Key, (Bytes, Instant)>,
    /// Keys in the order they were kept; an entry whose time differs from `items` is stale.
    order: VecDeque<(Key, Instant)>,
    by_tenant: HashMap<TenantKey, usize>,
    total: usize,
}

impl Shelf {
    fn remove(&mut self, key: &Key) {
        if let Some((bytes, _)) = self.items.remove(key) {
            self.total -= bytes.len();
            if let Some(used) = self.by_tenant.get_mut(&key.0) {
                *used -= bytes.len();
                if *used == 0 {
                    self.by_tenant.remove(&key.0);
                }
            }
        }
    }

    /// Drops the oldest entry (of `tenant`, when given); false when there is none.
    fn evict_oldest(&mut self, tenant: Option<TenantKey>) -> bool {
        let at = self.order.iter().position(|((t, id), at)| {
            tenant.is_none_or(|tenant| *t == tenant)
                && self
                    .items
                    .get(&(*t, id.clone()))
                    .is_some_and(|(_, kept)| kept == at)
        });
        let Some(at) = at else {
            return false;
        };
        if let Some((key, _)) = self.order.remove(at) {
            self.remove(&key);
        }
        true
    }

    fn expire(&mut self, older_than: Instant) {
        while let Some(((_, _), at)) = self.order.front() {
            if *at > older_than {
                break;
            }
            if let Some((key, at)) = self.order.pop_front() {
                if self.items.get(&key).is_some_and(|(_, kept)| *kept == at) {
                    self.remove(&key);
                }
            }
        }
    }
}

/// A store with the image results of unstored turns kept beside it.
pub struct WithImages {
    inner: Arc<dyn Ledger>,
    budget: ImageBudget,
    retention: Duration,
    shelf: Mutex<Shelf>,
}

impl WithImages {
    pub fn new(inner: Arc<dyn Ledger>, budget: ImageBudget, retention: Duration) -> Self {
        WithImages {
            inner,
            budget,
            retention,
            shelf: Mutex::default(),
        }
    }

    fn shelf(&self) -> std::sync::MutexGuard<'_, Shelf> {
        crate::sync::lock(&self.shelf)
    }

    /// Keeps `item`'s JSON for `tenant`, making room oldest first; an image over either budget
    /// is not kept.
    fn keep(&self, tenant: TenantKey, id: &str, full: Bytes) {
        let len = full.len();
        if len > self.budget.per_tenant || len > self.budget.total {
            tracing::debug!(
                bytes = len,
                "an image result over its budget is remembered by id only"
            );
            return;
        }
        let now = Instant::now();
        let mut shelf = self.shelf();
        if let Some(older) = now.checked_sub(self.retention) {
            shelf.expire(older);
        }
        let key: Key = (tenant, id.into());
        shelf.remove(&key);
        if shelf.order.len() > 2 * shelf.items.len() + 64 {
            // Entries of replaced images, which eviction would only skip.
            let Shelf { order, items, .. } = &mut *shelf;
            order.retain(|(key, at)| items.get(key).is_some_and(|(_, kept)| kept == at));
        }
        while shelf.by_tenant.get(&tenant).copied().unwrap_or(0) + len > self.budget.per_tenant {
            if !shelf.evict_oldest(Some(tenant)) {
                break;
            }
        }
        while shelf.total + len > self.budget.total {
            if !shelf.evict_oldest(None) {
                break;
            }
        }
        shelf.total += len;
        *shelf.by_tenant.entry(tenant).or_default() += len;
        shelf.order.push_back((key.clone(), now));
        shelf.items.insert(key, (full, now));
    }

    /// `turn` with the image results kept for it put back, if any were taken out.
    fn completed(&self, tenant: TenantKey, turn: Arc<Turn>) -> Arc<Turn> {
        let missing = |t: &Turn| {
            !t.stored
                && t.items
                    .iter()
                    .any(|i| i.ty == ItemType::ImageGenerationCall && i.full.is_none())
        };
        if !missing(&turn) {
            return turn;
        }
        let shelf = self.shelf();
        let fresh = Instant::now().checked_sub(self.retention);
        let mut whole = (*turn).clone();
        let mut found = false;
        for item in whole.items.iter_mut() {
            if item.ty != ItemType::ImageGenerationCall || item.full.is_some() {
                continue;
            }
            if let Some((full, at)) = shelf.items.get(&(tenant, item.id.clone())) {
                if fresh.is_none_or(|fresh| *at > fresh) {
                    item.full = Some(full.clone());
                    found = true;
                }
            }
        }
        if found {
            Arc::new(whole)
        } else {
            turn
        }
    }

    /// Bytes the kept images take.
    pub fn bytes(&self) -> usize {
        self.shelf().total
    }
}

impl Ledger for WithImages {
    fn record(
        &self,
        tenant: TenantKey,
        mut turn: Turn,
    ) -> BoxFuture<'static, Result<(), LedgerError>> {
        if !turn.stored {
            for item in turn.items.iter_mut() {
                if item.ty == ItemType::ImageGenerationCall {
                    if let Some(full) = item.full.take() {
                        self.keep(tenant, &item.id, full);
                    }
                }
            }
        }
        self.inner.record(tenant, turn)
    }

    fn lookup<'a>(
        &'a self,
        tenant: TenantKey,
        keys: &'a [&'a str],
        kinds: &'static [KeyKind],
    ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>> {
        Box::pin(async move {
            let turns = self.inner.lookup(tenant, keys, kinds).await?;
            Ok(turns
                .into_iter()
                .map(|turn| self.completed(tenant, turn))
                .collect())
        })
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        self.inner.ready()
    }

    fn stats(&self) -> LedgerStats {
        let mut stats = self.inner.stats();
        stats.bytes += self.bytes() as u64;
        stats
    }

    fn flush(&self, limit: Duration) -> BoxFuture<'_, ()> {
        self.inner.flush(limit)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::{FullItemBudget, MemoryLedger};
    use crate::ledger::ITEM_KEYS;
    use crate::repair::items::TurnItem;

    const A: TenantKey = TenantKey([1; 16]);
    const B: TenantKey = TenantKey([2; 16]);

    fn image_turn(n: u32, stored: bool, bytes: usize) -> Turn {
        let item = |id: String, ty, full: Option<Bytes>| TurnItem {
            id: id.into(),
            ty,
            call_id: None,
            full,
            digest: None,
        };
        Turn {
            stored,
            items: vec![
                item(format!("rs_{n}"), ItemType::Reasoning, None),
                item(
                    format!("ig_{n}"),
                    ItemType::ImageGenerationCall,
                    Some(Bytes::from(vec![b'x'; bytes])),
                ),
            ]
            .into(),
            link: None,
        }
    }

    fn ledger(total: usize, per_tenant: usize) -> WithImages {
        let memory = MemoryLedger::new(
            Duration::from_secs(60),
            100,
            FullItemBudget {
                total: 1 << 30,
                per_tenant: 1 << 30,
            },
        );
        WithImages::new(
            Arc::new(memory),
            ImageBudget { total, per_tenant },
            Duration::from_secs(60),
        )
    }

    fn image_of(l: &WithImages, tenant: TenantKey, n: u32) -> Option<usize> {
        let id = format!("ig_{n}");
        let turns = futures_util::FutureExt::now_or_never(l.lookup(tenant, &[&id], ITEM_KEYS))
            .unwrap()
            .unwrap();
        let turn = turns.first()?;
        turn.items[1].full.as_ref().map(Bytes::len)
    }

    #[test]
    fn an_unstored_turns_image_comes_back_whole_for_its_tenant_only() {
        let l = ledger(10_000, 10_000);
        drop(l.record(A, image_turn(1, false, 3000)));
        assert_eq!(image_of(&l, A, 1), Some(3000));
        assert_eq!(
            image_of(&l, B, 1),
            None,
            "another tenant finds no turn at all"
        );
        assert_eq!(l.bytes(), 3000);
        assert!(l.stats().bytes >= 3000);
    }

    #[test]
    fn a_stored_turns_image_is_not_kept() {
        let l = ledger(10_000, 10_000);
        drop(l.record(A, image_turn(1, true, 3000)));
        assert_eq!(l.bytes(), 0);
    }

    #[test]
    fn images_leave_oldest_first_within_the_tenants_and_the_total_budget() {
        let l = ledger(9000, 6000);
        for n in 0..3 {
            drop(l.record(A, image_turn(n, false, 2500)));
        }
        // The tenant holds at most 6000: its oldest image went.
        assert_eq!(image_of(&l, A, 0), None);
        assert_eq!(image_of(&l, A, 1), Some(2500));
        assert_eq!(image_of(&l, A, 2), Some(2500));
        for n in 10..13 {
            drop(l.record(B, image_turn(n, false, 2500)));
        }
        // 9,000 in all: A's oldest went for B's second; B's own oldest for its third.
        assert!(l.bytes() <= 9000, "{}", l.bytes());
        assert_eq!(image_of(&l, A, 1), None);
        assert_eq!(image_of(&l, A, 2), Some(2500));
        assert_eq!(image_of(&l, B, 10), None);
        assert_eq!(image_of(&l, B, 12), Some(2500));
        // Over a budget: not kept at all.
        drop(l.record(A, image_turn(20, false, 7000)));
        assert_eq!(image_of(&l, A, 20), None);
    }
}
