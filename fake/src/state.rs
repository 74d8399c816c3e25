//! What the fake remembers, per tenant.
//!
//! The real API links replayed items to the turns that produced them; the fake keeps, for every
//! turn it generated, each output item's id, type, position and reasoning group, plus the full
//! request input and output for `previous_response_id` chains and retrieval. Server-side
//! conversations are kept as the plain list of items they hold, seeded at creation and grown by
//! every turn made in them: their items count as already sent, like a chain's.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;

use crate::faults::FaultState;
use crate::FakeOptions;

/// One output item of a remembered turn.
#[derive(Debug, Clone)]
pub(crate) struct ItemRecord {
    pub id: String,
    pub kind: String,
    pub position: usize,
    /// The nearest reasoning item before this one in the same turn; `None` for reasoning items
    /// themselves and for items before the first reasoning item.
    pub group: Option<String>,
    pub call_id: Option<String>,
}

/// One SSE event as it was sent, kept for `starting_after` replay.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub sequence_number: u64,
    pub event_type: String,
    pub data: String,
}

/// One generated turn (one response).
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    pub response: Value,
    pub stored: bool,
    pub deleted: bool,
    pub previous_response_id: Option<String>,
    pub input: Vec<Value>,
    pub output: Vec<Value>,
    pub items: Vec<ItemRecord>,
    pub events: Vec<StoredEvent>,
}

impl Turn {
    /// Whether lookups (GET, item references, chaining) may see this turn.
    pub(crate) fn visible(&self) -> bool {
        self.stored && !self.deleted
    }
}

/// Everything one tenant ever got.
#[derive(Debug, Default)]
pub(crate) struct Tenant {
    pub turns: HashMap<String, Turn>,
    /// item id → response id
    pub item_index: HashMap<String, String>,
    /// call_id → item id
    pub call_index: HashMap<String, String>,
    /// Response ids, oldest first, to forget beyond `MAX_TURNS_PER_TENANT`.
    pub order: std::collections::VecDeque<String>,
    /// conversation id → its items, oldest first. Never forgotten: the API keeps them until
    /// deleted, and only tests create them.
    pub conversations: HashMap<String, Vec<Value>>,
}

/// Turns one tenant's memory holds; older ones are forgotten (their ids then get E3b), so a
/// benchmark's long run does not grow the fake without bound.
pub(crate) const MAX_TURNS_PER_TENANT: usize = 1_000_000;

impl Tenant {
    /// The remembered item with this id and the turn it belongs to.
    pub(crate) fn item(&self, id: &str) -> Option<(&ItemRecord, &Turn)> {
        let resp = self.item_index.get(id)?;
        let turn = self.turns.get(resp)?;
        turn.items.iter().find(|r| r.id == id).map(|r| (r, turn))
    }

    /// The id of the remembered call item with this call_id.
    pub(crate) fn item_id_for_call(&self, call_id: &str) -> Option<&str> {
        self.call_index.get(call_id).map(String::as_str)
    }

    /// A turn reachable by id for GET and (beside a socket's own `store:false` turns, see
    /// `validate`) for `previous_response_id`.
    pub(crate) fn visible_turn(&self, id: &str) -> Option<&Turn> {
        self.turns.get(id).filter(|t| t.visible())
    }

    /// Input and output items of the chain ending at `resp_id` (that turn and its ancestors).
    pub(crate) fn chain_items(&self, resp_id: &str) -> Vec<&Value> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(resp_id.to_string());
        while let Some(id) = next.take() {
            if !seen.insert(id.clone()) {
                break;
            }
            if let Some(turn) = self.turns.get(&id) {
                out.extend(turn.input.iter());
                out.extend(turn.output.iter());
                next = turn.previous_response_id.clone();
            }
        }
        out
    }

    /// The items of one of this tenant's conversations.
    pub(crate) fn conversation(&self, id: &str) -> Option<&[Value]> {
        self.conversations.get(id).map(Vec::as_slice)
    }

    /// Append a turn made in conversation `id` to it: its input, then its output.
    pub(crate) fn extend_conversation(&mut self, id: &str, turn: &Turn) {
        if let Some(items) = self.conversations.get_mut(id) {
            items.extend(turn.input.iter().cloned());
            items.extend(turn.output.iter().cloned());
        }
    }

    /// Record a generated turn.
    pub(crate) fn remember(&mut self, id: String, turn: Turn) {
        for rec in &turn.items {
            self.item_index.insert(rec.id.clone(), id.clone());
            if let Some(call_id) = &rec.call_id {
                self.call_index.insert(call_id.clone(), rec.id.clone());
            }
        }
        self.order.push_back(id.clone());
        self.turns.insert(id, turn);
        while self.order.len() > MAX_TURNS_PER_TENANT {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(turn) = self.turns.remove(&old) {
                for rec in &turn.items {
                    if self.item_index.get(&rec.id) == Some(&old) {
                        self.item_index.remove(&rec.id);
                    }
                    if let Some(call_id) = &rec.call_id {
                        if self.call_index.get(call_id) == Some(&rec.id) {
                            self.call_index.remove(call_id);
                        }
                    }
                }
            }
        }
    }
}

/// State shared by all connections of one fake server.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub opts: FakeOptions,
    pub tenants: Mutex<HashMap<String, Tenant>>,
    pub responses_posts: AtomicU64,
    pub requests_total: AtomicU64,
    /// Requests that came over HTTP/2.
    pub http2_requests: AtomicU64,
    pub last_body: Mutex<Option<Bytes>>,
    /// The `traceparent` of every request that carried one, in order.
    pub traceparents: Mutex<Vec<String>>,
    /// Draws and counts of `FakeOptions::faults`.
    pub faults: FaultState,
}

impl Shared {
    pub(crate) fn new(opts: FakeOptions) -> Self {
        Shared {
            opts,
            ..Default::default()
        }
    }

    /// The tenants map; a poisoned lock is still usable (the data is plain).
    pub(crate) fn tenants(&self) -> MutexGuard<'_, HashMap<String, Tenant>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_last_body(&self, body: Bytes) {
        *self.last_body.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
    }

    pub(crate) fn traceparents(&self) -> Vec<String> {
        self.traceparents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn last_body(&self) -> Option<Bytes> {
        self.last_body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
