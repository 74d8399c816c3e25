//! What rethread remembers: turns, per tenant, by the ids and call ids of their items.
//!
//! The trait is the seam between the request path and storage: the in-memory store serves a
//! single replica; a shared store lets replicas repair each other's follow-ups. Lookups take all
//! the ids of one request at once, so a remote store answers in one round trip.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::repair::items::Turn;
use crate::tenant::TenantKey;

pub mod chain;
pub mod compact;
pub mod file;
pub mod images;
pub mod memory;
pub mod outbox;
pub mod redis;

/// A storage failure. The request goes on without memory; the failure is logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("store unavailable: {0}")]
    Unavailable(#[source] crate::error::BoxError),
    #[error("store timed out")]
    Timeout,
}

/// Figures for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct LedgerStats {
    pub turns: u64,
    pub evictions: u64,
    /// Memory the store holds for its turns, where it knows it (the memory store).
    pub bytes: u64,
}

pub trait Ledger: Send + Sync + 'static {
    /// Remembers a turn for a tenant. Called when the response's last chunk is on its way to the
    /// client; a local store makes the turn visible before returning, so a follow-up sent the
    /// moment the client has the response finds it. The future completes a remote write.
    fn record(&self, tenant: TenantKey, turn: Turn) -> BoxFuture<'static, Result<(), LedgerError>>;

    /// The tenant's turns holding any of `keys` as one of `kinds` (`ITEM_KEYS`: item ids, or
    /// call ids of client calls; `RESPONSE_KEYS`: the responses' own ids).
    fn lookup<'a>(
        &'a self,
        tenant: TenantKey,
        keys: &'a [&'a str],
        kinds: &'static [KeyKind],
    ) -> BoxFuture<'a, Result<Vec<Arc<Turn>>, LedgerError>>;

    /// Whether the store answers.
    fn ready(&self) -> BoxFuture<'_, bool>;

    fn stats(&self) -> LedgerStats;

    /// Waits, up to `limit`, for writes still in flight (shutdown).
    fn flush(&self, limit: std::time::Duration) -> BoxFuture<'_, ()> {
        let _ = limit;
        Box::pin(async {})
    }
}

/// The keys under which a turn is found: its items' ids, its client calls' call ids, and its
/// response's id.
pub fn keys_of(turn: &Turn) -> impl Iterator<Item = (KeyKind, &str)> {
    let items = turn.items.iter().flat_map(|item| {
        let call = item
            .call_id
            .as_deref()
            .filter(|_| item.ty.is_client_call())
            .map(|c| (KeyKind::CallId, c));
        std::iter::once((KeyKind::ItemId, &*item.id)).chain(call)
    });
    let response = turn
        .link
        .as_ref()
        .map(|l| (KeyKind::ResponseId, &*l.response));
    items.chain(response)
}

/// Item ids, call ids and response ids live in separate namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    ItemId,
    CallId,
    ResponseId,
}

/// The kinds of key a request's item ids and call ids are looked up as.
pub const ITEM_KEYS: &[KeyKind] = &[KeyKind::ItemId, KeyKind::CallId];
/// The kind of key a `previous_response_id` is looked up as.
pub const RESPONSE_KEYS: &[KeyKind] = &[KeyKind::ResponseId];
