//! The memory store's tests: finding, isolation, eviction, retention, budgets, concurrency.
use crate::ledger::ITEM_KEYS;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::repair::items::tests::{api_image_turn, turn};

const A: TenantKey = TenantKey([1; 16]);
const B: TenantKey = TenantKey([2; 16]);
const ROOMY: FullItemBudget = FullItemBudget {
    total: 1 << 30,
    per_tenant: 1 << 30,
};

fn live_slots(l: &MemoryLedger) -> usize {
    l.shards.iter().map(|s| lock(s).live).sum()
}

#[test]
fn a_turn_is_found_by_any_of_its_ids_and_call_ids() {
    let l = MemoryLedger::new(Duration::from_secs(60), 10, ROOMY);
    l.insert(A, turn("rs fc msg", true));
    assert_eq!(l.find(A, &["fc_1"], ITEM_KEYS).len(), 1);
    assert_eq!(l.find(A, &["call_fc_1"], ITEM_KEYS).len(), 1);
    assert_eq!(
        l.find(A, &["rs_0", "msg_2", "fc_1"], ITEM_KEYS).len(),
        1,
        "one turn, found once"
    );
    assert!(l.find(A, &["nope"], ITEM_KEYS).is_empty());
    assert_eq!(*l.find(A, &["fc_1"], ITEM_KEYS)[0], turn("rs fc msg", true));
}

#[test]
fn tenants_never_see_each_others_turns() {
    let l = MemoryLedger::new(Duration::from_secs(60), 10, ROOMY);
    l.insert(A, turn("rs ig msg", true));
    assert!(l.find(B, &["ig_1"], ITEM_KEYS).is_empty());
    // The same ids under two tenants: each finds its own.
    l.insert(B, turn("rs ig", false));
    assert!(l.find(A, &["ig_1"], ITEM_KEYS)[0].stored);
    assert!(!l.find(B, &["ig_1"], ITEM_KEYS)[0].stored);
}

#[test]
fn the_oldest_turn_is_evicted_over_capacity() {
    let l = MemoryLedger::new(Duration::from_secs(60), 2, ROOMY);
    let mut first = turn("rs msg", true);
    first.items[0].id = "rs_first".into();
    l.insert(A, first);
    l.insert(B, turn("rs msg", true));
    l.insert(A, turn("rs ig", true));
    assert!(l.find(A, &["rs_first"], ITEM_KEYS).is_empty());
    assert_eq!(l.find(A, &["ig_1"], ITEM_KEYS).len(), 1);
    assert_eq!(l.stats().evictions, 1);
    assert_eq!(l.stats().turns, 2);
}

#[test]
fn an_evicted_turn_leaves_its_response_id_and_its_input_bytes() {
    let budget = FullItemBudget {
        total: 1 << 20,
        per_tenant: 1 << 20,
    };
    let l = MemoryLedger::new(Duration::from_secs(60), 1, budget);
    let mut first = turn("rs msg", true);
    first.link = Some(Box::new(crate::repair::items::Link {
        response: "resp_1".into(),
        parent: None,
        input: Some(bytes::Bytes::from_static(
            b"[{\"role\":\"user\",\"content\":\"hi\"}]",
        )),
        complete: true,
        conversation: None,
    }));
    l.insert(A, first);
    assert_eq!(
        l.find(A, &["resp_1"], crate::ledger::RESPONSE_KEYS).len(),
        1
    );
    assert!(l.full.total.load(Ordering::Relaxed) > 0);
    l.insert(A, turn("rs ig", true));
    assert!(l
        .find(A, &["resp_1"], crate::ledger::RESPONSE_KEYS)
        .is_empty());
    assert_eq!(
        l.full.total.load(Ordering::Relaxed),
        0,
        "the input's bytes are refunded"
    );
}

#[test]
fn turns_expire_after_retention() {
    let l = MemoryLedger::new(Duration::from_millis(30), 10, ROOMY);
    l.insert(A, turn("rs msg", true));
    std::thread::sleep(Duration::from_millis(40));
    assert!(l.find(A, &["rs_0"], ITEM_KEYS).is_empty());
    l.sweep();
    assert_eq!(l.stats().turns, 0);
    assert_eq!(live_slots(&l), 0);
}

#[test]
fn recording_a_response_again_keeps_it_findable_after_the_old_copy_leaves() {
    let l = MemoryLedger::new(Duration::from_secs(60), 1, ROOMY);
    l.insert(A, turn("rs msg", true));
    l.insert(A, turn("rs msg", true));
    assert_eq!(l.find(A, &["rs_0"], ITEM_KEYS).len(), 1);
}

