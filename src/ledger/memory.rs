//! The in-memory ledger: turns in an append-only log, found through a sharded index of their keys.
//!
//! A remembered turn costs its record in the log and about one 5-byte index slot per key:
//! - **The log** is a ring of 1 MiB chunks. A record is `varint(len)`, the first 8 bytes of the
//!   tenant's keyed hash, the time it was learned (a `u32` in ticks of retention / 65,536), and
//!   its items (`compact.rs`: ids as decoded bytes). Turns leave in the order they came (FIFO):
//!   over `capacity`, past `retention` (checked on every record and by the periodic sweep), or
//!   past 3 GiB of live log. A record never straddles two chunks; a chunk is freed when the oldest
//!   turn leaves it. A record's place in the log, modulo 2^32, is its 4-byte reference.
//! - **The index** is 64 shards (by key hash), each an open-addressing table of references with
//!   a parallel byte of fingerprint per slot. It holds no ids: a candidate is checked against its
//!   record (tenant, freshness, the key itself), so a hash collision is a miss, never another
//!   tenant's turn. A shard grows (or sheds the slots of turns that left) by re-hashing its
//!   records' keys.
//!
//! Locks: a lookup takes one shard's short mutex per key and, inside it, the mutex of the chunk
//! holding a candidate; no lookup takes a global lock. Recording takes the writer's mutex (after
//! the response has been delivered), then a chunk's, then shards' — never a chunk's while it
//! waits for a shard, so readers and the writer cannot deadlock.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sync::lock;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::compact::{self, Reader};
use super::{KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

/// Bounds on the memory full items (recorded JSON, encrypted reasoning) may take.
#[derive(Clone, Copy, Debug)]
pub struct FullItemBudget {
    pub total: usize,
    pub per_tenant: usize,
}

const SHARDS: usize = 64;
const CHUNK_BITS: u32 = 20;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Chunks a 4-byte reference can name: 4 GiB of log.
const CHUNKS: usize = 1 << (32 - CHUNK_BITS);
/// Live log beyond which the oldest turns leave, whatever the capacity (well within the 4 GiB a
/// reference names, so a chunk's slot is free again before the log comes round to it).
const LOG_MAX: u64 = 3 << 30;
/// Ticks per retention: a turn's age is known to retention / 65,536 (40 s of 30 days).
const TICKS_PER_RETENTION: u64 = 1 << 16;
/// Record header after the length: tenant (8), learned-at ticks (4).
const HEADER: usize = 12;
/// Slot tags: empty, a slot whose turn left, or a fingerprint (2..=255).
const EMPTY: u8 = 0;
const DEAD: u8 = 1;

/// The first 8 bytes of a tenant's keyed hash: what a record keeps of its tenant.
fn tenant8(tenant: &TenantKey) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&tenant.0[..8]);
    u64::from_le_bytes(b)
}

/// Where a key's hash leads: its shard, its first slot (low bits), its fingerprint.
fn shard_of(hash: u64) -> usize {
    (hash >> 58) as usize
}

fn fingerprint(hash: u64) -> u8 {
    2 + ((hash >> 32) as u8) % 254
}

/// One shard of the index.
struct Table {
    refs: Vec<u32>,
    tags: Vec<u8>,
    live: usize,
    dead: usize,
}

impl Table {
    fn with_slots(slots: usize) -> Table {
        Table {
            refs: vec![0; slots],
            tags: vec![EMPTY; slots],
            live: 0,
            dead: 0,
        }
    }

    fn mask(&self) -> usize {
        self.tags.len() - 1
    }

