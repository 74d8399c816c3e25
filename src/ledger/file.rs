//! The persistent embedded store (`--store file:DIR`): the memory store, with every record it
//! keeps also appended to a segment file, so a restart (a deploy, a crash, a sidecar the
//! orchestrator restarted) forgets nothing.
//!
//! Why not an embedded database: the memory store's records are already a compact append-only
//! log (ids as decoded bytes), the index is rebuilt from them in well under a second per million
//! turns, and retention and capacity drop the oldest turns first, so whole files can go. What
//! the disk adds is small: per record `u32 len`, `u32 check` (the first 4 bytes of its BLAKE3),
//! then the memory record's body with its learned-at time as UNIX seconds instead of ticks.
//!
//! - A record is written (one `write`) when its turn is learned, before the response's last
//!   bytes reach the client: a killed process loses nothing it answered (the page cache has it);
//!   a power loss loses at most `store_sync` (the background thread's `fdatasync`).
//! - At start every segment is read in order and its records restored into memory; a record
//!   whose length or check is wrong ends its segment there: the rest is cut off with one warning
//!   (a torn write at a crash, or damage), never read as a turn.
//! - Segments are 64 MiB; one whose newest turn is past retention, or whose turns the capacity
//!   no longer holds, is deleted whole.
//! - `DIR/lock` is locked for the process's life (released by the kernel however it ends); a
//!   second process on the directory refuses to start and names the first.
//! - Without a configured `tenant_secret`, `DIR/tenant-secret` keeps the one made at first start
//!   (mode 0600): the tenant hashes of the records stay the same across restarts.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::compact::Reader;
use super::memory::MemoryLedger;
use super::{KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

/// A segment is closed past this size.
const SEGMENT_MAX: u64 = 64 << 20;
/// Largest record body (the memory store's chunk).
const BODY_MAX: usize = 1 << 20;
/// Bytes before a record's body: length, check.
const FRAME: usize = 8;
/// Where the learned-at time sits in a body (after the tenant's 8 bytes).
const TIME_AT: std::ops::Range<usize> = 8..12;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("store directory {dir} is in use by process {pid} (lock file {dir}/lock)")]
    Locked { dir: String, pid: String },
    #[error("store directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
}

/// What `rethread check` reports of a store directory (read without taking its lock).
#[derive(Debug, Default)]
pub struct Usage {
    pub segments: usize,
    pub bytes: u64,
    pub turns: u64,
}

/// One segment file: its number, turns and newest learned-at time (UNIX seconds).
#[derive(Clone, Copy, Debug)]
struct Segment {
    id: u64,
    turns: u64,
    newest: u32,
    bytes: u64,
}

struct Log {
    dir: PathBuf,
    /// Closed segments, oldest first.
    closed: VecDeque<Segment>,
    current: Segment,
    file: File,
    /// Written since the last sync.
    dirty: bool,
    retention_secs: u64,
    capacity: u64,
}

pub struct FileLedger {
    memory: Arc<MemoryLedger>,
    log: Arc<Mutex<Log>>,
    /// Held for the process's life: the directory's lock.
    _lock: File,
    /// Dropped with the store: the sync thread then ends.
    _stop: std::sync::mpsc::Sender<()>,
}

