//! The shared ledger on Redis (or Valkey): replicas repair each other's follow-ups.
//!
//! Key layout (all under `{prefix}:{tenant}` where tenant is the hex keyed hash, never a key):
//! - `{prefix}:{tenant}:t:{turn}`: the turn, compact JSON (ids, types, call ids, kept full items);
//! - `{prefix}:{tenant}:i:{item id}` and `{prefix}:{tenant}:c:{call id}`: the turn's key.
//!
//! Every key expires after the retention setting. A turn is written in one atomic pipeline; the
//! lookup of all ids of a request is one server-side script (follow each index key to its turn),
//! so one round trip either way. The connection is made lazily and re-made after failures by the
//! client's connection manager; rethread keeps serving, without memory, meanwhile.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{keys_of, turn_holds, KeyKind, Ledger, LedgerError, LedgerStats};
use crate::repair::items::{ItemType, Turn, TurnItem};
use crate::tenant::TenantKey;

/// Follows index keys to turns: returns, per key, the turn key and the turn (or false, false).
const LOOKUP: &str = r"
local out = {}
for i = 1, #KEYS do
  local target = redis.call('GET', KEYS[i])
  if target then
    out[2 * i - 1] = target
    out[2 * i] = redis.call('GET', target) or false
  else
    out[2 * i - 1] = false
    out[2 * i] = false
  end
end
return out
";

pub struct RedisLedger {
    manager: ConnectionManager,
    prefix: String,
    retention: Duration,
    timeout: Duration,
    lookup: redis::Script,
    written: Arc<AtomicU64>,
    pending: Arc<AtomicU64>,
}

#[derive(Serialize, Deserialize)]
struct StoredTurn<'a> {
    s: bool,
    #[serde(borrow)]
    i: Vec<StoredItem<'a>>,
}

#[derive(Serialize, Deserialize)]
struct StoredItem<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    t: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    c: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    f: Option<&'a RawValue>,
}

fn encode(turn: &Turn) -> Result<Vec<u8>, serde_json::Error> {
    let items = turn
        .items
        .iter()
        .map(|item| {
            let full = match &item.full {
                Some(bytes) => Some(serde_json::from_slice::<&RawValue>(bytes)?),
                None => None,
            };
            Ok(StoredItem {
                id: Cow::Borrowed(&item.id),
                t: Cow::Borrowed(item.ty.as_str()),
                c: item.call_id.as_deref().map(Cow::Borrowed),
                f: full,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    serde_json::to_vec(&StoredTurn {
        s: turn.stored,
        i: items,
    })
}

fn decode(blob: &[u8]) -> Result<Turn, serde_json::Error> {
    let stored: StoredTurn<'_> = serde_json::from_slice(blob)?;
    Ok(Turn {
        stored: stored.s,
        items: stored
            .i
            .into_iter()
            .map(|item| TurnItem {
                id: item.id.into(),
                ty: ItemType::parse(&item.t),
                call_id: item.c.map(Into::into),
                full: item.f.map(|f| Bytes::copy_from_slice(f.get().as_bytes())),
            })
            .collect(),
    })
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

impl RedisLedger {
    /// Prepares the client; the connection is made on first use, so rethread starts (and
    /// proxies) while Redis is down.
    pub fn new(
        url: &str,
        prefix: &str,
        retention: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid store URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot prepare the store client: {e}"))?;
        Ok(RedisLedger {
            manager,
            prefix: prefix.to_owned(),
            retention,
            timeout,
            lookup: redis::Script::new(LOOKUP),
            written: Arc::new(AtomicU64::new(0)),
            pending: Arc::new(AtomicU64::new(0)),
        })
    }

    fn key(&self, tenant: &TenantKey, kind: KeyKind, key: &str) -> String {
        let tag = match kind {
            KeyKind::ItemId => 'i',
            KeyKind::CallId => 'c',
        };
        format!("{}:{}:{tag}:{key}", self.prefix, tenant.hex())
    }

    /// Waits (up to `limit`) for writes still in flight, for shutdown.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Ledger for RedisLedger {
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>> {
        let blob = match encode(&turn) {
            Ok(blob) => blob,
            Err(e) => return async move { Err(unavailable(e)) }.boxed(),
        };
        let mut id = [0u8; 12];
        let _ = getrandom::fill(&mut id);
        let turn_key = format!(
            "{}:{}:t:{}",
            self.prefix,
            tenant.hex(),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let ttl = self.retention.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&turn_key)
            .arg(blob)
            .arg("PX")
            .arg(ttl)
            .ignore();
        for (kind, key) in keys_of(&turn) {
            pipe.cmd("SET")
                .arg(self.key(&tenant, kind, key))
                .arg(&turn_key)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        let mut conn = self.manager.clone();
        let written = self.written.clone();
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::AcqRel);
        async move {
            let result =
                tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(&mut conn))
                    .await;
            pending.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(Ok(())) => {
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
    ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>> {
        async move {
            let mut invocation = self.lookup.prepare_invoke();
            let mut asked = Vec::with_capacity(keys.len() * 2);
            for key in keys {
                for kind in [KeyKind::ItemId, KeyKind::CallId] {
                    invocation.key(self.key(&tenant, kind, key));
                    asked.push(*key);
                }
            }
            let mut conn = self.manager.clone();
            let reply: Vec<Option<Vec<u8>>> =
                tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                    .await
                    .map_err(|_| LedgerError::Timeout)?
                    .map_err(unavailable)?;
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut turns = Vec::new();
            for (pair, key) in reply.chunks(2).zip(asked) {
                let (Some(Some(turn_key)), Some(Some(blob))) = (pair.first(), pair.get(1)) else {
                    continue;
                };
                if seen.contains(turn_key) {
                    continue;
                }
                // An undecodable entry is a miss, never an error for the client.
                if let Ok(turn) = decode(blob) {
                    if turn_holds(&turn, key) {
                        seen.push(turn_key.clone());
                        turns.push(Arc::new(turn));
                    }
                }
            }
            Ok(turns)
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        async move {
            let mut conn = self.manager.clone();
            let ping = redis::cmd("PING");
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(1),
                    ping.query_async::<String>(&mut conn)
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
mod tests {
    use super::*;
    use crate::repair::items::tests::turn;

    #[test]
    fn turns_survive_the_round_trip_through_their_stored_form() {
        for stored in [true, false] {
            let t = turn("mcpl rs fc ig rs msg", stored);
            assert_eq!(decode(&encode(&t).unwrap()).unwrap(), t);
        }
    }
}
