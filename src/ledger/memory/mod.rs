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

use std::hash::BuildHasher;

use foldhash::quality::RandomState;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sync::lock;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

mod budget;
mod index;

pub use self::budget::FullItemBudget;
use self::budget::{drop_full, drop_input, FullItems};
use self::index::{fingerprint, shard_of, Table, DEAD};
use super::compact::{self, Reader};
use super::{KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

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
/// The first 8 bytes of a tenant's keyed hash: what a record keeps of its tenant.
fn tenant8(tenant: &TenantKey) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&tenant.0[..8]);
    u64::from_le_bytes(b)
}

/// A record body's learned-at ticks, read from its header alone.
fn record_ticks(body: &[u8]) -> Option<u32> {
    let ticks = body.get(8..HEADER)?;
    Some(u32::from_le_bytes(ticks.try_into().ok()?))
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
    /// A record that is not to go: its keys were not read.
    Kept,
    /// A record whose keys cannot be read (never written so): it goes when it is to go, as a
    /// readable one would; with no ticks to read, whenever asked.
    Unreadable { len: u64 },
    /// A record to go, with what its leaving frees.
    Record {
        len: u64,
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
    full: FullItems,
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
            hasher: RandomState::default(),
            started: Instant::now(),
            tick_ms,
            retention_ticks: u32::try_from(retention_ms.div_ceil(tick_ms)).unwrap_or(u32::MAX),
            capacity: capacity.max(1),
            evictions: AtomicU64::new(0),
            full: FullItems::new(budget),
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

    /// The key hashes of a record body, with its tenant and the bytes of full items it holds.
    fn record_keys(&self, body: &[u8]) -> Option<(u64, Vec<u64>, usize)> {
        let mut r = Reader::new(body);
        let head = r.take(8)?;
        let mut t = [0u8; 8];
        t.copy_from_slice(head);
        let tenant = u64::from_le_bytes(t);
        r.u32()?;
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
        Some((tenant, hashes, full_bytes))
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
        let mut charged = self.full.charge(t8, &mut turn);
        let mut record = Self::encode(t8, ticks, &turn);
        let too_large = |r: &Option<Vec<u8>>| r.as_ref().is_none_or(|r| r.len() > CHUNK);
        if too_large(&record) && charged > 0 {
            // Too large for a chunk: without the request's input, else by id only.
            self.full.refund(t8, charged);
            charged = 0;
            if drop_input(&mut turn) {
                charged = self.full.charge(t8, &mut turn);
                record = Self::encode(t8, ticks, &turn);
            }
            if too_large(&record) {
                self.full.refund(t8, charged);
                charged = 0;
                drop_full(&mut turn);
                record = Self::encode(t8, ticks, &turn);
            }
        }
        let Some(record) = record.filter(|r| r.len() <= CHUNK) else {
            self.full.refund(t8, charged);
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
        let Some((t8, hashes, full_bytes)) = self.record_keys(body) else {
            return false;
        };
        if full_bytes > 0 && !self.full.reserve(t8, full_bytes) {
            let Some(turn) = compact::read_turn(&mut Reader::new(&body[HEADER..])) else {
                return false;
            };
            return self.insert_at(t8, ticks, turn).is_some();
        }
        if record.len() > CHUNK {
            self.full.refund(t8, full_bytes);
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

    /// The oldest record; its keys are read (every item decoded, every key hashed) only when it
    /// is to go, `expired(its ticks)`: most calls find it fresh.
    fn oldest(&self, w: &Writer, expired: impl Fn(u32) -> bool) -> Option<Oldest> {
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
                if record_ticks(body).is_some_and(|ticks| !expired(ticks)) {
                    return Some(Oldest::Kept);
                }
                let Some((tenant, hashes, full_bytes)) = self.record_keys(body) else {
                    return Some(Oldest::Unreadable {
                        len: reader.at as u64,
                    });
                };
                Some(Oldest::Record {
                    len: reader.at as u64,
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
            match self.oldest(w, &expired) {
                None | Some(Oldest::Kept) => return false,
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
                    tenant,
                    hashes,
                    full_bytes,
                }) => {
                    let r = w.head as u32;
                    for hash in hashes {
                        lock(&self.shards[shard_of(hash)]).remove(hash, r);
                    }
                    self.full.refund(tenant, full_bytes);
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
            let hashes = self.with_record(r, |body| self.record_keys(body).map(|k| k.1));
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
mod tests;
