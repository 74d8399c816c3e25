//! Turns a shared store could not take (Redis down, failing over, too slow), kept on this
//! replica until it takes them again.
//!
//! Without it, every turn answered during an outage would be forgotten for good: its follow-up
//! is repaired only through the cold fallback (`store: true`), or not at all (`store: false`),
//! long after Redis is back. The outbox holds every turn from the moment it is recorded until
//! the store has taken it (so a follow-up racing a slow write finds it too), and keeps the ones
//! the store refused, oldest first, within `MAX_TURNS` and retention; lookups on this replica
//! see them at once; a task writes the refused ones again, oldest first, every `RETRY` while
//! there are any, stopping at the first failure.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{keys_of, KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

/// Turns kept at most; past it the oldest goes.
pub const MAX_TURNS: usize = 10_000;
/// How often kept turns are written again.
const RETRY: Duration = Duration::from_millis(250);

struct Kept {
    tenant: TenantKey,
    turn: Arc<Turn>,
    at: Instant,
    /// The store refused it (else its first write is still in flight).
    refused: bool,
}

type Queue = Arc<Mutex<VecDeque<Kept>>>;

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
    crate::sync::lock(queue)
}

/// A shared store with an outbox in front of its writes.
pub struct Outbox {
    inner: Arc<dyn Ledger>,
    queue: Queue,
    retention: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl Outbox {
    /// Must be called within the runtime (it starts the retry task).
    pub fn new(inner: Arc<dyn Ledger>, retention: Duration) -> Outbox {
        let queue: Queue = Arc::default();
        let task = tokio::spawn(retry(inner.clone(), queue.clone(), retention));
        Outbox {
            inner,
            queue,
            retention,
            task,
        }
    }

    /// Turns the store refused, waiting to be written again.
    pub fn waiting(&self) -> usize {
        lock(&self.queue).iter().filter(|k| k.refused).count()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Holds a turn whose write is starting, dropping the oldest past `MAX_TURNS`.
fn hold(queue: &Queue, tenant: TenantKey, turn: Arc<Turn>) {
    let mut queue = lock(queue);
    if queue.len() >= MAX_TURNS {
        queue.pop_front();
        metrics::counter!(crate::metrics::OUTBOX_DROPPED).increment(1);
    }
    queue.push_back(Kept {
        tenant,
        turn,
        at: Instant::now(),
        refused: false,
    });
}

/// Settles a held turn's first write: gone once written, kept for a retry if refused.
fn settle(queue: &Queue, turn: &Arc<Turn>, written: bool) {
    let mut queue = lock(queue);
    let Some(at) = queue.iter().position(|k| Arc::ptr_eq(&k.turn, turn)) else {
        return;
    };
    if written {
        queue.remove(at);
    } else if let Some(kept) = queue.get_mut(at) {
        kept.refused = true;
    }
    let refused = queue.iter().filter(|k| k.refused).count();
    metrics::gauge!(crate::metrics::OUTBOX_TURNS).set(refused as f64);
}

/// Writes refused turns again, oldest first, while the store takes them.
async fn retry(inner: Arc<dyn Ledger>, queue: Queue, retention: Duration) {
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let next = {
                let mut queue = lock(&queue);
                queue.retain(|k| k.at.elapsed() < retention);
                queue
                    .iter()
                    .find(|k| k.refused)
                    .map(|k| (k.tenant, k.turn.clone()))
            };
            let Some((tenant, turn)) = next else { break };
            if inner.record(tenant, (*turn).clone()).await.is_err() {
                // To the back: a turn the store will never take cannot hold up the others.
                let mut queue = lock(&queue);
                if let Some(at) = queue.iter().position(|k| Arc::ptr_eq(&k.turn, &turn)) {
                    if let Some(kept) = queue.remove(at) {
                        queue.push_back(kept);
                    }
                }
                break;
            }
            settle(&queue, &turn, true);
            if !lock(&queue).iter().any(|k| k.refused) {
                tracing::info!("store: every turn kept during its outage is written");
            }
        }
    }
}

impl Ledger for Outbox {
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>> {
        let turn = Arc::new(turn);
        hold(&self.queue, tenant, turn.clone());
        let write = self.inner.record(tenant, (*turn).clone());
        let queue = self.queue.clone();
        async move {
            let written = write.await;
            settle(&queue, &turn, written.is_ok());
            written
        }
        .boxed()
    }