    /// Calls `each` with every reference whose fingerprint matches, in probe order.
    fn candidates(&self, hash: u64, mut each: impl FnMut(u32)) {
        let fp = fingerprint(hash);
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..self.tags.len() {
            match self.tags[i] {
                EMPTY => return,
                tag if tag == fp => each(self.refs[i]),
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether one more entry would pass 7/8 of the slots (live and dead together).
    fn full(&self) -> bool {
        (self.live + self.dead + 1) * 8 > self.tags.len() * 7
    }

    fn insert(&mut self, hash: u64, r: u32) {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.tags[i] > DEAD {
            i = (i + 1) & mask;
        }
        if self.tags[i] == DEAD {
            self.dead -= 1;
        }
        self.tags[i] = fingerprint(hash);
        self.refs[i] = r;
        self.live += 1;
    }

    fn remove(&mut self, hash: u64, r: u32) {
        let fp = fingerprint(hash);
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..self.tags.len() {
            match self.tags[i] {
                EMPTY => return,
                tag if tag == fp && self.refs[i] == r => {
                    self.tags[i] = DEAD;
                    self.live -= 1;
                    self.dead += 1;
                    return;
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }
}

/// One megabyte of the log; absent until the tail reaches it, freed when the head leaves it.
type Chunk = Box<[u8]>;

/// The log's ends (logical byte offsets, only ever growing) and its turn count.
struct Writer {
    head: u64,
    tail: u64,
    turns: usize,
    chunks: usize,
}

/// What the oldest place in the log holds.
enum Oldest {
    /// The rest of a chunk no record fitted in.
    Padding,
    /// A record whose keys cannot be read (never written so; it goes whatever is asked).
    Unreadable { len: u64 },
    Record {
        len: u64,
        ticks: u32,
        tenant: u64,
        hashes: Vec<u64>,
        full_bytes: usize,
    },
}

pub struct MemoryLedger {
    shards: Box<[Mutex<Table>]>,
    chunks: Box<[Mutex<Option<Chunk>>]>,
    writer: Mutex<Writer>,
    /// The writer's head, for lookups that order candidates by age.
    head: AtomicU64,
    turns: AtomicUsize,
    bytes: AtomicUsize,
    hasher: RandomState,
    started: Instant,
    tick_ms: u64,
    retention_ticks: u32,
    capacity: usize,
    evictions: AtomicU64,
    budget: FullItemBudget,
    full_total: AtomicUsize,
    /// Full-item bytes per tenant, by the 8 bytes of the tenant a record keeps.
    full_by_tenant: DashMap<u64, usize>,
    over_budget: AtomicU64,
}

impl MemoryLedger {
    pub fn new(retention: Duration, capacity: usize, budget: FullItemBudget) -> Self {
        let retention_ms = u64::try_from(retention.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let tick_ms = (retention_ms / TICKS_PER_RETENTION).max(1);
        MemoryLedger {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Table::with_slots(16)))
                .collect(),
            chunks: (0..CHUNKS).map(|_| Mutex::new(None)).collect(),
            writer: Mutex::new(Writer {
                head: 0,
                tail: 0,
                turns: 0,
                chunks: 0,
            }),
            head: AtomicU64::new(0),
            turns: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            hasher: RandomState::new(),
            started: Instant::now(),
            tick_ms,
            retention_ticks: u32::try_from(retention_ms.div_ceil(tick_ms)).unwrap_or(u32::MAX),
            capacity: capacity.max(1),
            evictions: AtomicU64::new(0),
            budget,
            full_total: AtomicUsize::new(0),
            full_by_tenant: DashMap::new(),
            over_budget: AtomicU64::new(0),
        }
    }

    fn hash(&self, tenant: u64, kind: KeyKind, key: &[u8]) -> u64 {
        self.hasher.hash_one((tenant, kind, key))
    }

    fn now_ticks(&self) -> u32 {
        (self.started.elapsed().as_millis() as u64 / self.tick_ms) as u32
    }

    fn fresh(&self, ticks: u32, now: u32) -> bool {
        now.wrapping_sub(ticks) < self.retention_ticks
    }

    /// Runs `read` on the record body (after its length) that `r` names.
    fn with_record<T>(&self, r: u32, read: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
        let slot = lock(&self.chunks[(r >> CHUNK_BITS) as usize]);
        let chunk = slot.as_deref()?;
        let mut reader = Reader::new(chunk.get(r as usize & (CHUNK - 1)..)?);
        let len = usize::try_from(reader.varint()?).ok()?;
        read(reader.take(len)?)
    }

    /// The key hashes of a record body, with its tenant and learned-at ticks.
    fn record_keys(&self, body: &[u8]) -> Option<(u64, u32, Vec<u64>, usize)> {
        let mut r = Reader::new(body);
        let head = r.take(8)?;
        let mut t = [0u8; 8];
        t.copy_from_slice(head);
        let tenant = u64::from_le_bytes(t);
        let ticks = r.u32()?;
        let mut hashes = Vec::with_capacity(4);
        let mut full_bytes = 0;
        compact::walk_items(&mut r, |item| {
            full_bytes += item.full.map_or(0, <[u8]>::len);
            hashes.extend(item.keys().map(|(kind, key)| self.hash(tenant, kind, key)));
        })?;
        if let Some((response, input)) = compact::link_key(&mut r)? {
            hashes.push(self.hash(tenant, KeyKind::ResponseId, response));
            full_bytes += input;
        }
        Some((tenant, ticks, hashes, full_bytes))
    }

    /// Charges a turn's full items to the budgets, or drops them (keeping ids and order) when
    /// they would exceed either budget.
    fn charge(&self, t8: u64, turn: &mut Turn) -> usize {
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
    fn reserve(&self, t8: u64, bytes: usize) -> bool {
        let mut used = self.full_by_tenant.entry(t8).or_insert(0);
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
            return false;
        }
        *used += bytes;
        true
    }

    fn refund(&self, tenant: u64, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.full_total.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(mut used) = self.full_by_tenant.get_mut(&tenant) {
            *used = used.saturating_sub(bytes);
        }
        self.full_by_tenant.remove_if(&tenant, |_, used| *used == 0);
    }

    /// The record of a turn: `varint(len)`, tenant, ticks, items.
    fn encode(tenant: u64, ticks: u32, turn: &Turn) -> Option<Vec<u8>> {
        let mut body = Vec::with_capacity(HEADER + turn.items.len() * 28);
        body.extend_from_slice(&tenant.to_le_bytes());
        body.extend_from_slice(&ticks.to_le_bytes());
        compact::put_items(&mut body, turn)?;
        compact::put_link(&mut body, turn);
        let mut record = Vec::with_capacity(body.len() + 3);
        compact::put_varint(&mut record, body.len() as u64);
        record.extend_from_slice(&body);
        Some(record)
    }

    /// Remembers a turn learned now; returns its record as stored (`varint(len)`, then the
    /// body: tenant, ticks, items), or `None` when it could not be kept.
    pub(crate) fn insert(&self, tenant: TenantKey, turn: Turn) -> Option<Vec<u8>> {
        self.insert_at(tenant8(&tenant), self.now_ticks(), turn)
    }

    fn insert_at(&self, t8: u64, ticks: u32, mut turn: Turn) -> Option<Vec<u8>> {
        let mut charged = self.charge(t8, &mut turn);
        let mut record = Self::encode(t8, ticks, &turn);
        let too_large = |r: &Option<Vec<u8>>| r.as_ref().is_none_or(|r| r.len() > CHUNK);
        if too_large(&record) && charged > 0 {
            // Too large for a chunk: without the request's input, else by id only.
            self.refund(t8, charged);
            charged = 0;
            if drop_input(&mut turn) {
                charged = self.charge(t8, &mut turn);
                record = Self::encode(t8, ticks, &turn);
            }
            if too_large(&record) {
                self.refund(t8, charged);
                charged = 0;
                drop_full(&mut turn);
                record = Self::encode(t8, ticks, &turn);
            }
        }
        let Some(record) = record.filter(|r| r.len() <= CHUNK) else {
            self.refund(t8, charged);
            return None;
        };
        let hashes: Vec<u64> = super::keys_of(&turn)
            .map(|(kind, key)| self.hash(t8, kind, &compact::encode_id(key)))
            .collect();
        self.place(ticks, &record, hashes, true);
        Some(record)
    }

    /// Remembers a record body a persistent store kept (`file.rs`), learned `age` ago: as it
    /// is when its full items fit the budgets (no decoding), else by id only. `false` when it
    /// is past retention or unreadable.
    pub(crate) fn restore(&self, body: &[u8], age: Duration) -> bool {
        let age_ticks = u64::try_from(age.as_millis()).unwrap_or(u64::MAX) / self.tick_ms;
        if age_ticks >= u64::from(self.retention_ticks) || body.len() < HEADER {
            return false;
        }
        let ticks = self.now_ticks().wrapping_sub(age_ticks as u32);
        let mut record = Vec::with_capacity(body.len() + 3);
        compact::put_varint(&mut record, body.len() as u64);
        let at = record.len();
        record.extend_from_slice(body);
        record[at + 8..at + HEADER].copy_from_slice(&ticks.to_le_bytes());
        let body = &record[at..];
        let Some((t8, _, hashes, full_bytes)) = self.record_keys(body) else {
            return false;
        };
        if full_bytes > 0 && !self.reserve(t8, full_bytes) {
            let Some(turn) = compact::read_turn(&mut Reader::new(&body[HEADER..])) else {
                return false;
            };
            return self.insert_at(t8, ticks, turn).is_some();
        }
        if record.len() > CHUNK {
            self.refund(t8, full_bytes);
            return false;
        }
        // Restored oldest first and within retention: nothing older is left to expire.
        self.place(ticks, &record, hashes, false);
        true
    }

    /// Sizes the index of an empty store for `keys` keys at once, as growing to them would
    /// (a restore would otherwise rebuild every shard many times over, reading each record's
    /// keys again each time).
    pub(crate) fn presize(&self, keys: usize) {
        let per_shard = keys.div_ceil(SHARDS) + keys.div_ceil(SHARDS) / 16 + 16;
        let slots = (per_shard * 8 / 7 + 1).next_power_of_two();
        for shard in self.shards.iter() {
            let mut table = lock(shard);
            if table.live == 0 && table.tags.len() < slots {
                *table = Table::with_slots(slots);
            }
        }
    }

    /// Writes a record learned at `ticks` at the log's tail and indexes its keys, making room
    /// first (capacity, the log's bound, and with `expire` retention).
    fn place(&self, ticks: u32, record: &[u8], hashes: Vec<u64>, expire: bool) {
        let mut w = lock(&self.writer);
        let now = ticks;
        while w.turns >= self.capacity && self.drop_oldest(&mut w, |_| true, true) {}
        while expire && self.drop_oldest(&mut w, |ticks| !self.fresh(ticks, now), false) {}
        while (w.tail + (record.len() + CHUNK) as u64) - w.head > LOG_MAX
            && self.drop_oldest(&mut w, |_| true, true)
        {}
        let r = self.append(&mut w, record);
        for hash in hashes {
            let mut table = lock(&self.shards[shard_of(hash)]);
            if table.full() {
                self.rebuild(shard_of(hash), &mut table);
            }
            table.insert(hash, r);
        }
        w.turns += 1;
        self.publish(&w);
    }

    fn publish(&self, w: &Writer) {
        self.head.store(w.head, Ordering::Release);
        self.turns.store(w.turns, Ordering::Relaxed);
        self.bytes.store(w.chunks * CHUNK, Ordering::Relaxed);
    }

    /// Writes a record at the tail (at the next chunk when it does not fit in this one's rest);
    /// returns its reference.
    fn append(&self, w: &mut Writer, record: &[u8]) -> u32 {
        let at = (w.tail % CHUNK as u64) as usize;
        if at != 0 && at + record.len() > CHUNK {
            // The rest of this chunk stays zero: padding, which the oldest-first walk skips.
            w.tail += (CHUNK - at) as u64;
        }
        let slot_index = ((w.tail >> CHUNK_BITS) as usize) % CHUNKS;
        let mut slot = lock(&self.chunks[slot_index]);
        if w.tail.is_multiple_of(CHUNK as u64) || slot.is_none() {
            // A chunk starts zeroed: whatever a record leaves unwritten at its end is padding.
            if slot.replace(vec![0u8; CHUNK].into_boxed_slice()).is_none() {
                w.chunks += 1;
            }
        }
        let at = (w.tail % CHUNK as u64) as usize;
        if let Some(chunk) = slot.as_deref_mut() {
            chunk[at..at + record.len()].copy_from_slice(record);
        }
        let r = w.tail as u32;
        w.tail += record.len() as u64;
        r
    }

    fn oldest(&self, w: &Writer) -> Option<Oldest> {
        if w.head >= w.tail {
            return None;
        }
        let r = w.head as u32;
        let slot = lock(&self.chunks[(r >> CHUNK_BITS) as usize]);
        let Some(chunk) = slot.as_deref() else {
            return Some(Oldest::Padding);
        };
        let mut reader = Reader::new(&chunk[r as usize & (CHUNK - 1)..]);
        match reader.varint() {
            None | Some(0) => Some(Oldest::Padding),
            Some(len) => {
                let body = reader.take(usize::try_from(len).ok()?)?;
                let Some((tenant, ticks, hashes, full_bytes)) = self.record_keys(body) else {
                    return Some(Oldest::Unreadable {
                        len: reader.at as u64,
                    });
                };
                Some(Oldest::Record {
                    len: reader.at as u64,
                    ticks,
                    tenant,
                    hashes,
                    full_bytes,
                })
            }
        }
    }

    /// Forgets the oldest turn if `expired(its ticks)`; returns whether one left. Padding is
    /// skipped on the way. `counted`: an eviction (over capacity), not an expiry.
    fn drop_oldest(&self, w: &mut Writer, expired: impl Fn(u32) -> bool, counted: bool) -> bool {
        loop {
            let before = w.head;
            match self.oldest(w) {
                None => return false,
                Some(Oldest::Padding) => {
                    w.head = ((w.head >> CHUNK_BITS) + 1) << CHUNK_BITS;
                    self.free_passed(w, before);
                }
                Some(Oldest::Unreadable { len }) => {
                    w.head += len;
                    w.turns -= 1;
                    self.free_passed(w, before);
                    return true;
                }
                Some(Oldest::Record {
                    len,
                    ticks,
                    tenant,
                    hashes,
                    full_bytes,
                }) => {
                    if !expired(ticks) {
                        return false;
                    }
                    let r = w.head as u32;
                    for hash in hashes {
                        lock(&self.shards[shard_of(hash)]).remove(hash, r);
                    }
                    self.refund(tenant, full_bytes);
                    w.head += len;
                    w.turns -= 1;
                    if counted {
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    self.free_passed(w, before);
                    return true;
                }
            }
        }
    }

    /// Frees the chunk the head was in at `before` once the head has left it.
    fn free_passed(&self, w: &mut Writer, before: u64) {
        if w.head >> CHUNK_BITS != before >> CHUNK_BITS {
            let slot_index = ((before >> CHUNK_BITS) as usize) % CHUNKS;
            if lock(&self.chunks[slot_index]).take().is_some() {
                w.chunks -= 1;
            }
        }
        self.publish(w);
    }

    /// Rebuilds a shard: twice the slots when over 7/16 live, else the same, without dead
    /// slots. Each live slot's key is found again from its record.
    fn rebuild(&self, shard: usize, table: &mut Table) {
        let slots = table.tags.len();
        let slots = if (table.live + 1) * 16 > slots * 7 {
            slots * 2
        } else {
            slots
        };
        let mut live: Vec<(u32, u8)> = table
            .tags
            .iter()
            .zip(&table.refs)
            .filter(|(tag, _)| **tag > DEAD)
            .map(|(tag, r)| (*r, *tag))
            .collect();
        live.sort_unstable();
        live.dedup();
        let mut fresh = Table::with_slots(slots);
        for (r, fp) in live {
            let hashes = self.with_record(r, |body| self.record_keys(body).map(|k| k.2));
            for hash in hashes.unwrap_or_default() {
                if shard_of(hash) == shard && fingerprint(hash) == fp {
                    fresh.insert(hash, r);
                }
            }
        }
        *table = fresh;
    }

    /// Forgets turns past retention. Run periodically; lookups ignore them meanwhile.
    pub fn sweep(&self) {
        let now = self.now_ticks();
        let mut w = lock(&self.writer);
        while self.drop_oldest(&mut w, |ticks| !self.fresh(ticks, now), false) {}
        self.publish(&w);
    }

    fn find(
        &self,
        tenant: TenantKey,
        keys: &[&str],
        kinds: &[KeyKind],
    ) -> Vec<std::sync::Arc<Turn>> {
        let t8 = tenant8(&tenant);
        let now = self.now_ticks();
        let head = self.head.load(Ordering::Acquire) as u32;
        let mut seen: Vec<u32> = Vec::new();
        let mut found = Vec::new();
        for key in keys {
            let encoded = compact::encode_id(key);
            for &kind in kinds {
                let hash = self.hash(t8, kind, &encoded);
                let table = lock(&self.shards[shard_of(hash)]);
                // The newest turn holding the key (a response recorded twice has two).
                let mut newest: Option<u32> = None;
                table.candidates(hash, |r| {
                    let holds = self.with_record(r, |body| {
                        let mut reader = Reader::new(body);
                        let tenant = reader.take(8)?;
                        let ticks = reader.u32()?;
                        Some(
                            tenant == t8.to_le_bytes()
                                && self.fresh(ticks, now)
                                && compact::holds(&mut reader, kind, &encoded),
                        )
                    });
                    if holds == Some(true)
                        && newest.is_none_or(|n| r.wrapping_sub(head) > n.wrapping_sub(head))
                    {
                        newest = Some(r);
                    }
                });
                let Some(r) = newest.filter(|r| !seen.contains(r)) else {
                    continue;
                };
                let turn = self.with_record(r, |body| {
                    compact::read_turn(&mut Reader::new(body.get(HEADER..)?))
                });
                drop(table);
                if let Some(turn) = turn {
                    seen.push(r);
                    found.push(std::sync::Arc::new(turn));
                }
            }
        }
        found
    }

    /// Live bytes: the log's chunks and the index's slots.
    fn bytes(&self) -> u64 {
        let index: usize = self
            .shards
            .iter()
            .map(|s| lock(s).tags.len() * (1 + std::mem::size_of::<u32>()))
            .sum();
        (self.bytes.load(Ordering::Relaxed) + index) as u64
    }
}

/// The bytes a turn holds in full: its items', and its request's input.
fn full_bytes(turn: &Turn) -> usize {
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
fn drop_input(turn: &mut Turn) -> bool {
    turn.link
        .as_mut()
        .is_some_and(|link| link.input.take().is_some())
}

fn drop_full(turn: &mut Turn) {
    for item in turn.items.iter_mut() {
        item.full = None;
    }
    if let Some(link) = &mut turn.link {
        link.input = None;
    }
}

impl Ledger for MemoryLedger {
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>> {
        let _ = self.insert(tenant, turn);
        async { Ok(()) }.boxed()
    }

    fn lookup<'a>(
        &'a self,
        tenant: TenantKey,
        keys: &'a [&'a str],
        kinds: &'static [KeyKind],
    ) -> BoxFuture<'a, Result<Vec<std::sync::Arc<Turn>>, LedgerError>> {
        let found = self.find(tenant, keys, kinds);
        async move { Ok(found) }.boxed()
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }

    fn stats(&self) -> LedgerStats {
        LedgerStats {
            turns: self.turns.load(Ordering::Relaxed) as u64,
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.bytes(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use crate::ledger::ITEM_KEYS;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::repair::items::tests::turn;
    use crate::repair::items::{ItemType, TurnItem};

    const A: TenantKey = TenantKey([1; 16]);
    const B: TenantKey = TenantKey([2; 16]);
    const ROOMY: FullItemBudget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };

    fn live_slots(l: &MemoryLedger) -> usize {
        l.shards.iter().map(|s| lock(s).live).sum()
    }

    fn api_turn(n: u64) -> Turn {
        let item = |prefix: &str, ty: ItemType, salt: u64| TurnItem {
            id: format!("{prefix}_{n:016x}{salt:016x}{:016x}", n ^ salt).into(),
            // Reasoning and messages carry a digest of their content, as captured turns do.
            digest: matches!(ty, ItemType::Reasoning | ItemType::Message)
                .then_some((n ^ salt) as u32),
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
            link: None,
        }
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
        assert!(l.full_total.load(Ordering::Relaxed) > 0);
        l.insert(A, turn("rs ig", true));
        assert!(l
            .find(A, &["resp_1"], crate::ledger::RESPONSE_KEYS)
            .is_empty());
        assert_eq!(
            l.full_total.load(Ordering::Relaxed),
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
            l.insert(TenantKey([(n % 7) as u8; 16]), api_turn(n));
        }
        assert_eq!(l.stats().turns, capacity as u64);
        assert_eq!(l.stats().evictions, total - capacity as u64);
        assert_eq!(live_slots(&l), 3 * capacity);
        for n in (0..total).step_by(997) {
            let tenant = TenantKey([(n % 7) as u8; 16]);
            let t = api_turn(n);
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
        assert_eq!(l.full_total.load(Ordering::Relaxed), 0);
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
        assert_eq!(l.over_budget.load(Ordering::Relaxed), 1);
        // Another tenant has its own budget.
        l.insert(B, turn("rs fc msg", false));
        assert!(l.find(B, &["fc_1"], ITEM_KEYS)[0].items[1].full.is_some());
        // Evicting A's first turn refunds its bytes.
        l.insert(B, turn("rs", true));
        assert!(l.full_by_tenant.get(&tenant8(&A)).is_none());
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
                        let charged = l.charge(tenant8(&TenantKey([t; 16])), &mut one);
                        worst = worst.max(l.full_total.load(Ordering::Relaxed));
                        l.refund(tenant8(&TenantKey([t; 16])), charged);
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
                        let turn = api_turn(n);
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
}
