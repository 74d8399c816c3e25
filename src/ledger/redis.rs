//! The shared ledger on Redis (or Valkey): replicas repair each other's follow-ups.
//!
//! Layout: per tenant, one hash per time bucket, `{prefix}:{<tenant>}:<width ms>:<bucket>`, where
//! `<tenant>` is the hex keyed tenant hash (never a credential) and, in braces, the key's Redis
//! Cluster hash tag: every key of a tenant is in one slot. A bucket is an eighth of the
//! retention; it expires when the last turn written to it has passed retention. In a bucket:
//! - the field of a turn's first key (8 bytes of BLAKE3 of the key's kind and encoded id) holds
//!   the turn: a version byte, the time it was learned (u32, tenths of a second since the UNIX
//!   epoch, wrapping), and its items as `compact.rs` writes them (ids as decoded bytes);
//! - the field of each other key holds the first key's field (8 bytes): one hop, in the same hash;
//! - the field `#` counts the turns written to the bucket (for `rethread check`).
//!
//! A turn is written by one script (`HSET`, `HINCRBY`, `PEXPIRE` on the one bucket key it is
//! given), after the response has reached the client. A lookup is one script given every bucket
//! of the retention window, newest first, and the fields of every id and call id of the request:
//! one round trip, and it touches no key it was not given, so it runs on a Redis Cluster too. A
//! hit is checked against the turn's contents and learned-at time, so a stale or colliding field
//! is a miss.
//!
//! Recovery: a background task pings every `KEEPALIVE`, so a connection Redis dropped (restart,
//! failover) is replaced before traffic needs it; and a script that failed on a dead connection
//! is sent once more on the new one (a write's script is idempotent), so the first lookup and
//! the first write after Redis is back do not fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};