#[test]
fn the_newest_recording_of_an_id_wins() {
    let l = MemoryLedger::new(Duration::from_secs(60), 10, ROOMY);
    l.insert(A, turn("rs msg", true));
    l.insert(A, turn("rs msg", false));
    let found = l.find(A, &["rs_0", "msg_1"], ITEM_KEYS);
    assert_eq!(found.len(), 1);
    assert!(!found[0].stored);
}

#[test]
fn many_turns_across_chunks_stay_findable_and_leave_in_order() {
    // ~95 bytes a record: 40,000 turns fill about four chunks.
    let capacity = 30_000;
    let l = MemoryLedger::new(Duration::from_secs(60), capacity, ROOMY);
    let total = 40_000u64;
    for n in 0..total {
        l.insert(TenantKey([(n % 7) as u8; 16]), api_image_turn(n));
    }
    assert_eq!(l.stats().turns, capacity as u64);
    assert_eq!(l.stats().evictions, total - capacity as u64);
    assert_eq!(live_slots(&l), 3 * capacity);
    for n in (0..total).step_by(997) {
        let tenant = TenantKey([(n % 7) as u8; 16]);
        let t = api_image_turn(n);
        let found = l.find(tenant, &[&t.items[1].id], ITEM_KEYS);
        if n < total - capacity as u64 {
            assert!(found.is_empty(), "{n} was evicted");
        } else {
            assert_eq!(found.len(), 1, "{n}");
            assert_eq!(*found[0], t);
            let other = TenantKey([((n + 1) % 7) as u8; 16]);
            assert!(l.find(other, &[&t.items[1].id], ITEM_KEYS).is_empty());
        }
    }
    // The chunks the oldest turns left are freed: about 30,000 × 93 bytes live.
    assert!(l.writer.lock().unwrap().chunks <= 4, "chunks kept");
}

#[test]
fn a_turn_too_large_for_a_chunk_is_kept_by_id() {
    let l = MemoryLedger::new(Duration::from_secs(60), 10, ROOMY);
    let mut t = turn("rs fc", false);
    let big = Bytes::from(vec![b'x'; CHUNK]);
    t.items[1].full = Some(big);
    l.insert(A, t);
    let found = l.find(A, &["fc_1"], ITEM_KEYS);
    assert_eq!(found.len(), 1);
    assert!(found[0].items[1].full.is_none());
    assert_eq!(l.full.total.load(Ordering::Relaxed), 0);
}

#[test]
fn full_items_beyond_a_tenants_budget_are_dropped_and_refunded_on_eviction() {
    let budget = FullItemBudget {
        total: 1 << 20,
        per_tenant: 300,
    };
    let l = MemoryLedger::new(Duration::from_secs(60), 2, budget);
    l.insert(A, turn("rs fc msg", false));
    assert!(l.find(A, &["fc_1"], ITEM_KEYS)[0].items[1].full.is_some());
    l.insert(A, turn("rs fc msg", false));
    assert!(
        l.find(A, &["fc_1"], ITEM_KEYS)[0].items[1].full.is_none(),
        "over the tenant's budget"
    );
    assert_eq!(l.full.over.load(Ordering::Relaxed), 1);
    // Another tenant has its own budget.
    l.insert(B, turn("rs fc msg", false));
    assert!(l.find(B, &["fc_1"], ITEM_KEYS)[0].items[1].full.is_some());
    // Evicting A's first turn refunds its bytes.
    l.insert(B, turn("rs", true));
    assert!(l.full.by_tenant.get(&tenant8(&A)).is_none());
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
                    let charged = l.full.charge(tenant8(&TenantKey([t; 16])), &mut one);
                    worst = worst.max(l.full.total.load(Ordering::Relaxed));
                    l.full.refund(tenant8(&TenantKey([t; 16])), charged);
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

#[test]
fn lookups_and_records_from_many_threads_agree() {
    let l = Arc::new(MemoryLedger::new(Duration::from_secs(60), 5_000, ROOMY));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                for n in 0..3_000u64 {
                    let n = t * 1_000_000 + n;
                    let tenant = TenantKey([t as u8; 16]);
                    let turn = api_image_turn(n);
                    l.insert(tenant, turn.clone());
                    let found = l.find(tenant, &[&turn.items[2].id], ITEM_KEYS);
                    assert_eq!(found.len(), 1, "{n}");
                    assert_eq!(*found[0], turn);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(l.stats().turns, 5_000);
}