    fn lookup<'a>(
        &'a self,
        tenant: TenantKey,
        keys: &'a [&'a str],
        kinds: &'static [KeyKind],
    ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>> {
        async move {
            let stored = self.inner.lookup(tenant, keys, kinds).await;
            let kept: Vec<Arc<Turn>> = {
                let queue = lock(&self.queue);
                queue
                    .iter()
                    .filter(|k| k.tenant == tenant && k.at.elapsed() < self.retention)
                    .filter(|k| {
                        keys_of(&k.turn)
                            .any(|(kind, key)| kinds.contains(&kind) && keys.contains(&key))
                    })
                    .map(|k| k.turn.clone())
                    .collect()
            };
            match stored {
                Ok(mut turns) => {
                    // A kept turn the store now has too (written again meanwhile) counts once.
                    let first = |t: &Turn| t.items.first().map(|i| i.id.clone());
                    let had: Vec<_> = turns.iter().map(|t| first(t)).collect();
                    turns.extend(kept.into_iter().filter(|k| !had.contains(&first(k))));
                    Ok(turns)
                }
                Err(_) if !kept.is_empty() => Ok(kept),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        self.inner.ready()
    }

    fn stats(&self) -> LedgerStats {
        self.inner.stats()
    }

    fn flush(&self, limit: Duration) -> BoxFuture<'_, ()> {
        async move {
            let deadline = Instant::now() + limit;
            self.inner.flush(limit).await;
            while self.waiting() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        .boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::ledger::memory::{FullItemBudget, MemoryLedger};
    use crate::ledger::ITEM_KEYS;
    use crate::repair::items::tests::turn;

    const A: TenantKey = TenantKey([1; 16]);
    const B: TenantKey = TenantKey([2; 16]);

    /// A store that refuses everything while `down`.
    struct Flaky {
        memory: MemoryLedger,
        down: AtomicBool,
    }

    impl Ledger for Flaky {
        fn record(
            &self,
            tenant: TenantKey,
            turn: Turn,
        ) -> BoxFuture<'static, Result<(), LedgerError>> {
            if self.down.load(Ordering::SeqCst) {
                return async { Err(LedgerError::Timeout) }.boxed();
            }
            self.memory.record(tenant, turn)
        }
        fn lookup<'a>(
            &'a self,
            tenant: TenantKey,
            keys: &'a [&'a str],
            kinds: &'static [KeyKind],
        ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>> {
            if self.down.load(Ordering::SeqCst) {
                return async { Err(LedgerError::Timeout) }.boxed();
            }
            self.memory.lookup(tenant, keys, kinds)
        }
        fn ready(&self) -> BoxFuture<'_, bool> {
            async { true }.boxed()
        }
        fn stats(&self) -> LedgerStats {
            self.memory.stats()
        }
    }

    #[tokio::test]
    async fn a_turn_the_store_refused_is_found_here_and_written_once_it_is_back() {
        let budget = FullItemBudget {
            total: 1 << 20,
            per_tenant: 1 << 20,
        };
        let flaky = Arc::new(Flaky {
            memory: MemoryLedger::new(Duration::from_secs(60), 100, budget),
            down: AtomicBool::new(true),
        });
        let outbox = Outbox::new(flaky.clone(), Duration::from_secs(60));
        assert!(outbox.record(A, turn("rs fc", false)).await.is_err());
        assert_eq!(outbox.waiting(), 1);
        let found = outbox.lookup(A, &["fc_1"], ITEM_KEYS).await.unwrap();
        assert_eq!(found.len(), 1, "found here while the store is down");
        assert!(
            outbox.lookup(B, &["fc_1"], ITEM_KEYS).await.is_err(),
            "not another tenant's"
        );
        flaky.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY * 4).await;
        assert_eq!(outbox.waiting(), 0);
        let stored = flaky.memory.lookup(A, &["fc_1"], ITEM_KEYS).await.unwrap();
        assert_eq!(stored.len(), 1, "written to the store");
        let found = outbox.lookup(A, &["fc_1"], ITEM_KEYS).await.unwrap();
        assert_eq!(found.len(), 1, "counted once");
    }
}
