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

/// One segment file: its number, turns, oldest and newest learned-at times (UNIX seconds).
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    id: u64,
    turns: u64,
    oldest: u32,
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
    /// `DIR/tenant-secret`.
    secret: String,
}

/// Reads segment `id` back into `memory` (counting the turns it restored), and cuts a torn or
/// damaged tail off the `last` segment, where a crash tears a write, so appends follow the good
/// records. Anywhere else the rest of a segment stays as it is, unread (it goes with its
/// segment).
fn restore_segment(
    dir: &Path,
    id: u64,
    last: bool,
    now: u32,
    memory: &MemoryLedger,
    restored: &mut u64,
) -> std::io::Result<Segment> {
    let path = segment_path(dir, id);
    let mut bytes = Vec::new();
    File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes))?;
    let mut segment = Segment {
        id,
        ..Segment::default()
    };
    let good = walk(&bytes, |body| {
        let mut r = Reader::new(&body[TIME_AT]);
        let learned = r.u32().unwrap_or(0);
        if segment.turns == 0 {
            segment.oldest = learned;
        }
        segment.turns += 1;
        segment.newest = segment.newest.max(learned);
        let age = Duration::from_secs(u64::from(now.saturating_sub(learned)));
        if memory.restore(body, age) {
            *restored += 1;
        }
    });
    if good < bytes.len() {
        tracing::warn!(
            segment = %path.display(),
            at = good,
            rest = bytes.len() - good,
            "store: a torn or damaged record ends this segment; what follows it is not read"
        );
        if last {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good as u64))?;
        }
    }
    segment.bytes = if last {
        good as u64
    } else {
        bytes.len() as u64
    };
    Ok(segment)
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

/// The tenant secret kept in `dir`, made at first use (read under the directory's lock). It is
/// written whole or not at all (a temporary file, synced, renamed, the directory synced), so a
/// crash never leaves an empty one behind.
fn tenant_secret(dir: &Path) -> io::Result<String> {
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
    let partial = dir.join("tenant-secret.new");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    fs::rename(&partial, &path)?;
    File::open(dir)?.sync_all()?;
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
        let secret = tenant_secret(dir).map_err(io)?;
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
        for (n, &id) in ids.iter().enumerate() {
            let last = n + 1 == ids.len();
            let segment =
                restore_segment(dir, id, last, now, &memory, &mut restored).map_err(io)?;
            closed.push_back(segment);
        }
        let current = match closed.pop_back() {
            Some(last) if last.bytes < SEGMENT_MAX => last,
            Some(last) => {
                closed.push_back(last);
                Segment {
                    id: last.id + 1,
                    ..Segment::default()
                }
            }
            None => Segment {
                id: 1,
                ..Segment::default()
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
            secret,
        })
    }

    /// The key of the tenant hashes of this directory's turns (used when no `tenant_secret` is
    /// configured).
    pub fn tenant_secret(&self) -> &str {
        &self.secret
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
            // Synced outside the lock, so a slow disk never holds up a turn being recorded.
            let pending = {
                let mut log = lock(&log);
                std::mem::take(&mut log.dirty).then(|| log.file.try_clone())
            };
            match pending {
                Some(Ok(file)) => {
                    if let Err(e) = file.sync_data() {
                        tracing::warn!(error = %e, "store: sync failed");
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "store: sync failed"),
                None => {}
            }
            if ended {
                return;
            }
            lock(&log).trim(unix_secs());
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
            self.trim(now);
        }
        if let Err(e) = self.file.write_all(&frame) {
            // A frame written in part (a full disk) would end the segment at the next start
            // and take every later record with it: cut it off now.
            let _ = self.file.set_len(self.current.bytes);
            return Err(e);
        }
        self.current.bytes += frame.len() as u64;
        self.current.turns += 1;
        if self.current.turns == 1 {
            self.current.oldest = now;
        }
        self.current.newest = self.current.newest.max(now);
        self.dirty = true;
        Ok(())
    }

    /// Closes the current segment and starts the next.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = Segment {
            id: self.current.id + 1,
            ..Segment::default()
        };
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next.id))?;
        self.closed
            .push_back(std::mem::replace(&mut self.current, next));
        self.dirty = false;
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
    /// The current segment is closed once its oldest turn is an eighth of retention old, so
    /// retention reaches the turns of a quiet store too (gone at most an eighth late).
    fn trim(&mut self, now: u32) {
        let age = u64::from(now.saturating_sub(self.current.oldest));
        if self.current.turns > 0 && age >= (self.retention_secs / 8).max(1) {
            if let Err(e) = self.rotate() {
                tracing::warn!(error = %e, "store: could not start a new segment");
            }
        }
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
        // One lock around both: the disk holds records in the order memory does, which a
        // restore relies on (the newest recording of an id wins).
        let mut log = lock(&self.log);
        let written = match self.memory.insert(tenant, turn) {
            Some(record) => log
                .append(&record)
                .map_err(|e| LedgerError::Unavailable(Box::new(e))),
            None => Ok(()),
        };
        drop(log);
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
mod tests;