use super::compact::{self, Reader};
use super::{keys_of, KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::Turn;
use crate::tenant::TenantKey;

mod conn;

use self::conn::{cluster_nodes, keep_alive, Conn};

/// Buckets per retention: a lookup reads this many hashes (plus the current and next one), and
/// a turn outlives its retention in Redis by at most one bucket.
pub const BUCKETS_PER_RETENTION: u64 = 8;
/// Version byte of a stored turn.
const FORMAT: u8 = 1;
/// Fields per lookup script call (Lua's `unpack` has a stack limit).
const FIELDS_PER_CALL: usize = 1_000;
/// The field counting a bucket's turns (fields of keys are 8 bytes; this is 1).
const COUNT_FIELD: &str = "#";
/// Time allowed for a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Records a turn in the tenant's current bucket, `KEYS[1]`. `ARGV[1]`: the bucket's time to
/// live (ms); `ARGV[2]`: the turn's field; `ARGV[3]`: the turn; `ARGV[4..]`: the fields of its
/// other keys, each set to point at `ARGV[2]`.
const RECORD: &str = r"
local args = {ARGV[2], ARGV[3]}
for i = 4, #ARGV do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[2]
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('HINCRBY', KEYS[1], '#', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Finds turns in the tenant's buckets (`KEYS`, newest first) by the fields asked (`ARGV`).
/// Returns, per field, the newest turn holding it, or false. A field of 8 bytes points at the
/// turn's field in the same hash.
const LOOKUP: &str = r"
local found, left = {}, #ARGV
for i = 1, #ARGV do found[i] = false end
for b = 1, #KEYS do
  if left == 0 then break end
  local got = redis.call('HMGET', KEYS[b], unpack(ARGV))
  for i = 1, #ARGV do
    local v = got[i]
    if v and not found[i] then
      if #v == 8 then v = redis.call('HGET', KEYS[b], v) end
      if v and #v > 8 then
        found[i] = v
        left = left - 1
      end
    end
  end
end
return found
";

pub struct RedisLedger {
    conn: Conn,
    /// Pings every `KEEPALIVE`; stopped with the ledger.
    keepalive: Option<tokio::task::JoinHandle<()>>,
    prefix: String,
    retention_ms: u64,
    bucket_ms: u64,
    timeout: Duration,
    record: redis::Script,
    lookup: redis::Script,
    written: Arc<AtomicU64>,
    pending: Arc<AtomicU64>,
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> LedgerError {
    LedgerError::Unavailable(Box::new(e))
}

/// Why a store URL cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL's shape (rethread's own words: no part of the URL is quoted).
    #[error("{0}")]
    Url(String),
    #[error("invalid store URL")]
    Invalid(#[source] redis::RedisError),
    #[error("cannot prepare the store client")]
    Client(#[source] redis::RedisError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Tenths of a second since the UNIX epoch, wrapping: a turn's learned-at time.
fn tenths(ms: u64) -> u32 {
    (ms / 100) as u32
}

/// The field of a key in its tenant's bucket.
fn field(kind: KeyKind, encoded: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&[match kind {
        KeyKind::ItemId => b'i',
        KeyKind::CallId => b'c',
        KeyKind::ResponseId => b'r',
    }]);
    h.update(encoded);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// A stored turn: version, learned-at tenths, items.
fn encode(turn: &Turn, at_ms: u64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + turn.items.len() * 28);
    out.push(FORMAT);
    out.extend_from_slice(&tenths(at_ms).to_le_bytes());
    compact::put_items(&mut out, turn)?;
    compact::put_link(&mut out, turn);
    Some(out)
}

/// The learned-at tenths and the items of a stored turn.
fn open(blob: &[u8]) -> Option<(u32, Reader<'_>)> {
    let mut r = Reader::new(blob);
    (r.byte()? == FORMAT).then_some(())?;
    let at = r.u32()?;
    Some((at, r))
}

impl RedisLedger {
    /// Prepares the client for `redis[s]://…` (one node) or `redis[s]+cluster://h:p,h:p,…` (a
    /// cluster, by seed nodes); the connection is made on first use, so rethread starts (and
    /// proxies) while Redis is down. Must be called within the runtime (it starts the
    /// keepalive task).
    pub fn new(
        url: &str,
        prefix: &str,
        retention: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let conn = match cluster_nodes(url).map_err(StoreError::Url)? {
            Some(nodes) => {
                let client = ClusterClient::builder(nodes)
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(500)
                    .build()
                    .map_err(StoreError::Invalid)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(Duration::from_secs(2));
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
            None => {
                let client = redis::Client::open(url).map_err(StoreError::Invalid)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(StoreError::Client)?;
                Conn::Node(manager)
            }
        };
        let retention_ms = u64::try_from(retention.as_millis())
            .unwrap_or(u64::MAX / 4)
            .max(1);
        let keepalive = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(keep_alive(conn.clone())));
        Ok(RedisLedger {
            conn,
            keepalive,
            prefix: prefix.to_owned(),
            retention_ms,
            bucket_ms: retention_ms.div_ceil(BUCKETS_PER_RETENTION),
            timeout,
            record: redis::Script::new(RECORD),
            lookup: redis::Script::new(LOOKUP),
            written: Arc::new(AtomicU64::new(0)),
            pending: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The key of a tenant's bucket.
    fn bucket_key(&self, tenant: &TenantKey, bucket: u64) -> Vec<u8> {
        format!(
            "{}:{{{}}}:{}:{bucket}",
            self.prefix,
            tenant.hex(),
            self.bucket_ms
        )
        .into_bytes()
    }

    /// The buckets a lookup at `now` reads, newest first: the next one (a replica whose clock
    /// is ahead), the current one, and back to the one holding turns learned a retention ago.
    fn window(&self, tenant: &TenantKey, now: u64) -> Vec<Vec<u8>> {
        let newest = now / self.bucket_ms + 1;
        let oldest = now.saturating_sub(self.retention_ms) / self.bucket_ms;
        (oldest..=newest)
            .rev()
            .map(|b| self.bucket_key(tenant, b))
            .collect()
    }

    fn fresh(&self, at: u32, now: u64) -> bool {
        u64::from(tenths(now).wrapping_sub(at)) * 100 < self.retention_ms
    }

    /// Waits (up to `limit`) for writes still in flight, for shutdown.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn find(
        &self,
        tenant: TenantKey,
        keys: &[&str],
        kinds: &[KeyKind],
    ) -> Result<Vec<Arc<Turn>>, redis::RedisError> {
        let now = now_ms();
        let buckets = self.window(&tenant, now);
        let mut asked: Vec<(KeyKind, Vec<u8>)> = Vec::with_capacity(keys.len() * 2);
        let mut fields: Vec<Vec<u8>> = Vec::with_capacity(keys.len() * 2);
        for key in keys {
            let encoded = compact::encode_id(key);
            for &kind in kinds {
                let f = field(kind, &encoded).to_vec();
                if !fields.contains(&f) {
                    fields.push(f);
                    asked.push((kind, encoded.clone()));
                }
            }
        }
        let mut blobs: Vec<Option<Vec<u8>>> = Vec::with_capacity(fields.len());
        for batch in fields.chunks(FIELDS_PER_CALL) {
            let got: Vec<Option<Vec<u8>>> = self
                .conn
                .script(&self.lookup, LOOKUP, &buckets, batch)
                .await?;
            blobs.extend(got);
        }
        let mut seen: Vec<&[u8]> = Vec::new();
        let mut turns = Vec::new();
        for ((kind, encoded), blob) in asked.iter().zip(&blobs) {
            let Some(blob) = blob.as_deref() else {
                continue;
            };
            if seen.contains(&blob) {
                continue;
            }
            // An undecodable, stale or colliding entry is a miss, never an error for the client.
            let Some((at, items)) = open(blob) else {
                continue;
            };
            if !self.fresh(at, now) || !compact::holds(&mut items.clone(), *kind, encoded) {
                continue;
            }
            if let Some(turn) = compact::read_turn(&mut items.clone()) {
                seen.push(blob);
                turns.push(Arc::new(turn));
            }
        }
        Ok(turns)
    }
}

impl Drop for RedisLedger {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
    }
}

/// What a shared store holds, for `rethread check`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Turns written to buckets not yet expired (a turn recorded twice counts twice).
    pub turns: u64,
    /// rethread's bucket keys.
    pub keys: u64,
    /// Nodes that hold data (the one node, or the cluster's masters).
    pub nodes: usize,
    /// `used_memory` summed over those nodes: everything they hold, not only rethread's.
    pub used_memory: u64,
    /// `maxmemory` summed over those nodes; 0 when any of them has none.
    pub maxmemory: u64,
}

impl RedisLedger {
    /// Counts rethread's turns and keys on every node holding data (`SCAN` of the prefix, the
    /// buckets' `#` fields) and reads their memory (`INFO memory`).
    pub async fn usage(&self) -> Result<Usage, String> {
        let error = |e: redis::RedisError| e.to_string();
        let mut usage = Usage::default();
        let nodes = self.conn.primaries().await.map_err(error)?;
        let mut unbounded = false;
        for node in &nodes {
            usage.nodes += 1;
            let info: String = self
                .conn
                .on_node(node, redis::cmd("INFO").arg("memory").clone())
                .await
                .map_err(error)?;
            let field = |name: &str| -> u64 {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            usage.used_memory += field("used_memory");
            let max = field("maxmemory");
            unbounded |= max == 0;
            usage.maxmemory += max;
            let pattern = format!("{}:{{*", self.prefix);
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    self.conn.on_node(node, scan).await.map_err(error)?;
                if !keys.is_empty() {
                    usage.keys += keys.len() as u64;
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("HGET").arg(key).arg(COUNT_FIELD);
                    }
                    let counts: Vec<Option<u64>> = self
                        .conn
                        .pipeline_on_node(node, pipe)
                        .await
                        .map_err(error)?;
                    usage.turns += counts.into_iter().flatten().sum::<u64>();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        if unbounded {
            usage.maxmemory = 0;
        }
        Ok(usage)
    }
}

impl Ledger for RedisLedger {
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>> {
        let now = now_ms();
        let Some(blob) = encode(&turn, now) else {
            return async { Err(LedgerError::Unavailable("turn too odd to store".into())) }.boxed();
        };
        let mut fields: Vec<Vec<u8>> = Vec::with_capacity(turn.items.len() + 1);
        for (kind, key) in keys_of(&turn) {
            let f = field(kind, &compact::encode_id(key)).to_vec();
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
        let Some(first) = fields.first().cloned() else {
            return async { Ok(()) }.boxed();
        };
        let bucket = now / self.bucket_ms;
        let ttl = ((bucket + 1) * self.bucket_ms + self.retention_ms).saturating_sub(now);
        let keys = vec![self.bucket_key(&tenant, bucket)];
        let mut args = vec![ttl.max(1).to_string().into_bytes(), first, blob];
        args.extend(fields.into_iter().skip(1));
        let conn = self.conn.clone();
        let script = self.record.clone();
        let written = self.written.clone();
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::AcqRel);
        async move {
            let result = tokio::time::timeout(
                WRITE_TIMEOUT,
                conn.script::<i64>(&script, RECORD, &keys, &args),
            )
            .await;
            pending.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(Ok(_)) => {
                    written.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => Err(LedgerError::Timeout),
            }
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
            tokio::time::timeout(self.timeout, self.find(tenant, keys, kinds))
                .await
                .map_err(|_| LedgerError::Timeout)?
                .map_err(unavailable)
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        async move {
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(1),
                    self.conn.on_every_primary(redis::cmd("PING"))
                )
                .await,
                Ok(Ok(_))
            )
        }
        .boxed()
    }

    fn stats(&self) -> LedgerStats {
        LedgerStats {
            turns: self.written.load(Ordering::Relaxed),
            evictions: 0,
            bytes: 0,
        }
    }

    fn flush(&self, limit: Duration) -> BoxFuture<'_, ()> {
        RedisLedger::flush(self, limit).boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