fn unix_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn check(body: &[u8]) -> u32 {
    let hash = blake3::hash(body);
    let b = hash.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

/// The segment numbers in `dir`, in order.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Walks the records of a segment's bytes: `each(body)` per good record; returns where the good
/// records end.
fn walk(bytes: &[u8], mut each: impl FnMut(&[u8])) -> usize {
    let mut at = 0;
    while bytes.len() - at >= FRAME {
        let mut r = Reader::new(&bytes[at..]);
        let (Some(len), Some(sum)) = (r.u32(), r.u32()) else {
            break;
        };
        let len = len as usize;
        let Some(body) = bytes.get(at + FRAME..at + FRAME + len) else {
            break;
        };
        if !(TIME_AT.end..=BODY_MAX).contains(&len) || check(body) != sum {
            break;
        }
        each(body);
        at += FRAME + len;
    }
    at
}

/// The keys the records of a segment's bytes are found by (each item's, each client call's,
/// each response id), to size the index before restoring them; frames are hopped unchecked.
fn count_keys(bytes: &[u8]) -> usize {
    let mut keys = 0;
    let mut at = 0;
    while bytes.len() - at >= FRAME {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let Some(body) = bytes.get(at + FRAME..at + FRAME + len as usize) else {
            break;
        };
        let mut r = Reader::new(body.get(TIME_AT.end..).unwrap_or_default());
        if super::compact::walk_items(&mut r, |item| keys += item.keys().count()).is_none() {
            break;
        }
        keys += usize::from(matches!(super::compact::link_key(&mut r), Some(Some(_))));
        at += FRAME + len as usize;
    }
    keys
}

/// The tenant secret kept in `dir`, made at first use.
pub fn tenant_secret(dir: &Path) -> io::Result<String> {
    fs::create_dir_all(dir)?;
    let path = dir.join("tenant-secret");
    match fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&path)?.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// Reads a store directory's segments without locking it (for `rethread check`).
pub fn usage(dir: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for id in segment_ids(dir)? {
        let bytes = fs::read(segment_path(dir, id))?;
        usage.segments += 1;
        usage.bytes += bytes.len() as u64;
        walk(&bytes, |_| usage.turns += 1);
    }
    Ok(usage)
}

impl FileLedger {
    /// Opens (or creates) the store in `dir`: takes its lock, restores its turns into `memory`
    /// (which must be empty), and starts the thread that syncs every `sync` and drops segments
    /// past retention.
    pub fn open(
        dir: &Path,
        memory: Arc<MemoryLedger>,
        retention: Duration,
        capacity: usize,
        sync: Duration,
    ) -> Result<FileLedger, FileStoreError> {
        let io = |source| FileStoreError::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let lock_file = take_lock(dir)?;
        let started = Instant::now();
        let now = unix_secs();
        let ids = segment_ids(dir).map_err(io)?;
        let mut keys = 0;
        for &id in &ids {
            keys += count_keys(&fs::read(segment_path(dir, id)).map_err(io)?);
        }
        memory.presize(keys);
        let mut closed = VecDeque::new();
        let mut restored = 0u64;
        for &id in &ids {
            let path = segment_path(dir, id);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io)?;
            let mut segment = Segment {
                id,
                turns: 0,
                newest: 0,
                bytes: 0,
            };
            let good = walk(&bytes, |body| {
                let mut r = Reader::new(&body[TIME_AT]);
                let learned = r.u32().unwrap_or(0);
                segment.turns += 1;
                segment.newest = segment.newest.max(learned);
                let age = Duration::from_secs(u64::from(now.saturating_sub(learned)));
                if memory.restore(body, age) {
                    restored += 1;
                }
            });
            if good < bytes.len() {
                tracing::warn!(
                    segment = %path.display(),
                    at = good,
                    cut = bytes.len() - good,
                    "store: a torn or damaged record ends this segment; cutting it off there"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(good as u64))
                    .map_err(io)?;
            }
            segment.bytes = good as u64;
            closed.push_back(segment);
        }
        let current = match closed.pop_back() {
            Some(last) if last.bytes < SEGMENT_MAX => last,
            Some(last) => {
                closed.push_back(last);
                Segment {
                    id: last.id + 1,
                    turns: 0,
                    newest: 0,
                    bytes: 0,
                }
            }
            None => Segment {
                id: 1,
                turns: 0,
                newest: 0,
                bytes: 0,
            },
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, current.id))
            .map_err(io)?;
        tracing::info!(
            dir = %dir.display(),
            segments = closed.len() + 1,
            turns = restored,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store: turns restored from disk"
        );
        let log = Arc::new(Mutex::new(Log {
            dir: dir.to_path_buf(),
            closed,
            current,
            file,
            dirty: false,
            retention_secs: retention.as_secs().max(1),
            capacity: capacity as u64,
        }));
        lock(&log).trim(now);
        let (stop, stopped) = std::sync::mpsc::channel();
        start_sync(log.clone(), sync, stopped);
        Ok(FileLedger {
            memory,
            log,
            _lock: lock_file,
            _stop: stop,
        })
    }

    /// Writes what is pending to the disk itself.
    pub fn sync(&self) {
        lock(&self.log).sync();
    }
}

