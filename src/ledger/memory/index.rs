//! The memory store's index: 64 shards (by key hash), each an open-addressing table of 4-byte
//! record references with a parallel byte of fingerprint per slot. It holds no ids: a candidate
//! is checked against its record, so a collision is a miss, never another tenant's turn.

/// Slot tags: empty, a slot whose turn left, or a fingerprint (2..=255).
pub(super) const EMPTY: u8 = 0;
pub(super) const DEAD: u8 = 1;

/// Where a key's hash leads: its shard, its first slot (low bits), its fingerprint.
pub(super) fn shard_of(hash: u64) -> usize {
    (hash >> 58) as usize
}

pub(super) fn fingerprint(hash: u64) -> u8 {
    2 + ((hash >> 32) as u8) % 254
}

/// One shard of the index.
pub(super) struct Table {
    pub(super) refs: Vec<u32>,
    pub(super) tags: Vec<u8>,
    pub(super) live: usize,
    pub(super) dead: usize,
}

impl Table {
    pub(super) fn with_slots(slots: usize) -> Table {
        Table {
            refs: vec![0; slots],
            tags: vec![EMPTY; slots],
            live: 0,
            dead: 0,
        }
    }

    pub(super) fn mask(&self) -> usize {
        self.tags.len() - 1
    }

    /// Calls `each` with every reference whose fingerprint matches, in probe order.
    pub(super) fn candidates(&self, hash: u64, mut each: impl FnMut(u32)) {
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
    pub(super) fn full(&self) -> bool {
        (self.live + self.dead + 1) * 8 > self.tags.len() * 7
    }

    pub(super) fn insert(&mut self, hash: u64, r: u32) {
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

    /// Forgets record `r`'s slots on `hash`'s probe chain. Every slot of that chain with `r` and
    /// this fingerprint goes, not only the first: the record is leaving whole, and two of its
    /// keys may share a shard and a fingerprint, in which case the first such slot on this
    /// chain can be the other key's, while this key's own slot may lie where that key's chain
    /// never reaches (it would then stay live for ever).
    pub(super) fn remove(&mut self, hash: u64, r: u32) {
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
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_record_leaves_no_slot_behind_even_one_it_got_twice() {
        // A shard rebuilt while a record's keys are being indexed re-derives every key of that
        // record it already holds a slot of (same fingerprint): one of them can be indexed
        // twice. The record leaves once, with all its slots.
        let mut t = Table::with_slots(16);
        let hash = (5u64 << 32) | 3;
        t.insert(hash, 7);
        t.insert(hash, 7);
        t.insert((9u64 << 32) | 3, 8);
        t.remove(hash, 7);
        assert_eq!(t.live, 1, "only record 8's slot is left");
    }
}
