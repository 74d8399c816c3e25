//! Bytes per remembered turn in the memory ledger: 1,000,000 turns across 10,000 tenants,
//! measured with a counting allocator (live heap bytes after the inserts, divided by turns).
//! Run: `cargo bench --bench ledger_size` (TURNS and TENANTS env vars override the counts).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use rethread::ledger::memory::{FullItemBudget, MemoryLedger};
use rethread::ledger::Ledger;
use rethread::repair::items::{ItemType, Turn, TurnItem};
use rethread::tenant::TenantKey;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn hex_id(prefix: &str, n: u64, salt: u64) -> Box<str> {
    format!(
        "{prefix}_{:016x}{:016x}{:016x}",
        n,
        n.wrapping_mul(0x9e3779b97f4a7c15) ^ salt,
        salt
    )
    .into()
}

/// The classic image turn, `[rs, ig, msg]`, with ids shaped like the API's (prefix + 48 hex).
fn image_turn(n: u64) -> Turn {
    let item = |prefix: &str, ty: ItemType, salt: u64| TurnItem {
        id: hex_id(prefix, n, salt),
        ty,
        call_id: None,
        full: None,
    };
    Turn {
        stored: true,
        items: vec![
            item("rs", ItemType::Reasoning, 1),
            item("ig", ItemType::ImageGenerationCall, 2),
            item("msg", ItemType::Message, 3),
        ]
        .into(),
    }
}

fn main() {
    let turns: u64 = std::env::var("TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tenants: u64 = std::env::var("TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let budget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };
    let before = LIVE.load(Ordering::Relaxed);
    let ledger = MemoryLedger::new(Duration::from_secs(86_400), turns as usize, budget);
    let started = Instant::now();
    for n in 0..turns {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(n % tenants).to_le_bytes());
        drop(ledger.record(TenantKey(key), image_turn(n)));
    }
    let inserted = started.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    // Lookups of existing ids, one request's worth at a time.
    let started = Instant::now();
    let probes = 200_000u64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut hits = 0;
    for n in 0..probes {
        let t = (n * 7919) % turns;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(t % tenants).to_le_bytes());
        let id = hex_id("ig", t, 2);
        let keys = [&*id];
        hits += runtime
            .block_on(ledger.lookup(TenantKey(key), &keys))
            .unwrap()
            .len();
    }
    let looked = started.elapsed();
    println!("ledger: {turns} turns ([rs, ig, msg], API-shaped ids) across {tenants} tenants");
    println!(
        "  live heap: {:.1} MiB = {:.0} bytes per turn (target <= 128)",
        bytes as f64 / 1048576.0,
        bytes as f64 / turns as f64
    );
    println!(
        "  insert: {:.0} ns per turn",
        inserted.as_nanos() as f64 / turns as f64
    );
    println!(
        "  lookup: {:.0} ns per request ({hits}/{probes} hits)",
        looked.as_nanos() as f64 / probes as f64
    );
    drop(ledger);
}