/// Takes the directory's lock, or names the process holding it.
fn take_lock(dir: &Path) -> Result<File, FileStoreError> {
    let path = dir.join("lock");
    let io = |source| FileStoreError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            return Err(FileStoreError::Locked {
                dir: dir.display().to_string(),
                pid: pid.trim().to_owned(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.write_all(std::process::id().to_string().as_bytes())
        .map_err(io)?;
    Ok(file)
}

/// Syncs the log every `every` and drops what retention no longer holds, until the store is
/// dropped (`stopped` then disconnects); the last sync happens then.
fn start_sync(log: Arc<Mutex<Log>>, every: Duration, stopped: std::sync::mpsc::Receiver<()>) {
    let every = every.max(Duration::from_millis(10));
    let spawned = std::thread::Builder::new()
        .name("rethread-store-sync".into())
        .spawn(move || loop {
            let ended = matches!(
                stopped.recv_timeout(every),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            );
            let mut log = lock(&log);
            log.sync();
            if ended {
                return;
            }
            log.trim(unix_secs());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "store: no sync thread; the disk is synced only at shutdown");
    }
}

impl Log {
    /// Appends a memory record (`varint(len)`, body) learned now.
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        let mut r = Reader::new(record);
        let len = r.varint().and_then(|n| usize::try_from(n).ok());
        let Some(body) = len.and_then(|n| r.take(n)) else {
            return Ok(());
        };
        if body.len() < TIME_AT.end || body.len() > BODY_MAX {
            return Ok(());
        }
        let now = unix_secs();
        let mut frame = Vec::with_capacity(FRAME + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(body);
        frame[FRAME + TIME_AT.start..FRAME + TIME_AT.end].copy_from_slice(&now.to_le_bytes());
        let sum = check(&frame[FRAME..]);
        frame[4..FRAME].copy_from_slice(&sum.to_le_bytes());
        if self.current.bytes + frame.len() as u64 > SEGMENT_MAX && self.current.turns > 0 {
            self.rotate()?;
        }
        self.file.write_all(&frame)?;
        self.current.bytes += frame.len() as u64;
        self.current.turns += 1;
        self.current.newest = now;
        self.dirty = true;
        Ok(())
    }

    /// Closes the current segment and starts the next.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = Segment {
            id: self.current.id + 1,
            turns: 0,
            newest: 0,
            bytes: 0,
        };
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next.id))?;
        self.closed
            .push_back(std::mem::replace(&mut self.current, next));
        self.dirty = false;
        self.trim(unix_secs());
        Ok(())
    }

    fn sync(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(error = %e, "store: sync failed");
        }
    }

    /// Deletes the oldest closed segments whose turns are all past retention, or which the
    /// capacity no longer holds.
    fn trim(&mut self, now: u32) {
        let mut held: u64 = self.closed.iter().map(|s| s.turns).sum::<u64>() + self.current.turns;
        while let Some(oldest) = self.closed.front().copied() {
            let expired = u64::from(now.saturating_sub(oldest.newest)) >= self.retention_secs;
            let beyond = held - oldest.turns >= self.capacity;
            if !expired && !beyond {
                break;
            }
            if let Err(e) = fs::remove_file(segment_path(&self.dir, oldest.id)) {
                tracing::warn!(error = %e, segment = oldest.id, "store: could not delete a segment");
                break;
            }
            held -= oldest.turns;
            self.closed.pop_front();
        }
    }

    fn usage(&self) -> Usage {
        let all = self.closed.iter().chain(std::iter::once(&self.current));
        let mut usage = Usage::default();
        for s in all {
            usage.segments += 1;
            usage.bytes += s.bytes;
            usage.turns += s.turns;
        }
        usage
    }
}

impl FileLedger {
    /// The segments, bytes and turns on disk now.
    pub fn disk(&self) -> Usage {
        lock(&self.log).usage()
    }
}

impl Ledger for FileLedger {
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>> {
        let written = match self.memory.insert(tenant, turn) {
            Some(record) => lock(&self.log)
                .append(&record)
                .map_err(|e| LedgerError::Unavailable(Box::new(e))),
            None => Ok(()),
        };
        async move { written }.boxed()
    }

    fn lookup<'a>(
        &'a self,
        tenant: TenantKey,
        keys: &'a [&'a str],
        kinds: &'static [KeyKind],
    ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>> {
        self.memory.lookup(tenant, keys, kinds)
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }

    fn stats(&self) -> LedgerStats {
        self.memory.stats()
    }

    fn flush(&self, _limit: Duration) -> BoxFuture<'_, ()> {
        self.sync();
        async {}.boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::FullItemBudget;
    use crate::ledger::ITEM_KEYS;
    use crate::repair::items::tests::turn;

    const A: TenantKey = TenantKey([1; 16]);
    const B: TenantKey = TenantKey([2; 16]);
    const DAY: Duration = Duration::from_secs(86_400);

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rethread-file-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn memory() -> Arc<MemoryLedger> {
        let budget = FullItemBudget {
            total: 1 << 30,
            per_tenant: 1 << 30,
        };
        Arc::new(MemoryLedger::new(DAY, 1000, budget))
    }

    fn open(dir: &Path) -> FileLedger {
        FileLedger::open(dir, memory(), DAY, 1000, Duration::from_secs(1)).unwrap()
    }

    fn found(l: &FileLedger, tenant: TenantKey, id: &str) -> usize {
        l.lookup(tenant, &[id], ITEM_KEYS)
            .now_or_never()
            .unwrap()
            .unwrap()
            .len()
    }

    #[test]
    fn turns_come_back_after_a_restart_for_their_tenant_only() {
        let dir = temp("restart");
        let l = open(&dir);
        let _ = l.record(A, turn("rs fc msg", false)).now_or_never();
        drop(l);
        let l = open(&dir);
        let found_turns = l
            .lookup(A, &["fc_1"], ITEM_KEYS)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(*found_turns[0], turn("rs fc msg", false));
        assert_eq!(found(&l, B, "fc_1"), 0, "another tenant finds nothing");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_tail_is_cut_off_and_the_turns_before_it_stay() {
        let dir = temp("torn");
        let l = open(&dir);
        let _ = l.record(A, turn("rs fc", true)).now_or_never();
        drop(l);
        let path = segment_path(&dir, 1);
        let good = fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[7, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        drop(f);
        let l = open(&dir);
        assert_eq!(found(&l, A, "fc_1"), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), good, "the tail is cut");
        let _ = l.record(A, turn("ig msg", true)).now_or_never();
        drop(l);
        let l = open(&dir);
        assert_eq!(
            found(&l, A, "ig_0"),
            1,
            "records after the cut are read again"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_never_read_as_a_turn() {
        let dir = temp("flip");
        let l = open(&dir);
        let _ = l.record(A, turn("rs fc", true)).now_or_never();
        drop(l);
        let path = segment_path(&dir, 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let l = open(&dir);
        assert_eq!(found(&l, A, "fc_1"), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_store_on_one_directory_is_refused_naming_the_first() {
        let dir = temp("lock");
        let _first = open(&dir);
        let second = FileLedger::open(&dir, memory(), DAY, 1000, Duration::from_secs(1));
        assert!(second.is_err(), "opened twice");
        let e = second.err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("in use by process {}", std::process::id())),
            "{e}"
        );
        drop(_first);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_beyond_capacity_are_deleted_whole() {
        let dir = temp("trim");
        let l = open(&dir);
        let mut log = lock(&l.log);
        for id in 0..3 {
            log.closed.push_back(Segment {
                id: 100 + id,
                turns: 600,
                newest: unix_secs(),
                bytes: 1,
            });
            File::create(segment_path(&dir, 100 + id)).unwrap();
        }
        log.trim(unix_secs());
        // 1,800 turns, a capacity of 1,000: the oldest 600 go; the next 600 still hold some of
        // the newest 1,000, so their segment stays.
        assert_eq!(log.closed.len(), 2);
        assert_eq!(log.closed[0].id, 101);
        assert!(!segment_path(&dir, 100).exists());
        drop(log);
        drop(l);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_tenant_secret_is_made_once_and_kept() {
        let dir = temp("secret");
        let first = tenant_secret(&dir).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(tenant_secret(&dir).unwrap(), first);
        fs::remove_dir_all(&dir).unwrap();
    }
}
